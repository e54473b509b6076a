"""Fault injection: `track` and `export` killed (SIGKILL, SIGTERM) at fault points, a full
disk, and a damaged export folder. The invariant: OUT is absent, or complete and valid (the
earlier output if there was one), partial folders of killed runs go on the next run, and a
refused run writes nothing.

Children run tests/fault_child.py (the real CLI; for export the converters copy a real tiny
export, see there) and stop at an `etam_mobile.testhooks.fault_point` until signalled.
"""
from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from etam_mobile.cli import main
from etam_mobile.manifest import read_manifest
from etam_mobile.runtime.exported import open_backend

from conftest import TINY, exported_tiny, track_args, without_synthetic_warning, write_clip, write_prompts  # noqa: E402

CHILD = Path(__file__).with_name("fault_child.py")
HANG_GUARD_S = 600  # not a timing assertion: only stops a broken test from hanging the suite


@pytest.fixture()
def clip(tmp_path):
    frames = write_clip(tmp_path / "frames", frames=5, size=(40, 48), square=(8, 24, 16, 32), ext="png")
    return frames, write_prompts(tmp_path / "prompts.json", [{"id": 1, "frame": 0, "points": [[24, 16]], "labels": [1]},
                                                             {"id": 4, "frame": 1, "box": [2, 2, 20, 20]}])


def export_args(out, *extra):
    return ["-q", "export", *TINY, "--targets", "onnx", "--no-verify", "--out", str(out), *extra]


def child_env(stub_export: bool) -> dict:
    path = os.pathsep.join(filter(None, [str(Path(__file__).parent), os.environ.get("PYTHONPATH")]))
    env = dict(os.environ, PYTHONPATH=path, OMP_NUM_THREADS="1")
    if stub_export:
        env["ETAM_TEST_STUB_EXPORT"] = str(exported_tiny())
    return env


