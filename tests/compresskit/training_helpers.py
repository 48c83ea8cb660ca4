"""Tiny training pieces shared by the training-loop tests (test_train, test_hooks)."""

from __future__ import annotations

import random

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset


def dataset(n: int, seed: int) -> TensorDataset:
    """``n`` random 4-d points, labelled by the sign of their sum."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=generator)
    return TensorDataset(x, (x.sum(dim=1) > 0).long())


def tiny_model() -> nn.Module:
    """A tiny MLP; its Dropout consumes the torch RNG, so a resume must restore it."""
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Dropout(0.3), nn.Linear(8, 2))


def make_optimizer(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)


def make_scheduler(optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.StepLR:
    return torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)


def seed_all(seed: int) -> None:
    """Seed torch, numpy and Python's RNGs (the loss functions draw from all three)."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def noisy_loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
    """Cross-entropy times a weight drawn from numpy's and Python's RNGs (a resume must restore both)."""
    x, y = batch
    weight = 1.0 + 0.01 * float(np.random.rand()) + 0.01 * random.random()
    return F.cross_entropy(model(x), y) * weight, {"weight": weight}
