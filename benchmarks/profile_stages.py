#!/usr/bin/env python3
"""Where the time goes: per-op profile of each eager stage (torch.profiler) at the manifest
input shapes with a full memory bank, plus the ExecuTorch XNNPACK delegation report of an
export folder (which ops stayed outside the delegate).

    python benchmarks/profile_stages.py --config efficienttam_ti_512x512 --threads 1 \
        [--artifacts EXPORT_DIR] [--out benchmarks/results/profile_efficienttam_ti_512x512.md]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--artifacts", help="export folder whose manifest holds the XNNPACK delegation report")
    ap.add_argument("--rows", type=int, default=12)
    ap.add_argument("--out", help="write Markdown here (default: stdout)")
    args = ap.parse_args(argv)

    from etam_export.common import example_inputs
    from torch.profiler import ProfilerActivity, profile

    from etam_mobile.bench import count_flops
    from etam_mobile.checkpoint import load_model
    from etam_mobile.configs import get_config
    from etam_mobile.contracts import Capacities

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = get_config(args.config)
    model, _ = load_model(cfg, None, seed=0, quiet=True)
    stages = model.stages()
    examples = example_inputs(cfg, Capacities(), stages)
    examples["memory_attention"][3][:] = 1.0  # full bank: every memory slot valid
    examples["memory_attention"][5][:] = 1.0
    out = [f"# Per-op profile: {cfg.name}, eager PyTorch, {torch.get_num_threads()} thread(s)", "",
           "Manifest input shapes, every memory slot valid; one warm-up call, then one profiled call.", ""]
    for name, module in stages.items():
        tensors = [torch.from_numpy(np.ascontiguousarray(a)) for a in examples[name]]
        flops, _ = count_flops(module, examples[name])
        with torch.inference_mode():
            module(*tensors)
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                module(*tensors)
        events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
        total = sum(e.self_cpu_time_total for e in events) / 1e3
        out += [f"## {name}: {total:.1f} ms, {flops / 1e9:.2f} GFLOP, {flops / 1e9 / (total / 1e3):.1f} GFLOP/s", "",
                "| op | self ms | share | calls |", "|---|---|---|---|"]
        for e in events[: args.rows]:
            out.append(f"| {e.key} | {e.self_cpu_time_total / 1e3:.1f} | "
                       f"{100 * e.self_cpu_time_total / 1e3 / total:.0f} % | {e.count} |")
        out.append("")
    if args.artifacts:
        doc = json.loads((Path(args.artifacts) / "manifest.json").read_text())
        out += ["## ExecuTorch XNNPACK delegation (from the export's manifest)", "",
                "| stage | delegated nodes | ops left to portable kernels |", "|---|---|---|"]
        for name, rep in doc.get("tool", {}).get("export_report", {}).items():
            et = rep.get("executorch", {})
            if "delegated_fraction" in et:
                left = ", ".join(f"{k} x{v}" for k, v in et.get("not_delegated_ops", {}).items()) or "none"
                out.append(f"| {name} | {et['delegated_nodes']}/{et['total_nodes']} "
                           f"({100 * et['delegated_fraction']:.0f} %) | {left} |")
        out.append("")
    text = "\n".join(out)
    if args.out:
        Path(args.out).write_text(text)
        print(f"wrote {args.out}")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
