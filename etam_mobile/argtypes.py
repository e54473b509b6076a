"""Command-line number types and a parser whose errors are one line, like every other error.

argparse reports a bad value as usage text plus `prog: error: ...`; the CLI promises one
line `error: <problem>; <fix>` and exit code 2 for every bad input, so the parser says it
that way too.
"""
from __future__ import annotations

import argparse
import sys

SEED_MAX = 2**63 - 1  # torch.Generator.manual_seed takes a 64-bit value


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None


def positive_int(text: str) -> int:
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def non_negative_int(text: str) -> int:
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} must be 0 or more")
    return value


def seed_int(text: str) -> int:
    value = _int(text)
    if not 0 <= value <= SEED_MAX:
        raise argparse.ArgumentTypeError(f"{text[:24]} must be between 0 and 2**63-1")
    return value


class OneLineParser(argparse.ArgumentParser):
    """Argument errors as `error: <problem>; <fix>` on one line, exit code 2."""

    def error(self, message: str):
        sys.stderr.write(f"error: {message}; see `{self.prog} --help`\n")
        sys.exit(2)
