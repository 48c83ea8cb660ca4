"""A zoo of small architectures for pruning invariant tests.

Each entry of :data:`ZOO` builds ``(model, example_input)``: the model in eval
mode, with seeded weights, randomised BatchNorm running statistics and
non-trivial BN affine parameters (so that channels differ and a pruner that
keeps the wrong channels changes the output), plus an example input small
enough for CPU tests. Building the same entry twice gives identical models and
inputs. :data:`ZOO_PROTECT` lists, per entry, module-name globs whose output
channels must never be pruned (classifier logits, detection head outputs).

The zoo covers the channel couplings a structured pruner must get right:

* ``resnet_downsample``: residual adds, 1x1 stride-2 downsample shortcuts (He et al. 2016).
* ``mobilenetv2``: inverted residuals, depthwise convs, expansion (Sandler et al. 2018).
* ``unet_concat_transposed``: concat skips, ConvTranspose2d upsampling (Ronneberger et al. 2015).
* ``se_cbam``: squeeze-excitation gating (Hu et al. 2018) and CBAM channel + spatial
  gates in a residual ``ReLU(CBAM(x) + x)`` (Woo et al. 2018); the spatial gate's channel
  mean/max is ``compresskit.ChannelPool``, so the gated trunk stays prunable.
* ``grouped_shuffle``: grouped 1x1 convs (groups 2 and 4) and channel shuffle (ShuffleNet,
  Zhang et al. 2018), including a concat shortcut.
* ``detection_heads``: a 2-level FPN with per-level cls / box / landmark 1x1 heads whose
  outputs are permuted, reshaped and concatenated as in RetinaFace (Deng et al. 2020).
* ``conv_flatten_linear``: conv channels flattened into a Linear (one channel = many features).
* ``bifpn_fusion``: EfficientDet fast normalised fusion with learnable weights, swish and
  depthwise-separable convs over 3 levels (Tan et al. 2020).
* ``ghost_residual``: GhostNet ghost modules ``cat([x1, cheap(x1)])`` into residual adds, which
  couple channel ``j`` with ``j + C/2`` (Han et al. 2020).
* ``csp_split_concat``: CSP / C2f blocks: ``chunk`` into halves, convs on one, concat of all
  intermediates, residual (Wang et al. 2020).
* ``densenet_concat``: DenseNet's growing concatenation with pre-activation BN on the concat
  (Huang et al. 2017).
* ``shufflenetv2_inline``: three ShuffleNetV2 units (Ma et al. 2018) with ``chunk``, branch,
  concat and the inline ``view/transpose/view`` shuffle (makes Torch-Pruning's builder divide by zero);
  the trunk is one set whose shuffles and chunks impose whole-slot units and balanced removal.
* ``vit_block``: patch embedding + two pre-norm ViT blocks (Dosovitskiy et al. 2021), one with q/k/v
  Linears and ``num_heads``, one with ``nn.MultiheadAttention``; Linear on ``(N, L, C)`` tokens.
* ``convnext_block``: ConvNeXt blocks (Liu et al. 2022): depthwise 7x7, channels-last LayerNorm,
  Linear MLP on ``(N, H, W, C)``, layer scale ``gamma``.
* ``mobilevit_unfold_fold``: MobileViT block (Mehta & Rastegari 2022): unfold into patches, a
  transformer over ``(N*P, L, d)``, fold back, concat with the input.

Usage from a test in this directory: ``from zoo import ZOO, ZOO_PROTECT``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from compresskit import ChannelPool, ChannelShuffle

SEED = 0


def conv_bn(
    in_channels: int,
    out_channels: int,
    kernel_size: int = 3,
    stride: int = 1,
    groups: int = 1,
    activation: type[nn.Module] | None = nn.ReLU,
) -> nn.Sequential:
    """Conv2d (no bias, 'same' padding for odd kernels) -> BN -> optional activation."""
    layers: list[nn.Module] = [
        nn.Conv2d(
            in_channels, out_channels, kernel_size, stride, kernel_size // 2, groups=groups, bias=False
        ),
        nn.BatchNorm2d(out_channels),
    ]
    if activation is not None:
        layers.append(activation())
    return nn.Sequential(*layers)


def randomise_batchnorm(model: nn.Module, generator: torch.Generator) -> None:
    """Give every BN layer distinct running stats and affine params per channel."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                n = module.num_features
                module.running_mean.copy_(0.1 * torch.randn(n, generator=generator))
                module.running_var.copy_(0.5 + torch.rand(n, generator=generator))
                if module.affine:
                    module.weight.copy_(0.5 + torch.rand(n, generator=generator))
                    module.bias.copy_(0.1 * torch.randn(n, generator=generator))


