"""Atomic output folders for `track` and `export`: nothing half-written, nothing of the user's lost.

A run writes into a hidden partial folder `.OUT.partial-<pid>-<random>` beside OUT (with an
owner file: host, pid, process start time) and only then swaps it in place of OUT. On Linux
the swap is one `renameat2(RENAME_EXCHANGE)`, so a previous OUT is replaced in a single step;
elsewhere two renames. A run killed before the swap leaves only its partial folder, which
the next run beside the same OUT removes once its owner process is gone (a live run's
partial folder is never touched; neither is one made on another host).

Destinations: OUT may be missing or empty; an earlier output of the same command is replaced
only with --force, and then wholly; anything else is refused even with --force, because
--force only replaces what this tool recognisably wrote (a user's folder is never deleted).
"""
from __future__ import annotations

import ctypes
import errno
import glob
import json
import os
import re
import shutil
import socket
import sys
import tempfile
from pathlib import Path

from .signals import deferred_signals
from .testhooks import fault_point

OWNER_FILE = ".etam-partial-owner.json"
_PARTIAL_RE = re.compile(r"\.(?P<name>.+)\.partial-(?P<pid>\d+)-[A-Za-z0-9_]+")
# errno values that mean "the disk, a quota or a file-size limit is full".
DISK_FULL = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}


class OutputError(Exception):
    """An output that cannot be written as asked; the message says how to fix it."""


# ---- destinations ------------------------------------------------------------------------

