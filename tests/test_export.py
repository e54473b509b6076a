"""Exporter on the tiny config: every stage to every target, read back and compared with eager.

One export (all four targets, fp16 so the Core ML fp16 path is exercised; conftest.exported_tiny)
is shared by this file and every other test of exported tiny graphs; everything else here is cheap.
"""
from __future__ import annotations

import json
import platform

import numpy as np
import pytest
import torch

from etam_mobile.contracts import STAGES, Capacities, stage_specs
from etam_mobile.manifest import TARGETS, read_manifest

import etam_export  # noqa: E402
from etam_export import ExportError, artifact_sha256, example_inputs, export_model, parity  # noqa: E402
from etam_export.exporter import check_destination  # noqa: E402

from conftest import ALL_TARGETS, exported_tiny, tiny  # noqa: E402  (the one shared tiny export)

FP32_REL = 1e-4  # exported fp32 graphs vs eager: float32 noise relative to the tensor's peak


def eager_io(model, caps=Capacities()):
    stages = model.stages()
    inputs = example_inputs(model.cfg, caps, stages, seed=1)
    refs = {}
    with torch.inference_mode():
        for s in STAGES:
            out = stages[s](*[torch.from_numpy(a) for a in inputs[s]])
            refs[s] = [o.numpy() for o in (out if isinstance(out, (tuple, list)) else (out,))]
    for s in STAGES:  # ExecuTorch reads raw buffers: a strided array must be made contiguous
        assert all(a.flags.c_contiguous for a in inputs[s])
    return inputs, refs


def assert_fp32_close(ref, got, what):
    for r, g in zip(ref, got):
        g = np.asarray(g).reshape(r.shape)
        err = float(np.abs(r - g).max())
        assert err <= FP32_REL * max(1.0, float(np.abs(r).max())), f"{what}: max abs err {err:.3g}"


# ---- the export itself -------------------------------------------------------------------

def test_manifest_lists_every_stage_target_and_checksum():
    folder = exported_tiny()
    doc = read_manifest(folder)
    assert doc["config"] == "test_tiny" and doc["weights"] == {"synthetic_seed": 0}
    assert doc["precision"] == "fp16"
    assert doc["tool"]["target_precision"] == {"executorch": "fp32", "coreml": "fp16", "onnx": "fp32",
                                              "executorch-coreml": "fp16"}
    for stage in STAGES:
        arts = doc["stages"][stage]["artifacts"]
        assert set(arts) == set(ALL_TARGETS)
        for rel in arts.values():
            assert doc["checksums"][rel] == artifact_sha256(folder / rel)
    buckets = [rel for b in doc["stages"]["memory_attention"]["slot_buckets"] for rel in b["artifacts"].values()]
    assert buckets, "the memory attention's slot-bucket graphs are listed"
    for rel in buckets:
        assert doc["checksums"][rel] == artifact_sha256(folder / rel)
    assert sorted(p.name for p in folder.iterdir()) == sorted(set(
        ["manifest.json"] + [rel for s in STAGES for rel in doc["stages"][s]["artifacts"].values()] + buckets))
    assert not list(folder.parent.glob(".export.*")), "temporary folders left behind"


def test_export_report_has_delegation_and_parity():
    doc = read_manifest(exported_tiny())
    report = doc["tool"]["export_report"]
    for stage in STAGES:
        xnn = report[stage]["executorch"]
        assert 0.0 < xnn["delegated_fraction"] <= 1.0, (stage, xnn)
        assert xnn["verify"]["ok"] and xnn["verify"]["gate"].startswith("max_abs_err")
        assert report[stage]["onnx"]["verify"]["ok"]
        cm = report[stage]["coreml"]["verify"]
        if platform.system() != "Darwin":
            assert cm["numeric"] == "skipped" and "macOS" in cm["reason"]
        # fp16 plan (emulated off macOS) clears the gate on every output
        assert all(o["psnr_db"] >= etam_export.FP16_MIN_PSNR for o in cm["outputs"].values()), (stage, cm)
    # the image encoder is almost entirely inside XNNPACK thanks to the decompositions
    assert report["image_encoder"]["executorch"]["delegated_fraction"] > 0.95


