"""The search objective on held-out *train* data (``search.trial.holdout``): never reads validation data."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from test_pipeline import TOY, quiet, write_recipe
from torch.utils.data import DataLoader, Dataset

from compresskit.config import RecipeError, load_recipe
from compresskit.run import RunContext, search_problem
from examples.shapes_classifier import ShapesTask


class _Tracked(Dataset):
    """Items ``indices`` of ``data``; every index read is added to ``seen``."""

    def __init__(self, data: Dataset, indices: list[int], seen: set[int]) -> None:
        self.data, self.indices, self.seen = data, indices, seen

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int) -> Any:
        self.seen.add(self.indices[position])
        return self.data[self.indices[position]]


class HeldoutShapes(ShapesTask):
    """ShapesTask with a held-out split that records which training images are trained on / scored."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.trained: set[int] = set()
        self.scored: set[int] = set()

    def split(self, fraction: float, seed: int) -> tuple[list[int], list[int]]:
        order = torch.randperm(len(self.train_data), generator=torch.Generator().manual_seed(seed)).tolist()
        count = int(len(order) * fraction)
        return sorted(order[count:]), sorted(order[:count])

    def train_loader(self, batch_size: int, subset: float = 1.0, seed: int = 0,
                     holdout: float | None = None) -> DataLoader:
        indices = list(range(len(self.train_data))) if holdout is None else self.split(holdout, seed)[0]
        indices = indices[:max(1, int(len(indices) * subset))]
        return DataLoader(_Tracked(self.train_data, indices, self.trained), batch_size=batch_size, shuffle=True)

    def heldout_loader(self, batch_size: int, fraction: float, seed: int = 0) -> DataLoader:
        return DataLoader(_Tracked(self.train_data, self.split(fraction, seed)[1], self.scored),
                          batch_size=batch_size)

    def val_loader(self, batch_size: int) -> DataLoader:
        raise AssertionError("the held-out objective read the validation data")


def _context(tmp_path, monkeypatch, task: ShapesTask, holdout: float | None) -> RunContext:
    trial = {**TOY["search"]["trial"], "epochs": 1, "subset": 0.5, "holdout": holdout}
    recipe = load_recipe(write_recipe(tmp_path, {**TOY, "search": {**TOY["search"], "trial": trial}}, monkeypatch))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    torch.manual_seed(0)
    torch.save(task.build_model(recipe.student.model).state_dict(), run_dir / "student.pt")
    return RunContext(recipe=recipe, run_dir=run_dir, task=task, log=quiet)


def test_heldout_objective_trains_and_scores_on_disjoint_train_images_only(tmp_path, monkeypatch):
    task = HeldoutShapes(image_size=12, train_size=96, val_size=48)
    problem = search_problem(_context(tmp_path, monkeypatch, task, holdout=0.25))
    rates = {name: low for name, (low, _) in problem.bounds.items()}
    first = problem.objective(rates)
    kept, heldout = task.split(0.25, 0)
    assert task.scored == set(heldout) and len(heldout) == 24
    assert task.trained and task.trained <= set(kept)
    assert not task.trained & task.scored
    assert problem.objective(rates) == pytest.approx(first)  # same held-out batches, same seed


def test_holdout_needs_a_task_with_a_heldout_loader(tmp_path, monkeypatch):
    task = ShapesTask(image_size=12, train_size=96, val_size=48)
    with pytest.raises(RecipeError, match=r"search\.trial\.holdout needs a task with heldout_loader"):
        search_problem(_context(tmp_path, monkeypatch, task, holdout=0.25))


def test_holdout_fraction_is_validated(tmp_path, monkeypatch):
    trial = {**TOY["search"]["trial"], "holdout": 1.0}
    path = write_recipe(tmp_path, {**TOY, "search": {**TOY["search"], "trial": trial}}, monkeypatch)
    with pytest.raises(RecipeError, match=r"search\.trial\.holdout must be within \(0, 1\), got 1\.0"):
        load_recipe(path)
