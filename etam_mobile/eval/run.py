"""`etam-mobile eval` end to end: validate everything, skip verified videos, fan out, report.

Every input is checked before the first task starts (dataset, protocol, backends,
artifacts against the config and weights, the results folder), so bad input costs
nothing and overwrites nothing. Results already in RESULTS_DIR for this exact run and
verified against their checksums are reused; anything else is (re)computed.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
import time
from pathlib import Path

from . import EvalError
from .datasets import load_dataset
from .protocols import require_protocol
from .tasks import Variant, verified

BACKEND_NAMES = ("eager", "executorch", "onnx", "coreml")
RUN_NAME = "run.json"


def _log(quiet, msg):
    if not quiet:
        print(msg, file=sys.stderr, flush=True)


def _file_sha(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def require_platform(backends) -> None:
    """Core ML predictions run only on macOS: refuse `coreml` elsewhere before any work."""
    if "coreml" in backends and platform.system() != "Darwin":
        raise EvalError(f"--backends coreml needs macOS (Core ML cannot run predictions on {platform.system()}); "
                        "run this eval on a Mac, or drop coreml here (eager, executorch and onnx run on any OS; "
                        "the Core ML fp16 plan is only emulated per stage by `etam-mobile export`)")


def make_variants(backends: list, artifacts: list, config, checkpoint, seed, reference) -> tuple:
    """[Variant], the reference label, the config name; every exported folder checked by open_backend."""
    from ..runtime.exported import open_backend

    unknown = [b for b in backends if b not in BACKEND_NAMES]
    if unknown or not backends:
        raise EvalError(f"--backends {','.join(backends)}: unknown backend {unknown[0] if unknown else '(none)'!r}; "
                        f"choose from {', '.join(BACKEND_NAMES)}")
    exported = [b for b in backends if b != "eager"]
    if exported and not artifacts:
        raise EvalError(f"--backends {','.join(exported)} need --artifacts EXPORT_DIR (made by `etam-mobile export`)")
    if config is None and artifacts:
        from ..manifest import read_manifest

        try:
            config = read_manifest(Path(artifacts[0]))["config"]
        except ValueError as exc:
            raise EvalError(str(exc)) from None
    if config is None:
        raise EvalError("--config is required with the eager backend (e.g. --config efficienttam_ti_512x512)")
    from ..configs import get_config

    try:
        get_config(config)
    except ValueError as exc:
        raise EvalError(str(exc)) from None
    variants = []
    if "eager" in backends or reference == "eager":
        variants.append(Variant("eager", "eager", config, None, checkpoint, seed))
    for name in exported:
        for folder in artifacts:
            label = name if len(artifacts) == 1 else f"{name}-{Path(folder).resolve().name}"
            backend = open_backend(name, folder, config=config, checkpoint=checkpoint)  # raises ArtifactError
            made = backend.manifest["weights"].get("synthetic_seed")
            if checkpoint is None and made is not None and made != seed:
                raise EvalError(f"{folder} was exported with synthetic weights seed {made}, but eager runs seed {seed}; "
                                f"pass --seed {made}")
            variants.append(Variant(label, name, config, str(Path(folder).resolve()), checkpoint, seed))
    labels = [v.label for v in variants]
    if len(set(labels)) != len(labels):
        raise EvalError(f"two --artifacts folders have the same name ({labels}); give them distinct folder names")
    if reference not in labels:
        raise EvalError(f"--reference {reference} is not one of the evaluated backends ({', '.join(labels)}); "
                        "pick one of them")
    return variants, config


def _variant_key(v: Variant) -> dict:
    key = {"backend": v.backend}
    if v.artifacts:
        key["manifest_sha256"] = _file_sha(Path(v.artifacts) / "manifest.json")
    return key


def _prepare_out(out: Path, run_key: dict, force: bool, write: bool = True) -> None:
    if out.exists() and not out.is_dir():
        raise EvalError(f"--out {out} exists and is not a folder; choose another path")
    run_file = out / RUN_NAME
    if out.is_dir() and any(out.iterdir()) and not run_file.exists() and not force:
        raise EvalError(f"--out {out} is a non-empty folder that holds no eval results; choose a new folder "
                        "(or --force to write into it)")
    if run_file.exists() and not force:
        try:
            old = json.loads(run_file.read_text())
        except ValueError:
            old = None
        if old != run_key:
            diff = sorted(k for k in run_key if not isinstance(old, dict) or old.get(k) != run_key[k])
            raise EvalError(f"--out {out} holds results of another evaluation (different {', '.join(diff)}); "
                            "use a new --out, or --force to replace them")
    if not write:
        return
    out.mkdir(parents=True, exist_ok=True)
    from .report import write_json_atomic

    write_json_atomic(run_file, run_key)


def run_eval(dataset, out, backends, artifacts=(), config=None, checkpoint=None, seed=0, split=None,
             protocol="mask", reference="eager", ray=False, ray_address=None, workers=None, threads=None,
             markdown_path=None, plot_path=None, force=False, quiet=False) -> tuple:
    """Returns (summary dict, number of missing videos)."""
    require_platform(backends)
    require_protocol(protocol)
    layout, videos = load_dataset(dataset, split)
    variants, config = make_variants(list(backends), list(artifacts or []), config, checkpoint, seed, reference)
    weights = {"checkpoint_sha256": _file_sha(checkpoint)} if checkpoint else {"synthetic_seed": seed}
    out = Path(out)
    run_key = {"dataset": str(Path(dataset).resolve()), "layout": layout, "protocol": protocol, "config": config,
               "weights": weights}
    workers = max(1, int(workers or os.cpu_count() or 1))
    threads = threads or max(1, (os.cpu_count() or 1) // workers)

    _prepare_out(out, run_key, force, write=False)  # a different evaluation in --out: refuse before anything
    docs, skipped = {v.label: {} for v in variants}, 0
    vkeys = {v.label: {**run_key, "variant": _variant_key(v)} for v in variants}
    plan = []
    for video in videos:  # interleave backends per video: the reference of a video lands early
        for v in variants:
            folder = out / v.label / video.name
            doc = verified(folder, vkeys[v.label], video) if folder.is_dir() else None
            if doc is not None:
                docs[v.label][video.name] = doc
                skipped += 1
                continue
            if folder.is_dir() and not force:
                try:
                    old = json.loads((folder / "metrics.json").read_text()).get("key")
                except (OSError, ValueError, AttributeError):
                    old = None
                if old is not None and old != vkeys[v.label]:
                    raise EvalError(f"{folder} holds results made with other artifacts or settings; use a new --out, "
                                    "or --force to redo them")
            plan.append(((v.label, video.name), {"video": video, "variant": v, "protocol": protocol,
                                                 "out": str(out.resolve()), "key": vkeys[v.label]}))
    if ray:  # a missing ray package or an unreachable address fails before anything is written
        from .scheduler import precheck_ray

        precheck_ray(ray_address)
    _prepare_out(out, run_key, force)
    _log(quiet, f"eval: {len(videos)} {layout} video(s) x {len(variants)} backend(s), protocol {protocol}: "
                f"{len(plan)} task(s) to run, {skipped} reused; {workers} worker(s) "
                f"{'on Ray' if ray else 'in local processes'}")
    from ..runtime.progress import Progress

    bar = Progress("eval", len(plan), quiet=quiet)

    def on_done(tid, res):
        bar.update()

    def on_retry(tid, reason):
        _log(quiet, f"eval: {tid[0]}/{tid[1]} failed ({reason}); retrying once")

    t0 = time.perf_counter()
    results, failures, info = {}, {}, {"scheduler": "ray" if ray else "local"}
    if plan:
        used = {tid[0] for tid, _ in plan}
        vs = [v for v in variants if v.label in used]
        if ray:
            from .scheduler import run_ray

            results, failures, info = run_ray(plan, vs, workers, threads, ray_address, on_done, on_retry)
        else:
            from .scheduler import run_local

            results, failures, info = run_local(plan, vs, workers, threads, on_done, on_retry)
    wall = time.perf_counter() - t0
    import shutil

    for v in variants:  # no task runs now: partial folders are leftovers of killed workers
        for old in (out / v.label).glob(".partial-*"):
            shutil.rmtree(old, ignore_errors=True)
    for (label, name), res in results.items():
        docs[label][name] = res
    missing = {v.label: {} for v in variants}
    for (label, name), reason in failures.items():
        missing[label][name] = f"failed twice: {reason}"

    from .parity import compare

    by_name = {v.name: v for v in videos}
    parity = {v.label: {} for v in variants}
    for v in variants:
        for name in docs[v.label]:
            if name in docs[reference]:
                parity[v.label][name] = compare(out / v.label / name, out / reference / name, by_name[name])
    frames = sum(r.get("frames_processed", 0) for r in results.values())
    run_info = {**info, "config": config, "weights": weights, "workers": workers, "threads": threads,
                "skipped": skipped, "throughput": {"frames": frames, "wall_seconds": round(wall, 3),
                                                   "frames_per_second": round(frames / wall, 3) if wall > 0 else 0.0}}
    from .report import build_summary, markdown, plot, write_json_atomic

    summary = build_summary(Path(dataset).resolve(), layout, protocol, reference, variants,
                            [v.name for v in videos], docs, parity, missing, run_info)
    write_json_atomic(out / "summary.json", summary)
    if markdown_path:
        Path(markdown_path).parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(markdown_path).with_name(f".{Path(markdown_path).name}.tmp")
        tmp.write_text(markdown(summary))
        os.replace(tmp, markdown_path)
    if plot_path:
        plot(summary, Path(plot_path))
    n_missing = sum(len(m) for m in missing.values())
    return summary, n_missing