def _nearest_existing(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _check_writable_place(path: Path, flag: str) -> None:
    """PATH's nearest existing ancestor is a folder we may create entries in."""
    base = _nearest_existing(path.parent)
    if not base.is_dir():
        raise OutputError(f"{flag} {path} is under {base}, which is not a folder; choose another path")
    if not os.access(base, os.W_OK | os.X_OK):
        raise OutputError(f"{flag} {path}: folder {base} is not writable; choose a writable place or fix its permissions")


def check_destination(out: Path, force: bool, what: str, is_ours, marker: str, flag: str = "--out") -> None:
    """Refuse OUT unless it is missing, empty, or (with force) an earlier output of ours, in a
    place we can write (checked before any work, so a long run cannot fail at its last step).

    what: "an export" / "a track output"; is_ours(path) recognises one; marker names the file
    that marks it (for the message).
    """
    out = Path(out)
    _check_writable_place(out, flag)
    if not out.exists() and not out.is_symlink():
        return
    if out.is_dir() and not out.is_symlink() and not any(out.iterdir()):
        return
    if out.is_dir() and is_ours(out):
        if force:
            return
        raise OutputError(f"{out} already holds {what}; pass --force to replace it (all of it), or choose another --out")
    kind = "folder" if out.is_dir() else "file"
    raise OutputError(f"{out} is a {kind} that is not {what} (no {marker}); choose another --out or empty it "
                      f"yourself (--force only replaces {what} this tool wrote)")


def check_file_destination(path: Path, force: bool, what: str, is_ours, flag: str) -> None:
    """The same rule for a single output file (e.g. --trace PATH)."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{flag} {path} is a folder; give a file path such as {path / 'trace.json'}")
    _check_writable_place(path, flag)
    if not path.exists():
        return
    if not os.access(path, os.W_OK):
        raise OutputError(f"{flag} {path} is not writable; choose a writable place or fix its permissions")
    if not is_ours(path):
        raise OutputError(f"{flag} {path} exists and is not {what}; choose another path "
                          f"(--force only replaces {what} this tool wrote)")
    if not force:
        raise OutputError(f"{flag} {path} already exists; pass --force to replace it, or choose another path")


# ---- partial folders ---------------------------------------------------------------------

def _start_time(pid: int):
    """The process's start time in clock ticks since boot (Linux), to tell a reused pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    return {"state": fields[0], "start": int(fields[19])}


def _owner() -> dict:
    info = _start_time(os.getpid())
    return {"host": socket.gethostname(), "pid": os.getpid(), "start": info["start"] if info else None}


def make_partial(out: Path) -> Path:
    """A new hidden partial folder beside OUT owned by this process (mode as umask allows)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-{os.getpid()}-", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes 0700; an output folder should look like any other
    (tmp / OWNER_FILE).write_text(json.dumps(_owner()))
    return tmp


def _owner_gone(path: Path, pid: int) -> bool:
    """True only when the run that made `path` is certainly no longer running."""
    info = None
    try:
        info = json.loads((path / OWNER_FILE).read_text())
    except (OSError, ValueError):
        pass  # killed between creating the folder and writing the owner file: the name's pid decides
    if isinstance(info, dict) and info.get("host") not in (None, socket.gethostname()):
        return False  # another machine's run (shared file system): cannot check, leave it
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # exists, another user's
    now = _start_time(pid)
    if now is None:
        return False
    if now["state"] in ("Z", "X"):
        return True
    start = info.get("start") if isinstance(info, dict) else None
    return start is not None and start != now["start"]  # the pid was reused by another process


def clean_stale(out: Path) -> list:
    """Remove partial folders beside OUT left by runs that died; says so in one line."""
    out = Path(out)
    if not out.parent.is_dir():
        return []
    removed = []
    for p in sorted(out.parent.glob(f".{glob.escape(out.name)}.partial-*")):
        m = _PARTIAL_RE.fullmatch(p.name)
        if not m or m["name"] != out.name or not p.is_dir() or p.is_symlink():
            continue  # not of our making (older versions had no pid): leave it
        if _owner_gone(p, int(m["pid"])):
            shutil.rmtree(p, ignore_errors=True)
            if not p.exists():
                removed.append(p)
    if removed:
        pids = sorted({int(_PARTIAL_RE.fullmatch(p.name)["pid"]) for p in removed})
        print(f"note: removed {len(removed)} partial folder(s) beside {out} left by interrupted run(s) "
              f"(pid {', '.join(map(str, pids))}): {', '.join(p.name for p in removed)}", file=sys.stderr)
    return removed


# ---- the swap ----------------------------------------------------------------------------

def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    AT_FDCWD, RENAME_EXCHANGE = -100, 2
    if renameat2(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
        return False  # file system or kernel without exchange: fall back to two renames
    raise OSError(err, os.strerror(err), str(b))


def commit(tmp: Path, out: Path) -> None:
    """Put the finished partial folder TMP in place of OUT (replacing an earlier OUT wholly)."""
    tmp, out = Path(tmp), Path(out)
    (tmp / OWNER_FILE).unlink(missing_ok=True)
    with deferred_signals():
        if not out.exists() and not out.is_symlink():
            os.replace(tmp, out)
            return
        if _exchange(tmp, out):
            old = tmp  # now holds the previous OUT, under a partial name the next run would clean
        else:
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-{os.getpid()}-", dir=out.parent))
            os.replace(out, old / "previous")
            os.replace(tmp, out)
        fault_point("commit:swapped")
        shutil.rmtree(old, ignore_errors=True)


def remove_partial(tmp: Path) -> None:
    if tmp is not None and (tmp.exists() or tmp.is_symlink()):
        shutil.rmtree(tmp, ignore_errors=True)


# ---- disk full ---------------------------------------------------------------------------

def disk_full_cause(exc: BaseException):
    """The OSError (ENOSPC/EFBIG/EDQUOT) behind `exc`, following causes and contexts."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in DISK_FULL:
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def disk_full_error(exc: BaseException, out: Path, flag: str = "--out"):
    """An OutputError saying the disk filled while writing OUT, or None if that is not the cause."""
    cause = disk_full_cause(exc)
    if cause is None:
        return None
    what = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "disk quota exceeded",
            errno.EFBIG: "file size limit exceeded"}[cause.errno]
    return OutputError(f"{what} while writing {out}; free space there (or raise the limit) or choose another "
                       f"{flag}; nothing was written")
