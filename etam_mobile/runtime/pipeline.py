"""Track a video from a prompt file into an output folder (what `etam-mobile track` does).

All inputs and destinations are validated before the first frame is processed, and results
are written into a partial folder that replaces the output only when tracking finished
(etam_mobile/atomic.py), so a failure or a kill never leaves a half-written result behind.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from ..atomic import (OWNER_FILE, check_destination, check_file_destination, clean_stale, commit,
                      disk_full_error, make_partial, remove_partial)
from ..signals import deferred_signals
from ..testhooks import fault_point
from .frames import open_frames
from .mask_files import load_masks
from .outputs import ResultWriter, to_video_res
from .progress import Progress
from .prompts import check_against_video, check_capacity, load_prompts
from .stream import StreamTracker


TRACK_MARKER = "track.json"  # marks a folder as a `track` output (so --force may replace it)
TRACE_FORMAT = "etam-trace"


def is_track_output(path: Path) -> bool:
    try:
        return json.loads((Path(path) / TRACK_MARKER).read_text()).get("format") == "etam-track-output"
    except (OSError, ValueError, AttributeError):
        return False


def is_trace_file(path: Path) -> bool:
    """A trace this tool wrote: its first bytes are `{"format": "etam-trace"` (json.dumps keeps key order)."""
    try:
        with open(path, "rb") as f:
            head = f.read(64)
    except OSError:
        return False
    return head.replace(b" ", b"").replace(b"\n", b"").startswith(b'{"format":"%s"' % TRACE_FORMAT.encode())


def check_outputs(out, trace=None, force: bool = False) -> None:
    """Refuse destinations before any work: OUT (and --trace PATH) must be new, empty, or ours with force."""
    out = Path(out)
    check_destination(out, force, "a track output", is_track_output, TRACK_MARKER)
    if trace and Path(trace).resolve() != (out / "trace.json").resolve():
        check_file_destination(Path(trace), force, "a trace file", is_trace_file, "--trace")


def track_video(backend, frames, prompts, out, save_logits=False, overlay=False, trace=None, quiet=False,
                force=False, logits_dtype="float32") -> dict:
    """Returns a summary dict; writes OUT/masks/*.png, OUT/track.json (+ logits.npz, overlay.gif, trace).

    An existing OUT is replaced only if it is an earlier track output and `force` is set.
    The tracking is a loop over the streaming tracker (runtime/stream.py). Prompts on the
    first prompted frame are given to the stream for that frame; prompts on later frames are
    decoded up front with their frame's pixels (look-ahead conditioning frames), which is what
    upstream does when every prompt is added before propagation.
    """
    out = Path(out)
    check_outputs(out, trace, force)
    prompt_list = load_prompts(prompts) if not isinstance(prompts, list) else prompts
    check_capacity(prompt_list, backend.point_capacity)
    source = open_frames(frames)
    n, h, w = len(source), source.height, source.width
    check_against_video(prompt_list, n, w, h)
    base_dir = Path(prompts).parent if not isinstance(prompts, list) else Path(".")
    masks = load_masks(prompt_list, base_dir, w, h)
    trace_path = Path(trace) if trace and Path(trace).resolve() != (out / "trace.json").resolve() else None
    clean_stale(out)
    if trace_path is not None:
        clean_stale(trace_path)
    tmp = trace_tmp = None
    if save_logits and not quiet:
        _announce_logits(n, len({p.obj_id for p in prompt_list}), h, w, logits_dtype)
    try:
        tmp = make_partial(out)
        fault_point("track:start")
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
        writer = ResultWriter(tmp, n, obj_ids, h, w, save_logits, source.rgb if overlay else None,
                              logits_dtype=logits_dtype)
        bar = Progress("tracking", n - start, quiet=quiet)
        for _ in range(start):
            tracker.skip()
        for frame_idx in range(start, n):
            result = tracker.step(source.rgb(frame_idx))
            order = [result.obj_ids.index(o) for o in obj_ids]  # prompt-file order of objects
            writer.write(frame_idx, to_video_res(result.low_res[order], h, w))
            bar.update()
            fault_point("track:frame")
        writer.finish(n)
        if trace:
            doc = {"format": TRACE_FORMAT, "version": 1, "config": backend.cfg.name,
                   "capacities": backend.capacities.to_dict(backend.cfg), "num_frames": n,
                   "slot_buckets": [list(b) for b in tracker.core.slot_buckets],
                   "video_size": [w, h], "obj_ids": obj_ids, "records": records}
            Path(tmp / "trace.json").write_text(json.dumps(doc, indent=1))
        files = sorted(p.name for p in tmp.iterdir() if p.name != OWNER_FILE) + [TRACK_MARKER]
        marker = {"format": "etam-track-output", "version": 1, "config": backend.cfg.name, "frames": n,
                  "obj_ids": obj_ids, "video_size": [w, h], "files": sorted(files)}
        (tmp / TRACK_MARKER).write_text(json.dumps(marker, indent=1) + "\n")
        if trace_path is not None:
            trace_tmp = make_partial(trace_path)
            shutil.copyfile(tmp / "trace.json", trace_tmp / trace_path.name)
        fault_point("track:finished")
        with deferred_signals():  # OUT and --trace are swapped in together or not at all
            commit(tmp, out)
            if trace_tmp is not None:
                os.replace(trace_tmp / trace_path.name, trace_path)
                remove_partial(trace_tmp)
    except OSError as exc:
        err = disk_full_error(exc, out)
        if err is None:
            raise
        raise err from exc
    finally:
        remove_partial(tmp)
        remove_partial(trace_tmp)
    return {"frames": n, "objects": obj_ids, "out": str(out), "start_frame": start}


def _announce_logits(frames: int, objects: int, h: int, w: int, dtype: str) -> None:
    """--save-logits can be large (frames x objects x H x W): say so before writing it."""
    import sys

    import numpy as np

    size = frames * objects * h * w * np.dtype(dtype).itemsize
    hint = "" if dtype == "float16" else "; --logits-dtype float16 halves it"
    print(f"logits.npz: {frames} frames x {objects} objects x {w}x{h} {dtype} = {size / 2**20:.2f} MiB{hint}",
          file=sys.stderr)