def test_coreml_default_plan_is_all_fp16_where_the_guard_finds_no_risk():
    """The tiny synthetic model has no activation near fp16's limits: every Core ML stage is
    fp16 throughout (no fp32 islands), the guard's record says what it measured, and the
    emulated gates (calibration-frame PSNR, chained tracking) passed."""
    doc = read_manifest(exported_tiny())
    for stage in STAGES:
        rec = doc["stages"][stage]["precision"]["coreml"]
        plan = rec["fp16_plan"]
        assert plan["plan"] == "fp16" and plan["overflow_guard"]["kept_fp32"] == [], (stage, plan)
        assert "built-in clip" in plan["overflow_guard"]["measured_on"]
        assert 0 < plan["overflow_guard"]["max_abs_seen"] < 2**15
        assert rec["saved_program"]["fp32_ops"] == 0 and rec["saved_program"]["casts"] > 0, rec
        assert any(g["on"].startswith("calibration inputs") and g["ok"] for g in rec["gates"]), rec
    gate = doc["variant"]["coreml_fp16"]
    assert gate["status"] == "passed" and gate["tracking_gate"]["ok"] and "emulated" in gate["note"]


@pytest.mark.parametrize("stage", STAGES)
def test_pte_runs_in_executorch_runtime_and_matches_eager(stage):
    from executorch.runtime import Runtime

    folder = exported_tiny()
    doc = read_manifest(folder)
    inputs, refs = eager_io(tiny()[0])
    program = Runtime.get().load_program(str(folder / doc["stages"][stage]["artifacts"]["executorch"]))
    meta = program.metadata("forward")
    spec = doc["stages"][stage]
    assert [tuple(meta.input_tensor_meta(i).sizes()) for i in range(meta.num_inputs())] == \
        [tuple(t["shape"]) for t in spec["inputs"]]
    method = program.load_method("forward")  # keep `program` alive: the method's weights live in it
    out = method.execute([torch.from_numpy(a) for a in inputs[stage]])
    assert_fp32_close(refs[stage], [o.numpy() for o in out], f"{stage}.pte")


@pytest.mark.parametrize("stage", STAGES)
def test_onnx_passes_checker_and_matches_in_onnxruntime(stage):
    import onnx
    import onnxruntime as ort

    folder = exported_tiny()
    doc = read_manifest(folder)
    path = folder / doc["stages"][stage]["artifacts"]["onnx"]
    onnx.checker.check_model(str(path), full_check=True)
    assert onnx.load(str(path)).opset_import[0].version >= 18
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    spec = doc["stages"][stage]
    assert [(i.name, list(i.shape)) for i in sess.get_inputs()] == [(t["name"], t["shape"]) for t in spec["inputs"]]
    assert [o.name for o in sess.get_outputs()] == [t["name"] for t in spec["outputs"]]
    inputs, refs = eager_io(tiny()[0])
    got = sess.run(None, {t["name"]: a for t, a in zip(spec["inputs"], inputs[stage])})
    assert_fp32_close(refs[stage], got, f"{stage}.onnx")


@pytest.mark.parametrize("stage", STAGES)
def test_mlpackage_spec_matches_manifest(stage):
    import coremltools as ct

    folder = exported_tiny()
    doc = read_manifest(folder)
    spec = ct.utils.load_spec(str(folder / doc["stages"][stage]["artifacts"]["coreml"]))
    dtype = {"float32": "FLOAT32", "int32": "INT32"}
    name = ct.proto.FeatureTypes_pb2.ArrayFeatureType.ArrayDataType.Name
    for have, want in ((spec.description.input, doc["stages"][stage]["inputs"]),
                       (spec.description.output, doc["stages"][stage]["outputs"])):
        got = [(f.name, list(f.type.multiArrayType.shape), name(f.type.multiArrayType.dataType)) for f in have]
        assert got == [(t["name"], t["shape"], dtype[t["dtype"]]) for t in want]
        assert all(f.shortDescription for f in have)
    meta = spec.description.metadata
    assert meta.license == "Apache-2.0" and meta.versionString
    assert meta.userDefined["etam.config"] == "test_tiny" and meta.userDefined["etam.stage"] == stage
    assert meta.userDefined["etam.synthetic_seed"] == "0"
    # default plan: all fp16; the tiny synthetic weights give the overflow guard nothing to keep fp32
    assert meta.userDefined["etam.fp16_plan"] == "fp16" and meta.userDefined["etam.fp32_nodes"] == ""
    assert spec.specificationVersion >= 8  # iOS 17 ML Program


