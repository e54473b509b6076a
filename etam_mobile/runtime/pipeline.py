"""Track a video from a prompt file into an output folder (what `etam-mobile track` does).

All inputs are validated before the first frame is processed, and results are written
into a temporary folder that replaces the output only when tracking finished, so a
failure never leaves a half-written result behind.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from ..preprocess import preprocess_frame
from .frames import open_frames
from .outputs import ResultWriter, to_video_res
from .paths import check_output_file, check_output_folder, make_partial_dir
from .progress import Progress
from .prompts import check_against_video, check_capacity, load_prompts
from .tracker import Tracker


def track_video(backend, frames, prompts, out, save_logits=False, overlay=False, trace=None, quiet=False,
                logits_dtype="float32") -> dict:
    """Returns a summary dict; writes OUT/masks/*.png (+ logits.npz, overlay.gif, trace)."""
    prompt_list = load_prompts(prompts) if not isinstance(prompts, list) else prompts
    check_capacity(prompt_list, backend.point_capacity)
    out = Path(out)
    check_output_folder(out)
    if trace:
        check_output_file(trace, "--trace")
    source = open_frames(frames)
    n, h, w = len(source), source.height, source.width
    check_against_video(prompt_list, n, w, h)
    if save_logits and not quiet:
        _announce_logits(n, len({p.obj_id for p in prompt_list}), h, w, logits_dtype)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = make_partial_dir(out.parent, out.name)
    try:
        records = [] if trace else None
        size = backend.cfg.image_size
        tracker = Tracker(backend, n, (h, w), lambda i: preprocess_frame(source.rgb(i), size).numpy(), trace=records)
        obj_ids = []
        for p in prompt_list:
            tracker.add_prompt(p.frame, p.obj_id, p.points, p.labels, p.box)
            if p.obj_id not in obj_ids:
                obj_ids.append(p.obj_id)
        writer = ResultWriter(tmp, n, obj_ids, h, w, save_logits, source.rgb if overlay else None,
                              logits_dtype=logits_dtype)
        start = min(p.frame for p in prompt_list)
        bar = Progress("tracking", n - start, quiet=quiet)
        for frame_idx, ids, low_res in tracker.propagate():
            writer.write(frame_idx, to_video_res(low_res, h, w))
            bar.update()
        writer.finish(n)
        if trace:
            doc = {"format": "etam-trace", "version": 1, "config": backend.cfg.name,
                   "capacities": backend.capacities.to_dict(backend.cfg), "num_frames": n,
                   "video_size": [w, h], "obj_ids": obj_ids, "records": records}
            Path(tmp / "trace.json").write_text(json.dumps(doc, indent=1))
        _move_into_place(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    if trace and Path(trace) != out / "trace.json":
        Path(trace).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(out / "trace.json", trace)
    return {"frames": n, "objects": obj_ids, "out": str(out), "start_frame": start}


def _announce_logits(frames: int, objects: int, h: int, w: int, dtype: str) -> None:
    """--save-logits can be large (frames x objects x H x W): say so before writing it."""
    import sys

    import numpy as np

    size = frames * objects * h * w * np.dtype(dtype).itemsize
    hint = "" if dtype == "float16" else "; --logits-dtype float16 halves it"
    print(f"logits.npz: {frames} frames x {objects} objects x {w}x{h} {dtype} = {size / 2**20:.2f} MiB{hint}",
          file=sys.stderr)


def _move_into_place(tmp: Path, out: Path) -> None:
    if not out.exists():
        os.replace(tmp, out)
        return
    for item in tmp.iterdir():
        dest = out / item.name
        if dest.is_dir():
            shutil.rmtree(dest)
        elif dest.exists():
            dest.unlink()
        os.replace(item, dest)
