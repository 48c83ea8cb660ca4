"""Suite-wide settings: the tests use small tensors, for which one intra-op thread is fastest
(and avoids oversubscribing a 2-core CI machine)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
