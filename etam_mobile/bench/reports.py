"""Markdown tables and the JSON / Markdown / PNG outputs of one benchmark document."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from ..contracts import STAGES
from .common import CROSS_ATTN_VARIANTS, _log
from .plots import plot

# ---- reports ----------------------------------------------------------------------------

def _f(v, fmt="{:.1f}", none="–"):
    return none if v is None else fmt.format(v)


def _stage_table_rows(doc: dict) -> list:
    """One row per run (this machine's backends), columns: stage medians, frame median / p90."""
    rows = []
    for r in doc["results"]:
        rows.append({"where": "this machine", "backend": r.get("label", r["backend"]), "units": "CPU", "precision": r.get("precision", "fp32"),
                     "config": doc["config"], "stages": {s: v.get("median_ms") for s, v in r["stages"].items()},
                     "frame": r["frame_ms"]})
    return rows


def timing_table(rows: list) -> str:
    """The table device results are merged into (one row per run)."""
    head = ["where", "config", "backend", "compute units", "precision", *STAGES, "frame median", "frame p90"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["where"], r["config"], r["backend"], r["units"], r["precision"],
                 *[_f(r["stages"].get(s)) for s in STAGES], _f(r["frame"].get("median")), _f(r["frame"].get("p90"))]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def render_markdown(doc: dict, device_rows: list | None = None) -> str:
    m = doc["machine"]
    peak = m.get("matmul_fp32_gflops")
    out = [f"# Benchmark: {doc['config']} ({doc['image_size']}x{doc['image_size']}, memory cross-attention "
           f"{doc['cross_attn']})", ""]
    if doc.get("command"):
        out += ["Command:", "", "```", doc["command"], "```", ""]
    w = doc.get("weights", {})
    out += [f"Machine: {m.get('cpu')} ({m.get('logical_cpus')} logical CPUs, torch threads {m.get('torch_threads')}), "
            f"{m.get('platform')}; load average at start {m.get('load_average', '?')}.",
            (f"Measured fp32 matmul throughput (torch.matmul, square fp32): "
             f"{m['matmul_fp32']['all_threads']['gflops']} GFLOP/s with {m['matmul_fp32']['all_threads']['threads']} "
             f"threads, {m['matmul_fp32']['one_thread']['gflops']} GFLOP/s on one thread; the limit used below is "
             f"**{_f(peak)} GFLOP/s** ({m.get('matmul_fp32_reference', '')})." if m.get("matmul_fp32") else
             "fp32 matmul throughput not measured."),
            "Threads per backend: " + ", ".join(f"{r.get('label', r['backend'])} {r.get('runtime_threads')}"
                                                for r in doc["results"]) + ".",
            f"Clip: {doc['frames']} frames ({doc['clip']['objects']} objects prompted on frame 0), "
            f"{doc['warmup_frames']} warm-up frame(s) not counted; per-frame numbers are over the "
            f"{doc['frames'] - 1} tracked frames. Weights: "
            + ("synthetic (seed {})".format(w["synthetic_seed"]) if "synthetic_seed" in w else str(w.get("checkpoint"))) + ".",
            ""]
    out += ["## Per stage and per frame (median ms)", "", timing_table(_stage_table_rows(doc) + list(device_rows or [])), ""]
    out += ["Stage times are per call (a tracked frame of two objects makes 1 image-encoder call and 2 calls of "
            "each other stage).", ""]
    head = ["backend", "frame median", "frame p90", "vs eager", "peak RSS MiB", "artifacts MiB", "mask IoU vs eager",
            "logits PSNR dB"]
    out += ["## Backends", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in doc["results"]:
        a = r.get("agreement_vs_eager_fp32", {})
        out.append("| " + " | ".join([
            r.get("label", r["backend"]), _f(r["frame_ms"]["median"]), _f(r["frame_ms"]["p90"]), _f(r.get("frame_time_vs_eager"), "{:.2f}x"),
            _f(r["memory"]["peak_rss_mb"], "{:.0f}"), _f((r.get("artifact_bytes_total") or 0) / 2**20, "{:.1f}"),
            _f(a.get("mask_iou_mean"), "{:.4f}") + (f" (min {a['mask_iou_min']:.4f})" if a else ""),
            _f(a.get("logits_psnr_db"), "{:.1f}")]) + " |")
    out += ["", "## FLOPs and throughput per stage", ""]
    head = ["backend", "stage", "median ms", "p90 ms", "GFLOP/call", "GFLOP/s", "of matmul peak", "artifact MiB"]
    out += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in doc["results"]:
        for s, v in r["stages"].items():
            out.append("| " + " | ".join([
                r.get("label", r["backend"]), s, _f(v["median_ms"]), _f(v["p90_ms"]), _f(v["gflop"], "{:.2f}"),
                _f(v["achieved_gflops"]), _f(None if v["fraction_of_matmul_peak"] is None
                                             else 100 * v["fraction_of_matmul_peak"], "{:.0f} %"),
                _f(None if v.get("artifact_bytes") is None else v["artifact_bytes"] / 2**20, "{:.1f}")]) + " |")
    out += ["", "GFLOP/call is the mean over the timed calls (eager trims unused memory slots, so its memory "
            "attention costs what the filled slots cost; exported graphs compute the smallest slot bucket that holds them, "
            "executorch-before every slot). "
            "Full-bank GFLOP per call: " + ", ".join(f"{s} {doc['flops_per_call_gflop'][s]:.2f}" for s in STAGES) + ".", ""]
    sc = doc.get("memory_attention_scaling")
    if sc:
        out += ["## Memory attention vs number of memory frames", "",
                f"One call of the memory attention ({sc['config']}, {sc['feat_size']}x{sc['feat_size']} tokens per frame, "
                f"{sc['object_pointers']}), median ms; GFLOP counted.", ""]
        backends = sc["backends"]
        head = ["frames"] + [f"{v} {b}" for v in CROSS_ATTN_VARIANTS for b in backends] + [f"{v} GFLOP" for v in CROSS_ATTN_VARIANTS]
        out += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        by = {(r["cross_attn"], r["memory_frames"]): r for r in sc["rows"]}
        for n in sorted({r["memory_frames"] for r in sc["rows"]}):
            cells = [str(n)]
            cells += [_f(by.get((v, n), {}).get(f"{b}_ms")) for v in CROSS_ATTN_VARIANTS for b in backends]
            cells += [_f(by.get((v, n), {}).get("gflop"), "{:.2f}") for v in CROSS_ATTN_VARIANTS]
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
    ex = doc.get("memory_attention_exported")
    if ex:
        out += ["## Exported memory attention vs valid memory slots (before / after, one run)", "",
                f"One call ({ex['config']}, {ex['object_pointers']}), median ms, calls alternated. Before: "
                f"{ex['before']}. After: {ex['after']}. Eager runs exactly the valid slots.", "",
                "| valid slots | eager | ExecuTorch before | ExecuTorch after | bucket | after / eager | before / eager "
                "| GFLOP eager | GFLOP before | GFLOP after |", "|" + "---|" * 10]
        for r in ex["rows"]:
            out.append("| " + " | ".join([
                str(r["valid_slots"]), _f(r.get("eager_ms")), _f(r.get("executorch_before_ms")), _f(r.get("executorch_ms")),
                "x".join(str(v) for v in r["executorch_bucket"]), _f(r.get("executorch_vs_eager"), "{:.2f}x"),
                _f(r.get("executorch_before_vs_eager"), "{:.2f}x"), _f(r.get("eager_gflop"), "{:.2f}"),
                _f(r.get("executorch_before_gflop"), "{:.2f}"), _f(r.get("executorch_gflop"), "{:.2f}")]) + " |")
        out += ["", "GFLOP of the exported graphs are counted on the export form in PyTorch; the fused kernel "
                "additionally multiplies zero-padded value columns (values are padded to the key width).", ""]
    if doc.get("variants"):
        from .variants import markdown as variants_markdown

        out += variants_markdown(doc["variants"])
    out += ["## fp16 and compressed variants", ""]
    for k, v in doc["precision_variants"].items():
        out.append(f"- {k}: {v}")
    out.append("")
    return "\n".join(out)



def write_outputs(doc: dict, json_path=None, md_path=None, png_path=None, quiet: bool = False) -> None:
    for p in (json_path, md_path, png_path):
        if p:
            Path(p).parent.mkdir(parents=True, exist_ok=True)
    if json_path:
        Path(json_path).write_text(json.dumps(doc, indent=1) + "\n")
        _log(quiet, f"bench: wrote {json_path}")
    if md_path:
        Path(md_path).write_text(render_markdown(doc))
        _log(quiet, f"bench: wrote {md_path}")
    if png_path:
        if plot(doc, Path(png_path)):
            _log(quiet, f"bench: wrote {png_path}")
        else:
            print(f"bench: --plot {png_path} skipped: matplotlib is not installed (pip install matplotlib)",
                  file=sys.stderr)


