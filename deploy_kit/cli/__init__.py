"""The ``deploy-kit`` command line: the group, the console entry point and its error handling.

The commands live in two modules, imported only when one of their commands is used (``--help``
lists both): :mod:`.device` (``run``, ``verify``, ``build``, ``env``: the target, core install) and
:mod:`.build` (``export``, ``bundle``, ``seam-check``, ``debug-precision``, ``bench``, ``triton``,
``list-models``: the build machine). So ``deploy-kit run`` on a Jetson never imports the build
machine's command module.

Errors caused by the user print one line on stderr and exit 2 (``--debug`` shows the
traceback); a failed parity gate exits 1.
"""

from __future__ import annotations

import importlib
import sys

import click

from .. import __version__
from ..errors import DeployKitError

# command name -> "module:attribute" of its click command (module relative to this package)
COMMANDS = {
    "run": "device:run",
    "verify": "device:verify",
    "build": "device:build",
    "env": "device:env",
    "export": "build:export",
    "bundle": "build:bundle",
    "seam-check": "build:seam_check_cmd",
    "debug-precision": "build:debug_precision_cmd",
    "bench": "build:bench_cmd",
    "triton": "build:triton_cmd",
    "list-models": "build:list_models",
}


class _State:
    debug = False


class _Commands(click.Group):
    """A click group whose commands are imported from :data:`COMMANDS` when asked for (click's
    "lazily loading subcommands" pattern, https://click.palletsprojects.com/en/stable/complex/)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        where = COMMANDS.get(cmd_name)
        if where is None:
            return None
        module, attr = where.split(":")
        return getattr(importlib.import_module(f"{__name__}.{module}"), attr)


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="deploy-kit")
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
def cli(debug: bool) -> None:
    """Export NAFNet, Restormer and PVT to verified TensorRT engines.

    \b
    Typical use:
      deploy-kit list-models
      deploy-kit export nafnet --fp16                  # ONNX -> FP16 -> engine -> parity
      deploy-kit export restormer --fp16 --height 720 --width 1280
      deploy-kit verify deploy-kit-out/<artifact>.onnx
    """
    _State.debug = debug


def main(argv: list[str] | None = None) -> None:
    """Console entry point (``deploy-kit``): user errors become one line + exit 2.

    Args:
        argv: the arguments (default: ``sys.argv[1:]``).
    """
    try:
        cli.main(args=argv, prog_name="deploy-kit", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.UsageError as exc:
        if _State.debug:
            raise
        hint = f" (see 'deploy-kit {exc.ctx.command_path.split(' ', 1)[1]} --help')" if exc.ctx and " " in exc.ctx.command_path else " (see 'deploy-kit --help')"
        click.echo(f"error: {exc.format_message()}{hint}", err=True)
        sys.exit(2)
    except click.ClickException as exc:
        click.echo(f"error: {exc.format_message()}", err=True)
        sys.exit(2)
    except DeployKitError as exc:
        if _State.debug:
            raise
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
