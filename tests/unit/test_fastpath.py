"""The export forms' speed rewrites (models/fastpath.py) compute the upstream function."""

from __future__ import annotations

import subprocess
import sys

import onnx
import pytest
import torch

from deploy_kit.memory import PeakRss
from deploy_kit.models import get_adapter
from deploy_kit.models.checkpoint import load_model
from deploy_kit.models.fastpath import ConvParts, fold_affine_1x1
from deploy_kit.models.rangesafe import ChannelLayerNorm
from deploy_kit.specs import ExportRequest, TLCConfig


def _conv(cin, cout, k=1, groups=1, bias=True, seed=0):
    torch.manual_seed(seed)
    return torch.nn.Conv2d(cin, cout, k, padding=k // 2, groups=groups, bias=bias).eval()


@pytest.mark.parametrize("norm_bias,conv_bias", [(True, True), (True, False), (False, True), (False, False)])
def test_fold_affine_matches_affine_then_conv(norm_bias, conv_bias):
    conv = _conv(12, 20, bias=conv_bias)
    w, b = torch.randn(12) * 2, torch.randn(12) if norm_bias else None
    n = torch.randn(2, 12, 9, 7)
    ref = conv(n * w.view(1, -1, 1, 1) + (b.view(1, -1, 1, 1) if b is not None else 0))
    fw, fb = fold_affine_1x1(conv, w, b)
    got = torch.nn.functional.conv2d(n, fw, fb)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("parts,depthwise,bias,centred", [(2, True, True, True), (3, True, False, False),
                                                          (2, False, True, True), (3, False, False, True)])
def test_conv_parts_equal_the_chunked_chain(parts, depthwise, bias, centred):
    c, hidden = 8, 6 * parts
    norm = ChannelLayerNorm(c, 1e-5, bias=bias, centred=centred)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        if bias:
            norm.bias.normal_()
    pw = _conv(c, hidden, bias=bias, seed=1)
    dw = _conv(hidden, hidden, 3, groups=hidden, bias=bias, seed=2) if depthwise else None
    x = torch.randn(1, c, 10, 11) * 3
    with torch.no_grad():
        y = pw(norm(x))
        ref = (dw(y) if dw is not None else y).chunk(parts, dim=1)
        fast = ConvParts.fold(norm, pw, dw, parts)
        assert norm.affine_folded  # the norm now leaves its affine to the parts
        got = fast(norm(x))
    assert len(got) == parts
    for g, r in zip(got, ref):
        torch.testing.assert_close(g, r, atol=1e-5, rtol=1e-5)


def _forms(model: str, variant: str, req: ExportRequest, init: str):
    adapter = get_adapter(model)
    loaded = load_model(adapter, variant, None, 0, init=init)
    return adapter.wrap(loaded.model, req, static=False), adapter.wrap(loaded.model, req, static=True)


@pytest.mark.parametrize("model,variant,tlc", [("nafnet", "tiny", True), ("nafnet", "tiny-notlc", False),
                                               ("restormer", "tiny", True), ("restormer", "tiny-biasfree", False)])
@pytest.mark.parametrize("init", ["active", "official"])
def test_export_form_matches_upstream_and_has_no_split(tmp_path, model, variant, tlc, init):
    """Same function as the eager module (official zeros/ones init too); the graph has no Split
    and no per-channel Mul/Add between a LayerNorm and its conv."""
    req = ExportRequest(model, variant, 48, 56, tlc=TLCConfig.from_train_size(32) if tlc else None)
    eager, static = _forms(model, variant, req, init)
    x = torch.rand(1, 3, 48, 56)
    with torch.no_grad():
        ref, got = eager(x), static(x)
    torch.testing.assert_close(got, ref, atol=2e-5, rtol=0)
    assert sum(1 for m in static.modules() if isinstance(m, ConvParts)) > 0
    path = str(tmp_path / "m.onnx")
    torch.onnx.export(static, x, path, dynamo=False, opset_version=17, input_names=["input"])
    g = onnx.load(path).graph
    assert not any(n.op_type == "Split" for n in g.node)
    producer = {o: n for n in g.node for o in n.output}
    inits = {i.name for i in g.initializer}
    for conv in (n for n in g.node if n.op_type == "Conv"):
        src = producer.get(conv.input[0])
        # a LayerNorm's output feeds a conv straight from its Div (the affine is in the weights)
        if src is not None and src.op_type in ("Mul", "Add"):
            assert not any(i in inits for i in src.input), f"{conv.name} reads an affine {src.op_type}"


def test_peak_rss_counts_child_processes():
    with PeakRss(interval=0.02) as mon:
        mon.take()
        subprocess.run([sys.executable, "-c", "import time; b = bytearray(300 << 20); time.sleep(0.5)"], check=True)
        stage = mon.take()
    if not mon.available:
        pytest.skip("no /proc here: PeakRss reports None")
    assert stage >= 300  # MiB: the child's buffer is in the tree's peak


def _mapped_after_realloc() -> int:
    """Bytes glibc holds in mmapped blocks after a 4 MiB malloc, its free, and a second 4 MiB malloc."""
    import ctypes

    class MallInfo2(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in
                    ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                     "keepcost")]

    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    libc.mallinfo2.restype = MallInfo2
    libc.free(libc.malloc(4 << 20))  # glibc's own rule: the threshold rises to the freed mapping's size
    block = libc.malloc(4 << 20)
    mapped = libc.mallinfo2().hblkhd
    libc.free(block)
    return mapped


def test_child_allocator_lean_for_one_shot_runs_default_for_timing():
    """in_child_process maps large allocations (memory.py) unless lean=False, which bench uses: a
    mapping per allocation cost PyTorch eager NAFNet 256x256 3x its time (283 -> 904 ms)."""
    import ctypes
    import inspect

    from deploy_kit import bench
    from deploy_kit.runners.base import in_child_process

    try:
        ctypes.CDLL("libc.so.6").mallinfo2
    except (OSError, AttributeError):
        pytest.skip("not glibc >= 2.33: no mallinfo2")
    assert in_child_process(_mapped_after_realloc) >= 4 << 20  # lean: the second block is mapped too
    assert in_child_process(_mapped_after_realloc, lean=False) < 4 << 20  # glibc's rule: served from the heap
    assert "lean=False" in inspect.getsource(bench._bench_row)
