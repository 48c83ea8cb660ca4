"""A new user's project, written into a temporary folder: a torchvision-style classifier module,
its trained-looking weights and ``train/`` + ``val/`` image folders (PNG, one folder per class).

The classifier mirrors torchvision's ResNet layout (``conv1``/``bn1``/``relu``/``maxpool``,
``layer1``.. with ``BasicBlock``s and a ``downsample``, ``avgpool``, ``fc``) at a tiny width, so
nothing here needs torchvision.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import numpy as np

CLASSES = ("red", "green", "blue")

MODULE_SOURCE = '''
import torch
from torch import nn


class BasicBlock(nn.Module):
    def __init__(self, inplanes, planes, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False),
                                            nn.BatchNorm2d(planes))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


class ResNet(nn.Module):
    def __init__(self, widths=(8, 16), num_classes=3):
        super().__init__()
        self.conv1 = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(2)
        self.layer1 = nn.Sequential(BasicBlock(widths[0], widths[0]), BasicBlock(widths[0], widths[0]))
        self.layer2 = nn.Sequential(BasicBlock(widths[0], widths[1], 2), BasicBlock(widths[1], widths[1]))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[1], num_classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer2(self.layer1(x))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet_tiny(num_classes=3):
    return ResNet(num_classes=num_classes)
'''


def write_user_project(folder: Path, module: str, train_per_class: int = 8, val_per_class: int = 4,
                       size: int = 16, num_classes: int = 3) -> Path:
    """Write ``module.py``, ``resnet_tiny.pth`` (for ``num_classes`` outputs) and
    ``data/{train,val}/CLASS/*.png`` (3 classes) under ``folder``.

    Returns the weights path. The module is importable once ``folder`` is on ``sys.path``
    (callers chdir there: compresskit puts the working directory on the path, as ``python -m`` does).
    """
    import torch
    from PIL import Image

    (folder / f"{module}.py").write_text(MODULE_SOURCE)
    rng = np.random.default_rng(0)
    for split, count in (("train", train_per_class), ("val", val_per_class)):
        for label, name in enumerate(CLASSES):
            target = folder / "data" / split / name
            target.mkdir(parents=True)
            for index in range(count):
                pixels = rng.integers(0, 80, (size, size, 3), dtype=np.uint8)
                pixels[..., label] += 150  # the class is the dominant colour channel
                Image.fromarray(pixels).save(target / f"{index}.png")
    sys.path.insert(0, str(folder))
    try:
        user_module = importlib.import_module(module)
        torch.manual_seed(0)
        weights = folder / "resnet_tiny.pth"
        torch.save(user_module.resnet_tiny(num_classes=num_classes).state_dict(), weights)
    finally:
        sys.path.remove(str(folder))
        sys.modules.pop(module, None)  # imported again, from the working directory, by compresskit
    return weights
