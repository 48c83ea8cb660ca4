"""The static page in web/ runs the project's ONNX exports in headless Chromium (onnxruntime-web, wasm)
and finds the boxes Python ONNX Runtime finds (IoU >= 0.95 for every box over the drawing threshold).

Needs the Debian ``chromium`` package and ``npm ci`` in ``web/`` (``.ci/run`` installs both). The test
skips only where no Chromium binary exists (``CHROMIUM`` overrides the path). The image is a real
WIDER FACE val image (resized to 512 px wide, saved losslessly as PNG so both sides see the same
pixels) when ``../shared/data`` exists, else a synthetic face scene. Screenshots are saved under
``$COMPRESSKIT_ARTIFACTS`` (default ``<tmp>/screenshots``) as ``<model>.png``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import compresskit as ck
from compresskit.deploy.export import Preprocessing, export_model, read_metadata
from compresskit.deploy.quantize import calibration_images, quantize_onnx

REPO_ROOT = Path(__file__).resolve().parents[2]
WEB = REPO_ROOT / "web"
SHARED = Path(os.environ.get("COMPRESSKIT_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
MIN_IOU = 0.95


def _chromium() -> str:
    for candidate in (os.environ.get("CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if candidate and shutil.which(candidate):
            return shutil.which(candidate)
    pytest.skip("no Chromium binary (apt-get install -y chromium, or set CHROMIUM); .ci/run installs it")


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = width * height
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def _test_image(folder: Path) -> tuple[Path, str]:
    val = sorted((SHARED / "widerface" / "WIDER_val" / "images" / "19--Couple").glob("*.jpg"))
    if val:
        image = cv2.imread(str(val[0]), cv2.IMREAD_COLOR)
        image = cv2.resize(image, (512, round(image.shape[0] * 512 / image.shape[1])), interpolation=cv2.INTER_AREA)
        source = f"WIDER val {val[0].name}, resized to 512 px wide"
    else:
        from featherface.data.synthetic import SyntheticFaces

        image = SyntheticFaces(1, image_size=320, seed=3).sample(0)[0]
        source = "synthetic face scene (no shared data)"
    path = folder / "image.png"
    cv2.imwrite(str(path), image)
    return path, source


def _python_boxes(model_path: Path, image_path: Path, threshold: float) -> np.ndarray:
    from featherface.detect import FaceDetector

    faces = FaceDetector(model_path, score_threshold=threshold).detect(cv2.imread(str(image_path)))
    return np.concatenate([faces[:, :2], faces[:, :2] + faces[:, 2:4], faces[:, 14:15]], axis=1)


def _assert_same_boxes(python: np.ndarray, browser: list[dict], threshold: float, label: str) -> None:
    """Every box over ``threshold`` on either side has a partner on the other with IoU >= 0.95.

    Boxes within 0.01 of the threshold may fall on either side of it (wasm and native float order
    differ), so they need no partner."""
    js = np.array([[*face["box"], face["score"]] for face in browser]).reshape(-1, 5)
    for mine, theirs, side in ((python, js, "Python"), (js, python, "browser")):
        for box in mine[mine[:, 4] >= threshold + 0.01]:
            best = max((_iou(box, other) for other in theirs), default=0.0)
            assert best >= MIN_IOU, f"{label}: {side} box {np.round(box, 1)} has no partner (best IoU {best:.3f})"


def _pruned_nano_b(folder: Path) -> tuple[Path, Path]:
    """A Nano-B pruned at toy scale (random weights), exported dynamic (FP32) and quantized (INT8)."""
    from featherface.models import NANO_B_PROTECT_PATTERNS, build_model

    torch.manual_seed(0)
    model = build_model("nano_b").eval()
    images = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 50
    ck.prune(model, images, 0.5, protect=NANO_B_PROTECT_PATTERNS)
    fp32 = export_model(model, images, folder / "nano_b_pruned.onnx", dynamic=True).path
    preprocessing = Preprocessing.from_metadata(read_metadata(fp32))
    calibration = calibration_images(folder, preprocessing, count=1, size=(256, 256))
    int8 = quantize_onnx(fp32, folder / "nano_b_pruned.int8.onnx", calibration)
    return fp32, int8


@pytest.mark.slow
def test_page_matches_python_onnxruntime(tmp_path):
    chromium = _chromium()
    if not (WEB / "node_modules" / "onnxruntime-web").is_dir():
        pytest.fail("web/node_modules is missing: run `cd web && npm ci` (.ci/run does)")
    image, source = _test_image(tmp_path)
    models = dict(zip(("nano_b_pruned.onnx", "nano_b_pruned.int8.onnx"), _pruned_nano_b(tmp_path)))
    # random weights: draw (and compare) the 8 best Python boxes of the FP32 model
    scores = _python_boxes(models["nano_b_pruned.onnx"], image, 0.0)[:, 4]
    thresholds = {name: float(scores[min(7, len(scores) - 1)]) for name in models}
    weights = SHARED / "weights" / "retinaface_mnet025_official.pth"
    if weights.is_file():  # a detector trained on real faces, at the page's default threshold
        from featherface.models import build_model

        retinaface = build_model("retinaface_mnet025", weights=weights).eval()
        models["retinaface.onnx"] = export_model(retinaface, torch.zeros(1, 3, 640, 640), tmp_path / "retinaface.onnx",
                                                 dynamic=True, atol=1e-3).path
        thresholds["retinaface.onnx"] = 0.6
    screenshots = Path(os.environ.get("COMPRESSKIT_ARTIFACTS", tmp_path / "screenshots"))
    screenshots.mkdir(parents=True, exist_ok=True)
    results = {}
    for name, threshold in thresholds.items():  # one page per model: its own threshold in the URL
        command = ["node", str(WEB / "test_driver.mjs"), "--chromium", chromium, "--data", str(tmp_path),
                   "--image", image.name, "--model", name, "--threshold", str(threshold),
                   "--screenshot-dir", str(screenshots), "--runs", "2"]
        completed = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=WEB)
        assert completed.returncode == 0, f"{name}: {completed.stdout[-2000:]} {completed.stderr[-2000:]}"
        results[name] = json.loads(completed.stdout.strip().splitlines()[-1])[name]
    for name, threshold in thresholds.items():
        browser = results[name]
        assert browser["quantized"] == name.endswith(".int8.onnx")
        python = _python_boxes(models[name], image, threshold)
        assert len(python) >= 1, f"{name}: no Python box over {threshold} on {source}"
        _assert_same_boxes(python, browser["faces"], threshold, f"{name} on {source}")
        assert browser["milliseconds"] > 0
        assert (screenshots / f"{name}.png").stat().st_size > 10_000
    if "retinaface.onnx" in results:  # the real detector finds the two faces of the couple
        assert len([f for f in results["retinaface.onnx"]["faces"] if f["score"] >= 0.6]) == 2
    print({name: round(r["milliseconds"], 1) for name, r in results.items()})
