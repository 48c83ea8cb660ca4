"""Suite-wide settings: the tests use small tensors, for which one intra-op thread is fastest
(and avoids oversubscribing a 2-core CI machine)."""

from __future__ import annotations

import os

import pytest
import torch

# Recipes default to every core (``threads: null``); runs the tests start in subprocesses get one thread too.
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
