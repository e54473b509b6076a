"""Where results go: output paths checked before any work, and partial folders with the
permissions of a normal `mkdir` (tempfile.mkdtemp makes them 0700, which a finished
output would keep after the atomic rename)."""
from __future__ import annotations

import os
from pathlib import Path


from ..atomic import OutputError, make_partial  # one error type for every output problem


def make_partial_dir(parent: Path, name: str) -> Path:
    """A fresh hidden partial folder for `parent/name` (atomic.make_partial: owner-recorded, umask mode)."""
    return make_partial(Path(parent) / name)


def _nearest_existing(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_output_folder(out, flag: str = "--out") -> None:
    """OUT can be created (or replaced) here: not a file, under a writable folder."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputError(f"{flag} {out} exists and is not a folder; choose another path")
    base = _nearest_existing(out.parent)
    if not base.is_dir():
        raise OutputError(f"{flag} {out} is under {base}, which is not a folder; choose another path")
    if not os.access(base, os.W_OK | os.X_OK):
        raise OutputError(f"{flag} {out}: folder {base} is not writable; choose a writable place or fix its permissions")


def check_output_file(path, flag: str) -> None:
    """A file the run will write at the end: not a folder, in a place we can write."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{flag} {path} is a folder; give a file name, e.g. {path / 'trace.json'}")
    base = _nearest_existing(path.parent)
    if not base.is_dir():
        raise OutputError(f"{flag} {path} is under {base}, which is not a folder; choose another path")
    if not os.access(base, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise OutputError(f"{flag} {path} is not writable; choose a writable place or fix its permissions")
