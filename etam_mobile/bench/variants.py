"""`bench --variants fp32,int8,int8-4w`: ExecuTorch variants side by side in one run.

A variant is an export folder (DESIGN.md): its manifest says which one it is. The bench takes
`--artifacts` folders and reads their variants from the manifests, and exports any variant it
still lacks into a cache folder (reused on the next run when its manifest matches the config,
the weights and the variant). Quantised variants are exported with their gates measured and a
missed gate recorded, not fatal (`allow_failing_gates`): a benchmark reports a failing variant,
it does not hide it. Accuracy is judged against fp32 eager in the same run: mask IoU of the
tracked clip (analysis._mask_agreement) and per-stage PSNR on the exporter's example inputs.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from ..contracts import STAGES
from .common import BenchError, _log

VARIANTS = ("fp32", "int8", "int8-4w")
PSNR_SEED = 7  # example inputs of the per-stage PSNR (not the exporter's own seed)


def parse_variants(text) -> list:
    names = [v.strip() for v in (text.split(",") if isinstance(text, str) else text) if v.strip()]
    bad = [v for v in names if v not in VARIANTS]
    if bad or not names:
        raise BenchError(f"unknown variant(s) {', '.join(bad) or '(none)'}; choose from {', '.join(VARIANTS)} "
                         "(Core ML variants cannot run here: benchmark them on a Mac or with the iOS app)")
    return list(dict.fromkeys(names))


def folder_variant(doc: dict) -> str:
    """The ExecuTorch variant of an export folder, from its manifest (never from its name)."""
    plan = doc.get("variant", {}).get("executorch_plan")
    if plan is None:  # older manifests: every ExecuTorch artifact was fp32
        precs = {doc["stages"][s].get("precision", {}).get("executorch", {}).get("precision", "fp32") for s in STAGES}
        plan = {s: p for s, p in zip(STAGES, sorted(precs))} if precs != {"fp32"} else {s: "fp32" for s in STAGES}
    if all(p == "fp32" for p in plan.values()):
        return "fp32"
    return doc.get("variant", {}).get("name") or "mixed"


def weights_key(checkpoint, seed: int) -> str:
    if checkpoint is None:
        return f"seed{seed}"
    p = Path(checkpoint)
    st = p.stat()
    return "ckpt-" + hashlib.sha256(f"{p.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:12]


def default_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "etam-mobile" / "bench-variants"


def _weights_match(doc: dict, weights: dict) -> bool:
    got = doc.get("weights", {})
    keys = [k for k in ("synthetic_seed", "checkpoint_sha256") if k in weights]
    return bool(keys) and all(got.get(k) == weights[k] for k in keys)


def given_folders(paths, model, weights: dict, variants: list, needs_onnx: bool) -> dict:
    """{variant: folder} of the `--artifacts` folders that hold an export (checked against the run)."""
    from ..manifest import read_manifest

    out = {}
    for p in paths:
        folder = Path(p)
        try:
            doc = read_manifest(folder)
        except ValueError as exc:
            raise BenchError(f"--artifacts: {exc}") from None
        if doc.get("config") != model.cfg.name:
            raise BenchError(f"--artifacts {folder} holds an export of {doc.get('config')}, not {model.cfg.name}; "
                             "pass the matching --config or another folder")
        if not _weights_match(doc, weights):
            raise BenchError(f"--artifacts {folder} was exported from other weights ({doc.get('weights')}) than this "
                             f"run ({weights}); pass the same --checkpoint/--seed or another folder")
        if not any("executorch" in doc["stages"][s].get("artifacts", {}) for s in STAGES):
            raise BenchError(f"--artifacts {folder} has no executorch artifacts; re-export with --targets executorch")
        name = folder_variant(doc)
        if name not in variants:
            raise BenchError(f"--artifacts {folder} holds variant {name}, which --variants does not list; "
                             f"add it (--variants {','.join(variants + [name])}) or leave the folder out")
        if name in out:
            raise BenchError(f"--artifacts {out[name]} and {folder} both hold variant {name}; give one folder per variant")
        out[name] = folder
    if needs_onnx and "fp32" in out:
        doc = read_manifest(out["fp32"])
        if not all("onnx" in doc["stages"][s].get("artifacts", {}) for s in STAGES):
            raise BenchError(f"--artifacts {out['fp32']} (fp32) has no onnx artifacts for --backends onnx; re-export "
                             "with --targets executorch,onnx or leave onnx out of --backends")
    return out


def cached_folder(model, weights: dict, variant: str, cache: Path, seed: int, checkpoint, targets: tuple,
                  quiet: bool) -> Path:
    """The cache folder of one variant: reused when its manifest matches, else exported (gated)."""
    from etam_export import export_model

    from ..manifest import read_manifest

    folder = cache / f"{model.cfg.name}-{weights_key(checkpoint, seed)}-{variant}"
    if folder.is_dir():
        try:
            doc = read_manifest(folder)
            have = {t for s in STAGES for t in doc["stages"][s].get("artifacts", {})}
            if (doc.get("config") == model.cfg.name and _weights_match(doc, weights) and folder_variant(doc) == variant
                    and set(targets) <= have):
                _log(quiet, f"bench: variant {variant}: reusing the cached export {folder}")
                return folder
        except (ValueError, KeyError):
            pass
    _log(quiet, f"bench: variant {variant}: exporting {model.cfg.name} ({', '.join(targets)}) -> {folder} "
                "(cached for the next run)")
    cache.mkdir(parents=True, exist_ok=True)
    export_model(model, folder, targets=targets, precision="fp32", quiet=quiet, force=True, weights_info=weights,
                 quantize="none" if variant == "fp32" else variant, allow_failing_gates=True)
    return folder


def variant_folders(model, weights: dict, variants: list, given: list, cache, seed: int, checkpoint,
                    needs_onnx: bool, quiet: bool) -> dict:
    """{variant: folder}, in --variants order: given folders first, the rest from the cache."""
    have = given_folders(given, model, weights, variants, needs_onnx)
    cache = Path(cache) if cache else default_cache()
    out = {}
    for v in variants:
        if v in have:
            out[v] = have[v]
            continue
        targets = ("executorch", "onnx") if (v == "fp32" and needs_onnx) else ("executorch",)
        out[v] = cached_folder(model, weights, v, cache, seed, checkpoint, targets, quiet)
    return out


def variant_record(folder: Path) -> dict:
    """What the manifest says about the variant: plan, gate status, per-stage precision."""
    from ..manifest import artifact_precision, read_manifest

    doc = read_manifest(folder)
    v = doc.get("variant", {})
    tracking = v.get("tracking_gate") or {}
    return {
        "folder": str(folder), "name": folder_variant(doc),
        "executorch_plan": v.get("executorch_plan") or {s: "fp32" for s in STAGES},
        "gate_status": v.get("status", "not gated"),
        "export_tracking_gate": {k: {"mean_iou": c.get("mean_iou"), "min_iou": c.get("min_iou"), "ok": c.get("ok")}
                                 for k, c in tracking.get("cases", {}).items()} or None,
        "failures": v.get("failures", []),
        "stage_precision": {s: artifact_precision(doc, s, "executorch").get("precision") for s in STAGES},
    }


# ---- per-stage PSNR vs fp32 eager (worker side and main side) ----------------------------

def stage_inputs(model) -> dict:
    """The example inputs the per-stage PSNR is measured on (every memory slot valid)."""
    from etam_export.common import example_inputs

    from ..contracts import Capacities

    return example_inputs(model.cfg, Capacities(), model.stages(), seed=PSNR_SEED)


def run_stage_inputs(backend, path: Path) -> None:
    """Worker: run every stage once on the saved inputs; outputs written beside them."""
    data = np.load(path)
    out = {}
    for stage in STAGES:
        n = sum(1 for k in data.files if k.startswith(f"{stage}/in"))
        got = backend.run(stage, [data[f"{stage}/in{i}"] for i in range(n)])
        out.update({f"{stage}/out{i}": np.asarray(g) for i, g in enumerate(got)})
    np.savez(str(path).replace(".npz", ".out.npz"), **out)


def save_stage_inputs(inputs: dict, path: Path) -> None:
    np.savez(path, **{f"{s}/in{i}": np.asarray(a) for s in STAGES for i, a in enumerate(inputs[s])})


def stage_psnr(model, inputs: dict, out_path: Path) -> dict:
    """{stage: min PSNR (dB) over its outputs} of a variant's outputs vs the fp32 eager stage."""
    from etam_export.common import run_eager
    from etam_export.gates import psnr

    got = np.load(out_path)
    res = {}
    for stage in STAGES:
        ref = run_eager(model.stages()[stage].eval(), inputs[stage])
        res[stage] = min(psnr(r, got[f"{stage}/out{i}"].reshape(np.shape(r))) for i, r in enumerate(ref))
    return res


