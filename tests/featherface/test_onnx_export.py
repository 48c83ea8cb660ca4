"""ONNX export (opset 17) of every FeatherFace-family model matches PyTorch in ONNX Runtime."""

from __future__ import annotations

import pytest
import torch

import compresskit as ck
from compresskit.export import check_onnx, export_onnx
from reference.featherface.models import (
    FEATHERFACE_V1_PROTECT_PATTERNS,
    MODEL_NAMES,
    NANO_B_PROTECT_PATTERNS,
    build_model,
)

pytest.importorskip("onnxruntime")


def _randomise_deformable_offsets(model: torch.nn.Module) -> None:
    """Give DCN offset/modulator convs non-zero weights so the export exercises real sampling."""
    for name, module in model.named_modules():
        if name.endswith(("offset_conv", "modulator_conv")):
            torch.nn.init.normal_(module.weight, std=0.01)
            torch.nn.init.normal_(module.bias, std=0.5)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_onnx_matches_torch(name, tmp_path):
    torch.manual_seed(0)
    model = build_model(name).eval()
    _randomise_deformable_offsets(model)
    images = torch.randn(1, 3, 160, 160) * 50
    path = export_onnx(model, images, tmp_path / f"{name}.onnx",
                       output_names=["bbox_deltas", "cls_logits", "landmark_deltas"])
    assert check_onnx(path, model, images, atol=1e-4) <= 1e-4


@pytest.mark.parametrize("name", ["featherface_v1", "nano_b"])
def test_pruned_model_onnx_matches_torch(name, tmp_path):
    """After physical removal (pruned ChannelPools, shuffles, grouped convs) the export still matches."""
    torch.manual_seed(0)
    model = build_model(name).eval()
    _randomise_deformable_offsets(model)
    images = torch.randn(1, 3, 64, 64) * 50
    protect = NANO_B_PROTECT_PATTERNS if name == "nano_b" else FEATHERFACE_V1_PROTECT_PATTERNS
    ck.prune(model, images, 0.5, protect=protect)
    assert model.body.stage1[5][3].out_channels == 32  # the CBAM-gated c3 trunk was pruned
    path = export_onnx(model, images, tmp_path / f"{name}_pruned.onnx")
    assert check_onnx(path, model, images, atol=1e-4) <= 1e-4
