"""Small deterministic decisions the runtime makes between stages (ported to Swift/Kotlin).

The mask decoder graph returns all four candidate masks; which one is used, and which
token becomes the object pointer, is decided here exactly as upstream does it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..configs import ModelConfig
from ..contracts import EMPTY_LABEL, NO_OBJ_SCORE, NOT_A_POINT_LABEL

BOX_LABELS = (2, 3)


def use_multimask(num_points: int, cfg: ModelConfig) -> bool:
    """Upstream `_use_multimask` with multimask_output_in_sam and _for_tracking on:
    several candidates whenever the prompt has few points (tracking frames have 0)."""
    return cfg.multimask_min_pt_num <= num_points <= cfg.multimask_max_pt_num


def stability_score(mask_logits: np.ndarray, delta: float) -> float:
    """Area above +delta over area above -delta (1.0 when both are empty)."""
    inter = np.count_nonzero(mask_logits > delta)
    union = np.count_nonzero(mask_logits > -delta)
    return float(inter) / float(union) if union > 0 else 1.0


@dataclass
class MaskChoice:
    mask_index: int  # which of the 4 decoder masks is the output
    ptr_index: int  # which token's object pointer is kept
    multimask: bool
    stability: float  # stability of the single-mask output (1.0 if not computed)


def choose_mask(masks: np.ndarray, iou: np.ndarray, num_points: int, cfg: ModelConfig) -> MaskChoice:
    """masks (4, lr, lr), iou (4,). Multimask: best IoU among tokens 1..3, pointer from the
    same token. Otherwise dynamic multimask: keep token 0 if its mask is stable, else the
    best of 1..3 — but the pointer stays token 0 (upstream quirk)."""
    best = 1 + int(np.argmax(iou[1:4]))
    if use_multimask(num_points, cfg):
        return MaskChoice(best, best, True, 1.0)
    stab = stability_score(masks[0], cfg.dynamic_multimask_stability_delta)
    idx = 0 if stab >= cfg.dynamic_multimask_stability_thresh else best
    return MaskChoice(idx, 0, False, stab)


def apply_object_score(mask: np.ndarray, obj_score: float) -> np.ndarray:
    """Upstream writes NO_OBJ_SCORE everywhere when the object is predicted absent."""
    return mask if obj_score > 0 else np.full_like(mask, NO_OBJ_SCORE)


def build_prompt(points, labels, box, video_hw: tuple, image_size: int, capacity: int | None):
    """Prompt tokens in model-input pixels, in upstream order: box corners (labels 2, 3) first,
    then clicks, then the not-a-point token(s) upstream feeds (label -1 at (0, 0)): one after
    a prompt, two when tracking without clicks (a dummy point plus the appended pad). With a
    fixed `capacity`, the remaining slots are EMPTY_LABEL (masked inside the graph).
    Returns (points (1, n, 2), labels (1, n), number of clicks + box corners)."""
    h, w = video_hw
    pts, labs = [], []
    if box is not None:
        pts += [[box[0], box[1]], [box[2], box[3]]]
        labs += list(BOX_LABELS)
    for p, lab in zip(points or [], labels or []):
        pts.append([p[0], p[1]])
        labs.append(int(lab))
    num_points = len(pts)
    coords = (np.asarray(pts, np.float32).reshape(-1, 2) / np.array([w, h], np.float32)) * image_size
    num_tokens = num_points + (1 if num_points else 2)
    n = num_tokens if capacity is None else capacity
    if num_tokens > n:
        raise ValueError(
            f"prompt has {num_points} points (a box counts 2) but the exported graph takes at most "
            f"{n - 1}; re-export with a larger point capacity"
        )
    out_pts = np.zeros((1, n, 2), np.float32)
    out_labels = np.full((1, n), EMPTY_LABEL, np.int32)
    out_pts[0, :num_points] = coords
    out_labels[0, :num_points] = labs
    out_labels[0, num_points:num_tokens] = NOT_A_POINT_LABEL
    return out_pts, out_labels, num_points
