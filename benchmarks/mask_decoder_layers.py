#!/usr/bin/env python3
"""Which mask-decoder layers make its int8 version miss chained tracking: the decoder quantised
(XNNPACKQuantizer dynamic int8, export/quantize.py) with groups of layers kept fp32, run as the
quantised PyTorch graph (the reference Q/DQ form XNNPACK lowers; no lowering needed), every
other stage eager fp32, replayed on the recorded cases against eager fp32.

    python benchmarks/mask_decoder_layers.py [--config test_tiny] [--json OUT]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

CANDIDATES = {
    "none kept fp32": (),
    "IoU and object-score heads": ("decoder.iou_prediction_head", "decoder.pred_obj_score_head"),
    "hypernetwork MLPs": ("decoder.output_hypernetworks_mlps",),
    "heads + hypernetwork MLPs": ("decoder.iou_prediction_head", "decoder.pred_obj_score_head",
                                  "decoder.output_hypernetworks_mlps"),
    "object-pointer projection": ("obj_ptr_proj",),
    "transformer": ("decoder.transformer",),
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="test_tiny")
    ap.add_argument("--candidates", default=None, help="comma-separated names of CANDIDATES (default: all)")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from quantization_sensitivity import compare

    from etam_export import gates, quantize
    from etam_export.common import example_inputs
    from etam_mobile.checkpoint import load_model
    from etam_mobile.configs import get_config, tiny_test_config
    from etam_mobile.contracts import Capacities
    from etam_mobile.runtime.backends import EagerBackend

    cfg = tiny_test_config() if args.config == "test_tiny" else get_config(args.config)
    model, _ = load_model(cfg, None, seed=0, quiet=True)
    caps = Capacities()
    eager = EagerBackend(model, capacities=caps)
    cases = gates.case_dirs()
    with torch.inference_mode():
        refs = {c.name: gates.replay(c, eager) for c in cases}
    stage = model.stages(for_export=True)["mask_decoder"].eval()
    inputs = example_inputs(cfg, caps, model.stages())["mask_decoder"]

    class Emulated:
        def __init__(self, module):
            self.module, self.cfg, self.capacities = module, eager.cfg, eager.capacities
            self.point_capacity, self.mask_prompt = caps.points, eager.mask_prompt

        def run(self, name, arrays):
            if name != "mask_decoder":
                return eager.run(name, arrays)
            with torch.no_grad():
                out = self.module(*[torch.from_numpy(np.ascontiguousarray(a)) for a in arrays])
            return [o.numpy().copy() for o in out]

    names = args.candidates.split(",") if args.candidates else list(CANDIDATES)
    rows = []
    for name in names:
        t0 = time.perf_counter()
        ep, rep = quantize.quantized_program(stage, inputs, "int8", "mask_decoder", skip_fp32=CANDIDATES[name])
        fp32_bytes = sum(m.weight.numel() * 4 for n, m in stage.named_modules()
                         if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)) and n.startswith(CANDIDATES[name] or ("\0",)))
        backend = Emulated(ep.module())
        with torch.inference_mode():
            res = {c.name: compare(gates.replay(c, backend), refs[c.name]) for c in cases}
        row = {"kept_fp32": name, "prefixes": list(CANDIDATES[name]), "layers": rep["layers"],
               "fp32_weight_mib": round(fp32_bytes / 2**20, 3), "cases": res, "ok": all(r["ok"] for r in res.values()),
               "seconds": round(time.perf_counter() - t0, 1)}
        rows.append(row)
        cells = "  ".join(f"{n}: {r.get('mean_iou', 0):.4f}/{r.get('min_iou', 0):.4f}" for n, r in res.items())
        print(f"{name:28s} fp32 {row['fp32_weight_mib']:.2f} MiB  {cells}  {'ok' if row['ok'] else 'MISSED'}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"config": cfg.name, "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
