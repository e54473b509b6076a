"""Frame preprocessing, bit-for-bit like upstream's video frame loader.

Upstream (utils/misc.py, JPEG-folder path) does: PIL `convert("RGB").resize((S, S))` with
Pillow's default filter (bicubic for RGB), `uint8 / 255.0` in float64 numpy, a cast to
float32 when stored into the frame tensor, then in float32 `-= mean` and `/= std`.
We keep that exact order so the float32 result is identical, not just close.
"""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_MEAN = torch.tensor(IMAGENET_MEAN, dtype=torch.float32)[:, None, None]
_STD = torch.tensor(IMAGENET_STD, dtype=torch.float32)[:, None, None]


def preprocess_frame(rgb_uint8_hwc: np.ndarray, image_size: int) -> torch.Tensor:
    """RGB uint8 frame (H, W, 3) -> normalized float32 model input (1, 3, S, S).

    The frame is stretched to S x S (no letterboxing), as upstream does; the aspect ratio
    is restored later when the low-res masks are resized back to the frame size.
    """
    arr = np.asarray(rgb_uint8_hwc)
    if arr.dtype != np.uint8:
        raise ValueError(f"frame must be uint8, got {arr.dtype}")
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"frame must be an RGB array of shape (H, W, 3), got {arr.shape}")
    resized = Image.fromarray(arr).convert("RGB").resize((image_size, image_size))
    x = (np.asarray(resized) / 255.0).astype(np.float32)  # float64 divide, then float32
    x = torch.from_numpy(x).permute(2, 0, 1)
    x = (x - _MEAN) / _STD
    return x.unsqueeze(0).contiguous()


__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "preprocess_frame"]
