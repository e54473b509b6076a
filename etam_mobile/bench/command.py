"""`etam-mobile bench`: arguments, the whole run, outputs."""
from __future__ import annotations

import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ..argtypes import non_negative_int, positive_int
from ..contracts import STAGES
from .analysis import _mask_agreement, analyse
from .artifacts import _delegation, _eager_param_bytes, artifact_sizes, ensure_artifacts
from .common import BENCH_BACKENDS, SCHEMA, SCHEMA_VERSION, BenchError, _log
from .flops import FlopTable
from .machine import machine_info
from .reports import write_outputs
from .running import _run_isolated
from .scaling import exported_scaling, memory_attention_scaling
from . import variants as variant_mod

# ---- the command ------------------------------------------------------------------------

def parse_backends(text: str) -> list:
    names = [b.strip() for b in text.split(",") if b.strip()]
    bad = [b for b in names if b not in BENCH_BACKENDS]
    if bad or not names:
        raise BenchError(f"unknown backend(s) {', '.join(bad) or '(none)'}; choose from {', '.join(BENCH_BACKENDS)}")
    if "coreml" in names and platform.system() != "Darwin":
        raise BenchError("--backends coreml needs macOS (Core ML cannot run predictions on "
                         f"{platform.system()}); leave coreml out here")
    if "eager" in names:  # eager first: it is the reference for ratios and mask agreement
        names.remove("eager")
        names.insert(0, "eager")
    return list(dict.fromkeys(names))


