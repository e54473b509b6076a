"""`etam-mobile segment` on the tiny config: outputs, atomic replacement, and every kind of bad input."""
import json
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from etam_mobile.cli import main

TINY = ["--config", "test_tiny"]


@pytest.fixture()
def photo(tmp_path):
    rng = np.random.default_rng(0)
    img = (rng.random((48, 64, 3)) * 60).astype(np.uint8)
    img[10:30, 20:40] = 220
    path = tmp_path / "photo.png"
    Image.fromarray(img).save(path)
    return path


def query(tmp_path, doc, name="q.json"):
    p = tmp_path / name
    p.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return p


def run(capsys, *args):
    code = main(["-q", *args])
    cap = capsys.readouterr()
    return code, cap.err, cap.out


def segment(capsys, photo, q, out, *extra):
    return run(capsys, "segment", *TINY, "--image", str(photo), "--prompts", str(q), "--out", str(out), *extra)


def test_multimask_writes_three_masks_scores_logits_overlay(photo, tmp_path, capsys):
    out = tmp_path / "out"
    code, err, stdout = segment(capsys, photo, query(tmp_path, {"points": [[30, 20]], "labels": [1]}), out,
                                "--multimask", "--save-logits", "--overlay")
    assert code == 0, err
    assert "note:" not in err  # a single click is what multimask is for
    assert sorted(p.name for p in (out / "masks").iterdir()) == ["0.png", "1.png", "2.png"]
    doc = json.loads((out / "scores.json").read_text())
    z = np.load(out / "logits.npz")
    assert z["logits"].dtype == np.float32 and z["logits"].shape == (3, 48, 64)
    assert doc["order"] == "model" and doc["decoder_tokens"] == [1, 2, 3]
    np.testing.assert_allclose(z["scores"], doc["scores"], atol=1e-6)
    assert doc["best"] == int(np.argmax(z["scores"]))
    for k in range(3):
        m = np.asarray(Image.open(out / "masks" / f"{k}.png"))
        assert m.shape == (48, 64) and set(np.unique(m)) <= {0, 255}
        assert np.array_equal(m == 255, z["logits"][k] > 0)
    assert Image.open(out / "overlay.png").size == (3 * 64, 48)
    assert "3 mask(s) in model order" in stdout
    assert not list(tmp_path.glob(".out.*"))


def test_box_gives_one_mask_and_rerun_replaces_previous_output(photo, tmp_path, capsys):
    out = tmp_path / "out"
    assert segment(capsys, photo, query(tmp_path, {"points": [[30, 20]], "labels": [1]}), out, "--multimask")[0] == 0
    code, err, _ = segment(capsys, photo, query(tmp_path, {"box": [10, 5, 50, 40]}), out)
    assert code == 0, err
    assert sorted(p.name for p in (out / "masks").iterdir()) == ["0.png"]  # old 1.png, 2.png gone
    assert len(json.loads((out / "scores.json").read_text())["scores"]) == 1
    assert not (out / "logits.npz").exists()


def test_refuses_foreign_non_empty_out_without_force(photo, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "thesis.txt").write_text("precious")
    q = query(tmp_path, {"points": [[30, 20]], "labels": [1]})
    code, err, _ = segment(capsys, photo, q, out)
    assert code == 2 and err.strip().startswith("error:") and "--force" in err and len(err.strip().splitlines()) == 1
    assert (out / "thesis.txt").read_text() == "precious"
    code, err, _ = segment(capsys, photo, q, out, "--force")
    assert code == 0, err
    assert not (out / "thesis.txt").exists() and (out / "masks" / "0.png").exists()


