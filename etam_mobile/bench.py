"""`etam-mobile bench`: per-stage and per-frame speed of every backend on one run.

Every backend tracks the same synthetic clip with the same prompts through the real
`Tracker`; each `backend.run(stage, ...)` call and each tracked frame is timed after a
warm-up session that is not counted. Each backend runs in its own subprocess so its peak
resident memory is its own. FLOPs are counted (torch FlopCounterMode on the eager stage
modules at the exact input shapes of every call), and set against this machine's measured
fp32 matmul throughput. Memory-attention cost is measured against the number of memory
frames (1..7) for plain and both pooled cross-attentions. Results go to JSON, Markdown and
a PNG; `benchmarks/merge_device_results.py` adds on-device numbers to the same tables.
"""
from __future__ import annotations

import json
import math
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from .argtypes import non_negative_int, positive_int
from .contracts import STAGES

SCHEMA = "etam-bench"
SCHEMA_VERSION = 1
BENCH_BACKENDS = ("eager", "executorch", "onnx", "coreml")
CROSS_ATTN_VARIANTS = ("plain", "pool_logits", "pool_keys")
# Mask logits are compared clipped to the range the tracker feeds back (upstream's clamp),
# so "no object" (-1024) frames do not swamp the PSNR.
LOGIT_CLIP = 32.0


class BenchError(ValueError):
    """Bad bench arguments; the message says how to fix them."""


def _log(quiet: bool, msg: str) -> None:
    if not quiet:
        print(msg, file=sys.stderr, flush=True)


# ---- statistics -------------------------------------------------------------------------

def summarize(ms: list) -> dict:
    """median / p90 / mean / min / n of a list of milliseconds (p90 by linear interpolation)."""
    if not ms:
        return {"median": None, "p90": None, "mean": None, "min": None, "n": 0}
    a = np.asarray(ms, np.float64)
    return {"median": round(float(np.median(a)), 3), "p90": round(float(np.percentile(a, 90)), 3),
            "mean": round(float(a.mean()), 3), "min": round(float(a.min()), 3), "n": int(a.size)}


def rss_mb() -> dict:
    """Current (VmRSS) and peak (ru_maxrss) resident memory of this process in MiB."""
    cur = hwm = None
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                cur = int(line.split()[1]) / 1024
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1]) / 1024
    except OSError:
        pass
    if hwm is not None:  # Linux: peak of this process image (ru_maxrss survives fork+exec from the parent)
        peak = hwm
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        peak = peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB elsewhere
    return {"current_mb": None if cur is None else round(cur, 1), "peak_mb": round(peak, 1)}


# ---- FLOPs ------------------------------------------------------------------------------

def _sdpa_cpu_mapping() -> dict:
    """FlopCounterMode counts the CUDA SDPA kernels but not the CPU flash kernel eager uses;
    count it with torch's own SDPA formula (2 matmuls: QK^T and PV)."""
    import torch
    from torch.utils.flop_counter import sdpa_flop_count

    def cpu_flash(q, k, v, *args, out_shape=None, **kwargs):
        return sdpa_flop_count(q, k, v)

    # keyed by op packet, as FlopCounterMode's registry is; SDPA reaches the mode un-decomposed
    ops = {torch.ops.aten.scaled_dot_product_attention: cpu_flash}
    op = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if op is not None:
        ops[op] = cpu_flash
    return ops


