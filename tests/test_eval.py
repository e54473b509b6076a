"""`etam-mobile eval` on generated DAVIS- and SA-V-layout datasets (moving, occluding shapes).

Synthetic weights make J&F against ground truth meaningless; what is gated is the metric
wrapper on hand-made cases, exported-vs-eager parity at dataset scale, and the run's
robustness: a killed worker, a rerun, bad input.

Kept cheap: two short videos per layout (enough for occlusion, a late object, a killed and a
clean video), one export shared with the export tests, one Ray start (its rerun goes through the
local pool, which shares the skip logic), and a single rerun that checks reuse and a corrupted
result together.
"""
from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from etam_mobile.cli import main
from etam_mobile.eval import EvalError
from etam_mobile.eval.datasets import load_dataset
from etam_mobile.eval.metrics import iou, overall, score_object, score_video
from etam_mobile.eval.protocols import (EvalPrompt, mask_box, mask_click, mask_prompts_supported, require_protocol,
                                        write_prompt_file)
from etam_mobile.eval.synthetic import make_davis, make_sav
from etam_mobile.eval.tasks import KILL_ENV

MASK_SKIP = "mask prompts not available in this tree"
PARITY_MIN_IOU = 0.99  # exported fp32 graphs vs eager, worst object on any scored frame
PARITY_JF = 0.995  # J&F of an exported backend with eager's masks as ground truth


@pytest.fixture(scope="module")
def davis(tmp_path_factory):
    return make_davis(tmp_path_factory.mktemp("ds") / "davis", videos=2, frames=5)


@pytest.fixture(scope="module")
def sav(tmp_path_factory):
    return make_sav(tmp_path_factory.mktemp("ds") / "sav", videos=2, frames=5)


def run(args, capsys=None):
    code = main(["-q", "eval", "--config", "test_tiny", "--threads", "1", *map(str, args)])
    return code


# ---- metrics and protocols -----------------------------------------------------------------

def square(h, w, x0, y0, side):
    m = np.zeros((h, w), bool)
    m[y0:y0 + side, x0:x0 + side] = True
    return m


def test_identical_prediction_scores_one():
    gts = [square(40, 50, 5 + t, 8, 12) for t in range(4)]
    s = score_object(gts, gts)
    assert s == {"J": 1.0, "F": 1.0, "J&F": 1.0}


def test_shifted_mask_gives_the_expected_j():
    # 12x12 square shifted 3 px right: intersection 12*9 = 108, union 12*15 = 180 -> J = 0.6.
    gts = [square(40, 50, 10, 10, 12)] * 3
    preds = [square(40, 50, 13, 10, 12)] * 3
    s = score_object(preds, gts)
    assert s["J"] == pytest.approx(108 / 180, abs=1e-12)
    assert 0 < s["F"] < 1
    assert iou(preds[0], gts[0]) == pytest.approx(0.6)
    # label maps: object 2 exact, object 1 shifted -> video J is the mean over objects
    lab_gt = np.where(gts[0], 1, 0) + np.where(square(40, 50, 30, 25, 8), 2, 0)
    lab_pr = np.where(preds[0], 1, 0) + np.where(square(40, 50, 30, 25, 8), 2, 0)
    gt_masks = [{1: lab_gt == 1, 2: lab_gt == 2}] * 3
    v = score_video([lab_pr] * 3, gt_masks, [1, 2])
    assert v["objects"]["2"]["J"] == 1.0 and v["J"] == pytest.approx((0.6 + 1.0) / 2)
    assert overall({"a": v})["J"] == pytest.approx(0.8)


def test_box_and_click_from_mask():
    m = square(30, 40, 5, 7, 9)
    assert mask_box(m) == [5.0, 7.0, 13.0, 15.0]
    assert mask_click(m) == [9.0, 11.0]  # the centre pixel of an odd square
    m2 = np.zeros((20, 20), bool)
    m2[2:6, 2:8] = True  # even sides: several pixels tie; the first in row-major order wins
    x, y = mask_click(m2)
    assert (x, y) == (3.0, 3.0) and m2[int(y), int(x)]  # distance 2 on rows 3-4, columns 3-6
    edge = np.zeros((10, 10), bool)
    edge[:, :3] = True  # the frame border is a boundary: the click is not on column 0
    assert mask_click(edge)[0] == 1.0


