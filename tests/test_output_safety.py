"""What `track` and `export` may do to a destination (etam_mobile/atomic.py), in-process and fast:
refuse what is not theirs, replace an earlier output only with --force and then wholly,
clean partial folders of dead runs (never a live run's), and unwind on SIGTERM like Ctrl-C."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from conftest import track_cli, without_synthetic_warning, write_clip, write_prompts


@pytest.fixture()
def clip(tmp_path):
    frames = write_clip(tmp_path / "frames", frames=4, size=(40, 48), square=(8, 24, 16, 32), ext="png")
    return frames, write_prompts(tmp_path / "prompts.json", [{"id": 2, "frame": 0, "points": [[24, 16]], "labels": [1]}])


def track(capsys, clip, out, *extra):
    code, err = track_cli(capsys, *clip, out, *extra)
    return code, without_synthetic_warning(err)


def snapshot(folder):
    """Every file under folder -> its bytes (to prove nothing changed)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def one_error_line(err):
    return err.startswith("error: ") and err.count("\n") == 0 and "; " in err


# ---- item 2: track --out behaves like export --out -----------------------------------------

def test_track_refuses_its_earlier_output_without_force_and_replaces_it_wholly_with_force(clip, tmp_path, capsys):
    out = tmp_path / "out"
    code, err = track(capsys, clip, out, "--save-logits", "--overlay", "--trace", str(out / "trace.json"))
    assert code == 0, err
    assert {p.name for p in out.iterdir()} == {"masks", "logits.npz", "overlay.gif", "trace.json", "track.json"}
    marker = json.loads((out / "track.json").read_text())
    assert marker["format"] == "etam-track-output" and marker["frames"] == 4 and marker["obj_ids"] == [2]
    assert marker["files"] == sorted(p.name for p in out.iterdir())
    before = snapshot(out)

    code, err = track(capsys, clip, out)
    assert code == 2 and one_error_line(err) and "already holds a track output" in err and "--force" in err
    assert snapshot(out) == before

    code, err = track(capsys, clip, out, "--force")
    assert code == 0, err
    # wholly replaced: no stale logits, overlay or trace from the earlier run
    assert {p.name for p in out.iterdir()} == {"masks", "track.json"}
    assert len(list((out / "masks").iterdir())) == 4
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize("force", [[], ["--force"]])
def test_track_never_touches_a_folder_that_is_not_its_output(clip, tmp_path, capsys, force):
    out = tmp_path / "photos"
    (out / "masks").mkdir(parents=True)
    (out / "masks" / "mine.png").write_bytes(b"user data")
    (out / "logits.npz").write_bytes(b"user data")
    before = snapshot(out)
    code, err = track(capsys, clip, out, *force)
    assert code == 2 and one_error_line(err), err
    assert "is a folder that is not a track output (no track.json)" in err and "--force only replaces" in err
    assert snapshot(out) == before
    afile = tmp_path / "notes.txt"
    afile.write_text("keep")
    code, err = track(capsys, clip, afile, *force)
    assert code == 2 and "is a file that is not a track output" in err and afile.read_text() == "keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames", "notes.txt", "photos", "prompts.json"]


def test_track_into_an_empty_folder_is_fine(clip, tmp_path, capsys):
    out = tmp_path / "empty"
    out.mkdir()
    code, err = track(capsys, clip, out)
    assert code == 0, err
    assert (out / "track.json").is_file()


def test_trace_path_rules(clip, tmp_path, capsys):
    out = tmp_path / "out"
    user_file = tmp_path / "report.json"
    user_file.write_text('{"mine": true}')
    for force in ([], ["--force"]):
        code, err = track(capsys, clip, out, "--trace", str(user_file), *force)
        assert code == 2 and one_error_line(err) and "--trace" in err and "is not a trace file" in err
        assert user_file.read_text() == '{"mine": true}' and not out.exists()
    code, err = track(capsys, clip, out, "--trace", str(tmp_path))
    assert code == 2 and "is a folder; give a file path" in err and not out.exists()

    trace = tmp_path / "t.json"
    assert track(capsys, clip, out, "--trace", str(trace))[0] == 0
    first = trace.read_bytes()
    assert json.loads(first)["format"] == "etam-trace"
    code, err = track(capsys, clip, tmp_path / "out2", "--trace", str(trace))
    assert code == 2 and "already exists; pass --force" in err and not (tmp_path / "out2").exists()
    trace.write_bytes(first.replace(b'"num_frames": 4', b'"num_frames": 99'))
    code, err = track(capsys, clip, out, "--trace", str(trace), "--force")
    assert code == 0, err
    assert json.loads(trace.read_text())["num_frames"] == 4  # replaced
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_export_force_no_longer_replaces_a_users_folder(tmp_path):
    from etam_export import ExportError
    from etam_export.exporter import check_destination

    other = tmp_path / "photos"
    other.mkdir()
    (other / "a.jpg").write_bytes(b"x")
    with pytest.raises(ExportError, match="not an export.*no manifest.json.*--force only replaces"):
        check_destination(other, force=True)
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(ExportError, match="is a file that is not an export"):
        check_destination(f, force=True)
    assert (other / "a.jpg").read_bytes() == b"x" and f.read_text() == "x"


