"""Simplified ONNX exports (kept only when they still match torch) and OpenVINO IR exports."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from zoo import ZOO

from compresskit.deploy import simplify
from compresskit.deploy.export import check_onnx, export_model, read_metadata
from compresskit.deploy.simplify import SimplifyWarning, count_nodes

pytest.importorskip("onnxslim")


@pytest.mark.parametrize("name", ["detection_heads", "grouped_shuffle"])
def test_dynamic_export_is_simplified_and_still_matches_torch(tmp_path, name):
    model, example = ZOO[name]()
    result = export_model(model, example, tmp_path / "m.onnx", dynamic=True, metadata={"k": "v"})
    assert result.simplified.kept
    assert result.simplified.nodes_after < result.simplified.nodes_before  # shape arithmetic folded away
    assert count_nodes(result.path) == result.simplified.nodes_after
    assert read_metadata(result.path)["k"] == "v"
    for shape in ([1, 3, 32, 32], [2, 3, 48, 40]):
        x = torch.randn(shape)
        assert check_onnx(result.path, model, x) <= 1e-4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]  # no candidate left behind


def test_no_simplify_keeps_the_exporter_graph(tmp_path):
    model, example = ZOO["detection_heads"]()
    plain = export_model(model, example, tmp_path / "plain.onnx", dynamic=True, simplify=False)
    slim = export_model(model, example, tmp_path / "slim.onnx", dynamic=True)
    assert plain.simplified is None
    assert count_nodes(plain.path) == slim.simplified.nodes_before


def _corrupting_slim(model: onnx.ModelProto) -> onnx.ModelProto:
    """A 'simplifier' that returns a valid graph with wrong numbers: every Conv weight doubled."""
    names = {node.input[1] for node in model.graph.node if node.op_type == "Conv"}
    for initializer in model.graph.initializer:
        if initializer.name in names:
            array = onnx.numpy_helper.to_array(initializer) * 2
            initializer.CopyFrom(onnx.numpy_helper.from_array(array, initializer.name))
    return model


def _raising_slim(model: onnx.ModelProto) -> onnx.ModelProto:
    raise RuntimeError("simplifier crashed")


@pytest.mark.parametrize("broken, reason", [(_corrupting_slim, "max abs diff"), (_raising_slim, "simplifier crashed")])
def test_a_broken_simplification_keeps_the_checked_file(tmp_path, monkeypatch, broken, reason):
    model, example = ZOO["detection_heads"]()
    reference = export_model(model, example, tmp_path / "ref.onnx", dynamic=True, simplify=False)
    monkeypatch.setattr(simplify, "slim", broken)
    with pytest.warns(SimplifyWarning, match=reason):
        result = export_model(model, example, tmp_path / "m.onnx", dynamic=True)
    assert not result.simplified.kept and reason in result.simplified.reason
    assert result.simplified.nodes_after == result.simplified.nodes_before == count_nodes(reference.path)
    assert check_onnx(result.path, model, torch.randn(2, 3, 40, 48)) <= 1e-4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "ref.onnx"]


@pytest.mark.parametrize("dynamic", [False, True])
def test_openvino_export_matches_torch_within_the_onnx_tolerance(tmp_path, dynamic):
    pytest.importorskip("openvino")
    from compresskit.deploy.openvino_ir import check_openvino, is_openvino_quantized, read_openvino_metadata

    model, example = ZOO["detection_heads"]()
    result = export_model(model, example, tmp_path / "m.xml", format="openvino", dynamic=dynamic,
                          metadata={"k": "v"})
    assert result.format == "openvino" and result.path.is_file() and result.path.with_suffix(".bin").is_file()
    assert all(difference <= 1e-4 for _, difference in result.checks)
    assert len(result.checks) == (3 if dynamic else 1)
    assert read_openvino_metadata(result.path)["k"] == "v"
    assert not is_openvino_quantized(result.path)
    if dynamic:
        assert check_openvino(result.path, model, torch.randn(3, 3, 24, 40)) <= 1e-4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.bin", "m.xml"]


def test_openvino_export_errors_name_the_problem(tmp_path):
    pytest.importorskip("openvino")
    model, example = ZOO["detection_heads"]()
    with pytest.raises(ValueError, match=r"\.xml"):
        export_model(model, example, tmp_path / "m.onnx", format="openvino")


def test_benchmark_two_runtimes_time_the_same_files(tmp_path):
    pytest.importorskip("openvino")
    from compresskit.deploy.benchmark import benchmark_models

    model, example = ZOO["detection_heads"]()
    onnx_path = export_model(model, example, tmp_path / "m.onnx").path
    xml_path = export_model(model, example, tmp_path / "m.xml", format="openvino").path
    report = benchmark_models({"m.onnx": onnx_path, "m.xml": xml_path}, (example,), threads=1, warmup=1, rounds=3,
                              runtimes=("ort", "openvino"))
    assert list(report.latencies) == ["m.onnx [ort]", "m.onnx [openvino]", "m.xml [openvino]"]
    assert all(len(lat.samples_ms) == 3 and np.isfinite(lat.median_ms) for lat in report.latencies.values())
    assert report.notes["m.onnx [openvino]"].startswith("openvino FP32")
    assert f"{count_nodes(onnx_path)} nodes" in report.notes["m.onnx [ort]"]
    with pytest.raises(ValueError, match="unknown runtime 'tensorrt'"):
        benchmark_models({"m.onnx": onnx_path}, (example,), runtimes=("tensorrt",))


def test_cli_export_openvino_matches_torch_and_benchmark_runs_it(tmp_path):
    pytest.importorskip("openvino")
    pytest.importorskip("compresskit.models.persist")
    from click.testing import CliRunner

    from compresskit.cli import cli
    from compresskit.deploy.openvino_ir import check_openvino
    from compresskit.models.persist import load_pruned

    runner = CliRunner()
    checkpoint = tmp_path / "pruned.pt"
    result = runner.invoke(cli, ["prune", "examples.shapes_classifier:build_model", "--arg", "name=resnet_student",
                                 "--rate", "0.25", "--protect", "fc", "--input-shape", "1,3,16,16",
                                 "--out", str(checkpoint)])
    assert result.exit_code == 0, result.output
    trust = ["--trust", "examples.shapes_classifier"]
    xml = tmp_path / "model.xml"
    result = runner.invoke(cli, ["export", str(checkpoint), "--format", "openvino", "--dynamic", "--out", str(xml),
                                 "--input-shape", "1,3,16,16", *trust])
    assert result.exit_code == 0, result.output
    assert "max |OpenVINO - torch|" in result.output and "onnx graph: " in result.output
    model = load_pruned(checkpoint, trust=["examples.shapes_classifier"])
    assert check_openvino(xml, model, torch.randn(2, 3, 16, 16), atol=1e-4) <= 1e-4  # the --atol default
    onnx_file = tmp_path / "model.onnx"
    assert runner.invoke(cli, ["export", str(checkpoint), "--out", str(onnx_file), "--input-shape", "1,3,16,16",
                               *trust]).exit_code == 0
    result = runner.invoke(cli, ["benchmark", str(onnx_file), str(xml), "--runtime", "ort,openvino",
                                 "--input-shape", "1,3,16,16", "--rounds", "2", "--warmup", "1"])
    assert result.exit_code == 0, result.output
    for row in ("model.onnx [ort]", "model.onnx [openvino]", "model.xml [openvino]"):
        assert row in result.output
    result = runner.invoke(cli, ["benchmark", str(onnx_file), "--runtime", "tensorrt"])
    assert result.exit_code == 2 and "valid runtimes are ort, openvino" in result.output
