"""Feature distillation in the training phases: the recovery's fixed point, the label-free loss, and the
``distill.features`` recipe key end to end on a toy run (pruned student matched on its kept channels)."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from test_pipeline import TOY, quiet, write_recipe
from torch import nn

from compresskit.config import TrainConfig, load_recipe
from compresskit.models.persist import load_pruned
from compresskit.run import run
from compresskit.run.distillation import Distillation, with_distillation
from compresskit.run.training import make_optimizer


class ToyTask:
    """What ``with_distillation`` asks of a task; the label loss counts its calls."""

    distill_kinds = ("classification",)

    def __init__(self) -> None:
        self.task_loss_calls = self.label_mask_calls = 0
        self.teacher_masks: list[torch.Tensor] = []

    def inputs(self, batch: Any) -> tuple[torch.Tensor, ...]:
        return (batch[0],)

    def task_loss(self, outputs: torch.Tensor, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
        self.task_loss_calls += 1
        return F.cross_entropy(outputs, batch[1]), {}

    def distill_mask(self, outputs: Any, batch: Any) -> None:
        self.label_mask_calls += 1
        return None

    def teacher_mask(self, teacher_outputs: torch.Tensor) -> list[torch.Tensor]:
        self.teacher_masks.append(teacher_outputs.argmax(1) == 0)  # samples the teacher puts in class 0
        return [self.teacher_masks[-1]]


def conv_net() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3))
    with torch.no_grad():  # running statistics unlike any batch's
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    return model


def train_steps(freeze_bn: bool, alpha: float = 1.0, steps: int = 3, masks: str = "labels",
                student: nn.Module | None = None) -> tuple[nn.Module, nn.Module, ToyTask]:
    """``steps`` AdamW steps (no weight decay) of a student (default: equal to its teacher), features distilled."""
    teacher = conv_net()
    student = copy.deepcopy(teacher) if student is None else student
    task = ToyTask()
    config = Distillation(teacher=None, alpha=alpha, features=("1", "4"), freeze_bn=freeze_bn, masks=masks)
    module, loss_fn, no_decay = with_distillation(task, student, teacher, config)
    optimizer = make_optimizer(TrainConfig(lr=1e-2, weight_decay=0.0), no_decay)(module)
    generator = torch.Generator().manual_seed(1)
    module.train()
    for _ in range(steps):
        batch = (torch.randn(4, 3, 6, 6, generator=generator) * 3 + 1, torch.randint(3, (4,), generator=generator))
        loss, logs = loss_fn(module, batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert "feat/1" in logs and "feat/4" in logs
    return student, teacher, task


def test_a_student_equal_to_its_teacher_is_a_fixed_point_with_frozen_batchnorm():
    student, teacher, task = train_steps(freeze_bn=True)
    assert all(torch.equal(s, t) for s, t in zip(student.state_dict().values(), teacher.state_dict().values()))
    assert not student[1].training and student[0].training  # BatchNorm in eval mode, the rest in train mode
    assert task.task_loss_calls == 0  # alpha 1: no label loss computed


def test_teacher_masks_read_no_label():
    torch.manual_seed(5)
    other = conv_net()
    with torch.no_grad():
        for parameter in other.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.3)  # a student unlike its teacher: the loss moves it
    student, teacher, task = train_steps(freeze_bn=True, masks="teacher", student=other)
    assert task.task_loss_calls == task.label_mask_calls == 0 and len(task.teacher_masks) == 3
    assert all(mask.shape == (4,) for mask in task.teacher_masks)
    assert not torch.equal(student[0].weight, teacher[0].weight)
    _, _, labelled = train_steps(freeze_bn=True, steps=1)
    assert labelled.label_mask_calls == 1 and not labelled.teacher_masks  # the default: the task's label masks


def test_train_mode_batchnorm_moves_a_student_equal_to_its_teacher():
    student, teacher, _ = train_steps(freeze_bn=False)
    assert not torch.equal(student[0].weight, teacher[0].weight)  # batch statistics != running statistics


def test_the_label_loss_is_computed_below_alpha_one():
    _, _, task = train_steps(freeze_bn=True, alpha=0.5, steps=1)
    assert task.task_loss_calls == 1


def test_a_feature_glob_matching_no_module_names_it():
    config = Distillation(teacher=None, features=("fpn.*",))
    with pytest.raises(ValueError, match="'fpn.\\*' matches no module"):
        with_distillation(ToyTask(), conv_net(), conv_net(), config)


def test_recipe_features_key_runs_end_to_end_on_a_pruned_student(tmp_path, monkeypatch):
    recipe = {**TOY, "name": "toy_features",
              "teacher": {"model": "resnet_tiny", "train": {"epochs": 1, "batch_size": 32}},
              "student": {"model": "resnet_tiny", "init_from": "teacher"},
              "distill": {"epochs": 0, "batch_size": 32, "alpha": 1.0, "freeze_bn": True,
                          "phases": ["soft_prune", "finetune"], "features": ["stage?"]},
              "search": {"enabled": False},
              "prune": {"rates": {"stem_stage1": 0.25, "stage2": 0.5, "stage3": 0.5},
                        "schedule": {"epochs": 1, "batch_size": 32}},
              "export": {"onnx": False}}
    loaded = load_recipe(write_recipe(tmp_path, recipe, monkeypatch))
    run_dir = tmp_path / "run"
    ctx = run(loaded, run_dir=run_dir, log=quiet)
    assert "finetune" in ctx.state["completed"]
    kept = json.loads((run_dir / "kept_channels.json").read_text())["kept"]
    assert len(kept["stage2"]) == 8 and len(kept["stage3"]) == 8  # half of 16: the pruned student's channels
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    finetune = [r for r in records if r["phase"] == "finetune"]
    assert finetune and all(k in finetune[-1] for k in ("feat/stage1", "feat/stage2", "feat/stage3", "kd"))
    assert "task" not in finetune[-1]  # alpha 1: no label loss
    model = load_pruned(run_dir / "final.pt", trust=["examples.shapes_classifier"])
    assert model.stage3[0].conv2.out_channels == 8
