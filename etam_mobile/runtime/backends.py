"""Stage backends: objects that run the four stages on numpy arrays.

Every backend exposes `cfg`, `capacities`, `point_capacity` and `run(stage, inputs)`.
The tracker never knows which one it drives.
"""
from __future__ import annotations

import numpy as np
import torch

from ..configs import ModelConfig
from ..contracts import STAGES, Capacities

# Eager has no fixed shapes, so its conditioning-frame capacity can be far beyond any
# real prompt session: the closest-frame rule then never drops a frame, like upstream.
EAGER_COND_FRAMES = 64


class EagerBackend:
    """The stage modules on eager PyTorch.

    Inputs arrive padded like for an exported graph; since eager shapes are free, trailing
    invalid memory slots are trimmed before the call (the padded-vs-trimmed equality is
    what the stage tests prove), so eager costs what upstream's variable-length path costs.
    """

    point_capacity = None  # prompts are passed unpadded (real points + upstream's one pad)

    def __init__(self, model, capacities: Capacities | None = None, threads: int | None = None):
        self.model = model.eval()
        self.cfg: ModelConfig = model.cfg
        self.capacities = capacities or Capacities(cond_frames=EAGER_COND_FRAMES)
        self.stages = model.stages()
        from .mask_prompt import mask_prompt_constants

        self.mask_prompt = mask_prompt_constants(model)
        if threads:
            torch.set_num_threads(threads)

    @staticmethod
    def _trim(arrays, valid_index: int, slot_arrays: tuple):
        valid = arrays[valid_index]
        n = max(int(np.count_nonzero(valid)), 1)
        return [a[:n] if i in slot_arrays else a for i, a in enumerate(arrays)]

    @torch.inference_mode()
    def run(self, stage: str, inputs: list) -> list:
        if stage not in STAGES:
            raise KeyError(f"unknown stage {stage!r}")
        if stage == "memory_attention":
            # feats, mem_feats, mem_tpos, mem_valid, obj_ptrs, ptr_valid
            inputs = self._trim(inputs, 3, (1, 2, 3))
            inputs = self._trim(inputs, 5, (4, 5))
        tensors = [torch.from_numpy(np.ascontiguousarray(a)) for a in inputs]
        out = self.stages[stage](*tensors)
        if isinstance(out, torch.Tensor):
            out = (out,)
        return [o.detach().numpy() for o in out]
