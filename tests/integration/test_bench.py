"""deploy-kit bench: every backend that runs here has figures, every other one is listed with why."""

import json

from PIL import Image

from deploy_kit.backends import status as backend_status

ENGINES = ("tensorrt-rtx", "tensorrt")


def _rows(path):
    data = json.loads(path.read_text())
    return data, {r["backend"]: r for r in data["rows"]}


def _check_ok(row):
    assert row["status"] == "ok", row
    assert row["runs"] == 20
    for key in ("median_ms", "p90_ms", "mean_ms", "min_ms", "megapixels_per_s", "peak_rss_mib"):
        assert row[key] > 0, (key, row)
    assert row["p90_ms"] >= row["median_ms"] >= row["min_ms"]
    assert row["peak_rss_delta_mib"] >= 0


def _check_engines(rows):
    usable = backend_status()
    for name in ENGINES:
        if not usable[name][0]:
            assert rows[name]["status"] == "skipped" and rows[name]["reason"].strip(), rows[name]
            assert rows[name]["median_ms"] is None


def test_bench_model(cli, tmp_path):
    r = cli("bench", "nafnet", "--variant", "tiny-notlc", "--height", 64, "--width", 64, "--runs", 20, "--warmup", 2,
            "--out", tmp_path)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    stem = "nafnet-tiny-notlc-64x64.fp32"
    data, rows = _rows(tmp_path / f"bench-{stem}.json")
    assert data["input_shape"] == [1, 3, 64, 64] and data["threads"] >= 1 and data["runs"] == 20
    for name in ("pytorch", "onnxruntime"):
        _check_ok(rows[name])
    assert rows["pytorch"]["ratio_vs_pytorch"] == 1.0 and rows["onnxruntime"]["ratio_vs_pytorch"] > 0
    _check_engines(rows)
    for row in data["rows"]:  # nothing silently missing: each row ran or says why not
        assert row["status"] in ("ok", "skipped") and (row["status"] == "ok" or row["reason"])
    if rows["pytorch-cuda"]["status"] == "skipped":
        assert "torch.cuda.is_available()" in rows["pytorch-cuda"]["reason"]
    # the terminal table names the thread count and lists the skipped rows with their reasons
    assert f"{data['threads']} threads for every CPU backend" in r.stdout
    assert "onnxruntime/pytorch latency ratio" in r.stdout
    for name in ENGINES:
        assert any(line.startswith(name + " ") and "skipped" in line for line in r.stdout.splitlines()) or rows[name]["status"] == "ok"
    with Image.open(tmp_path / f"bench-{stem}.png") as img:
        img.load()
        assert img.width > 100 and img.height > 100
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".dk-")]  # the export work folder is gone


def test_bench_bundle(cli, tmp_path):
    r = cli("export", "nafnet", "--variant", "tiny-notlc", "--height", 64, "--width", 64, "--fp16", "--bundle",
            "--backend", "none", "--samples", 1, "--out", tmp_path)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    bundle = tmp_path / "nafnet-tiny-notlc-64x64.fp16.bundle"
    out = tmp_path / "bench"
    r = cli("bench", bundle, "--runs", 20, "--warmup", 1, "--threads", 1, "--out", out, "--plot", tmp_path / "p.png")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    data, rows = _rows(out / "bench-nafnet-tiny-notlc-64x64.fp16.json")
    assert data["target_kind"] == "bundle" and data["precision"] == "fp16" and data["threads"] == 1
    assert not any(name.startswith("pytorch") for name in rows)
    _check_ok(rows["onnxruntime"])
    assert rows["onnxruntime"]["ratio_vs_pytorch"] is None
    _check_engines(rows)
    with Image.open(tmp_path / "p.png") as img:
        img.load()


def test_bench_bad_input(cli, tmp_path):
    r = cli("bench", "nosuchmodel", "--out", tmp_path / "o")
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "unknown model 'nosuchmodel'" in lines[0], r.stderr
    assert not (tmp_path / "o").exists()