def count_flops(module, inputs) -> tuple[int, dict]:
    """(total FLOPs, {module path: FLOPs}) of one call; a multiply-add counts 2.

    Counted: convolutions, (batched) matmuls, linear layers, attention (QK^T, PV).
    Not counted: element-wise ops, softmax, norms (bandwidth-, not compute-bound).
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    tensors = [torch.from_numpy(np.ascontiguousarray(a)) for a in inputs]
    with torch.inference_mode(), FlopCounterMode(display=False, custom_mapping=_sdpa_cpu_mapping()) as fc:
        module(*tensors)
    per_module = {name: int(sum(counts.values())) for name, counts in fc.get_flop_counts().items()}
    return int(fc.get_total_flops()), per_module


def _fit(a: np.ndarray, shape: tuple) -> np.ndarray:
    """`a` cut (or zero-padded) to `shape`: FLOPs depend on shapes only, not on values."""
    out = np.zeros(shape, a.dtype)
    region = tuple(slice(0, min(s, t)) for s, t in zip(shape, a.shape))
    out[region] = a[region]
    return out


class FlopTable:
    """FLOPs of (stage, input shapes), counted once per distinct shape on the stage modules in
    the form the backend runs (`for_export`: the exported graphs' form, see model.stages)."""

    def __init__(self, model, examples: dict, for_export: bool = False):
        self.stages = {k: v.eval() for k, v in model.stages(for_export=for_export).items()}
        self.examples = examples
        self._cache: dict = {}

    def flops(self, stage: str, shapes) -> int:
        key = (stage, tuple(tuple(s) for s in shapes))
        if key not in self._cache:
            inputs = [_fit(a, tuple(s)) for a, s in zip(self.examples[stage], shapes)]
            if stage == "memory_attention":  # every slot valid: the full-bank cost
                inputs[3][:] = 1.0
                inputs[5][:] = 1.0
            self._cache[key] = count_flops(self.stages[stage], inputs)[0]
        return self._cache[key]


# ---- machine ----------------------------------------------------------------------------

def matmul_peak(threads: int | None = None, sizes=(1024, 2048), min_seconds: float = 0.5) -> dict:
    """Best measured fp32 torch.matmul throughput (GFLOP/s) on square matrices."""
    import torch

    old = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        best, per_size = 0.0, {}
        for n in sizes:
            a, b = torch.randn(n, n), torch.randn(n, n)
            c = torch.empty(n, n)
            torch.matmul(a, b, out=c)  # warm-up
            rates, t_start = [], time.perf_counter()
            while time.perf_counter() - t_start < min_seconds or len(rates) < 3:
                t0 = time.perf_counter()
                torch.matmul(a, b, out=c)
                rates.append(2 * n**3 / (time.perf_counter() - t0) / 1e9)
            per_size[str(n)] = round(max(rates), 1)
            best = max(best, max(rates))
        return {"gflops": round(best, 1), "threads": torch.get_num_threads(), "by_size": per_size}
    finally:
        torch.set_num_threads(old)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(quiet: bool = True, measure: bool = True, threads: int | None = None) -> dict:
    import torch

    from etam_export.exporter import _versions

    info = {
        "host": platform.node(), "platform": platform.platform(), "machine": platform.machine(),
        "cpu": _cpu_model(), "logical_cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(), "versions": _versions(),
    }
    try:
        import onnxruntime

        info["versions"]["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    try:
        info["load_average"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass
    try:
        from executorch.extension.pybindings import portable_lib

        info["executorch_threads"] = int(portable_lib._threadpool_get_thread_count())
    except Exception:
        pass
    if measure:
        _log(quiet, "bench: measuring fp32 matmul throughput ...")
        info["matmul_fp32"] = {"all_threads": matmul_peak(threads=os.cpu_count()), "one_thread": matmul_peak(threads=1)}
        if threads and threads not in (1, os.cpu_count()):
            info["matmul_fp32"][f"{threads}_threads"] = matmul_peak(threads=threads)
        used = {1: "one_thread", os.cpu_count(): "all_threads"}.get(threads or os.cpu_count(), f"{threads}_threads")
        info["matmul_fp32_gflops"] = info["matmul_fp32"][used]["gflops"]
        info["matmul_fp32_reference"] = (f"{used}: the thread count the backends ran with; fractions of the "
                                         "limit are relative to this number")
    return info


# ---- the per-backend run (subprocess) ---------------------------------------------------

class TimedBackend:
    """Wraps a backend: times every `run(stage, inputs)` and records the shapes it computed."""

    def __init__(self, backend, trim_like_eager: bool):
        self.inner = backend
        self.cfg, self.capacities, self.point_capacity = backend.cfg, backend.capacities, backend.point_capacity
        self.trim = trim_like_eager
        self.calls: list = []
        self.phase = "prompt"

    def _shapes(self, stage, inputs):
        if self.trim and stage == "memory_attention":
            from .runtime.backends import EagerBackend

            inputs = EagerBackend._trim(EagerBackend._trim(list(inputs), 3, (1, 2, 3)), 5, (4, 5))
        return [list(np.shape(a)) for a in inputs]

    def run(self, stage, inputs):
        t0 = time.perf_counter()
        out = self.inner.run(stage, inputs)
        ms = (time.perf_counter() - t0) * 1e3
        self.calls.append({"stage": stage, "ms": ms, "phase": self.phase, "shapes": self._shapes(stage, inputs)})
        return out


def _make_backend(job: dict):
    if job["backend"] == "eager":
        from .checkpoint import load_model
        from .configs import get_config
        from .runtime.backends import EagerBackend

        model, _ = load_model(get_config(job["config"]), job.get("checkpoint"), seed=job["seed"], quiet=True)
        return EagerBackend(model, threads=job.get("threads"))
    from .runtime.exported import open_backend

    if job.get("threads") and job["backend"] == "executorch":
        # before any program is loaded: resetting the pool under a loaded XNNPACK delegate crashes
        from executorch.extension.pybindings import portable_lib

        portable_lib._unsafe_reset_threadpool(job["threads"])
    backend = open_backend(job["backend"], job["artifacts"], config=job["config"], checkpoint=job.get("checkpoint"))
    _set_runtime_threads(backend, job.get("threads"))
    return backend


def _set_runtime_threads(backend, threads: int | None) -> None:
    """Give ExecuTorch's and ONNX Runtime's thread pools the same thread count as torch."""
    if not threads:
        return
    if backend.name == "onnx":  # OnnxBackend has no thread option: rebuild its sessions
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        backend._sessions = {s: ort.InferenceSession(str(p), sess_options=opts, providers=["CPUExecutionProvider"])
                             for s, p in backend.paths.items()}


def _runtime_threads(backend) -> int | None:
    import torch

    if getattr(backend, "name", None) == "executorch":
        from executorch.extension.pybindings import portable_lib

        return int(portable_lib._threadpool_get_thread_count())
    if getattr(backend, "name", None) == "onnx":
        s = next(iter(backend._sessions.values()))
        n = s.get_session_options().intra_op_num_threads
        return n or os.cpu_count()
    return torch.get_num_threads()


def _track(backend, frames: list, prompts: list, video_hw):
    from .runtime.tracker import Tracker

    tracker = Tracker(backend, len(frames), video_hw, lambda i: frames[i])
    t0 = time.perf_counter()
    for p in prompts:
        tracker.add_prompt(p["frame"], p["id"], p.get("points"), p.get("labels"), p.get("box"))
    prompt_ms = (time.perf_counter() - t0) * 1e3
    frame_ms, logits = [], []
    it = tracker.propagate()
    while True:
        t0 = time.perf_counter()
        try:
            frame_idx, _, low_res = next(it)
        except StopIteration:
            break
        frame_ms.append(((time.perf_counter() - t0) * 1e3, frame_idx))
        logits.append(low_res)
        if isinstance(backend, TimedBackend):
            backend.phase = "track"
    return prompt_ms, frame_ms, np.stack(logits)


def run_backend(job: dict) -> dict:
    """Warm up, then track the clip once with timing; returns the raw measurements."""
    import torch

    from .preprocess import preprocess_frame
    from .runtime.frames import open_frames

    if job.get("threads"):
        torch.set_num_threads(job["threads"])
    source = open_frames(Path(job["clip"]))
    size = job["image_size"]
    frames = [preprocess_frame(source.rgb(i), size).numpy() for i in range(len(source))]
    video_hw = (source.height, source.width)
    prompts = job["prompts"]
    before = rss_mb()
    t0 = time.perf_counter()
    backend = _make_backend(job)
    load_s = time.perf_counter() - t0
    warm = frames[: max(job["warmup"], 0) + 1]
    if job["warmup"] > 0:
        _track(backend, warm, prompts, video_hw)
    timed = TimedBackend(backend, trim_like_eager=job["backend"] == "eager")
    prompt_ms, frame_ms, logits = _track(timed, frames, prompts, video_hw)
    np.save(job["logits_out"], logits.astype(np.float32))
    after = rss_mb()
    return {
        "backend": job["backend"], "target": getattr(backend, "target", "eager"), "load_s": round(load_s, 3),
        "prompt_ms": round(prompt_ms, 3), "frames": frame_ms, "calls": timed.calls,
        "rss_before_backend_mb": before["current_mb"], "rss_after_mb": after["current_mb"],
        "peak_rss_mb": after["peak_mb"], "torch_threads": torch.get_num_threads(),
        "runtime_threads": _runtime_threads(backend),
    }


def _run_isolated(job: dict, isolate: bool) -> dict:
    if not isolate:
        return run_backend(job)
    job_path = Path(job["logits_out"]).with_suffix(".job.json")
    res_path = Path(job["logits_out"]).with_suffix(".result.json")
    job_path.write_text(json.dumps(job))
    env = dict(os.environ)
    proc = subprocess.run([sys.executable, "-m", "etam_mobile.bench", "--worker", str(job_path), str(res_path)],
                          env=env, capture_output=True, text=True)
    if proc.returncode != 0 or not res_path.exists():
        tail = "\n".join((proc.stderr or "").strip().splitlines()[-15:])
        raise BenchError(f"the {job['backend']} run failed (exit {proc.returncode}):\n{tail}")
    return json.loads(res_path.read_text())


# ---- analysis -----------------------------------------------------------------------------

def _mask_agreement(ref: np.ndarray, got: np.ndarray) -> dict:
    """IoU of the > 0 masks (mean and worst over frames x objects) and PSNR of clipped logits."""
    r = np.clip(ref.astype(np.float64), -LOGIT_CLIP, LOGIT_CLIP)
    g = np.clip(got.astype(np.float64), -LOGIT_CLIP, LOGIT_CLIP)
    ious = []
    for a, b in zip((r > 0).reshape(-1, *r.shape[-2:]), (g > 0).reshape(-1, *g.shape[-2:])):
        union = np.logical_or(a, b).sum()
        ious.append(float(np.logical_and(a, b).sum() / union) if union else 1.0)
    rmse = float(np.sqrt(np.mean((r - g) ** 2)))
    psnr = 200.0 if rmse == 0 else 20 * math.log10(2 * LOGIT_CLIP / rmse)
    return {"mask_iou_mean": round(float(np.mean(ious)), 5), "mask_iou_min": round(float(np.min(ious)), 5),
            "logits_psnr_db": round(min(psnr, 200.0), 2), "logits_max_abs_err": round(float(np.abs(r - g).max()), 5),
            "compared": "low-res mask logits of every tracked frame and object, clipped to +-32; "
                        "PSNR peak = 64 (the clipped range)"}


def analyse(raw: dict, flops: FlopTable, peak_gflops: float | None, sizes: dict) -> dict:
    """Turn one backend's raw measurements into the result record of the JSON."""
    tracked = [ms for ms, idx in raw["frames"][1:]]  # frame 0 is the prompted (conditioning) frame
    calls = [c for c in raw["calls"] if c["phase"] == "track"]
    stages = {}
    for stage in STAGES:
        cs = [c for c in calls if c["stage"] == stage]
        if not cs:
            continue
        fl = [flops.flops(stage, c["shapes"]) for c in cs]
        total_ms = sum(c["ms"] for c in cs)
        s = summarize([c["ms"] for c in cs])
        gflop = float(np.mean(fl)) / 1e9
        rate = sum(fl) / 1e9 / (total_ms / 1e3) if total_ms > 0 else None
        stages[stage] = {
            "median_ms": s["median"], "p90_ms": s["p90"], "mean_ms": s["mean"], "min_ms": s["min"], "calls": s["n"],
            "gflop": round(gflop, 4), "achieved_gflops": None if rate is None else round(rate, 2),
            "fraction_of_matmul_peak": None if not (rate and peak_gflops) else round(rate / peak_gflops, 4),
            "artifact_bytes": sizes.get(stage),
        }
    fm = summarize(tracked)
    return {
        "backend": raw["backend"], "target": raw["target"], "precision": "fp32",
        "frame_ms": {"median": fm["median"], "p90": fm["p90"], "mean": fm["mean"], "min": fm["min"]},
        "tracked_frames": fm["n"], "prompt_ms": raw["prompt_ms"], "load_s": raw["load_s"],
        "first_frame_ms": round(raw["frames"][0][0], 3) if raw["frames"] else None,
        "stages": stages,
        "memory": {"peak_rss_mb": raw["peak_rss_mb"], "rss_before_backend_mb": raw["rss_before_backend_mb"],
                   "rss_after_mb": raw["rss_after_mb"],
                   "note": "peak RSS of this backend's own process (python + torch + runtime + clip), "
                           "rss_before_backend_mb = the same process before the backend was loaded"},
        "torch_threads": raw["torch_threads"], "runtime_threads": raw.get("runtime_threads"),
        "artifact_bytes_total": sum(v for v in sizes.values() if v) or None,
    }


# ---- memory-attention scaling -------------------------------------------------------------

def _scaling_inputs(cfg, n: int, rng) -> list:
    h, C, M = cfg.feat_size, cfg.d_model, cfg.mem_dim
    tpos = np.arange(n, dtype=np.int32)[::-1] % max(cfg.num_maskmem - 1, 1)
    return [rng.standard_normal((1, C, h, h)).astype(np.float32),
            rng.standard_normal((n, M, h, h)).astype(np.float32), np.ascontiguousarray(tpos),
            np.ones((n,), np.float32), rng.standard_normal((n, C)).astype(np.float32), np.ones((n,), np.float32)]


def _time_calls(fn, min_reps: int, min_seconds: float, warmup: int = 1) -> list:
    for _ in range(warmup):
        fn()
    out, t_start = [], time.perf_counter()
    while len(out) < min_reps or (time.perf_counter() - t_start < min_seconds and len(out) < 50):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def memory_attention_scaling(cfg, backends=("eager", "executorch"), max_frames: int = 7, reps: int = 3,
                             seed: int = 0, quiet: bool = False, workdir: Path | None = None,
                             min_seconds: float = 0.3) -> dict:
    """Median ms of one memory-attention call with n = 1..max_frames memory frames (all valid,
    one object pointer per frame), for plain and both pooled cross-attentions.

    The three variants share every weight shape, so they are the same model with
    `cross_attn` replaced. Eager runs the stage module at exactly n slots; ExecuTorch runs a
    program exported at exactly n slots (a fixed-shape graph costs its slot count, valid or
    not; the tracker's graph has num_maskmem - 1 + cond_frames slots).
    """
    import torch

    from .checkpoint import synthetic_state_dict
    from .model import build_model

    rows = []
    rng = np.random.default_rng(seed)
    for variant in CROSS_ATTN_VARIANTS:
        vcfg = replace(cfg, cross_attn=variant)
        model = build_model(vcfg)
        model.load_state_dict(synthetic_state_dict(tuple((k, tuple(v.shape)) for k, v in model.state_dict().items()),
                                                   seed), strict=True)
        for mod in model.modules():
            if mod is not model and callable(getattr(mod, "bake_constants", None)):
                mod.bake_constants()
        stage = model.stages()["memory_attention"].eval()
        export_stage = model.stages(for_export=True)["memory_attention"].eval()
        for n in range(1, max_frames + 1):
            inputs = _scaling_inputs(vcfg, n, rng)
            tensors = [torch.from_numpy(a) for a in inputs]
            row = {"cross_attn": variant, "memory_frames": n, "gflop": round(count_flops(stage, inputs)[0] / 1e9, 4),
                   "memory_tokens": n * vcfg.feat_size**2 // (4 if variant != "plain" and n > 1 else 1) + 4 * n}
            if "eager" in backends:
                with torch.inference_mode():
                    ms = _time_calls(lambda: stage(*tensors), reps, min_seconds)
                row["eager_ms"], row["eager_min_ms"] = round(float(np.median(ms)), 3), round(float(np.min(ms)), 3)
            if "executorch" in backends:
                row["export_gflop"] = round(count_flops(export_stage, inputs)[0] / 1e9, 4)
                _executorch_scaling_point(row, export_stage, inputs, reps, workdir, min_seconds)
            rows.append(row)
            _log(quiet, f"bench: memory attention {variant:11s} {n} frame(s): " + ", ".join(
                f"{b} {row[b + '_ms']:.1f} ms" if row.get(b + "_ms") is not None else f"{b} failed"
                for b in backends))
    return {"config": cfg.name, "feat_size": cfg.feat_size, "object_pointers": "one per memory frame",
            "backends": list(backends), "rows": rows}


def _executorch_scaling_point(row, stage, inputs, reps, workdir, min_seconds) -> None:
    """Time the ExecuTorch program of one scaling point; a failure is recorded in the row, not raised."""
    try:
        row["executorch_ms"], row["executorch_min_ms"] = _executorch_call_ms(stage, inputs, reps, workdir, min_seconds)
    except Exception as exc:
        row["executorch_ms"], row["executorch_error"] = None, f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"


def _executorch_call_ms(stage, inputs, reps, workdir, min_seconds) -> tuple:
    import torch

    from etam_export import executorch as et_export
    from etam_export.exporter import torch_export
    from executorch.runtime import Runtime

    path = Path(tempfile.mkstemp(suffix=".pte", dir=workdir)[1])
    try:
        ep = torch_export(stage, inputs, "memory_attention")
        et_export.write(ep, path, "memory_attention", "executorch", "fp32")
        program = Runtime.get().load_program(str(path))
        method = program.load_method("forward")
        tensors = [torch.from_numpy(a) for a in inputs]
        ms = _time_calls(lambda: method.execute(tensors), reps, min_seconds)
        return round(float(np.median(ms)), 3), round(float(np.min(ms)), 3)
    finally:
        path.unlink(missing_ok=True)


# ---- exports ----------------------------------------------------------------------------

def _needed_targets(backends) -> list:
    return [b for b in backends if b != "eager"]


def ensure_artifacts(model, folder: Path | None, backends, quiet: bool, workdir: Path) -> Path | None:
    """Reuse an export folder that has every needed target, else export into it (or a temp folder)."""
    targets = _needed_targets(backends)
    if not targets:
        return None
    from .manifest import MANIFEST_NAME

    if folder is not None and (folder / MANIFEST_NAME).is_file():
        doc = json.loads((folder / MANIFEST_NAME).read_text())
        have = set().union(*(set(s.get("artifacts", {})) for s in doc["stages"].values()))
        if doc.get("config") != model.cfg.name:
            raise BenchError(f"--artifacts {folder} holds an export of {doc.get('config')}, not {model.cfg.name}; "
                             "pass the matching --config or another folder")
        missing = [t for t in targets if t not in have]
        if missing:
            raise BenchError(f"--artifacts {folder} has no {', '.join(missing)} artifacts; re-export with "
                             f"--targets {','.join(targets)} or give an empty folder")
        _log(quiet, f"bench: reusing the export in {folder}")
        return folder
    from etam_export import export_model

    out = folder if folder is not None else workdir / "export"
    _log(quiet, f"bench: exporting {model.cfg.name} ({', '.join(targets)}) -> {out}")
    export_model(model, out, targets=tuple(targets), precision="fp32", quiet=quiet, force=False,
                 weights_info=getattr(model, "weights_info", None))
    return out


def artifact_sizes(folder: Path | None, target: str) -> dict:
    if folder is None:
        return {}
    from etam_export.common import artifact_size

    doc = json.loads((folder / "manifest.json").read_text())
    out = {}
    for stage, st in doc["stages"].items():
        rel = st.get("artifacts", {}).get(target)
        if rel and (folder / rel).exists():
            out[stage] = artifact_size(folder / rel)
    return out


def _eager_param_bytes(model) -> dict:
    out = {}
    for stage, mod in model.stages().items():
        seen, total = set(), 0
        for t in list(mod.parameters()) + list(mod.buffers()):
            if id(t) not in seen:
                seen.add(id(t))
                total += t.numel() * t.element_size()
        out[stage] = total
    return out


def _delegation(folder: Path | None) -> dict:
    if folder is None:
        return {}
    doc = json.loads((folder / "manifest.json").read_text())
    rep = doc.get("tool", {}).get("export_report", {})
    out = {}
    for stage, r in rep.items():
        et = r.get("executorch")
        if et and "delegated_fraction" in et:
            out[stage] = {k: et[k] for k in ("delegated_fraction", "delegated_nodes", "total_nodes", "not_delegated_ops")
                          if k in et}
    return out


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
              scaling_frames: int = 7, quiet: bool = False, isolate: bool = True, measure_machine: bool = True, command: str | None = None) -> dict:
    """The whole benchmark; returns the JSON document (see benchmarks/README.md)."""
    import torch

    from etam_export.common import example_inputs

    from .checkpoint import load_model
    from .configs import get_config
    from .contracts import Capacities
    from .demo import make_clip

    backends = parse_backends(backends) if isinstance(backends, str) else list(backends)
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
    machine = machine_info(quiet, measure=measure_machine, threads=threads)
    peak = machine.get("matmul_fp32_gflops")
    work = Path(tempfile.mkdtemp(prefix="etam-bench-"))
    try:
        model, weights = load_model(cfg, checkpoint, seed=seed, quiet=quiet)
        model.weights_info = weights
        folder = ensure_artifacts(model, Path(artifacts) if artifacts else None, backends, quiet, work)
        prompts = make_clip(work / "clip", frames)["prompts"]
        examples = example_inputs(cfg, Capacities(), model.stages())
        flop_tables = {form: FlopTable(model, examples, for_export=form == "export") for form in ("eager", "export")}
        results, logits = [], {}
        for b in backends:
            _log(quiet, f"bench: {b}: warm-up {warmup} frame(s), then {frames} timed frames ...")
            job = {"backend": b, "config": cfg.name, "checkpoint": str(checkpoint) if checkpoint else None, "seed": seed,
                   "artifacts": str(folder) if folder else None, "threads": threads, "clip": str(work / "clip"),
                   "prompts": prompts, "image_size": cfg.image_size, "warmup": warmup,
                   "logits_out": str(work / f"logits_{b}.npy")}
            raw = _run_isolated(job, isolate)
            sizes = _eager_param_bytes(model) if b == "eager" else artifact_sizes(folder, raw["target"])
            res = analyse(raw, flop_tables["eager" if b == "eager" else "export"], peak, sizes)
            if b == "eager":
                res["artifact_note"] = "eager: bytes of the stage's parameters and buffers (fp32), no file"
            logits[b] = np.load(job["logits_out"])
            results.append(res)
            _log(quiet, f"bench: {b}: frame median {res['frame_ms']['median']:.1f} ms, p90 {res['frame_ms']['p90']:.1f} ms, "
                        f"peak RSS {res['memory']['peak_rss_mb']:.0f} MiB")
        ref = "eager" if "eager" in logits else None
        for res in results:
            if ref and res["backend"] != ref:
                res["agreement_vs_eager_fp32"] = _mask_agreement(logits[ref], logits[res["backend"]])
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
            "precision_variants": _precision_note(backends),
        }
        if scaling:
            _log(quiet, "bench: memory-attention scaling over 1..7 memory frames ...")
            doc["memory_attention_scaling"] = memory_attention_scaling(cfg, tuple(scaling), max_frames=scaling_frames,
                                                                       reps=scaling_reps,
                                                                       seed=seed, quiet=quiet, workdir=work)
        doc["wall_s"] = round(time.perf_counter() - t_all, 1)
        return doc
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _precision_note(backends) -> dict:
    mac = platform.system() == "Darwin"
    return {
        "fp16": ("measured in the coreml result" if (mac and "coreml" in backends) else
                 "skipped: the exporter's fp16 path is Core ML only (coreml, executorch-coreml targets) and Core ML "
                 f"cannot run predictions on {platform.system()}; the export's fp16 emulation PSNR per stage is in "
                 "the manifest's export_report, and on-device numbers come from the iOS app "
                 "(benchmarks/device_results/)"),
        "compressed": "skipped: the exporter offers no compressed (quantized / palettized) variant yet",
        "fp32_agreement": "every exported backend is compared with eager fp32 on the same run "
                          "(results[].agreement_vs_eager_fp32)",
    }


# ---- reports ----------------------------------------------------------------------------

def _f(v, fmt="{:.1f}", none="–"):
    return none if v is None else fmt.format(v)


def _stage_table_rows(doc: dict) -> list:
    """One row per run (this machine's backends), columns: stage medians, frame median / p90."""
    rows = []
    for r in doc["results"]:
        rows.append({"where": "this machine", "backend": r["backend"], "units": "CPU", "precision": r.get("precision", "fp32"),
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
            "Threads per backend: " + ", ".join(f"{r['backend']} {r.get('runtime_threads')}" for r in doc["results"]) + ".",
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
            r["backend"], _f(r["frame_ms"]["median"]), _f(r["frame_ms"]["p90"]), _f(r.get("frame_time_vs_eager"), "{:.2f}x"),
            _f(r["memory"]["peak_rss_mb"], "{:.0f}"), _f((r.get("artifact_bytes_total") or 0) / 2**20, "{:.1f}"),
            _f(a.get("mask_iou_mean"), "{:.4f}") + (f" (min {a['mask_iou_min']:.4f})" if a else ""),
            _f(a.get("logits_psnr_db"), "{:.1f}")]) + " |")
    out += ["", "## FLOPs and throughput per stage", ""]
    head = ["backend", "stage", "median ms", "p90 ms", "GFLOP/call", "GFLOP/s", "of matmul peak", "artifact MiB"]
    out += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in doc["results"]:
        for s, v in r["stages"].items():
            out.append("| " + " | ".join([
                r["backend"], s, _f(v["median_ms"]), _f(v["p90_ms"]), _f(v["gflop"], "{:.2f}"),
                _f(v["achieved_gflops"]), _f(None if v["fraction_of_matmul_peak"] is None
                                             else 100 * v["fraction_of_matmul_peak"], "{:.0f} %"),
                _f(None if v.get("artifact_bytes") is None else v["artifact_bytes"] / 2**20, "{:.1f}")]) + " |")
    out += ["", "GFLOP/call is the mean over the timed calls (eager trims unused memory slots, so its memory "
            "attention costs what the filled slots cost; exported graphs always compute every slot). "
            f"Full-bank GFLOP per call: " + ", ".join(f"{s} {doc['flops_per_call_gflop'][s]:.2f}" for s in STAGES) + ".", ""]
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
    out += ["## fp16 and compressed variants", ""]
    for k, v in doc["precision_variants"].items():
        out.append(f"- {k}: {v}")
    out.append("")
    return "\n".join(out)


def plot(doc: dict, path: Path) -> bool:
    """Per-stage bars per backend and the memory-attention scaling curves; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    sc = doc.get("memory_attention_scaling")
    fig, axes = plt.subplots(1, 2 if sc else 1, figsize=(12 if sc else 6, 4.5))
    axes = np.atleast_1d(axes)
    ax = axes[0]
    names = [r["backend"] for r in doc["results"]]
    bottom = np.zeros(len(names))
    for s in STAGES:
        calls_per_frame = 1 if s == "image_encoder" else doc["clip"]["objects"]
        vals = np.array([(r["stages"].get(s, {}).get("median_ms") or 0) * calls_per_frame for r in doc["results"]])
        ax.bar(names, vals, bottom=bottom, label=s)
        bottom += vals
    ax.plot(names, [r["frame_ms"]["median"] for r in doc["results"]], "k_", markersize=30, label="frame median")
    ax.set_ylabel("ms per tracked frame")
    ax.set_title(f"{doc['config']}: stage medians x calls per frame")
    ax.legend(fontsize=8)
    if sc:
        ax = axes[1]
        for v, color in zip(CROSS_ATTN_VARIANTS, ("C0", "C1", "C2")):
            rows = sorted((r for r in sc["rows"] if r["cross_attn"] == v), key=lambda r: r["memory_frames"])
            for b, style in zip(sc["backends"], ("-o", "--s")):
                ys = [r.get(f"{b}_ms") for r in rows]
                if any(y is not None for y in ys):
                    ax.plot([r["memory_frames"] for r in rows], ys, style, color=color, label=f"{v} ({b})")
        ax.set_xlabel("memory frames")
        ax.set_ylabel("ms per memory-attention call")
        ax.set_title(f"memory attention, {sc['config']}")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


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
    doc = run_bench(args.config, backends, frames=args.frames, warmup=args.warmup, checkpoint=args.checkpoint,
                    seed=args.seed, artifacts=args.artifacts, threads=args.threads, scaling=scaling,
                    scaling_reps=args.scaling_reps, quiet=args.quiet, isolate=not args.in_process, command=command)
    write_outputs(doc, args.json, args.markdown, args.plot, quiet=args.quiet)
    for r in doc["results"]:
        ratio = f" ({r['frame_time_vs_eager']:.2f}x eager)" if "frame_time_vs_eager" in r else ""
        print(f"{r['backend']:11s} frame median {r['frame_ms']['median']:8.1f} ms  p90 {r['frame_ms']['p90']:8.1f} ms{ratio}")
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
    p.add_argument("--json", help="write the results JSON here")
    p.add_argument("--markdown", help="write Markdown tables here")
    p.add_argument("--plot", help="write a PNG plot here (needs matplotlib)")
    p.set_defaults(func=cmd_bench)


def _worker_main(argv) -> int:
    job_path, res_path = argv
    job = json.loads(Path(job_path).read_text())
    res = run_backend(job)
    Path(res_path).write_text(json.dumps(res))
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--worker":
        sys.exit(_worker_main(sys.argv[2:]))
    print("usage: etam-mobile bench ... (this module's __main__ is the per-backend worker)", file=sys.stderr)
    sys.exit(2)
