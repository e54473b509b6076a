"""Live sources for `etam-mobile track --frames`: a camera device, an rtsp/http URL, or `-` (a
video container on standard input), decoded with PyAV one frame at a time and tracked as it
arrives. Unlike the offline output (written into a temporary folder that replaces OUT only
when tracking finished), a stream has no end to wait for: each mask PNG is written as soon
as its frame is tracked (to a temporary name, then renamed, so every file in OUT/masks is
complete), and a stream that stops keeps the frames already written.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from .frames import FrameError
from .mask_files import load_masks
from .outputs import davis_palette
from .prompts import check_against_video, load_prompts
from .stream import StreamTracker

LIVE_PREFIXES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://", "srt://")


def is_live_source(spec: str) -> bool:
    s = str(spec)
    return s == "-" or s.startswith("/dev/") or s.lower().startswith(LIVE_PREFIXES)


def iter_stream(spec: str, max_frames: int | None = None):
    """Yield RGB uint8 frames from a PyAV-openable source, one at a time (none kept)."""
    import av

    try:
        if spec == "-":
            container = av.open(sys.stdin.buffer, mode="r")
        elif spec.startswith("/dev/"):
            container = av.open(spec, format="v4l2")
        else:
            container = av.open(spec)
    except Exception as exc:
        raise FrameError(f"cannot open stream {spec} (PyAV: {exc}); check the device/URL, or pipe a video "
                         "container into --frames -") from None
    with container:
        if not container.streams.video:
            raise FrameError(f"stream {spec} has no video track; give a source with video")
        stream = container.streams.video[0]
        n = 0
        try:
            for frame in container.decode(stream):
                yield frame.to_ndarray(format="rgb24")
                n += 1
                if max_frames is not None and n >= max_frames:
                    return
        except av.error.FFmpegError as exc:
            raise StreamStopped(n, str(exc)) from None


class StreamStopped(FrameError):
    def __init__(self, frames: int, why: str):
        super().__init__(f"the stream stopped after {frames} frames ({why}); the {frames} masks written are kept, "
                         "run again on a working source to continue")
        self.frames = frames


def _save_atomic(im: Image.Image, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    im.save(tmp, format="PNG")
    os.replace(tmp, path)


def check_live_out(out) -> Path:
    """A stream writes into OUT as it goes, so OUT must be new (or an empty folder)."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"--out {out} exists and is not an empty folder; a stream writes masks as they come, "
                              "so choose a new folder")
    return out


def track_live(backend, spec: str, prompts, out, max_frames: int | None = None, quiet: bool = False,
               stderr=None) -> dict:
    """Track a live source into OUT/masks/NNNNN.png, each written as its frame is tracked."""
    stderr = stderr or sys.stderr
    prompt_list = load_prompts(prompts)
    out = check_live_out(out)
    check_against_video(prompt_list, None, 1 << 30, 1 << 30)  # coordinates are checked on the first frame
    tracker = StreamTracker(backend)
    palette = davis_palette()
    obj_ids = list(dict.fromkeys(p.obj_id for p in prompt_list))
    masks_dir = out / "masks"
    t0 = time.perf_counter()
    n = 0
    last_report = 0.0
    for rgb in iter_stream(spec, max_frames):
        if n == 0:
            h, w = rgb.shape[:2]
            check_against_video(prompt_list, None, w, h)
            masks = load_masks(prompt_list, Path(prompts).parent, w, h)
            for i, p in enumerate(prompt_list):
                tracker.add_prompt(p.obj_id, p.points, p.labels, p.box, mask=masks.get(i), frame=p.frame)
            masks_dir.mkdir(parents=True, exist_ok=True)
        result = tracker.step(rgb)
        labels = result.label_map() if result.obj_ids else np.zeros(rgb.shape[:2], np.uint8)
        im = Image.fromarray(labels, mode="P")
        im.putpalette(palette)
        _save_atomic(im, masks_dir / f"{n:05d}.png")
        n += 1
        now = time.perf_counter()
        if not quiet and (now - last_report > 2 or n == max_frames):
            last_report = now
            stderr.write(f"tracking: {n} frames ({n / max(now - t0, 1e-9):.2f} fps)\n")
            stderr.flush()
    if n == 0:
        raise FrameError(f"stream {spec} delivered no frames; check the source")
    pending = sorted({p.frame for p in prompt_list if p.frame >= n})
    if pending:
        raise FrameError(f"the stream ended after {n} frames, before prompted frame(s) {pending}; the {n} masks "
                         "written are kept; give prompts on frames the stream reaches")
    return {"frames": n, "objects": obj_ids, "out": str(out), "start_frame": min(p.frame for p in prompt_list)}
