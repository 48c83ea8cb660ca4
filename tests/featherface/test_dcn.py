"""DCNv2 in plain torch: identity at init, matches a direct bilinear reference with offsets."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from featherface.dcn import DeformableConv2d


def _bilinear(image: torch.Tensor, y: float, x: float) -> torch.Tensor:
    """Zero-padded bilinear sample of ``image [C, H, W]`` at pixel ``(y, x)``."""
    height, width = image.shape[-2:]
    y0, x0 = int(torch.floor(torch.tensor(y))), int(torch.floor(torch.tensor(x)))
    out = torch.zeros(image.shape[0], dtype=image.dtype)
    for dy in (0, 1):
        for dx in (0, 1):
            yy, xx = y0 + dy, x0 + dx
            if 0 <= yy < height and 0 <= xx < width:
                weight = (1 - abs(y - yy)) * (1 - abs(x - xx))
                out += weight * image[:, yy, xx]
    return out


def _reference_deform_conv(x, offset, mask, weight, stride=1, padding=1):
    """Loop implementation of torchvision.ops.deform_conv2d semantics (offsets as (dy, dx))."""
    n, _, _, _ = x.shape
    out_channels, _, kh, kw = weight.shape
    out_h, out_w = offset.shape[-2:]
    out = torch.zeros(n, out_channels, out_h, out_w, dtype=x.dtype)
    for b in range(n):
        for oy in range(out_h):
            for ox in range(out_w):
                acc = torch.zeros(out_channels, dtype=x.dtype)
                for i in range(kh):
                    for j in range(kw):
                        k = i * kw + j
                        y = oy * stride - padding + i + float(offset[b, 2 * k, oy, ox])
                        xx = ox * stride - padding + j + float(offset[b, 2 * k + 1, oy, ox])
                        sample = _bilinear(x[b], y, xx) * mask[b, k, oy, ox]
                        acc += weight[:, :, i, j] @ sample
                out[b, :, oy, ox] = acc
    return out


def test_fresh_dcn_equals_plain_conv():
    torch.manual_seed(0)
    dcn = DeformableConv2d(6, 5)
    x = torch.randn(2, 6, 9, 7)
    expected = F.conv2d(x, dcn.regular_conv.weight, padding=1)
    assert torch.allclose(dcn(x), expected, atol=1e-5)


def test_fresh_strided_dcn_equals_plain_conv():
    torch.manual_seed(0)
    dcn = DeformableConv2d(4, 3, stride=2)
    x = torch.randn(1, 4, 9, 8)
    expected = F.conv2d(x, dcn.regular_conv.weight, padding=1, stride=2)
    assert dcn(x).shape == expected.shape
    assert torch.allclose(dcn(x), expected, atol=1e-5)


def test_offsets_and_modulator_match_loop_reference():
    torch.manual_seed(1)
    dcn = DeformableConv2d(3, 2)
    with torch.no_grad():
        for conv in (dcn.offset_conv, dcn.modulator_conv):
            conv.weight.normal_(0, 0.3)
            conv.bias.normal_(0, 0.5)
    x = torch.randn(1, 3, 5, 6)
    offset = dcn.offset_conv(x)
    mask = 2 * torch.sigmoid(dcn.modulator_conv(x))
    expected = _reference_deform_conv(x, offset.detach(), mask.detach(), dcn.regular_conv.weight.detach())
    assert offset.abs().max() > 0.5  # the test really moves samples, some out of the map
    assert torch.allclose(dcn(x).detach(), expected, atol=1e-5)


def test_gradients_reach_offsets_and_weights():
    torch.manual_seed(2)
    dcn = DeformableConv2d(3, 4)
    dcn(torch.randn(1, 3, 6, 6)).square().sum().backward()
    for name, param in dcn.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name
