"""Memory encoder (mask downsampler + pixel-feature fuser) and the export stage `memory_encoder`.

Parameter names follow the official checkpoint (`memory_encoder.*`). Upstream semantics:
the high-res mask (S x S) is downsampled 16x by four conv(3, stride 2)+LayerNorm2d+GELU
steps (1 -> 4 -> 16 -> 64 -> 256 channels) and a 1x1 conv, added to a 1x1 projection of the
image features, passed through two ConvNeXt blocks and projected to 64 channels.
The memory's position encoding is a constant (64-ch sine), so the stage does not output it.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..configs import ModelConfig
from .common import LayerNorm2d


class CXBlock(nn.Module):
    """ConvNeXt block: depthwise 7x7 conv, LayerNorm2d, MLP x4 with GELU, layer scale, residual."""

    def __init__(self, dim: int):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = LayerNorm2d(dim)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm(self.dwconv(x)).permute(0, 2, 3, 1)
        y = self.gamma * self.pwconv2(F.gelu(self.pwconv1(y)))
        return x + y.permute(0, 3, 1, 2)


class MaskDownSampler(nn.Module):
    def __init__(self, embed_dim: int, total_stride: int = 16):
        super().__init__()
        layers, c_in = [], 1
        while total_stride > 1:
            c_out = c_in * 4
            layers += [nn.Conv2d(c_in, c_out, kernel_size=3, stride=2, padding=1), LayerNorm2d(c_out), nn.GELU()]
            c_in, total_stride = c_out, total_stride // 2
        layers.append(nn.Conv2d(c_in, embed_dim, kernel_size=1))
        self.encoder = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)


class Fuser(nn.Module):
    def __init__(self, dim: int, num_layers: int = 2):
        super().__init__()
        self.layers = nn.ModuleList(CXBlock(dim) for _ in range(num_layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


class MemoryEncoder(nn.Module):
    """(feats (1, C, h, w), mask already scaled to the memory encoder's input (1, 1, S, S))
    -> memory features (1, 64, h, w). Same call as upstream with skip_mask_sigmoid=True."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        C = cfg.d_model
        self.mask_downsampler = MaskDownSampler(C, total_stride=cfg.patch_size)
        self.pix_feat_proj = nn.Conv2d(C, C, kernel_size=1)
        self.fuser = Fuser(C)
        self.out_proj = nn.Conv2d(C, cfg.mem_dim, kernel_size=1)

    def forward(self, feats: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.pix_feat_proj(feats) + self.mask_downsampler(mask)
        return self.out_proj(self.fuser(x))


class MemoryEncoderStage(nn.Module):
    """Export stage `memory_encoder` (contracts.stage_specs):
    feats (1, C, h, w), mask (1, 1, 4h, 4w) low-res logits (after the no-object rule),
    binarize (1,) 0/1 -> mem_feats (1, 64, h, w).

    Upstream upsamples the low-res logits to S x S (bilinear, align_corners=False), then takes
    (logits > 0) for masks made from clicks or sigmoid(logits) otherwise, times 20 minus 10.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        cfg = model.cfg
        self.encoder = model.memory_encoder
        self.size = cfg.image_size
        self.scale = cfg.sigmoid_scale_for_mem_enc
        self.bias = cfg.sigmoid_bias_for_mem_enc

    def forward(self, feats, mask, binarize):
        hi = F.interpolate(mask, size=(self.size, self.size), mode="bilinear", align_corners=False)
        b = binarize.reshape(1, 1, 1, 1)
        m = b * (hi > 0).to(hi.dtype) + (1.0 - b) * torch.sigmoid(hi)
        return self.encoder(feats, m * self.scale + self.bias)


__all__ = ["MemoryEncoder", "MemoryEncoderStage"]