def test_mask_prompt_file_format(tmp_path):
    m = square(20, 30, 3, 4, 6)
    path = write_prompt_file(tmp_path, [EvalPrompt(7, 2, m)])
    doc = json.loads(path.read_text())
    assert doc == {"prompts": [{"id": 7, "frame": 2, "mask": "masks/obj7.png"}]}
    png = np.asarray(Image.open(tmp_path / "masks/obj7.png"))
    assert set(np.unique(png)) == {0, 255} and np.array_equal(png == 255, m)


def test_mask_protocol_capability():
    if mask_prompts_supported():
        require_protocol("mask")
    else:
        with pytest.raises(EvalError, match="--protocol box or --protocol click"):
            require_protocol("mask")


@pytest.mark.skipif(not mask_prompts_supported(), reason=MASK_SKIP)
def test_mask_protocol_tracks_in_process(davis, tiny_model):
    from etam_mobile.eval.tasks import track
    from etam_mobile.runtime.backends import EagerBackend

    _, videos = load_dataset(davis)
    labels, processed = track(EagerBackend(tiny_model), videos[0], "mask")
    assert processed == len(videos[0].frames) and len(labels) == processed


# ---- datasets ------------------------------------------------------------------------------

def test_void_label_is_no_object_and_not_scored(tmp_path):
    """Palette 255 = void (DAVIS): never an object, not in prompts, not in J/F."""
    from etam_mobile.eval.protocols import make_prompt
    from etam_mobile.eval.synthetic import void_columns

    ds = make_davis(tmp_path / "void", videos=1, frames=5, void_band=True)
    _, (video,) = load_dataset(ds)
    assert video.objects == {1: "1", 2: "2"}  # 255 is not an object
    band = void_columns((video.width, video.height))
    masks, void = video.annotation(0)
    assert void is not None and void[:, band].all() and void.sum() == void[:, band].size
    assert not any((m & void).any() for m in masks.values())
    for pid, m in masks.items():
        for protocol in ("mask", "click"):
            p = make_prompt(protocol, pid, 0, m)
            assert not (p.mask & void).any()
            assert p.points is None or not void[int(p.points[0][1]), int(p.points[0][0])]
    # a perfect prediction scores 1 whatever it says on void pixels; unmasked it would not
    frames = video.eval_frames
    anns = [video.annotation(i) for i in frames]
    raw = [np.asarray(Image.open(f"{video.ann_dir}/{video.stem(i)}.png")) for i in frames]
    perfect = [np.where(r == 255, 0, r) for r in raw]
    assert {int(x) for r in raw for x in np.unique(r)} >= {255}
    s = score_video(perfect, [a[0] for a in anns], sorted(video.objects), [a[1] for a in anns])
    assert s["J&F"] == 1.0 and set(s["objects"]) == {"1", "2"}
    greedy = [np.where(r == 255, 1, r) for r in raw]  # object 1 claims the whole void band
    s = score_video(greedy, [a[0] for a in anns], sorted(video.objects), [a[1] for a in anns])
    assert s["J"] == 1.0 and s["F"] == 1.0
    assert score_video(greedy, [a[0] for a in anns], sorted(video.objects))["J"] < 1.0
    # end to end in this process: outputs and metrics know objects 1 and 2 only
    from etam_mobile.eval.tasks import Variant, run_task

    res = run_task({"video": video, "variant": Variant("eager", "eager", "test_tiny"), "protocol": "box",
                    "out": str(tmp_path / "res"), "key": {}})
    assert set(res["objects"]) == {"1", "2"} and 0 <= res["J&F"] <= 1
    for i in range(len(video.frames)):
        assert set(np.unique(np.asarray(Image.open(tmp_path / f"res/eager/{video.name}/{video.stem(i)}.png")))) <= {0, 1, 2}



def test_layouts_detected(davis, sav):
    layout, videos = load_dataset(davis)
    assert layout == "davis" and [v.name for v in videos] == ["shapes00", "shapes01"]
    assert videos[0].eval_frames == [1, 2, 3] and sorted(videos[1].objects) == [1, 2, 3]
    layout, videos = load_dataset(sav)
    assert layout == "sav" and videos[0].annotated == [0, 2, 4] and videos[0].eval_frames == [2]
    assert videos[0].objects == {1: "000", 2: "001"}
    assert videos[1].first_frame == {1: 0, 2: 2}  # the late object is prompted where it first appears


