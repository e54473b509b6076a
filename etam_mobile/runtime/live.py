"""Live sources for `etam-mobile track --frames`: a camera device, an rtsp/http URL, or `-` (a
video container on standard input), decoded with PyAV one frame at a time and tracked as it
arrives. Unlike the offline output (written into a temporary folder that replaces OUT only
when tracking finished), a stream has no end to wait for: each mask PNG is written as soon
as its frame is tracked (to a temporary name, then renamed, so every file in OUT/masks is
complete), and a stream that stops keeps the frames already written.

`--save-logits` on a stream writes one file per frame as it completes (OUT/logits/NNNNN.npy,
objects x H x W, plus OUT/logits/obj_ids.npy): a single logits.npz needs the frame count up
front and would not be complete until the stream ends. `--overlay` needs `--max-frames`: a GIF
cannot be appended to, so its frames are kept on disk (not in RAM) while tracking and the GIF is
assembled when the stream ends; an unbounded camera stream has no end to assemble it at.
`--trace` is refused: a conformance trace is one JSON document of every record.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from ..contracts import NO_OBJ_SCORE
from .frames import FrameError
from .mask_files import load_masks
from .outputs import davis_palette, label_map, overlay_image
from .prompts import check_against_video, load_prompts
from .stream import StreamError, StreamTracker

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


def _save_npy_atomic(array: np.ndarray, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        np.save(f, array, allow_pickle=False)
    os.replace(tmp, path)


def check_live_options(max_frames=None, overlay=False, trace=None) -> None:
    """Options a live source cannot honour are refused before any frame is read (never ignored)."""
    if trace:
        raise FrameError("--trace is not available for a live source (a trace is one JSON document written "
                         "at the end); record traces from a video file or a frame folder")
    if overlay and max_frames is None:
        raise FrameError("--overlay with a live source needs --max-frames N (the GIF is assembled when the "
                         "stream ends, and an unbounded stream never ends); add --max-frames or drop --overlay")


def check_live_out(out) -> Path:
    """A stream writes into OUT as it goes, so OUT must be new (or an empty folder)."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"--out {out} exists and is not an empty folder; a stream writes masks as they come, "
                              "so choose a new folder")
    return out


OVERLAY_FRAMES = ".overlay-frames"  # overlay.gif's frames while the stream runs (removed at the end)


def _write_overlay_gif(out: Path) -> None:
    """Assemble OUT/overlay.gif from the frames kept on disk, then remove them."""
    folder = out / OVERLAY_FRAMES
    files = sorted(folder.glob("*.png"))
    if files:
        first, rest = Image.open(files[0]), (Image.open(f) for f in files[1:])
        tmp = out / ".overlay.gif.tmp"
        first.save(tmp, format="GIF", save_all=True, append_images=rest, duration=100, loop=0)
        os.replace(tmp, out / "overlay.gif")
    for f in files:
        f.unlink()
    folder.rmdir()


def track_live(backend, spec: str, prompts, out, max_frames: int | None = None, quiet: bool = False,
               stderr=None, save_logits: bool = False, logits_dtype: str = "float32",
               overlay: bool = False) -> dict:
    """Track a live source into OUT/masks/NNNNN.png (and OUT/logits/NNNNN.npy with `save_logits`),
    each written as its frame is tracked; OUT/overlay.gif when the stream ends (needs max_frames)."""
    stderr = stderr or sys.stderr
    check_live_options(max_frames, overlay)
    prompt_list = load_prompts(prompts)
    out = check_live_out(out)
    check_against_video(prompt_list, None, 1 << 30, 1 << 30)  # coordinates are checked on the first frame
    tracker = StreamTracker(backend)
    palette = davis_palette()
    obj_ids = list(dict.fromkeys(p.obj_id for p in prompt_list))
    masks_dir, logits_dir = out / "masks", out / "logits"
    t0 = time.perf_counter()
    n = 0
    last_report = 0.0
    try:
        for rgb in iter_stream(spec, max_frames):
            if n == 0:
                h, w = rgb.shape[:2]
                check_against_video(prompt_list, None, w, h)
                masks = load_masks(prompt_list, Path(prompts).parent, w, h)
                for i, p in enumerate(prompt_list):
                    tracker.add_prompt(p.obj_id, p.points, p.labels, p.box, mask=masks.get(i), frame=p.frame)
                masks_dir.mkdir(parents=True, exist_ok=True)
                if save_logits:
                    logits_dir.mkdir()
                    _save_npy_atomic(np.asarray(obj_ids, np.int64), logits_dir / "obj_ids.npy")
                    if not quiet:
                        size = len(obj_ids) * h * w * np.dtype(logits_dtype).itemsize
                        stderr.write(f"logits/NNNNN.npy: {len(obj_ids)} objects x {w}x{h} {logits_dtype} = "
                                     f"{size / 2**20:.2f} MiB per frame\n")
                if overlay:
                    (out / OVERLAY_FRAMES).mkdir()
            try:
                result = tracker.step(rgb)
            except StreamError as exc:  # e.g. an rtsp source that changes resolution mid-way
                raise FrameError(f"{exc}; the {n} frames written to {out} are kept") from None
            # Every prompt-file object, in file order; an object not started yet is "no object" (-1024).
            logits = np.full((len(obj_ids), h, w), NO_OBJ_SCORE, np.float32)
            if result.obj_ids:
                frame_logits = result.logits()
                for i, obj_id in enumerate(result.obj_ids):
                    logits[obj_ids.index(obj_id)] = frame_logits[i]
            labels = label_map(logits, obj_ids)
            im = Image.fromarray(labels, mode="P")
            im.putpalette(palette)
            if save_logits:
                _save_npy_atomic(logits.astype(logits_dtype), logits_dir / f"{n:05d}.npy")
            if overlay:
                overlay_image(rgb, labels, palette).save(out / OVERLAY_FRAMES / f"{n:05d}.png")
            _save_atomic(im, masks_dir / f"{n:05d}.png")  # last: a mask file means the frame is complete
            n += 1
            now = time.perf_counter()
            if not quiet and (now - last_report > 2 or n == max_frames):
                last_report = now
                stderr.write(f"tracking: {n} frames ({n / max(now - t0, 1e-9):.2f} fps)\n")
                stderr.flush()
    except KeyboardInterrupt as exc:  # Ctrl-C is how a camera stream ends: say what was kept
        exc.kept = f"the {n} frames written to {out} are kept"
        raise
    finally:
        if overlay and (out / OVERLAY_FRAMES).is_dir():
            _write_overlay_gif(out)
    if n == 0:
        raise FrameError(f"stream {spec} delivered no frames; check the source")
    pending = sorted({p.frame for p in prompt_list if p.frame >= n})
    if pending:
        raise FrameError(f"the stream ended after {n} frames, before prompted frame(s) {pending}; the {n} masks "
                         "written are kept; give prompts on frames the stream reaches")
    return {"frames": n, "objects": obj_ids, "out": str(out), "start_frame": min(p.frame for p in prompt_list)}
