"""Video input: a folder of numbered frames or a video file, read lazily.

Frames are validated up front (each decodes fully, one size, one file per frame number,
at most MAX_FRAME_PIXELS) so a bad input fails before any model work; pixels are then
decoded again only when the tracker asks for them.
"""
from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

IMAGE_EXTS = {".jpg", ".jpeg", ".png"}
VIDEO_EXTS = {".mp4", ".mov", ".m4v", ".avi", ".mkv"}
# 8192 x 8192: far above 4K video; refused from the header, before any pixel buffer is allocated.
MAX_FRAME_PIXELS = 8192 * 8192


class FrameError(ValueError):
    """Frames that cannot be tracked (missing, empty, unreadable, mixed sizes)."""


def _frame_number(path: Path) -> int:
    m = re.search(r"(\d+)$", path.stem)
    if m is None:
        raise FrameError(f"frame file {path.name} has no number in its name; name frames like 00000.jpg, 00001.jpg, ...")
    return int(m.group(1))


def to_rgb(im: Image.Image) -> np.ndarray:
    """(H, W, 3) uint8 of any PNG/JPEG mode; 16-bit grey is scaled to 8 bits (Pillow's
    convert("RGB") clips it, which turns a normal 16-bit frame white)."""
    if im.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):
        grey = np.asarray(im, dtype=np.float64)
        grey = np.clip(np.rint(grey / 257.0), 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    return np.asarray(im.convert("RGB"))


def _check_decodes(p: Path) -> tuple:
    """The frame's size, after decoding every pixel once (a truncated file fails here, not mid-run)."""
    try:
        with warnings.catch_warnings():
            # Pillow only warns between its own limit and twice it; ours is lower and checked below.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(p)
        with im:
            w, h = im.size
            if w * h > MAX_FRAME_PIXELS:
                raise FrameError(f"frame {p.name} is {w}x{h}, more than the {MAX_FRAME_PIXELS // 2**20} Mpx a frame may "
                                 "have; downscale the frames")
            im.load()
            to_rgb(im)
    except FrameError:
        raise
    except Image.DecompressionBombError:  # Pillow refuses at open, far beyond our bound
        raise FrameError(f"frame {p.name} is larger than the {MAX_FRAME_PIXELS // 2**20} Mpx a frame may have; "
                         "downscale the frames") from None
    except Exception:  # Pillow raises many kinds for bad files (OSError, SyntaxError, ValueError...)
        raise FrameError(f"frame {p} is not a readable image (truncated or corrupt); remove or replace it") from None
    return w, h


class FolderFrames:
    def __init__(self, folder: Path):
        files = [p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTS]
        if not files:
            raise FrameError(f"no .jpg/.jpeg/.png frames in {folder}; point --frames at a folder of frames or a video file")
        self.files = sorted(files, key=lambda p: (_frame_number(p), p.name))
        for a, b in zip(self.files, self.files[1:]):
            if _frame_number(a) == _frame_number(b):
                raise FrameError(f"{a.name} and {b.name} are both frame {_frame_number(a)}; keep one file per frame number")
        sizes = {}
        for p in self.files:
            sizes.setdefault(_check_decodes(p), p)
        if len(sizes) > 1:
            (s0, p0), (s1, p1) = list(sizes.items())[:2]
            raise FrameError(
                f"frames have different sizes: {p0.name} is {s0[0]}x{s0[1]} but {p1.name} is {s1[0]}x{s1[1]}; "
                "resize them to one size"
            )
        (self.width, self.height), = sizes.keys()

    def __len__(self):
        return len(self.files)

    def rgb(self, i: int) -> np.ndarray:
        with Image.open(self.files[i]) as im:
            return to_rgb(im)


class VideoFrames:
    """A video file decoded with PyAV; sequential reads are cheap, going back reopens it."""

    def __init__(self, path: Path):
        import av

        self.path = path
        try:
            with av.open(str(path)) as c:
                stream = c.streams.video[0]
                self.width, self.height = stream.codec_context.width, stream.codec_context.height
                # The container's frame count when it has one (no decode pass before tracking);
                # only containers without it are counted by decoding.
                self.count = int(stream.frames or 0) or sum(1 for _ in c.decode(stream))
        except Exception as exc:
            raise FrameError(f"cannot decode video {path} ({type(exc).__name__}); convert it to H.264 .mp4 or a folder of frames") from None
        if self.count == 0:
            raise FrameError(f"video {path} has no frames")
        self._container = None
        self._iter = None
        self._next = 0

    def __len__(self):
        return self.count

    def rgb(self, i: int) -> np.ndarray:
        import av

        if self._iter is None or i < self._next:
            if self._container is not None:
                self._container.close()
            self._container = av.open(str(self.path))
            self._iter = self._container.decode(self._container.streams.video[0])
            self._next = 0
        for frame in self._iter:
            self._next += 1
            if self._next - 1 == i:
                return frame.to_ndarray(format="rgb24")
        raise FrameError(f"video {self.path} ended before frame {i}")


def open_frames(path) -> FolderFrames | VideoFrames:
    path = Path(path)
    if not path.exists():
        raise FrameError(f"--frames {path} does not exist")
    if path.is_dir():
        return FolderFrames(path)
    if path.suffix.lower() in VIDEO_EXTS:
        return VideoFrames(path)
    raise FrameError(f"--frames {path} is neither a folder of frames nor a video file ({', '.join(sorted(VIDEO_EXTS))})")
