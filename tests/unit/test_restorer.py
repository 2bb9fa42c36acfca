"""The runtime's Python API: batched tiles, pipelined = serial bit for bit, dtypes and sizes, faults.

The model is a real ONNX graph on ONNX Runtime (a 5x5 convolution: local context, so tiles with
overlap reproduce the full image); one test double (a runner that fails) checks the pipeline's
error handling, which is the runtime's own logic.
"""

import threading
import time

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from deploy_kit.manifest import Manifest  # noqa: E402
from deploy_kit.runtime.restorer import Restorer  # noqa: E402
from deploy_kit.runners.base import Runner  # noqa: E402
from deploy_kit.runners.ort import OrtRunner  # noqa: E402

TILE = 32


def _conv_onnx(path, batch, channels=3, seed=0):
    rng = np.random.default_rng(seed)
    w = (rng.random((channels, channels, 5, 5)) / (25 * channels)).astype(np.float32)
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, channels, TILE, TILE])
    y = helper.make_tensor_value_info("output", TensorProto.FLOAT, [batch, channels, TILE, TILE])
    node = helper.make_node("Conv", ["input", "w"], ["output"], pads=[2, 2, 2, 2])
    graph = helper.make_graph([node], "conv", [x], [y], initializer=[numpy_helper.from_array(w, "w")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return str(path)


def _manifest(batch, channels=3):
    return Manifest.for_runner((batch, channels, TILE, TILE))


@pytest.fixture(scope="module")
def graphs(tmp_path_factory):
    d = tmp_path_factory.mktemp("g")
    return {n: _conv_onnx(d / f"conv-b{n}.onnx", n) for n in (1, 3)}


def _restorer(graphs, batch, **kw):
    return Restorer(runner=OrtRunner(graphs[batch], threads=1), manifest=_manifest(batch), overlap=8, **kw)


def _frames(seed=0):
    rng = np.random.default_rng(seed)
    sizes = [(70, 95), (32, 32), (20, 45), (101, 64)]  # larger than, equal to and smaller than a tile
    return [(rng.random((h, w, 3)) * 255).astype(np.uint8) for h, w in sizes]


def test_batched_tiles_equal_unbatched(graphs):
    frames = _frames()
    with _restorer(graphs, 1) as one, _restorer(graphs, 3) as three:
        assert three.batch == 3
        for f in frames:
            a = one.restore(f.astype(np.float32) / 255)
            b = three.restore(f.astype(np.float32) / 255)
            np.testing.assert_allclose(a, b, rtol=0, atol=2e-6)
            assert np.abs(one.restore(f).astype(int) - three.restore(f).astype(int)).max() <= 1


def test_pipelined_equals_serial_bit_for_bit(graphs):
    frames = _frames() * 3
    with _restorer(graphs, 3, depth=3) as r:
        serial = [r.restore(f) for f in frames]
        piped = list(r.restore_stream(iter(frames)))
    assert len(piped) == len(serial)
    assert all(a.tobytes() == b.tobytes() for a, b in zip(serial, piped))
    assert {threading.current_thread().name} == {t.name for t in threading.enumerate() if t.name.startswith("deploy-kit")} | {threading.current_thread().name}


def test_tiles_reproduce_the_full_image_of_a_local_model(tmp_path, graphs):
    rng = np.random.default_rng(3)
    img = rng.random((TILE, TILE, 3)).astype(np.float32)
    big = np.clip(np.kron(rng.random((6, 8, 3)), np.ones((15, 15, 1))).astype(np.float32) + 0.05 * rng.random((90, 120, 3)).astype(np.float32), 0, 1)
    # the same convolution on the whole image, through a graph of the image's size
    full_graph = str(tmp_path / "full.onnx")
    m = onnx.load(graphs[1])
    for v in (*m.graph.input, *m.graph.output):
        v.type.tensor_type.shape.dim[2].dim_value, v.type.tensor_type.shape.dim[3].dim_value = 90, 120
    onnx.save(m, full_graph)
    full = OrtRunner(full_graph).run(big.transpose(2, 0, 1)[None])[0][0].transpose(1, 2, 0)
    with _restorer(graphs, 3) as r:
        tiled = r.restore(big)
        assert r.restore(img).shape == img.shape
    with Restorer(runner=OrtRunner(graphs[3], threads=1), manifest=_manifest(3), overlap=0) as r:
        seams = r.restore(big)
    inner = (slice(3, -3), slice(3, -3))  # the border sees the same zero padding in both

    def psnr(a):
        return 10 * np.log10(1 / np.mean((a[inner].astype(np.float64) - np.clip(full, 0, 1)[inner]) ** 2))

    # overlapping, blended tiles: a tile's outermost 2 px (the conv's reach) get small weights only
    assert psnr(tiled) > 50 and psnr(seams) < psnr(tiled) - 10, (psnr(tiled), psnr(seams))


def test_dtypes_and_channels_come_back_as_they_went_in(graphs):
    rng = np.random.default_rng(1)
    with _restorer(graphs, 1) as r:
        u16 = (rng.random((40, 50, 3)) * 65535).astype(np.uint16)
        assert r.restore(u16).dtype == np.uint16
        gray = (rng.random((40, 50)) * 255).astype(np.uint8)
        out = r.restore(gray)
        assert out.shape == (40, 50, 1) and out.dtype == np.uint8
        buf = np.empty((40, 50, 3), np.uint8)
        f = (rng.random((40, 50, 3)) * 255).astype(np.uint8)
        assert r.restore(f, out=buf) is buf and np.array_equal(buf, r.restore(f))
        with pytest.raises(ValueError, match="H x W x 1 or 3"):
            r.restore(rng.random((40, 50, 3)))  # float64
        with pytest.raises(ValueError, match="out must be"):
            r.restore(f, out=np.empty((40, 50, 3), np.uint16))


class _FailingRunner(Runner):
    """A test double: identity for two calls, then an error (the pipeline must stop and re-raise it)."""

    def __init__(self):
        self.input_shape = (1, 3, TILE, TILE)
        self.calls = 0

    def run(self, x):
        self.calls += 1
        if self.calls > 2:
            raise RuntimeError("engine execution failed")
        return [x.copy()]


def test_a_stage_error_stops_the_stream_and_is_raised():
    r = Restorer(runner=_FailingRunner(), manifest=_manifest(1), overlap=8)
    frames = _frames() * 4
    with pytest.raises(RuntimeError, match="engine execution failed"):
        list(r.restore_stream(frames))
    bad = [np.zeros((10, 10, 3), np.uint8), np.zeros((4, 4, 7), np.uint8)]
    r2 = Restorer(runner=_FailingRunner(), manifest=_manifest(1), overlap=8)
    with pytest.raises(ValueError, match="H x W x 1 or 3"):
        list(r2.restore_stream(bad))
    alive = [t for t in threading.enumerate() if t.name.startswith("deploy-kit-")]
    for t in alive:
        t.join(timeout=5)
    assert not any(t.is_alive() for t in alive)


def test_an_abandoned_stream_stops_its_threads(graphs):
    with _restorer(graphs, 1) as r:
        gen = r.restore_stream(_frames() * 10)
        next(gen)
        gen.close()
    alive = [t for t in threading.enumerate() if t.name.startswith("deploy-kit-")]
    for t in alive:
        t.join(timeout=5)
    assert not any(t.is_alive() for t in alive)


def test_accumulators_of_many_sizes_are_recycled(graphs):
    """A size whose recycled accumulators were all taken is dropped from the pool, so trimming the pool to
    ``depth + 1`` never meets an empty entry (frames of several sizes in flight at once did)."""
    with _restorer(graphs, 1, depth=1) as r:
        grids = [r.grid(h, w) for h, w in ((40, 50), (60, 30), (33, 70))]
        a, b, c1, c2 = (r._acc(g, 3) for g in (grids[0], grids[1], grids[2], grids[2]))
        r._give_acc(a)
        r._give_acc(b)
        assert r._acc(grids[0], 3) is a  # its size's last one: taken
        r._give_acc(c1)
        r._give_acc(c2)  # three kept > depth + 1: the oldest size's go first
        kept = [x for v in r._free_accs.values() for x in v]
        assert len(kept) == 2 and all(x is not a for x in kept)
        r.restore(np.zeros((40, 50, 3), np.uint8))


class _SlowRunner(Runner):
    """A test double of an engine runner: a pass takes 0.3 s to finish and its outputs live in the
    runner's own buffers, which ``close`` frees. A wait that ends after ``close`` counts as a pass
    whose buffers were freed under it (what a freed pinned buffer would be on a GPU)."""

    slots = 2

    def __init__(self):
        self.input_shape = (1, 3, TILE, TILE)
        self.closed, self.freed_in_use = False, 0
        self.waiting = threading.Event()

    def submit(self, x):
        runner, out = self, [x.copy()]

        class Slow:
            def wait(self):
                runner.waiting.set()
                time.sleep(0.3)
                if runner.closed:
                    runner.freed_in_use += 1
                return out

        return Slow()

    def run(self, x):
        return self.submit(x).wait()

    def close(self):
        self.closed = True


def _stage_threads():
    return [t for t in threading.enumerate() if t.name.startswith("deploy-kit-")]


@pytest.mark.parametrize("abandon", ["kept", "closed"])
def test_close_waits_for_the_stages_before_the_runner_goes(abandon):
    """``close`` right after a stream was left, its generator kept (``kept``: its ``finally`` has not run)
    or closed: no stage may still be inside the runner when the runner is released."""
    runner = _SlowRunner()
    r = Restorer(runner=runner, manifest=_manifest(1), overlap=8)
    gen = r.restore_stream([np.zeros((TILE, TILE, 3), np.uint8)] * 8)  # one pass per frame
    next(gen)
    runner.waiting.clear()
    assert runner.waiting.wait(5)  # a stage is inside a pass now
    if abandon == "closed":
        gen.close()
    r.close()
    assert runner.closed and not [t for t in _stage_threads() if t.name != "deploy-kit-source" and t.is_alive()]
    time.sleep(0.4)  # a stage still inside the runner would finish its pass now
    assert runner.freed_in_use == 0
    gen.close()
    for t in _stage_threads():
        t.join(timeout=5)


def test_one_large_frame_is_quantised_while_its_last_tiles_are_in_the_model():
    """One frame overlaps its own stages: the finisher quantises the rows no later tile touches
    (``TileGrid.rows_done``) while the last tiles are still in the model. The runner is a numpy test
    double (the overlap is the runtime's own logic): its last call waits until some, not all, rows of
    the frame are quantised. The frame equals the serial ``restore``'s, byte for byte."""
    frame = (np.random.default_rng(4).random((101, 70, 3)) * 255).astype(np.uint8)
    gate = threading.Event()

    class Gated(Runner):
        def __init__(self):
            self.calls, self.last, self.waited = 0, None, None

        def run(self, x):
            self.calls += 1
            if self.calls == self.last:
                self.waited = gate.wait(timeout=30)
            return [np.sin(x * np.float32(3.0))]

    class Watching(Restorer):
        def _quantise(self, job, upto, out=None):
            super()._quantise(job, upto, out)
            if 0 < job.quantised < job.grid.out_size[0]:
                gate.set()

    runner = Gated()
    with Watching(runner=runner, manifest=_manifest(1), overlap=8) as r:
        runner.last = r.grid(101, 70).calls
        assert r.grid(101, 70).rows_done(0) < 101 and runner.last > 3
        (piped,) = list(r.restore_stream([frame]))
    assert runner.waited is True
    runner.calls, runner.last = 0, None
    with Restorer(runner=runner, manifest=_manifest(1), overlap=8) as r:
        serial = r.restore(frame)
    assert piped.tobytes() == serial.tobytes()
