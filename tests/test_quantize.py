"""Compressed ExecuTorch variants on the tiny config: int8 and int8-4w through the XNNPACK
quantizer / torchao, per-artifact precision records, the export-time gates (per-stage PSNR
and chained tracking vs fp32 eager on a recorded upstream case) and the bad inputs.

Quantised XNNPACK lowering is the slow part (about a minute of CPU per tiny stage), so the
default tests quantise the memory attention only (the stage the chained gate is most
sensitive to) and keep the rest fp32; the all-stage int8 export of the tiny model and the
full-size exports are in the slow suite.
"""
from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

import pytest
import torch
from PIL import Image

from etam_mobile.contracts import STAGES, Capacities
from etam_mobile.manifest import artifact_precision, read_manifest

from etam_export import ExportError, export_model
from etam_export import gates, quantize
from etam_export.common import example_inputs, run_eager

from conftest import exported_stage

CASE = "ti_plain_two_objects"  # 5 frames, a click + negative click and a box


@functools.lru_cache(maxsize=None)
def tiny():
    from etam_mobile.checkpoint import load_model
    from etam_mobile.configs import tiny_test_config

    return load_model(tiny_test_config(), None, seed=0, quiet=True)


ONLY_MA = "image_encoder=fp32,mask_decoder=fp32,memory_encoder=fp32"
ALL_INT8 = "image_encoder=int8,memory_attention=int8,mask_decoder=int8,memory_encoder=int8"


@functools.lru_cache(maxsize=None)
def int8_tiny(plan: str = ONLY_MA) -> Path:
    model, weights = tiny()
    root = Path(tempfile.mkdtemp(prefix="etam-int8-test-"))
    atexit.register(shutil.rmtree, root, True)
    export_model(model, root / "int8", targets=("executorch",), weights_info=weights, quiet=True, quantize="int8",
                 stage_precision=plan or None, gate_cases=(CASE,), allow_failing_gates=True)
    return root / "int8"


def test_int8_manifest_records_precision_layers_and_gates():
    doc = read_manifest(int8_tiny())
    assert doc["variant"]["name"] == "int8"
    assert doc["variant"]["executorch_plan"] == {"image_encoder": "fp32", "memory_attention": "int8",
                                                 "mask_decoder": "fp32", "memory_encoder": "fp32"}
    assert doc["stages"]["image_encoder"]["precision"]["executorch"]["precision"] == "fp32"
    check_int8_records(doc, ["memory_attention"])


@pytest.mark.slow
def test_int8_all_stages_tiny():
    doc = read_manifest(int8_tiny(ALL_INT8))
    assert doc["variant"]["executorch_plan"] == {s: "int8" for s in STAGES}
    check_int8_records(doc, STAGES)
    enc = doc["stages"]["image_encoder"]["precision"]["executorch"]["gates"]
    assert [g["on"].split(":")[0] for g in enc] == ["example inputs", "real frames"]


def check_int8_records(doc, stages):
    for stage in stages:
        rec = doc["stages"][stage]["precision"]["executorch"]
        assert rec["precision"] == "int8" and "XNNPACKQuantizer" in rec["scheme"]
        layers = rec["layers"]
        # every linear of the stage is int8 (convs: the decoder's transposed convs stay fp32, see README)
        # every linear the plan does not keep fp32 is int8 (the default keeps most of the mask decoder's)
        assert layers["linear"].get("int8", 0) > 0, (stage, layers)
        assert rec["kept_fp32_layers"] or layers["linear"].get("fp32", 0) == 0, (stage, layers)
        # the manifest names every layer left fp32, and the plan's exceptions are among them
        assert all(any(n.startswith(p) for n in rec["fp32_layers"]) for p in rec["kept_fp32_layers"]), rec
        psnr_gate = rec["gates"][0]
        assert psnr_gate["ok"] and psnr_gate["min_psnr_db"] >= gates.MIN_PSNR["int8"], (stage, psnr_gate)
    # Chained tracking is measured and recorded; on the tiny synthetic model it is a lower
    # bound, so the test checks the record is consistent, not that random weights pass it.
    tracking = doc["variant"]["tracking_gate"]
    case = tracking["cases"][CASE]
    assert case["masks"] >= 10 and 0.5 < case["mean_iou"] <= 1.0 and case["min_iou"] <= case["mean_iou"]
    passes = case["mean_iou"] >= gates.MIN_CASE_MEAN_IOU and case["min_iou"] >= gates.MIN_FRAME_IOU
    assert case["ok"] == passes == tracking["ok"]
    assert doc["variant"]["status"] == ("passed" if passes else "failing")
    assert bool(doc["variant"]["failures"]) == (not passes)


