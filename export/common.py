"""What every exporter shares: the error type, example inputs from the contracts, the one
parity function, artifact hashing and quieting of the converters' chatter.

The exporters loop over `contracts.stage_specs`; nothing here knows a stage by hand except
the value ranges that make example inputs realistic (index and flag inputs).
"""
from __future__ import annotations

import contextlib
import io
import logging
import math
import os
import re
import warnings
from pathlib import Path

import numpy as np
import torch

from etam_mobile.configs import ModelConfig
from etam_mobile.contracts import STAGES, Capacities, TensorSpec, stage_specs
from etam_mobile.runtime.exported import artifact_sha256  # noqa: F401  (one hashing rule for both sides)
from etam_mobile.runtime.torchao_noise import silence_torchao_kernel_warnings

# Before any exporter imports ExecuTorch / torchao quantisation / coremltools (all import torchao,
# some outside quiet_converters): torchao's "Failed to load ..._C_*.so" lines are noise.
silence_torchao_kernel_warnings()
# torch 2.13 warns on every deepcopy of an ExportedProgram (its own pytree specs use the
# deprecated LeafSpec); the exporter copies programs for the fp16 plan and the Core ML
# emulation, so the line was printed to users several times per export. Only that message.
warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated", category=FutureWarning)

# fp16 gate on Core ML: 35 dB is apple/ml-stable-diffusion's gate per converted stage; it
# means an RMS error under 1.8 % of the output's peak, i.e. mask logits that only move near
# the 0 threshold (mask IoU is also reported for mask outputs).
FP16_MIN_PSNR = 35.0
# fp32 gate: float32 round-off of a reordered graph is ~1e-6 relative; allow 1e-4 of the
# tensor's peak (and never less than 1e-4 absolute) so only real bugs fail.
FP32_REL_TOL = 1e-4


class ExportError(RuntimeError):
    """An export that cannot proceed; names the stage, the target and the failing op."""

    def __init__(self, message: str, stage: str | None = None, target: str | None = None, op: str | None = None):
        self.stage, self.target, self.op = stage, target, op
        where = ", ".join(f"{k} {v}" for k, v in (("stage", stage), ("target", target), ("op", op)) if v)
        super().__init__(f"{where}: {message}" if where else message)


_OP_PATTERNS = (
    r"(aten[.:]{1,2}[A-Za-z_0-9]+(?:\.[A-Za-z_0-9]+)?)",  # aten.foo.default / aten::foo
    r"op(?:erator)? ['\"]?([A-Za-z_][A-Za-z_0-9.:]*)['\"]? (?:is )?not (?:implemented|supported)",
    r"convert function for op ['\"]([A-Za-z_0-9.]+)['\"]",
    r"Unsupported FX nodes: \{['\"]([^'\"]+)",
)


def failing_op(exc: BaseException) -> str | None:
    """Best-effort name of the operator an exporter choked on, from its message."""
    text = f"{exc}"
    for pattern in _OP_PATTERNS:
        m = re.search(pattern, text)
        if m:
            return m.group(1)
    return None


def wrap_error(exc: BaseException, stage: str, target: str, doing: str) -> ExportError:
    first = next((ln.strip() for ln in f"{exc}".splitlines() if ln.strip()), type(exc).__name__)
    return ExportError(f"{doing} failed ({type(exc).__name__}: {first[:300]})", stage, target, failing_op(exc))


# ---- example inputs -------------------------------------------------------------------

def _valid_flags(n: int, valid: int) -> np.ndarray:
    v = np.zeros((n,), np.float32)
    v[:valid] = 1.0
    return v


