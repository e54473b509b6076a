import json
from pathlib import Path

import numpy as np
import pytest
import torch

# The tests run small graphs; one intra-op thread avoids thread hand-off overhead that
# dominates them on a 2-core machine (and keeps runs stable when the machine is shared).
torch.set_num_threads(1)

FIXTURES = Path(__file__).parent / "fixtures" / "upstream_parity"
CASE = FIXTURES / "ti512_two_objects"


@pytest.fixture(scope="session")
def parity_case():
    case = json.loads((CASE / "case.json").read_text())
    golden = np.load(CASE / "golden.npz")
    return case, {k: golden[k] for k in golden.files}


@pytest.fixture(scope="session")
def ti512_model():
    """efficienttam_ti_512x512 on the fixture's synthetic weights (seed 5)."""
    from etam_mobile.checkpoint import load_model
    from etam_mobile.configs import get_config

    model, _ = load_model(get_config("efficienttam_ti_512x512"), None, seed=5, quiet=True)
    return model


@pytest.fixture(scope="session")
def tiny_model():
    from etam_mobile.checkpoint import load_model
    from etam_mobile.configs import tiny_test_config

    model, _ = load_model(tiny_test_config(), None, seed=0, quiet=True)
    return model


@pytest.fixture(scope="session")
def ti512_export(ti512_model):
    """ExecuTorch + ONNX fp32 export of ti512_model, made once per session and shared by the
    exported tracking and image-mode parity tests."""
    import shutil
    import tempfile

    from etam_export import export_model

    root = tempfile.mkdtemp(prefix="etam-ti512-")
    folder = f"{root}/export"
    # verify=False: the parity tests that use it check the exported graphs end to end.
    export_model(ti512_model, folder, targets=("executorch", "onnx"), precision="fp32",
                 weights_info={"synthetic": True, "seed": 5}, quiet=True, verify=False)
    yield folder
    shutil.rmtree(root, ignore_errors=True)
