"""Building blocks specific to FeatherFace Nano-B (design from the project's seed documents).

The seeds name these modules and the papers they come from but give no code that was ever
trained; what follows is *our* compact interpretation of each idea, built only from convs,
pooling, sigmoids/softmax and multiplies/adds so that structured pruning can follow every
channel (gates are plain convs whose outputs multiply the trunk; nothing reshapes channels;
channel max/mean maps are :class:`compresskit.ChannelPool`, which stays exact under pruning).

* :class:`EfficientCBAM` -- CBAM (Woo et al., ECCV 2018) with reduction 8 and a 1x1-conv MLP.
* :class:`ScaleDecoupling` -- after the "scale-decoupling module" idea of SNLA-style small-object
  detectors (2023-24): split P3 into a low-frequency part (2x2 average, upsampled back; what large
  objects dominate) and the high-frequency residual (small-object detail), and re-weight the
  detail with a learned depthwise gate while damping the low-frequency part per channel.
* :class:`SemanticEnhancement` -- after MSE-FPN ("Multi-scale semantic enhancement network for
  object detection", Scientific Reports 2024): "semantic injection" of a global context vector
  (GAP -> 1x1 -> ReLU -> 1x1) into every position, scaled by a "gated channel guidance" map
  (depthwise 3x3 + BN + sigmoid). Residual, so it starts near identity-plus-context.
* :class:`ASSN` -- after "Attention-based scale sequence network for small object detection"
  (2024): the paper stacks pyramid levels resized to P3 into a scale sequence and convolves
  across it (3D conv). Here: P3, P4 and P5 resized to P3 form the sequence; per-scale channel
  max/mean maps -> 7x7 conv + BN -> softmax over the 3 scales gives per-pixel scale weights;
  the weighted sum is channel-gated (reduction 8) and added to P3. No 3D convolution.

Parameter counts quoted in each docstring are for the channel widths Nano-B uses (64 at P3
before the BiFPN, 72 after). None of these modules has published weights or an ablation in
this project: their benefit is a hypothesis, not a measured fact.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from compresskit.layers.pool import ChannelPool

from .cbam import SpatialGate

NANO_REDUCTION = 8


class ConvChannelGate(nn.Module):
    """CBAM channel gate with a 1x1-conv MLP: ``x * sigmoid(MLP(avg(x)) + MLP(max(x)))``.

    Args:
        channels: input channels ``C``.
        reduction: hidden width ``C // reduction``.
    """

    def __init__(self, channels: int, reduction: int = NANO_REDUCTION) -> None:
        super().__init__()
        hidden = max(channels // reduction, 1)
        self.fc1 = nn.Conv2d(channels, hidden, 1)
        self.act = nn.ReLU()
        self.fc2 = nn.Conv2d(hidden, channels, 1)

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        """The ``[N, C, 1, 1]`` sigmoid gate for ``x``."""
        avg = x.mean(dim=(2, 3), keepdim=True)   # (N, C, 1, 1)
        peak = x.amax(dim=(2, 3), keepdim=True)  # (N, C, 1, 1)
        return torch.sigmoid(self.fc2(self.act(self.fc1(avg))) + self.fc2(self.act(self.fc1(peak))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)


class EfficientCBAM(nn.Module):
    """CBAM with reduction 8, used as ``ReLU(CBAM(x) + x)`` (the residual form of FeatherFace V1).

    Parameters: ``2*C*C/8 + C/8 + C`` (channel MLP) + 99 (7x7 spatial conv + BN);
    1,195 at C=64, 4,339 at 128, 16,771 at 256, 1,476 at 72.

    Args:
        channels: input channels.
        reduction: channel-MLP reduction ratio.

    Example:
        >>> EfficientCBAM(72)(torch.randn(1, 72, 10, 10)).shape
        torch.Size([1, 72, 10, 10])
    """

    def __init__(self, channels: int, reduction: int = NANO_REDUCTION) -> None:
        super().__init__()
        self.channel_gate = ConvChannelGate(channels, reduction)
        self.spatial_gate = SpatialGate()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.spatial_gate(self.channel_gate(x)) + x)


class ScaleDecoupling(nn.Module):
    """Split P3 into low-frequency context and high-frequency detail; emphasise the detail.

    ``context = up(avgpool2x2(x))`` and ``detail = x - context``; then
    ``out = context * (1 - 0.5*sigmoid(damp_c)) + detail * (1 + sigmoid(BN(dw3x3(detail))))``.
    ``damp_c`` is a learned per-channel value computed by a depthwise 1x1 conv on the context
    (weight 0, bias -4 at init: almost no damping), so pruning sees only per-channel ops. At
    initialisation the module is close to ``x + 0.5 * detail``. Parameters at C=64: 640
    (dw 3x3 + bias) + 128 (BN) + 128 (dw 1x1 + bias) = 896.

    Args:
        channels: channels of P3.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.detail_gate = nn.Conv2d(channels, channels, 3, padding=1, groups=channels)
        self.detail_bn = nn.BatchNorm2d(channels)
        self.context_damp = nn.Conv2d(channels, channels, 1, groups=channels)
        nn.init.zeros_(self.context_damp.weight)
        nn.init.constant_(self.context_damp.bias, -4.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (N, C, H, W) -> (N, C, ceil(H/2), ceil(W/2)) -> (N, C, H, W)
        context = F.interpolate(F.avg_pool2d(x, 2, ceil_mode=True), size=x.shape[-2:], mode="nearest")
        detail = x - context
        emphasis = torch.sigmoid(self.detail_bn(self.detail_gate(detail)))
        damping = 0.5 * torch.sigmoid(self.context_damp(context))
        return context * (1.0 - damping) + detail * (1.0 + emphasis)


class SemanticEnhancement(nn.Module):
    """MSE-FPN-style semantic injection with gated channel guidance (residual).

    ``out = x + sigmoid(BN(dw3x3(x))) * inject(GAP(x))`` with ``inject = 1x1 -> ReLU -> 1x1``
    (reduction 8). Parameters at C=72: 1,377 (inject) + 792 (gate) = 2,169.

    Args:
        channels: channels of the level.
        reduction: hidden width of the injection MLP is ``channels // reduction``.
    """

    def __init__(self, channels: int, reduction: int = NANO_REDUCTION) -> None:
        super().__init__()
        hidden = max(channels // reduction, 1)
        self.inject_fc1 = nn.Conv2d(channels, hidden, 1)
        self.inject_act = nn.ReLU()
        self.inject_fc2 = nn.Conv2d(hidden, channels, 1)
        self.guide = nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False)
        self.guide_bn = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        semantic = self.inject_fc2(self.inject_act(self.inject_fc1(x.mean(dim=(2, 3), keepdim=True))))
        guidance = torch.sigmoid(self.guide_bn(self.guide(x)))  # (N, C, H, W)
        return x + guidance * semantic


class ASSN(nn.Module):
    """Scale-sequence attention for P3 (replaces the post-BiFPN CBAM on P3).

    ``seq = [p3, up(p4), up(p5)]``; ``w = softmax_s(BN(conv7x7([max_c, mean_c] of each s)))``
    (``[N, 3, H, W]``); ``fused = sum_s w_s * seq_s``; ``out = ReLU(p3 + gate_c(fused) * fused)``
    with a reduction-8 conv channel gate. Parameters at C=72: 6*3*49 + 2*3 (scale conv + BN) +
    1,377 (gate) = 2,265.

    Args:
        channels: channels of every level.
        num_scales: length of the scale sequence (3: P3, P4, P5).
    """

    def __init__(self, channels: int, num_scales: int = 3, reduction: int = NANO_REDUCTION) -> None:
        super().__init__()
        self.num_scales = num_scales
        # one pool per scale: each call site needs its own module for pruning
        self.scale_pools = nn.ModuleList(ChannelPool(("max", "mean")) for _ in range(num_scales))
        self.scale_conv = nn.Conv2d(2 * num_scales, num_scales, 7, padding=3, bias=False)
        self.scale_bn = nn.BatchNorm2d(num_scales)
        self.channel_gate = ConvChannelGate(channels, reduction)

    def forward(self, levels: Sequence[torch.Tensor]) -> torch.Tensor:
        p3 = levels[0]
        sequence = [p3] + [F.interpolate(p, size=p3.shape[-2:], mode="nearest") for p in levels[1:]]
        # per scale (N, 2, H, W): channel max and mean -> (N, 2*S, H, W)
        descriptors = torch.cat([pool(s) for pool, s in zip(self.scale_pools, sequence)], dim=1)
        weights = torch.softmax(self.scale_bn(self.scale_conv(descriptors)), dim=1)  # (N, S, H, W)
        fused = sum(weights[:, i:i + 1] * s for i, s in enumerate(sequence))
        return torch.relu(p3 + self.channel_gate(fused))