def test_int8_is_smaller_and_runtime_picks_variant_from_manifest(tiny_export):
    from etam_mobile.runtime.exported import open_backend

    folder = int8_tiny()
    backend = open_backend("executorch", folder)
    assert backend.variant == "int8"
    assert backend.precision["memory_attention"]["precision"] == "int8"
    assert backend.precision["mask_decoder"]["precision"] == "fp32"
    model, _ = tiny()
    inputs = example_inputs(model.cfg, Capacities(), model.stages(), seed=3)
    ref = run_eager(model.stages()["memory_attention"].eval(), inputs["memory_attention"])
    got = backend.run("memory_attention", inputs["memory_attention"])
    assert gates.psnr(ref[0], got[0]) >= gates.MIN_PSNR["int8"]
    # weights: the int8 memory attention is well under half its fp32 program (the shared export's)
    fp32 = tiny_export / "memory_attention.pte"
    assert (folder / "memory_attention.pte").stat().st_size < 0.5 * fp32.stat().st_size


def test_int8_4w_graph_has_4bit_linears_and_tracks_the_fp32_stage():
    """The default-suite check of int8-4w on the tiny config: the quantised graph (torchao 4-bit
    groups + the int8 pass, before XNNPACK lowering, which the slow test below adds) has int4
    linears, no linear left fp32 but the tiny ones, and stays near the fp32 stage (4-bit weights
    lose ~10 % RMS on random weights: measured 25-26 dB at ti_512, so > 20 dB here)."""
    from etam_export.common import torch_inputs

    model, _ = tiny()
    stage = model.stages(for_export=True)["memory_attention"].eval()
    inputs = example_inputs(model.cfg, Capacities(), model.stages(), seed=1)["memory_attention"]
    ep, rep = quantize.quantized_program(stage, inputs, "int8-4w", "memory_attention")
    assert rep["layers"]["linear"].get("int4", 0) > 0 and rep["layers"]["linear"].get("fp32", 0) == 0, rep["layers"]
    with torch.inference_mode():
        out = ep.module()(*torch_inputs(inputs))
    ref = run_eager(model.stages()["memory_attention"].eval(), inputs)
    assert gates.psnr(ref[0], out[0].numpy()) > 20.0


@pytest.mark.slow  # a quantised lowering of its own (minutes on 2 cores)
def test_int8_4w_quantises_linears_to_4bit_groups(tmp_path):
    """int8-4w on the memory attention: 4-bit linears where the width divides 32, int8 otherwise."""
    model, _ = tiny()
    stage = model.stages(for_export=True)["memory_attention"].eval()
    inputs = example_inputs(model.cfg, Capacities(), model.stages(), seed=1)["memory_attention"]
    rep = quantize.write(stage, inputs, tmp_path / "ma.pte", "memory_attention", "int8-4w")
    assert rep["layers"]["linear"].get("int4", 0) > 0 and rep["layers"]["linear"].get("fp32", 0) == 0, rep["layers"]
    assert rep["int4_linears"]
    from executorch.runtime import Runtime

    program = Runtime.get().load_program(str(tmp_path / "ma.pte"))
    out = program.load_method("forward").execute([torch.from_numpy(a) for a in inputs])
    ref = run_eager(model.stages()["memory_attention"].eval(), inputs)
    assert gates.psnr(ref[0], out[0].numpy()) > 20.0  # 4-bit: measured, gate is the exporter's job


