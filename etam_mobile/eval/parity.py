"""Backend vs reference backend on the same video: J&F with the reference's masks as ground
truth (same frames and objects as the ground-truth scoring) and the minimum per-frame IoU."""
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
    scores = score_video(pred, [{pid: r == pid for pid in ids} for r in ref], ids)
    ious = [iou(p == pid, r == pid) for p, r in zip(pred, ref) for pid in ids]
    return {"J": scores["J"], "F": scores["F"], "J&F": scores["J&F"],
            "min_iou": float(min(ious)) if ious else None, "objects": scores["objects"]}
