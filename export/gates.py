"""Accuracy gates of a compressed variant, measured at export time.

Two rungs of the parity ladder (DESIGN.md):
- per stage: PSNR of each output of the variant's stage against the fp32 eager stage, on
  the exporter's example inputs and on real frames (image encoder);
- chained tracking: the recorded upstream cases' protocols (tests/fixtures/upstream_cases:
  frames, clicks, boxes, corrections; prompts are in frame pixels, so any config can replay
  them) run through the tracker twice, once on the variant and once on fp32 eager with the
  same capacities; every mask the protocol yields is compared per frame and object.

A variant with synthetic weights is judged on synthetic weights: the numbers are a lower
bound on what the pipeline preserves, not a claim about a trained model, and the exporter
reruns the gates on the user's checkpoint.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

# Per-stage PSNR gates (dB) by precision of the artifact; fp32 keeps the exporters' own
# max-abs-error gate (common.parity).
MIN_PSNR = {"int8": 30.0, "int8-4w": 30.0, "fp16": 35.0, "w8a8": 30.0, "palettize6": 30.0, "palettize4": 30.0}
# Chained tracking gates against fp32 eager.
MIN_CASE_MEAN_IOU = 0.97
MIN_FRAME_IOU = 0.90

CASES_DIR = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "upstream_cases"
# Default gate cases: short ones that still cover a box, clicks, two objects and a correction.
DEFAULT_CASES = ("ti_plain_two_objects", "s_plain_correction")


class GateError(ValueError):
    """A missed gate: names the stage (or case), the figure, the threshold and a plan that passes."""


def psnr(ref: np.ndarray, got: np.ndarray) -> float:
    r, g = np.asarray(ref, np.float64), np.asarray(got, np.float64)
    rmse = float(np.sqrt(np.mean((r - g) ** 2))) if r.size else 0.0
    peak = float(np.abs(r).max()) if r.size else 0.0
    if not np.isfinite(g).all():
        return -200.0
    if rmse == 0:
        return 200.0
    return round(min(20 * math.log10(peak / rmse), 200.0), 2) if peak > 0 else -200.0


def stage_gate(refs: list, gots: list, names: list, precision: str, inputs_label: str = "example inputs") -> dict:
    """PSNR of every output; ok when each clears MIN_PSNR[precision]."""
    floor = MIN_PSNR[precision]
    outs = {}
    for name, r, g in zip(names, refs, gots):
        item = {"psnr_db": psnr(r, np.asarray(g).reshape(np.shape(r)))}
        if name.startswith("mask"):
            a, b = np.asarray(r) > 0, np.asarray(g).reshape(np.shape(r)) > 0
            union = np.logical_or(a, b).sum()
            item["mask_iou"] = round(float(np.logical_and(a, b).sum() / union) if union else 1.0, 4)
        item["ok"] = item["psnr_db"] >= floor
        outs[name] = item
    return {"on": inputs_label, "gate": f"PSNR >= {floor:g} dB vs fp32 eager", "ok": all(o["ok"] for o in outs.values()),
            "outputs": outs, "min_psnr_db": min((o["psnr_db"] for o in outs.values()), default=200.0)}


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def case_dirs(names=None) -> list:
    """The gate cases (names from DEFAULT_CASES unless given); [] when the fixtures are absent."""
    if not CASES_DIR.is_dir():
        return []
    names = DEFAULT_CASES if names is None else names
    return [CASES_DIR / n for n in names if (CASES_DIR / n / "case.json").is_file()]


def replay(case_dir: Path, backend) -> dict:
    """Run a case's protocol on `backend`; returns {(step, frame, obj_id): low-res logits} for
    everything the protocol yields (prompt outputs and every propagated frame)."""
    from etam_mobile.preprocess import preprocess_frame
    from etam_mobile.runtime.frames import open_frames
    from etam_mobile.runtime.tracker import Tracker

    case = json.loads((case_dir / "case.json").read_text())
    frames = open_frames(case_dir / "frames")
    S = backend.cfg.image_size
    cache = {}

    def image(i):
        if i not in cache:
            cache[i] = preprocess_frame(frames.rgb(i), S).numpy()
        return cache[i]

    tracker = Tracker(backend, len(frames), (frames.height, frames.width), image)
    out = {}
    for i, step in enumerate(case["protocol"]):
        if step.get("propagate"):
            for f, ids, low in tracker.propagate(step.get("start")):
                for j, oid in enumerate(ids):
                    out[(i, f, oid)] = np.asarray(low[j])
                if f == step.get("stop_after"):
                    break
        else:
            low = tracker.add_prompt(step["frame"], step["id"], step.get("points"), step.get("labels"), step.get("box"))
            out[(i, step["frame"], step["id"])] = np.asarray(low)
    return out


def tracking_gate(variant_backend, reference_backend, cases: list, progress=None) -> dict:
    """Chained tracking of the variant vs fp32 eager on each case: mean IoU per case and the
    worst frame/object; ok when every case clears both gates. `progress(name, case_report)` is
    called as each case ends (a full-size case takes minutes)."""
    report = {"gate": f"mask IoU vs fp32 eager: mean >= {MIN_CASE_MEAN_IOU} per case, >= {MIN_FRAME_IOU} "
                      "every frame and object", "cases": {}}
    for case_dir in cases:
        report["cases"][case_dir.name] = case = _case_report(case_dir, variant_backend, reference_backend)
        if progress is not None:
            progress(case_dir.name, case)
    report["ok"] = all(c["ok"] for c in report["cases"].values()) if report["cases"] else True
    if not cases:
        report["skipped"] = f"no gate cases found under {CASES_DIR}"
    return report


def _case_report(case_dir, variant_backend, reference_backend) -> dict:
    got, ref = replay(case_dir, variant_backend), replay(case_dir, reference_backend)
    if set(got) != set(ref):
        return {"ok": False, "problem": "the variant yielded other frames/objects"}
    ious = {k: mask_iou(np.asarray(got[k]) > 0, np.asarray(ref[k]) > 0) for k in ref}
    worst = min(ious, key=ious.get)
    mean = float(np.mean(list(ious.values())))
    return {"masks": len(ious), "mean_iou": round(mean, 4), "min_iou": round(ious[worst], 4),
            "worst": {"step": worst[0], "frame": worst[1], "object": worst[2]},
            "ok": mean >= MIN_CASE_MEAN_IOU and ious[worst] >= MIN_FRAME_IOU}


def failures(stage_reports: dict, tracking: dict | None) -> list:
    """Human lines for every missed gate (empty when all passed)."""
    lines = []
    for (stage, target), rep in stage_reports.items():
        for gate in rep:
            if gate["ok"]:
                continue
            bad = [f"{n} {o['psnr_db']:.1f} dB" for n, o in gate["outputs"].items() if not o["ok"]]
            lines.append(f"stage {stage} ({target}, {gate['precision']}) on {gate['on']}: PSNR {', '.join(bad)} < "
                         f"{MIN_PSNR[gate['precision']]:g} dB; a plan that passes keeps it in higher precision: "
                         f"{gate['fix']}")
    if tracking and not tracking["ok"]:
        for name, c in tracking["cases"].items():
            if c["ok"]:
                continue
            if "problem" in c:
                lines.append(f"tracking case {name}: {c['problem']}")
                continue
            lines.append(f"tracking case {name}: mean mask IoU {c['mean_iou']:.4f} (>= {MIN_CASE_MEAN_IOU}), "
                         f"worst {c['min_iou']:.4f} on frame {c['worst']['frame']} object {c['worst']['object']} "
                         f"(>= {MIN_FRAME_IOU}); {tracking.get('fix', 'keep memory_attention in fp32')}")
    return lines
