"""Writing tracking results: palette mask PNGs, video-resolution logits, an overlay GIF."""
from __future__ import annotations

import errno
import os
import zipfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .ids import check_obj_id


def davis_palette() -> list:
    """The DAVIS colour palette (index i -> RGB), flattened for PIL."""
    pal = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal += [r, g, b]
    return pal


def to_video_res(low_res: np.ndarray, height: int, width: int) -> np.ndarray:
    """(objects, lr, lr) logits -> (objects, H, W), bilinear like upstream's output resize."""
    t = torch.from_numpy(np.ascontiguousarray(low_res, dtype=np.float32))[:, None]
    return F.interpolate(t, size=(height, width), mode="bilinear", align_corners=False)[:, 0].numpy()


def label_map(logits: np.ndarray, obj_ids: list) -> np.ndarray:
    """(objects, H, W) -> (H, W) uint8 object ids; where objects overlap the highest logit wins."""
    if len(obj_ids) == 0:
        return np.zeros(logits.shape[1:], np.uint8)
    best = np.argmax(logits, axis=0)
    fg = np.max(logits, axis=0) > 0
    ids = np.asarray(obj_ids, np.int64)
    return np.where(fg, ids[best], 0).astype(np.uint8)


def overlay_image(rgb: np.ndarray, labels: np.ndarray, palette: list) -> Image.Image:
    """One overlay.gif frame: the object colours blended over the frame, at most 480 px wide."""
    pal = np.asarray(palette, np.uint8).reshape(256, 3)
    colour = pal[labels].astype(np.float32)
    a = (labels > 0)[..., None] * 0.55
    mixed = (rgb.astype(np.float32) * (1 - a) + colour * a).astype(np.uint8)
    im = Image.fromarray(mixed)
    scale = 480 / max(im.size)
    if scale < 1:
        im = im.resize((round(im.width * scale), round(im.height * scale)))
    return im


def _reserve(path: Path) -> None:
    """Allocate a (memory-mapped, sparse) file's blocks now: writing a page of a sparse map on a
    full disk kills the process with SIGBUS, whereas this fails cleanly with ENOSPC up front."""
    with open(path, "r+b") as f:
        try:
            os.posix_fallocate(f.fileno(), 0, os.fstat(f.fileno()).st_size)
        except (AttributeError, OSError) as exc:
            if not isinstance(exc, AttributeError) and exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                raise


class ResultWriter:
    """Streams per-frame results into `folder` (masks/, optional logits.npz and overlay.gif)."""

    def __init__(self, folder: Path, num_frames: int, obj_ids: list, height: int, width: int,
                 save_logits: bool, overlay_source=None, logits_dtype: str = "float32"):
        self.folder = folder
        self.obj_ids = [check_obj_id(i, "mask output") for i in obj_ids]  # one byte per pixel
        self.h, self.w = height, width
        (folder / "masks").mkdir(parents=True, exist_ok=True)
        self.palette = davis_palette()
        self.logits = None
        if save_logits:
            self._npy = folder / "logits.npy.tmp"
            # Untracked frames (before the first prompt) keep upstream's "no object" score.
            self.logits = np.lib.format.open_memmap(
                self._npy, mode="w+", dtype=np.dtype(logits_dtype), shape=(num_frames, len(obj_ids), height, width)
            )
            _reserve(self._npy)
            self.logits[:] = -1024.0
        self.overlay_source = overlay_source
        self.overlay_frames = []
        self.written = set()

    def write(self, frame_idx: int, logits: np.ndarray) -> None:
        labels = label_map(logits, self.obj_ids)
        im = Image.fromarray(labels, mode="P")
        im.putpalette(self.palette)
        im.save(self.folder / "masks" / f"{frame_idx:05d}.png")
        self.written.add(frame_idx)
        if self.logits is not None:
            self.logits[frame_idx] = logits
        if self.overlay_source is not None:
            self.overlay_frames.append(self._overlay(self.overlay_source(frame_idx), labels))

    def _overlay(self, rgb: np.ndarray, labels: np.ndarray) -> Image.Image:
        return overlay_image(rgb, labels, self.palette)

    def finish(self, num_frames: int) -> None:
        """Background masks for frames never tracked; close the logits and overlay files."""
        for i in range(num_frames):
            if i not in self.written:
                im = Image.fromarray(np.zeros((self.h, self.w), np.uint8), mode="P")
                im.putpalette(self.palette)
                im.save(self.folder / "masks" / f"{i:05d}.png")
        if self.logits is not None:
            self.logits.flush()
            del self.logits
            ids = self.folder / "obj_ids.npy.tmp"
            with open(ids, "wb") as f:
                np.save(f, np.asarray(self.obj_ids, np.int64), allow_pickle=False)
            with zipfile.ZipFile(self.folder / "logits.npz", "w", zipfile.ZIP_STORED, allowZip64=True) as z:
                z.write(self._npy, "logits.npy")
                z.write(ids, "obj_ids.npy")
            self._npy.unlink()
            ids.unlink()
        if self.overlay_frames:
            first, *rest = self.overlay_frames
            first.save(self.folder / "overlay.gif", save_all=True, append_images=rest, duration=100, loop=0)