def copy_ds(src, tmp_path):
    dst = tmp_path / src.name
    shutil.copytree(src, dst)
    return dst


def expect_bad(args, capsys, *words):
    assert run(args) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    ours = [ln for ln in lines if ln.startswith("error: ")]  # torchao/executorch may log on import
    assert len(ours) == 1 and lines[-1] == ours[0], lines
    err = ours[0]
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    for w in words:
        assert w in err, err
    return err


def test_bad_layouts_and_annotations(davis, sav, tmp_path, capsys):
    out = tmp_path / "out"
    odd = tmp_path / "odd"
    (odd / "frames").mkdir(parents=True)
    expect_bad(["--dataset", odd, "--out", out, "--protocol", "box"], capsys,
               "no known layout", "JPEGImages/480p", "Annotations_6fps/<video>/<obj 000>")
    d = copy_ds(davis, tmp_path / "a")
    (d / "Annotations/480p/shapes01/00000.png").unlink()
    expect_bad(["--dataset", d, "--out", out, "--protocol", "box"], capsys, "no annotation for its first frame")
    d = copy_ds(davis, tmp_path / "b")
    Image.open(d / "Annotations/480p/shapes00/00002.png").resize((50, 40)).save(d / "Annotations/480p/shapes00/00002.png")
    expect_bad(["--dataset", d, "--out", out, "--protocol", "box"], capsys, "00002.png is 50x40", "96x64")
    d = copy_ds(davis, tmp_path / "c")
    p = d / "Annotations/480p/shapes00/00003.png"
    im = Image.open(p)
    a = np.asarray(im).copy()
    a[0:3, 0:3] = 9
    out_im = Image.fromarray(a, mode="P")
    out_im.putpalette(im.getpalette())
    out_im.save(p)
    expect_bad(["--dataset", d, "--out", out, "--protocol", "box"], capsys, "palette index 9", "no object")
    s = copy_ds(sav, tmp_path / "d")
    (s / "Annotations_6fps/sav_000000/001/00000.png").unlink()
    expect_bad(["--dataset", s, "--out", out, "--protocol", "box"], capsys, "object 001", "first annotated frame")
    s = copy_ds(sav, tmp_path / "e")
    os.rename(s / "Annotations_6fps/sav_000000/001", s / "Annotations_6fps/sav_000000/254")
    expect_bad(["--dataset", s, "--out", out, "--protocol", "box"], capsys, "id 255", "1..254", "void")
    assert not out.exists()  # nothing written for bad input


def test_coreml_refused_off_macos_before_any_work(tmp_path, capsys, monkeypatch):
    import etam_mobile.eval.run as run_mod

    monkeypatch.setattr(run_mod.platform, "system", lambda: "Linux")  # the refusal, on any OS
    # the dataset does not even exist: the platform is checked before anything is read or written
    expect_bad(["--dataset", tmp_path / "nowhere", "--out", tmp_path / "o", "--backends", "eager,coreml",
                "--artifacts", tmp_path / "exp"], capsys, "--backends coreml needs macOS", "Linux", "run this eval on a Mac")
    assert not (tmp_path / "o").exists()


def test_unreachable_ray_address_fails_naming_it(davis, tmp_path, capsys):
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    expect_bad(["--dataset", davis, "--out", tmp_path / "o", "--protocol", "box", "--ray", f"127.0.0.1:{port}"],
               capsys, f"127.0.0.1:{port}", "ray start --head")
    assert not (tmp_path / "o").exists()


# ---- end to end ----------------------------------------------------------------------------

def read(out):
    return json.loads((out / "summary.json").read_text())


