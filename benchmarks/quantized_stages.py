#!/usr/bin/env python3
"""Per-stage size and speed of the quantised ExecuTorch programs against fp32, one process.

Writes each stage's fp32, int8 and int8-4w .pte (cached in --out: an existing file is reused),
reports sizes and ratios, then times the programs of each stage alternately (fp32, int8,
int8-4w, fp32, ...) so load drifts hit every variant alike: on a shared machine only the
ratios mean something. The memory attention runs its full graph (every slot valid), as the
quantised variants do. `--flops` adds the memory attention's FLOP split (linear layers vs the
attention matmuls) — what dynamic int8 can and cannot speed up.

    python benchmarks/quantized_stages.py --config efficienttam_ti_512x512 --out /tmp/qstages \
        --threads 2 --reps 7 --flops --json benchmarks/results/quantized_stages_ti512.json
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

SCHEMES = ("fp32", "int8", "int8-4w")


def export_programs(model, stages, schemes, out: Path, examples: dict, log) -> dict:
    from etam_export import executorch as etx
    from etam_export import plan, quantize
    from etam_export.artifact import torch_export

    mods = model.stages(for_export=True)
    reports = {}
    for stage in stages:
        for scheme in schemes:
            path = out / f"{stage}.{scheme}.pte"
            if path.exists():
                log(f"{stage} {scheme}: reusing {path}")
                continue
            t0 = time.perf_counter()
            tmp = path.with_suffix(".partial")
            if scheme == "fp32":
                etx.write(torch_export(mods[stage].eval(), examples[stage], stage), tmp, stage, "executorch", "fp32")
                rep = {}
            else:
                # the default plan's fp32 exceptions of this stage and scheme (plan.KEEP_FP32_LAYERS)
                rep = quantize.write(mods[stage].eval(), examples[stage], tmp, stage, scheme,
                                     skip_fp32=plan.keep_fp32_layers(stage, scheme))
            tmp.rename(path)
            reports[f"{stage}.{scheme}"] = {k: rep.get(k) for k in ("layers", "tables_computed_in_graph",
                                                                   "delegated_fraction")}
            if scheme != "fp32":
                reports[f"{stage}.{scheme}"]["kept_fp32"] = list(plan.keep_fp32_layers(stage, scheme))
            log(f"{stage} {scheme}: {path.stat().st_size / 2**20:.2f} MiB in {time.perf_counter() - t0:.0f} s "
                f"{reports[f'{stage}.{scheme}']}")
    return reports


def time_alternating(paths: dict, inputs: list, reps: int) -> dict:
    """{scheme: [ms, ...]} of each program's forward, timed by bench_setup.alternate_ms."""
    import torch
    from bench_setup import alternate_ms
    from etam_mobile.runtime.exported import load_executorch_method

    loaded = {s: load_executorch_method(p) for s, p in paths.items()}  # (program, method): keep both
    return alternate_ms({s: m for s, (_, m) in loaded.items()},
                        [torch.from_numpy(np.ascontiguousarray(a)) for a in inputs], reps)


def flop_split(model, inputs: list) -> dict:
    """GFLOP of the memory attention (export form, every slot valid) by aten op."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    stage = model.stages(for_export=True)["memory_attention"].eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        stage(*[torch.from_numpy(np.ascontiguousarray(a)) for a in inputs])
    by_op = {}
    for _, ops in counter.get_flop_counts().items():
        for op, n in ops.items():
            by_op[str(op)] = max(by_op.get(str(op), 0), n)  # the top level repeats every op; take it once
    total = counter.get_total_flops()
    return {"total_gflop": round(total / 1e9, 3), "by_op_gflop": {k: round(v / 1e9, 3) for k, v in by_op.items()}}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--out", required=True, help="folder for the .pte programs (reused when present)")
    ap.add_argument("--stages", default="memory_attention,image_encoder,mask_decoder,memory_encoder")
    ap.add_argument("--schemes", default=",".join(SCHEMES))
    ap.add_argument("--reps", type=int, default=5, help="timed calls per program (0: sizes only)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--flops", action="store_true", help="memory-attention FLOP split by op")
    ap.add_argument("--json")
    args = ap.parse_args(argv)

    from bench_setup import set_threads, synthetic_model

    from etam_export.common import example_inputs

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    if args.threads:
        set_threads(args.threads)
    _, model, caps = synthetic_model(args.config)
    examples = example_inputs(model.cfg, caps, model.stages(), seed=5)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stages, schemes = args.stages.split(","), args.schemes.split(",")
    reports = export_programs(model, stages, schemes, out, examples, log)
    res = {"config": args.config, "threads": args.threads, "reps": args.reps, "load_average": list(
        __import__("os").getloadavg()), "stages": {}, "export_reports": reports}
    for stage in stages:
        paths = {s: out / f"{stage}.{s}.pte" for s in schemes}
        row = {"bytes": {s: p.stat().st_size for s, p in paths.items()}}
        if "fp32" in paths:
            row["size_vs_fp32"] = {s: round(b / row["bytes"]["fp32"], 3) for s, b in row["bytes"].items()}
        if args.reps:
            ms = time_alternating(paths, examples[stage], args.reps)
            row["median_ms"] = {s: round(float(np.median(v)), 1) for s, v in ms.items()}
            if "fp32" in ms:
                row["time_vs_fp32"] = {s: round(row["median_ms"][s] / row["median_ms"]["fp32"], 3) for s in ms}
        res["stages"][stage] = row
        log(f"{stage}: {json.dumps(row)}")
    tot = {s: sum(res["stages"][st]["bytes"][s] for st in stages) for s in schemes}
    res["total_bytes"] = tot
    if "fp32" in tot:
        res["total_size_vs_fp32"] = {s: round(b / tot["fp32"], 3) for s, b in tot.items()}
    if args.flops:
        res["memory_attention_flops"] = flop_split(model, examples["memory_attention"])
    res["load_average_end"] = list(__import__("os").getloadavg())
    text = json.dumps(res, indent=1)
    print(text)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
