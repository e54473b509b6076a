"""The order of --targets does not matter: every target lowers the one torch.export of a stage,
so a target's lowering must leave that exported program as it found it.

The bug this guards: the Core ML delegate of ExecuTorch pops the lifted constants it consumes
(non-persistent buffers such as the image encoder's `pos_resize`) from the program it lowers, so
`--targets executorch-coreml,executorch` failed with KeyError in the XNNPACK lowering after it.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from etam_export import executorch as etx
from etam_export.artifact import torch_export


class _WithConstant(torch.nn.Module):
    """A weight and a non-persistent buffer (a lifted constant of the exported program)."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 4)
        self.register_buffer("table", torch.arange(4, dtype=torch.float32), persistent=False)

    def forward(self, x):
        return self.lin(x) + self.table


def test_executorch_coreml_lowering_leaves_the_program_for_the_next_target(tmp_path):
    torch.manual_seed(0)
    module = _WithConstant().eval()
    x = [np.linspace(-1, 1, 8, dtype=np.float32).reshape(2, 4)]
    ep = torch_export(module, x, "toy")
    constants, params = dict(ep.constants), dict(ep.state_dict)
    etx.write(ep, tmp_path / "toy.coreml.pte", "toy", "executorch-coreml", "fp32")
    assert set(ep.constants) == set(constants) and set(ep.state_dict) == set(params)
    assert all(ep.constants[k] is v for k, v in constants.items())
    etx.write(ep, tmp_path / "toy.pte", "toy", "executorch", "fp32")  # KeyError: 'table' before the fix
    ref = module(torch.from_numpy(x[0])).detach().numpy()
    res = etx.verify(tmp_path / "toy.pte", _spec(), "executorch", x, [ref], "fp32")
    assert res["ok"], res


def _spec():
    from etam_mobile.contracts import StageSpec, TensorSpec

    return StageSpec("toy", (TensorSpec("x", (2, 4), torch.float32),), (TensorSpec("y", (2, 4), torch.float32),))


@pytest.mark.slow
def test_cli_export_executorch_coreml_before_executorch(tmp_path):
    """The reported command, on the tiny config (both orders give the same artifacts)."""
    import json

    from etam_mobile.cli import main

    out = tmp_path / "exp"
    assert main(["-q", "export", "--config", "test_tiny", "--targets", "executorch-coreml,executorch",
                 "--out", str(out)]) == 0
    doc = json.loads((out / "manifest.json").read_text())
    assert doc["tool"]["targets"] == ["executorch-coreml", "executorch"]
    assert all(set(s["artifacts"]) == {"executorch-coreml", "executorch"} for s in doc["stages"].values())
