import math

import numpy as np

from deploy_kit.compare import ParityReport, evaluate, metrics, skipped
from deploy_kit.parity import write_heatmap
from deploy_kit.specs import Tolerance


def test_psnr_and_errors_of_known_offset():
    ref = np.zeros((1, 3, 8, 8), np.float32)
    m = metrics("o", ref, ref + 0.01, "image")
    assert math.isclose(m.psnr, 40.0, abs_tol=1e-6)
    assert math.isclose(m.max_abs, 0.01, rel_tol=1e-6) and math.isclose(m.mean_abs, 0.01, rel_tol=1e-6)


def test_nonfinite_values_fail_every_precision():
    ref = np.random.rand(1, 3, 4, 4)
    cand = ref.copy()
    cand[0, 0, 0, 0] = np.inf
    check = evaluate("ort", "fp16", "x", ["o"], [[ref]], [[cand]], "image", Tolerance())
    assert check.status == "fail" and any("non-finite" in g.what for g in check.gates)


def test_gates_come_from_tolerance_and_all_failures_are_collected():
    ref = np.random.rand(2, 3, 8, 8)
    cand = ref + 1e-3
    tight = evaluate("ort", "fp32", "a", ["o"], [[ref[:1]], [ref[1:]]], [[cand[:1]], [cand[1:]]], "image", Tolerance(fp32_max_abs=1e-4))
    loose = evaluate("ort", "fp32", "a", ["o"], [[ref]], [[cand]], "image", Tolerance(fp32_max_abs=1e-2))
    assert tight.status == "fail" and loose.status == "pass"
    rep = ParityReport("m", "v", [1, 3, 8, 8], None, "ref", ["a"], [tight, tight, skipped("trt", "fp16", "p", "no GPU")])
    assert len(rep.failures()) == 2 and not rep.passed()
    assert "skipped: no GPU" in rep.table() and "FAIL" in rep.to_markdown()
    assert rep.to_dict()["passed"] is False


def test_relative_max_abs_and_logits_top1():
    ref = np.array([[10.0, 20.0, 30.0]])
    cand = np.array([[10.0, 20.001, 30.0]])
    rel = evaluate("ort", "fp32", "a", ["logits"], [[ref]], [[cand]], "logits", Tolerance(fp32_max_abs=1e-4, fp32_relative=True))
    assert rel.status == "pass"  # 1e-3 / 30 < 1e-4
    swapped = evaluate("ort", "fp16", "a", ["logits"], [[ref]], [[np.array([[10.0, 31.0, 30.0]])]], "logits",
                       Tolerance(fp16_min_psnr=None, fp16_min_cosine=0.9))
    assert swapped.status == "fail" and swapped.outputs[0].top1_agreement == 0.0


def test_restoration_drop_gate_is_decided_with_the_check():
    ref = np.random.default_rng(0).random((1, 3, 8, 8))
    cand = ref + 1e-4  # 80 dB: the PSNR gate passes
    tol = Tolerance(int8_max_restoration_drop=0.3)

    def int8(drop, t=tol):
        return evaluate("ort", "int8", "a", ["o"], [[ref]], [[cand]], "image", t, restoration_drop=drop)

    ok, bad = int8(0.1), int8(0.5)
    assert ok.status == "pass" and [g.what for g in ok.gates] == ["o PSNR dB", "restoration PSNR drop dB"]
    assert bad.status == "fail" and not bad.gates[-1].ok and bad.gates[-1].op == "<=" and bad.gates[-1].limit == 0.3
    assert [g.what for g in int8(None).gates] == ["o PSNR dB"]  # not gated (random weights)
    assert [g.what for g in int8(0.5, Tolerance(int8_max_restoration_drop=None)).gates] == ["o PSNR dB"]


def test_heatmap_png(tmp_path):
    from PIL import Image

    ref = np.zeros((1, 3, 16, 24), np.float32)
    cand = ref.copy()
    cand[0, :, 4, 5] = 0.5
    p = write_heatmap(str(tmp_path / "h.png"), ref, cand)
    img = np.asarray(Image.open(p))
    assert img.shape == (16, 24, 3) and img[4, 5].sum() == 765 and img[0, 0].sum() == 0
