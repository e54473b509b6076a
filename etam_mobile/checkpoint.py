"""Official checkpoints: key layouts, strict loading, synthetic weights, download.

An official checkpoint is `torch.save({"model": state_dict})` with upstream key names.
We load it unchanged (weights_only) and strictly: every key and shape must match the
config, otherwise the error names the config, the offending keys and the config the
file most likely belongs to.
"""
from __future__ import annotations

import hashlib
import json
import math
import warnings
from functools import lru_cache
from importlib import resources
from pathlib import Path

import torch

from .configs import OFFICIAL_CONFIGS, ModelConfig


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used for the requested config."""


@lru_cache(maxsize=None)
def official_key_layout(name: str) -> tuple:
    """((key, shape), ...) of an official config, in upstream state_dict order."""
    text = resources.files("etam_mobile.data.manifests").joinpath(f"{name}.json").read_text()
    return tuple((k, tuple(s)) for k, s in json.loads(text)["keys"])


def key_layout(cfg: ModelConfig, model: torch.nn.Module | None = None) -> tuple:
    """Key layout of any config: the shipped upstream layout, or our model's for test configs."""
    if cfg.name in OFFICIAL_CONFIGS:
        return official_key_layout(cfg.name)
    if model is None:
        from .model import build_model

        model = build_model(cfg)
    return tuple((k, tuple(v.shape)) for k, v in model.state_dict().items())


