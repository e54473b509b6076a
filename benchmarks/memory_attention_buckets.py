"""Memory attention on ExecuTorch before / after issue 15, one call per valid-slot count, in one
process with the calls alternated (a shared machine's load hits all of them alike).

    python benchmarks/memory_attention_buckets.py --config efficienttam_ti_512x512 --slots 1,2,7 \
        --threads 1 --reps 3 --json benchmarks/results/memory_attention_buckets_ti512.json

eager: the stage on exactly the valid slots (EagerBackend). before: the full graph (every slot),
attention as XNNPACK bmm-softmax-bmm. fused_full: the full graph with the fused llama::custom_sdpa
attention. after: the slot bucket the runtime picks (contracts.choose_slot_bucket), fused. Only the
programs the asked slot counts need are exported. `--fused` makes "after" use the fused attention and
adds fused_full (the full graph, fused) (`etam-mobile bench --scaling executorch` does
the same from a complete export folder). `--old-ops` adds old_ops: the same bucket exported with the
op forms before the graph-ops rewrite (MemoryAttentionStage(graph_ops=False): one-hot lookup,
select/stack RoPE, unsqueeze/expand chains left outside XNNPACK), to time that change alone.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="efficienttam_ti_512x512")
    ap.add_argument("--slots", default="1,2,7", help="valid memory slots to measure (comma-separated)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--fused", action="store_true", help="after = fused-attention buckets, and time the fused full graph")
    ap.add_argument("--old-ops", action="store_true", help="also time the bucket with the pre-graph-ops op forms")
    ap.add_argument("--skip-before", action="store_true", help="do not export/time the full graph")
    args = ap.parse_args(argv)
    import tempfile

    import torch
    from bench_setup import full_bank_inputs, set_threads, synthetic_model

    set_threads(args.threads)
    from etam_export import executorch as et_export
    from etam_export.artifact import torch_export
    from etam_export.buckets import bucket_inputs
    from etam_mobile.bench.flops import count_flops
    from etam_mobile.contracts import choose_slot_bucket, slot_buckets
    from etam_mobile.runtime.backends import EagerBackend

    cfg, model, caps = synthetic_model(args.config)
    K, P = caps.memory_slots(cfg), caps.ptr_slots(cfg)
    buckets = [*slot_buckets(cfg, caps), (K, P)]
    h, C, M = cfg.feat_size, cfg.d_model, cfg.mem_dim
    full = full_bank_inputs(cfg, caps)
    export_stage = model.stages(for_export=True)["memory_attention"].eval()
    from etam_mobile.model.memory_attention import MemoryAttentionStage

    old_ops_stage = MemoryAttentionStage(model, for_export=True, graph_ops=False).eval()
    stage = model.stages()["memory_attention"].eval()
    work = Path(tempfile.mkdtemp(prefix="ma-buckets-"))
    programs = {}

    def program(name, k, p, fused, old_ops=False):
        if name not in programs:
            t0 = time.perf_counter()
            inputs = bucket_inputs(full, k, p)
            ep = torch_export(old_ops_stage if old_ops else export_stage, inputs, "memory_attention")
            info = et_export.write(ep, work / f"{name}.pte", "memory_attention", "executorch", "fp32", fused_attention=fused)
            prog = et_export.load(work / f"{name}.pte")[1]
            programs[name] = (prog, prog.load_method("forward"), info)
            print(f"exported {name} ({k}x{p}, fused={fused}) in {time.perf_counter() - t0:.0f} s, "
                  f"delegated {info['delegated_fraction']:.2f}", file=sys.stderr, flush=True)
        return programs[name][1]

    eager = EagerBackend(model, caps)
    rows = []
    for n in [int(x) for x in args.slots.split(",")]:
        inputs = [a.copy() for a in full]
        inputs[3][n:] = 0.0
        inputs[5][n:] = 0.0
        k, p = buckets[choose_slot_bucket(buckets, n, n)]
        cut = [inputs[0], inputs[1][:k], inputs[2][:k], inputs[3][:k], inputs[4][:p], inputs[5][:p]]
        fns = {"eager": lambda: eager.run("memory_attention", inputs)}
        variants = [("before", (K, P), False, inputs, False), ("after", (k, p), args.fused, cut, False)]
        if args.fused:
            variants.insert(1, ("fused_full", (K, P), True, inputs, False))
        if args.old_ops:
            variants.insert(-1, ("old_ops", (k, p), args.fused, cut, True))
        if args.skip_before:
            variants = [v for v in variants if v[0] != "before"]
        for name, kp, fused, arr, old in variants:
            tag = f"{'fused' if fused else 'unfused'}_{kp[0]}x{kp[1]}{'_old_ops' if old else ''}"
            meth = program(tag, *kp, fused, old)
            tensors = [torch.from_numpy(np.ascontiguousarray(a)) for a in arr]
            fns[name] = (lambda m, t: lambda: m.execute(t))(meth, tensors)
        times = {key: [] for key in fns}
        for f in fns.values():
            f()
        for _ in range(args.reps):
            for key, f in fns.items():
                t0 = time.perf_counter()
                f()
                times[key].append((time.perf_counter() - t0) * 1e3)
        trimmed = EagerBackend._trim(EagerBackend._trim(list(inputs), 3, (1, 2, 3)), 5, (4, 5))
        row = {"valid_slots": n, "pointers": n, "bucket": [k, p],
               "gflop": {"eager": round(count_flops(stage, trimmed)[0] / 1e9, 3),
                         "before": round(count_flops(export_stage, inputs)[0] / 1e9, 3),
                         "after": round(count_flops(export_stage, cut)[0] / 1e9, 3)},
               "median_ms": {key: round(float(np.median(v)), 1) for key, v in times.items()},
               "min_ms": {key: round(float(np.min(v)), 1) for key, v in times.items()}}
        row["ratio_to_eager_median"] = {key: round(row["median_ms"][key] / row["median_ms"]["eager"], 3)
                                        for key in times if key != "eager"}
        rows.append(row)
        print(json.dumps(row), flush=True)
    doc = {"config": cfg.name, "threads": args.threads, "reps": args.reps, "after_fused": args.fused,
           "command": "python benchmarks/memory_attention_buckets.py " + " ".join(sys.argv[1:]),
           "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
           "delegation": {name: {k: v[2][k] for k in ("delegated_fraction", "not_delegated_ops")}
                          for name, v in programs.items()},
           "rows": rows}
    if args.json:
        args.json.write_text(json.dumps(doc, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