@pytest.mark.slow  # a quantised lowering of its own (minutes on 2 cores)
def test_missed_gate_names_stage_figure_threshold_and_plan(tmp_path, monkeypatch):
    model, weights = tiny()
    monkeypatch.setitem(gates.MIN_PSNR, "int8", 150.0)  # unreachable: every quantised stage misses it
    kw = dict(targets=("executorch",), weights_info=weights, quiet=True, stage_precision="memory_attention=int8",
              gate_cases=())
    with pytest.raises(ExportError) as info:
        export_model(model, tmp_path / "bad", **kw)
    msg = str(info.value)
    assert "stage memory_attention" in msg and "PSNR" in msg and "< 150 dB" in msg
    assert "--stage-precision memory_attention=fp32" in msg and "--allow-failing-gates" in msg
    assert not (tmp_path / "bad").exists() and not list(tmp_path.iterdir())
    doc = export_model(model, tmp_path / "marked", allow_failing_gates=True, **kw)
    assert doc["variant"]["status"] == "failing" and doc["variant"]["failures"]
    rec = read_manifest(tmp_path / "marked")["stages"]["memory_attention"]["precision"]["executorch"]
    assert rec["status"] == "failing" and rec["precision"] == "int8"
    assert read_manifest(tmp_path / "marked")["stages"]["mask_decoder"]["precision"]["executorch"]["precision"] == "fp32"


def test_tracking_gate_fails_a_broken_variant():
    """The chained gate is not vacuous: a backend with inverted masks fails it, eager itself passes."""
    from etam_mobile.runtime.backends import EagerBackend

    model, _ = tiny()
    ref = EagerBackend(model, capacities=Capacities())

    class Drifting(EagerBackend):
        def run(self, stage, inputs):
            out = super().run(stage, inputs)
            return [-out[0]] + out[1:] if stage == "mask_decoder" else out  # inverted masks

    res = gates.tracking_gate(Drifting(model, capacities=Capacities()), ref, gates.case_dirs((CASE,)))
    assert not res["ok"] and res["cases"][CASE]["min_iou"] < gates.MIN_FRAME_IOU
    seen = []  # progress: one call per case as it ends (full-size cases take minutes each)
    same = gates.tracking_gate(EagerBackend(model, capacities=Capacities()), ref, gates.case_dirs((CASE,)),
                               progress=lambda name, case: seen.append((name, case["ok"])))
    assert same["ok"] and same["cases"][CASE]["mean_iou"] == 1.0
    assert seen == [(CASE, True)]
    lines = gates.failures({}, dict(res, fix="keep memory_attention fp32"))
    assert lines and CASE in lines[0] and "mean mask IoU" in lines[0] and ">= 0.97" in lines[0]


def test_default_plans_keep_the_mask_decoder_fp32_and_offer_the_mlp_split():
    """The measured plans (README): the MLP-only decoder split passed on the tiny config but
    missed the ti_512 tracking gate, so the default keeps the whole decoder fp32;
    `--stage-precision mask_decoder=int8` gives the split (only the two-way transformer's MLPs)."""
    from etam_export import plan

    for scheme in ("int8", "int8-4w"):
        p = plan.executorch_plan(scheme, None)
        assert p["mask_decoder"] == "fp32" and p["memory_encoder"] == "int8"
        assert p["image_encoder"] == p["memory_attention"] == scheme
    assert plan.executorch_plan("int8", "mask_decoder=int8")["mask_decoder"] == "int8"
    keep = plan.keep_fp32_layers("mask_decoder", "int8")
    assert "decoder.transformer.layers.0.cross_attn_image_to_token" in keep and "obj_ptr_proj" in keep
    assert not any(k.startswith("decoder.transformer.layers.0.mlp") or k == "decoder.transformer" for k in keep)


