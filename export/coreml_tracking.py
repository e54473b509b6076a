"""Chained-tracking gate of the Core ML artifacts, EMULATED in PyTorch (Core ML cannot
predict on Linux): each stage runs its converted graph with the fp16/fp32 ops read back from
the Core ML program (precision.Fp16Emulator) — for compressed packages with the weights
decompressed from the saved package (coreml_compress.EmulatedStage); stages exported fp32
run in fp32 eager."""
from __future__ import annotations

import numpy as np
import torch

from etam_mobile.contracts import STAGES


class EmulatedCoreMLBackend:
    """A runtime backend (cfg, capacities, point_capacity, run) over the stage plans."""

    def __init__(self, model, caps, plans: dict):
        from etam_mobile.runtime.mask_prompt import mask_prompt_constants

        self.cfg, self.capacities, self.point_capacity = model.cfg, caps, caps.points
        self.mask_prompt = mask_prompt_constants(model)
        self.plans = plans
        self.fp32 = {s: m.eval() for s, m in model.stages(for_export=True).items() if plans.get(s) is None}

    def run(self, stage: str, inputs: list) -> list:
        tensors = tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in inputs)
        plan = self.plans.get(stage)
        if plan is None:
            with torch.inference_mode():
                out = self.fp32[stage](*tensors)
            out = out if isinstance(out, (tuple, list)) else (out,)
            return [o.detach().numpy() for o in out]
        return plan.emulate(tensors)


FP16_EMULATION = "Core ML fp16 plan emulated in PyTorch (export/precision.py), not Core ML"


def tracking_gate(model, caps, plans: dict, cases: list, emulation: str = FP16_EMULATION, progress=None) -> dict:
    """gates.tracking_gate of the emulated Core ML stages (anything with .emulate(inputs)
    and .mode) vs fp32 eager at the same capacities."""
    from etam_mobile.runtime.backends import EagerBackend

    from . import gates

    with torch.inference_mode():
        report = gates.tracking_gate(EmulatedCoreMLBackend(model, caps, plans), EagerBackend(model, capacities=caps),
                                     cases, progress)
    report["emulation"] = emulation
    report["plans"] = {s: (plans[s].mode if plans.get(s) else "fp32") for s in STAGES}
    return report
