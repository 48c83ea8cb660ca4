"""FaceDetector(spec).detect(image) -> N x 15 (cv2.FaceDetectorYN layout) on torch models and on the project's
ONNX exports (FP32, INT8); detect's thresholds and its random-weights warning."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from compresskit.deploy.export import export_model
from compresskit.deploy.quantize import quantize_onnx
from featherface.detect import FaceDetector, RandomWeightsWarning, cli, detect_image, load_model
from featherface.models import build_model


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A random-weight RetinaFace, its checkpoint spec and its dynamic FP32 / INT8 exports."""
    folder = tmp_path_factory.mktemp("detector")
    torch.manual_seed(0)
    model = build_model("retinaface_mnet025").eval()
    weights = folder / "weights.pth"
    torch.save(model.state_dict(), weights)
    fp32 = export_model(model, torch.randn(1, 3, 64, 64) * 50, folder / "m.onnx", dynamic=True).path
    rng = np.random.default_rng(0)
    int8 = quantize_onnx(fp32, folder / "m.int8.onnx", [rng.normal(0, 50, (1, 3, 96, 96)).astype(np.float32)])
    return f"retinaface_mnet025:{weights}", fp32, int8


def _image(height: int = 70, width: int = 90) -> np.ndarray:
    return np.random.default_rng(1).integers(0, 255, (height, width, 3), dtype=np.uint8)


def test_rows_follow_the_face_detector_yn_layout(exported):
    spec, _, _ = exported
    faces = FaceDetector(spec, score_threshold=0.0, top_k=50).detect(_image())
    assert faces.dtype == np.float32 and faces.ndim == 2 and faces.shape[1] == 15 and len(faces) >= 1
    assert np.all(np.diff(faces[:, 14]) <= 0) and np.all((faces[:, 14] >= 0) & (faces[:, 14] <= 1))
    assert np.all(faces[:, 2:4] >= 0)  # width, height
    # same detections as detect_image on the torch model (box x1 y1 x2 y2 -> x y w h), padding aside
    padded = np.zeros((96, 96, 3), np.uint8) + np.uint8([104, 117, 123])  # the mean colour: zero input
    padded[:70, :90] = _image()
    expected = detect_image(load_model(spec), padded, conf_threshold=0.0, keep_top_k=len(faces))
    assert [round(f["score"], 5) for f in expected] == [round(float(s), 5) for s in faces[:, 14]]
    x1, y1, x2, y2 = expected[0]["box"]
    assert faces[0, :4] == pytest.approx([x1, y1, x2 - x1, y2 - y1], abs=0.02)


def test_onnx_fp32_matches_torch_and_int8_runs(exported):
    spec, fp32, int8 = exported
    image = _image(100, 120)
    torch_faces = FaceDetector(spec, score_threshold=0.0, top_k=20).detect(image)
    onnx_faces = FaceDetector(fp32, score_threshold=0.0, top_k=20).detect(image)
    assert onnx_faces.shape == torch_faces.shape
    assert np.abs(onnx_faces - torch_faces).max() < 1e-2
    int8_detector = FaceDetector(int8, score_threshold=0.0, top_k=20)
    assert int8_detector.model.quantized and int8_detector.preprocessing.mean == (104.0, 117.0, 123.0)
    assert int8_detector.detect(image).shape[1] == 15


def test_bare_name_warns_random_weights_and_bad_input_is_an_error(exported):
    with pytest.warns(RandomWeightsWarning, match="'nano_b' has random weights"):
        load_model("nano_b")
    with pytest.raises(ValueError, match="score_threshold must be in \\[0, 1\\], got 2"):
        FaceDetector(exported[0], score_threshold=2)
    with pytest.raises(ValueError, match="resize must be > 0, got 0"):
        FaceDetector("no/such/model.onnx", resize=0)  # checked before any model is loaded
    with pytest.raises(ValueError, match="HxWx3 BGR image"):
        FaceDetector(exported[0]).detect(np.zeros((5, 5), np.uint8))


def test_cli_detect_runs_an_int8_file_with_separate_thresholds(exported, tmp_path):
    _, _, int8 = exported
    cv2.imwrite(str(tmp_path / "a.png"), _image())
    result = CliRunner().invoke(cli, ["detect", str(int8), str(tmp_path / "a.png"), "--out", str(tmp_path / "out"),
                                      "--json-threshold", "0.0", "--draw-threshold", "0.99"])
    assert result.exit_code == 0, result.output
    faces = json.loads((tmp_path / "out" / "detections.json").read_text())[str(tmp_path / "a.png")]
    assert len(faces) >= 1 and set(faces[0]) == {"box", "score", "landmarks"}
    assert (tmp_path / "out" / "a_detections.jpg").is_file()
    result = CliRunner().invoke(cli, ["detect", str(tmp_path / "absent.onnx"), str(tmp_path / "a.png"),
                                      "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and "absent.onnx" in result.output


@pytest.mark.shared_data
def test_real_weights_find_the_couple_in_torch_fp32_and_int8(shared_data, tmp_path):
    weights = shared_data / "weights" / "retinaface_mnet025_official.pth"
    image = cv2.imread(str(sorted((shared_data / "widerface" / "WIDER_val" / "images" / "19--Couple").glob("*.jpg"))[0]))
    model = build_model("retinaface_mnet025", weights=weights).eval()
    fp32 = export_model(model, torch.zeros(1, 3, 640, 640), tmp_path / "rf.onnx", dynamic=True, atol=1e-3).path
    calibration = [np.float32(cv2.resize(image, (640, 640))).transpose(2, 0, 1)[None] - np.float32([104, 117, 123]).reshape(1, 3, 1, 1)]
    int8 = quantize_onnx(fp32, tmp_path / "rf.int8.onnx", calibration, exclude=["/body/stage1/*"])
    results = {spec: FaceDetector(spec, score_threshold=0.6).detect(image)
               for spec in (f"retinaface_mnet025:{weights}", str(fp32), str(int8))}
    assert [len(faces) for faces in results.values()] == [2, 2, 2]
    reference = results[f"retinaface_mnet025:{weights}"]
    assert np.abs(results[str(fp32)][:, :4] - reference[:, :4]).max() < 0.5  # pixels


def test_fixed_size_export_gets_a_scaled_and_padded_image(tmp_path):
    torch.manual_seed(0)
    model = build_model("retinaface_mnet025").eval()
    fixed = export_model(model, torch.zeros(1, 3, 64, 64), tmp_path / "fixed.onnx").path
    detector = FaceDetector(fixed, score_threshold=0.0, top_k=20)
    assert detector.fixed_size == (64, 64)
    array, scale = detector.input_for(_image(70, 90))
    assert array.shape == (1, 3, 64, 64) and scale == pytest.approx(64 / 90)
    assert np.all(array[:, :, round(70 * 64 / 90):, :] == 0)  # the padded rows are the mean colour
    faces = detector.detect(_image(70, 90))
    assert faces.shape[1] == 15 and len(faces) >= 1
