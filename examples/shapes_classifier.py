"""A user's own task: a small ResNet classifying procedurally drawn shapes.

This file is *user code*: it lives outside ``compresskit`` and is named by a
recipe as ``task: examples.shapes_classifier:ShapesTask`` (see
``recipes/shapes_classifier.yaml``). It shows everything a model family has to
provide to be compressed by ``compresskit run``: a model builder, data loaders,
a loss, metrics and layer groups (the :class:`compresskit.tasks.protocol.Task` protocol).

The data set: ``image_size`` x ``image_size`` RGB images of one of four shapes
(disc, square, triangle, cross) in a random colour, size and position on a noisy
background. Generation is deterministic given ``seed`` (train and validation use
different streams), so runs are reproducible on CPU.

The model: a CIFAR-style ResNet (He et al., "Deep Residual Learning for Image
Recognition", CVPR 2016) -- a 3x3 stem, three stages of basic blocks with
1x1-projection shortcuts when the shape changes, global average pooling and a
linear classifier. Residual additions couple the channels of each stage, which
is what makes structured pruning of ResNets non-trivial.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Subset, TensorDataset

SHAPES = ("disc", "square", "triangle", "cross")

#: Stage widths of the named models.
MODEL_WIDTHS: dict[str, tuple[int, int, int]] = {
    "resnet_teacher": (32, 64, 128),
    "resnet_student": (16, 32, 64),
    "resnet_tiny": (8, 16, 16),
}


# --- data ---------------------------------------------------------------------


def draw_shapes(
    num_images: int, image_size: int = 32, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw ``num_images`` labelled shape images, deterministically.

    Args:
        num_images: How many images.
        image_size: Side length in pixels.
        seed: Seed of the generator; the same seed gives the same images.

    Returns:
        ``images`` float ``[N, 3, S, S]`` in about ``[-1, 1]`` and ``labels``
        long ``[N]`` indexing :data:`SHAPES`.

    Example:
        >>> images, labels = draw_shapes(4, image_size=16, seed=0)
        >>> images.shape, labels.shape
        (torch.Size([4, 3, 16, 16]), torch.Size([4]))
    """
    generator = torch.Generator().manual_seed(seed)
    n, s = num_images, image_size
    labels = torch.randint(len(SHAPES), (n,), generator=generator)
    radius = (0.24 + 0.14 * torch.rand(n, generator=generator)) * s       # [N]
    center = radius[:, None] + torch.rand(n, 2, generator=generator) * (s - 2 * radius[:, None])
    angle = torch.rand(n, generator=generator) * (math.pi / 2)
    sign = torch.randint(2, (n, 3), generator=generator) * 2 - 1
    colour = sign * (0.5 + 0.5 * torch.rand(n, 3, generator=generator))  # [N, 3], |c| >= 0.5
    background = torch.randn(n, 3, s, s, generator=generator) * 0.2

    coords = torch.arange(s, dtype=torch.float32) + 0.5
    y, x = torch.meshgrid(coords, coords, indexing="ij")                  # [S, S]
    dx = x[None] - center[:, 0, None, None]                               # [N, S, S]
    dy = y[None] - center[:, 1, None, None]
    cos, sin = torch.cos(angle)[:, None, None], torch.sin(angle)[:, None, None]
    u, v = cos * dx + sin * dy, -sin * dx + cos * dy                      # rotated frame
    r = radius[:, None, None]
    disc = dx**2 + dy**2 <= r**2
    square = (u.abs() <= 0.8 * r) & (v.abs() <= 0.8 * r)
    # Upward triangle in the rotated frame: below the apex lines, above the base.
    triangle = (v <= 0.6 * r) & (v >= -r + 1.7 * u.abs())
    cross = ((u.abs() <= 0.3 * r) | (v.abs() <= 0.3 * r)) & (u.abs() <= r) & (v.abs() <= r)
    masks = torch.stack([disc, square, triangle, cross], dim=1)           # [N, 4, S, S]
    mask = masks[torch.arange(n), labels].float()[:, None]                # [N, 1, S, S]
    images = background * (1 - mask) + colour[:, :, None, None] * mask
    return images, labels


# --- model --------------------------------------------------------------------


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with a residual connection (projection if needed)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ShapesResNet(nn.Module):
    """A small CIFAR-style ResNet.

    Args:
        widths: Channels of the three stages.
        blocks: Basic blocks per stage.
        num_classes: Output logits.

    Input ``[N, 3, H, W]`` float images; output ``[N, num_classes]`` logits.
    """

    def __init__(
        self,
        widths: Sequence[int] = (16, 32, 64),
        blocks: int = 1,
        num_classes: int = len(SHAPES),
    ) -> None:
        super().__init__()
        w1, w2, w3 = widths
        self.stem = nn.Sequential(nn.Conv2d(3, w1, 3, 1, 1, bias=False), nn.BatchNorm2d(w1), nn.ReLU())
        self.stage1 = self._stage(w1, w1, blocks, stride=1)
        self.stage2 = self._stage(w1, w2, blocks, stride=2)
        self.stage3 = self._stage(w2, w3, blocks, stride=2)
        self.fc = nn.Linear(w3, num_classes)

    @staticmethod
    def _stage(in_channels: int, out_channels: int, blocks: int, stride: int) -> nn.Sequential:
        layers = [BasicBlock(in_channels, out_channels, stride)]
        layers += [BasicBlock(out_channels, out_channels) for _ in range(blocks - 1)]
        return nn.Sequential(*layers)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.stage3(self.stage2(self.stage1(self.stem(images))))
        return self.fc(x.mean(dim=(2, 3)))  # (N, C, H, W) -> (N, C) -> (N, classes)