def run_child(args, stub_export=False, point=None, signum=None, preexec=None):
    """Run the CLI in a child; with `point`, send `signum` when it gets there. -> (code, stderr)."""
    env = child_env(stub_export)
    if point:
        env["ETAM_FAULT_POINT"] = point
    proc = subprocess.Popen([sys.executable, str(CHILD), *args], env=env, stderr=subprocess.PIPE, text=True,
                            stdout=subprocess.DEVNULL, preexec_fn=preexec)
    lines = []
    if point:
        for line in proc.stderr:
            lines.append(line)
            if line.startswith("fault point "):
                proc.send_signal(signum)
                break
        else:
            proc.wait()
            pytest.fail(f"child ended (code {proc.returncode}) before fault point {point}: {''.join(lines)}")
    if not point:
        _, rest = proc.communicate(timeout=HANG_GUARD_S)
    else:
        try:  # after the signal the child writes a line or two: the pipe cannot fill up
            proc.wait(timeout=HANG_GUARD_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            pytest.fail(f"child hung after {signum} at {point}")
        rest = proc.stderr.read()
        proc.stderr.close()
    err = "".join(lines) + rest
    return proc.returncode, without_synthetic_warning(err)


def hidden(folder):
    return sorted(p.name for p in Path(folder).iterdir() if p.name.startswith("."))


def assert_track_complete(out, frames=5):
    marker = json.loads((out / "track.json").read_text())
    assert marker["format"] == "etam-track-output" and marker["frames"] == frames
    assert sorted(p.name for p in out.iterdir()) == marker["files"]
    assert sorted(p.name for p in (out / "masks").iterdir()) == [f"{i:05d}.png" for i in range(frames)]
    for p in (out / "masks").iterdir():
        Image.open(p).load()
    if "logits.npz" in marker["files"]:
        assert np.load(out / "logits.npz")["logits"].shape[0] == frames
    return marker


def assert_export_valid(out):
    backend = open_backend("onnx", out, config="test_tiny")  # manifest, contracts, every SHA-256
    assert backend.cfg.name == "test_tiny"
    return read_manifest(out)


def snapshot(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(Path(folder).rglob("*")) if p.is_file()}


# ---- track killed ------------------------------------------------------------------------

def test_track_sigkill_mid_run_leaves_no_out_and_the_next_run_cleans_up(clip, tmp_path, capsys):
    out = tmp_path / "out"
    code, _ = run_child(track_args(*clip, out, "--save-logits"), point="track:frame@2", signum=signal.SIGKILL)
    assert code == -signal.SIGKILL
    assert not out.exists()
    left = hidden(tmp_path)
    assert len(left) == 1 and left[0].startswith(".out.partial-")  # what a kill cannot avoid
    assert main(track_args(*clip, out)) == 0
    err = capsys.readouterr().err
    assert f"note: removed 1 partial folder(s) beside {out} left by interrupted run(s)" in err
    assert hidden(tmp_path) == []
    assert_track_complete(out)


@pytest.mark.parametrize("point", [pytest.param("track:start", marks=pytest.mark.slow), "track:frame@3",
                                   pytest.param("track:finished", marks=pytest.mark.slow)])
def test_track_sigterm_exits_143_with_a_message_and_no_partial_output(clip, tmp_path, point):
    out = tmp_path / "out"
    trace = tmp_path / "trace.json"
    code, err = run_child(track_args(*clip, out, "--save-logits", "--overlay", "--trace", str(trace)),
                          point=point, signum=signal.SIGTERM)
    assert code == 143
    assert err.splitlines()[-1] == "interrupted (SIGTERM); nothing was written to the output folder"
    assert "Traceback" not in err
    assert not out.exists() and not trace.exists() and hidden(tmp_path) == []


def test_track_force_killed_before_and_after_the_swap(clip, tmp_path, capsys):
    """Killed before the swap: the earlier output is untouched. Killed after it: the new one is
    complete, and the earlier one (left under a partial name) goes on the next run."""
    out = tmp_path / "out"
    assert main(track_args(*clip, out, "--overlay")) == 0
    capsys.readouterr()
    before = snapshot(out)
    code, _ = run_child(track_args(*clip, out, "--force", "--save-logits"), point="track:finished",
                        signum=signal.SIGKILL)
    assert code == -signal.SIGKILL and snapshot(out) == before
    code, err = run_child(track_args(*clip, out, "--force", "--save-logits"), point="commit:swapped",
                          signum=signal.SIGKILL)
    assert code == -signal.SIGKILL
    assert "note: removed 1 partial folder(s)" in err  # the first killed run's
    marker = assert_track_complete(out)
    assert "logits.npz" in marker["files"] and "overlay.gif" not in marker["files"]
    assert len(hidden(tmp_path)) == 1  # the earlier output, under the killed run's partial name
    assert main(track_args(*clip, out, "--force")) == 0
    assert "removed 1 partial folder(s)" in capsys.readouterr().err
    assert hidden(tmp_path) == [] and assert_track_complete(out)["files"] == ["masks", "track.json"]


# ---- export killed -----------------------------------------------------------------------

def test_export_sigterm_mid_export_exits_143_and_writes_nothing(tmp_path):
    out = tmp_path / "exp"
    code, err = run_child(export_args(out), stub_export=True, point="export:stage@2", signum=signal.SIGTERM)
    assert code == 143 and err.splitlines()[-1] == "interrupted (SIGTERM); nothing was written to the output folder"
    assert not out.exists() and hidden(tmp_path) == []


def test_export_sigkill_before_commit_then_next_run_cleans_and_completes(tmp_path, capsys):
    out = tmp_path / "exp"
    code, _ = run_child(export_args(out), stub_export=True, point="export:manifest", signum=signal.SIGKILL)
    assert code == -signal.SIGKILL and not out.exists()
    (partial,) = [tmp_path / n for n in hidden(tmp_path)]
    assert (partial / "manifest.json").is_file()  # complete but never swapped in: still not OUT
    code, err = run_child(export_args(out), stub_export=True)
    assert code == 0, err
    assert "note: removed 1 partial folder(s)" in err and hidden(tmp_path) == []
    assert_export_valid(out)


def test_export_force_killed_around_the_swap_keeps_a_valid_export(tmp_path):
    out = tmp_path / "exp"
    assert run_child(export_args(out, "--max-points", "6"), stub_export=True)[0] == 0
    before = snapshot(out)
    code, _ = run_child(export_args(out, "--force"), stub_export=True, point="export:manifest",
                        signum=signal.SIGTERM)
    assert code == 143 and snapshot(out) == before and hidden(tmp_path) == []
    code, _ = run_child(export_args(out, "--force"), stub_export=True, point="commit:swapped", signum=signal.SIGKILL)
    assert code == -signal.SIGKILL
    assert assert_export_valid(out)["capacities"]["points"] != 6  # the new export, complete
    assert len(hidden(tmp_path)) == 1  # the old export under a partial name, removed next time


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL])
def test_real_onnx_export_killed_mid_conversion(tmp_path, signum):
    out = tmp_path / "exp"
    code, err = run_child(export_args(out), point="export:stage@2", signum=signum)
    assert code == (143 if signum == signal.SIGTERM else -signal.SIGKILL), err
    assert not out.exists()
    code, err = run_child(export_args(out))
    assert code == 0, err
    assert hidden(tmp_path) == [] and assert_export_valid(out)


