"""Modulated deformable convolution, DCNv2 (Zhu et al., "Deformable ConvNets v2", CVPR 2019).

Plain-PyTorch implementation (no torchvision / custom op) that exports to ONNX (GridSample,
opset >= 16). Layout and semantics follow ``torchvision.ops.deform_conv2d`` as called by the
official FeatherFace code:

* ``offset_conv`` predicts ``2*K`` channels per output location, ordered ``(dy, dx)`` for kernel
  point ``k = i*kw + j``; ``modulator_conv`` predicts ``K`` channels, turned into
  ``modulator = 2 * sigmoid(.)``. Both are zero-initialised, so a fresh layer is an ordinary
  convolution (offsets 0, modulator 1).
* Each kernel point samples the input bilinearly at ``(y*s - p + i*d + dy, x*s - p + j*d + dx)``;
  samples outside the map read zeros.

How it is computed here: one ``F.grid_sample`` call gathers, for every output location, its
``kh x kw`` modulated samples into a "patch image" of size ``(kh*H_out, kw*W_out)``; the
``regular_conv`` module (kernel ``kh x kw``, stride ``kh x kw``, no padding) then turns each patch
into one output pixel. So ``regular_conv`` is a real ``nn.Conv2d`` call in the graph (a pruner can
see and slice it), its weight has the official shape ``[out, in, kh, kw]``, and the offset and
modulator convs stay separate submodules (their outputs must never be pruned).
Memory cost: the patch image is ``kh*kw`` times the input map.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def sample_deformable_patches(x: torch.Tensor, offset: torch.Tensor, modulator: torch.Tensor,
                              kernel_size: tuple[int, int], stride: int = 1, padding: int = 1,
                              dilation: int = 1) -> torch.Tensor:
    """Gather modulated bilinear samples into a patch image.

    Args:
        x: input ``[N, C, H, W]``.
        offset: ``[N, 2*kh*kw, H_out, W_out]``, ``(dy, dx)`` per kernel point.
        modulator: ``[N, kh*kw, H_out, W_out]``, multiplied onto each sample.
        kernel_size: ``(kh, kw)``.
        stride, padding, dilation: of the deformable convolution.

    Returns:
        ``[N, C, kh*H_out, kw*W_out]`` where pixel ``(kh*y + i, kw*x + j)`` holds the sample of
        kernel point ``(i, j)`` for output location ``(y, x)``.
    """
    n, _, height, width = x.shape
    kh, kw = kernel_size
    out_h, out_w = offset.shape[-2:]
    dtype, device = x.dtype, x.device

    # base sampling positions of the patch image, one row / column per (output, kernel point)
    base_y = (torch.arange(out_h, dtype=dtype, device=device)[:, None] * stride - padding
              + torch.arange(kh, dtype=dtype, device=device)[None, :] * dilation).reshape(1, out_h * kh, 1)
    base_x = (torch.arange(out_w, dtype=dtype, device=device)[:, None] * stride - padding
              + torch.arange(kw, dtype=dtype, device=device)[None, :] * dilation).reshape(1, 1, out_w * kw)

    # (N, 2*K, Ho, Wo) -> (N, kh, kw, 2, Ho, Wo) -> (N, 2, Ho, kh, Wo, kw) -> (N, 2, Ho*kh, Wo*kw)
    offset = offset.reshape(n, kh, kw, 2, out_h, out_w).permute(0, 3, 4, 1, 5, 2)
    offset = offset.reshape(n, 2, out_h * kh, out_w * kw)
    pos_y = base_y + offset[:, 0]
    pos_x = base_x + offset[:, 1]

    # pixel -> [-1, 1] with align_corners=True (pixel centres at the ends)
    norm_y = pos_y * (2.0 / max(height - 1, 1)) - 1.0
    norm_x = pos_x * (2.0 / max(width - 1, 1)) - 1.0
    grid = torch.stack([norm_x, norm_y], dim=-1)  # (N, Ho*kh, Wo*kw, 2) as (x, y)
    patches = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=True)

    # (N, K, Ho, Wo) -> (N, kh, kw, Ho, Wo) -> (N, Ho, kh, Wo, kw) -> (N, 1, Ho*kh, Wo*kw)
    modulator = modulator.reshape(n, kh, kw, out_h, out_w).permute(0, 3, 1, 4, 2)
    modulator = modulator.reshape(n, 1, out_h * kh, out_w * kw)
    return patches * modulator


class DeformableConv2d(nn.Module):
    """Modulated deformable 3x3 convolution with the official FeatherFace module names.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: square kernel size.
        stride: stride.
        padding: zero padding of the sampling grid.
        dilation: kernel dilation.
        bias: bias on the main convolution (False in FeatherFace's SSH).

    Example:
        >>> dcn = DeformableConv2d(16, 8)
        >>> dcn(torch.randn(1, 16, 10, 10)).shape
        torch.Size([1, 8, 10, 10])
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                 padding: int = 1, dilation: int = 1, bias: bool = False) -> None:
        super().__init__()
        self.kernel_size = (kernel_size, kernel_size)
        self.stride = stride
        self.padding = padding
        self.dilation = dilation
        num_points = kernel_size * kernel_size
        self.offset_conv = nn.Conv2d(in_channels, 2 * num_points, kernel_size, stride, padding, dilation)
        self.modulator_conv = nn.Conv2d(in_channels, num_points, kernel_size, stride, padding, dilation)
        for conv in (self.offset_conv, self.modulator_conv):
            nn.init.zeros_(conv.weight)
            nn.init.zeros_(conv.bias)
        # applied to the patch image: one kh x kw patch per output pixel
        self.regular_conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=kernel_size, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        offset = self.offset_conv(x)
        modulator = 2.0 * torch.sigmoid(self.modulator_conv(x))
        patches = sample_deformable_patches(x, offset, modulator, self.kernel_size, self.stride,
                                            self.padding, self.dilation)
        return self.regular_conv(patches)
