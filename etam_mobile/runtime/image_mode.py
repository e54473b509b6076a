"""Image mode: upstream's image predictor (`set_image` once, `predict` per prompt) over any backend.

No new graph: image mode chains the exported stages the tracker already uses.
- The encoder runs once per image. Upstream's image predictor adds `no_mem_embed` to its
  features (directly_add_no_mem_embed); our `memory_attention` graph returns exactly
  `feats + no_mem_embed` when every memory slot is invalid. Calling it once with zero
  features and an empty bank therefore reads out `no_mem_embed` (0 * attention + (0 + e));
  each image then costs one encoder call plus a vector add, not a memory-attention call.
- Each prompt costs one `mask_decoder` call. Which of its four masks are returned, and in
  what order, is decided by `image_mask_indices` (ported to Kotlin and Swift; see TRACE.md).
- Masks are resized to the image with upstream's bilinear resize; upstream's image predictor
  ignores the object score (it calls the decoder directly), so do we.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..configs import ModelConfig
from ..preprocess import IMAGENET_MEAN, IMAGENET_STD
from .decisions import build_prompt, stability_score
from .outputs import to_video_res
from .tracker import PromptError

MULTIMASK_TOKENS = (1, 2, 3)


def preprocess_image(rgb_uint8_hwc: np.ndarray, image_size: int) -> np.ndarray:
    """RGB uint8 (H, W, 3) -> (1, 3, S, S) float32, as upstream's image predictor does it.

    Not the video path (PIL bicubic resize of uint8): the image predictor converts to float
    first (ToTensor), resizes the float tensor bilinearly with antialiasing (torchvision
    Resize), then normalizes. Both are upstream behaviour; this one is what image-mode
    parity is measured against.
    """
    arr = np.asarray(rgb_uint8_hwc)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"image must be uint8 RGB (H, W, 3), got {arr.dtype} {arr.shape}")
    x = torch.from_numpy(arr.copy()).permute(2, 0, 1).to(torch.float32).div(255)
    x = F.interpolate(x[None], size=(image_size, image_size), mode="bilinear", align_corners=False, antialias=True)
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32)[:, None, None]
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32)[:, None, None]
    return ((x[0] - mean) / std)[None].contiguous().numpy()


def image_mask_indices(masks: np.ndarray, iou: np.ndarray, multimask: bool, cfg: ModelConfig) -> list[int]:
    """Which decoder tokens image mode returns, in model order.

    multimask: tokens 1, 2, 3 (upstream's three candidates, not sorted by score).
    Otherwise one mask: token 0 if its mask is stable, else the best of tokens 1..3
    (upstream's decoder applies dynamic multimask via stability outside training).
    """
    if multimask:
        return list(MULTIMASK_TOKENS)
    stab = stability_score(masks[0], cfg.dynamic_multimask_stability_delta)
    if stab >= cfg.dynamic_multimask_stability_thresh:
        return [0]
    return [1 + int(np.argmax(iou[1:4]))]


@dataclass
class ImageResult:
    """One prompt's answer. logits (K, H, W) float32 at image size, in model order;
    scores (K,) predicted IoU; low_res (K, lr, lr) clamped to [-32, 32] (feed one back as
    `mask_input` to refine); tokens: decoder token of each mask; best: index of the top score."""

    logits: np.ndarray
    scores: np.ndarray
    low_res: np.ndarray
    tokens: list
    object_score: float

    @property
    def masks(self) -> np.ndarray:
        return self.logits > 0

    @property
    def best(self) -> int:
        return int(np.argmax(self.scores))


class ImagePredictor:
    """Encode an image once, answer many prompts — on any stage backend (eager, ExecuTorch,
    ONNX, Core ML): what an app does while the user taps."""

    def __init__(self, backend):
        self.backend = backend
        self.cfg: ModelConfig = backend.cfg
        self._no_mem = None
        self._feats = None
        self.image_hw = None

    def _no_mem_embed(self) -> np.ndarray:
        """(C,) read once from the memory-attention graph's empty-bank branch (see module doc)."""
        if self._no_mem is None:
            cfg, caps = self.cfg, self.backend.capacities
            C, M, h = cfg.d_model, cfg.mem_dim, cfg.feat_size
            K, P = caps.memory_slots(cfg), caps.ptr_slots(cfg)
            (out,) = self.backend.run("memory_attention", [
                np.zeros((1, C, h, h), np.float32), np.zeros((K, M, h, h), np.float32),
                np.zeros((K,), np.int32), np.zeros((K,), np.float32),
                np.zeros((P, C), np.float32), np.zeros((P,), np.float32),
            ])
            self._no_mem = np.ascontiguousarray(out[0, :, 0, 0], dtype=np.float32)
        return self._no_mem

    def set_image(self, rgb_uint8_hwc: np.ndarray) -> None:
        """Run the image encoder once; later `predict` calls only run the decoder."""
        arr = np.asarray(rgb_uint8_hwc)
        x = preprocess_image(arr, self.cfg.image_size)
        (feats,) = self.backend.run("image_encoder", [x])
        self._feats = (feats + self._no_mem_embed()[None, :, None, None]).astype(np.float32)
        self.image_hw = (int(arr.shape[0]), int(arr.shape[1]))

    def predict(self, points=None, labels=None, box=None, multimask: bool = True, mask_input=None) -> ImageResult:
        """Clicks (x, y image pixels, label 1/0) and/or a box [x0, y0, x1, y1]; upstream's
        `predict(..., multimask_output=multimask, return_logits=True)`."""
        if self._feats is None:
            raise RuntimeError("call set_image before predict")
        if not points and box is None:
            raise PromptError("the query has no points and no box; give at least one click or a box")
        h, w = self.image_hw
        lr = self.cfg.low_res_size
        if points and (labels is None or len(labels) != len(points)):
            raise PromptError("give one label (1 positive, 0 negative) per point")
        try:
            pts, labs, _ = build_prompt(points, labels, box, (h, w), self.cfg.image_size, self.backend.point_capacity)
        except ValueError as exc:  # more clicks than the exported graph's prompt slots
            raise PromptError(str(exc)) from None
        if mask_input is None:
            mask, has = np.zeros((1, 1, lr, lr), np.float32), np.zeros((1,), np.float32)
        else:
            mask, has = np.asarray(mask_input, np.float32).reshape(1, 1, lr, lr), np.ones((1,), np.float32)
        masks, iou, _, obj_score = self.backend.run("mask_decoder", [self._feats, pts, labs, mask, has])
        tokens = image_mask_indices(masks[0], iou[0], multimask, self.cfg)
        low = masks[0, tokens].astype(np.float32)
        return ImageResult(
            logits=to_video_res(low, h, w), scores=iou[0, tokens].astype(np.float32),
            low_res=np.clip(low, -32.0, 32.0), tokens=tokens, object_score=float(obj_score.reshape(-1)[0]),
        )


def open_image_predictor(backend: str = "eager", *, config: str | None = None, checkpoint=None, seed: int = 0,
                         artifacts=None, threads: int | None = None) -> ImagePredictor:
    """An ImagePredictor on the named backend: eager from a config (+ checkpoint), or an export folder."""
    if backend == "eager":
        from ..checkpoint import load_model
        from ..configs import get_config
        from .backends import EagerBackend

        if config is None:
            raise ValueError("config is required for the eager backend")
        model, _ = load_model(get_config(config), checkpoint, seed=seed, quiet=True)
        return ImagePredictor(EagerBackend(model, threads=threads))
    from .exported import open_backend

    return ImagePredictor(open_backend(backend, artifacts, config=config, checkpoint=checkpoint))
