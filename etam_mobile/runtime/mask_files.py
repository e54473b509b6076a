"""Reading the mask PNGs of mask prompts, checked before any model work.

A mask is a binary PNG at frame size (any pixel > 0 is the object; 8-bit grey, 1-bit or RGB),
or a palette PNG (e.g. a DAVIS annotation) plus the entry's "mask_value": the palette index of
the object. Paths are relative to the prompt file.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from .tracker import PromptError


def load_mask(prompt, base_dir: Path, width: int, height: int) -> np.ndarray:
    """(H, W) bool for a mask prompt; PromptError naming the file and the fix otherwise."""
    where = f"mask prompt for object {prompt.obj_id} on frame {prompt.frame}"
    path = Path(base_dir) / prompt.mask
    if not path.is_file():
        raise PromptError(f"{where}: mask file {path} does not exist; paths are relative to the prompt file")
    try:
        with Image.open(path) as im:
            im.load()
            mode, size = im.mode, im.size
            arr = np.asarray(im)
    except Exception as exc:
        raise PromptError(f"{where}: {path} is not a readable image ({type(exc).__name__}); give a PNG mask") from None
    if size != (width, height):
        raise PromptError(f"{where}: {path.name} is {size[0]}x{size[1]} but the frames are {width}x{height}; "
                          "give a mask of the frame's size")
    if prompt.mask_value is not None:
        if mode != "P":
            raise PromptError(f"{where}: 'mask_value' needs a palette PNG, {path.name} is mode {mode}; "
                              "drop mask_value for a binary mask")
        mask = arr == prompt.mask_value
        if not mask.any():
            present = sorted(int(v) for v in np.unique(arr) if v != 0)
            raise PromptError(f"{where}: value {prompt.mask_value} does not occur in {path.name} (it has "
                              f"{present or 'only 0'}); set mask_value to one of those")
        return mask
    if mode == "P":
        values = sorted(int(v) for v in np.unique(arr) if v != 0)
        if len(values) > 1:
            raise PromptError(f"{where}: {path.name} is a palette PNG with several objects {values}; "
                              "add \"mask_value\" to pick one")
    if arr.ndim == 3:
        arr = arr[..., :3].max(axis=-1) if mode != "LA" else arr[..., 0]
    mask = arr > 0
    if not mask.any():
        raise PromptError(f"{where}: {path.name} is empty (no pixel > 0); draw the object or use clicks/a box")
    return mask


def load_masks(prompts: list, base_dir, width: int, height: int) -> dict:
    """{index in the prompt list: (H, W) bool} for every mask prompt."""
    return {i: load_mask(p, Path(base_dir), width, height) for i, p in enumerate(prompts) if p.mask is not None}
