"""ONNX export (opset 17) of every FeatherFace-family model matches PyTorch in ONNX Runtime."""

from __future__ import annotations

import pytest
import torch

import compresskit as ck
from compresskit.deploy.export import check_onnx, export_onnx
from featherface.models import FEATHERFACE_V1_PROTECT_PATTERNS, MODEL_NAMES, NANO_B_PROTECT_PATTERNS, build_model

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


def _same_pool_reference(x: torch.Tensor) -> torch.Tensor:
    """TF "same" 3x3/2 max-pool as the official code computes it (padding from the sizes, in Python)."""
    height, width = x.shape[-2:]
    extra_h, extra_w = (height + 1) // 2 * 2 - height + 1, (width + 1) // 2 * 2 - width + 1
    padded = torch.nn.functional.pad(x, [extra_w // 2, extra_w - extra_w // 2, extra_h // 2, extra_h - extra_h // 2])
    return torch.nn.functional.max_pool2d(padded, 3, 2)


def test_bifpn_downsample_is_the_official_same_pool_at_every_size():
    from featherface.bifpn import _downsample

    generator = torch.Generator().manual_seed(0)
    for height in range(1, 24):
        for width in range(1, 24):
            x = torch.randn(1, 2, height, width, generator=generator) - 1.0  # negatives: zero padding shows
            assert torch.equal(_downsample(x), _same_pool_reference(x)), (height, width)


@pytest.mark.parametrize("name", ["featherface_v1", "nano_b"])
def test_dynamic_onnx_runs_at_sizes_of_any_parity(name, tmp_path):
    """Exported at 64x64, run at odd and mixed sizes: the BiFPN pools must not keep 64 px's padding."""
    from compresskit.deploy.export import export_model

    torch.manual_seed(0)
    model = build_model(name).eval()
    images = torch.randn(1, 3, 64, 64) * 50
    result = export_model(model, images, tmp_path / f"{name}.onnx", dynamic=True, atol=1e-4)
    assert result.dynamic_axes["input"] == {0: "batch", 2: "input_2", 3: "input_3"}
    for height, width in ((65, 64), (64, 97), (77, 53)):
        other = torch.randn(1, 3, height, width, generator=torch.Generator().manual_seed(height)) * 50
        assert check_onnx(result.path, model, other, atol=1e-4) <= 1e-4
