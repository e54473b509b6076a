"""Image mode against upstream's image predictor (tests/fixtures/upstream_parity/ti512_image_mode:
efficienttam_ti_512x512, synthetic weights seed 9, three queries).

Gates: eager mask IoU >= 0.99 per mask and scores within 0.01 of upstream. Exported
ExecuTorch/ONNX: IoU >= 0.98 — in the default suite against eager on the shared seed-5 export
(no extra export; eager is gated against upstream above), directly against upstream (seed-9
export) in a slow test.
"""
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from etam_mobile.runtime.backends import EagerBackend
from etam_mobile.runtime.exported import open_backend
from etam_mobile.runtime.image_mode import ImagePredictor, image_mask_indices, preprocess_image

CASE = Path(__file__).parent / "fixtures" / "upstream_parity" / "ti512_image_mode"


def mask_iou(a, b):
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


@pytest.fixture(scope="module")
def image_case():
    case = json.loads((CASE / "case.json").read_text())
    golden = np.load(CASE / "golden.npz")
    rgb = np.asarray(Image.open(CASE / case["image"]).convert("RGB"))
    return case, {k: golden[k] for k in golden.files}, rgb


def _answers(predictor, case, rgb):
    predictor.set_image(rgb)
    return [predictor.predict(q.get("points"), q.get("labels"), q.get("box"), multimask="box" not in q)
            for q in case["queries"]]


def _gate(results, ref_logits, ref_scores, min_iou, max_score_err, what):
    for i, r in enumerate(results):
        ref = ref_logits[i].astype(np.float32)
        assert r.logits.shape == ref.shape, f"{what} query {i}: shape {r.logits.shape} vs {ref.shape}"
        ious = [mask_iou(a > 0, b > 0) for a, b in zip(r.logits, ref)]
        assert min(ious) >= min_iou, f"{what} query {i}: mask IoUs {ious}"
        err = np.abs(r.scores - ref_scores[i]).max()
        assert err <= max_score_err, f"{what} query {i}: scores {r.scores} vs {ref_scores[i]}"


@pytest.fixture(scope="module")
def seed9_model(image_case):
    from etam_mobile.checkpoint import load_model
    from etam_mobile.configs import get_config

    case, _, _ = image_case
    model, _ = load_model(get_config(case["config"]), None, seed=case["seed"], quiet=True)
    return model


def test_eager_matches_upstream_image_predictor(image_case, seed9_model):
    case, golden, rgb = image_case
    results = _answers(ImagePredictor(EagerBackend(seed9_model)), case, rgb)
    n = len(case["queries"])
    assert [len(r.scores) for r in results] == [golden[f"scores_{i}"].shape[0] for i in range(n)] == [3, 3, 1]
    _gate(results, [golden[f"logits_{i}"] for i in range(n)], [golden[f"scores_{i}"] for i in range(n)],
          0.99, 0.01, "eager vs upstream")
    # float32 parity is far tighter than the gate: logits differ by float16 rounding only
    worst = max(np.abs(r.logits - golden[f"logits_{i}"].astype(np.float32)).max() / np.abs(r.logits).max()
                for i, r in enumerate(results))
    assert worst < 2e-3


def test_encoder_runs_once_per_image_and_no_mem_once_per_predictor(image_case, ti512_model):
    case, _, rgb = image_case
    calls = []

    class Counting(EagerBackend):
        def run(self, stage, inputs):
            calls.append(stage)
            return super().run(stage, inputs)

    pred = ImagePredictor(Counting(ti512_model))
    _answers(pred, case, rgb)
    _answers(pred, case, rgb[:, ::-1].copy())
    assert calls.count("image_encoder") == 2 and calls.count("memory_attention") == 1
    assert calls.count("mask_decoder") == 2 * len(case["queries"])


def test_no_mem_embed_read_out_equals_the_parameter(ti512_model):
    pred = ImagePredictor(EagerBackend(ti512_model))
    np.testing.assert_array_equal(pred._no_mem_embed(), ti512_model.no_mem_embed.detach().numpy().reshape(-1))


def test_preprocessing_is_the_image_predictors(image_case):
    """Float bilinear resize with antialias (torchvision Resize on a tensor), not the video path."""
    import torch
    import torch.nn.functional as F

    _, _, rgb = image_case
    x = preprocess_image(rgb, 512)
    t = torch.from_numpy(rgb.copy()).permute(2, 0, 1).float() / 255
    ref = F.interpolate(t[None], size=(512, 512), mode="bilinear", antialias=True)[0]
    ref = (ref - torch.tensor([0.485, 0.456, 0.406])[:, None, None]) / torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    assert x.shape == (1, 3, 512, 512) and x.dtype == np.float32
    np.testing.assert_allclose(x[0], ref.numpy(), atol=1e-6)


def test_mask_indices_model_order_and_dynamic_fallback(tiny_model):
    cfg = tiny_model.cfg
    iou = np.array([0.9, 0.2, 0.7, 0.5], np.float32)
    stable = np.full((4, 8, 8), -10.0, np.float32)
    stable[:, 2:6, 2:6] = 10.0
    assert image_mask_indices(stable, iou, True, cfg) == [1, 2, 3]  # model order, not sorted by score
    assert image_mask_indices(stable, iou, False, cfg) == [0]
    unstable = stable.copy()
    unstable[0] = 0.01  # every logit inside (-delta, +delta]: stability 0
    assert image_mask_indices(unstable, iou, False, cfg) == [2]  # best of tokens 1..3


@pytest.mark.parametrize("backend_name", ["executorch", "onnx"])
def test_exported_image_mode_matches_eager(backend_name, image_case, ti512_model, ti512_export):
    """Seed-5 weights (the shared export): exported vs eager, same preprocessing and decisions."""
    case, _, rgb = image_case
    eager = _answers(ImagePredictor(EagerBackend(ti512_model)), case, rgb)
    got = _answers(ImagePredictor(open_backend(backend_name, ti512_export, config=case["config"])), case, rgb)
    assert [r.tokens for r in got] == [r.tokens for r in eager]
    _gate(got, [r.logits for r in eager], [r.scores for r in eager], 0.98, 0.01, f"{backend_name} vs eager")


@pytest.fixture(scope="module")
def seed9_export(seed9_model):
    from etam_export import export_model

    root = tempfile.mkdtemp(prefix="etam-ti512-s9-")
    export_model(seed9_model, f"{root}/export", targets=("executorch", "onnx"), precision="fp32",
                 weights_info={"synthetic": True, "seed": 9}, quiet=True, verify=False)
    yield f"{root}/export"
    shutil.rmtree(root, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.parametrize("backend_name", ["executorch", "onnx"])
def test_exported_image_mode_matches_upstream(backend_name, image_case, seed9_export):
    case, golden, rgb = image_case
    got = _answers(ImagePredictor(open_backend(backend_name, seed9_export, config=case["config"])), case, rgb)
    n = len(case["queries"])
    _gate(got, [golden[f"logits_{i}"] for i in range(n)], [golden[f"scores_{i}"] for i in range(n)],
          0.98, 0.01, f"{backend_name} vs upstream")