def test_kept_fp32_layers_appear_in_the_census():
    """Every layer a default plan keeps fp32 (plan.KEEP_FP32_LAYERS) is named fp32 by the census
    of the quantised stage, which the manifest records (`fp32_layers`); every other linear is
    quantised."""
    from etam_export import plan

    model, _ = tiny()
    mods = model.stages(for_export=True)
    examples = example_inputs(model.cfg, Capacities(), model.stages())
    todo = {}
    for stages in [*plan.DEFAULT_EXECUTORCH_PLANS.values(), plan.executorch_plan("int8", "mask_decoder=int8")]:
        for stage, prec in stages.items():
            if prec != plan.FP32 and plan.keep_fp32_layers(stage, prec):
                todo[(stage, prec)] = plan.keep_fp32_layers(stage, prec)
    assert ("mask_decoder", "int8") in todo  # the measured split (README "Which layers stay fp32")
    for (stage, prec), keep in todo.items():
        weighted = {n for n, m in mods[stage].named_modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d,
                                                                                torch.nn.ConvTranspose2d))}
        assert all(any(n.startswith(p) for n in weighted) for p in keep), (stage, keep)  # no stale prefix
        linears = {n for n, m in mods[stage].named_modules() if isinstance(m, torch.nn.Linear)}
        kept = {n for n in linears if n.startswith(keep)}
        assert kept, (stage, keep)
        _, rep = quantize.quantized_program(mods[stage].eval(), examples[stage], prec, stage, skip_fp32=keep)
        assert kept <= set(rep["fp32_layers"]), (stage, kept - set(rep["fp32_layers"]))
        assert not (linears - kept) & set(rep["fp32_layers"]), (stage, rep["fp32_layers"])
        lin = rep["layers"]["linear"]
        assert lin.get("fp32", 0) + lin.get("fp32-tiny", 0) == len(kept) and lin.get("int8", 0) > 0, (stage, lin)


def test_bad_variant_arguments_fail_before_any_work(tmp_path, capsys):
    from etam_mobile.cli import main

    out = tmp_path / "o"
    bad = [
        (["--quantize", "int3"], "unknown --quantize scheme 'int3'; choose none, int8, int8-4w"),
        (["--quantize", "int8", "--targets", "executorch,onnx"], "apply to the executorch target only, not onnx"),
        (["--stage-precision", "decoder=int8"], "unknown stage 'decoder'"),
        (["--stage-precision", "image_encoder=int2", "--targets", "executorch"], "image_encoder=int2: unknown precision"),
        (["--stage-precision", "image_encoder"], "is not STAGE=PRECISION"),
        (["--quantize", "int8", "--calibration", str(tmp_path / "nope")], "--calibration"),
    ]
    empty = tmp_path / "empty"
    empty.mkdir()
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    Image.new("RGB", (32, 24)).save(mixed / "00000.png")
    Image.new("RGB", (24, 32)).save(mixed / "00001.png")
    bad += [(["--quantize", "int8", "--calibration", str(empty)], "no .jpg/.jpeg/.png frames"),
            (["--quantize", "int8", "--calibration", str(mixed)], "frames have different sizes")]
    for extra, want in bad:
        assert main(["-q", "export", "--config", "test_tiny", "--out", str(out), *extra]) == 2, extra
        err = capsys.readouterr().err
        assert want in err and err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
        assert not out.exists()


def test_legacy_manifest_precision_is_derived_or_refused():
    doc = {"stages": {"image_encoder": {}}, "tool": {"target_precision": {"executorch": "fp32", "coreml": "fp16"}}}
    assert artifact_precision(doc, "image_encoder", "executorch")["precision"] == "fp32"
    assert artifact_precision(doc, "image_encoder", "coreml")["precision"] == "fp16"
    with pytest.raises(ValueError, match="no precision record.*re-export"):
        artifact_precision({"stages": {"image_encoder": {}}, "tool": {}}, "image_encoder", "executorch")


def test_census_counts_weight_precision():
    model, _ = tiny()
    stage = model.stages(for_export=True)["memory_encoder"].eval()
    inputs = example_inputs(model.cfg, Capacities(), model.stages())["memory_encoder"]
    ep, rep = quantize.quantized_program(stage, inputs, "int8", "memory_encoder", skip_fp32=("encoder.fuser",))
    fp32_ep = torch.export.export(stage, tuple(torch.from_numpy(a) for a in inputs), strict=False)
    plain = quantize.census(fp32_ep.graph_module)["layers"]
    assert all(set(v) == {"fp32"} for v in plain.values())
    total = {k: sum(v.values()) for k, v in rep["layers"].items()}
    assert total == {k: sum(v.values()) for k, v in plain.items()}
    assert rep["layers"]["conv"].get("int8", 0) > 0 and rep["layers"]["conv"].get("fp32", 0) > 0  # fuser skipped


