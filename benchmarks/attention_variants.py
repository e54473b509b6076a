"""Exact re-formulations of the memory attention's attention core on ExecuTorch (XNNPACK fp32),
timed alternated in one process: the default bmm-softmax-bmm against the same computed for a
block of queries at a time (logits block cache-resident; export/executorch.py
sdpa_query_chunked), with eager's fused SDPA as the yardstick.

    python benchmarks/attention_variants.py --config efficienttam_ti_512x512 --slots 7,16 --chunks 128,256 \
        --threads 1 --reps 5 --json benchmarks/results/attention_variants_ti512.json

Shapes are one cross-attention of the export form: 1024 queries x (slots x 1024 + pointer tokens)
keys, 256-d queries/keys, 64-d values, a per-key bias.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="efficienttam_ti_512x512")
    ap.add_argument("--slots", default="7,16", help="memory,pointer slots (keys = memory x h*w + pointers x 4)")
    ap.add_argument("--chunks", default="128,256", help="query block sizes to try")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--old-mask", action="store_true",
                    help="also time the bmm form with the mask expanded to the logits' shape (before the graph-ops change)")
    args = ap.parse_args(argv)
    import torch
    import torch.nn.functional as F
    from bench_setup import set_threads

    set_threads(args.threads)
    from etam_export import executorch as et_export
    from etam_export.artifact import torch_export
    from etam_mobile.configs import get_config

    cfg = get_config(args.config)
    K, P = (int(x) for x in args.slots.split(","))
    C, M, nq = cfg.d_model, cfg.mem_dim, cfg.feat_size ** 2
    N = K * nq + P * (C // M)
    rng = np.random.default_rng(0)
    bias = np.zeros((1, 1, 1, N), np.float32)
    bias[..., nq:2 * nq] = -1e4  # one masked slot, as in a padded bucket
    inputs = [rng.standard_normal(s).astype(np.float32) for s in ((1, 1, nq, C), (1, 1, N, C), (1, 1, N, M))] + [bias]
    tens = [torch.from_numpy(a) for a in inputs]

    class Core(torch.nn.Module):
        def forward(self, q, k, v, b):
            return F.scaled_dot_product_attention(q, k, v, attn_mask=b)

    core = Core().eval()
    ep = torch_export(core, inputs, "memory_attention")
    work = Path(tempfile.mkdtemp(prefix="attn-variants-"))
    fns = {"eager_sdpa": lambda: core(*tens)}
    outs = {}
    for chunk in [None] + [int(c) for c in args.chunks.split(",") if c]:
        name = "bmm" if chunk is None else f"chunk{chunk}"
        et_export.write(ep, work / f"{name}.pte", "memory_attention", "executorch", "fp32", query_chunk=chunk)
        meth = et_export.load(work / f"{name}.pte")[1].load_method("forward")
        fns[name] = (lambda m: lambda: m.execute(tens))(meth)
        outs[name] = fns[name]()[0].numpy()
        print(f"exported {name}", file=sys.stderr, flush=True)
    if args.old_mask:
        import math

        def old_sdpa(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
            s = scale if scale is not None else 1.0 / math.sqrt(q.shape[-1])
            *batch, n, d = q.shape
            m, dv = k.shape[-2], v.shape[-1]
            logits = torch.bmm((q * s).reshape(-1, n, d), k.reshape(-1, m, d).transpose(1, 2))
            logits = logits + attn_mask.expand(*batch, n, m).reshape(-1, n, m)
            return torch.bmm(torch.softmax(logits, -1), v.reshape(-1, m, dv)).reshape(*batch, n, dv)

        from executorch.exir import to_edge_transform_and_lower
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner

        table = {**et_export.XNNPACK_DECOMPOSITIONS, torch.ops.aten.scaled_dot_product_attention.default: old_sdpa}
        edge = to_edge_transform_and_lower(ep.run_decompositions(table), partitioner=[XnnpackPartitioner()])
        (work / "old_mask.pte").write_bytes(edge.to_executorch().buffer)
        meth = et_export.load(work / "old_mask.pte")[1].load_method("forward")
        fns["bmm_old_mask"] = (lambda m: lambda: m.execute(tens))(meth)
        outs["bmm_old_mask"] = fns["bmm_old_mask"]()[0].numpy()
    ref = outs["bmm"]
    max_diff = {k: float(np.abs(v - ref).max()) for k, v in outs.items()}
    times = {k: [] for k in fns}
    with torch.no_grad():
        for f in fns.values():
            f()
        for _ in range(args.reps):
            for k, f in fns.items():
                t0 = time.perf_counter()
                f()
                times[k].append((time.perf_counter() - t0) * 1e3)
    med = {k: round(float(np.median(v)), 1) for k, v in times.items()}
    doc = {"config": cfg.name, "slots": [K, P], "keys": N, "threads": args.threads, "reps": args.reps,
           "command": "python benchmarks/attention_variants.py " + " ".join(sys.argv[1:]),
           "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "median_ms": med,
           "min_ms": {k: round(float(np.min(v)), 1) for k, v in times.items()},
           "ratio_to_bmm": {k: round(v / med["bmm"], 3) for k, v in med.items()},
           "max_abs_diff_to_bmm": max_diff}
    print(json.dumps(doc, indent=1))
    if args.json:
        args.json.write_text(json.dumps(doc, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
