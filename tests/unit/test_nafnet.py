import pytest
import torch

from deploy_kit.errors import CheckpointError
from deploy_kit.models import get_adapter, get_spec
from deploy_kit.models.checkpoint import load_model, match_variant, read_state_dict
from deploy_kit.models.nafnet import NAFNet
from deploy_kit.specs import ExportRequest, TLCConfig

ADAPTER = get_adapter("nafnet")
SPEC = get_spec("nafnet")


def meta_state_dict(variant):
    with torch.device("meta"):
        return NAFNet(**SPEC.variant(variant).kwargs()).state_dict()


@pytest.mark.parametrize("variant,params", [("gopro-w32", 17.11e6), ("gopro-w64", 67.89e6), ("sidd-w32", 29.16e6), ("sidd-w64", 115.98e6)])
def test_official_parameter_counts(variant, params):
    n = sum(v.numel() for v in meta_state_dict(variant).values())
    assert abs(n - params) / params < 0.005


def test_official_state_dict_layout():
    sd = meta_state_dict("gopro-w32")
    assert tuple(sd["intro.weight"].shape) == (32, 3, 3, 3)
    assert tuple(sd["ending.weight"].shape) == (3, 32, 3, 3)
    assert tuple(sd["encoders.3.27.conv2.weight"].shape) == (512, 1, 3, 3)
    assert tuple(sd["ups.0.0.weight"].shape) == (1024, 512, 1, 1) and "ups.0.0.bias" not in sd
    assert tuple(sd["downs.0.weight"].shape) == (64, 32, 2, 2)
    assert tuple(sd["middle_blks.0.sca.1.weight"].shape) == (512, 512, 1, 1)
    assert tuple(sd["decoders.3.0.beta"].shape) == (1, 32, 1, 1)
    assert "encoders.3.28.conv1.weight" not in sd


@pytest.mark.parametrize("variant", [v.name for v in SPEC.variants])
def test_variant_detected_from_keys(variant):
    found = match_variant(SPEC, ADAPTER.detect_hparams(meta_state_dict(variant)))
    # REDS-w64 and GoPro-w64 share one architecture: keys cannot tell them apart
    assert found.hparams == SPEC.variant(variant).hparams
    assert found.name == variant or (variant, found.name) == ("reds-w64", "gopro-w64")


def test_other_architecture_rejected_with_keys_named():
    with pytest.raises(CheckpointError, match="not a NAFNet checkpoint: missing intro.weight"):
        ADAPTER.detect_hparams({"patch_embed.proj.weight": torch.zeros(48, 3, 3, 3)})


def test_random_weights_make_every_branch_contribute():
    model = load_model(ADAPTER, "tiny", None).model
    for block, _ in model.block_levels():
        assert block.beta.abs().min() > 0.05 and block.gamma.abs().min() > 0.05
        x = torch.rand(1, block.conv1.in_channels, 8, 8)
        with torch.no_grad():
            assert (block(x) - x).abs().max() > 1e-3
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        residual = (model(x) - x).abs().mean()
    assert 1e-3 < residual < 0.5  # image-like output: input plus a modest correction


@pytest.mark.parametrize("wrapper", ["params", "params_ema", "model", "state_dict", "bare", "module-prefix"])
def test_checkpoint_formats_load_and_match(tmp_path, wrapper):
    src = load_model(ADAPTER, "tiny", None, seed=3).model
    sd = src.state_dict()
    if wrapper == "bare":
        obj = sd
    elif wrapper == "module-prefix":
        obj = {"params": {f"module.{k}": v for k, v in sd.items()}}
    else:
        obj = {wrapper: sd}
    path = tmp_path / "ck.pth"
    torch.save(obj, path)
    loaded = load_model(ADAPTER, None, str(path))
    assert loaded.variant.name == "tiny"
    x = torch.rand(1, 3, 48, 40)
    with torch.no_grad():
        assert torch.equal(loaded.model(x), src(x))


def test_checkpoint_of_other_variant_lists_problem(tmp_path):
    path = tmp_path / "tiny.pth"
    torch.save({"params": load_model(ADAPTER, "tiny", None).model.state_dict()}, path)
    with pytest.raises(CheckpointError, match=r"does not fit nafnet tiny-notlc: unexpected 78 keys .*shape mismatches.*looks like .tiny., drop --variant"):
        load_model(ADAPTER, "tiny-notlc", str(path))


def test_garbage_and_missing_files(tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="cannot read"):
        read_state_dict(str(bad))
    with pytest.raises(CheckpointError, match="not found"):
        read_state_dict(str(tmp_path / "nope.pth"))
    empty = tmp_path / "empty.pth"
    torch.save({"epoch": 3}, empty)
    with pytest.raises(CheckpointError, match="holds no state dict"):
        read_state_dict(str(empty))


def test_tlc_static_form_equals_eager_reference_and_differs_from_global():
    model = load_model(ADAPTER, "tiny", None).model
    req = ExportRequest("nafnet", "tiny", 72, 100, tlc=TLCConfig.from_train_size(32))  # K=48 at full res
    eager, static = ADAPTER.wrap(model, req, static=False), ADAPTER.wrap(model, req, static=True)
    x = torch.rand(1, 3, 72, 100)
    with torch.no_grad():
        a, b, plain = eager(x), static(x), model(x)
    assert a.shape == x.shape
    assert (a - b).abs().max() < 1e-5
    assert (a - plain).abs().max() > 1e-3  # TLC engaged


def test_tlc_is_global_up_to_one_and_a_half_train_size():
    model = load_model(ADAPTER, "tiny", None).model
    req = ExportRequest("nafnet", "tiny", 384, 384, tlc=TLCConfig())
    x = torch.rand(1, 3, 384, 384)
    with torch.no_grad():
        assert torch.allclose(ADAPTER.wrap(model, req, static=True)(x), model(x), atol=1e-6)
