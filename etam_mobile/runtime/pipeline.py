"""Track a video from a prompt file into an output folder (what `etam-mobile track` does).

All inputs are validated before the first frame is processed, and results are written
into a temporary folder that replaces the output only when tracking finished, so a
failure never leaves a half-written result behind.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from .frames import open_frames
from .mask_files import load_masks
from .outputs import ResultWriter, to_video_res
from .progress import Progress
from .prompts import check_against_video, load_prompts
from .stream import StreamTracker


def track_video(backend, frames, prompts, out, save_logits=False, overlay=False, trace=None, quiet=False) -> dict:
    """Returns a summary dict; writes OUT/masks/*.png (+ logits.npz, overlay.gif, trace).

    The tracking is a loop over the streaming tracker (runtime/stream.py). Prompts on the
    first prompted frame are given to the stream for that frame; prompts on later frames are
    decoded up front with their frame's pixels (look-ahead conditioning frames), which is what
    upstream does when every prompt is added before propagation."""
    source = open_frames(frames)
    prompt_list = load_prompts(prompts) if not isinstance(prompts, list) else prompts
    n, h, w = len(source), source.height, source.width
    check_against_video(prompt_list, n, w, h)
    base_dir = Path(prompts).parent if not isinstance(prompts, list) else Path(".")
    masks = load_masks(prompt_list, base_dir, w, h)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"--out {out} exists and is not a folder; choose another path")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        records = [] if trace else None
        tracker = StreamTracker(backend, trace=records)
        start = min(p.frame for p in prompt_list)
        obj_ids = []
        # With prompts on later frames, every prompt is decoded up front in file order (pixels
        # read for it); otherwise they wait for the start frame, exactly as in a live stream.
        look_ahead = any(p.frame != start for p in prompt_list)
        for i, p in enumerate(prompt_list):
            image = source.rgb(p.frame) if look_ahead else None
            tracker.add_prompt(p.obj_id, p.points, p.labels, p.box, mask=masks.get(i), frame=p.frame, image=image)
            if p.obj_id not in obj_ids:
                obj_ids.append(p.obj_id)
        writer = ResultWriter(tmp, n, obj_ids, h, w, save_logits, source.rgb if overlay else None)
        bar = Progress("tracking", n - start, quiet=quiet)
        for _ in range(start):
            tracker.skip()
        for frame_idx in range(start, n):
            result = tracker.step(source.rgb(frame_idx))
            order = [result.obj_ids.index(o) for o in obj_ids]  # prompt-file order of objects
            writer.write(frame_idx, to_video_res(result.low_res[order], h, w))
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
