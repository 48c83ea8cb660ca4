"""quantize --auto-exclude: measured per-node INT8 sensitivity picks the planted sensitive node."""

from __future__ import annotations

import cv2
import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from compresskit.cli import cli
from compresskit.deploy.export import Preprocessing, export_model, read_metadata
from compresskit.deploy.runtime import ort_session
from compresskit.deploy.sensitivity import auto_exclude, output_error


def _planted(tmp_path):
    """conv0 -> relu -> conv1 -> relu -> conv2, where conv1 cannot survive per-channel INT8 weights:
    its weights on input channel 0 (always 0: conv0's channel 0 is zeroed) are 500, so each output channel's
    INT8 scale rounds every other weight of conv1 to 0. In FP32 the outlier never shows."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                          nn.Conv2d(8, 4, 1)).eval()
    with torch.no_grad():
        model[0].weight[0] = 0.0
        model[0].bias[0] = 0.0
        model[2].weight[:, 0] = 500.0
    path = export_model(model, torch.randn(1, 3, 16, 16), tmp_path / "planted.onnx",
                        metadata=Preprocessing("BGR", (0.0, 0.0, 0.0), 1 / 64, (16, 16)).to_metadata()).path
    calibration = [np.random.default_rng(i).standard_normal((1, 3, 16, 16)).astype(np.float32) for i in range(8)]
    return path, calibration


def _outputs(path, inputs):
    session = ort_session(path)
    return [session.run(None, {"input": x}) for x in inputs]


def test_output_error_exact_values():
    expected = [[np.array([0.0, 2.0]), np.array([1.0, 1.0, 4.0])]]
    assert output_error(expected, expected) == 0.0
    assert output_error([[np.array([0.0, 1.0]), np.array([1.0, 1.0, 4.0])]], expected) == pytest.approx(0.5)
    assert output_error([[np.array([0.0, 2.0]), np.array([1.0, 1.0, 1.0])]], expected) == pytest.approx(9 / 6)


def test_auto_exclude_keeps_the_planted_node_in_fp32_and_meets_the_budget(tmp_path):
    fp32, calibration = _planted(tmp_path)
    result = auto_exclude(fp32, tmp_path / "auto.onnx", calibration, budget=0.01)
    assert result.full_error > 0.1  # full INT8 is ruined by the planted conv
    assert result.ranking[0].node == "/2/Conv"  # measured as the most sensitive
    assert "/2/Conv" in result.excluded and len(result.excluded) <= 2
    assert result.met and result.error <= 0.01
    graph = onnx.load(str(result.path)).graph
    produced_by = {output: node.op_type for node in graph.node for output in node.output}
    convs = {node.name: node for node in graph.node if node.op_type == "Conv"}
    assert produced_by.get(convs["/2/Conv"].input[1]) != "DequantizeLinear"  # FP32 weights
    assert produced_by[convs["/4/Conv"].input[1]] == "DequantizeLinear"  # the rest stays INT8
    # the written file itself meets the budget on the calibration inputs
    assert output_error(_outputs(result.path, calibration), _outputs(fp32, calibration)) <= 0.01
    assert set(read_metadata(result.path)["quantization.fp32_nodes"].split(",")) == set(result.excluded)


def test_auto_exclude_excludes_nothing_when_full_int8_is_within_budget(tmp_path):
    fp32, calibration = _planted(tmp_path)
    result = auto_exclude(fp32, tmp_path / "auto.onnx", calibration, budget=10.0)
    assert result.excluded == () and result.ranking == () and result.met
    with pytest.raises(ValueError, match="budget must be > 0"):
        auto_exclude(fp32, tmp_path / "x.onnx", calibration, budget=0)


def test_cli_quantize_auto_exclude(tmp_path):
    fp32, _ = _planted(tmp_path)
    images = tmp_path / "images"
    images.mkdir()
    for index in range(6):
        cv2.imwrite(str(images / f"{index}.png"), np.random.default_rng(index).integers(0, 255, (16, 16, 3), np.uint8))
    runner = CliRunner()
    result = runner.invoke(cli, ["quantize", str(fp32), "--calibration-images", str(images), "--out",
                                 str(tmp_path / "q.onnx"), "--auto-exclude", "--error-budget", "0.01"])
    assert result.exit_code == 0, result.output
    assert "auto-exclude: output error" in result.output and "budget 0.01, met" in result.output
    summary = next(line for line in result.output.splitlines() if line.startswith("auto-exclude:"))
    assert "/2/Conv" in summary.partition("kept in FP32:")[2]
    result = runner.invoke(cli, ["quantize", str(fp32), "--calibration-images", str(images), "--out",
                                 str(tmp_path / "q2.onnx"), "--auto-exclude", "--exclude", "/0/*"])
    assert result.exit_code == 2 and "drop --exclude" in result.output
