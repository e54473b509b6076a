"""FLOP counting of stage calls (torch FlopCounterMode, the CPU SDPA kernel included)."""
from __future__ import annotations

import numpy as np

# ---- FLOPs ------------------------------------------------------------------------------

def _sdpa_cpu_mapping() -> dict:
    """FlopCounterMode counts the CUDA SDPA kernels but not the CPU flash kernel eager uses;
    count it with torch's own SDPA formula (2 matmuls: QK^T and PV)."""
    import torch
    from torch.utils.flop_counter import sdpa_flop_count

    def cpu_flash(q, k, v, *args, out_shape=None, **kwargs):
        return sdpa_flop_count(q, k, v)

    # keyed by op packet, as FlopCounterMode's registry is; SDPA reaches the mode un-decomposed
    ops = {torch.ops.aten.scaled_dot_product_attention: cpu_flash}
    op = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if op is not None:
        ops[op] = cpu_flash
    return ops


def count_flops(module, inputs) -> tuple[int, dict]:
    """(total FLOPs, {module path: FLOPs}) of one call; a multiply-add counts 2.

    Counted: convolutions, (batched) matmuls, linear layers, attention (QK^T, PV).
    Not counted: element-wise ops, softmax, norms (bandwidth-, not compute-bound).
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    tensors = [torch.from_numpy(np.ascontiguousarray(a)) for a in inputs]
    with torch.inference_mode(), FlopCounterMode(display=False, custom_mapping=_sdpa_cpu_mapping()) as fc:
        module(*tensors)
    per_module = {name: int(sum(counts.values())) for name, counts in fc.get_flop_counts().items()}
    return int(fc.get_total_flops()), per_module


def _fit(a: np.ndarray, shape: tuple) -> np.ndarray:
    """`a` cut (or zero-padded) to `shape`: FLOPs depend on shapes only, not on values."""
    out = np.zeros(shape, a.dtype)
    region = tuple(slice(0, min(s, t)) for s, t in zip(shape, a.shape))
    out[region] = a[region]
    return out


class FlopTable:
    """FLOPs of (stage, input shapes), counted once per distinct shape on the stage modules in
    the form the backend runs (`for_export`: the exported graphs' form, see model.stages)."""

    def __init__(self, model, examples: dict, for_export: bool = False):
        self.stages = {k: v.eval() for k, v in model.stages(for_export=for_export).items()}
        self.examples = examples
        self._cache: dict = {}

    def flops(self, stage: str, shapes) -> int:
        key = (stage, tuple(tuple(s) for s in shapes))
        if key not in self._cache:
            inputs = [_fit(a, tuple(s)) for a, s in zip(self.examples[stage], shapes)]
            if stage == "memory_attention":  # every slot valid: the full-bank cost
                inputs[3][:] = 1.0
                inputs[5][:] = 1.0
            self._cache[key] = count_flops(self.stages[stage], inputs)[0]
        return self._cache[key]


