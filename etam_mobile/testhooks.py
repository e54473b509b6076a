"""Fault points: where the fault-injection tests stop a run to kill it (no effect otherwise).

With ETAM_FAULT_POINT=NAME[@N] in the environment, the N-th time (default 1st) the run
reaches `fault_point(NAME)` it prints `fault point NAME` on stderr and waits to be killed.
"""
from __future__ import annotations

import os
import sys
import time

_hits: dict = {}


def fault_point(name: str) -> None:
    spec = os.environ.get("ETAM_FAULT_POINT")
    if not spec:
        return
    want, _, nth = spec.partition("@")
    if want != name:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] != int(nth or 1):
        return
    print(f"fault point {name}", file=sys.stderr, flush=True)
    while True:  # the test sends a signal now; a handled SIGTERM raises out of the sleep
        time.sleep(3600)
