"""FeatherFace's released weights: the registry's hashes are the files', ``NAME:released`` loads them, an ONNX
file given as torch weights is one line, and ``compresskit --help`` says what the plugin commands do."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from compresskit.cli import cli
from compresskit.models.released import file_sha256, released_weights
from featherface import models


@pytest.mark.shared_data
def test_registry_hashes_are_the_shared_files_and_released_loads_them(shared_data, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    releases = released_weights()
    for name in ("retinaface_mnet025", "featherface_v1"):
        assert file_sha256(shared_data / "weights" / releases[name].file) == releases[name].sha256
    offline = CliRunner().invoke(cli, ["inspect", "retinaface_mnet025:released"])
    assert offline.exit_code == 2 and offline.output.count("\n") == 1
    assert "place the file (the RetinaFace MobileNet-0.25 weights" in offline.output
    cache = tmp_path / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    shutil.copy(shared_data / "weights" / "retinaface_mnet025_official.pth", cache)
    result = CliRunner().invoke(cli, ["inspect", "retinaface_mnet025:released", "--input-shape", "1,3,64,64"])
    assert result.exit_code == 0 and "parameters: 426,608" in result.output
    model = models.build_model("retinaface_mnet025", weights="released")
    reference = models.build_model("retinaface_mnet025", weights=cache / "retinaface_mnet025_official.pth")
    assert all((a == b).all() for a, b in zip(model.state_dict().values(), reference.state_dict().values()))


def test_an_onnx_file_given_as_weights_says_to_pass_it_as_the_model(tmp_path):
    onnx_file = tmp_path / "model.onnx"
    onnx_file.write_bytes(b"\x08\x08\x12\x07pytorch")  # a ModelProto's first bytes (ir_version 8)
    image = tmp_path / "img.png"
    import cv2

    cv2.imwrite(str(image), np.zeros((32, 32, 3), np.uint8))
    result = CliRunner().invoke(cli, ["detect", f"retinaface_mnet025:{onnx_file}", str(image),
                                      "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert result.output.count("\n") == 1, result.output
    assert "this is an ONNX file, not torch weights: pass it as the model" in result.output
    renamed = tmp_path / "model.pth"  # the content, not the name, tells
    onnx_file.rename(renamed)
    with pytest.raises(ValueError, match="this is an ONNX file"):
        models.load_weights(models.build_model("retinaface_mnet025"), renamed)


def test_help_describes_the_plugin_commands_from_their_docstrings():
    result = CliRunner().invoke(cli, ["--help"])
    assert "detect     Detect faces; writes detections.json and annotated images..." in result.output
    assert "evaluate   WIDERFace AP table (easy / medium / hard) of a model on a..." in result.output
    assert "(plugin from" not in result.output
