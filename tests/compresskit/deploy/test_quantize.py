"""INT8 static quantization (ONNX Runtime QDQ): small models, a pruned Nano-B at toy scale, the CLI
command and the recipe phase."""

from __future__ import annotations

import json

import cv2
import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner
from torch import nn
from zoo import ZOO

from compresskit.cli import cli
from compresskit.deploy.export import Preprocessing, export_model, read_metadata
from compresskit.deploy.quantize import calibration_images, preprocess_image, quantize_onnx
from compresskit.deploy.runtime import OrtModule, is_quantized


def _calibration(shape: tuple[int, ...], count: int = 8, scale: float = 1.0) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [(rng.standard_normal(shape) * scale).astype(np.float32) for _ in range(count)]


def test_quantized_zoo_model_is_qdq_close_to_fp32_and_keeps_dynamic_axes(tmp_path):
    model, example_input = ZOO["detection_heads"]()
    fp32 = export_model(model, example_input, tmp_path / "m.onnx", dynamic=True,
                        metadata=Preprocessing("RGB", (1.0, 2.0, 3.0), 0.5, (32, 32)).to_metadata()).path
    int8 = quantize_onnx(fp32, tmp_path / "m.int8.onnx", _calibration((1, 3, 32, 32)))
    ops = {node.op_type for node in onnx.load(str(int8)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops and is_quantized(int8) and not is_quantized(fp32)
    metadata = read_metadata(int8)
    assert Preprocessing.from_metadata(metadata) == Preprocessing("RGB", (1.0, 2.0, 3.0), 0.5, (32, 32))
    assert metadata["quantization.weights"] == "int8 per-channel"
    for shape in ((1, 3, 32, 32), (2, 3, 64, 48)):  # the dynamic axes survive quantization
        x = torch.randn(shape, generator=torch.Generator().manual_seed(1))
        expected, actual = model.eval()(x), OrtModule(int8)(x)
        for want, got in zip(expected, actual):
            assert got.shape == want.shape
            assert (got - want).abs().max() <= 0.1 * want.abs().max() + 1e-3  # INT8 is close, not equal


def test_pruned_nano_b_quantizes_and_runs_at_two_shapes(tmp_path):
    import compresskit as ck
    from featherface.models import NANO_B_PROTECT_PATTERNS, build_model

    torch.manual_seed(0)
    model = build_model("nano_b").eval()
    images = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 50
    ck.prune(model, images, 0.5, protect=NANO_B_PROTECT_PATTERNS)
    fp32 = export_model(model, images, tmp_path / "nano_b.onnx", dynamic=True).path
    int8 = quantize_onnx(fp32, tmp_path / "nano_b.int8.onnx", _calibration((1, 3, 64, 64), 4, 50.0),
                         method="percentile")
    assert read_metadata(int8)["quantization.calibration"] == "percentile, 4 samples"
    for shape in ((1, 3, 64, 64), (2, 3, 128, 96)):
        x = torch.randn(shape, generator=torch.Generator().manual_seed(2)) * 50
        logits_fp32 = OrtModule(fp32)(x)[1]
        logits_int8 = OrtModule(int8)(x)[1]
        assert logits_int8.shape == logits_fp32.shape == (shape[0], logits_fp32.shape[1], 2)
        correlation = np.corrcoef(logits_fp32.flatten().numpy(), logits_int8.flatten().numpy())[0, 1]
        assert correlation > 0.9


def test_calibration_images_apply_the_file_preprocessing(tmp_path):
    image = np.zeros((4, 6, 3), np.uint8)
    image[..., 0], image[..., 1], image[..., 2] = 10, 20, 30  # B, G, R
    cv2.imwrite(str(tmp_path / "a.png"), image)
    bgr = calibration_images(tmp_path, Preprocessing("BGR", (10.0, 0.0, 0.0), 2.0), count=5)
    assert len(bgr) == 1 and bgr[0].shape == (1, 3, 4, 6)
    assert bgr[0][0, :, 0, 0].tolist() == [0.0, 40.0, 60.0]
    rgb = preprocess_image(image, Preprocessing("RGB", (0.0, 0.0, 0.0), 1.0), size=(8, 12))
    assert rgb.shape == (1, 3, 8, 12) and rgb[0, :, 0, 0].tolist() == [30.0, 20.0, 10.0]
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    with pytest.raises(ValueError, match=r"broken.jpg: cannot read image"):
        calibration_images(tmp_path, Preprocessing(), count=5)
    with pytest.raises(ValueError, match="no calibration images"):
        calibration_images(tmp_path / "a.png", Preprocessing())


def test_quantize_errors_name_the_problem(tmp_path):
    model, example_input = ZOO["detection_heads"]()
    fp32 = export_model(model, example_input, tmp_path / "m.onnx").path
    with pytest.raises(ValueError, match="unknown calibration method 'kl'"):
        quantize_onnx(fp32, tmp_path / "q.onnx", _calibration((1, 3, 32, 32)), method="kl")
    with pytest.raises(ValueError, match="no calibration samples"):
        quantize_onnx(fp32, tmp_path / "q.onnx", [])
    with pytest.raises(ValueError, match="absent.onnx' does not exist"):
        quantize_onnx(tmp_path / "absent.onnx", tmp_path / "q.onnx", _calibration((1, 3, 32, 32)))
    assert not (tmp_path / "q.onnx").exists()


def test_cli_quantize_and_benchmark(tmp_path):
    model, example_input = ZOO["detection_heads"]()
    images = tmp_path / "images"
    images.mkdir()
    for index in range(3):
        cv2.imwrite(str(images / f"{index}.png"), np.random.default_rng(index).integers(0, 255, (40, 40, 3), np.uint8))
    bare = export_model(model, example_input, tmp_path / "bare.onnx", dynamic=True).path
    runner = CliRunner()
    result = runner.invoke(cli, ["quantize", str(bare), "--calibration-images", str(images), "--out",
                                 str(tmp_path / "q.onnx")])
    assert result.exit_code == 2 and "give --mean and --scale" in result.output
    result = runner.invoke(cli, ["quantize", str(bare), "--calibration-images", str(images), "--out",
                                 str(tmp_path / "q.onnx"), "--mean", "127,127,127", "--scale", "0.0078",
                                 "--input-size", "32,32", "--method", "entropy"])
    assert result.exit_code == 0, result.output
    assert "3 calibration images, entropy, per-channel weights" in result.output
    assert is_quantized(tmp_path / "q.onnx")
    result = runner.invoke(cli, ["benchmark", str(bare), str(tmp_path / "q.onnx"), "--input-shape", "1,3,32,32",
                                 "--rounds", "2", "--warmup", "1", "--json", str(tmp_path / "b.json")])
    assert result.exit_code == 0, result.output
    assert "bare.onnx: onnxruntime FP32" in result.output and "q.onnx: onnxruntime INT8" in result.output
    report = json.loads((tmp_path / "b.json").read_text())
    assert report["threads"] == 1 and report["batch"] == 1 and report["input_shape"] == [1, 3, 32, 32]
    assert [len(v["samples"]) for v in report["latency_ms"].values()] == [2, 2]
    result = runner.invoke(cli, ["benchmark", str(tmp_path / "missing.onnx")])
    assert result.exit_code == 2 and "missing.onnx" in result.output


def test_recipe_quantize_phase_reports_metrics_and_latency(tmp_path, monkeypatch):
    from test_pipeline import TOY, write_recipe

    from compresskit.config import load_recipe
    from compresskit.run import run

    recipe = load_recipe(write_recipe(tmp_path, {**TOY, "quantize": {"enabled": True, "calibration_samples": 4,
                                                                     "rounds": 2}}, monkeypatch))
    ctx = run(recipe, run_dir=tmp_path / "run", log=lambda message: None)
    summary = ctx.state["phases"]["quantize"]
    assert set(summary["fp32"]["metrics"]) == set(summary["int8"]["metrics"]) == {"accuracy", "val_loss"}
    assert summary["calibration"] == "minmax, 4 samples" and summary["speedup"] > 0
    assert summary["dynamic_input_axes"] == [0, 2, 3] or summary["dynamic_input_axes"] == [0]
    assert is_quantized(tmp_path / "run" / "model.int8.onnx")
    assert "## INT8 quantization" in (tmp_path / "run" / "report.md").read_text()


def test_excluded_nodes_stay_fp32(tmp_path):
    model, example_input = ZOO["detection_heads"]()
    fp32 = export_model(model, example_input, tmp_path / "m.onnx", dynamic=True).path
    names = [node.name for node in onnx.load(str(fp32)).graph.node if node.op_type == "Conv"]
    first = names[0]
    int8 = quantize_onnx(fp32, tmp_path / "q.onnx", _calibration((1, 3, 32, 32)), exclude=[first])
    graph = onnx.load(str(int8)).graph
    produced_by = {output: node for node in graph.node for output in node.output}
    kept = next(node for node in graph.node if node.name == first)
    # its weight is a plain FP32 initializer, not the output of a DequantizeLinear
    assert kept.input[1] not in produced_by or produced_by[kept.input[1]].op_type != "DequantizeLinear"
    quantized = [node for node in graph.node if node.op_type == "Conv" and node.name != first]
    assert quantized and all(produced_by[node.input[1]].op_type == "DequantizeLinear" for node in quantized)
    assert read_metadata(int8)["quantization.fp32_nodes"] == first
    with pytest.raises(ValueError, match="exclude pattern '/nothing/\\*' matches no node"):
        quantize_onnx(fp32, tmp_path / "q2.onnx", _calibration((1, 3, 32, 32)), exclude=["/nothing/*"])


def test_an_opset_11_file_is_quantized_per_channel_into_a_valid_file(tmp_path):
    """Released files such as YuNet's are opset 11, whose DequantizeLinear has no ``axis``: per-channel
    weights need opset 13, so the file is converted first (before: onnx.checker refused the result)."""
    import numpy as np
    import onnx
    import onnxruntime as ort

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 1)).eval()
    fp32 = tmp_path / "opset11.onnx"
    torch.onnx.export(model, (torch.randn(1, 3, 16, 16),), str(fp32), opset_version=11, dynamo=False)
    assert onnx.load(str(fp32)).opset_import[0].version == 11
    samples = [np.random.default_rng(i).random((1, 3, 16, 16), dtype=np.float32) for i in range(4)]
    int8 = quantize_onnx(fp32, tmp_path / "opset11.int8.onnx", samples, per_channel=True)
    assert {entry.version for entry in onnx.load(str(int8)).opset_import if entry.domain in ("", "ai.onnx")} == {13}
    session = ort.InferenceSession(str(int8))
    out = session.run(None, {session.get_inputs()[0].name: samples[0]})[0]
    with torch.no_grad():
        expected = model(torch.from_numpy(samples[0])).numpy()
    assert np.abs(out - expected).max() < 0.25 * np.abs(expected).max()  # INT8 of a tiny random net, 4 samples
