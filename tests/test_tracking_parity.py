"""End to end against upstream: the recorded ti_512 two-object case, frame by frame.

Gate (issue 2): mask IoU >= 0.99 for every frame and object, and mean absolute logit
error <= 1% of the mean absolute logit. Upstream's logits were stored as float16.
"""
import json

import numpy as np

from etam_mobile.runtime.backends import EagerBackend
from etam_mobile.runtime.pipeline import track_video
from conftest import CASE


def mask_iou(a, b):
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else np.logical_and(a, b).sum() / union


def test_eager_tracker_reproduces_upstream(ti512_model, parity_case, tmp_path):
    case, golden = parity_case
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps({"prompts": case["prompts"]}))
    track_video(EagerBackend(ti512_model), CASE / "frames", prompts, tmp_path / "out", save_logits=True, quiet=True)
    got = np.load(tmp_path / "out" / "logits.npz")
    ref = golden["logits"].astype(np.float32)
    assert got["obj_ids"].tolist() == golden["obj_ids"].tolist()
    logits = got["logits"]
    assert logits.shape == ref.shape
    for f in range(ref.shape[0]):
        for o in range(ref.shape[1]):
            iou = mask_iou(logits[f, o] > 0, ref[f, o] > 0)
            assert iou >= 0.99, f"frame {f} object {o}: IoU {iou:.4f}"
    rel = np.abs(logits - ref).mean() / np.abs(ref).mean()
    assert rel <= 0.01, f"mean abs logit error {rel:.2%} of mean abs logit"
    # The palette PNGs agree with the logits.
    from PIL import Image

    m = np.asarray(Image.open(tmp_path / "out" / "masks" / "00007.png"))
    assert ((m == 2) == ((logits[7, 1] > 0) & (logits[7, 1] >= logits[7, 0]))).mean() > 0.999
