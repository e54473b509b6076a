"""How close eager and the exported memory attention are to this CPU's matrix-multiply limit.

    python benchmarks/roofline.py --config efficienttam_ti_512x512 --artifacts DIR --threads 2 \
        --reps 5 --json benchmarks/results/roofline_ti512.json

Why: issue 15 asks the exported fp32 memory attention to take <= 0.8x eager's time. The call is
dominated by two GEMMs per layer over ~8k memory tokens, so neither runtime can beat the FLOPs
divided by the machine's fp32 GEMM throughput. This script measures that throughput (torch's
and XNNPACK's GEMM on the attention's own shapes, alternated in one process) and times the
eager stage and the exported slot bucket on the same inputs, then reports each as a fraction of
the bound. If eager already runs near the bound, 0.8x of eager in fp32 is out of reach on any
runtime without removing FLOPs (fewer tokens, lower precision, cached key projections).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np


def _median_ms(fn, reps: int) -> float:
    fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(times))


def _xnnpack_bmm(q_shape, k_shape):
    """An ExecuTorch XNNPACK program of one batched matmul (the logits GEMM of a layer)."""
    import torch
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower
    from executorch.extension.pybindings.portable_lib import _load_for_executorch_from_buffer

    class Bmm(torch.nn.Module):
        def forward(self, a, b):
            return torch.bmm(a, b)

    ep = torch.export.export(Bmm(), (torch.randn(q_shape), torch.randn(k_shape)))
    buffer = to_edge_transform_and_lower(ep, partitioner=[XnnpackPartitioner()]).to_executorch().buffer
    return buffer, _load_for_executorch_from_buffer(buffer)  # the module reads from the buffer: keep both


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="efficienttam_ti_512x512")
    ap.add_argument("--artifacts", type=Path, required=True, help="fp32 ExecuTorch export folder (slot buckets)")
    ap.add_argument("--slots", type=int, default=7, help="valid memory slots")
    ap.add_argument("--pointers", type=int, help="valid object pointers (default: as many as memory slots on the "
                                                  "first frames, 16 from 7 slots on: one per tracked frame)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    import torch
    from bench_setup import full_bank_inputs, set_threads, synthetic_model

    set_threads(args.threads)
    from etam_export import executorch as et_export
    from etam_mobile.bench.flops import count_flops
    from etam_mobile.contracts import choose_slot_bucket
    from etam_mobile.manifest import read_manifest
    from etam_mobile.runtime.backends import EagerBackend

    cfg, model, caps = synthetic_model(args.config)
    doc = read_manifest(args.artifacts)
    K, P = caps.memory_slots(cfg), caps.ptr_slots(cfg)
    n = args.slots
    npt = args.pointers if args.pointers is not None else (n if n < 7 else caps.ptr_slots(cfg) - 1)
    h, C, M = cfg.feat_size, cfg.d_model, cfg.mem_dim
    full = full_bank_inputs(cfg, caps, n, npt)
    st = doc["stages"]["memory_attention"]
    # (file, method) per bucket: format 2 keeps the buckets as methods of memory_attention.pte
    files = {(b["memory_slots"], b["ptr_slots"]): (b["artifacts"]["executorch"],
                                                   b.get("methods", {}).get("executorch", "forward"))
             for b in st.get("slot_buckets", []) if "executorch" in b["artifacts"]}
    files[(K, P)] = (st["artifacts"]["executorch"], "forward")
    buckets = sorted(files)
    k, p = buckets[choose_slot_bucket(buckets, n, npt)]
    name, method_name = files[(k, p)]
    cut = [full[0], full[1][:k], full[2][:k], full[3][:k], full[4][:p], full[5][:p]]
    cut_t = [torch.from_numpy(np.ascontiguousarray(a)) for a in cut]
    program = et_export.load(args.artifacts / name)[1]  # keep it alive: the method points into it
    method = program.load_method(method_name)
    eager = EagerBackend(model, caps)
    trimmed = EagerBackend._trim(EagerBackend._trim(list(full), 3, (1, 2, 3)), 5, (4, 5))
    eager_flops = count_flops(model.stages()["memory_attention"].eval(), trimmed)[0]
    export_flops = count_flops(model.stages(for_export=True)["memory_attention"].eval(), cut)[0]

    nq, nk = h * h, k * h * h + p * (C // M)
    a, b = torch.randn(1, nq, C), torch.randn(1, C, nk)
    _buffer, xnn = _xnnpack_bmm(tuple(a.shape), tuple(b.shape))
    gemm_flops = 2 * nq * nk * C
    fns = {
        "torch_gemm": lambda: torch.bmm(a, b),
        "xnnpack_gemm": lambda: xnn.forward([a, b]),
        "eager_call": lambda: eager.run("memory_attention", full),
        "executorch_call": lambda: method.execute(cut_t),
    }
    times = {key: [] for key in fns}
    with torch.inference_mode():
        for f in fns.values():
            f()
        for _ in range(args.reps):  # alternated: a load change hits all four alike
            for key, f in fns.items():
                times[key].append(_median_ms(f, 1))
    ms = {key: round(float(np.median(v)), 2) for key, v in times.items()}
    peak = max(gemm_flops / ms["torch_gemm"], gemm_flops / ms["xnnpack_gemm"]) / 1e6  # GFLOP/s
    out = {
        "config": cfg.name, "threads": args.threads, "reps": args.reps, "valid_slots": n, "valid_pointers": npt,
        "bucket": [k, p], "method": f"{name}:{method_name}", "gemm_shape": [nq, C, nk],
        "command": "python benchmarks/roofline.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "median_ms": ms,
        "gemm_gflops_per_s": {"torch": round(gemm_flops / ms["torch_gemm"] / 1e6, 1),
                              "xnnpack": round(gemm_flops / ms["xnnpack_gemm"] / 1e6, 1)},
        "call_gflop": {"eager_form": round(eager_flops / 1e9, 2), "export_form": round(export_flops / 1e9, 2)},
        "bound_ms_at_peak": {"eager_form": round(eager_flops / peak / 1e6, 1),
                             "export_form": round(export_flops / peak / 1e6, 1)},
    }
    out["fraction_of_peak"] = {"eager": round(eager_flops / peak / 1e6 / ms["eager_call"], 3),
                               "executorch": round(export_flops / peak / 1e6 / ms["executorch_call"], 3)}
    out["executorch_over_eager"] = round(ms["executorch_call"] / ms["eager_call"], 3)
    print(json.dumps(out, indent=1))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