@pytest.mark.skipif(platform.system() != "Darwin", reason="Core ML predictions need macOS (spec checked above)")
@pytest.mark.parametrize("stage", STAGES)
def test_mlpackage_numeric_on_macos(stage):
    import coremltools as ct

    folder = exported_tiny()
    doc = read_manifest(folder)
    model = ct.models.MLModel(str(folder / doc["stages"][stage]["artifacts"]["coreml"]))
    inputs, refs = eager_io(tiny()[0])
    spec = doc["stages"][stage]
    pred = model.predict({t["name"]: a for t, a in zip(spec["inputs"], inputs[stage])})
    names = [t["name"] for t in spec["outputs"]]
    res = parity(refs[stage], [pred[n] for n in names], names, "fp16")
    assert res["ok"], res


def test_executorch_coreml_program_has_contract_signature():
    from executorch.runtime import Runtime

    folder = exported_tiny()
    doc = read_manifest(folder)
    for stage in STAGES:
        program = Runtime.get().load_program(str(folder / doc["stages"][stage]["artifacts"]["executorch-coreml"]))
        meta = program.metadata("forward")
        assert meta.num_inputs() == len(doc["stages"][stage]["inputs"])
        assert doc["tool"]["export_report"][stage]["executorch-coreml"]["delegated_fraction"] > 0.9


# ---- inputs, parity, errors --------------------------------------------------------------

def test_example_inputs_are_realistic():
    model, _ = tiny()
    caps = Capacities(points=5, cond_frames=2)
    ex = example_inputs(model.cfg, caps, model.stages())
    specs = stage_specs(model.cfg, caps)
    for s in STAGES:
        assert [a.shape for a in ex[s]] == [tuple(t.shape) for t in specs[s].inputs]
    ma = dict(zip([t.name for t in specs["memory_attention"].inputs], ex["memory_attention"]))
    assert set(np.unique(ma["mem_valid"])) == {0.0, 1.0} and set(np.unique(ma["ptr_valid"])) == {0.0, 1.0}
    assert ma["mem_tpos"].dtype == np.int32 and 0 <= ma["mem_tpos"].min() and ma["mem_tpos"].max() < model.cfg.num_maskmem
    md = dict(zip([t.name for t in specs["mask_decoder"].inputs], ex["mask_decoder"]))
    assert md["labels"].tolist() == [[1, 0, 1, -1, -1]]
    assert (md["points"] >= 0).all() and (md["points"] <= model.cfg.image_size).all()


def test_parity_gates():
    rng = np.random.default_rng(0)
    ref = [rng.standard_normal((1, 4, 8, 8)).astype(np.float32) * 10]
    assert parity(ref, [ref[0] + 1e-5], ["masks"])["ok"]
    assert not parity(ref, [ref[0] + 1e-2], ["masks"])["ok"]
    noisy = ref[0] + 0.01 * rng.standard_normal(ref[0].shape)  # peak ~30 / rmse 0.01: ~70 dB
    res = parity(ref, [noisy], ["masks"], "fp16")
    assert res["ok"] and 60 < res["outputs"]["masks"]["psnr_db"] < 80 and res["outputs"]["masks"]["mask_iou"] > 0.99
    assert not parity(ref, [ref[0] + 2.0 * rng.standard_normal(ref[0].shape)], ["masks"], "fp16")["ok"]
    assert not parity(ref, [np.full_like(ref[0], np.nan)], ["masks"], "fp16")["ok"]


