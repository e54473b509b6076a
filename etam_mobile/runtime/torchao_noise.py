"""Drop torchao's import-time "Failed to load .../torchao/_C_*.so" warnings.

torchao (imported by ExecuTorch and coremltools) tries to load optional CUDA / mxfp8 kernel
libraries that a CPU-only install cannot load, and logs one warning per library on every run
that exports, quantises or runs ExecuTorch. Nothing here uses those kernels, so the lines are
noise. Only those records of the `torchao` logger are dropped; every other message passes.
"""
from __future__ import annotations

import logging


class _MissingKernelLibraries(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        return not (msg.startswith("Failed to load ") and "torchao" in msg and ".so" in msg)


def silence_torchao_kernel_warnings() -> None:
    """Install the filter on the `torchao` logger (idempotent; call before importing torchao)."""
    logger = logging.getLogger("torchao")
    if not any(isinstance(f, _MissingKernelLibraries) for f in logger.filters):
        logger.addFilter(_MissingKernelLibraries())
