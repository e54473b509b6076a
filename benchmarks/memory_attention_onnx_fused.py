"""Memory attention per call on ONNX Runtime: MatMul-Softmax-MatMul graph (plain) vs the fused
`com.microsoft::MultiHeadAttention` graph (export/onnx.py `fused_attention`), next to eager, in one
process with the calls alternated (a shared machine's load hits all of them alike).

    python benchmarks/memory_attention_onnx_fused.py --config efficienttam_ti_512x512 --slots 7,2 \
        --threads 2,1 --reps 5 --json benchmarks/results/memory_attention_onnx_fused_ti512.json

For each valid-slot count n (n memories, n pointers valid) the slot bucket the runtime picks
(contracts.choose_slot_bucket) is exported twice (plain, fused); for each thread count the eager
stage (EagerBackend, torch threads) and both ONNX Runtime sessions (intra-op threads) are timed.
Also records each graph's largest deviation from eager (fp32 parity). `--profile` adds ONNX
Runtime's per-node profile (op type -> ms per call, summed over nodes) of both graphs.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def op_profile(path: Path, opts, feed: dict, prefix: Path, runs: int = 2) -> dict:
    """ONNX Runtime's node profile of `runs` calls (after a warm-up): op type -> ms per call."""
    import onnxruntime as ort

    opts.enable_profiling, opts.profile_file_prefix = True, str(prefix)
    sess = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    opts.enable_profiling = False
    for _ in range(runs + 1):
        sess.run(None, feed)
    events = json.loads(Path(sess.end_profiling()).read_text())
    per_op: dict = {}
    run_calls = [e for e in events if e.get("name") == "model_run"]
    first = run_calls[0]["ts"] + run_calls[0]["dur"] if run_calls else 0  # skip the warm-up call
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] >= first:
            op = e["args"].get("op_name", "?")
            per_op[op] = per_op.get(op, 0.0) + e["dur"] / 1e3 / runs
    return {k: round(v, 1) for k, v in sorted(per_op.items(), key=lambda kv: -kv[1])}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="efficienttam_ti_512x512")
    ap.add_argument("--slots", default="7,2", help="valid memory slots to measure (comma-separated)")
    ap.add_argument("--threads", default="2,1", help="thread counts to measure (comma-separated)")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--profile", action="store_true", help="add ONNX Runtime's per-op-type profile of each graph")
    args = ap.parse_args(argv)
    import onnxruntime as ort
    import torch
    from bench_setup import full_bank_inputs, synthetic_model

    from etam_export import onnx as onnx_export
    from etam_export.artifact import torch_export
    from etam_mobile.contracts import choose_slot_bucket, memory_attention_spec, slot_buckets
    from etam_mobile.runtime.backends import EagerBackend

    cfg, model, caps = synthetic_model(args.config)
    K, P = caps.memory_slots(cfg), caps.ptr_slots(cfg)
    buckets = [*slot_buckets(cfg, caps), (K, P)]
    h, C, M = cfg.feat_size, cfg.d_model, cfg.mem_dim
    full = full_bank_inputs(cfg, caps)
    export_stage = model.stages(for_export=True)["memory_attention"].eval()
    work = Path(tempfile.mkdtemp(prefix="ma-onnx-fused-"))
    eager = EagerBackend(model, caps)
    threads = [int(t) for t in args.threads.split(",")]
    rows, graphs = [], {}
    for n in [int(x) for x in args.slots.split(",")]:
        inputs = [a.copy() for a in full]
        inputs[3][n:] = 0.0
        inputs[5][n:] = 0.0
        k, p = buckets[choose_slot_bucket(buckets, n, n)]
        cut = [inputs[0], inputs[1][:k], inputs[2][:k], inputs[3][:k], inputs[4][:p], inputs[5][:p]]
        spec = memory_attention_spec(cfg, k, p)
        ep = torch_export(export_stage, cut, "memory_attention")
        ep = onnx_export.prepare(export_stage, ep, cut, "memory_attention")
        paths = {}
        for variant, fused in (("onnx_plain", False), ("onnx_fused", True)):
            t0 = time.perf_counter()
            paths[variant] = work / f"{variant}_{k}x{p}.onnx"
            info = onnx_export.write(ep, paths[variant], spec, fused_attention=fused)
            graphs[f"{variant}_{k}x{p}"] = info
            print(f"exported {variant} {k}x{p} in {time.perf_counter() - t0:.0f} s ({info['nodes']} nodes, "
                  f"fused={info['fused_attention']})", file=sys.stderr, flush=True)
        feed = {t.name: np.ascontiguousarray(a) for t, a in zip(spec.inputs, cut)}
        torch.set_num_threads(max(threads))
        ref = eager.run("memory_attention", inputs)[0]
        for t in threads:
            torch.set_num_threads(t)
            opts = ort.SessionOptions()
            opts.log_severity_level = 3
            opts.intra_op_num_threads, opts.inter_op_num_threads = t, 1
            sessions = {v: ort.InferenceSession(str(pth), sess_options=opts, providers=["CPUExecutionProvider"])
                        for v, pth in paths.items()}
            fns = {"eager": lambda: eager.run("memory_attention", inputs)[0]}
            fns.update({v: (lambda s: lambda: s.run(None, feed)[0])(s) for v, s in sessions.items()})
            dev = {v: float(np.abs(f().reshape(ref.shape) - ref).max()) for v, f in fns.items()}  # also the warm-up
            times = {key: [] for key in fns}
            for _ in range(args.reps):
                for key, f in fns.items():
                    t0 = time.perf_counter()
                    f()
                    times[key].append((time.perf_counter() - t0) * 1e3)
            row = {"valid_slots": n, "pointers": n, "bucket": [k, p], "threads": t,
                   "median_ms": {key: round(float(np.median(v)), 1) for key, v in times.items()},
                   "min_ms": {key: round(float(np.min(v)), 1) for key, v in times.items()},
                   "max_abs_diff_vs_eager": {key: v for key, v in dev.items() if key != "eager"},
                   "peak_abs_eager": float(np.abs(ref).max())}
            row["ratio_to_eager_median"] = {key: round(row["median_ms"][key] / row["median_ms"]["eager"], 3)
                                            for key in times if key != "eager"}
            if args.profile:
                row["profile_ms_per_call"] = {v: op_profile(pth, opts, feed, work / f"prof_{v}_{t}")
                                              for v, pth in paths.items()}
            row["fused_over_plain_median"] = round(row["median_ms"]["onnx_fused"] / row["median_ms"]["onnx_plain"], 3)
            row["fused_over_plain_min"] = round(row["min_ms"]["onnx_fused"] / row["min_ms"]["onnx_plain"], 3)
            rows.append(row)
            print(json.dumps(row), flush=True)
    import onnxruntime

    doc = {"config": cfg.name, "reps": args.reps, "label": "loaded machine (shared 2-core VM): compare ratios only",
           "onnxruntime": onnxruntime.__version__, "torch": torch.__version__,
           "command": "python benchmarks/memory_attention_onnx_fused.py " + " ".join(sys.argv[1:]),
           "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "graphs": graphs, "rows": rows}
    if args.json:
        args.json.write_text(json.dumps(doc, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