def test_size_tables_are_computed_in_the_quantised_graph_not_stored():
    """RoPE cos/sin and the sine encodings of the memory attention depend only on sizes: the
    quantised program computes them (same numbers) instead of carrying them as constants."""
    import copy

    model, _ = tiny()
    stage = model.stages(for_export=True)["memory_attention"].eval()
    args = tuple(torch.from_numpy(a) for a in example_inputs(model.cfg, Capacities(), model.stages())["memory_attention"])

    def constant_bytes(ep):
        tensors = list(ep.state_dict.values()) + list(ep.constants.values())
        return sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor))

    wrapped, names = quantize.compute_tables_in_graph(copy.deepcopy(stage))
    # rope_cos2/rope_sin2: the tables the export (graph-ops) form reads; they were stored until
    # this test named them (the ti_512 int8 memory attention grew from 5.98 to 7.95 MiB)
    tables = ["curr_pos", "mem_pos", "rope_cos", "rope_cos2", "rope_sin", "rope_sin2"]
    assert sorted(n.split()[0] for n in names) == tables
    stored = torch.export.export(stage, args, strict=False)
    computed = torch.export.export(wrapped, args, strict=False)
    saved = sum(t.numel() * 4 for t in (stage.curr_pos, stage.mem_pos, stage.attn.rope_cos, stage.attn.rope_sin,
                                        stage.attn.rope_cos2, stage.attn.rope_sin2))
    assert constant_bytes(stored) - constant_bytes(computed) == saved
    with torch.no_grad():
        torch.testing.assert_close(computed.module()(*args), stage(*args), rtol=0, atol=1e-5)
        torch.testing.assert_close(wrapped(*args), stage(*args), rtol=0, atol=1e-5)  # and again: nothing left behind
    assert "rope_cos" in stage.attn._buffers  # the caller's module is untouched (the exporter passes a copy)


# ---- Core ML weight compression (emulated gate) --------------------------------------------

def test_coreml_compressed_weights_are_read_back_and_emulated(tmp_path):
    """int8 and 4-bit palettes on the tiny memory attention: the package is smaller than fp16,
    every compressed weight maps back to a PyTorch parameter, and the emulated error grows
    as bits go down (the emulation really uses the package's weights)."""
    from etam_export import coreml, coreml_compress

    model, weights = tiny()
    spec, inputs, ep, ref = exported_stage(model, "memory_attention", seed=1)
    sizes, psnrs = {}, {}
    for scheme in ("fp16", "int8", "palettize4"):
        path = tmp_path / f"{scheme}.mlpackage"
        coreml.write(ep, path, spec, model.cfg, "fp16", weights, scheme)
        assert coreml.check_spec(path, spec) == []
        sizes[scheme] = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
        if scheme == "fp16":
            continue
        got, emu = coreml_compress.emulate(ep, path, tuple(torch.from_numpy(a) for a in inputs))
        assert emu["compressed_weights"] > 0 and emu["unmatched"] == []
        psnrs[scheme] = gates.psnr(ref[0], got[0])
    assert sizes["palettize4"] < sizes["int8"] < 0.7 * sizes["fp16"], sizes
    assert psnrs["int8"] > psnrs["palettize4"] > 10.0, psnrs
    assert psnrs["int8"] >= gates.MIN_PSNR["int8"], psnrs


def test_coreml_compress_arguments():
    from etam_export import coreml_compress

    with pytest.raises(ExportError, match="unknown --compress scheme 'int3'"):
        coreml_compress.check_scheme("int3")
    with pytest.raises(ExportError, match=r"--compress w8a8 is not available in this exporter: .*Core ML predictions "
                                          r"\(linear_quantize_activations, macOS only.*torch\.ao\.quantization\.quantizer "
                                          r"that torch 2\.13 removed; choose int8, palettize6 or palettize4"):
        coreml_compress.check_scheme("w8a8")
    from etam_export.variants import Variant

    with pytest.raises(ExportError, match="--compress palettize6 applies to the coreml target only, not executorch"):
        Variant.create(("coreml", "executorch"), "none", None, None, False, None, "palettize6")


