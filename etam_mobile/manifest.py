"""manifest.json: the one contract every runtime (Python, Swift, Kotlin) reads.

Written by the exporter from contracts.stage_specs(); read back and checked by the
Python runtime before any frame is processed.
"""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from . import __version__
from .configs import ModelConfig
from .contracts import MASK_BIAS, NO_OBJ_SCORE, Capacities, stage_specs

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
TARGETS = ("executorch", "executorch-coreml", "coreml", "onnx")
TARGET_SUFFIX = {"executorch": ".pte", "executorch-coreml": ".coreml.pte", "coreml": ".mlpackage", "onnx": ".onnx"}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def build_manifest(cfg: ModelConfig, caps: Capacities, weights: dict, precision: str, artifacts: dict,
                   checksums: dict, extra: dict | None = None, mask_prompt: dict | None = None) -> dict:
    """`artifacts` maps stage -> {target: relative path}; `checksums` maps relative path -> sha256."""
    specs = stage_specs(cfg, caps)
    model = asdict(cfg)
    model.pop("synthetic", None)
    model["global_blocks"] = list(cfg.global_blocks)
    doc = {
        "format_version": FORMAT_VERSION,
        "config": cfg.name,
        "image_size": cfg.image_size,
        "precision": precision,
        "preprocessing": {
            "resize": "stretch the RGB frame to image_size x image_size with Pillow's default filter (bicubic)",
            "scale": 1.0 / 255.0,
            "mean": list(IMAGENET_MEAN),
            "std": list(IMAGENET_STD),
            "layout": "NCHW, RGB, float32",
        },
        "capacities": caps.to_dict(cfg),
        "postprocessing": {
            "feat_size": cfg.feat_size,
            "low_res_size": cfg.low_res_size,
            "d_model": cfg.d_model,
            "mem_dim": cfg.mem_dim,
            "num_maskmem": cfg.num_maskmem,
            "max_obj_ptrs_in_encoder": cfg.max_obj_ptrs_in_encoder,
            "multimask_min_pt_num": cfg.multimask_min_pt_num,
            "multimask_max_pt_num": cfg.multimask_max_pt_num,
            "dynamic_multimask_stability_delta": cfg.dynamic_multimask_stability_delta,
            "dynamic_multimask_stability_thresh": cfg.dynamic_multimask_stability_thresh,
            "no_obj_score": NO_OBJ_SCORE,
            "mask_input_clamp": 32.0,
            "memory_storage": "bfloat16 (round to nearest even), as upstream stores memories",
            "mask_bias": MASK_BIAS,
            "output_resize": "bilinear, align_corners=false, low-res logits to the frame size",
        },
        "model": model,
        "weights": weights,
        "stages": {
            name: {"artifacts": dict(artifacts.get(name, {})), **spec.to_dict()} for name, spec in specs.items()
        },
        "checksums": dict(checksums),
        # Mask prompts need no extra graph: see etam_mobile/runtime/mask_prompt.py.
        **({"mask_prompt": mask_prompt} if mask_prompt is not None else {}),
        "tool": {"etam_mobile": __version__, **(extra or {})},
    }
    return doc


def write_manifest(folder: Path, doc: dict) -> Path:
    path = Path(folder) / MANIFEST_NAME
    path.write_text(json.dumps(doc, indent=2) + "\n")
    return path


def read_manifest(folder: Path) -> dict:
    """Read and sanity-check a manifest; raises ValueError naming the problem and the fix."""
    path = Path(folder) / MANIFEST_NAME
    if not Path(folder).is_dir():
        raise ValueError(f"export folder {folder} does not exist; run `etam-mobile export` first")
    if not path.exists():
        raise ValueError(f"{folder} has no {MANIFEST_NAME}: not an export folder (or an interrupted export); re-export it")
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}); re-export the folder") from None
    version = doc.get("format_version") if isinstance(doc, dict) else None
    if version != FORMAT_VERSION:
        raise ValueError(
            f"{path} has format_version {version!r}, this runtime reads {FORMAT_VERSION}; "
            "re-export with this version of etam-mobile"
        )
    for key in ("config", "capacities", "stages", "checksums", "weights"):
        if key not in doc:
            raise ValueError(f"{path} lacks '{key}'; re-export the folder")
    return doc