# ---- item 9: stale partial folders ---------------------------------------------------------

def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_stale_partial_folders_of_dead_runs_are_removed_and_reported(clip, tmp_path, capsys):
    out = tmp_path / "out"
    pid = dead_pid()
    stale = tmp_path / f".out.partial-{pid}-k1ll3d"
    (stale / "masks").mkdir(parents=True)
    (stale / "masks" / "00000.png").write_bytes(b"half")
    (stale / ".etam-partial-owner.json").write_text(json.dumps({"host": os.uname().nodename, "pid": pid}))
    no_owner = tmp_path / f".out.partial-{pid}-n0own"  # killed before it wrote its owner file
    no_owner.mkdir()
    other_out = tmp_path / f".other.partial-{pid}-abc"  # another OUT's: not this run's business
    other_out.mkdir()
    old_style = tmp_path / ".out.partial-x7yq2z"  # no pid in the name: cannot be judged, left alone
    old_style.mkdir()
    code, err = track(capsys, clip, out)
    assert code == 0, err
    lines = [ln for ln in err.splitlines() if "partial" in ln]
    assert len(lines) == 1 and lines[0].startswith("note: removed 2 partial folder(s)") and str(pid) in lines[0]
    assert not stale.exists() and not no_owner.exists()
    assert other_out.exists() and old_style.exists()


def test_partial_folders_of_live_runs_are_kept(clip, tmp_path, capsys):
    from etam_mobile.atomic import _owner

    out = tmp_path / "out"
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        theirs = tmp_path / f".out.partial-{live.pid}-l1ve00"
        theirs.mkdir()
        mine = tmp_path / f".out.partial-{os.getpid()}-l1ve01"
        mine.mkdir()
        (mine / ".etam-partial-owner.json").write_text(json.dumps(_owner()))
        elsewhere = tmp_path / f".out.partial-{dead_pid()}-l1ve02"  # made on another host: cannot check
        elsewhere.mkdir()
        (elsewhere / ".etam-partial-owner.json").write_text(json.dumps({"host": "another-machine", "pid": 1}))
        reused = tmp_path / f".out.partial-{os.getpid()}-r3used"  # our pid, but an older process's
        reused.mkdir()
        (reused / ".etam-partial-owner.json").write_text(json.dumps({**_owner(), "start": 1}))
        code, err = track(capsys, clip, out)
        assert code == 0, err
        assert theirs.exists() and mine.exists() and elsewhere.exists()
        assert not reused.exists() and "removed 1 partial folder(s)" in err
    finally:
        live.kill()
        live.wait()


# ---- item 9: SIGTERM unwinds like Ctrl-C -----------------------------------------------------

def signal_on_second_frame(monkeypatch, signum):
    from etam_mobile.runtime import pipeline

    real = pipeline.Progress.update
    calls = []

    def update(self, n=1):
        real(self, n)
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signum)

    monkeypatch.setattr(pipeline.Progress, "update", update)


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_during_track_removes_partial_output(clip, tmp_path, capsys, monkeypatch, signum, code):
    out = tmp_path / "out"
    signal_on_second_frame(monkeypatch, signum)
    got, err = track(capsys, clip, out, "--save-logits")
    name = signal.Signals(signum).name
    assert got == code and err == f"interrupted ({name}); nothing was written to the output folder"
    assert not out.exists() and [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # main() restored the handlers


def test_sigterm_during_forced_track_keeps_the_earlier_output(clip, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    assert track(capsys, clip, out, "--overlay")[0] == 0
    before = snapshot(out)
    signal_on_second_frame(monkeypatch, signal.SIGTERM)
    code, err = track(capsys, clip, out, "--force")
    assert code == 143 and "SIGTERM" in err
    assert snapshot(out) == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_signal_during_commit_is_held_until_the_output_is_complete(tmp_path, monkeypatch):
    from etam_mobile import atomic
    from etam_mobile.signals import Terminated, handle_signals

    out = tmp_path / "out"
    (out / "old").mkdir(parents=True)
    with handle_signals():
        tmp = atomic.make_partial(out)
        (tmp / "new").write_text("x")
        real = atomic._exchange

        def exchange_then_signal(a, b):
            os.kill(os.getpid(), signal.SIGTERM)  # arrives mid-commit
            return real(a, b)

        monkeypatch.setattr(atomic, "_exchange", exchange_then_signal)
        with pytest.raises(Terminated) as info:
            atomic.commit(tmp, out)
    assert info.value.completed
    assert sorted(p.name for p in out.iterdir()) == ["new"] and sorted(p.name for p in tmp_path.iterdir()) == ["out"]
