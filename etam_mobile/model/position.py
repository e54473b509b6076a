"""Position encodings that depend only on sizes: computed once, never per frame."""
from __future__ import annotations

import math

import torch


def sine_position_encoding(channels: int, h: int, w: int, temperature: float = 10000.0) -> torch.Tensor:
    """Normalized 2-D sine encoding (1, channels, h, w): y half first, then x half.

    Same numbers as upstream's PositionEmbeddingSine(normalize=True, scale=2*pi).
    """
    half = channels // 2
    eps = 1e-6
    scale = 2 * math.pi
    y = torch.arange(1, h + 1, dtype=torch.float32)[:, None].expand(h, w)
    x = torch.arange(1, w + 1, dtype=torch.float32)[None, :].expand(h, w)
    y = y / (h + eps) * scale
    x = x / (w + eps) * scale
    dim_t = torch.arange(half, dtype=torch.float32)
    dim_t = temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / half)
    px = x[..., None] / dim_t
    py = y[..., None] / dim_t
    px = torch.stack((px[..., 0::2].sin(), px[..., 1::2].cos()), dim=3).flatten(2)
    py = torch.stack((py[..., 0::2].sin(), py[..., 1::2].cos()), dim=3).flatten(2)
    return torch.cat((py, px), dim=2).permute(2, 0, 1).unsqueeze(0).contiguous()