def run_bench(config: str, backends, frames: int = 8, warmup: int = 2, checkpoint=None, seed: int = 0,
              artifacts=None, threads: int | None = None, scaling=("eager", "executorch"), scaling_reps: int = 3,
              scaling_frames: int = 7, quiet: bool = False, isolate: bool = True, measure_machine: bool = True, command: str | None = None,
              variants=None, variant_cache=None) -> dict:
    """The whole benchmark; returns the JSON document (see benchmarks/README.md).

    variants: ExecuTorch variants to run side by side (bench/variants.py); then `artifacts` is a
    list of export folders (or a comma-separated string) whose manifests say their variant, and
    missing variants are exported into `variant_cache`."""
    import torch

    from etam_export.common import example_inputs

    from ..checkpoint import load_model
    from ..configs import get_config
    from ..contracts import Capacities
    from ..demo import make_clip

    backends = parse_backends(backends) if isinstance(backends, str) else list(backends)
    variants = variant_mod.parse_variants(variants) if variants else []
    given = []
    if variants:
        # the ExecuTorch backend runs once per variant; eager is the reference of every comparison
        backends = ["eager"] + [b for b in backends if b not in ("eager", "executorch")]
        given = [p for p in (artifacts.split(",") if isinstance(artifacts, str) else artifacts or []) if str(p).strip()]
    if frames < 2:
        raise BenchError("--frames must be at least 2 (frame 0 is the prompted frame; the rest are tracked)")
    try:
        cfg = get_config(config)
    except ValueError as exc:
        raise BenchError(str(exc)) from None
    if threads:
        torch.set_num_threads(threads)
        try:  # the scaling table runs ExecuTorch in this process
            from executorch.extension.pybindings import portable_lib

            portable_lib._unsafe_reset_threadpool(threads)
        except Exception:
            pass
    t_all = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="etam-bench-"))
    try:
        model, weights = load_model(cfg, checkpoint, seed=seed, quiet=quiet)
        model.weights_info = weights
        needed = list(backends) + (["executorch"] if "executorch" in (scaling or ()) else [])
        folders = {}
        if variants:
            folders = variant_mod.variant_folders(model, weights, variants, given, variant_cache, seed, checkpoint,
                                                  "onnx" in backends, quiet)
            rest = list(dict.fromkeys(b for b in needed if b != "eager"))  # onnx, executorch-before, scaling
            folder = (folders.get("fp32") or ensure_artifacts(model, None, rest, quiet, work)) if rest else None
        else:
            folder = ensure_artifacts(model, Path(artifacts) if artifacts else None, list(dict.fromkeys(needed)),
                                      quiet, work)
        machine = machine_info(quiet, measure=measure_machine, threads=threads)  # after the folders: bad ones fail fast
        peak = machine.get("matmul_fp32_gflops")
        prompts = make_clip(work / "clip", frames)["prompts"]
        examples = example_inputs(cfg, Capacities(), model.stages())
        flop_tables = {form: FlopTable(model, examples, for_export=form == "export") for form in ("eager", "export")}
        results, logits = [], {}
        runs = [(b, None, folder) for b in backends] + [("executorch", v, folders[v]) for v in variants]
        psnr_inputs = None
        if variants:
            psnr_inputs = variant_mod.stage_inputs(model)
            variant_mod.save_stage_inputs(psnr_inputs, work / "stage_inputs.npz")
        for b, v, where in runs:
            label = b if v is None else f"{b} {v}"
            key = label.replace(" ", "_")
            _log(quiet, f"bench: {label}: warm-up {warmup} frame(s), then {frames} timed frames ...")
            job = {"backend": b, "config": cfg.name, "checkpoint": str(checkpoint) if checkpoint else None, "seed": seed,
                   "artifacts": str(where) if where else None, "threads": threads, "clip": str(work / "clip"),
                   "prompts": prompts, "image_size": cfg.image_size, "warmup": warmup,
                   "logits_out": str(work / f"logits_{key}.npy"), "variant": v}
            if v is not None:
                job["stage_inputs"] = str(work / f"stage_inputs_{key}.npz")
                shutil.copyfile(work / "stage_inputs.npz", job["stage_inputs"])
            raw = _run_isolated(job, isolate)
            sizes = _eager_param_bytes(model) if b == "eager" else artifact_sizes(where, raw["target"])
            res = analyse(raw, flop_tables["eager" if b == "eager" else "export"], peak, sizes)
            if b == "eager":
                res["artifact_note"] = "eager: bytes of the stage's parameters and buffers (fp32), no file"
            if v is not None:
                res["variant"], res["precision"], res["label"] = v, v, label
                res["variant_record"] = variant_mod.variant_record(where)
                res["stage_psnr_vs_eager_fp32"] = variant_mod.stage_psnr(
                    model, psnr_inputs, Path(job["stage_inputs"].replace(".npz", ".out.npz")))
            logits[label] = np.load(job["logits_out"])
            results.append(res)
            _log(quiet, f"bench: {label}: frame median {res['frame_ms']['median']:.1f} ms, p90 {res['frame_ms']['p90']:.1f} ms, "
                        f"peak RSS {res['memory']['peak_rss_mb']:.0f} MiB")
        ref = "eager" if "eager" in logits else None
        for res in results:
            if ref and res.get("label", res["backend"]) != ref:
                res["agreement_vs_eager_fp32"] = _mask_agreement(logits[ref], logits[res.get("label", res["backend"])])
                if results[0]["frame_ms"]["median"]:
                    res["frame_time_vs_eager"] = round(res["frame_ms"]["median"] / results[0]["frame_ms"]["median"], 3)
        exp = flop_tables["export"]
        full = {s: round(exp.flops(s, [a.shape for a in exp.examples[s]]) / 1e9, 4) for s in STAGES}
        doc = {
            "schema": SCHEMA, "version": SCHEMA_VERSION, "command": command,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "config": cfg.name, "image_size": cfg.image_size, "cross_attn": cfg.cross_attn,
            "weights": weights, "frames": frames, "warmup_frames": warmup,
            "clip": {"source": "etam_mobile.demo.make_clip", "size": [320, 240], "objects": len({p["id"] for p in prompts}),
                     "prompts": prompts},
            "isolated_processes": isolate,
            "machine": machine,
            "flops_per_call_gflop": {"note": "counted by torch FlopCounterMode at the manifest input shapes, every "
                                             "memory slot valid (what an exported graph computes); multiply-add = 2",
                                     **full},
            "executorch_delegation": _delegation(folder),
            "results": results,
            "precision_variants": _precision_note(backends, variants),
        }
        if variants:
            doc["variants"] = variant_mod.compare(results)
        if scaling:
            _log(quiet, "bench: memory-attention scaling over 1..7 memory frames ...")
            if "eager" in scaling:
                doc["memory_attention_scaling"] = memory_attention_scaling(
                    cfg, ("eager",), max_frames=scaling_frames, reps=scaling_reps, seed=seed, quiet=quiet, workdir=work)
            if "executorch" in scaling and folder is not None:
                _log(quiet, "bench: exported memory attention over 1..8 valid slots, before / after ...")
                doc["memory_attention_exported"] = exported_scaling(
                    model, folder, Capacities().memory_slots(cfg), reps=scaling_reps, seed=seed, quiet=quiet,
                    workdir=work)
        doc["wall_s"] = round(time.perf_counter() - t_all, 1)
        return doc
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _precision_note(backends, variants=()) -> dict:
    mac = platform.system() == "Darwin"
    return {
        "fp16": ("measured in the coreml result" if (mac and "coreml" in backends) else
                 "skipped: the exporter's fp16 path is Core ML only (coreml, executorch-coreml targets) and Core ML "
                 f"cannot run predictions on {platform.system()}; the export's fp16 emulation PSNR per stage is in "
                 "the manifest's export_report, and on-device numbers come from the iOS app "
                 "(benchmarks/device_results/)"),
        "compressed": variant_mod.note(list(variants)),
        "fp32_agreement": "every exported backend is compared with eager fp32 on the same run "
                          "(results[].agreement_vs_eager_fp32)",
    }



