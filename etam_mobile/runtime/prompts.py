"""Prompt files: `{"prompts": [{"id", "frame", "points", "labels"} | {"id", "frame", "box"}, ...]}`.

Coordinates are in frame pixels; entries are applied in list order. Everything is
checked before any model work, and each error names the entry and the fix. The bounds
below keep a hostile or mistaken file from costing unbounded memory or time (README
'Prompt files').
"""
from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from .ids import check_obj_id
from .tracker import PromptError

MAX_PROMPT_FILE_BYTES = 1 << 20  # 1 MiB: thousands of prompts; read whole, so bounded up front
MAX_CLICKS_PER_PROMPT = 64  # clicks in one entry (eager has no slots; exports have --max-points)
MAX_PROMPTS_PER_OBJECT_FRAME = 64  # entries refining one object on one frame (one decoder run each)


@dataclass(frozen=True)
class Prompt:
    obj_id: int
    frame: int
    points: list | None
    labels: list | None
    box: list | None
    mask: str | None = None  # path of a mask PNG, relative to the prompt file (runtime/mask_files.py)
    mask_value: int | None = None  # which palette index is the object, for palette PNGs


def _short(value) -> str:
    text = repr(value) if not isinstance(value, int) or abs(value) < 10**12 else "a huge number"
    return text if len(text) <= 60 else text[:57] + "..."


def _number_list(value, n, what, where):
    if not isinstance(value, (list, tuple)) or len(value) != n or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in value
    ):
        raise PromptError(f"{where}: {what} must be a list of {n} numbers, got {_short(value)}")
    try:
        out = [float(v) for v in value]
    except OverflowError:  # an int beyond float range
        out = [math.inf]
    if not all(math.isfinite(v) for v in out):
        raise PromptError(f"{where}: {what} must be finite numbers (no NaN or infinity), got {_short(value)}")
    return out


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
        check_obj_id(e.get("id"), where)
        if not isinstance(e.get("frame"), int) or isinstance(e.get("frame"), bool) or e["frame"] < 0:
            raise PromptError(f"{where}: 'frame' must be a non-negative integer, got {_short(e.get('frame'))}")
        where = f"prompt #{i} (object {e['id']}, frame {_short(e['frame'])})"
        if "mask" in e or "mask_value" in e:
            out.append(parse_mask_entry(e, where))
            continue
        points = labels = box = None
        if "points" in e or "labels" in e:
            if not isinstance(e.get("points"), list) or not isinstance(e.get("labels"), list):
                raise PromptError(f"{where}: 'points' and 'labels' must be given together as lists")
            if not all(isinstance(p, list) for p in e["points"]):
                raise PromptError(f"{where}: 'points' must be a list of [x, y] pairs, e.g. [[40, 60]], "
                                  f"got {_short(e['points'])}")
            if len(e["points"]) > MAX_CLICKS_PER_PROMPT:
                raise PromptError(f"{where}: {len(e['points'])} clicks, at most {MAX_CLICKS_PER_PROMPT} per prompt; "
                                  "a few well-placed clicks (or a box) work better")
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
    counts = Counter((p.obj_id, p.frame) for p in out)
    (obj_id, frame), most = counts.most_common(1)[0]
    if most > MAX_PROMPTS_PER_OBJECT_FRAME:
        raise PromptError(f"{most} prompts for object {obj_id} on frame {frame}, at most {MAX_PROMPTS_PER_OBJECT_FRAME} "
                          "(each refines the last); merge them into fewer entries")
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
        raise PromptError(f"prompt file {path} does not exist; pass the JSON file (see README 'Prompt files')")
    if path.is_dir():
        raise PromptError(f"prompt file {path} is a folder; pass the JSON file inside it (see README 'Prompt files')")
    size = path.stat().st_size
    if size > MAX_PROMPT_FILE_BYTES:
        raise PromptError(f"prompt file {path} is {size / 2**20:.1f} MiB, larger than 1 MiB; a prompt file holds "
                          "clicks and boxes (a few KiB), see README 'Prompt files'")
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_PROMPT_FILE_BYTES + 1)  # bounded even if the file grows meanwhile
        text = raw.decode("utf-8-sig")  # a byte-order mark (Windows editors) is fine
    except UnicodeDecodeError as exc:
        raise PromptError(f"prompt file {path} is not UTF-8 text (byte {exc.start}); save it as UTF-8 JSON") from None
    except OSError as exc:
        raise PromptError(f"prompt file {path} cannot be read ({exc.strerror or type(exc).__name__}); "
                          "check the path and its permissions") from None
    if len(raw) > MAX_PROMPT_FILE_BYTES:
        raise PromptError(f"prompt file {path} is larger than 1 MiB; see README 'Prompt files'")
    try:
        data = json.loads(text)
    except RecursionError:
        raise PromptError(f"prompt file {path} nests lists or objects too deeply to be a prompt file; "
                          "see README 'Prompt files'") from None
    except ValueError as exc:  # JSONDecodeError, and integers too long to convert
        msg = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        raise PromptError(f"prompt file {path} is not valid JSON ({msg}); see README 'Prompt files'") from None
    return parse_prompts(data)


def check_capacity(prompts: list[Prompt], point_capacity: int | None) -> None:
    """Each entry fits the backend's prompt slots (None: eager, no slots), checked before any frame.

    A slot holds a click or a box corner; one more is upstream's not-a-point token."""
    if point_capacity is None:
        return
    most = point_capacity - 1
    for p in prompts:
        clicks = len(p.points or [])
        used = clicks + (2 if p.box is not None else 0)
        if used > most:
            what = f"a box and {clicks} clicks" if p.box is not None else f"{clicks} clicks"
            raise PromptError(
                f"prompt for object {p.obj_id} on frame {_short(p.frame)} has {what}, but the export takes at most {most} "
                f"clicks, or a box and {max(most - 2, 0)} (its --max-points is {point_capacity}, one slot being upstream's "
                f"not-a-point token); use fewer clicks or re-export with --max-points {used + 1}"
            )


def check_against_video(prompts: list[Prompt], num_frames: int, width: int, height: int) -> None:
    """Frame range and coordinates, checked before any frame is processed."""
    for p in prompts:
        where = f"prompt for object {p.obj_id} on frame {_short(p.frame)}"
        if num_frames is not None and p.frame >= num_frames:
            raise PromptError(f"{where}: the video has only {num_frames} frames (0..{num_frames - 1})")
        for x, y in p.points or []:
            if not (0 <= x <= width and 0 <= y <= height):
                raise PromptError(f"{where}: point ({x:g}, {y:g}) is outside the {width}x{height} frame")
        if p.box is not None:
            x0, y0, x1, y1 = p.box
            if not (0 <= x0 <= width and 0 <= x1 <= width and 0 <= y0 <= height and 0 <= y1 <= height):
                raise PromptError(f"{where}: box {p.box} is outside the {width}x{height} frame")
