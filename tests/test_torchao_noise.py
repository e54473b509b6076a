"""torchao's import-time "Failed to load .../torchao/_C_*.so" lines (optional CUDA / mxfp8
kernels a CPU install cannot load) are dropped from every export / ExecuTorch run; other
torchao messages still pass."""
import importlib.util
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from etam_mobile.runtime.torchao_noise import silence_torchao_kernel_warnings


def test_only_the_kernel_library_lines_are_dropped(caplog):
    silence_torchao_kernel_warnings()
    silence_torchao_kernel_warnings()  # idempotent
    log = logging.getLogger("torchao")
    assert len([f for f in log.filters if type(f).__name__ == "_MissingKernelLibraries"]) == 1
    with caplog.at_level(logging.WARNING, logger="torchao"):
        log.warning("Failed to load /venv/site-packages/torchao/_C_mxfp8.cpython-310-x86_64-linux-gnu.so: "
                    "Could not load this library")
        log.warning("Skipping import of cpp extensions due to incompatible torch version")
        logging.getLogger("coremltools").warning("Failed to load _MLModelProxy: no libcoremlpython")
    assert [r.getMessage()[:20] for r in caplog.records] == ["Skipping import of c", "Failed to load _MLMo"]


def test_only_the_enum_constant_deprecation_is_dropped(caplog):
    silence_torchao_kernel_warnings()
    log = logging.getLogger("torch.utils._pytree")
    with caplog.at_level(logging.WARNING, logger="torch.utils._pytree"):
        log.warning("%s is an Enum subclass and is now natively supported by torch.compile as an opaque value "
                    "type. Calling register_constant() on Enum subclasses is deprecated and will be an error in "
                    "a future release.", "<enum 'KernelPreference'>")
        log.warning("some other pytree message")
    assert [r.getMessage() for r in caplog.records] == ["some other pytree message"]


def test_importing_the_quantisation_stack_prints_no_torchao_library_line():
    """A fresh interpreter importing what an export imports (ExecuTorch's lowering imports
    torchao): stderr has no such line."""
    spec = importlib.util.find_spec("torchao")  # (not imported here: the child imports it)
    if spec is None or not list(Path(spec.origin).parent.glob("_C*.so")):
        pytest.skip("this torchao has no optional kernel libraries to fail on")
    err = subprocess.run([sys.executable, "-c", "import etam_export.common, executorch.exir, torchao"],
                         capture_output=True, text=True, timeout=600).stderr
    assert not [ln for ln in err.splitlines() if "Failed to load" in ln and "torchao" in ln], err
    assert "register_constant() on Enum" not in err, err


def test_copying_an_exported_program_prints_no_leafspec_deprecation():
    """torch 2.13 warns (FutureWarning, LeafSpec) on each deepcopy of an ExportedProgram, which
    the Core ML export does per stage; the exporter filters exactly that message.

    Run in a fresh interpreter, as a user's export runs: inside pytest the warnings plugin
    resets the filter list around every test, so a filter installed when an earlier test first
    imported the module is gone by now (that made this test fail in CI only)."""
    code = ("import copy, warnings, torch\n"
            "import etam_export.common\n"
            "warnings.filterwarnings('default', category=FutureWarning, append=True)\n"
            "ep = torch.export.export(torch.nn.Linear(3, 3), (torch.randn(1, 3),))\n"
            "copy.deepcopy(ep)\n"
            "warnings.warn('other future warning', FutureWarning)\n")
    err = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600).stderr
    assert "LeafSpec" not in err, err
    assert "other future warning" in err, err  # only that message is filtered
