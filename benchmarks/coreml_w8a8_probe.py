"""Probe (not the exporter): can w8a8 Core ML packages be built on Linux without Core ML
predictions? torchao pt2e with ExecuTorch's XNNPACKQuantizer in static mode (int8 activations
calibrated in PyTorch on the example inputs, per-channel int8 weights), then ct.convert, per
tiny-config stage: prints the PyTorch w8a8 PSNR vs fp32 eager and whether Core ML converts it
(README "Compressed variants" has the result).

    python benchmarks/coreml_w8a8_probe.py memory_encoder image_encoder memory_attention mask_decoder
"""
from __future__ import annotations

import sys
import time

import torch


def probe(stage: str, model, specs, examples) -> None:
    import coremltools as ct
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (XNNPACKQuantizer,
                                                                         get_symmetric_quantization_config)
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    from etam_export import gates
    from etam_export.common import run_eager

    t0 = time.time()
    inputs = tuple(torch.from_numpy(a) for a in examples[stage])
    gm = torch.export.export(model.stages(for_export=True)[stage].eval(), inputs, strict=False).module()
    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True, is_dynamic=False))
    prepared = prepare_pt2e(gm, quantizer)
    prepared(*inputs)  # calibration
    converted = convert_pt2e(prepared)
    ref = run_eager(model.stages()[stage].eval(), examples[stage])
    with torch.no_grad():
        got = converted(*inputs)
    got = got if isinstance(got, (tuple, list)) else (got,)
    print(stage, "PyTorch w8a8 PSNR", [gates.psnr(r, g.numpy()) for r, g in zip(ref, got)], flush=True)
    ep = torch.export.export(converted, inputs, strict=False).run_decompositions({})
    try:
        mlmodel = ct.convert(ep, convert_to="mlprogram", minimum_deployment_target=ct.target.iOS18,
                             inputs=[ct.TensorType(name=t.name, shape=tuple(t.shape)) for t in specs[stage].inputs],
                             skip_model_load=True)
    except Exception as exc:
        print(stage, "ct.convert FAILED:", type(exc).__name__, str(exc)[:300], flush=True)
        return
    ops = {}
    for op in mlmodel._mil_program.functions["main"].operations:
        ops[op.op_type] = ops.get(op.op_type, 0) + 1
    print(stage, f"ct.convert ok ({time.time() - t0:.0f} s)", {k: v for k, v in ops.items() if "quant" in k}, flush=True)


def main(stages) -> None:
    from etam_mobile.checkpoint import load_model
    from etam_mobile.configs import tiny_test_config
    from etam_mobile.contracts import Capacities, stage_specs

    from etam_export.common import example_inputs

    model, _ = load_model(tiny_test_config(), None, seed=0, quiet=True)
    caps = Capacities()
    specs, examples = stage_specs(model.cfg, caps), example_inputs(model.cfg, caps, model.stages(for_export=True))
    for stage in stages:
        probe(stage, model, specs, examples)


if __name__ == "__main__":
    main(sys.argv[1:] or ["memory_encoder", "image_encoder", "memory_attention", "mask_decoder"])
