"""A dependency-free progress line on stderr (quiet when asked, e.g. in tests)."""
from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, label: str, total: int, quiet: bool = False, stream=None):
        self.label, self.total, self.quiet = label, total, quiet
        self.stream = stream or sys.stderr
        self.start = time.perf_counter()
        self.done = 0
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self._last = 0.0

    def update(self, n: int = 1) -> None:
        self.done += n
        if self.quiet:
            return
        now = time.perf_counter()
        if not self.tty and self.done < self.total and now - self._last < 5:
            return
        self._last = now
        rate = self.done / max(now - self.start, 1e-9)
        end = "\n" if (self.done >= self.total or not self.tty) else "\r"
        self.stream.write(f"{self.label}: {self.done}/{self.total} ({rate:.2f}/s){end}")
        self.stream.flush()
