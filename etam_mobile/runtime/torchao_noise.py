"""Drop two kinds of import-time noise torchao causes on every export / ExecuTorch run.

1. "Failed to load .../torchao/_C_*.so": torchao (imported by ExecuTorch and coremltools) tries
   to load optional CUDA / mxfp8 kernel libraries that a CPU-only install cannot load, one warning
   per library. Nothing here uses those kernels.
2. "<enum 'KernelPreference'> is an Enum subclass ... register_constant() on Enum subclasses is
   deprecated": torchao 0.18 registers its Enum configs as pytree constants, which torch 2.13
   logs (logger `torch.utils._pytree`) on `import torchao`. Nothing here registers an Enum.

Only those records are dropped; every other message of those loggers passes.
"""
from __future__ import annotations

import logging


class _MissingKernelLibraries(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        return not (msg.startswith("Failed to load ") and "torchao" in msg and ".so" in msg)


class _EnumConstantDeprecation(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        return not (msg.startswith("<enum '") and "register_constant() on Enum subclasses is deprecated" in msg)


def _install(logger_name: str, kind: type) -> None:
    logger = logging.getLogger(logger_name)
    if not any(isinstance(f, kind) for f in logger.filters):
        logger.addFilter(kind())


def silence_torchao_kernel_warnings() -> None:
    """Install both filters (idempotent; call before importing torchao)."""
    _install("torchao", _MissingKernelLibraries)
    _install("torch.utils._pytree", _EnumConstantDeprecation)
