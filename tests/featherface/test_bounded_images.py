"""A huge image is downscaled by detect (boxes in the file's pixels) and refused by evaluate and the data."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from featherface.data.widerface import read_image, read_image_downscaled
from featherface.detect import cli, predict_widerface


def _jpeg(path, height, width):
    image = np.zeros((height, width, 3), dtype=np.uint8)
    image[:, : width // 2] = (0, 0, 255)  # left half red: the downscaled image keeps the layout
    assert cv2.imwrite(str(path), image)
    return path


def test_a_large_jpeg_is_decoded_reduced_then_fitted(tmp_path, monkeypatch):
    path = _jpeg(tmp_path / "big.jpg", 3000, 2400)
    decoded = []
    original = cv2.imdecode
    monkeypatch.setattr(cv2, "imdecode", lambda data, flag: decoded.append(flag) or original(data, flag))
    image, scale = read_image_downscaled(path, max_size=512)
    assert decoded == [cv2.IMREAD_REDUCED_COLOR_8]  # 375 x 300: never decoded whole
    assert image.shape == (375, 300, 3) and scale == pytest.approx(300 / 2400)
    image, scale = read_image_downscaled(path, max_size=256)  # /8 then resized to 256 on the long side
    assert max(image.shape[:2]) == 256 and scale == pytest.approx(image.shape[1] / 2400)
    assert image[:, : image.shape[1] // 2 - 2, 2].min() > 200 and image[:, image.shape[1] // 2 + 2:, 2].max() < 50
    small, scale = read_image_downscaled(_jpeg(tmp_path / "small.jpg", 40, 60), max_size=512)
    assert small.shape == (40, 60, 3) and scale == 1.0


def test_detect_on_a_huge_image_reports_boxes_in_the_files_pixels(tmp_path, monkeypatch):
    import featherface.detect as detect

    path = _jpeg(tmp_path / "big.jpg", 2048, 1536)
    row = np.array([[10, 20, 30, 40, *range(10), 0.9]], dtype=np.float32)  # a face found in the downscaled image
    shapes = []

    def detect_one(self, image):
        shapes.append(image.shape)
        return row.copy()

    monkeypatch.setattr(detect.FaceDetector, "detect", detect_one)
    result = CliRunner().invoke(cli, ["detect", "nano_b", str(path), "--out", str(tmp_path / "out"),
                                      "--max-size", "256"])
    assert result.exit_code == 0, result.output
    assert shapes == [(256, 192, 3)]
    face = json.loads((tmp_path / "out" / "detections.json").read_text())[str(path)][0]
    assert face["box"] == [80.0, 160.0, 80.0 + 240.0, 160.0 + 320.0]  # x8: 1536 / 192
    assert face["landmarks"][0] == [0.0, 8.0]


def test_evaluate_and_the_training_data_refuse_an_image_over_the_limit(tmp_path):
    event = tmp_path / "images" / "0--Parade"
    event.mkdir(parents=True)
    path = _jpeg(event / "big.jpg", 700, 300)
    with pytest.raises(ValueError, match=r"big.jpg: 300x700 pixels, over the limit of 512 px .*\(--max-size\)"):
        predict_widerface(torch.nn.Identity(), tmp_path / "images", progress=False, max_size=512)
    with pytest.raises(ValueError, match=r"over the limit of 512 px .*\(max_size\)"):
        read_image(path, source="labels.txt:3", max_size=512)
    assert read_image(path).shape == (700, 300, 3)  # under the default limit


def test_a_png_too_large_to_decode_reduced_is_refused_in_one_line(tmp_path):
    path = tmp_path / "big.png"
    assert cv2.imwrite(str(path), np.zeros((8, 700, 3), dtype=np.uint8))
    result = CliRunner().invoke(cli, ["detect", "nano_b", str(path), "--out", str(tmp_path / "out"),
                                      "--max-size", "256"])
    assert result.exit_code == 2, result.output
    assert "big.png: 700x8 pixels, over the limit of 512 px" in result.output
    assert "Traceback" not in result.output
