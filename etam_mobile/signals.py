"""SIGTERM handled like Ctrl-C, and a window in which neither interrupts a commit.

`timeout`, CI cancellation and container stops send SIGTERM; Python's default would end
the process without unwinding, leaving partial output behind. `handle_signals` turns SIGTERM
into `Terminated` (a KeyboardInterrupt, so every cleanup that handles Ctrl-C handles it) and
`deferred_signals` holds SIGINT/SIGTERM back while an output is being swapped into place.
"""
from __future__ import annotations

import contextlib
import signal

EXIT_SIGINT = 128 + signal.SIGINT  # the shell's convention: 128 + signal number
EXIT_SIGTERM = 128 + signal.SIGTERM


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived; unwinds like KeyboardInterrupt."""


_state = {"defer": 0, "pending": None, "raised": False}


def _interrupt(signum: int) -> KeyboardInterrupt:
    return Terminated("SIGTERM") if signum == signal.SIGTERM else KeyboardInterrupt()


def _handler(signum, frame):
    if _state["defer"] or _state["raised"]:
        # Inside a commit, or already unwinding from a first signal: let cleanup finish.
        _state["pending"] = _state["pending"] or signum
        return
    _state["raised"] = True
    raise _interrupt(signum)


@contextlib.contextmanager
def handle_signals():
    """Install the SIGINT/SIGTERM handlers for one command (restored afterwards)."""
    try:
        old = {s: signal.signal(s, _handler) for s in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    _state.update(defer=0, pending=None, raised=False)
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


@contextlib.contextmanager
def deferred_signals():
    """Hold SIGINT/SIGTERM back until the block is done, then act on them."""
    _state["defer"] += 1
    try:
        yield
    finally:
        _state["defer"] -= 1
        if _state["defer"] == 0 and _state["pending"] and not _state["raised"]:
            signum, _state["pending"] = _state["pending"], None
            _state["raised"] = True
            exc = _interrupt(signum)
            exc.completed = True  # the block (a commit) finished before the signal was acted on
            raise exc