def _example_tensor(spec: TensorSpec, cfg: ModelConfig, caps: Capacities, rng: np.random.Generator) -> np.ndarray:
    """A value of the right shape and dtype whose content looks like what the runtime sends."""
    name, shape = spec.name, tuple(spec.shape)
    if name == "image":  # a smooth picture, ImageNet-normalized
        S = shape[-1]
        yy, xx = np.mgrid[0:S, 0:S] / S
        rgb = np.stack([0.5 + 0.4 * np.sin(6 * xx + c) * np.cos(4 * yy - c) for c in range(3)])
        rgb = rgb + 0.05 * rng.standard_normal(rgb.shape)
        mean = np.array([0.485, 0.456, 0.406])[:, None, None]
        std = np.array([0.229, 0.224, 0.225])[:, None, None]
        return ((rgb - mean) / std)[None].astype(np.float32)
    if name == "mem_tpos":  # cond slots use the last index, recent frames 0..num_maskmem-2
        K = shape[0]
        t = np.zeros((K,), np.int32)
        t[: caps.cond_frames] = cfg.num_maskmem - 1
        t[caps.cond_frames:] = np.arange(K - caps.cond_frames) % max(cfg.num_maskmem - 1, 1)
        return t
    if name == "mem_valid":  # some padding: one cond frame and all but one recent frame
        return _valid_flags(shape[0], max(1, shape[0] - caps.cond_frames))
    if name == "ptr_valid":
        return _valid_flags(shape[0], max(1, shape[0] // 2))
    if name == "labels":  # positive, negative, then SAM's -1 padding
        lab = np.full(shape, -1, np.int32)
        lab[0, :3] = [1, 0, 1][: shape[1]]
        return lab
    if name == "points":  # pixel coordinates in the model's input frame
        return rng.uniform(0, cfg.image_size, shape).astype(np.float32)
    if name in ("has_mask_input", "binarize"):
        return np.ones(shape, np.float32)
    if name in ("mask", "mask_input"):  # low-res logits: a blob, clamped like upstream
        lr = shape[-1]
        yy, xx = np.mgrid[0:lr, 0:lr] / lr
        blob = 20.0 * (0.15 - np.hypot(xx - 0.45, yy - 0.55))
        return np.clip(blob + rng.standard_normal((lr, lr)), -32, 32).reshape(shape).astype(np.float32)
    if spec.dtype == torch.int32:
        return np.zeros(shape, np.int32)
    return rng.standard_normal(shape).astype(np.float32)


def example_inputs(cfg: ModelConfig, caps: Capacities, stages: dict | None = None, seed: int = 0) -> dict:
    """stage -> list of numpy inputs in contract order.

    With the eager `stages` given, feature inputs are real stage outputs (feats from the
    image encoder, memories from the memory encoder, conditioned feats from the memory
    attention), so value ranges are what the runtime produces, not unit noise.
    """
    rng = np.random.default_rng(seed)
    specs = stage_specs(cfg, caps)
    out = {s: [_example_tensor(t, cfg, caps, rng) for t in specs[s].inputs] for s in STAGES}
    if stages is None:
        return out

    def run(stage):
        with torch.inference_mode():
            res = stages[stage](*[torch.from_numpy(a) for a in out[stage]])
        return [np.ascontiguousarray(r.numpy()) for r in (res if isinstance(res, (tuple, list)) else (res,))]

    names = {s: [t.name for t in specs[s].inputs] for s in STAGES}
    (feats,) = run("image_encoder")
    for s in ("memory_attention", "memory_encoder", "mask_decoder"):
        if "feats" in names[s]:
            out[s][names[s].index("feats")] = feats
    (mem,) = run("memory_encoder")
    ma = out["memory_attention"]
    mem_feats = ma[names["memory_attention"].index("mem_feats")]
    noise = 0.1 * rng.standard_normal(mem_feats.shape).astype(np.float32)
    ma[names["memory_attention"].index("mem_feats")] = mem + noise  # padded slots carry garbage too
    (cond,) = run("memory_attention")
    out["mask_decoder"][names["mask_decoder"].index("cond_feats")] = cond
    return out


def torch_inputs(arrays: list) -> tuple:
    return tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in arrays)


def run_eager(module: torch.nn.Module, arrays: list) -> list:
    with torch.inference_mode():
        res = module(*torch_inputs(arrays))
    return [r.detach().numpy().copy() for r in (res if isinstance(res, (tuple, list)) else (res,))]


# ---- parity ---------------------------------------------------------------------------

def parity(ref: list, got: list, names: list, precision: str = "fp32") -> dict:
    """Compare outputs; returns {name: {max_abs_err, psnr_db, ...}, "ok": bool, "gate": str}.

    PSNR = 20 log10(peak / rmse) with peak = max |ref| (signed tensors, so the peak-to-zero
    amplitude; a scalar output has no range). Mask-like outputs (name starts with "mask")
    also get the IoU of their > 0 regions, the measure DESIGN.md judges fp16 by.
    fp32 gate: max_abs_err <= FP32_REL_TOL * max(1, peak); fp16 gate: PSNR >= FP16_MIN_PSNR.
    """
    if len(ref) != len(got):
        return {"ok": False, "gate": f"{len(got)} outputs, expected {len(ref)}"}
    report, ok = {}, True
    for name, r, g in zip(names, ref, got):
        r64, g64 = np.asarray(r, np.float64), np.asarray(g, np.float64)
        if r64.shape != g64.shape:
            report[name] = {"shape": list(g64.shape), "expected_shape": list(r64.shape)}
            ok = False
            continue
        err = np.abs(r64 - g64)
        peak = float(np.abs(r64).max()) if r64.size else 0.0
        rmse = float(np.sqrt(np.mean(err**2))) if r64.size else 0.0
        finite = bool(np.isfinite(g64).all())
        psnr = 200.0 if rmse == 0 else (20 * math.log10(peak / rmse) if peak > 0 and finite else -200.0)
        item = {"max_abs_err": float(err.max()) if err.size else 0.0, "psnr_db": round(min(psnr, 200.0), 2),
                "peak": peak}
        if name.startswith("mask"):
            a, b = r64 > 0, g64 > 0
            union = np.logical_or(a, b).sum()
            item["mask_iou"] = float(np.logical_and(a, b).sum() / union) if union else 1.0
        if precision == "fp32":
            item["ok"] = finite and item["max_abs_err"] <= FP32_REL_TOL * max(1.0, peak)
        else:
            item["ok"] = finite and item["psnr_db"] >= FP16_MIN_PSNR
        ok = ok and item["ok"]
        report[name] = item
    gate = (f"max_abs_err <= {FP32_REL_TOL:g} * max(1, peak)" if precision == "fp32"
            else f"PSNR >= {FP16_MIN_PSNR:g} dB")
    return {"ok": ok, "gate": gate, "outputs": report}


def parity_summary(result: dict) -> str:
    outs = result.get("outputs", {})
    worst_err = max((o.get("max_abs_err", float("inf")) for o in outs.values()), default=float("nan"))
    worst_psnr = min((o.get("psnr_db", -200.0) for o in outs.values()), default=float("nan"))
    return f"max|err| {worst_err:.2e}, min PSNR {worst_psnr:.1f} dB"


# ---- checksums ------------------------------------------------------------------------

DIRECTORY_CHECKSUM_RULE = (
    "file: sha256 of its bytes; directory (.mlpackage): sha256 of the sorted sha256sum listing "
    "'<hex>  <relative path>\\n' of every file in it (LC_ALL=C order)"
)


def artifact_size(path: Path) -> int:
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# ---- quiet converters -----------------------------------------------------------------

_NOISY_LOGGERS = ("coremltools", "torch.onnx", "onnxscript", "executorch", "torch._export", "torchao",
                  "torch.export", "root", "torch.utils._pytree", "torch._dynamo")


@contextlib.contextmanager
def quiet_converters(enabled: bool = True):
    """Silence progress bars, warnings and C++ prints of the converters (they are noise to a
    user; errors still propagate as exceptions)."""
    if not enabled or os.environ.get("ETAM_EXPORT_VERBOSE"):
        yield
        return
    saved = {n: logging.getLogger(n).level for n in _NOISY_LOGGERS}
    for n in _NOISY_LOGGERS:
        logging.getLogger(n).setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
                contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for n, lvl in saved.items():
            logging.getLogger(n).setLevel(lvl)


def import_quietly(module: str):
    """Import a converter package with its import-time warnings silenced."""
    import importlib

    silence_torchao_kernel_warnings()
    with quiet_converters():
        return importlib.import_module(module)