def _build(
    make: Callable[[], nn.Module], input_shape: tuple[int, ...]
) -> tuple[nn.Module, Tensor]:
    """Build ``make()`` and an input from a fixed seed without touching the global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        model = make()
        generator = torch.Generator().manual_seed(SEED + 1)
        randomise_batchnorm(model, generator)
        example_input = torch.randn(*input_shape, generator=generator)
    return model.eval(), example_input


# --- resnet_downsample --------------------------------------------------------


class BasicBlock(nn.Module):
    """ResNet basic block; a 1x1 conv + BN shortcut when shape changes."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = conv_bn(in_channels, out_channels, 3, stride)
        self.conv2 = conv_bn(out_channels, out_channels, 3, activation=None)
        self.downsample: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.downsample = conv_bn(in_channels, out_channels, 1, stride, activation=None)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.conv2(self.conv1(x)) + self.downsample(x))


class ResNetDownsample(nn.Module):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = conv_bn(3, 16)
        self.layer1 = BasicBlock(16, 16)
        self.layer2 = BasicBlock(16, 32, stride=2)
        self.layer3 = BasicBlock(32, 48, stride=2)
        self.fc = nn.Linear(48, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.layer3(self.layer2(self.layer1(self.stem(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


# --- mobilenetv2 --------------------------------------------------------------


class InvertedResidual(nn.Module):
    """Expand (1x1) -> depthwise 3x3 -> linear project (1x1); residual if shapes match."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = in_channels * expansion
        layers: list[nn.Module] = []
        if expansion != 1:
            layers.append(conv_bn(in_channels, hidden, 1, activation=nn.ReLU6))
        layers += [
            conv_bn(hidden, hidden, 3, stride, groups=hidden, activation=nn.ReLU6),
            conv_bn(hidden, out_channels, 1, activation=None),
        ]
        self.block = nn.Sequential(*layers)
        self.use_residual = stride == 1 and in_channels == out_channels

    def forward(self, x: Tensor) -> Tensor:
        out = self.block(x)
        return x + out if self.use_residual else out


class MobileNetV2(nn.Module):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            conv_bn(3, 16, 3, 2, activation=nn.ReLU6),
            InvertedResidual(16, 16, 1, expansion=1),
            InvertedResidual(16, 24, 2, expansion=4),
            InvertedResidual(24, 24, 1, expansion=4),
            InvertedResidual(24, 32, 2, expansion=4),
            InvertedResidual(32, 32, 1, expansion=4),
            conv_bn(32, 64, 1, activation=nn.ReLU6),
        )
        self.classifier = nn.Linear(64, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = F.adaptive_avg_pool2d(self.features(x), 1)
        return self.classifier(torch.flatten(x, 1))


# --- unet_concat_transposed ---------------------------------------------------


class UNet(nn.Module):
    def __init__(self, num_classes: int = 2) -> None:
        super().__init__()
        self.enc1 = nn.Sequential(conv_bn(3, 8), conv_bn(8, 8))
        self.enc2 = nn.Sequential(conv_bn(8, 16), conv_bn(16, 16))
        self.bottleneck = conv_bn(16, 32)
        self.up2 = nn.ConvTranspose2d(32, 16, kernel_size=2, stride=2)
        self.dec2 = nn.Sequential(conv_bn(32, 16), conv_bn(16, 16))
        self.up1 = nn.ConvTranspose2d(16, 8, kernel_size=2, stride=2)
        self.dec1 = nn.Sequential(conv_bn(16, 8), conv_bn(8, 8))
        self.head = nn.Conv2d(8, num_classes, 1)

    def forward(self, x: Tensor) -> Tensor:
        skip1 = self.enc1(x)  # (N, 8, H, W)
        skip2 = self.enc2(F.max_pool2d(skip1, 2))  # (N, 16, H/2, W/2)
        x = self.bottleneck(F.max_pool2d(skip2, 2))  # (N, 32, H/4, W/4)
        x = self.dec2(torch.cat([self.up2(x), skip2], dim=1))  # cat -> (N, 32, H/2, W/2)
        x = self.dec1(torch.cat([self.up1(x), skip1], dim=1))  # cat -> (N, 16, H, W)
        return self.head(x)


# --- se_cbam ------------------------------------------------------------------


class SqueezeExcite(nn.Module):
    """``x * sigmoid(W2 relu(W1 avgpool(x)))`` with 1x1 convs as the FCs."""

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, channels // reduction, 1)
        self.fc2 = nn.Conv2d(channels // reduction, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        scale = self.fc2(F.relu(self.fc1(F.adaptive_avg_pool2d(x, 1))))
        return x * torch.sigmoid(scale)


class ChannelGate(nn.Module):
    """CBAM channel attention: shared MLP over avg- and max-pooled features."""

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Conv2d(channels, channels // reduction, 1),
            nn.ReLU(),
            nn.Conv2d(channels // reduction, channels, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        logits = self.mlp(F.adaptive_avg_pool2d(x, 1)) + self.mlp(F.adaptive_max_pool2d(x, 1))
        return x * torch.sigmoid(logits)


class SpatialGate(nn.Module):
    """CBAM spatial attention: 7x7 conv over channel-wise mean and max."""

    def __init__(self) -> None:
        super().__init__()
        self.pool = ChannelPool(("mean", "max"))
        self.conv = conv_bn(2, 1, 7, activation=None)

    def forward(self, x: Tensor) -> Tensor:
        pooled = self.pool(x)  # (N, C, H, W) -> (N, 2, H, W): channel mean, channel max
        return x * torch.sigmoid(self.conv(pooled))


class CBAMBlock(nn.Module):
    """``ReLU(CBAM(body(x)) + x)``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(conv_bn(channels, channels), conv_bn(channels, channels, activation=None))
        self.channel_gate = ChannelGate(channels)
        self.spatial_gate = SpatialGate()

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.spatial_gate(self.channel_gate(self.body(x))) + x)


class SECBAMNet(nn.Module):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = conv_bn(3, 16, 3, 2)
        self.conv = conv_bn(16, 32)
        self.se = SqueezeExcite(32)
        self.cbam = CBAMBlock(32)
        self.fc = nn.Linear(32, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.cbam(self.se(self.conv(self.stem(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


# --- grouped_shuffle ----------------------------------------------------------


class ShuffleUnit(nn.Module):
    """ShuffleNet v1 unit: grouped 1x1 -> shuffle -> depthwise 3x3 -> grouped 1x1.

    Stride 1: ``relu(x + branch(x))``. Stride 2: ``relu(cat(avgpool(x), branch(x)))``.
    """

    def __init__(
        self, in_channels: int, out_channels: int, groups: int, stride: int = 1
    ) -> None:
        super().__init__()
        self.stride = stride
        branch_out = out_channels - in_channels if stride == 2 else out_channels
        hidden = out_channels
        self.reduce = conv_bn(in_channels, hidden, 1, groups=groups)
        self.shuffle = ChannelShuffle(groups)
        self.depthwise = conv_bn(hidden, hidden, 3, stride, groups=hidden, activation=None)
        self.expand = conv_bn(hidden, branch_out, 1, groups=groups, activation=None)

    def forward(self, x: Tensor) -> Tensor:
        branch = self.expand(self.depthwise(self.shuffle(self.reduce(x))))
        if self.stride == 2:
            return F.relu(torch.cat([F.avg_pool2d(x, 3, 2, 1), branch], dim=1))
        return F.relu(x + branch)


class GroupedShuffleNet(nn.Module):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = conv_bn(3, 16, 3, 2)
        self.stage = nn.Sequential(
            ShuffleUnit(16, 16, groups=2),
            ShuffleUnit(16, 32, groups=4, stride=2),
            ShuffleUnit(32, 32, groups=4),
        )
        self.fc = nn.Linear(32, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stage(self.stem(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


# --- detection_heads ----------------------------------------------------------


NUM_ANCHORS = 2


class TinyRetinaFace(nn.Module):
    """Backbone (strides 4, 8) -> 2-level FPN -> per-level 1x1 heads.

    Returns ``(bbox_deltas [N, P, 4], cls_logits [N, P, 2], landmark_deltas [N, P, 10])``
    with priors ordered (level, row, column, anchor) as in RetinaFace.
    """

    def __init__(self, channels: int = 24) -> None:
        super().__init__()
        self.stage1 = nn.Sequential(conv_bn(3, 16, 3, 2), conv_bn(16, 24, 3, 2))  # stride 4
        self.stage2 = conv_bn(24, 48, 3, 2)  # stride 8
        self.lateral = nn.ModuleList([conv_bn(24, channels, 1), conv_bn(48, channels, 1)])
        self.smooth = nn.ModuleList([conv_bn(channels, channels), conv_bn(channels, channels)])
        self.class_head = nn.ModuleList([nn.Conv2d(channels, NUM_ANCHORS * 2, 1) for _ in range(2)])
        self.bbox_head = nn.ModuleList([nn.Conv2d(channels, NUM_ANCHORS * 4, 1) for _ in range(2)])
        self.landmark_head = nn.ModuleList(
            [nn.Conv2d(channels, NUM_ANCHORS * 10, 1) for _ in range(2)]
        )

    @staticmethod
    def _flatten(x: Tensor, values_per_anchor: int) -> Tensor:
        # (N, A*k, H, W) -> (N, H, W, A*k) -> (N, H*W*A, k)
        return x.permute(0, 2, 3, 1).reshape(x.shape[0], -1, values_per_anchor)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        c3 = self.stage1(x)
        c4 = self.stage2(c3)
        p4 = self.lateral[1](c4)
        p3 = self.lateral[0](c3) + F.interpolate(p4, size=c3.shape[-2:], mode="nearest")
        features = [self.smooth[0](p3), self.smooth[1](p4)]
        bbox_deltas = torch.cat(
            [self._flatten(head(f), 4) for head, f in zip(self.bbox_head, features)], dim=1
        )
        cls_logits = torch.cat(
            [self._flatten(head(f), 2) for head, f in zip(self.class_head, features)], dim=1
        )
        landmark_deltas = torch.cat(
            [self._flatten(head(f), 10) for head, f in zip(self.landmark_head, features)], dim=1
        )
        return bbox_deltas, cls_logits, landmark_deltas


# --- conv_flatten_linear ------------------------------------------------------


class ConvFlattenLinear(nn.Module):
    """conv -> BN -> ReLU -> flatten (C*H*W) -> Linear -> ReLU -> Linear."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.fc1 = nn.Linear(8 * 8 * 8, 32)
        self.fc2 = nn.Linear(32, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = torch.flatten(F.relu(self.bn(self.conv(x))), 1)  # (N, 8, 8, 8) -> (N, 512)
        return self.fc2(F.relu(self.fc1(x)))


# --- bifpn_fusion -------------------------------------------------------------


class FastNormalizedFusion(nn.Module):
    """``swish(sum_i relu(w_i) x_i / (sum_j relu(w_j) + eps))`` then separable conv + BN."""

    def __init__(self, num_inputs: int, channels: int, eps: float = 1e-4) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_inputs))
        self.eps = eps
        self.depthwise = nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False)
        self.pointwise = nn.Conv2d(channels, channels, 1, bias=False)
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, inputs: list[Tensor]) -> Tensor:
        weight = F.relu(self.weight)
        weight = weight / (weight.sum() + self.eps)
        fused = sum(weight[i] * x for i, x in enumerate(inputs))
        return self.bn(self.pointwise(self.depthwise(F.silu(fused))))


class TinyBiFPN(nn.Module):
    """Backbone C3..C5 -> 1x1 laterals -> one BiFPN layer -> per-level 1x1 heads.

    Returns ``[N, P, 4]`` head outputs concatenated over levels.
    """

    def __init__(self, channels: int = 24, outputs_per_position: int = 4) -> None:
        super().__init__()
        self.c3 = conv_bn(3, 16, 3, 2)  # stride 2
        self.c4 = conv_bn(16, 24, 3, 2)  # stride 4
        self.c5 = conv_bn(24, 32, 3, 2)  # stride 8
        self.lateral = nn.ModuleList(
            [conv_bn(c, channels, 1, activation=None) for c in (16, 24, 32)]
        )
        self.p4_td = FastNormalizedFusion(2, channels)
        self.p3_out = FastNormalizedFusion(2, channels)
        self.p4_out = FastNormalizedFusion(3, channels)
        self.p5_out = FastNormalizedFusion(2, channels)
        self.outputs_per_position = outputs_per_position
        self.head = nn.ModuleList(
            [nn.Conv2d(channels, outputs_per_position, 1) for _ in range(3)]
        )

    def forward(self, x: Tensor) -> Tensor:
        c3 = self.c3(x)
        c4 = self.c4(c3)
        c5 = self.c5(c4)
        p3, p4, p5 = (lateral(c) for lateral, c in zip(self.lateral, (c3, c4, c5)))

        def up(t: Tensor) -> Tensor:
            return F.interpolate(t, scale_factor=2.0, mode="nearest")

        def down(t: Tensor) -> Tensor:
            return F.max_pool2d(t, kernel_size=2)

        p4_td = self.p4_td([p4, up(p5)])
        p3_out = self.p3_out([p3, up(p4_td)])
        p4_out = self.p4_out([p4, p4_td, down(p3_out)])
        p5_out = self.p5_out([p5, down(p4_out)])
        k = self.outputs_per_position
        return torch.cat(
            [
                # (N, k, H, W) -> (N, H*W, k)
                head(p).permute(0, 2, 3, 1).reshape(x.shape[0], -1, k)
                for head, p in zip(self.head, (p3_out, p4_out, p5_out))
            ],
            dim=1,
        )


# --- ghost_residual -----------------------------------------------------------


class GhostModule(nn.Module):
    """GhostNet's ghost module (Han et al. 2020): ``cat([x1, cheap(x1)])``, ``x1 = primary(x)``.

    Output channel ``j`` and ``j + C/2`` both depend on ``x1[j]``: fed into a residual add,
    the producer's channels ``j`` and ``j + C/2`` are one unit for pruning.
    """

    def __init__(self, in_channels: int, out_channels: int, relu: bool = True) -> None:
        super().__init__()
        half = out_channels // 2
        activation = nn.ReLU if relu else None
        self.primary = conv_bn(in_channels, half, 1, activation=activation)
        self.cheap = conv_bn(half, half, 3, groups=half, activation=activation)

    def forward(self, x: Tensor) -> Tensor:
        x1 = self.primary(x)
        return torch.cat([x1, self.cheap(x1)], dim=1)  # (N, C/2, H, W) x 2 -> (N, C, H, W)


class GhostBottleneck(nn.Module):
    """Ghost (expand) -> ghost (project, no ReLU) + identity shortcut."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.expand = GhostModule(channels, hidden)
        self.project = GhostModule(hidden, channels, relu=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.project(self.expand(x)) + x


class GhostResidualNet(nn.Module):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = conv_bn(3, 16, 3, 2)
        self.blocks = nn.Sequential(GhostBottleneck(16, 32), GhostBottleneck(16, 48))
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.blocks(self.stem(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


# --- csp_split_concat ---------------------------------------------------------


class CSPBlock(nn.Module):
    """CSPNet / YOLOv8 C2f-style block (Wang et al. 2020): split in two, convs on one half,
    concat every intermediate, fuse with a 1x1 conv."""

    def __init__(self, channels: int, num_convs: int = 2) -> None:
        super().__init__()
        self.reduce = conv_bn(channels, channels, 1)
        self.convs = nn.ModuleList([conv_bn(channels // 2, channels // 2) for _ in range(num_convs)])
        self.fuse = conv_bn(channels // 2 * (2 + num_convs), channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        parts = list(self.reduce(x).chunk(2, dim=1))  # (N, C, H, W) -> 2 x (N, C/2, H, W)
        for conv in self.convs:
            parts.append(conv(parts[-1]))
        return self.fuse(torch.cat(parts, dim=1)) + x


class CSPNet(nn.Module):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = conv_bn(3, 16, 3, 2)
        self.blocks = nn.Sequential(CSPBlock(16), conv_bn(16, 24, 3, 2), CSPBlock(24))
        self.fc = nn.Linear(24, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.blocks(self.stem(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


# --- densenet_concat ----------------------------------------------------------


class DenseLayer(nn.Module):
    """DenseNet layer (Huang et al. 2017): BN-ReLU-conv1x1-BN-ReLU-conv3x3, output concatenated."""

    def __init__(self, in_channels: int, growth: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(in_channels)
        self.bottleneck = nn.Conv2d(in_channels, 2 * growth, 1, bias=False)
        self.conv = nn.Sequential(nn.BatchNorm2d(2 * growth), nn.ReLU(), nn.Conv2d(2 * growth, growth, 3, padding=1))

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([x, self.conv(self.bottleneck(F.relu(self.norm(x))))], dim=1)


class DenseNet(nn.Module):
    def __init__(self, num_classes: int = 10, growth: int = 8) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, 2, 1)
        self.block = nn.Sequential(*[DenseLayer(16 + i * growth, growth) for i in range(3)])
        self.transition = nn.Sequential(nn.BatchNorm2d(40), nn.ReLU(), nn.Conv2d(40, 24, 1))
        self.fc = nn.Linear(24, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.transition(self.block(self.stem(x)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


# --- shufflenetv2_inline ------------------------------------------------------


def inline_channel_shuffle(x: Tensor, groups: int) -> Tensor:
    """ShuffleNetV2's shuffle written inline, as torchvision does (no ``ChannelShuffle`` module)."""
    batch, channels, height, width = x.shape
    # (N, C, H, W) -> (N, g, C/g, H, W) -> (N, C/g, g, H, W) -> (N, C, H, W)
    x = x.view(batch, groups, channels // groups, height, width).transpose(1, 2).contiguous()
    return x.view(batch, channels, height, width)


class ShuffleV2Unit(nn.Module):
    """ShuffleNetV2 stride-1 unit (Ma et al. 2018): chunk, 1x1-dw3x3-1x1 branch on one half,
    concat with the other half, inline channel shuffle."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        half = channels // 2
        self.branch = nn.Sequential(
            conv_bn(half, half, 1), conv_bn(half, half, 3, groups=half, activation=None), conv_bn(half, half, 1)
        )

    def forward(self, x: Tensor) -> Tensor:
        identity, residual = x.chunk(2, dim=1)
        return inline_channel_shuffle(torch.cat([identity, self.branch(residual)], dim=1), 2)


class ShuffleNetV2Inline(nn.Module):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = conv_bn(3, 16, 3, 2)
        self.units = nn.Sequential(*[ShuffleV2Unit(16) for _ in range(3)])
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.units(self.stem(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


# --- vit_block ----------------------------------------------------------------


class QKVAttention(nn.Module):
    """Multi-head self-attention with separate q/k/v Linears (timm-style, ``num_heads`` attribute)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q, self.k, self.v = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        batch, tokens, _ = x.shape

        def heads(t: Tensor) -> Tensor:  # (N, L, H*D) -> (N, H, L, D)
            return t.reshape(batch, tokens, self.num_heads, -1).transpose(1, 2)

        q, k, v = heads(self.q(x)), heads(self.k(x)), heads(self.v(x))
        attention = torch.softmax(q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5, dim=-1)
        out = (attention @ v).transpose(1, 2).reshape(batch, tokens, -1)  # (N, H, L, D) -> (N, L, H*D)
        return self.proj(out)


class TransformerBlock(nn.Module):
    """Pre-norm ViT block (Dosovitskiy et al. 2021): ``x + attn(LN(x))``, ``x + MLP(LN(x))``."""

    def __init__(self, dim: int, num_heads: int, hidden: int, torch_attention: bool = False) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.torch_attention = torch_attention
        self.attn = nn.MultiheadAttention(dim, num_heads, batch_first=True) if torch_attention else QKVAttention(
            dim, num_heads
        )
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        y = self.norm1(x)
        x = x + (self.attn(y, y, y, need_weights=False)[0] if self.torch_attention else self.attn(y))
        return x + self.fc2(self.act(self.fc1(self.norm2(x))))


class TinyViT(nn.Module):
    def __init__(self, num_classes: int = 10, dim: int = 16) -> None:
        super().__init__()
        self.patch_embed = nn.Conv2d(3, dim, 4, 4)
        self.pos_embed = nn.Parameter(0.02 * torch.randn(1, 16, dim))
        self.blocks = nn.Sequential(TransformerBlock(dim, 2, 32), TransformerBlock(dim, 2, 24, torch_attention=True))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2) + self.pos_embed  # (N, C, 4, 4) -> (N, 16, C)
        return self.head(self.norm(self.blocks(x)).mean(dim=1))


# --- convnext_block -----------------------------------------------------------


class ConvNeXtBlock(nn.Module):
    """ConvNeXt block (Liu et al. 2022): dw7x7 -> channels-last LN -> Linear 4x -> GELU -> Linear
    -> layer scale ``gamma`` -> residual."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim)
        self.pwconv1, self.act, self.pwconv2 = nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(0.5 + torch.rand(dim))

    def forward(self, x: Tensor) -> Tensor:
        y = self.dwconv(x).permute(0, 2, 3, 1)  # (N, C, H, W) -> (N, H, W, C)
        y = self.gamma * self.pwconv2(self.act(self.pwconv1(self.norm(y))))
        return x + y.permute(0, 3, 1, 2)  # (N, H, W, C) -> (N, C, H, W)


class TinyConvNeXt(nn.Module):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = conv_bn(3, 16, 4, 4, activation=None)
        self.blocks = nn.Sequential(ConvNeXtBlock(16), ConvNeXtBlock(16))
        self.head = nn.Linear(16, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(torch.flatten(F.adaptive_avg_pool2d(self.blocks(self.stem(x)), 1), 1))


# --- mobilevit_unfold_fold ----------------------------------------------------


class MobileViTBlock(nn.Module):
    """MobileViT block (Mehta & Rastegari 2022): local 3x3 + 1x1, unfold into 2x2 patches,
    transformer over patches, fold back, 1x1, concat with the input, 3x3 fusion."""

    def __init__(self, channels: int, dim: int, patch: int = 2) -> None:
        super().__init__()
        self.patch = patch
        self.local = nn.Sequential(conv_bn(channels, channels), nn.Conv2d(channels, dim, 1, bias=False))
        self.transformer = TransformerBlock(dim, 2, 2 * dim)
        self.project = conv_bn(dim, channels, 1)
        self.fuse = conv_bn(2 * channels, channels)

    def forward(self, x: Tensor) -> Tensor:
        y = self.local(x)
        n, d, h, w = y.shape
        p = self.patch
        # unfold: (N, d, H, W) -> (N, d, H/p, p, W/p, p) -> (N, p, p, H/p, W/p, d) -> (N*p*p, H*W/p^2, d)
        patches = y.reshape(n, d, h // p, p, w // p, p).permute(0, 3, 5, 2, 4, 1).reshape(n * p * p, -1, d)
        patches = self.transformer(patches)
        # fold: the inverse permutation back to (N, d, H, W)
        y = patches.reshape(n, p, p, h // p, w // p, d).permute(0, 5, 3, 1, 4, 2).reshape(n, d, h, w)
        return self.fuse(torch.cat([x, self.project(y)], dim=1))


class TinyMobileViT(nn.Module):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = conv_bn(3, 16, 3, 2)
        self.block = MobileViTBlock(16, 12)
        self.head = nn.Linear(16, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(torch.flatten(F.adaptive_avg_pool2d(self.block(self.stem(x)), 1), 1))


# --- registry -----------------------------------------------------------------


ZOO: dict[str, Callable[[], tuple[nn.Module, Tensor]]] = {
    "resnet_downsample": lambda: _build(ResNetDownsample, (1, 3, 32, 32)),
    "mobilenetv2": lambda: _build(MobileNetV2, (1, 3, 32, 32)),
    "unet_concat_transposed": lambda: _build(UNet, (1, 3, 32, 32)),
    "se_cbam": lambda: _build(SECBAMNet, (1, 3, 32, 32)),
    "grouped_shuffle": lambda: _build(GroupedShuffleNet, (1, 3, 32, 32)),
    "detection_heads": lambda: _build(TinyRetinaFace, (1, 3, 32, 32)),
    "conv_flatten_linear": lambda: _build(ConvFlattenLinear, (1, 3, 16, 16)),
    "bifpn_fusion": lambda: _build(TinyBiFPN, (1, 3, 32, 32)),
    "ghost_residual": lambda: _build(GhostResidualNet, (1, 3, 16, 16)),
    "csp_split_concat": lambda: _build(CSPNet, (1, 3, 16, 16)),
    "densenet_concat": lambda: _build(DenseNet, (1, 3, 16, 16)),
    "shufflenetv2_inline": lambda: _build(ShuffleNetV2Inline, (1, 3, 16, 16)),
    "vit_block": lambda: _build(TinyViT, (1, 3, 16, 16)),
    "convnext_block": lambda: _build(TinyConvNeXt, (1, 3, 16, 16)),
    "mobilevit_unfold_fold": lambda: _build(TinyMobileViT, (1, 3, 16, 16)),
}

ZOO_PROTECT: dict[str, list[str]] = {
    "resnet_downsample": ["fc"],
    "mobilenetv2": ["classifier"],
    "unet_concat_transposed": ["head"],
    "se_cbam": ["fc"],
    "grouped_shuffle": ["fc"],
    "detection_heads": ["class_head.*", "bbox_head.*", "landmark_head.*"],
    "conv_flatten_linear": ["fc2"],
    "bifpn_fusion": ["head.*"],
    "ghost_residual": ["fc"],
    "csp_split_concat": ["fc"],
    "densenet_concat": ["fc"],
    "shufflenetv2_inline": ["fc"],
    "vit_block": ["head"],
    "convnext_block": ["head"],
    "mobilevit_unfold_fold": ["head"],
}
