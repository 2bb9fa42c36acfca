"""debug-precision names a planted FP16 overflow site and nothing else."""

import json
import os

import pytest
import torch
from torch import nn

from deploy_kit.cli import main
from deploy_kit.export import export_onnx
from deploy_kit.models.nafnet import LayerNorm2d
from deploy_kit.precision.debug import debug_precision, module_of
from deploy_kit.precision.truefp16 import psnr_of, true_fp16_check


class Planted(nn.Module):
    """conv -> LayerNorm on small activations (safe) -> conv -> LayerNorm on x300 (overflows) -> conv."""

    def __init__(self, c=64):
        super().__init__()
        torch.manual_seed(0)
        self.intro = nn.Conv2d(3, c, 3, padding=1)
        self.calm = LayerNorm2d(c)
        self.mid = nn.Conv2d(c, c, 1)
        self.hot = LayerNorm2d(c)
        self.ending = nn.Conv2d(c, 3, 3, padding=1)

    def forward(self, x):
        f = self.mid(self.calm(self.intro(x)))
        return x + 0.1 * self.ending(self.hot(f * 300.0))


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("planted") / "planted.fp32.onnx")
    export_onnx(Planted().eval(), torch.rand(1, 3, 32, 32), path, input_names=["input"], output_names=["output"], metadata={})
    return path


def test_module_of_torchscript_scopes():
    assert module_of("/encoders.0/encoders.0.0/norm1/ReduceMean") == "encoders.0.0.norm1"
    assert module_of("/hot/Mul") == "hot"
    assert module_of("/Add") == "(top level)"


def test_debug_precision_names_the_planted_site(planted):
    res = debug_precision(planted, target_psnr=50, samples=2, max_evals=40)
    assert res.met and res.kept_fp32
    assert all(n.startswith("/hot/") for n in res.kept_fp32), res.kept_fp32
    assert any("ReduceMean" in n for n in res.kept_fp32)
    assert set(res.modules) == {"hot"}
    assert res.evals <= 40 and res.steps[0].what == "all FP16" and not res.steps[0].met
    assert res.output == planted.replace(".fp32.onnx", ".fp16-debug.onnx") and os.path.isfile(res.output)
    report = json.load(open(res.output[:-5] + ".json"))
    assert report["met"] and report["kept_fp32"] == res.kept_fp32 and "ONNX Runtime" in report["reference"]
    from deploy_kit.data.samples import sample_images

    check = true_fp16_check(planted, sample_images(2, 3, 32, 32), fp16_path=res.output)
    assert psnr_of(check) >= 50 and check.status == "pass"


def test_cli_exit_codes(planted, tmp_path, capsys):
    out = str(tmp_path / "d.onnx")
    main(["debug-precision", planted, "--max-evals", "40", "--out", out])  # target met: returns (exit 0)
    assert os.path.isfile(out) and os.path.isfile(str(tmp_path / "d.json"))
    assert "hot: " in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:  # unreachable target -> 1
        main(["debug-precision", planted, "--target-psnr", "500", "--max-evals", "3", "--out", out])
    assert e.value.code == 1
    with pytest.raises(SystemExit) as e:
        main(["debug-precision", str(tmp_path / "missing.onnx")])
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        main(["debug-precision", planted, "--max-evals", "1"])
    assert e.value.code == 2
    assert capsys.readouterr().err.count("\n") >= 1
