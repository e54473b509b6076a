"""The per-backend run: load a backend, warm up, track the clip with every call timed
(normally in its own subprocess, `python -m etam_mobile.bench --worker JOB RESULT`)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from .common import BenchError
from .machine import rss_mb

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
        """The shapes the backend computes: eager trims to the valid slots, an exported backend
        runs its smallest slot bucket that holds them."""
        if stage == "memory_attention" and self.trim:
            from ..runtime.backends import EagerBackend

            inputs = EagerBackend._trim(EagerBackend._trim(list(inputs), 3, (1, 2, 3)), 5, (4, 5))
        elif stage == "memory_attention" and getattr(self.inner, "slot_buckets", None):
            from ..contracts import choose_slot_bucket

            buckets = self.inner.slot_buckets
            k, p = buckets[choose_slot_bucket(buckets, int(np.count_nonzero(inputs[3])), int(np.count_nonzero(inputs[5])))]
            inputs = [inputs[0], inputs[1][:k], inputs[2][:k], inputs[3][:k], inputs[4][:p], inputs[5][:p]]
        return [list(np.shape(a)) for a in inputs]

    def run(self, stage, inputs):
        t0 = time.perf_counter()
        out = self.inner.run(stage, inputs)
        ms = (time.perf_counter() - t0) * 1e3
        self.calls.append({"stage": stage, "ms": ms, "phase": self.phase, "shapes": self._shapes(stage, inputs)})
        return out


def _make_backend(job: dict):
    if job["backend"] == "eager":
        from ..checkpoint import load_model
        from ..configs import get_config
        from ..runtime.backends import EagerBackend

        model, _ = load_model(get_config(job["config"]), job.get("checkpoint"), seed=job["seed"], quiet=True)
        return EagerBackend(model, threads=job.get("threads"))
    from ..runtime.exported import open_backend

    if job.get("threads") and job["backend"] in ("executorch", "executorch-before"):
        # before any program is loaded: resetting the pool under a loaded XNNPACK delegate crashes
        from executorch.extension.pybindings import portable_lib

        portable_lib._unsafe_reset_threadpool(job["threads"])
    name = "executorch" if job["backend"] == "executorch-before" else job["backend"]
    backend = open_backend(name, job["artifacts"], config=job["config"], checkpoint=job.get("checkpoint"))
    if job["backend"] == "executorch-before":
        _use_previous_memory_attention(backend, job)
    _set_runtime_threads(backend, job.get("threads"))
    return backend


def _use_previous_memory_attention(backend, job: dict) -> None:
    """Swap in the memory attention as exported before slot buckets and fused attention: the full
    graph for every call, attention as XNNPACK bmm-softmax-bmm (same weights, same contract)."""
    import tempfile

    from etam_export import executorch as et_export
    from etam_export.artifact import torch_export
    from etam_export.common import example_inputs

    from ..checkpoint import load_model
    from ..configs import get_config

    model, _ = load_model(get_config(job["config"]), job.get("checkpoint"), seed=job["seed"], quiet=True)
    inputs = example_inputs(model.cfg, backend.capacities)["memory_attention"]
    ep = torch_export(model.stages(for_export=True)["memory_attention"], inputs, "memory_attention")
    path = Path(tempfile.mkstemp(suffix=".pte")[1])
    try:
        et_export.write(ep, path, "memory_attention", "executorch", "fp32", fused_attention=False)
        backend._runners["memory_attention"] = backend._open(path)
    finally:
        path.unlink(missing_ok=True)
    backend.bucket_paths, backend.bucket_specs = {}, {}
    backend.slot_buckets = backend.slot_buckets[-1:]
    backend.bucket_calls = {backend.slot_buckets[0]: 0}


def _set_runtime_threads(backend, threads: int | None) -> None:
    """Give ExecuTorch's and ONNX Runtime's thread pools the same thread count as torch."""
    if not threads:
        return
    if backend.name == "onnx":
        backend.set_threads(threads)


def _runtime_threads(backend) -> int | None:
    import torch

    if getattr(backend, "name", None) == "executorch":
        from executorch.extension.pybindings import portable_lib

        return int(portable_lib._threadpool_get_thread_count())
    if getattr(backend, "name", None) == "onnx":
        return backend.threads or os.cpu_count()
    return torch.get_num_threads()


def _track(backend, frames: list, prompts: list, video_hw):
    from ..runtime.tracker import Tracker

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

    from ..preprocess import preprocess_frame
    from ..runtime.frames import open_frames

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
    if job.get("stage_inputs"):  # bench --variants: per-stage outputs for the PSNR vs fp32 eager (untimed)
        from .variants import run_stage_inputs

        run_stage_inputs(backend, Path(job["stage_inputs"]))
    return {
        "backend": job["backend"], "target": getattr(backend, "target", "eager"), "load_s": round(load_s, 3),
        "variant": job.get("variant"),
        "prompt_ms": round(prompt_ms, 3), "frames": frame_ms, "calls": timed.calls,
        "rss_before_backend_mb": before["current_mb"], "rss_after_mb": after["current_mb"],
        "peak_rss_mb": after["peak_mb"], "torch_threads": torch.get_num_threads(),
        "runtime_threads": _runtime_threads(backend),
        "slot_bucket_calls": {f"{k}x{p}": n for (k, p), n in getattr(backend, "bucket_calls", {}).items()} or None,
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



def _worker_main(argv) -> int:
    job_path, res_path = argv
    job = json.loads(Path(job_path).read_text())
    res = run_backend(job)
    Path(res_path).write_text(json.dumps(res))
    return 0

