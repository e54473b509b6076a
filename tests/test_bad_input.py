"""Bad input found by trying the CLI as a user would (issue 14): each case ends in one line
`error: <problem>; <fix>`, exit code 2, and nothing written; item numbers are the issue's."""
from __future__ import annotations

import json
import os
import stat
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from etam_mobile.cli import main
from etam_mobile.runtime.frames import FrameError, open_frames
from etam_mobile.runtime import prompts as P
from etam_mobile.runtime.prompts import load_prompts, parse_prompts
from etam_mobile.runtime.tracker import PromptError

from conftest import TINY, run_cli as run, track_cli as track, write_clip, write_prompts


@pytest.fixture()
def clip(tmp_path):
    return write_clip(tmp_path / "frames", frames=3, drift=0)  # a still square, 64x48


def assert_one_line_error(code, err, *fragments):
    """Exit 2 and one `error: ` line, the last; before it at most the synthetic-weights warning."""
    assert code == 2, err
    lines = err.splitlines()
    assert lines and lines[-1].startswith("error: ") and err.endswith("\n") and "Traceback" not in err, err
    assert all(ln.startswith("WARNING: no --checkpoint") for ln in lines[:-1]), err
    for f in fragments:
        assert f in err, err


def click(obj_id=1, frame=0, **kw):
    e = {"id": obj_id, "frame": frame, "points": [[30, 20]], "labels": [1]}
    e.update(kw)
    return e


# ---- item 1: object ids are 1..255 (one byte in the palette PNG, 0 = background) ----------------------

@pytest.mark.parametrize("obj_id", [0, 256, 300, 10**30])
def test_item1_object_ids_outside_a_byte_are_refused(clip, tmp_path, capsys, obj_id):
    prompts = write_prompts(tmp_path / "p.json", [click(obj_id)])
    code, err = track(capsys, clip, prompts, tmp_path / "o")
    assert_one_line_error(code, err, "1..255")
    assert not (tmp_path / "o").exists()


def test_item1_id_rule_is_one_function():
    from etam_mobile.runtime.ids import MAX_OBJ_ID, check_obj_id

    assert MAX_OBJ_ID == 255
    assert check_obj_id(1, "x") == 1 and check_obj_id(255, "x") == 255
    for bad in (0, 256, -1, 10**30, True, 1.0, "3"):
        with pytest.raises(PromptError, match="1..255"):
            check_obj_id(bad, "prompt #0")


def test_item1_tracker_api_refuses_ids_too(tiny_model):
    """The streaming/interactive API (Tracker.add_prompt) applies the same rule."""
    from etam_mobile.runtime.backends import EagerBackend
    from etam_mobile.runtime.tracker import Tracker

    tracker = Tracker(EagerBackend(tiny_model), 2, (48, 64), lambda i: None)
    with pytest.raises(PromptError, match="1..255"):
        tracker.add_prompt(0, 256, [[3.0, 3.0]], [1])


def test_item1_id_255_round_trips_through_the_mask_png(clip, tmp_path, capsys):
    prompts = write_prompts(tmp_path / "p.json", [{"id": 255, "frame": 0, "box": [0, 0, 64, 48]}])
    code, err = track(capsys, clip, prompts, tmp_path / "o", "--save-logits")
    assert code == 0, err
    z = np.load(tmp_path / "o" / "logits.npz")
    mask = np.asarray(Image.open(tmp_path / "o" / "masks" / "00000.png"))
    assert np.array_equal(mask, np.where(z["logits"][0, 0] > 0, 255, 0))


# ---- item 3: 16-bit PNG frames, two files for one frame number ---------------------------------------

