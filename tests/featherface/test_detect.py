import json
import shutil

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from featherface.detect import cli, detect_image, preprocess
from featherface.models import build_model


def test_preprocess_contract():
    image = np.full((5, 7, 3), (104, 117, 123), np.uint8)
    tensor = preprocess(image)
    assert tensor.shape == (1, 3, 5, 7) and tensor.dtype == torch.float32 and tensor.abs().max() == 0
    assert preprocess(image, resize=2.0).shape == (1, 3, 10, 14)
    with pytest.raises(ValueError, match="HxWx3"):
        preprocess(np.zeros((5, 7), np.uint8))


def test_detect_image_returns_faces_in_original_pixels():
    torch.manual_seed(0)
    model = build_model("retinaface_mnet025").train()
    image = np.random.default_rng(0).integers(0, 255, (60, 90, 3), dtype=np.uint8)
    faces = detect_image(model, image, conf_threshold=0.0, keep_top_k=5)
    assert model.training  # mode restored
    assert 1 <= len(faces) <= 5
    assert set(faces[0]) == {"box", "score", "landmarks"} and len(faces[0]["landmarks"]) == 5
    assert [f["score"] for f in faces] == sorted((f["score"] for f in faces), reverse=True)
    half = detect_image(model, image, resize=0.5, conf_threshold=0.0, keep_top_k=5)
    assert max(f["box"][2] for f in half) > 0


@pytest.mark.shared_data
def test_cli_detect_and_evaluate(shared_data, tmp_path):
    weights = shared_data / "weights" / "retinaface_mnet025_official.pth"
    source = sorted((shared_data / "widerface" / "WIDER_val" / "images" / "19--Couple").glob("*.jpg"))[:2]
    images = tmp_path / "images" / "19--Couple"
    images.mkdir(parents=True)
    for path in source:
        shutil.copy(path, images / path.name)
    runner = CliRunner()
    out = tmp_path / "out"
    result = runner.invoke(cli, ["detect", f"retinaface_mnet025:{weights}", str(images), "--out", str(out),
                                 "--threads", "1"])
    assert result.exit_code == 0, result.output
    detections = json.loads((out / "detections.json").read_text())
    assert len(detections) == 2 and all(len(faces) > 0 for faces in detections.values())
    assert cv2.imread(str(out / f"{source[0].stem}_detections.jpg")) is not None
    result = runner.invoke(cli, ["evaluate", f"retinaface_mnet025:{weights}", "--images", str(tmp_path / "images"),
                                 "--gt", str(shared_data / "widerface" / "ground_truth"),
                                 "--pred-dir", str(tmp_path / "pred"), "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert "easy" in result.output and "hard" in result.output
    assert len(list((tmp_path / "pred" / "19--Couple").glob("*.txt"))) == 2
    # the same folder, scored as if another tool had written it: the same AP table
    scored = runner.invoke(cli, ["evaluate", "--predictions", str(tmp_path / "pred"),
                                 "--gt", str(shared_data / "widerface" / "ground_truth")])
    assert scored.exit_code == 0, scored.output
    ap_lines = lambda output: [line for line in output.splitlines() if line.split()[:1] in (["easy"], ["medium"], ["hard"])]  # noqa: E731
    assert len(ap_lines(scored.output)) == 3
    assert ap_lines(scored.output) == ap_lines(result.output)


def test_cli_detect_user_errors_exit_2_with_one_line(tmp_path):
    corrupt = tmp_path / "broken.jpg"
    corrupt.write_bytes(b"not a jpeg")
    checkpoint = tmp_path / "broken.pt"
    checkpoint.write_bytes(b"not a checkpoint")
    runner = CliRunner()
    cases = [
        (["detect", "nano_b", str(corrupt), "--out", str(tmp_path / "out")], "broken.jpg: cannot read image"),
        (["detect", "nano_x", str(corrupt), "--out", str(tmp_path / "out")], "unknown model 'nano_x'"),
        (["detect", str(checkpoint), str(corrupt), "--out", str(tmp_path / "out")], "broken.pt"),
    ]
    for args, fragment in cases:
        result = runner.invoke(cli, args)
        assert result.exit_code == 2, result.output
        assert fragment in result.output
        assert "Traceback" not in result.output