def build_model(name: str = "resnet_student", blocks: int = 1, num_classes: int = len(SHAPES)) -> nn.Module:
    """Build a named ShapesResNet (see :data:`MODEL_WIDTHS`).

    Args:
        name: A key of :data:`MODEL_WIDTHS`.
        blocks: Basic blocks per stage.
        num_classes: Output logits.

    Returns:
        The model, freshly initialised from the global torch seed.

    Raises:
        ValueError: If ``name`` is unknown.
    """
    if name not in MODEL_WIDTHS:
        raise ValueError(f"unknown model {name!r}; valid: {sorted(MODEL_WIDTHS)}")
    return ShapesResNet(MODEL_WIDTHS[name], blocks=blocks, num_classes=num_classes)


# --- the task -----------------------------------------------------------------


class ShapesTask:
    """The :class:`compresskit.tasks.protocol.Task` for shape classification.

    Args:
        image_size: Image side length.
        train_size: Number of training images.
        val_size: Number of validation images.
        seed: Data seed (validation uses ``seed + 1``).

    Batches are ``(images [N, 3, S, S], labels [N])``; outputs are logits ``[N, 4]``.
    """

    distill_kinds: Sequence[str] = ("classification",)

    def __init__(self, image_size: int = 32, train_size: int = 1024, val_size: int = 256,
                 seed: int = 0) -> None:
        if image_size < 8:
            raise ValueError(f"image_size must be >= 8, got {image_size!r}")
        self.image_size = image_size
        self.train_data = TensorDataset(*draw_shapes(train_size, image_size, seed))
        self.val_data = TensorDataset(*draw_shapes(val_size, image_size, seed + 1))

    def build_model(self, name: str, **kwargs: Any) -> nn.Module:
        return build_model(name, **kwargs)

    def builder(self, name: str, **kwargs: Any) -> tuple[str, dict[str, Any]]:
        return f"{__name__}:build_model", {"name": name, **kwargs}

    def example_inputs(self) -> tuple[torch.Tensor, ...]:
        return (torch.zeros(1, 3, self.image_size, self.image_size),)

    def train_loader(self, batch_size: int, subset: float = 1.0, seed: int = 0) -> DataLoader:
        data: Any = self.train_data
        if subset < 1.0:
            count = max(1, int(len(data) * subset))
            order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))
            data = Subset(data, order[:count].tolist())
        # The shuffle order comes from the global torch RNG, which the pipeline seeds
        # and training checkpoints restore: a resumed run sees the same batches.
        return DataLoader(data, batch_size=batch_size, shuffle=True)

    def val_loader(self, batch_size: int) -> DataLoader:
        return DataLoader(self.val_data, batch_size=batch_size, shuffle=False)

    def inputs(self, batch: Any) -> tuple[torch.Tensor, ...]:
        return (batch[0],)

    def task_loss(self, outputs: Any, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
        loss = F.cross_entropy(outputs, batch[1])
        return loss, {"ce": float(loss.detach())}

    def distill_mask(self, outputs: Any, batch: Any) -> torch.Tensor | None:
        return None

    @torch.no_grad()
    def evaluate(self, model: nn.Module) -> dict[str, float]:
        was_training = model.training
        model.eval()
        correct, total, loss_sum = 0, 0, 0.0
        for images, labels in self.val_loader(256):
            logits = model(images)
            loss_sum += float(F.cross_entropy(logits, labels, reduction="sum"))
            correct += int((logits.argmax(dim=1) == labels).sum())
            total += len(labels)
        model.train(was_training)
        return {"accuracy": correct / total, "val_loss": loss_sum / total}

    def layer_groups(self, model_name: str) -> list[Any]:
        from compresskit.groups.find import LayerGroupSpec  # core module; imported when used

        return [
            LayerGroupSpec("stem_stage1", patterns=("stem.*", "stage1.*"), bounds=(0.0, 0.5)),
            LayerGroupSpec("stage2", patterns=("stage2.*",), bounds=(0.0, 0.7)),
            LayerGroupSpec("stage3", patterns=("stage3.*",), bounds=(0.0, 0.8)),
        ]

    def protect(self, model_name: str) -> Sequence[str]:
        return ("fc",)  # the logits
