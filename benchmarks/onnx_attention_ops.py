"""Which ONNX Runtime attention op is fused on CPU: one memory-attention cross-attention core
(queries x keys logits, per-key bias) as four single-purpose ONNX graphs, timed alternated in
one process, plus each graph's extra peak memory in a fresh process (the logits tensor, when
materialised, is queries x keys x 4 bytes).

    python benchmarks/onnx_attention_ops.py --queries 1024 --keys 7232 --threads 2,1 --reps 7 \
        --json benchmarks/results/onnx_attention_ops_ti512.json

plain: Mul-MatMul-Add-Softmax-MatMul (what the default ONNX export runs). mha_fold:
com.microsoft::MultiHeadAttention, bias folded into an extra key column (export/onnx.py
fused_sdpa). mha_bias: the same op with the bias as its attention_bias input (1, 1, q, k).
attention23: the standard ONNX Attention op (opset 23) with a float attn_mask (1, 1, q, k)
(ONNX Runtime 1.32 wants the mask's query axis full, not broadcast).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

VARIANTS = ("plain", "mha_fold", "mha_bias", "attention23")


def build(variant: str, n: int, m: int, d: int, dv: int, seed: int = 0):
    """(ONNX model bytes, feeds) of one form; all compute softmax(q k^T * d^-0.5 + bias) v."""
    from onnx import TensorProto as T
    from onnx import helper as h

    rng = np.random.default_rng(seed)
    s = float(1 / np.sqrt(d))
    # float32 straight away: no large temporaries, so the peak RSS before a call is its current RSS
    q, k = rng.standard_normal((1, n, d), dtype=np.float32), rng.standard_normal((1, m, d), dtype=np.float32)
    v = rng.standard_normal((1, m, dv), dtype=np.float32)
    bias = np.where(np.arange(m) % 8 == 7, -1e4, 0.0).astype(np.float32)  # masked slots

    def vi(name, arr):
        return h.make_tensor_value_info(name, T.FLOAT, list(arr.shape))

    inits, opsets = [], [("", 20)]
    if variant == "plain":
        feeds = {"q": q, "k": k, "v": v, "b": bias}
        inits = [h.make_tensor("sc", T.FLOAT, [], [s])]
        nodes = [h.make_node("Mul", ["q", "sc"], ["qs"]), h.make_node("Transpose", ["k"], ["kt"], perm=[0, 2, 1]),
                 h.make_node("MatMul", ["qs", "kt"], ["l"]), h.make_node("Add", ["l", "b"], ["lb"]),
                 h.make_node("Softmax", ["lb"], ["p"], axis=-1), h.make_node("MatMul", ["p", "v"], ["y"])]
    elif variant == "mha_fold":
        feeds = {"q": np.concatenate([q, np.ones((1, n, 1), np.float32)], -1),
                 "k": np.concatenate([k, (bias / s).reshape(1, m, 1).astype(np.float32)], -1), "v": v}
        nodes = [h.make_node("MultiHeadAttention", ["q", "k", "v"], ["y"], domain="com.microsoft", num_heads=1, scale=s)]
        opsets.append(("com.microsoft", 1))
    elif variant == "mha_bias":
        feeds = {"q": q, "k": k, "v": v, "b": np.ascontiguousarray(np.broadcast_to(bias, (1, 1, n, m)))}
        nodes = [h.make_node("MultiHeadAttention", ["q", "k", "v", "", "", "b"], ["y"], domain="com.microsoft",
                             num_heads=1, scale=s)]
        opsets.append(("com.microsoft", 1))
    else:
        feeds = {"q": q[None], "k": k[None], "v": v[None], "b": np.ascontiguousarray(np.broadcast_to(bias, (1, 1, n, m)))}
        nodes = [h.make_node("Attention", ["q", "k", "v", "b"], ["y"], scale=s)]
        opsets = [("", 23)]
    graph = h.make_graph(nodes, variant, [vi(name, a) for name, a in feeds.items()],
                         [h.make_tensor_value_info("y", T.FLOAT, None)], initializer=inits)
    model = h.make_model(graph, opset_imports=[h.make_opsetid(dom, ver) for dom, ver in opsets])
    model.ir_version = 10
    return model.SerializeToString(), feeds


def session(model: bytes, threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    opts.enable_cpu_mem_arena = False  # so peak RSS shows what one call allocates
    return ort.InferenceSession(model, sess_options=opts, providers=["CPUExecutionProvider"])


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def call_peak_mib(variant: str, n: int, m: int, d: int, dv: int) -> float:
    """Peak RSS above the RSS before one call (Linux: VmHWM reset through /proc/self/clear_refs)."""
    model, feeds = build(variant, n, m, d, dv)
    sess = session(model, 1)
    before = _status_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # resets the high-water mark to the current RSS
    sess.run(None, feeds)
    return round((_status_kib("VmHWM") - before) / 1024, 1)


def extra_peak_mib(variant: str, n: int, m: int, d: int, dv: int) -> float:
    """call_peak_mib in a fresh process (freed buffers of other variants would hide the peak)."""
    code = ("import sys; sys.path.insert(0, %r); import onnx_attention_ops as b; "
            "print(b.call_peak_mib(%r, %d, %d, %d, %d))") % (str(Path(__file__).resolve().parent), variant, n, m, d, dv)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--queries", type=int, default=1024)
    ap.add_argument("--keys", type=int, default=7232, help="7 memories x 1024 tokens + 16 pointers x 4 (ti_512, 7x16)")
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--value-dim", type=int, default=64, help="the export form's 64-d values (v_proj after attention)")
    ap.add_argument("--threads", default="2,1")
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    import onnxruntime

    n, m, d, dv = args.queries, args.keys, args.dim, args.value_dim
    built = {v: build(v, n, m, d, dv) for v in VARIANTS}
    ref = session(built["plain"][0], 1).run(None, built["plain"][1])[0]
    doc = {"shape": {"queries": n, "keys": m, "dim": d, "value_dim": dv}, "onnxruntime": onnxruntime.__version__,
           "label": "loaded machine (shared 2-core VM): compare ratios only",
           "logits_mib": round(n * m * 4 / 2**20, 1),
           "extra_peak_mib_1_thread": {v: extra_peak_mib(v, n, m, d, dv) for v in VARIANTS},
           "max_abs_diff_vs_plain": {}, "rows": [],
           "command": "python benchmarks/onnx_attention_ops.py " + " ".join(sys.argv[1:]),
           "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    print(json.dumps({k: doc[k] for k in ("logits_mib", "extra_peak_mib_1_thread")}), flush=True)
    for t in [int(x) for x in args.threads.split(",")]:
        sessions = {v: session(mo, t) for v, (mo, _) in built.items()}
        for v, s in sessions.items():  # warm-up and parity
            doc["max_abs_diff_vs_plain"][v] = float(np.abs(s.run(None, built[v][1])[0].reshape(ref.shape) - ref).max())
        times = {v: [] for v in VARIANTS}
        for _ in range(args.reps):
            for v, s in sessions.items():
                t0 = time.perf_counter()
                s.run(None, built[v][1])
                times[v].append((time.perf_counter() - t0) * 1e3)
        row = {"threads": t, "median_ms": {v: round(float(np.median(x)), 1) for v, x in times.items()},
               "min_ms": {v: round(float(np.min(x)), 1) for v, x in times.items()}}
        row["ratio_to_plain_median"] = {v: round(row["median_ms"][v] / row["median_ms"]["plain"], 3) for v in VARIANTS}
        doc["rows"].append(row)
        print(json.dumps(row), flush=True)
    if args.json:
        args.json.write_text(json.dumps(doc, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
