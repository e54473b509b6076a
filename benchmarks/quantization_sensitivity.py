#!/usr/bin/env python3
"""Which stages can be quantised: chained tracking vs fp32 eager with one stage quantised at a
time (and all-but-one, and all), on the recorded upstream cases (tests/fixtures/upstream_cases).

Each plan runs eager fp32 with the plan's stages swapped for the programs of a quantised export
folder of the same config and weights, so one quantised export per scheme serves every plan (no
re-lowering) and the only difference from the reference is the quantisation. The gate is the exporter's (export/gates.py): mean mask
IoU >= 0.97 per case and >= 0.90 on every frame and object.

    etam-mobile export --config test_tiny --targets executorch --quantize int8 --allow-failing-gates --out int8
    python benchmarks/quantization_sensitivity.py --quantized int8 [--quantized int8-4w-dir] \
        [--json benchmarks/results/quantization_sensitivity_tiny.json]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def plans(stages) -> list:
    out = [("fp32 ExecuTorch (no stage quantised)", ())]
    out += [(f"only {s}", (s,)) for s in stages]
    out += [(f"all but {s}", tuple(t for t in stages if t != s)) for s in stages]
    out += [("all four", tuple(stages))]
    return out


class Hybrid:
    """Eager fp32 stages, except `quantised` ones, which run the quantised folder's programs
    (on the padded inputs the tracker gives every backend; eager trims its own)."""

    def __init__(self, eager, quant_folder: Path, qdoc: dict, quantised: tuple):
        from etam_export import executorch as etx

        self.eager, self.cfg, self.capacities = eager, eager.cfg, eager.capacities
        # the quantised mask decoder takes prompts padded to the export's capacity; eager takes them as given
        self.point_capacity = qdoc["capacities"]["points"] if "mask_decoder" in quantised else None
        self.mask_prompt = eager.mask_prompt
        self.methods = {}
        for stage in quantised:
            _, program = etx.load(quant_folder / qdoc["stages"][stage]["artifacts"]["executorch"])
            self.methods[stage] = program.load_method("forward")

    def run(self, stage, inputs):
        import torch

        if stage not in self.methods:
            return self.eager.run(stage, inputs)
        out = self.methods[stage].execute([torch.from_numpy(np.ascontiguousarray(a)) for a in inputs])
        return [o.detach().numpy().copy() for o in out]


def compare(got: dict, ref: dict) -> dict:
    from etam_export import gates

    if set(got) != set(ref):
        return {"ok": False, "problem": "other frames/objects"}
    ious = {k: gates.mask_iou(np.asarray(got[k]) > 0, np.asarray(ref[k]) > 0) for k in ref}
    mean, worst = float(np.mean(list(ious.values()))), min(ious.values())
    return {"mean_iou": round(mean, 4), "min_iou": round(worst, 4), "masks": len(ious),
            "ok": mean >= gates.MIN_CASE_MEAN_IOU and worst >= gates.MIN_FRAME_IOU}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--plans", default=None,
                    help="comma-separated labels to run, in order (e.g. 'only mask_decoder,all but mask_decoder'); "
                         "default: every stage alone, all but each stage, all four")
    ap.add_argument("--quantized", action="append", required=True, help="quantised export folder (repeatable)")
    ap.add_argument("--cases", default=None, help="comma-separated case names (default: the exporter's gate cases)")
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)

    import torch

    from etam_export import gates
    from etam_mobile.checkpoint import load_model
    from etam_mobile.configs import get_config
    from etam_mobile.contracts import STAGES, Capacities
    from etam_mobile.manifest import read_manifest
    from etam_mobile.runtime.backends import EagerBackend

    doc = read_manifest(Path(args.quantized[0]))
    seed = doc["weights"].get("synthetic_seed", 0)
    model, _ = load_model(get_config(doc["config"]), args.checkpoint, seed=seed, quiet=True)
    caps = Capacities(points=int(doc["capacities"]["points"]), cond_frames=int(doc["capacities"]["cond_frames"]))
    cases = gates.case_dirs(tuple(args.cases.split(",")) if args.cases else None)
    t0 = time.perf_counter()
    eager = EagerBackend(model, capacities=caps)
    with torch.inference_mode():
        refs = {c.name: gates.replay(c, eager) for c in cases}
    rows = []
    for qfolder in map(Path, args.quantized):
        qdoc = read_manifest(qfolder)
        if qdoc["config"] != doc["config"] or qdoc["weights"] != doc["weights"]:
            print(f"error: {qfolder} is not an export of the same config and weights as {args.quantized[0]}; "
                  "export both from one --config/--checkpoint", file=sys.stderr)
            return 2
        plan = qdoc.get("variant", {}).get("executorch_plan", {})
        scheme = qdoc.get("variant", {}).get("name", "?")
        chosen = plans(STAGES)[1:]  # eager vs itself is 1.0 by construction
        if args.plans:
            by = dict(chosen)
            chosen = [(p.strip(), by[p.strip()]) for p in args.plans.split(",")]
        for label, quantised in chosen:
            if any(plan.get(s, "fp32") == "fp32" for s in quantised):
                continue
            backend = Hybrid(eager, qfolder, qdoc, quantised)
            with torch.inference_mode():
                res = {c.name: compare(gates.replay(c, backend), refs[c.name]) for c in cases}
            row = {"scheme": scheme, "plan": label,
                   "quantised": {s: plan[s] for s in quantised}, "cases": res,
                   "ok": all(r["ok"] for r in res.values())}
            rows.append(row)
            cells = "  ".join(f"{n}: {r.get('mean_iou', 0):.4f}/{r.get('min_iou', 0):.4f}" for n, r in res.items())
            print(f"{row['scheme']:8s} {label:38s} {cells}  {'ok' if row['ok'] else 'MISSED'}", flush=True)
    out = {"config": doc["config"], "weights": doc["weights"], "gate": f"mean >= {gates.MIN_CASE_MEAN_IOU}, every "
           f"frame/object >= {gates.MIN_FRAME_IOU} (mask IoU vs fp32 eager)", "cases": [c.name for c in cases],
           "reference": "eager fp32; unquantised stages of each plan run eager fp32 too",
           "quantized": args.quantized, "rows": rows,
           "seconds": round(time.perf_counter() - t0, 1)}
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
