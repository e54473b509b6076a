"""Backend vs reference backend on the same video: J&F with the reference's masks as ground
truth (same frames, objects and pixels as the ground-truth scoring: the ground truth's void
pixels are left out here too) and the minimum per-frame IoU."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from .metrics import iou, score_video


def _labels(folder: Path, video, i: int) -> np.ndarray:
    with Image.open(folder / f"{video.stem(i)}.png") as im:
        return np.asarray(im)


def compare(folder: Path, ref_folder: Path, video) -> dict:
    frames = video.eval_frames
    pred = [_labels(folder, video, i) for i in frames]
    ref = [_labels(ref_folder, video, i) for i in frames]
    ids = sorted(video.objects)
    voids = [video.annotation(i)[1] for i in frames]
    scores = score_video(pred, [{pid: r == pid for pid in ids} for r in ref], ids, voids)
    keep = [np.ones(p.shape, bool) if v is None else ~v for p, v in zip(pred, voids)]
    ious = [iou((p == pid) & k, (r == pid) & k) for p, r, k in zip(pred, ref, keep) for pid in ids]
    return {"J": scores["J"], "F": scores["F"], "J&F": scores["J&F"],
            "min_iou": float(min(ious)) if ious else None, "objects": scores["objects"]}