def test_local_pool_exported_parity_killed_worker_and_rerun(davis, tiny_export, tmp_path, capsys, monkeypatch):
    art = tiny_export
    out = tmp_path / "res"
    marker = tmp_path / "killed"
    monkeypatch.setenv(KILL_ENV, f"shapes01:{marker}")
    args = ["--dataset", davis, "--backends", "eager,executorch,onnx", "--artifacts", art, "--protocol", "box",
            "--workers", "2", "--out", out, "--markdown", tmp_path / "r.md", "--plot", tmp_path / "r.png"]
    assert run(args) == 0, capsys.readouterr().err
    assert marker.exists()  # a worker really died mid-video; its video was retried and completed
    s = read(out)
    assert s["dataset"] == str(davis.resolve()) and s["protocol"] == "box" and not s["missing"]
    killed = int(marker.read_text())
    for label in ("eager", "executorch", "onnx"):
        b = s["backends"][label]
        assert set(b["videos"]) == {"shapes00", "shapes01"}
        for key in ("J", "F", "J&F"):
            assert 0 <= b[key] <= 1
        for name in b["videos"]:
            doc = json.loads((out / label / name / "metrics.json").read_text())
            assert doc["worker"]["backend_loads"] == 1  # artifacts loaded once per worker
            assert name != "shapes01" or doc["worker"]["pid"] != killed  # redone by a fresh worker
            png = Image.open(out / label / name / "00003.png")
            assert png.mode == "P" and png.size == (96, 64)
            assert set(np.unique(np.asarray(png))) <= {0, *map(int, doc["objects_palette"])}
    assert s["backends"]["eager"]["vs_reference"] == {**s["backends"]["eager"]["vs_reference"], "J&F": 1.0, "min_iou": 1.0}
    for label in ("executorch", "onnx"):
        vs = s["backends"][label]["vs_reference"]
        assert vs["min_iou"] >= PARITY_MIN_IOU and vs["J&F"] >= PARITY_JF, (label, vs)
        assert abs(s["backends"][label]["J&F"] - s["backends"]["eager"]["J&F"]) <= 1 - PARITY_JF
    assert not list(out.glob("*/.partial-*"))  # the killed attempt left nothing behind
    assert "| executorch |" in (tmp_path / "r.md").read_text() and Image.open(tmp_path / "r.png").size[0] >= 480

    # rerun: verified videos reused untouched; a corrupted result is not trusted, only its video is redone
    bad = out / "onnx/shapes00/00004.png"
    bad.write_bytes(b"garbage")
    before = {p: p.stat().st_mtime_ns for p in out.glob("*/*/*.png") if p.parent != bad.parent}
    monkeypatch.delenv(KILL_ENV)
    assert run(args) == 0
    s = read(out)
    assert s["run"]["skipped"] == 5 and s["run"]["throughput"]["frames"] == 5 and not s["missing"]
    assert before == {p: p.stat().st_mtime_ns for p in out.glob("*/*/*.png") if p.parent != bad.parent}
    assert Image.open(bad).mode == "P"

    # bad input against an existing results folder: one-line error, nothing lost
    expect_bad([*args[:-6], "--protocol", "click", "--out", out], capsys, "another evaluation", "--force")
    expect_bad(["--config", "test_tiny_pool1", *args], capsys, "exported for config test_tiny")
    assert before.keys() <= set(out.glob("*/*/*.png")) and read(out)["run"]["skipped"] == 5


def test_ray_two_workers_sav_worker_dies_twice(sav, tmp_path, capsys, monkeypatch):
    out = tmp_path / "res"
    monkeypatch.setenv(KILL_ENV, "sav_000001:always")
    args = ["--dataset", sav, "--backends", "eager", "--protocol", "click", "--ray", "--workers", "2", "--out", out,
            "--markdown", tmp_path / "r.md"]
    assert run(args) == 1  # the run finishes; one video is missing and said so
    err = capsys.readouterr().err
    assert "missing: eager/sav_000001" in err and "rerun the same command" in err
    s = read(out)
    assert s["run"]["scheduler"] == "ray" and s["run"]["workers"] == 2
    assert list(s["backends"]["eager"]["videos"]) == ["sav_000000"]
    assert "died" in s["missing"]["eager"]["sav_000001"] and "failed twice" in s["missing"]["eager"]["sav_000001"]
    assert "sav_000001" in (tmp_path / "r.md").read_text()
    names = sorted(p.name for p in (out / "eager/sav_000000").glob("*.png"))
    assert names == ["00000.png", "00002.png", "00004.png"]  # annotated frames only
    # rerun without the fault (on the local pool: one Ray start per test is enough): only the missing video runs
    monkeypatch.delenv(KILL_ENV)
    assert run([a for a in args[:-2] if a != "--ray"]) == 0
    s = read(out)
    assert s["run"]["skipped"] == 1 and not s["missing"] and set(s["backends"]["eager"]["videos"]) == {
        "sav_000000", "sav_000001"}