def cmd_bench(args) -> int:
    try:
        return _cmd_bench(args)
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _cmd_bench(args) -> int:
    backends = parse_backends(args.backends)
    if args.backend != "eager":
        raise BenchError("bench takes --backends (comma-separated), not --backend")
    if not args.config:
        raise BenchError("--config is required (e.g. --config efficienttam_ti_512x512)")
    if not (args.json or args.markdown or args.plot):
        raise BenchError("give at least one of --json, --markdown, --plot")
    scaling = () if args.scaling == "none" else tuple(parse_backends(args.scaling))
    if any(b not in ("eager", "executorch") for b in scaling):
        raise BenchError("--scaling takes eager and/or executorch (or none)")
    command = "etam-mobile " + " ".join(a if " " not in a else repr(a) for a in sys.argv[1:]) if sys.argv else None
    variants = variant_mod.parse_variants(args.variants) if args.variants else None
    if args.artifacts and "," in args.artifacts and not variants:
        raise BenchError("several --artifacts folders need --variants (one folder per variant)")
    doc = run_bench(args.config, backends, frames=args.frames, warmup=args.warmup, checkpoint=args.checkpoint,
                    seed=args.seed, artifacts=args.artifacts, threads=args.threads, scaling=scaling,
                    scaling_reps=args.scaling_reps, quiet=args.quiet, isolate=not args.in_process, command=command,
                    variants=variants, variant_cache=args.variant_cache)
    write_outputs(doc, args.json, args.markdown, args.plot, quiet=args.quiet)
    for r in doc["results"]:
        ratio = f" ({r['frame_time_vs_eager']:.2f}x eager)" if "frame_time_vs_eager" in r else ""
        print(f"{r.get('label', r['backend']):18s} frame median {r['frame_ms']['median']:8.1f} ms  "
              f"p90 {r['frame_ms']['p90']:8.1f} ms{ratio}")
    return 0


def register(sub, add_model_args) -> None:
    """Add the `bench` sub-command (called by etam_mobile.cli.make_parser)."""
    p = sub.add_parser("bench", help="per-stage / per-frame benchmark of eager and exported backends")
    add_model_args(p)
    p.add_argument("--backends", default="eager,executorch,onnx",
                   help=f"comma-separated, from {', '.join(BENCH_BACKENDS)} (default eager,executorch,onnx)")
    p.add_argument("--frames", type=positive_int, default=8, help="clip length; frame 0 is prompted, the rest tracked (default 8)")
    p.add_argument("--warmup", type=non_negative_int, default=2, help="frames tracked once before timing, not counted (default 2)")
    p.add_argument("--scaling", default="eager,executorch",
                   help="backends for the memory-attention scaling table (eager, executorch) or 'none'")
    p.add_argument("--scaling-reps", type=positive_int, default=3, help="timed calls per scaling point (default 3)")
    p.add_argument("--in-process", action="store_true",
                   help="run every backend in this process (faster; peak RSS is then not per backend)")
    p.add_argument("--variants", help="ExecuTorch variants side by side, from fp32,int8,int8-4w: each runs from an "
                                      "--artifacts folder whose manifest names it (comma-separated folders), else "
                                      "it is exported into --variant-cache")
    p.add_argument("--variant-cache", help="folder of the variants the bench exports (default "
                                           "$XDG_CACHE_HOME/etam-mobile/bench-variants); reused when the manifest matches")
    p.add_argument("--json", help="write the results JSON here")
    p.add_argument("--markdown", help="write Markdown tables here")
    p.add_argument("--plot", help="write a PNG plot here (needs matplotlib)")
    p.set_defaults(func=cmd_bench)


