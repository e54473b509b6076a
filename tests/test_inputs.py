"""Bad prompt files and frame folders are refused with a message that names problem and fix."""

import numpy as np
import pytest
from PIL import Image

from etam_mobile.runtime.frames import FrameError, open_frames
from etam_mobile.runtime.prompts import check_against_video, load_prompts, parse_prompts
from etam_mobile.runtime.tracker import PromptError


def ok_entry(**kw):
    e = {"id": 1, "frame": 0, "points": [[10, 10]], "labels": [1]}
    e.update(kw)
    return e


@pytest.mark.parametrize(
    "data, message",
    [
        ({}, "prompt file must be"),
        ({"prompts": []}, "prompt file must be"),
        ({"prompts": [ok_entry(id="a")]}, "object id 'a' must be an integer 1..255"),
        ({"prompts": [ok_entry(frame=-1)]}, "'frame' must be a non-negative integer"),
        ({"prompts": [ok_entry(labels=[2])]}, "must be 1 (positive click) or 0"),
        ({"prompts": [ok_entry(labels=[1, 0])]}, "1 points but 2 labels"),
        ({"prompts": [ok_entry(points=[[1, 2, 3]])]}, "each point must be a list of 2 numbers"),
        ({"prompts": [{"id": 1, "frame": 0, "box": [50, 10, 20, 30]}]}, "x0 <= x1"),
        ({"prompts": [{"id": 1, "frame": 0, "box": [1, 2, 3]}]}, "list of 4 numbers"),
        ({"prompts": [{"id": 3, "frame": 0, "points": [], "labels": []}]}, "object 3 has no points and no box"),
        ({"prompts": [{"id": 3, "frame": 0}]}, "object 3 has no points and no box"),
        ({"prompts": [ok_entry(colour="red")]}, "unknown field"),
        ({"prompts": [{"id": 1, "frame": 0, "points": [[1, 1]]}]}, "must be given together"),
    ],
)
def test_malformed_prompts(data, message):
    with pytest.raises(PromptError) as err:
        parse_prompts(data)
    assert message in str(err.value)


def test_prompt_json_errors(tmp_path):
    with pytest.raises(PromptError, match="does not exist"):
        load_prompts(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{prompts: ")
    with pytest.raises(PromptError, match="not valid JSON"):
        load_prompts(bad)


@pytest.mark.parametrize(
    "entry, message",
    [
        (ok_entry(frame=8), "only 8 frames"),
        (ok_entry(points=[[321, 10]]), "outside the 320x240 frame"),
        (ok_entry(points=[[10, -1]]), "outside the 320x240 frame"),
        ({"id": 1, "frame": 0, "box": [0, 0, 100, 300]}, "outside the 320x240 frame"),
    ],
)
def test_prompts_checked_against_video(entry, message):
    prompts = parse_prompts({"prompts": [entry]})
    with pytest.raises(PromptError, match=message):
        check_against_video(prompts, 8, 320, 240)


def test_valid_prompts_parse():
    p = parse_prompts({"prompts": [ok_entry(), {"id": 2, "frame": 3, "box": [1, 2, 30, 40], "points": [[5, 5]], "labels": [0]}]})
    assert p[1].box == [1.0, 2.0, 30.0, 40.0] and p[1].labels == [0] and p[0].points == [[10.0, 10.0]]


def write_frames(folder, sizes):
    folder.mkdir()
    for i, (w, h) in enumerate(sizes):
        Image.fromarray(np.zeros((h, w, 3), np.uint8)).save(folder / f"{i:05d}.png")


def test_frame_folder_errors(tmp_path):
    with pytest.raises(FrameError, match="does not exist"):
        open_frames(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FrameError, match="no .jpg/.jpeg/.png frames"):
        open_frames(tmp_path / "empty")
    write_frames(tmp_path / "mixed", [(32, 24), (32, 24), (24, 32)])
    with pytest.raises(FrameError, match="different sizes: 00000.png is 32x24 but 00002.png is 24x32"):
        open_frames(tmp_path / "mixed")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "00000.jpg").write_bytes(b"not an image")
    with pytest.raises(FrameError, match="not a readable image"):
        open_frames(tmp_path / "broken")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(FrameError, match="neither a folder of frames nor a video"):
        open_frames(tmp_path / "notes.txt")


def test_frames_sorted_numerically(tmp_path):
    folder = tmp_path / "f"
    folder.mkdir()
    for i in (10, 2, 1):
        Image.fromarray(np.full((4, 6, 3), i, np.uint8)).save(folder / f"{i}.png")
    frames = open_frames(folder)
    assert [int(frames.rgb(k)[0, 0, 0]) for k in range(3)] == [1, 2, 10]
    assert (frames.width, frames.height) == (6, 4)


def test_video_file_frames(tmp_path):
    av = pytest.importorskip("av")
    path = tmp_path / "clip.mp4"
    with av.open(str(path), "w") as c:
        s = c.add_stream("mpeg4", rate=10)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        for i in range(5):
            img = np.full((48, 64, 3), 40 * i, np.uint8)
            for pkt in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    frames = open_frames(path)
    assert len(frames) == 5 and (frames.width, frames.height) == (64, 48)
    means = [frames.rgb(i).mean() for i in (3, 1, 4)]  # going back reopens the file
    assert abs(means[0] - 120) < 6 and abs(means[1] - 40) < 6 and abs(means[2] - 160) < 6
    (tmp_path / "bad.mp4").write_bytes(b"\x00" * 100)
    with pytest.raises(FrameError, match="cannot decode video"):
        open_frames(tmp_path / "bad.mp4")