def test_unknown_target_or_precision_is_refused_before_work(tmp_path):
    model, _ = tiny()
    with pytest.raises(ExportError, match="unknown target 'tflite'.*executorch"):
        export_model(model, tmp_path / "x", targets="onnx,tflite", quiet=True)
    with pytest.raises(ExportError, match="unknown precision 'int8'"):
        export_model(model, tmp_path / "x", targets=("onnx",), precision="int8", quiet=True)
    assert not (tmp_path / "x").exists()
    assert set(TARGETS) == set(ALL_TARGETS)


def test_destination_rules(tmp_path):
    other = tmp_path / "photos"
    other.mkdir()
    (other / "a.jpg").write_bytes(b"x")
    for force in (False, True):  # --force replaces only an earlier export, never a user's folder
        with pytest.raises(ExportError, match="not an export.*--force only replaces"):
            check_destination(other, force=force)
    prev = tmp_path / "prev"
    prev.mkdir()
    (prev / "manifest.json").write_text("{}")
    with pytest.raises(ExportError, match="already holds an export.*--force"):
        check_destination(prev, force=False)
    (tmp_path / "empty").mkdir()
    check_destination(tmp_path / "empty", force=False)
    check_destination(tmp_path / "new", force=False)


def test_force_replaces_export_atomically_and_failure_leaves_nothing(tmp_path, monkeypatch):
    from fault_child import stub_converters

    stub_converters(str(exported_tiny()), monkeypatch.setattr)  # conversion is tested above; this is the folder
    model, weights = tiny()
    out = tmp_path / "exp"
    out.mkdir()
    (out / "manifest.json").write_text("{}")
    (out / "stale.onnx").write_bytes(b"old")
    doc = export_model(model, out, targets="onnx", weights_info=weights, quiet=True, force=True, verify=False)
    assert not (out / "stale.onnx").exists() and (out / "image_encoder.onnx").exists()
    assert read_manifest(out)["checksums"] == doc["checksums"]

    from etam_export import onnx as onnx_target

    real = onnx_target.write
    def fail_on_decoder(ep, path, spec):
        if spec.name == "mask_decoder":
            raise RuntimeError("Unsupported FX nodes: {'aten::foo_bar'}")
        return real(ep, path, spec)
    monkeypatch.setattr(onnx_target, "write", fail_on_decoder)
    with pytest.raises(ExportError) as info:
        export_model(model, tmp_path / "new", targets="onnx", quiet=True, verify=False)
    assert (info.value.stage, info.value.target, info.value.op) == ("mask_decoder", "onnx", "aten::foo_bar")
    assert not (tmp_path / "new").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["exp"], "a temporary folder was left behind"


def test_export_error_names_stage_target_and_op(tmp_path, monkeypatch):
    from etam_export import onnx as onnx_target
    from etam_export.common import wrap_error

    def boom(ep, path, spec):
        try:
            raise RuntimeError("Unsupported FX nodes: {'aten::foo_bar'}. ")
        except RuntimeError as exc:
            raise wrap_error(exc, spec.name, "onnx", "ONNX export") from exc
    monkeypatch.setattr(onnx_target, "write", boom)
    with pytest.raises(ExportError) as info:
        export_model(tiny()[0], tmp_path / "o", targets="onnx", quiet=True)
    err = info.value
    assert (err.stage, err.target, err.op) == ("image_encoder", "onnx", "aten::foo_bar")
    assert str(err).startswith("stage image_encoder, target onnx, op aten::foo_bar: ONNX export failed")


def test_cli_export_and_bad_arguments(tmp_path, capsys):
    from etam_mobile.cli import main

    out = tmp_path / "cli"
    assert main(["-q", "export", "--config", "test_tiny", "--targets", "onnx", "--max-points", "4",
                 "--out", str(out), "--no-verify"]) == 0
    doc = json.loads((out / "manifest.json").read_text())
    assert doc["capacities"]["points"] == 4 and doc["stages"]["mask_decoder"]["inputs"][2]["shape"] == [1, 4]
    capsys.readouterr()
    assert main(["-q", "export", "--config", "test_tiny", "--targets", "onnx", "--out", str(out)]) == 2
    assert "already holds an export" in capsys.readouterr().err
    assert main(["-q", "export", "--config", "test_tiny", "--targets", "executorch,tflite", "--out", str(tmp_path / "b")]) == 2
    assert "unknown target 'tflite'" in capsys.readouterr().err
    assert main(["-q", "export", "--config", "test_tiny", "--precision", "fp8", "--out", str(tmp_path / "b")]) == 2
    assert "unknown precision 'fp8'" in capsys.readouterr().err
    assert main(["-q", "export", "--config", "nope", "--out", str(tmp_path / "b")]) == 2
    assert "unknown config 'nope'" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()


