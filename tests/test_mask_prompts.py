"""Mask prompts (upstream add_new_mask) against the recorded upstream case ti512_mask_prompts:
two objects from first-frame masks (one re-prompted with a mask on frame 5) and one from a click.

Gates: mask IoU >= 0.99 (eager) / >= 0.98 (exported) on every frame and object, mean absolute
logit error <= 1% / 2% of the mean absolute logit, and upstream's object score 10.0 on mask frames.
"""
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from etam_mobile.checkpoint import load_model
from etam_mobile.configs import get_config
from etam_mobile.preprocess import preprocess_frame
from etam_mobile.runtime.backends import EagerBackend
from etam_mobile.runtime.frames import open_frames
from etam_mobile.runtime.outputs import to_video_res
from etam_mobile.runtime.pipeline import track_video
from etam_mobile.runtime.tracker import Tracker

from conftest import FIXTURES

MASK_CASE = FIXTURES / "ti512_mask_prompts"


def mask_case():
    case = json.loads((MASK_CASE / "case.json").read_text())
    golden = np.load(MASK_CASE / "golden.npz")
    return case, {k: golden[k] for k in golden.files}


@pytest.fixture(scope="module")
def mask_model():
    case, _ = mask_case()
    return load_model(get_config(case["config"]), None, seed=case["seed"], quiet=True)[0]


def gate(got, ref, min_iou, max_rel, what):
    worst = 1.0
    for f in range(ref.shape[0]):
        for o in range(ref.shape[1]):
            a, b = got[f, o] > 0, ref[f, o] > 0
            union = np.logical_or(a, b).sum()
            iou = 1.0 if union == 0 else np.logical_and(a, b).sum() / union
            worst = min(worst, float(iou))
            assert iou >= min_iou, f"{what}: frame {f} object {o}: IoU {iou:.4f}"
    rel = float(np.abs(got - ref).mean() / np.abs(ref).mean())
    assert rel <= max_rel, f"{what}: mean abs logit error {100 * rel:.3f}%"
    return worst, rel


def run_api(backend):
    """The case through the interactive Tracker API (add_new_mask / add_new_points, then propagate)."""
    case, _ = mask_case()
    frames = open_frames(MASK_CASE / "frames")
    n, h, w, S = len(frames), frames.height, frames.width, backend.cfg.image_size
    tracker = Tracker(backend, n, (h, w), lambda i: preprocess_frame(frames.rgb(i), S).numpy())
    for p in case["prompts"]:
        if "mask" in p:
            tracker.add_prompt(p["frame"], p["id"], mask=np.asarray(Image.open(MASK_CASE / p["mask"])) > 0)
        else:
            tracker.add_prompt(p["frame"], p["id"], p.get("points"), p.get("labels"), p.get("box"))
    logits, scores = [], []
    for f, ids, low in tracker.propagate():
        logits.append(to_video_res(low, h, w))
        scores.append(tracker.obj_scores(f))
    return list(ids), np.stack(logits), np.array(scores, np.float32)


def test_mask_prompts_match_upstream_eager(mask_model):
    _, golden = mask_case()
    ids, got, scores = run_api(EagerBackend(mask_model))
    assert ids == golden["obj_ids"].tolist()
    gate(got, golden["logits"].astype(np.float32), 0.99, 0.01, "eager mask prompts")
    mask_frames = golden["obj_scores"] == 10.0
    assert mask_frames.sum() == 3  # objects 1 and 3 on frame 0, object 1 on frame 5
    assert np.all(scores[mask_frames] == 10.0)
    np.testing.assert_allclose(scores[~mask_frames], golden["obj_scores"][~mask_frames], rtol=0, atol=1e-3)


def test_mask_prompt_file_through_cli_pipeline(mask_model, tmp_path):
    """The prompt-file form ({"mask": "masks/x.png"}, relative paths) through `track`'s pipeline."""
    case, golden = mask_case()
    doc = {"prompts": case["prompts"]}  # case.json's prompts are in the prompt-file format
    (tmp_path / "masks").mkdir()
    for p in case["prompts"]:
        if "mask" in p:
            shutil.copy(MASK_CASE / p["mask"], tmp_path / p["mask"])
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps(doc))
    track_video(EagerBackend(mask_model), MASK_CASE / "frames", prompts, tmp_path / "out", save_logits=True, quiet=True)
    got = np.load(tmp_path / "out" / "logits.npz")["logits"]
    gate(got, golden["logits"].astype(np.float32), 0.99, 0.01, "pipeline mask prompts")


@pytest.fixture(scope="module")
def mask_export(mask_model):
    from etam_export import export_model

    root = tempfile.mkdtemp(prefix="etam-ti512-mask-")
    folder = Path(root) / "export"
    export_model(mask_model, folder, targets=("executorch", "onnx"), precision="fp32",
                 weights_info={"synthetic_seed": 7}, quiet=True, verify=False)
    yield folder
    shutil.rmtree(root, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.parametrize("backend_name", ["executorch", "onnx"])
def test_mask_prompts_match_upstream_exported(backend_name, mask_export):
    from etam_mobile.runtime.exported import open_backend

    _, golden = mask_case()
    doc = json.loads((mask_export / "manifest.json").read_text())
    assert np.asarray(doc["mask_prompt"]["downsample_weight"]).shape == (4, 4)
    ids, got, scores = run_api(open_backend(backend_name, mask_export))
    assert ids == golden["obj_ids"].tolist()
    gate(got, golden["logits"].astype(np.float32), 0.98, 0.02, f"{backend_name} mask prompts")
    assert np.all(scores[golden["obj_scores"] == 10.0] == 10.0)