# ---- the comparison table ----------------------------------------------------------------

def compare(results: list) -> dict:
    """Ratios of every ExecuTorch variant to the fp32 one (size, frame time, stage times) and to eager."""
    by = {r["variant"]: r for r in results if r.get("variant")}
    base = by.get("fp32")
    eager = next((r for r in results if r["backend"] == "eager"), None)
    rows = []
    for name, r in by.items():
        row = {"variant": name, "frame_ms": r["frame_ms"]["median"], "artifact_bytes": r.get("artifact_bytes_total"),
               "stage_bytes": {s: v.get("artifact_bytes") for s, v in r["stages"].items()},
               "stage_ms": {s: v.get("median_ms") for s, v in r["stages"].items()},
               "peak_rss_mb": r["memory"]["peak_rss_mb"], "gate_status": r["variant_record"]["gate_status"],
               "executorch_plan": r["variant_record"]["executorch_plan"],
               "mask_iou_mean": r.get("agreement_vs_eager_fp32", {}).get("mask_iou_mean"),
               "mask_iou_min": r.get("agreement_vs_eager_fp32", {}).get("mask_iou_min"),
               "stage_psnr_db": r.get("stage_psnr_vs_eager_fp32")}
        if eager and eager["frame_ms"]["median"]:
            row["frame_vs_eager"] = round(r["frame_ms"]["median"] / eager["frame_ms"]["median"], 3)
        if base is not None:
            if base.get("artifact_bytes_total") and r.get("artifact_bytes_total"):
                row["size_vs_fp32"] = round(r["artifact_bytes_total"] / base["artifact_bytes_total"], 3)
            row["stage_size_vs_fp32"] = {s: round(b / base["stages"][s]["artifact_bytes"], 3)
                                         for s, b in row["stage_bytes"].items()
                                         if b and base["stages"].get(s, {}).get("artifact_bytes")}
            row["frame_vs_fp32"] = round(r["frame_ms"]["median"] / base["frame_ms"]["median"], 3)
            row["stage_time_vs_fp32"] = {s: round(m / base["stages"][s]["median_ms"], 3)
                                         for s, m in row["stage_ms"].items()
                                         if m and base["stages"].get(s, {}).get("median_ms")}
        rows.append(row)
    return {"reference": "eager fp32 (same run) for accuracy and frame time; the fp32 ExecuTorch variant for the "
                         "size and time ratios", "rows": rows}


