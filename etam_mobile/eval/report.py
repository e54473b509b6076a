"""summary.json, the Markdown report and the per-video J&F plot (PIL; no matplotlib needed)."""
from __future__ import annotations

import json
import os
import platform
from pathlib import Path

from PIL import Image, ImageDraw

from .metrics import overall


def _r(x, nd=4):
    return None if x is None else round(float(x), nd)


def build_summary(dataset, layout, protocol, reference, variants, videos, docs, parity, missing, run_info) -> dict:
    """docs[label][video] = worker metrics; parity[label][video] = vs-reference scores."""
    out = {"dataset": str(dataset), "layout": layout, "protocol": protocol, "reference": reference,
           "config": run_info.get("config"), "weights": run_info.get("weights"), "backends": {}}
    for v in variants:
        vd = docs.get(v.label, {})
        pv = parity.get(v.label, {})
        tot = overall(vd)
        vs_objs = {name: p for name, p in pv.items()}
        vs_tot = overall(vs_objs)
        min_ious = [p["min_iou"] for p in pv.values() if p.get("min_iou") is not None]
        worst = sorted(((p["J&F"], name) for name, p in pv.items() if p.get("J&F") is not None))[:3]
        frames = sum(d["frames_processed"] for d in vd.values())
        secs = sum(d["seconds"] for d in vd.values())
        entry = {"J": _r(tot["J"]), "F": _r(tot["F"]), "J&F": _r(tot["J&F"]),
                 "vs_reference": {"J&F": _r(vs_tot["J&F"]), "J": _r(vs_tot["J"]), "F": _r(vs_tot["F"]),
                                  "min_iou": _r(min(min_ious), 6) if min_ious else None,
                                  "worst_videos": [{"video": n, "J&F": _r(s)} for s, n in worst]},
                 "frames_per_second_per_worker": _r(frames / secs, 3) if secs else None,
                 "videos": {}, "missing": missing.get(v.label, {})}
        for name in videos:
            if name in vd:
                d = vd[name]
                entry["videos"][name] = {"J": _r(d["J"]), "F": _r(d["F"]), "J&F": _r(d["J&F"]),
                                         "vs_reference": {"J&F": _r(pv.get(name, {}).get("J&F")),
                                                          "min_iou": _r(pv.get(name, {}).get("min_iou"), 6)},
                                         "objects": d.get("objects", {})}
        out["backends"][v.label] = entry
    out["missing"] = {lab: m for lab, m in missing.items() if m}
    out["run"] = run_info
    return out


def write_json_atomic(path: Path, doc) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(doc, indent=1))
    os.replace(tmp, path)


def _fmt(x, pct=False):
    if x is None:
        return "–"
    return f"{100 * x:.1f}" if pct else f"{x:.4f}"


def markdown(summary: dict) -> str:
    run = summary["run"]
    lines = [f"# etam-mobile eval: {Path(summary['dataset']).name} ({summary['layout']}), protocol {summary['protocol']}",
             "", f"Config `{summary['config']}`, weights {summary['weights']}; reference backend `{summary['reference']}`.",
             "J, F, J&F in % (vos-benchmark, DAVIS conventions: first and last annotated frame not scored); "
             "vs reference = the same metrics with the reference backend's masks as ground truth.", "",
             "| backend | J | F | J&F | J&F vs ref | min IoU vs ref | worst videos vs ref | frames/s per worker | missing |",
             "|---|---|---|---|---|---|---|---|---|"]
    for label, b in summary["backends"].items():
        vs = b["vs_reference"]
        worst = ", ".join(f"{w['video']} ({_fmt(w['J&F'], True)})" for w in vs["worst_videos"]) or "–"
        fps = "–" if b["frames_per_second_per_worker"] is None else f"{b['frames_per_second_per_worker']:.2f}"
        lines.append(f"| {label} | {_fmt(b['J'], True)} | {_fmt(b['F'], True)} | {_fmt(b['J&F'], True)} | "
                     f"{_fmt(vs['J&F'], True)} | {_fmt(vs['min_iou'])} | {worst} | {fps} | {len(b['missing'])} |")
    lines += ["", "## Per video (J&F %)", "", "| video | " + " | ".join(summary["backends"]) + " |",
              "|---|" + "---|" * len(summary["backends"])]
    names = sorted({n for b in summary["backends"].values() for n in list(b["videos"]) + list(b["missing"])})
    for n in names:
        cells = []
        for b in summary["backends"].values():
            cells.append(_fmt(b["videos"][n]["J&F"], True) if n in b["videos"] else "missing")
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    if summary["missing"]:
        lines += ["", "## Missing videos", ""]
        for label, m in summary["missing"].items():
            for n, why in m.items():
                lines.append(f"- `{label}` / `{n}`: {why}")
    t = run.get("throughput", {})
    lines += ["", "## Machine", "",
              f"- scheduler: {run.get('scheduler')} ({run.get('nodes')} node(s), {run.get('cpus')} CPUs), "
              f"{run.get('workers')} worker(s), {run.get('threads')} torch thread(s) each",
              f"- host: {platform.node()} {platform.system()} {platform.machine()}, Python {platform.python_version()}",
              f"- this run: {t.get('frames', 0)} frames tracked in {t.get('wall_seconds', 0):.1f} s wall = "
              f"{t.get('frames_per_second', 0):.2f} frames/s; {run.get('skipped', 0)} video(s) reused from an earlier run", ""]
    return "\n".join(lines)


_COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75)]


def plot(summary: dict, path: Path) -> None:
    """Grouped bars: per-video J&F, one colour per backend."""
    labels = list(summary["backends"])
    names = sorted({n for b in summary["backends"].values() for n in b["videos"]})
    W = max(480, 80 + len(names) * (20 * len(labels) + 24))
    H, top, bottom, left = 360, 40, 80, 50
    im = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(im)
    d.text((left, 10), f"per-video J&F ({summary['protocol']} protocol)", fill="black")
    ph = H - top - bottom
    for k in range(0, 11, 2):
        y = top + ph - ph * k / 10
        d.line([(left, y), (W - 10, y)], fill=(220, 220, 220))
        d.text((5, y - 6), f"{k / 10:.1f}", fill="black")
    x = left + 12
    for n in names:
        for j, lab in enumerate(labels):
            v = summary["backends"][lab]["videos"].get(n, {}).get("J&F")
            if v is not None:
                d.rectangle([x, top + ph - ph * v, x + 16, top + ph], fill=_COLOURS[j % len(_COLOURS)])
            x += 20
        d.text((x - 20 * len(labels), top + ph + 6), n[:14], fill="black")
        x += 24
    for j, lab in enumerate(labels):
        d.rectangle([left + j * 140, H - 24, left + j * 140 + 12, H - 12], fill=_COLOURS[j % len(_COLOURS)])
        d.text((left + j * 140 + 16, H - 24), lab[:18], fill="black")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}.png")
    im.save(tmp)
    os.replace(tmp, path)
