"""Every family and precision with the weights official code produces, as well as 'every branch
active' random weights: export -> FP16 / INT8 -> TensorRT-RTX build -> parity.

Official initialisation leaves exact zeros and ones (zero biases, unit norms, NAFNet's beta/gamma
= 0, PVT's truncated-normal Linear layers): the simplifier merges equal tensors, and the FP16
converter then meets constants shared across the FP32 boundary, which random weights never show.
"""

import json

import pytest
import torch

from deploy_kit._deps import available
from deploy_kit.models import get_adapter
from deploy_kit.models.checkpoint import load_model

needs_rtx = pytest.mark.skipif(not available("tensorrt_rtx"), reason="tensorrt-rtx not installed")

# (model, variant, height, width, extra flags, checkpoint wrapper key as upstream writes it)
CASES = [
    ("nafnet", "tiny", 64, 64, ["--train-size", "32"], "params"),  # TLC
    ("restormer", "tiny", 48, 64, ["--train-size", "32"], "params"),  # Restormer-Local
    ("pvt", "test-tiny", 64, 64, ["--head", "cls"], "model"),
    ("pvt", "test-tiny", 64, 64, ["--head", "features"], "model"),
    ("pvt", "test-v2-tiny", 64, 64, ["--head", "cls"], "model"),
]


def official_checkpoint(model, variant, path, wrapper, seed=0):
    """A checkpoint in the official layout holding the official code's initialisation."""
    loaded = load_model(get_adapter(model), variant, None, seed, init="official")
    torch.save({wrapper: loaded.model.state_dict()}, path)
    return path


def test_official_init_has_the_exact_zeros_and_ones_random_weights_lack():
    naf = load_model(get_adapter("nafnet"), "tiny", None, init="official").model.state_dict()
    assert all(not v.any() for k, v in naf.items() if k.endswith(("beta", "gamma")))
    pvt = load_model(get_adapter("pvt"), "test-tiny", None, init="official").model.state_dict()
    assert not pvt["block1.0.attn.q.bias"].any() and bool((pvt["block1.0.norm1.weight"] == 1).all())
    assert 0.01 < float(pvt["block1.0.attn.q.weight"].std()) < 0.03  # trunc_normal(std=.02)
    rnd = load_model(get_adapter("pvt"), "test-tiny", None).model.state_dict()
    assert rnd["block1.0.attn.q.bias"].any()


@needs_rtx
@pytest.mark.parametrize("init", ["official", "active"])
@pytest.mark.parametrize("precision", ["fp16", "int8"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-{c[1]}{'-' + c[4][1] if c[0] == 'pvt' else ''}")
def test_family_precision_init_through_rtx(cli, tmp_path, case, precision, init):
    model, variant, h, w, extra, wrapper = case
    out = tmp_path / "o"
    args = ["export", model, "--variant", variant, "--height", h, "--width", w, *extra, f"--{precision}",
            "--backend", "tensorrt-rtx", "--samples", "1", "--out", out]
    if precision == "int8":
        args += ["--calib-count", "8"]
    if init == "official":
        args += ["--weights", official_checkpoint(model, variant, tmp_path / "ck.pth", wrapper)]
    r = cli(*args)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    rep = json.loads(next(out.glob(f"*.{precision}.parity.json")).read_text())
    checks = {(c["backend"], c["precision"]): c for c in rep["checks"]}
    assert checks[("onnxruntime", precision)]["status"] == "pass"
    assert checks[("tensorrt-rtx", precision)]["status"] == "skipped"  # built; running needs a GPU
    plan = next(out.glob(f"*.{precision}.rtx1.plan"))
    assert plan.stat().st_size > 10_000


def test_nan_checkpoint_is_one_line_exit_2_and_leaves_no_output_dir(cli, tmp_path):
    sd = load_model(get_adapter("nafnet"), "tiny-notlc", None).model.state_dict()
    key = sorted(k for k in sd if sd[k].is_floating_point())[3]
    sd[key] = sd[key].clone()
    sd[key].view(-1)[0] = float("nan")
    ck = tmp_path / "nan.pth"
    torch.save({"params": sd}, ck)
    out = tmp_path / "never"
    r = cli("export", "nafnet", "--weights", ck, "--height", 32, "--width", 32, "--backend", "none", "--out", out)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and f"'{key}'" in r.stderr and "NaN/Inf" in r.stderr
    assert not out.exists()


def test_failed_run_leaves_no_empty_output_dir_but_keeps_an_existing_one(tmp_path):
    from deploy_kit.errors import CheckpointError
    from deploy_kit.pipeline import run_export
    from deploy_kit.specs import ExportRequest

    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    for out, existed in ((tmp_path / "new", False), (tmp_path / "old", True)):
        if existed:
            out.mkdir()
        with pytest.raises(CheckpointError):
            run_export(ExportRequest("nafnet", "tiny-notlc", 32, 32, weights=str(bad)), out_dir=str(out), backend=None)
        assert out.exists() == existed and (not existed or list(out.iterdir()) == [])
