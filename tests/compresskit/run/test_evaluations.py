"""A run scores each distinct model once: metrics are cached by a digest of the architecture and tensors."""

from __future__ import annotations

import torch
from torch import nn

from compresskit.run.evaluations import CACHE_FILE, cached_metrics, weights_digest
from compresskit.run.workspace import Workspace


class CountingTask:
    """A task whose metric is the sum of the weights, counting how often it is asked."""

    def __init__(self) -> None:
        self.calls = 0

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        self.calls += 1
        return {"total": float(sum(p.detach().sum() for p in model.parameters()))}


def model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))


def test_the_same_weights_are_scored_once_and_any_change_is_rescored(tmp_path):
    workspace, task = Workspace(run_dir=tmp_path), CountingTask()
    first = cached_metrics(workspace, task, model())
    assert cached_metrics(workspace, task, model()) == first  # equal copy: from the cache
    assert task.calls == 1 and (tmp_path / CACHE_FILE).is_file()
    changed = model()
    changed[1].running_mean[0] += 1e-6  # a buffer moved by a rounding step is another model
    cached_metrics(workspace, task, changed)
    wider = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, eps=1e-3))  # same tensors, other settings
    wider.load_state_dict(model().state_dict())
    cached_metrics(workspace, task, wider)
    assert task.calls == 3


def test_a_damaged_cache_costs_a_rescoring_not_the_run(tmp_path):
    workspace, task = Workspace(run_dir=tmp_path), CountingTask()
    (tmp_path / CACHE_FILE).write_text("{torn")
    assert cached_metrics(workspace, task, model()) == task.evaluate(model())
    assert task.calls == 2
    assert weights_digest(model()) in (tmp_path / CACHE_FILE).read_text()


class DrawingTask(CountingTask):
    """Scoring draws from torch's global generator, as a ``DataLoader`` does for its base seed."""

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        torch.empty((), dtype=torch.int64).random_()
        return super().evaluate(model)


def test_between_epochs_a_stored_score_is_recomputed_so_the_random_stream_never_depends_on_the_cache(tmp_path):
    workspace, task = Workspace(run_dir=tmp_path), DrawingTask()
    cached_metrics(workspace, task, model())  # e.g. the epoch a killed run already scored
    torch.manual_seed(0)
    cached_metrics(workspace, task, model(), reuse=False)  # the same epoch, repeated by the resumed run
    resumed = torch.rand(3)
    torch.manual_seed(0)
    DrawingTask().evaluate(model())  # an uninterrupted run, which had nothing stored
    assert torch.equal(resumed, torch.rand(3)) and task.calls == 2
