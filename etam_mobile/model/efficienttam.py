"""The whole EfficientTAM model in the official checkpoint layout, and its four stages.

`EfficientTAM` only owns parameters (same attribute names as upstream, so official
state dicts load unchanged); the math lives in the stage modules, and tracking
decisions live in etam_mobile/runtime.
"""
from __future__ import annotations

import torch
from torch import nn

from ..configs import ModelConfig
from .common import MLP
from .image_encoder import ImageEncoder, ImageEncoderStage
from .mask_decoder import MaskDecoder, MaskDecoderStage, PromptEncoder
from .memory_attention import MemoryAttention, MemoryAttentionStage
from .memory_encoder import MemoryEncoder, MemoryEncoderStage


class EfficientTAM(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        C, M = cfg.d_model, cfg.mem_dim
        self.image_encoder = ImageEncoder(cfg)
        self.memory_attention = MemoryAttention(cfg)
        self.memory_encoder = MemoryEncoder(cfg)
        self.maskmem_tpos_enc = nn.Parameter(torch.zeros(cfg.num_maskmem, 1, 1, M))
        self.no_mem_embed = nn.Parameter(torch.zeros(1, 1, C))
        self.no_mem_pos_enc = nn.Parameter(torch.zeros(1, 1, C))
        self.no_obj_ptr = nn.Parameter(torch.zeros(1, C))
        # Used upstream only for mask prompts (add_new_mask); kept so checkpoints load strictly.
        self.mask_downsample = nn.Conv2d(1, 1, kernel_size=4, stride=4)
        self.sam_prompt_encoder = PromptEncoder(cfg)
        self.sam_mask_decoder = MaskDecoder(cfg)
        self.obj_ptr_proj = MLP(C, C, C, 3)

    def stages(self, for_export: bool = False) -> dict[str, nn.Module]:
        """The four exportable stage modules, keyed by contracts.STAGES names; `for_export`
        gives the graph-friendly form where one exists (same values, see memory_attention)."""
        return {
            "image_encoder": ImageEncoderStage(self),
            "memory_attention": MemoryAttentionStage(self, for_export=for_export),
            "mask_decoder": MaskDecoderStage(self),
            "memory_encoder": MemoryEncoderStage(self),
        }


def build_model(cfg: ModelConfig) -> EfficientTAM:
    return EfficientTAM(cfg).eval()