def _f(v, fmt="{:.2f}"):
    return "–" if v is None else fmt.format(v)


def markdown(comparison: dict) -> list:
    rows = comparison["rows"]
    out = ["## ExecuTorch variants side by side", "",
           "Same clip, same run. Mask IoU: every tracked frame and object vs eager fp32; stage PSNR: each stage on "
           "the exporter's example inputs (every slot valid) vs the eager fp32 stage; gates: the export-time gates "
           "recorded in the variant's manifest.", "",
           "| variant | plan | gates | artifacts MiB | vs fp32 | frame median ms | vs fp32 | vs eager | peak RSS MiB "
           "| mask IoU mean (min) | stage PSNR dB (ie/ma/md/me) |", "|" + "---|" * 11]
    for r in rows:
        plan = "/".join(r["executorch_plan"][s] for s in STAGES)
        psnr = "/".join(_f((r["stage_psnr_db"] or {}).get(s), "{:.1f}") for s in STAGES)
        out.append("| " + " | ".join([
            r["variant"], plan, r["gate_status"], _f((r["artifact_bytes"] or 0) / 2**20, "{:.2f}"),
            _f(r.get("size_vs_fp32"), "{:.3f}x"), _f(r["frame_ms"], "{:.1f}"), _f(r.get("frame_vs_fp32"), "{:.2f}x"),
            _f(r.get("frame_vs_eager"), "{:.2f}x"), _f(r["peak_rss_mb"], "{:.0f}"),
            f"{_f(r['mask_iou_mean'], '{:.4f}')} ({_f(r['mask_iou_min'], '{:.4f}')})", psnr]) + " |")
    out += ["", "| variant | stage | artifact MiB | size vs fp32 | median ms | time vs fp32 |", "|" + "---|" * 6]
    for r in rows:
        for s in STAGES:
            out.append("| " + " | ".join([
                r["variant"], s, _f((r["stage_bytes"].get(s) or 0) / 2**20, "{:.2f}"),
                _f(r.get("stage_size_vs_fp32", {}).get(s), "{:.3f}x"), _f(r["stage_ms"].get(s), "{:.1f}"),
                _f(r.get("stage_time_vs_fp32", {}).get(s), "{:.2f}x")]) + " |")
    out.append("")
    return out


def note(variants: list) -> str:
    return (f"measured side by side: ExecuTorch variants {', '.join(variants)} (variants table; accuracy vs eager "
            "fp32 in the same run)" if variants else
            "not run: pass --variants fp32,int8,int8-4w to compare the ExecuTorch variants side by side")


__all__ = ["VARIANTS", "compare", "folder_variant", "markdown", "parse_variants", "variant_folders", "variant_record"]

