"""The import rules of ``.importlinter`` hold: layers, no cycles, and a device half that imports neither the
build half nor torch/onnx. import-linter (the test extra) reads every import from the source, those inside
functions too; nothing of deploy_kit is imported here.
"""

import os
import shutil
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LINT = "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports(no_cache=True, no_logo=True))"


def _lint(root: str) -> subprocess.CompletedProcess:
    """``lint-imports`` on the tree at ``root`` (its ``.importlinter``), without import-linter's cache."""
    env = {**os.environ, "PYTHONPATH": root}  # the tree at root, not an installed deploy_kit, is linted
    return subprocess.run([sys.executable, "-c", LINT], cwd=root, env=env, capture_output=True, text=True, timeout=300)


def test_the_import_contracts_hold():
    out = _lint(REPO)
    assert out.returncode == 0, "lint-imports (.importlinter) found broken import contracts:\n" + out.stdout + out.stderr


def test_the_contracts_break_on_planted_violations(tmp_path):
    """A copy of the package with three violations: the device importing the build half and torch from inside
    a function, and a cycle between two runner modules through a function-local import."""
    shutil.copytree(os.path.join(REPO, "deploy_kit"), tmp_path / "deploy_kit",
                    ignore=lambda d, names: [n for n in names if not n.endswith(".py") and not os.path.isdir(os.path.join(d, n))])
    shutil.copy(os.path.join(REPO, ".importlinter"), tmp_path)
    (tmp_path / "tests").mkdir()
    for name in ("__init__.py", "import_contracts.py"):
        shutil.copy(os.path.join(REPO, "tests", name), tmp_path / "tests")
    with open(tmp_path / "deploy_kit" / "runtime" / "target.py", "a", encoding="utf-8") as fh:
        fh.write("\n\ndef _planted():\n    import torch\n\n    from .. import models\n    return torch, models\n")
    with open(tmp_path / "deploy_kit" / "runners" / "base.py", "a", encoding="utf-8") as fh:
        fh.write("\n\ndef _planted():\n    from .ort import OrtRunner\n    return OrtRunner\n")
    out = _lint(str(tmp_path))
    text = out.stdout + out.stderr
    assert out.returncode == 1, text
    for broken in ("Layers: a module imports only the layers below its own BROKEN",
                   "The device half never imports the build half BROKEN",
                   "The device half never imports torch or onnx BROKEN",
                   "No import cycle between packages (nor between the modules of one package) BROKEN",
                   "No import cycle between modules, a package's __init__ included BROKEN"):
        assert broken in text, text
    assert "deploy_kit.runtime.target -> deploy_kit.models" in text, text
    assert "deploy_kit.runtime.target -> torch" in text, text
    assert "deploy_kit.runners.base -> deploy_kit.runners.ort" in text, text