def test_item3_16bit_grey_png_is_converted_not_whitened(tmp_path):
    folder = tmp_path / "f"
    folder.mkdir()
    values = np.array([[0, 257 * 64, 257 * 128, 65535]], np.uint16)  # 8-bit 0, 64, 128, 255
    Image.fromarray(values).save(folder / "00000.png")
    assert Image.open(folder / "00000.png").mode.startswith("I")
    rgb = open_frames(folder).rgb(0)
    assert rgb.dtype == np.uint8 and rgb.shape == (1, 4, 3)
    assert rgb[0, :, 0].tolist() == [0, 64, 128, 255] and (rgb[..., 0] == rgb[..., 2]).all()


def test_item3_two_files_for_one_frame_number_are_refused(tmp_path):
    folder = tmp_path / "f"
    folder.mkdir()
    img = np.zeros((8, 8, 3), np.uint8)
    for name in ("00000.png", "1.jpg", "00001.png", "00002.png"):
        Image.fromarray(img).save(folder / name)
    with pytest.raises(FrameError, match=r"00001\.png and 1\.jpg are both frame 1"):
        open_frames(folder)


# ---- item 4: every frame decodes fully before tracking -------------------------------------------------

def test_item4_truncated_jpeg_is_refused_before_tracking(clip, tmp_path, capsys):
    data = (clip / "00002.jpg").read_bytes()
    (clip / "00002.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(FrameError, match="00002.jpg"):
        open_frames(clip)
    prompts = write_prompts(tmp_path / "p.json", [click()])
    code, err = track(capsys, clip, prompts, tmp_path / "o")
    assert_one_line_error(code, err, "00002.jpg", "truncated or corrupt")
    assert not (tmp_path / "o").exists() and not list(tmp_path.glob(".o.partial-*"))


# ---- item 5: an empty checkpoint file -------------------------------------------------------------------

def test_item5_empty_checkpoint(clip, tmp_path, capsys):
    ckpt = tmp_path / "empty.pt"
    ckpt.write_bytes(b"")
    prompts = write_prompts(tmp_path / "p.json", [click()])
    code, err = track(capsys, clip, prompts, tmp_path / "o", "--checkpoint", str(ckpt))
    assert_one_line_error(code, err, "empty.pt", "is empty")


# ---- item 6: prompts against the export's prompt slots, before any frame ---------------------------------

class SlotBackend:
    """Only what the up-front checks read; any stage run means a check came too late."""

    def __init__(self, cfg, points):
        from etam_mobile.contracts import Capacities

        self.cfg, self.capacities, self.point_capacity = cfg, Capacities(points=points), points

    def run(self, stage, inputs):
        raise AssertionError(f"{stage} ran before the prompts were checked")


def test_item6_check_capacity_counts_box_and_not_a_point_token():
    ok = parse_prompts({"prompts": [click(points=[[1, 1]] * 7, labels=[1] * 7),
                                    click(box=[1, 1, 5, 5], points=[[1, 1]] * 5, labels=[1] * 5)]})
    P.check_capacity(ok, 8)
    P.check_capacity(ok, None)  # eager: no slots
    for entry, n in ((click(points=[[1, 1]] * 8, labels=[1] * 8), "8 clicks"),
                     (click(box=[1, 1, 5, 5], points=[[1, 1]] * 6, labels=[1] * 6), "a box and 6 clicks")):
        with pytest.raises(PromptError, match=f"{n}.*at most 7 clicks, or a box and 5.*--max-points"):
            P.check_capacity(parse_prompts({"prompts": [entry]}), 8)


def test_item6_pipeline_checks_slots_before_any_frame(clip, tmp_path, tiny_model):
    from etam_mobile.runtime.pipeline import track_video

    prompts = parse_prompts({"prompts": [click(points=[[1, 1]] * 8, labels=[1] * 8)]})
    with pytest.raises(PromptError, match="at most 7 clicks"):
        track_video(SlotBackend(tiny_model.cfg, 8), clip, prompts, tmp_path / "o", quiet=True)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("backend", ["executorch", "onnx"])
def test_item6_exported_backends_refuse_too_many_clicks(clip, tmp_path, capsys, backend, tiny_export):
    prompts = write_prompts(tmp_path / "p.json", [click(points=[[1, 1]] * 6, labels=[1] * 6, box=[1, 1, 9, 9])])
    code, err = run(capsys, "track", "--backend", backend, "--artifacts", str(tiny_export), "--frames", str(clip),
                    "--prompts", str(prompts), "--out", str(tmp_path / "o"))
    assert_one_line_error(code, err, "a box and 6 clicks", "--max-points")
    assert not (tmp_path / "o").exists()


# ---- item 7: read-only --out, --trace at a folder, --threads -1 (ids: item 1) ----------------------------

def test_item7_unwritable_out_is_refused_up_front(clip, tmp_path, capsys, monkeypatch):
    parent = tmp_path / "ro"
    parent.mkdir()
    real_access = os.access
    # root ignores permission bits, so the read-only folder is simulated where the check asks.
    monkeypatch.setattr(os, "access", lambda p, mode, **k: False if str(p) == str(parent) else real_access(p, mode, **k))
    prompts = write_prompts(tmp_path / "p.json", [click()])
    code, err = track(capsys, clip, prompts, parent / "o")
    assert_one_line_error(code, err, "not writable", str(parent))


def test_item7_out_under_a_file_is_refused(clip, tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    prompts = write_prompts(tmp_path / "p.json", [click()])
    code, err = track(capsys, clip, prompts, tmp_path / "file" / "o")
    assert_one_line_error(code, err, "not a folder")


def test_item7_trace_pointing_at_a_folder_is_refused_before_tracking(clip, tmp_path, capsys):
    (tmp_path / "tr").mkdir()
    prompts = write_prompts(tmp_path / "p.json", [click()])
    code, err = track(capsys, clip, prompts, tmp_path / "o", "--trace", str(tmp_path / "tr"))
    assert_one_line_error(code, err, "--trace", "is a folder")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("args, fragment", [
    (["--threads", "-1"], "--threads"), (["--threads", "0"], "--threads"), (["--seed", str(10**30)], "--seed"),
])
def test_item7_bad_numbers_on_the_command_line(clip, tmp_path, capsys, args, fragment):
    prompts = write_prompts(tmp_path / "p.json", [click()])
    with pytest.raises(SystemExit) as exit_:
        track(capsys, clip, prompts, tmp_path / "o", *args)
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert_one_line_error(2, err, fragment)


# ---- item 8: bounded prompts and prompt files --------------------------------------------------------------

def test_item8_clicks_per_prompt_are_bounded():
    assert P.MAX_CLICKS_PER_PROMPT == 64
    parse_prompts({"prompts": [click(points=[[1, 1]] * 64, labels=[1] * 64)]})
    with pytest.raises(PromptError, match="65 clicks.*at most 64"):
        parse_prompts({"prompts": [click(points=[[1, 1]] * 65, labels=[1] * 65)]})


def test_item8_prompts_per_object_and_frame_are_bounded():
    n = P.MAX_PROMPTS_PER_OBJECT_FRAME
    parse_prompts({"prompts": [click() for _ in range(n)] + [click(frame=1)]})
    with pytest.raises(PromptError, match=f"{n + 1} prompts for object 1 on frame 0.*at most {n}"):
        parse_prompts({"prompts": [click() for _ in range(n + 1)]})


def test_item8_prompt_file_size_is_bounded(tmp_path):
    big = tmp_path / "big.json"
    pts = [[1, 1]] * 262144
    big.write_text(json.dumps({"prompts": [click(points=pts, labels=[1] * len(pts))]}))
    assert big.stat().st_size > P.MAX_PROMPT_FILE_BYTES == 2**20
    with pytest.raises(PromptError, match="larger than 1 MiB"):
        load_prompts(big)


# ---- item 10: the smaller ones ---------------------------------------------------------------------------

def test_item10_max_points_2_cannot_take_a_box(tmp_path, capsys):
    code, err = run(capsys, "export", *TINY, "--max-points", "2", "--targets", "onnx", "--out", str(tmp_path / "e"))
    assert_one_line_error(code, err, "--max-points must be at least 3")
    assert not (tmp_path / "e").exists()


def test_item10_coreml_on_linux_points_to_what_the_folder_has(tmp_path, monkeypatch):
    import platform

    from etam_mobile.runtime import exported

    doc = {"stages": {s: {"artifacts": {"executorch": f"{s}.pte", "onnx": f"{s}.onnx"}} for s in exported.STAGES}}
    monkeypatch.setattr(platform, "system", lambda: "Linux")
    with pytest.raises(exported.ArtifactError) as err:
        exported.check_platform("coreml", doc, tmp_path)
    msg = str(err.value)
    assert "needs macOS" in msg and "--backend executorch or onnx" in msg and "--targets coreml" not in msg


def test_item10_random_bytes_checkpoint_never_advises_weights_only_false(clip, tmp_path, capsys):
    import pickle

    ckpt = tmp_path / "random.pt"
    ckpt.write_bytes(pickle.dumps(print))  # a pickle that would need code to load
    prompts = write_prompts(tmp_path / "p.json", [click()])
    code, err = track(capsys, clip, prompts, tmp_path / "o", "--checkpoint", str(ckpt))
    assert_one_line_error(code, err, "random.pt")
    assert "weights_only" not in err


@pytest.mark.parametrize("entry, fragment", [
    (click(points=[40, 60]), "a list of [x, y] pairs"),
    (click(points=[[float("nan"), 3]]), "finite"),
    (click(points=[[float("inf"), 3]]), "finite"),
    ({"id": 1, "frame": 0, "box": [0, 0, float("nan"), 4]}, "finite"),
])
def test_item10_flat_points_and_nan(entry, fragment):
    with pytest.raises(PromptError, match=fragment.replace("[", r"\[").replace("]", r"\]")):
        parse_prompts({"prompts": [entry]})


def test_item10_nan_in_a_prompt_file(tmp_path):
    p = tmp_path / "nan.json"
    p.write_text('{"prompts": [{"id": 1, "frame": 0, "points": [[NaN, 3]], "labels": [1]}]}')
    with pytest.raises(PromptError, match="finite"):
        load_prompts(p)


def test_item10_utf8_bom_is_accepted(tmp_path):
    p = tmp_path / "bom.json"
    p.write_bytes(b"\xef\xbb\xbf" + json.dumps({"prompts": [click()]}).encode())
    assert load_prompts(p)[0].obj_id == 1


def test_item10_readme_has_the_sections_errors_point_to():
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    headings = {m.group(1).strip() for m in re.finditer(r"^#+ (.+)$", (root / "README.md").read_text(), re.M)}
    cited = set()
    for py in list((root / "etam_mobile").rglob("*.py")) + list((root / "export").rglob("*.py")):
        cited |= set(re.findall(r"README (?:section )?'([^']+)'", py.read_text()))
    assert "Prompt files" in cited
    assert cited <= headings, cited - headings


def test_item10_outputs_get_normal_permissions(clip, tmp_path, capsys):
    from etam_mobile.atomic import make_partial

    umask = os.umask(0o022)
    try:
        prompts = write_prompts(tmp_path / "p.json", [click()])
        code, err = track(capsys, clip, prompts, tmp_path / "o")
        assert code == 0, err
        assert stat.S_IMODE((tmp_path / "o").stat().st_mode) == 0o755
        assert stat.S_IMODE(make_partial(tmp_path / "x").stat().st_mode) == 0o755  # the exporter's too
    finally:
        os.umask(umask)


def test_item10_export_folder_permissions(tiny_export):
    mode = stat.S_IMODE(tiny_export.stat().st_mode)
    assert mode & 0o055 == 0o055 & ~current_umask()


def current_umask():
    m = os.umask(0)
    os.umask(m)
    return m


@pytest.mark.parametrize("args", [["--warmup", "-1"], ["--frames", "0"], ["--scaling-reps", "0"]])
def test_item10_bench_negative_counts_are_refused(capsys, tmp_path, args):
    with pytest.raises(SystemExit) as exit_:
        main(["-q", "bench", *TINY, "--backends", "eager", "--json", str(tmp_path / "b.json"), *args])
    assert exit_.value.code == 2
    assert_one_line_error(2, capsys.readouterr().err, args[0])


def test_item10_executorch_cpuinfo_lines_are_silenced(capfd, tiny_export):
    from etam_mobile.runtime.exported import open_backend

    open_backend("executorch", tiny_export)
    err = capfd.readouterr().err
    assert "cpuinfo_utils" not in err


def test_item10_save_logits_announces_size_and_float16_halves_it(clip, tmp_path, capsys):
    prompts = write_prompts(tmp_path / "p.json", [click(), {"id": 2, "frame": 0, "box": [1, 1, 20, 20]}])
    code = main(["track", *TINY, "--frames", str(clip), "--prompts", str(prompts), "--out", str(tmp_path / "a"),
                 "--save-logits"])
    err = capsys.readouterr().err
    assert code == 0
    nbytes = 3 * 2 * 48 * 64 * 4
    assert f"logits.npz: 3 frames x 2 objects x 64x48 float32 = {nbytes / 2**20:.2f} MiB" in err, err
    code = main(["-q", "track", *TINY, "--frames", str(clip), "--prompts", str(prompts), "--out", str(tmp_path / "b"),
                 "--save-logits", "--logits-dtype", "float16"])
    assert code == 0
    a, b = np.load(tmp_path / "a" / "logits.npz"), np.load(tmp_path / "b" / "logits.npz")
    assert b["logits"].dtype == np.float16 and a["logits"].dtype == np.float32
    assert np.allclose(a["logits"], b["logits"].astype(np.float32), rtol=1e-3, atol=1e-3)
    assert (tmp_path / "b" / "logits.npz").stat().st_size < 0.6 * (tmp_path / "a" / "logits.npz").stat().st_size


def test_item10_prompt_file_that_is_a_folder_or_not_utf8(tmp_path):
    with pytest.raises(PromptError, match="is a folder"):
        load_prompts(tmp_path)
    p = tmp_path / "latin1.json"
    p.write_bytes(b'{"prompts": "\xff"}')
    with pytest.raises(PromptError, match="UTF-8"):
        load_prompts(p)


def _png(w, h, bit_depth, colour_type, raw):
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, bit_depth, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def test_frames_larger_than_the_pixel_bound_are_refused_from_the_header(tmp_path):
    from etam_mobile.runtime.frames import MAX_FRAME_PIXELS

    folder = tmp_path / "f"
    folder.mkdir()
    (folder / "00000.png").write_bytes(_png(20000, 20000, 8, 0, b"\x00"))  # 400 Mpx claimed, 1 byte of data
    with pytest.raises(FrameError, match="00000.png is larger than the 64 Mpx"):
        open_frames(folder)
    (folder / "00000.png").write_bytes(_png(9000, 9000, 8, 0, b"\x00"))  # 81 Mpx: under Pillow's own limit
    with pytest.raises(FrameError, match="00000.png is 9000x9000, more than the 64 Mpx"):
        open_frames(folder)
    assert MAX_FRAME_PIXELS == 8192 * 8192


def test_non_json_number_forms_are_refused(tmp_path):
    p = tmp_path / "deep.json"
    p.write_text("[" * 100000)
    with pytest.raises(PromptError, match="nests lists or objects too deeply"):
        load_prompts(p)
    p.write_text('{"prompts": [{"id": 1' + "0" * 5000 + ', "frame": 0, "box": [0, 0, 1, 1]}]}')
    with pytest.raises(PromptError):
        load_prompts(p)
