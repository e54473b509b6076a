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

# 2: a slot bucket may be a METHOD of a multi-method program (`slot_buckets[].methods`, below);
# 1: every bucket its own file. This runtime reads both; readers of 1 refuse 2 cleanly instead of
# running the shared file's full-graph "forward" with a bucket's inputs.
FORMAT_VERSION = 2
READABLE_FORMAT_VERSIONS = (1, 2)
MANIFEST_NAME = "manifest.json"
TARGETS = ("executorch", "executorch-coreml", "coreml", "onnx")
TARGET_SUFFIX = {"executorch": ".pte", "executorch-coreml": ".coreml.pte", "coreml": ".mlpackage", "onnx": ".onnx"}
# Which packages write each target's artifacts (their versions go into `artifact_producers`).
TARGET_PRODUCERS = {"executorch": ("executorch",), "executorch-coreml": ("executorch", "coremltools"),
                    "coreml": ("coremltools",), "onnx": ("onnx",)}


def producer_versions(targets, versions: dict) -> dict:
    """package -> version for the packages that wrote `targets` (those found in `versions`)."""
    return {pkg: versions[pkg] for t in targets for pkg in TARGET_PRODUCERS[t] if pkg in versions}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def build_manifest(cfg: ModelConfig, caps: Capacities, weights: dict, precision: str, artifacts: dict,
                   checksums: dict, extra: dict | None = None, producers: dict | None = None,
                   slot_buckets: list | None = None, mask_prompt: dict | None = None) -> dict:
    """`artifacts` maps stage -> {target: relative path}; `checksums` maps relative path -> sha256;
    `producers` maps package -> version that wrote the artifacts (executorch, coremltools): the
    apps refuse artifacts from versions their runtime does not read.
    `slot_buckets`: smaller memory-attention graphs, [{"memory_slots", "ptr_slots", "artifacts",
    optional "methods"}], written as stages.memory_attention.slot_buckets (contracts.choose_slot_bucket
    picks one). `methods` maps a target to the method of its artifact that runs the bucket (ExecuTorch
    programs hold the buckets as methods of memory_attention.pte); without an entry the artifact's
    "forward" runs (a file per bucket).
    `mask_prompt`: the constants mask prompts need (etam_mobile/runtime/mask_prompt.py)."""
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
        "artifact_producers": dict(producers or {}),
        # Mask prompts need no extra graph: see etam_mobile/runtime/mask_prompt.py.
        **({"mask_prompt": mask_prompt} if mask_prompt is not None else {}),
        "tool": {"etam_mobile": __version__, **(extra or {})},
    }
    doc["stages"]["memory_attention"]["slot_buckets"] = [
        {"memory_slots": int(b["memory_slots"]), "ptr_slots": int(b["ptr_slots"]), "artifacts": dict(b["artifacts"]),
         **({"methods": dict(b["methods"])} if b.get("methods") else {})}
        for b in (slot_buckets or [])
    ]
    return doc


def write_manifest(folder: Path, doc: dict) -> Path:
    path = Path(folder) / MANIFEST_NAME
    path.write_text(json.dumps(doc, indent=2) + "\n")
    return path


MAX_MANIFEST_BYTES = 16 << 20  # a real manifest is tens of KiB; read whole, so bounded up front


def read_manifest(folder: Path) -> dict:
    """Read and sanity-check a manifest; raises ValueError naming the problem and the fix.

    Every field a runtime reads is type-checked here, so a damaged or hand-edited manifest
    is one clear error, never a crash further in."""
    path = Path(folder) / MANIFEST_NAME
    if not Path(folder).is_dir():
        raise ValueError(f"export folder {folder} does not exist; run `etam-mobile export` first")
    if not path.is_file():
        raise ValueError(f"{folder} has no {MANIFEST_NAME}: not an export folder (or an interrupted export); re-export it")
    if path.stat().st_size > MAX_MANIFEST_BYTES:
        raise ValueError(f"{path} is larger than {MAX_MANIFEST_BYTES >> 20} MiB, not a manifest; re-export the folder")
    try:
        doc = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not UTF-8 text; re-export the folder") from None
    except RecursionError:
        raise ValueError(f"{path} nests too deeply to be a manifest; re-export the folder") from None
    except ValueError as exc:  # JSONDecodeError, over-long integers
        msg = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        raise ValueError(f"{path} is not valid JSON ({msg}); re-export the folder") from None
    version = doc.get("format_version") if isinstance(doc, dict) else None
    if version not in READABLE_FORMAT_VERSIONS or isinstance(version, bool):
        shown = repr(version) if len(repr(version)) <= 40 else repr(version)[:37] + "..."
        raise ValueError(
            f"{path} has format_version {shown}, this runtime reads {' and '.join(map(str, READABLE_FORMAT_VERSIONS))}; "
            "re-export with this version of etam-mobile"
        )
    for key in ("config", "capacities", "stages", "checksums", "weights"):
        if key not in doc:
            raise ValueError(f"{path} lacks '{key}'; re-export the folder")
    _check_types(doc, path)
    return doc


def _check_types(doc: dict, path: Path) -> None:
    def bad(what):
        return ValueError(f"{path}: {what}; re-export the folder")

    if not isinstance(doc["config"], str):
        raise bad("'config' is not a name")
    for key in ("capacities", "stages", "checksums", "weights"):
        if not isinstance(doc[key], dict):
            raise bad(f"'{key}' is not an object")
    if doc.get("model") is not None and not isinstance(doc["model"], dict):
        raise bad("'model' is not an object")
    if not all(isinstance(v, str) for v in doc["checksums"].values()):
        raise bad("a checksum is not a string")
    for name, stage in doc["stages"].items():
        if not isinstance(stage, dict) or not isinstance(stage.get("artifacts", {}), dict):
            raise bad(f"stage {name!r} is not an object with 'artifacts'")
        for target, rel in stage.get("artifacts", {}).items():
            if not isinstance(rel, str) or not rel or rel.startswith(("/", "\\")) or ".." in Path(rel).parts \
                    or "\x00" in rel:
                raise bad(f"stage {name!r} artifact for {target!r} is not a file name inside the folder")


def artifact_precision(doc: dict, stage: str, target: str) -> dict:
    """The precision record of one artifact ({"precision", "scheme", "gates", ...}).

    Manifests written before compressed variants existed have no per-artifact records,
    but their folder-level `tool.target_precision` determines every artifact exactly (that
    exporter wrote only fp32 XNNPACK/ONNX and fp16-or-fp32 Core ML), so the record is
    derived from it rather than refused. A manifest with neither raises ValueError.
    """
    rec = doc.get("stages", {}).get(stage, {}).get("precision", {}).get(target)
    if rec is not None:
        return rec
    legacy = doc.get("tool", {}).get("target_precision", {}).get(target)
    if legacy is None:
        raise ValueError(f"manifest.json has no precision record for {stage} ({target}) and no target_precision to "
                         "derive one from; re-export the folder with this etam-mobile")
    return {"precision": legacy, "scheme": "fp32" if legacy == "fp32" else "fp16 compute", "derived": "format 1, "
            "before per-artifact precision records"}
