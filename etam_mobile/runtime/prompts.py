"""Prompt files: `{"prompts": [{"id", "frame", "points", "labels"} | {"id", "frame", "box"}, ...]}`.

Coordinates are in frame pixels; entries are applied in list order. Everything is
checked before any model work, and each error names the entry and the fix.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .tracker import PromptError


@dataclass(frozen=True)
class Prompt:
    obj_id: int
    frame: int
    points: list | None
    labels: list | None
    box: list | None
    mask: str | None = None  # path of a mask PNG, relative to the prompt file (runtime/mask_files.py)
    mask_value: int | None = None  # which palette index is the object, for palette PNGs


def _number_list(value, n, what, where):
    if not isinstance(value, (list, tuple)) or len(value) != n or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in value
    ):
        raise PromptError(f"{where}: {what} must be a list of {n} numbers, got {value!r}")
    return [float(v) for v in value]


def parse_prompts(data) -> list[Prompt]:
    if not isinstance(data, dict) or not isinstance(data.get("prompts"), list) or not data["prompts"]:
        raise PromptError('prompt file must be {"prompts": [ {"id": 1, "frame": 0, "points": [[x, y]], "labels": [1]}, ... ]}')
    out = []
    for i, e in enumerate(data["prompts"]):
        where = f"prompt #{i}"
        if not isinstance(e, dict):
            raise PromptError(f"{where}: must be an object with id, frame and points/labels or box")
        unknown = set(e) - {"id", "frame", "points", "labels", "box", "mask", "mask_value"}
        if unknown:
            raise PromptError(f"{where}: unknown field(s) {sorted(unknown)}; allowed: id, frame, points, labels, box, "
                              "mask, mask_value")
        for key in ("id", "frame"):
            if not isinstance(e.get(key), int) or isinstance(e.get(key), bool) or e[key] < 0:
                raise PromptError(f"{where}: '{key}' must be a non-negative integer, got {e.get(key)!r}")
        where = f"prompt #{i} (object {e['id']}, frame {e['frame']})"
        if "mask" in e or "mask_value" in e:
            out.append(parse_mask_entry(e, where))
            continue
        points = labels = box = None
        if "points" in e or "labels" in e:
            if not isinstance(e.get("points"), list) or not isinstance(e.get("labels"), list):
                raise PromptError(f"{where}: 'points' and 'labels' must be given together as lists")
            if len(e["points"]) != len(e["labels"]):
                raise PromptError(f"{where}: {len(e['points'])} points but {len(e['labels'])} labels; give one label per point")
            points = [_number_list(p, 2, "each point", where) for p in e["points"]]
            for lab in e["labels"]:
                if lab not in (0, 1) or isinstance(lab, bool):
                    raise PromptError(f"{where}: label {lab!r} must be 1 (positive click) or 0 (negative click)")
            labels = [int(v) for v in e["labels"]]
        if "box" in e:
            box = _number_list(e["box"], 4, "'box' [x0, y0, x1, y1]", where)
            if box[2] < box[0] or box[3] < box[1]:
                raise PromptError(f"{where}: box {e['box']} needs x0 <= x1 and y0 <= y1")
        if not points and box is None:
            raise PromptError(f"{where}: object {e['id']} has no points and no box; every object needs a prompt")
        out.append(Prompt(e["id"], e["frame"], points or None, labels if points else None, box))
    return out


def parse_mask_entry(e: dict, where: str) -> Prompt:
    """A mask prompt entry: {"id", "frame", "mask": "masks/obj1.png", "mask_value"?}."""
    if "mask" not in e:
        raise PromptError(f"{where}: 'mask_value' needs a 'mask' PNG path")
    if any(k in e for k in ("points", "labels", "box")):
        raise PromptError(f"{where}: a mask prompt cannot also carry points, labels or a box; put the clicks in a "
                          "separate entry on a later frame (or the mask alone)")
    if not isinstance(e["mask"], str) or not e["mask"]:
        raise PromptError(f"{where}: 'mask' must be the path of a PNG file (relative to the prompt file)")
    value = e.get("mask_value")
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or not 0 < value < 256):
        raise PromptError(f"{where}: 'mask_value' must be a palette index 1..255, got {value!r}")
    return Prompt(e["id"], e["frame"], None, None, None, mask=e["mask"], mask_value=value)


def load_prompts(path) -> list[Prompt]:
    path = Path(path)
    if not path.exists():
        raise PromptError(f"prompt file {path} does not exist")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PromptError(f"prompt file {path} is not valid JSON ({exc}); see README 'Prompt files'") from None
    return parse_prompts(data)


def check_against_video(prompts: list[Prompt], num_frames: int, width: int, height: int) -> None:
    """Frame range and coordinates, checked before any frame is processed."""
    for p in prompts:
        where = f"prompt for object {p.obj_id} on frame {p.frame}"
        if num_frames is not None and p.frame >= num_frames:
            raise PromptError(f"{where}: the video has only {num_frames} frames (0..{num_frames - 1})")
        for x, y in p.points or []:
            if not (0 <= x <= width and 0 <= y <= height):
                raise PromptError(f"{where}: point ({x:g}, {y:g}) is outside the {width}x{height} frame")
        if p.box is not None:
            x0, y0, x1, y1 = p.box
            if not (0 <= x0 <= width and 0 <= x1 <= width and 0 <= y0 <= height and 0 <= y1 <= height):
                raise PromptError(f"{where}: box {p.box} is outside the {width}x{height} frame")