# ---- a damaged export folder is refused before any frame ------------------------------------

@pytest.fixture()
def onnx_copy(tmp_path):
    """The ONNX half of the shared tiny export (manifest + .onnx), to damage."""
    src, dst = exported_tiny(), tmp_path / "exp"
    dst.mkdir()
    for p in src.iterdir():
        if p.suffix in (".json", ".onnx"):
            shutil.copy(p, dst / p.name)
    return dst


@pytest.mark.parametrize("damage", ["truncate", "empty", "manifest"])
def test_truncated_or_corrupt_artifact_is_refused_before_any_frame(clip, tmp_path, capsys, monkeypatch, onnx_copy,
                                                                    damage):
    from etam_mobile.runtime import pipeline

    def no_frames(*a, **k):
        raise AssertionError("a frame was tracked")

    monkeypatch.setattr(pipeline, "StreamTracker", no_frames)  # offline track streams through it
    target = onnx_copy / ("manifest.json" if damage == "manifest" else "mask_decoder.onnx")
    data = target.read_bytes()
    target.write_bytes(b"" if damage == "empty" else data[: len(data) // 2])
    out = tmp_path / "out"
    args = track_args(*clip, out, "--backend", "onnx", "--artifacts", str(onnx_copy))
    code = main([a for a in args if a not in TINY])  # the config comes from the manifest
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    expected = "manifest.json" if damage == "manifest" else "mask_decoder.onnx does not match its SHA-256"
    assert expected in err and "re-export" in err
    assert not out.exists() and hidden(tmp_path) == []


# ---- disk full ---------------------------------------------------------------------------

@pytest.fixture()
def small_tmpfs(tmp_path):
    """A 256 KiB tmpfs mounted for the test (needs root and a kernel that lets us mount)."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], capture_output=True,
                         text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({res.stderr.strip() or res.returncode}); "
                    "the RLIMIT_FSIZE variant covers disk full")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def fsize_limit(nbytes):
    def preexec():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit then fail with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, nbytes))
    return preexec


def assert_disk_full_refusal(code, err, out, what):
    assert code == 2 and err.startswith("error: ") and "\n" not in err.strip(), err
    assert what in err and "nothing was written" in err and "Traceback" not in err
    assert not out.exists() and hidden(out.parent) == []


def test_track_on_a_full_disk(clip, small_tmpfs, capsys):
    ballast = small_tmpfs / "users-file.bin"  # the user's data on that disk stays as it was
    ballast.write_bytes(b"\1" * (160 << 10))
    out = small_tmpfs / "out"
    code = main(track_args(*clip, out, "--save-logits"))  # logits need 2 x 5 x 40 x 48 x 4 bytes, twice
    err = without_synthetic_warning(capsys.readouterr().err)
    assert_disk_full_refusal(code, err, out, "no space left on the device while writing")
    assert ballast.read_bytes() == b"\1" * (160 << 10)


def test_track_over_a_file_size_limit(clip, tmp_path):
    out = tmp_path / "out"
    code, err = run_child(track_args(*clip, out, "--save-logits"), preexec=fsize_limit(32 << 10))
    assert_disk_full_refusal(code, err, out, "file size limit exceeded while writing")


def test_export_on_a_full_disk(small_tmpfs, capsys, monkeypatch):
    from fault_child import stub_converters

    stub_converters(str(exported_tiny()), monkeypatch.setattr)
    out = small_tmpfs / "exp"
    code = main(export_args(out))
    err = without_synthetic_warning(capsys.readouterr().err)
    assert_disk_full_refusal(code, err, out, "no space left on the device while writing")


def test_export_over_a_file_size_limit(tmp_path):
    out = tmp_path / "exp"
    code, err = run_child(export_args(out), stub_export=True, preexec=fsize_limit(4 << 20))
    assert_disk_full_refusal(code, err, out, "file size limit exceeded while writing")
