"""The export folder a benchmark runs on: reuse or export, artifact sizes, delegation report."""
from __future__ import annotations

import json
from pathlib import Path

from .common import BenchError, _log

# ---- exports ----------------------------------------------------------------------------

def _needed_targets(backends) -> list:
    return list(dict.fromkeys("executorch" if b == "executorch-before" else b for b in backends if b != "eager"))


def ensure_artifacts(model, folder: Path | None, backends, quiet: bool, workdir: Path) -> Path | None:
    """Reuse an export folder that has every needed target, else export into it (or a temp folder)."""
    targets = _needed_targets(backends)
    if not targets:
        return None
    from ..manifest import MANIFEST_NAME

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
    """Bytes per stage of `target`'s artifacts: every file the manifest names for it (a stage's
    artifact and its slot buckets'), each distinct file counted once (buckets that are methods of
    the stage's own program add nothing; one file per bucket adds that file)."""
    if folder is None:
        return {}
    from etam_export.common import artifact_size

    doc = json.loads((folder / "manifest.json").read_text())
    out, seen = {}, set()
    for stage, st in doc["stages"].items():
        rels = [st.get("artifacts", {}).get(target)]
        rels += [b.get("artifacts", {}).get(target) for b in st.get("slot_buckets", []) if isinstance(b, dict)]
        files = [rel for rel in dict.fromkeys(rels) if rel and rel not in seen and (folder / rel).exists()]
        seen.update(files)
        if files:
            out[stage] = sum(artifact_size(folder / rel) for rel in files)
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


