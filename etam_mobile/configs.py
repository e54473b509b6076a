"""The eight official EfficientTAM configs, as facts from upstream's YAML files.

Every field that differs between configs lives here; everything shared (window 14,
4 memory-attention layers, 7 memory frames, post-processing constants) is a default.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

CROSS_ATTN_PLAIN = "plain"  # RoPE attention over every memory token
CROSS_ATTN_POOL_LOGITS = "pool_logits"  # variant 1: 2x2 pooled k/v, +2 ln2 on the pooled logits
CROSS_ATTN_POOL_KEYS = "pool_keys"  # variant 2: 2x2 pooled k/v, +2 ln2 added to the pooled keys


@dataclass(frozen=True)
class ModelConfig:
    name: str
    embed_dim: int = 192
    num_heads: int = 3
    depth: int = 12
    image_size: int = 1024
    cross_attn: str = CROSS_ATTN_PLAIN
    patch_size: int = 16
    window_size: int = 14
    global_blocks: tuple = (2, 5, 8, 11)
    mlp_ratio: float = 4.0
    pretrain_img_size: int = 224  # ViT abs pos embed is (224/16)^2 + 1 = 197 tokens
    d_model: int = 256
    mem_dim: int = 64
    mem_attn_layers: int = 4
    mem_attn_ffn: int = 2048
    num_maskmem: int = 7
    max_obj_ptrs_in_encoder: int = 16
    sigmoid_scale_for_mem_enc: float = 20.0
    sigmoid_bias_for_mem_enc: float = -10.0
    dynamic_multimask_stability_delta: float = 0.05
    dynamic_multimask_stability_thresh: float = 0.98
    multimask_min_pt_num: int = 0
    multimask_max_pt_num: int = 1
    rope_theta: float = 10000.0
    synthetic: bool = field(default=False, compare=False)

    @property
    def feat_size(self) -> int:
        """Side of the image-embedding grid (S/16)."""
        return self.image_size // self.patch_size

    @property
    def low_res_size(self) -> int:
        """Side of the decoder's low-res mask logits (4x the embedding grid)."""
        return 4 * self.feat_size

    @property
    def pooled(self) -> bool:
        return self.cross_attn != CROSS_ATTN_PLAIN


def _official() -> dict:
    out = {}
    for size, (dim, heads) in {"ti": (192, 3), "s": (384, 6)}.items():
        base = f"efficienttam_{size}"
        out[base] = ModelConfig(base, dim, heads)
        out[base + "_1"] = ModelConfig(base + "_1", dim, heads, cross_attn=CROSS_ATTN_POOL_LOGITS)
        out[base + "_2"] = ModelConfig(base + "_2", dim, heads, cross_attn=CROSS_ATTN_POOL_KEYS)
        out[base + "_512x512"] = ModelConfig(base + "_512x512", dim, heads, image_size=512)
    return out


OFFICIAL_CONFIGS: dict[str, ModelConfig] = _official()


def get_config(name: str) -> ModelConfig:
    """Look up an official config by its upstream name, with a helpful error."""
    if name in OFFICIAL_CONFIGS:
        return OFFICIAL_CONFIGS[name]
    if name in TEST_CONFIGS:
        return TEST_CONFIGS[name]
    known = ", ".join(OFFICIAL_CONFIGS)
    raise ValueError(f"unknown config '{name}'; choose one of: {known}")


def tiny_test_config(name: str = "test_tiny", cross_attn: str = CROSS_ATTN_PLAIN, image_size: int = 128) -> ModelConfig:
    """A small config with the official structure, for fast logic tests and export tests."""
    return ModelConfig(
        name,
        embed_dim=32,
        num_heads=2,
        depth=4,
        image_size=image_size,
        cross_attn=cross_attn,
        window_size=4,
        global_blocks=(1, 3),
        d_model=256,
        mem_dim=64,
        mem_attn_layers=1,
        mem_attn_ffn=128,
    )


TEST_CONFIGS: dict[str, ModelConfig] = {
    c.name: c
    for c in (
        tiny_test_config(),
        tiny_test_config("test_tiny_pool1", CROSS_ATTN_POOL_LOGITS),
        tiny_test_config("test_tiny_pool2", CROSS_ATTN_POOL_KEYS),
    )
}

__all__ = ["ModelConfig", "OFFICIAL_CONFIGS", "TEST_CONFIGS", "get_config", "tiny_test_config", "replace"]