def synthetic_state_dict(layout, seed: int) -> dict:
    """Seeded weights in a key layout, by the rule of the upstream parity fixtures.

    Outputs of a model on these weights are meaningless but reproducible, which is what
    parity tests and a fresh machine without checkpoints need.
    """
    g = torch.Generator().manual_seed(seed)
    out = {}
    for key, shape in layout:
        shape = tuple(shape)
        n = math.prod(shape)
        if len(shape) == 1 and key.endswith(".weight"):
            t = 1 + 0.1 * torch.randn(shape, generator=g)
        elif len(shape) <= 1:
            t = 0.02 * torch.randn(shape, generator=g)
        else:
            t = torch.randn(shape, generator=g) / math.sqrt(max(n // shape[0], 1))
        if key.startswith("sam_mask_decoder.output_hypernetworks_mlps.") and key.endswith("layers.2.weight"):
            t = t * 40
        if key.startswith("sam_mask_decoder.pred_obj_score_head.") and key.endswith("bias") and n == 1:
            t = torch.full(shape, 4.0)
        out[key] = t
    return out


def file_sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _read_state_dict(path: Path) -> dict:
    if not path.exists():
        raise CheckpointError(
            f"checkpoint {path} does not exist; pass the .pt file from the official release "
            f"(`etam-mobile download NAME` fetches one) or leave --checkpoint out for synthetic weights"
        )
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a folder; pass the .pt file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes; an interrupted copy?); re-download it")
    try:
        with warnings.catch_warnings():  # torch warns about odd pickles before failing on them
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated zip, a pickle with code, plain text...
        raise CheckpointError(
            f"checkpoint {path} cannot be read as a PyTorch weights file ({_load_problem(exc)}); re-download it"
        ) from None
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        obj = obj["model"]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(
            f"{path} is not an EfficientTAM checkpoint: expected {{'model': state_dict}} of tensors"
        )
    return obj


def _load_problem(exc: Exception) -> str:
    """What torch.load said, minus its advice: it suggests weights_only=False, which would run
    whatever code the file holds; a weights file never needs that, so we never pass it on."""
    import pickle

    if isinstance(exc, pickle.UnpicklingError) or "weights_only" in str(exc):
        return "it is not plain tensors: a pickle needing code, or not a weights file at all"
    first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else "no details"
    return f"{type(exc).__name__}: {first}"


def likely_configs(state_dict: dict) -> list:
    """Official configs whose key layout matches the file exactly."""
    have = {k: tuple(v.shape) for k, v in state_dict.items()}
    return [n for n in OFFICIAL_CONFIGS if dict(official_key_layout(n)) == have]


def check_layout(state_dict: dict, layout, config_name: str, source: str) -> None:
    """Strict comparison of a state dict to a key layout, with an error that helps."""
    want = dict(layout)
    have = {k: tuple(v.shape) for k, v in state_dict.items()}
    missing = [k for k in want if k not in have]
    unexpected = [k for k in have if k not in want]
    shapes = [f"{k} {have[k]} != {want[k]}" for k in want if k in have and have[k] != want[k]]
    if not (missing or unexpected or shapes):
        return
    parts = []
    for label, items in (("missing keys", missing), ("unexpected keys", unexpected), ("wrong shapes", shapes)):
        if items:
            more = f" (+{len(items) - 3} more)" if len(items) > 3 else ""
            parts.append(f"{len(items)} {label}: {', '.join(items[:3])}{more}")
    guess = likely_configs(state_dict)
    hint = f"; it looks like a checkpoint for {' or '.join(guess)}" if guess else ""
    raise CheckpointError(f"{source} does not fit config {config_name}: {'; '.join(parts)}{hint}")


def load_model(cfg: ModelConfig, checkpoint: str | Path | None = None, seed: int = 0, quiet: bool = False):
    """Build the model for `cfg` with an official checkpoint, or with seeded synthetic weights.

    Returns (model, weights_info) where weights_info records the source for manifests:
    {"checkpoint_sha256": ...} or {"synthetic_seed": seed}.
    """
    from .model import build_model

    model = build_model(cfg)
    if checkpoint is None:
        state = synthetic_state_dict(key_layout(cfg, model), seed)
        info = {"synthetic_seed": seed}
        if not quiet:
            import sys

            print(
                f"WARNING: no --checkpoint given: running {cfg.name} on SYNTHETIC weights (seed {seed}); "
                "outputs are meaningless until a real checkpoint is given (etam-mobile download "
                f"{cfg.name}).",
                file=sys.stderr,
            )
    else:
        path = Path(checkpoint)
        named = path.name.split(".")[0]
        if named in OFFICIAL_CONFIGS and named != cfg.name:
            # Configs of one family share every key and shape, so the official file name is
            # the only evidence of a mix-up (e.g. a pooled-attention checkpoint run as plain).
            raise CheckpointError(
                f"checkpoint {path.name} is the official file for {named}, not {cfg.name}; "
                f"pass --config {named} (or rename the file if it really is a {cfg.name} checkpoint)"
            )
        state = _read_state_dict(path)
        check_layout(state, key_layout(cfg, model), cfg.name, f"checkpoint {path}")
        info = {"checkpoint_sha256": file_sha256(path), "checkpoint": path.name}
    model.load_state_dict(state, strict=True)
    for mod in model.modules():
        bake = getattr(mod, "bake_constants", None)
        if callable(bake) and mod is not model:
            bake()
    return model.eval(), info


RELEASE_URL = "https://huggingface.co/yunyangx/efficient-track-anything/resolve/main/{name}.pt"


def download_checkpoint(name: str, folder: Path, quiet: bool = False, timeout: float = 20.0) -> Path:
    """Fetch an official checkpoint from upstream's public release and verify it.

    Verification is structural (every key and shape of the config, loaded with
    weights_only); the file's SHA-256 is written beside it. The download goes to a
    temporary name first, so an interrupted download never looks like a checkpoint.
    """
    import sys
    import urllib.error
    import urllib.request

    from .configs import get_config

    cfg = get_config(name)
    if cfg.name not in OFFICIAL_CONFIGS:
        raise CheckpointError(f"{name} is a test config; only official configs have checkpoints")
    folder.mkdir(parents=True, exist_ok=True)
    dest = folder / f"{name}.pt"
    part = folder / f".{name}.pt.part"
    url = RELEASE_URL.format(name=name)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r, open(part, "wb") as f:
            total = int(r.headers.get("Content-Length") or 0)
            done = 0
            while chunk := r.read(1 << 20):
                f.write(chunk)
                done += len(chunk)
                if not quiet:
                    pct = f" {100 * done / total:5.1f}%" if total else ""
                    print(f"\rdownloading {name}.pt: {done / 2**20:7.1f} MiB{pct}", end="", file=sys.stderr)
        if not quiet:
            print(file=sys.stderr)
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        part.unlink(missing_ok=True)
        reason = getattr(exc, "reason", exc)
        raise CheckpointError(
            f"cannot download {url} ({reason}); this machine may be offline — download the file elsewhere "
            f"and pass it with --checkpoint"
        ) from None
    try:
        state = _read_state_dict(part)
        check_layout(state, official_key_layout(name), name, f"downloaded {url}")
    except CheckpointError:
        part.unlink(missing_ok=True)
        raise
    part.replace(dest)
    (folder / f"{name}.pt.sha256").write_text(f"{file_sha256(dest)}  {dest.name}\n")
    return dest
