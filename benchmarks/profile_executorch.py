"""Where an exported (ExecuTorch, XNNPACK fp32) memory-attention call and image-encoder call spend
their time, by timing sub-graphs.

    python benchmarks/profile_executorch.py --config efficienttam_ti_512x512 --slots 7,16 --threads 1 \
        --reps 5 --out benchmarks/results/profile_executorch_ti512.md

Why sub-graphs: the pip ExecuTorch 1.4.1 runtime is built without the event tracer (ETDump: "No
etdump data found, try rebuilding with ... EXECUTORCH_ENABLE_EVENT_TRACER") and without the
profiler (`_dump_profile_results` returns nothing), and XNNPACK per-op profiling needs a source
build. So each piece of one layer (self-attention block, query and key projections with RoPE,
logits bmm, softmax, probabilities x values bmm, v_proj + out_proj, MLP; ViT window/global
attention, MLP, patch embedding, neck) is exported on its own with the stage's decompositions
and partitioner, timed alternated with the whole stage in one process, and multiplied by how
often the stage runs it. The rest (whole - sum of parts) is the glue: front ops, copies between
pieces, hand-offs. Eager (torch) times of the same pieces are listed beside them.
"""
from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="efficienttam_ti_512x512")
    ap.add_argument("--slots", default="7,16", help="memory,pointer slots of the memory-attention graph (a bucket)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    import torch
    import torch.nn.functional as F
    from torch import nn
    from bench_setup import full_bank_inputs, set_threads, synthetic_model

    set_threads(args.threads)
    from etam_export import executorch as et_export
    from etam_export.artifact import torch_export
    from etam_export.buckets import bucket_inputs

    cfg, model, caps = synthetic_model(args.config)
    K, P = (int(x) for x in args.slots.split(","))
    h, C, M = cfg.feat_size, cfg.d_model, cfg.mem_dim
    nq = h * h
    N = K * nq + P * (C // M)
    full = full_bank_inputs(cfg, caps)
    ma_inputs = bucket_inputs(full, K, P)
    stages = model.stages(for_export=True)
    eager_stages = model.stages()
    attn = stages["memory_attention"].attn
    attn.graph_ops = True
    layer = attn.layers[0]
    p = layer.cross_attn_image
    s = 1.0 / math.sqrt(C)
    rng = np.random.default_rng(1)  # sub-graph inputs (the full bank's come from full_bank_inputs)

    def r(*shape):
        return rng.standard_normal(shape).astype(np.float32)

    class Fn(nn.Module):
        def __init__(self, fn):
            super().__init__()
            self.fn = fn

        def forward(self, *xs):
            return self.fn(*xs)

    enc = model.image_encoder.trunk
    win = next(b for b in enc.blocks if b.window > 0)
    glob = next(b for b in enc.blocks[: enc.num_run] if b.window == 0)
    E, heads, g = cfg.embed_dim, cfg.num_heads, h
    n_win = sum(1 for b in enc.blocks[: enc.num_run] if b.window > 0)
    n_glob = enc.num_run - n_win
    L = cfg.mem_attn_layers

    def block_attn(b):
        return lambda x: x + _block_attn(b, x)

    def _block_attn(b, x):
        from etam_mobile.model.image_encoder import window_partition, window_unpartition

        y = b.norm1(x)
        if b.window > 0:
            return window_unpartition(b.attn(window_partition(y, b.window)), b.window, (x.shape[1], x.shape[2]))
        return b.attn(y)

    # name, (times per call), module, inputs
    parts = {
        "memory_attention": [
            ("whole stage", 1, stages["memory_attention"], ma_inputs),
            ("self-attention block (norm, q/k/v, RoPE, 1024x1024 attention, out_proj)", L,
             Fn(lambda x: attn._self_attn(layer, x)), [r(1, nq, C)]),
            ("cross: query (norm2, q_proj, RoPE)", L, Fn(lambda x: attn._rope(p.q_proj(layer.norm2(x)))), [r(1, nq, C)]),
            (f"cross: keys (k_proj + RoPE of {K}x{nq} memory tokens, pointer keys)", L,
             Fn(lambda m, pos, t: (attn._memory_kv(p, m, pos, False)[0], p.k_proj(t))),
             [r(1, K, nq, M), r(1, K, nq, M), r(1, P * C // M, M)]),
            (f"cross: logits bmm (1x{nq}x{C} by {C}x{N}) + slot bias", L,
             Fn(lambda q, k, b: torch.bmm(q * s, k.transpose(1, 2)) + b.reshape(1, 1, N)),
             [r(1, nq, C), r(1, N, C), r(N)]),
            (f"cross: softmax ({nq}x{N})", L, Fn(lambda x: torch.softmax(x, -1)), [r(1, nq, N)]),
            (f"cross: probabilities x values bmm ({nq}x{N} by {N}x{M})", L, Fn(lambda a, v: torch.bmm(a, v)),
             [r(1, nq, N), r(1, N, M)]),
            ("cross: v_proj + out_proj + residual", L, Fn(lambda o, x: x + p.out_proj(p.v_proj(o))), [r(1, nq, M), r(1, nq, C)]),
            ("MLP (norm3, 256-2048-256)", L, Fn(lambda x: attn._mlp(layer, x)), [r(1, nq, C)]),
            (f"(info, not summed) attention core as one SDPA, {M}-d values: ExecuTorch bmm-softmax-bmm vs "
             "eager's fused CPU kernel", 0,
             Fn(lambda q, k, v, b: F.scaled_dot_product_attention(q, k, v, attn_mask=b)),
             [r(1, 1, nq, C), r(1, 1, N, C), r(1, 1, N, M), r(1, 1, 1, N)]),
            (f"(info, not summed) the same with {C}-d values (eager stage's form)", 0,
             Fn(lambda q, k, v, b: F.scaled_dot_product_attention(q, k, v, attn_mask=b)),
             [r(1, 1, nq, C), r(1, 1, N, C), r(1, 1, N, C), r(1, 1, 1, N)]),
        ],
        "image_encoder": [
            ("whole stage", 1, stages["image_encoder"], [r(1, 3, cfg.image_size, cfg.image_size)]),
            ("patch embedding + position", 1, Fn(lambda im: enc.patch_embed(im) + enc.abs_pos()),
             [r(1, 3, cfg.image_size, cfg.image_size)]),
            (f"windowed attention block part (window {cfg.window_size})", n_win, Fn(block_attn(win)), [r(1, g, g, E)]),
            (f"global attention block part ({heads} heads, {nq}x{nq})", n_glob, Fn(block_attn(glob)), [r(1, g, g, E)]),
            (f"MLP block part ({E}-{int(E * cfg.mlp_ratio)}-{E})", enc.num_run,
             Fn(lambda x: x + win.mlp(win.norm2(x))), [r(1, g, g, E)]),
            ("neck (1x1 conv, 3x3 conv, 2 LayerNorm2d)", 1, Fn(lambda x: model.image_encoder.neck(x)), [r(1, E, g, g)]),
        ],
    }
    work = Path(tempfile.mkdtemp(prefix="et-profile-"))
    results = {}
    for stage, items in parts.items():
        fns = {}
        for i, (name, times, module, inputs) in enumerate(items):
            t0 = time.perf_counter()
            module = module.eval()
            ep = torch_export(module, inputs, stage)
            info = et_export.write(ep, work / f"{stage}_{i}.pte", stage, "executorch", "fp32")
            meth = et_export.load(work / f"{stage}_{i}.pte")[1].load_method("forward")
            tens = [torch.from_numpy(np.ascontiguousarray(a)) for a in inputs]
            eager_mod = eager_stages[stage].eval() if name == "whole stage" else module
            fns[name] = ((lambda m, t: lambda: m.execute(t))(meth, tens),
                         (lambda mod, t: lambda: mod(*t))(eager_mod, tens), times, info)
            print(f"[{stage}] exported {name!r} in {time.perf_counter() - t0:.0f} s, "
                  f"delegated {info['delegated_fraction']:.2f}", file=sys.stderr, flush=True)
        et_t = {k: [] for k in fns}
        eg_t = {k: [] for k in fns}
        with torch.no_grad():
            for et_fn, eg_fn, _, _ in fns.values():
                et_fn(), eg_fn()
            for rep in range(args.reps):
                for k, (et_fn, eg_fn, _, _) in fns.items():
                    t0 = time.perf_counter()
                    et_fn()
                    et_t[k].append((time.perf_counter() - t0) * 1e3)
                    t0 = time.perf_counter()
                    eg_fn()
                    eg_t[k].append((time.perf_counter() - t0) * 1e3)
                print(f"[{stage}] rep {rep + 1}/{args.reps}", file=sys.stderr, flush=True)
        results[stage] = [(k, times, float(np.median(et_t[k])), float(np.median(eg_t[k])), info)
                          for k, (_, _, times, info) in fns.items()]
    text = render(args, cfg, K, P, results)
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


def render(args, cfg, K, P, results) -> str:
    lines = [f"# ExecuTorch (XNNPACK fp32) per-part profile: {cfg.name}, memory attention at {K}x{P} slots",
             "",
             f"Command: `python benchmarks/profile_executorch.py {' '.join(sys.argv[1:])}`  ",
             f"Created {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {args.threads} thread(s), "
             f"median of {args.reps} alternated calls. Timings on a shared machine are inflated; read the shares.",
             "",
             "Each part is exported and lowered on its own (same decompositions and partitioner as the stage)",
             "and timed alternated with the whole stage; 'x n' = how often one call runs it. 'rest' = whole minus",
             "the parts: front/back ops, layout copies between parts, delegate hand-offs. The pip runtime has no",
             "ETDump event tracer and no XNNPACK per-op profiling, hence sub-graphs.",
             ""]
    for stage, rows in results.items():
        whole_et, whole_eg = rows[0][2], rows[0][3]
        lines += [f"## {stage}", "",
                  f"Whole call: ExecuTorch {whole_et:.1f} ms, eager {whole_eg:.1f} ms ({whole_et / whole_eg:.2f}x); "
                  f"delegated {rows[0][4]['delegated_fraction'] * 100:.1f} % of nodes, outside: "
                  f"{rows[0][4]['not_delegated_ops'] or 'none'}. (Eager whole = the eager stage on the same padded "
                  "inputs: all slots computed, masked.)", "",
                  "| part | x n | ExecuTorch ms (x n) | share of ExecuTorch call (of the parts' sum) | eager ms (x n) | ExecuTorch / eager |",
                  "|---|---|---|---|---|---|"]
        tot_et = tot_eg = 0.0
        parts_et = sum(r[2] * r[1] for r in rows[1:]) or 1.0  # shares of the parts' sum: steadier under load
        for name, times, et_ms, eg_ms, _ in rows[1:]:
            if not times:
                lines.append(f"| {name} | - | {et_ms:.1f} | - | {eg_ms:.1f} | {et_ms / eg_ms:.2f}x |")
                continue
            tot_et += et_ms * times
            tot_eg += eg_ms * times
            lines.append(f"| {name} | {times} | {et_ms:.1f} ({et_ms * times:.1f}) | {et_ms * times / whole_et * 100:.0f} % "
                         f"({et_ms * times / parts_et * 100:.0f} % of parts) "
                         f"| {eg_ms:.1f} ({eg_ms * times:.1f}) | {et_ms / eg_ms:.2f}x |")
        lines.append(f"| rest (whole - parts) | | {whole_et - tot_et:.1f} | {(whole_et - tot_et) / whole_et * 100:.0f} % "
                     f"| {whole_eg - tot_eg:.1f} | |")
        lines.append("")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