# ---- full size -------------------------------------------------------------------------

@pytest.mark.slow
def test_export_ti_512_all_targets(tmp_path):
    from etam_mobile.checkpoint import load_model
    from etam_mobile.configs import get_config

    model, weights = load_model(get_config("efficienttam_ti_512x512"), None, seed=5, quiet=True)
    doc = export_model(model, tmp_path / "ti512", targets=ALL_TARGETS, precision="fp16", weights_info=weights,
                       quiet=True)
    report = doc["tool"]["export_report"]
    for stage in STAGES:
        assert report[stage]["executorch"]["verify"]["ok"] and report[stage]["onnx"]["verify"]["ok"]
        cm = report[stage]["coreml"]["verify"]
        assert all(o["psnr_db"] >= etam_export.FP16_MIN_PSNR for o in cm["outputs"].values())
    assert doc["checksums"] and all(len(v) == 64 for v in doc["checksums"].values())


@pytest.mark.parametrize("config", ["test_tiny_pool1", "test_tiny_pool2"])
def test_pooled_memory_attention_exports_and_switches_branch_in_graph(config, tmp_path):
    """Both pooled variants through ExecuTorch and ONNX Runtime, with 1 valid memory slot
    (upstream's unpooled branch) and with 5 (pooled): one static graph must do both."""
    import onnxruntime as ort
    from executorch.runtime import Runtime

    from etam_export import executorch as etx
    from etam_export import onnx as etonnx
    from etam_export.artifact import torch_export
    from etam_mobile.checkpoint import load_model
    from etam_mobile.configs import TEST_CONFIGS

    model, _ = load_model(TEST_CONFIGS[config], None, seed=2, quiet=True)
    stage = model.stages()["memory_attention"].eval()
    spec = stage_specs(model.cfg, Capacities())["memory_attention"]
    rng = np.random.default_rng(3)
    base = [rng.standard_normal(t.shape).astype(np.float32) if t.dtype == torch.float32
            else rng.integers(0, 7, t.shape).astype(np.int32) for t in spec.inputs]
    ep = torch_export(stage, base, "memory_attention")
    etx.write(ep, tmp_path / "ma.pte", "memory_attention", "executorch", "fp32")
    etonnx.write(etonnx.prepare(stage, ep, base, "memory_attention"), tmp_path / "ma.onnx", spec)
    program = Runtime.get().load_program(str(tmp_path / "ma.pte"))
    method = program.load_method("forward")
    sess = ort.InferenceSession(str(tmp_path / "ma.onnx"), providers=["CPUExecutionProvider"])
    outs = {}
    for n_valid in (1, 5):
        ins = [a.copy() for a in base]
        ins[3] = (np.arange(len(ins[3])) < n_valid).astype(np.float32)
        ins[5] = (np.arange(len(ins[5])) < 3).astype(np.float32)
        with torch.no_grad():
            ref = stage(*[torch.from_numpy(a) for a in ins]).numpy()
        pte = method.execute([torch.from_numpy(a) for a in ins])[0].numpy()
        ort_out = sess.run(None, {t.name: a for t, a in zip(spec.inputs, ins)})[0]
        assert_fp32_close([ref], [pte], f"{config} .pte with {n_valid} valid slots")
        assert_fp32_close([ref], [ort_out], f"{config} .onnx with {n_valid} valid slots")
        outs[n_valid] = ref
    assert np.abs(outs[1] - outs[5]).max() > 1e-3  # the slot count really changes the result
