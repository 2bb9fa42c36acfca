"""Synchronised statistics: the core partition, exact sums in the sync forms, and tiles equal to the full image."""

import numpy as np
import pytest

from deploy_kit.errors import UsageError
from deploy_kit.runtime.context import core_boxes, parse_context
from deploy_kit.runtime.tiling import make_plan


@pytest.mark.parametrize("h,w,tile,overlap,multiple", [
    (300, 451, (64, 64), 16, 8),      # odd sizes, many tiles
    (64, 64, (64, 64), 16, 1),        # exactly one tile
    (40, 23, (64, 64), 16, 1),        # smaller than a tile (reflect-padded)
    (129, 77, (64, 48), 20, 4),       # rectangular tile, odd overlap
    (1000, 1500, (256, 256), 32, 16),
    (200, 130, (64, 64), 31, 1),      # large overlap: empty cores allowed, still a partition
])
def test_cores_partition_the_image(h, w, tile, overlap, multiple):
    plan = make_plan(h, w, tile, overlap, multiple=multiple)
    t, _, l, _ = plan.pad
    count = np.zeros((h, w), np.int32)
    for (y, x), (y0, y1, x0, x1) in zip(plan.positions, core_boxes(plan, multiple)):
        assert 0 <= y0 <= y1 <= tile[0] and 0 <= x0 <= x1 <= tile[1]  # inside its own tile
        count[y + y0 - t:y + y1 - t, x + x0 - l:x + x1 - l] += 1
    assert count.min() == 1 and count.max() == 1  # every image pixel counted exactly once


@pytest.mark.parametrize("text,expect", [("tile", ("tile", 1)), (None, ("tile", 1)), ("sync", ("sync", 2)),
                                         ("sync:5", ("sync", 5))])
def test_parse_context(text, expect):
    assert parse_context(text) == expect


@pytest.mark.parametrize("text", ["sync:0", "sync:x", "global", "sync:17", ""])
def test_parse_context_rejects(text):
    with pytest.raises(UsageError):
        parse_context(text)


torch = pytest.importorskip("torch")


def _form(model, **kw):
    from deploy_kit.models import get_adapter
    from deploy_kit.models.checkpoint import load_request
    from deploy_kit.models.sync import record_layout
    from deploy_kit.request import resolve_request

    req = resolve_request(model, height=64, width=96, **kw)
    adapter = get_adapter(model)
    net = load_request(adapter, req).model
    form = adapter.sync_form(net, req)
    size = sum(n for _, n in record_layout(form, 3, 64, 96))
    return adapter, net, req, form, size


@pytest.mark.parametrize("model,kw", [("nafnet", {"variant": "tiny-notlc"}), ("restormer", {"variant": "tiny", "tlc": False})])
def test_sync_form_sums_over_core_regions_exactly(model, kw):
    """The statistics of a partition's parts add up to the whole's, and use 0 is the ordinary graph."""
    adapter, net, req, form, size = _form(model, **kw)
    x = torch.rand(1, 3, 64, 96, generator=torch.Generator().manual_seed(0))
    zeros, off = torch.zeros(1, size), torch.zeros(1, 1)
    with torch.no_grad():
        plain = adapter.wrap(net, req, static=True)(x)
        y, whole = form(x, torch.ones(1, 1, 64, 96), zeros, off)
        parts = torch.zeros(1, size)
        for rows, cols in [((0, 32), (0, 96)), ((32, 64), (0, 48)), ((32, 64), (48, 96))]:  # an L-shaped partition
            mask = torch.zeros(1, 1, 64, 96)
            mask[..., rows[0]:rows[1], cols[0]:cols[1]] = 1
            parts += form(x, mask, zeros, off)[1]
        fed, again = form(x, torch.ones(1, 1, 64, 96), whole, torch.ones(1, 1))
    assert torch.allclose(parts, whole, rtol=1e-5, atol=1e-6)
    assert float((y - plain).abs().max()) < 1e-5  # use 0: what the ordinary export form computes
    assert float((fed - y).abs().max()) < 1e-5  # its own whole-tile statistics fed back: the same again
    assert torch.allclose(again, whole, rtol=1e-5, atol=1e-6)


def test_sync_form_uses_the_injected_statistics():
    adapter, net, req, form, size = _form("nafnet", variant="tiny-notlc")
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        y0, s = form(x, torch.ones(1, 1, 64, 96), torch.zeros(1, size), torch.zeros(1, 1))
        y1, _ = form(x, torch.ones(1, 1, 64, 96), s * 3.0, torch.ones(1, 1))
    assert float((y1 - y0).abs().max()) > 1e-3  # other statistics in, another output out: the input is used
