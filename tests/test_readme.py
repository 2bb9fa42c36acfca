"""The README's quick-start commands are the ones CI runs and the CLI really offers."""

import os
import re

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _read(p):
    with open(os.path.join(REPO, p), encoding="utf-8") as fh:
        return fh.read()


def test_ci_runs_the_readme_test_command():
    ci_cmd = [l for l in _read(".ci/run").splitlines() if l.startswith("python3 -m venv")]
    assert len(ci_cmd) == 1
    assert ci_cmd[0] in _read("README.md")


def test_quick_start_is_two_commands_and_uses_real_cli_options():
    readme = _read("README.md")
    block = readme.split("## Quick start", 1)[1].split("```", 2)[1]
    cmds = [l for l in block.splitlines() if l.strip() and not l.startswith("#") and not l.startswith("bash")]
    assert len(cmds) == 2, cmds
    from deploy_kit.cli.build import export

    known = {o for p in export.params for o in getattr(p, "opts", []) + getattr(p, "secondary_opts", [])}
    for flag in re.findall(r"deploy-kit export \w+((?: --[\w-]+(?: [\w./-]+)?)*)", readme):
        for opt in re.findall(r"--[\w-]+", flag):
            assert opt in known, opt
