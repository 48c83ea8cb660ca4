"""The README's pruner-API example runs as written, on a small CNN."""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import nn

README = Path(__file__).resolve().parents[1] / "README.md"


class SmallNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.head = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _python_block() -> str:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README has no python example"
    return blocks[0]


def test_readme_pruner_example_runs_and_prunes():
    torch.manual_seed(0)
    model = SmallNet()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-2)
    images, labels = torch.randn(16, 3, 64, 64), torch.randint(0, 10, (16,))

    def train_one_epoch(model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        model.train()
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(images), labels).backward()
        optimizer.step()

    namespace = {"model": model, "optimizer": optimizer, "train_one_epoch": train_one_epoch}
    exec(compile(_python_block(), str(README), "exec"), namespace)

    summary = namespace["summary"]
    assert summary.params_after < summary.params_before
    assert model.features[0].out_channels == 8  # 50% of 16 removed
    assert model.head.out_features == 10        # protected output untouched
    assert model(images).shape == (16, 10)
    assert namespace["optimizer"].param_groups[0]["params"][0] is next(model.parameters())
