"""Tiny training pieces shared by the training-loop tests (test_train, test_hooks)."""

from __future__ import annotations

import random

import numpy as np
import torch
from torch import nn


def make_optimizer(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)


def make_scheduler(optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.StepLR:
    return torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)


def seed_all(seed: int) -> None:
    """Seed torch, numpy and Python's RNGs (the loss functions draw from all three)."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)
