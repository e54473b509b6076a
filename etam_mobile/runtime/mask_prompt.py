"""Mask prompts: upstream `add_new_mask` turned into numbers the tracker feeds the stages.

Upstream (use_mask_input_as_output_without_sam) does, for a binary mask on a frame:
1. resize it to the model's S x S input (bilinear with antialiasing, then >= 0.5), unless it
   already is S x S;
2. output logits = mask * 20 - 10, downsampled to the low-res size (bilinear, antialias);
   that is the frame's output, with object score +10 (the mask decides presence, not the
   decoder);
3. the object pointer comes from the mask decoder run on the *raw* image features (no
   memory conditioning) with `mask_downsample(mask)` (a 4x4 stride-4 conv) as the dense mask
   prompt and no clicks; token 0's pointer, after the decoder's own no-object rule;
4. the memory is encoded later like any prompted frame (low-res output upsampled, binarized).

Step 3's conv has 17 weights; the exporter writes them into manifest.json ("mask_prompt"),
so exported backends, Swift and Kotlin need no extra graph: the existing mask decoder's
`mask_input` / `has_mask_input` inputs carry the mask.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

OUT_SCALE, OUT_BIAS = 20.0, -10.0  # upstream _use_mask_as_output: +-10 logits for the mask
MASK_OBJ_SCORE = OUT_SCALE + OUT_BIAS  # object score upstream records on a mask-prompt frame


class MaskPromptError(ValueError):
    """A mask prompt that cannot be used (empty, wrong size...)."""


def mask_prompt_constants(model) -> dict:
    """What a runtime needs besides the graphs: upstream's `mask_downsample` conv (1->1 channel,
    kernel 4, stride 4) as a 4x4 weight and a bias, plus the resize rules. Goes into the manifest."""
    conv = model.mask_downsample
    return {
        "downsample_weight": conv.weight.detach().reshape(4, 4).double().tolist(),
        "downsample_bias": float(conv.bias.detach().reshape(-1)[0]),
        "downsample_stride": 4,
        "output_scale": OUT_SCALE,
        "output_bias": OUT_BIAS,
        "object_score": MASK_OBJ_SCORE,
        "resize_to_input": "bilinear with antialias (torch interpolate antialias=True, align_corners=False) "
                           "to image_size x image_size, then >= 0.5; skipped when the mask already has that size",
        "resize_to_low_res": "(mask * output_scale + output_bias) bilinear with antialias to low_res_size",
        "decoder": "raw image features (no memory attention), no clicks (two not-a-point tokens), "
                   "mask_input = conv(mask), has_mask_input = 1; object pointer of token 0",
    }


def _resize_aa(x: np.ndarray, size: int) -> np.ndarray:
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[None, None]
    return F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False, antialias=True)[0, 0].numpy()


def mask_to_input(mask: np.ndarray, image_size: int) -> np.ndarray:
    """(H, W) bool at frame size -> (S, S) float32 0/1, upstream add_new_mask's resize."""
    m = np.asarray(mask).astype(np.float32)
    if m.shape == (image_size, image_size):
        return m
    return (_resize_aa(m, image_size) >= 0.5).astype(np.float32)


def downsample_conv(mask_s: np.ndarray, weight, bias: float) -> np.ndarray:
    """Upstream `mask_downsample` (Conv2d(1, 1, 4, stride 4)) on an (S, S) mask -> (S/4, S/4)."""
    s = mask_s.shape[0] // 4
    w = np.asarray(weight, np.float32).reshape(4, 4)
    blocks = mask_s[: 4 * s, : 4 * s].reshape(s, 4, s, 4)
    return (np.einsum("iajb,ab->ij", blocks, w) + np.float32(bias)).astype(np.float32)


def prepare_mask_prompt(mask: np.ndarray, image_size: int, low_res_size: int, consts: dict):
    """Returns (output low-res logits (lr, lr), decoder mask_input (lr, lr)).

    Raises MaskPromptError when nothing of the mask survives the resize to the model input
    (upstream would then declare the object absent; a prompt that says "nothing here" is
    almost certainly a mistake, so we ask for a larger mask)."""
    m = mask_to_input(mask, image_size)
    if not m.any():
        raise MaskPromptError(
            f"the mask covers too few pixels to survive resizing to the model's {image_size}x{image_size} input; "
            "give a larger mask or use clicks/a box"
        )
    low = _resize_aa(m * OUT_SCALE + OUT_BIAS, low_res_size)
    return low.astype(np.float32), downsample_conv(m, consts["downsample_weight"], consts["downsample_bias"])
