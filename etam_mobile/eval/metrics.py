"""J, F and J&F with vos-benchmark's Evaluator (its per-frame DAVIS J/F, not our own code).

Each object is scored on its own as a binary mask (the SA-V evaluator's way; for DAVIS
label maps it is the same as the official per-object scoring): `Evaluator.feed_frame`
per scored frame, `conclude()` for the means. An object whose ground truth is empty on
every scored frame is left out, as vos-benchmark does. Values here are in 0..1.

Void pixels (DAVIS palette index 255) count for neither J nor F. vos-benchmark has no void
support, so prediction and ground truth are both set to background there before it sees
them: the same numbers as the DAVIS metric functions `db_eval_iou` / `f_measure` with their
`void_pixels` argument (intersection and union taken outside void; boundaries of the
masks with void removed).
"""
from __future__ import annotations

import numpy as np


def _evaluator():
    try:
        from vos_benchmark.evaluator import Evaluator
    except ImportError as exc:
        from . import EvalError

        raise EvalError(f"etam-mobile eval needs vos-benchmark ({exc}); pip install 'etam-mobile[eval]'") from None
    return Evaluator()


def _unvoid(m, void) -> np.ndarray:
    m = np.asarray(m, bool)
    return m if void is None else m & ~np.asarray(void, bool)


def score_object(preds: list, gts: list, voids: list | None = None) -> dict | None:
    """J, F, J&F of one object over frames; preds/gts are HxW bool arrays, voids HxW bool or None
    per frame (pixels scored for nobody). None if GT always empty."""
    ev = _evaluator()
    for p, g, v in zip(preds, gts, voids or [None] * len(gts)):
        ev.feed_frame(_unvoid(p, v).astype(np.uint8), _unvoid(g, v).astype(np.uint8))
    iou, bf = ev.conclude()
    if 1 not in iou:
        return None
    j, f = float(iou[1]) / 100.0, float(bf[1]) / 100.0
    return {"J": j, "F": f, "J&F": (j + f) / 2}


def score_video(pred_labels: list, gt_masks: list, obj_ids, voids: list | None = None) -> dict:
    """Per-object and per-video (mean over objects) J/F/J&F.

    pred_labels: HxW palette label maps; gt_masks: {id: HxW bool} per frame (same frames);
    voids: HxW bool (or None) per frame, the ground truth's void pixels.
    """
    objects = {}
    for pid in obj_ids:
        s = score_object([lab == pid for lab in pred_labels], [g[pid] for g in gt_masks], voids)
        if s is not None:
            objects[int(pid)] = s
    out = {"objects": {str(k): v for k, v in objects.items()}}
    for key in ("J", "F", "J&F"):
        out[key] = float(np.mean([v[key] for v in objects.values()])) if objects else None
    return out


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Per-frame IoU, both empty = 1 (vos-benchmark's get_iou convention)."""
    from vos_benchmark.evaluator import get_iou

    a, b = np.asarray(a, bool), np.asarray(b, bool)
    inter = int(np.count_nonzero(a & b))
    return float(get_iou(inter, int(np.count_nonzero(a)) + int(np.count_nonzero(b))))


def overall(videos: dict) -> dict:
    """Dataset J/F/J&F: mean over every object of every video (vos-benchmark's global score)."""
    objs = [o for v in videos.values() for o in v.get("objects", {}).values()]
    if not objs:
        return {"J": None, "F": None, "J&F": None}
    j = float(np.mean([o["J"] for o in objs]))
    f = float(np.mean([o["F"] for o in objs]))
    return {"J": j, "F": f, "J&F": (j + f) / 2}
