"""Prompts derived deterministically from each object's first ground-truth mask.

mask  = the mask itself on the frame the object first appears (semi-supervised protocol)
box   = its bounding box [x0, y0, x1, y1] in pixel coordinates (inclusive extremes)
click = one positive click on the interior pixel farthest from the boundary (Euclidean
        distance transform; the frame border counts as boundary; ties go to the first pixel
        in row-major order)

Mask prompts go through `apply_prompt`/`prompt_entry` only: they use the prompt-file
format `{"id", "frame", "mask": "masks/objN.png"}` and `Tracker.add_prompt(mask=...)`,
which `mask_prompts_supported()` detects by capability.
"""
from __future__ import annotations

import inspect
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from . import EvalError

PROTOCOLS = ("mask", "box", "click")


@dataclass
class EvalPrompt:
    obj_id: int
    frame: int
    mask: np.ndarray  # HxW bool, the first non-empty ground-truth mask
    points: list | None = None
    labels: list | None = None
    box: list | None = None


def mask_box(mask: np.ndarray) -> list:
    ys, xs = np.nonzero(mask)
    return [float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max())]


def mask_click(mask: np.ndarray) -> list:
    """[x, y] of the interior pixel farthest from the mask boundary (or the frame border)."""
    from scipy.ndimage import distance_transform_edt

    dist = distance_transform_edt(np.pad(mask.astype(bool), 1))[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)  # argmax: first maximum, row-major
    return [float(x), float(y)]


def make_prompt(protocol: str, obj_id: int, frame: int, mask: np.ndarray) -> EvalPrompt:
    if protocol == "box":
        return EvalPrompt(obj_id, frame, mask, box=mask_box(mask))
    if protocol == "click":
        return EvalPrompt(obj_id, frame, mask, points=[mask_click(mask)], labels=[1])
    if protocol == "mask":
        return EvalPrompt(obj_id, frame, mask)
    raise EvalError(f"unknown --protocol {protocol!r}; choose {', '.join(PROTOCOLS)}")


def mask_prompts_supported() -> bool:
    """Whether this tree's prompt files and Tracker take mask prompts (capability, not version)."""
    from ..runtime.prompts import parse_prompts
    from ..runtime.tracker import PromptError, Tracker

    if "mask" not in inspect.signature(Tracker.add_prompt).parameters:
        return False
    try:
        parse_prompts({"prompts": [{"id": 1, "frame": 0, "mask": "masks/obj1.png"}]})
    except PromptError as exc:
        if "unknown field" in str(exc):
            return False
    except Exception:  # the field is known; the probe just has no file behind it
        pass
    return True


def require_protocol(protocol: str) -> None:
    if protocol not in PROTOCOLS:
        raise EvalError(f"unknown --protocol {protocol!r}; choose {', '.join(PROTOCOLS)}")
    if protocol == "mask" and not mask_prompts_supported():
        raise EvalError("--protocol mask needs mask prompts, which this etam-mobile's tracker does not support; "
                        "use --protocol box or --protocol click")


def apply_prompt(tracker, p: EvalPrompt) -> None:
    """The one place a prompt reaches the tracker (mask prompts through add_prompt(mask=...))."""
    if p.box is None and p.points is None:
        tracker.add_prompt(frame_idx=p.frame, obj_id=p.obj_id, mask=p.mask)
    else:
        tracker.add_prompt(p.frame, p.obj_id, p.points, p.labels, p.box)


def write_prompt_file(folder: Path, prompts: list) -> Path:
    """FOLDER/prompts.json (+ masks/objN.png for mask prompts), replayable with `etam-mobile track`."""
    entries = []
    for p in prompts:
        e = {"id": p.obj_id, "frame": p.frame}
        if p.box is not None:
            e["box"] = p.box
        elif p.points is not None:
            e["points"], e["labels"] = p.points, p.labels
        else:
            rel = f"masks/obj{p.obj_id}.png"
            (folder / "masks").mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.where(p.mask, 255, 0).astype(np.uint8), mode="L").save(folder / rel)
            e["mask"] = rel
        entries.append(e)
    path = folder / "prompts.json"
    path.write_text(json.dumps({"prompts": entries}, indent=1))
    return path