def test_multimask_with_box_and_clicks_is_allowed_with_one_note(photo, tmp_path, capsys):
    q = query(tmp_path, {"box": [10, 5, 50, 40], "points": [[30, 20], [12, 40]], "labels": [1, 0]})
    code, err, _ = segment(capsys, photo, q, tmp_path / "out", "--multimask")
    assert code == 0
    notes = [line for line in err.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "--multimask" in notes[0]
    assert len(json.loads((tmp_path / "out" / "scores.json").read_text())["scores"]) == 3


def _png16_rgb(path, h=12, w=16):
    """A 16-bit-per-channel RGB PNG, written by hand (Pillow cannot write one)."""
    rows = b"".join(b"\x00" + struct.pack(">" + "H" * (3 * w), *([40000, 1000, 65535] * w)) for _ in range(h))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


@pytest.mark.parametrize("kind", ["rgb16", "gray16", "cmyk"])
def test_16bit_and_cmyk_are_converted_with_a_note(kind, tmp_path, capsys):
    from etam_mobile.segment import load_image

    path = tmp_path / f"img_{kind}.{'jpg' if kind == 'cmyk' else 'png'}"
    if kind == "rgb16":
        _png16_rgb(path)
    elif kind == "gray16":
        Image.fromarray(np.full((12, 16), 51400, np.uint16)).save(path)
    else:
        Image.new("CMYK", (16, 12), (0, 255, 255, 0)).save(path)
    rgb = load_image(path)
    err = capsys.readouterr().err
    assert rgb.dtype == np.uint8 and rgb.shape == (12, 16, 3)
    assert err.startswith("note:") and ("16 bits" in err or "CMYK" in err)
    if kind == "rgb16":
        assert rgb[0, 0].tolist() == [40000 >> 8, 1000 >> 8, 255]
    elif kind == "gray16":
        assert rgb[0, 0].tolist() == [51400 >> 8] * 3
    else:
        assert rgb[0, 0, 0] > 200 and rgb[0, 0, 1] < 50
    code, err2, _ = segment(capsys, path, query(tmp_path, {"points": [[3, 3]], "labels": [1]}), tmp_path / "out")
    assert code == 0 and err2.count("note:") == 1


BAD_QUERIES = [
    ({}, "empty"),
    ({"points": [], "labels": []}, "empty"),
    ({"id": 1, "frame": 0, "points": [[3, 3]], "labels": [1]}, "belong to `etam-mobile track`"),
    ({"prompts": [{"id": 1, "frame": 0, "points": [[3, 3]], "labels": [1]}]}, "belong to `etam-mobile track`"),
    ({"points": [[300, 20]], "labels": [1]}, "outside the 64x48 image"),
    ({"box": [10, 5, 70, 40]}, "outside the 64x48 image"),
    ({"points": [[30, 20]], "labels": [2]}, "label 2"),
    ({"points": [[30, 20]]}, "together"),
    ({"box": [50, 5, 10, 40]}, "x0 <= x1"),
    ({"points": [[30, 20]], "labels": [1], "mask": "m.png"}, "unknown field"),
    ([[30, 20]], "not an object"),
    ("{not json", "not valid JSON"),
]


@pytest.mark.parametrize("doc,expect", BAD_QUERIES)
def test_bad_queries_one_line_exit_2_nothing_written(doc, expect, photo, tmp_path, capsys):
    out = tmp_path / "out"
    code, err, _ = segment(capsys, photo, query(tmp_path, doc), out)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:")
    assert expect in lines[0] and ";" in lines[0]
    assert "prompt #0" not in lines[0] and "object 1" not in lines[0]
    assert not out.exists() and not list(tmp_path.glob(".out.*"))


def test_unreadable_or_missing_image(tmp_path, capsys):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"this is not a png")
    q = query(tmp_path, {"points": [[3, 3]], "labels": [1]})
    for path, expect in ((bad, "not a readable image"), (tmp_path / "missing.png", "does not exist")):
        code, err, _ = segment(capsys, path, q, tmp_path / "out")
        assert code == 2 and expect in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_missing_query_file(photo, tmp_path, capsys):
    code, err, _ = segment(capsys, photo, tmp_path / "nope.json", tmp_path / "out")
    assert code == 2 and "does not exist" in err


def test_more_clicks_than_the_graph_takes_is_a_prompt_error(tiny_model):
    from etam_mobile.contracts import Capacities
    from etam_mobile.runtime.backends import EagerBackend
    from etam_mobile.runtime.image_mode import ImagePredictor
    from etam_mobile.runtime.tracker import PromptError

    backend = EagerBackend(tiny_model, Capacities(points=4, cond_frames=2))
    backend.point_capacity = 4  # like an exported graph with 4 prompt slots
    pred = ImagePredictor(backend)
    pred.set_image(np.zeros((20, 30, 3), np.uint8))
    assert len(pred.predict([[1, 1], [2, 2], [3, 3]], [1, 0, 1]).scores) == 3
    with pytest.raises(PromptError, match="at most 3"):
        pred.predict([[1, 1]] * 4, [1] * 4)
    with pytest.raises(PromptError, match="one label"):
        pred.predict([[1, 1]], None)