# ---- full size (slow) ----------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("scheme", ["int8", "int8-4w"])
def test_ti_512_quantised_export_gates_and_size(scheme, ti512_model, tmp_path):
    """efficienttam_ti_512x512 with the default plan, gated; quantised artifacts vs the fp32 programs
    (the default plans keep most of the mask decoder fp32, so the size targets apply to the big stages)."""
    from etam_export import executorch as etx
    from etam_export.artifact import torch_export

    doc = export_model(ti512_model, tmp_path / scheme, targets=("executorch",), weights_info={"synthetic_seed": 5},
                       quiet=True, quantize=scheme, allow_failing_gates=True)
    plan = doc["variant"]["executorch_plan"]
    for stage in ("image_encoder", "memory_attention"):
        assert plan[stage] == scheme
        rec = doc["stages"][stage]["precision"]["executorch"]
        gate = rec["gates"][0]
        if scheme == "int8":
            assert gate["min_psnr_db"] >= gates.MIN_PSNR[scheme], (stage, gate)
        else:
            # 4-bit groups of 32 lose ~10 % RMS per random (synthetic) weight: measured 24.9 / 25.9 dB
            # at ti_512 (README "Issue 10 at full size"); the gate must then fail the variant, naming
            # the stage and the int8 plan that passes
            assert 20.0 < gate["min_psnr_db"], (stage, gate)
            if not gate["ok"]:
                assert doc["variant"]["status"] == "failing"
                assert any(f"stage {stage} (executorch, int8-4w)" in f and f"{stage}=int8" in f
                           for f in doc["variant"]["failures"]), doc["variant"]["failures"]
        inputs = example_inputs(ti512_model.cfg, Capacities(), ti512_model.stages(for_export=True))[stage]
        fp32 = tmp_path / f"{stage}.pte"
        st = ti512_model.stages(for_export=True)[stage].eval()
        etx.write(torch_export(st, inputs, stage), fp32, stage, "executorch", "fp32")
        q = (tmp_path / scheme / f"{stage}.pte").stat().st_size
        assert q <= (0.30 if scheme == "int8" else 0.20) * fp32.stat().st_size, (stage, q, fp32.stat().st_size)
    # the size-only tables are computed in the quantised memory attention, not stored
    tables = doc["tool"]["export_report"]["memory_attention"]["executorch"]["tables_computed_in_graph"]
    assert {t.split()[0] for t in tables} == {"curr_pos", "mem_pos", "rope_cos", "rope_sin", "rope_cos2", "rope_sin2"}
    check_tracking_record(doc)


# Masks each default gate case's protocol yields (case.json): two prompts + 5 frames x 2 objects;
# one click + 5 frames, a correction on frame 2, then frames 3-4 again.
PROTOCOL_MASKS = {"ti_plain_two_objects": 12, "s_plain_correction": 9}


def check_tracking_record(doc):
    """The chained gate ran on the default cases and the variant's status says what it found."""
    tracking = doc["variant"]["tracking_gate"]
    assert set(tracking["cases"]) == set(gates.DEFAULT_CASES)
    for name, c in tracking["cases"].items():
        assert c["masks"] == PROTOCOL_MASKS[name] and 0.0 <= c["min_iou"] <= c["mean_iou"] <= 1.0, (name, c)
    assert doc["variant"]["status"] == ("passed" if tracking["ok"] else "failing")


@pytest.mark.slow
def test_ti_1_pooled_1024_int8_export_and_gates(tmp_path):
    """efficienttam_ti_1 (1024, pooled memory attention), int8 with the default plan, gated."""
    from etam_mobile.checkpoint import load_model
    from etam_mobile.configs import get_config

    model, weights = load_model(get_config("efficienttam_ti_1"), None, seed=5, quiet=True)
    doc = export_model(model, tmp_path / "int8", targets=("executorch",), weights_info=weights, quiet=True,
                       quantize="int8", allow_failing_gates=True)
    assert read_manifest(tmp_path / "int8")["variant"]["name"] == "int8"
    for stage in STAGES:
        rec = doc["stages"][stage]["precision"]["executorch"]
        assert rec["precision"] == doc["variant"]["executorch_plan"][stage]
        if rec["precision"] != "fp32":
            assert rec["gates"][0]["min_psnr_db"] >= gates.MIN_PSNR["int8"], (stage, rec["gates"][0])
    check_tracking_record(doc)
