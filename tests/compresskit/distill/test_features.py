from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from compresskit.distill import FeatureRecorder, WeightedDistillation, feature_loss, find_modules, match_kept_channels
from compresskit.groups.find import find_groups
from compresskit.groups.surgery import ChannelOp
from compresskit.pruning.soft_fpgm import remove_zeroed


class Branches(nn.Module):
    """Two conv+BN branches concatenated, then ReLU: an output no single layer produces."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(8, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4))
        self.b = nn.Sequential(nn.Conv2d(8, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(torch.cat([self.a(x), self.b(x)], 1))


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8),
                                  nn.LeakyReLU(0.1, inplace=True))
        self.branches = Branches()
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.branches(self.stem(x)))


def trained_like(seed: int = 0) -> Net:
    """A Net in eval mode with non-trivial BatchNorm statistics and affine weights."""
    torch.manual_seed(seed)
    model = Net()
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
    return model.eval()


REMOVED = {"stem.0": [1, 6], "branches.a.0": [0, 3], "branches.b.0": [2]}
INPUTS = (torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1)),)


def soft_and_pruned() -> tuple[Net, Net, list[ChannelOp]]:
    """``REMOVED`` zeroed in a copy of a Net (the soft model) and removed from another copy (the pruned one),
    with the removal's ops."""
    soft = trained_like()
    groups = find_groups(soft, INPUTS, protect=["head"])
    by_name = {group.name: group for group in groups}
    assert sorted(by_name) == sorted(REMOVED)
    for name, indices in REMOVED.items():
        by_name[name].zero_(indices)
    pruned = copy.deepcopy(soft)
    groups = find_groups(pruned, INPUTS, protect=["head"])
    summary = remove_zeroed(groups, [REMOVED[group.name] for group in groups])
    return soft, pruned.eval(), [ChannelOp.from_list(op) for op in summary.history]


def test_kept_channels_of_leaf_layers_and_of_a_concat():
    soft, pruned, ops = soft_and_pruned()
    outputs = soft.branches(soft.stem(INPUTS[0]))
    assert (outputs[:, [4, 7]] == 0).all()  # two kept channels dead on these inputs, as the removed ones
    kept = match_kept_channels(soft, pruned, INPUTS, ops)
    assert kept["stem.0"] == kept["stem.1"] == kept["stem.2"] == kept["stem"] == [0, 2, 3, 4, 5, 7]
    assert kept["branches.a"] == [1, 2] and kept["branches.b"] == [0, 1, 3]
    assert kept["branches"] == [1, 2, 4, 5, 7]  # branch b's channels come after a's 4
    assert "head" not in kept  # its output kept every channel
    assert match_kept_channels(soft, pruned, INPUTS, ops, names=["branches", "head"]) == {"branches": [1, 2, 4, 5, 7]}


def test_feature_loss_is_zero_for_a_pruned_model_whose_kept_channels_equal_the_teachers():
    teacher, student, ops = soft_and_pruned()  # the removed channels were zero in the teacher: nothing else changes
    kept = match_kept_channels(teacher, student, INPUTS, ops)
    names = find_modules(student, ["stem", "branches", "head"])
    with FeatureRecorder(student, names) as student_features, FeatureRecorder(teacher, names) as teacher_features:
        student(*INPUTS)
        teacher(*INPUTS)
    loss, logs = feature_loss(student_features.features, teacher_features.features, kept)
    assert student_features.features["branches"].shape[1] == 5
    assert loss.item() == pytest.approx(0.0, abs=1e-12)
    assert set(logs) == {"feat/stem", "feat/branches", "feat/head", "feat"}


def test_feature_loss_is_the_mean_of_normalised_squared_errors():
    teacher = {"x": torch.tensor([[1.0, 3.0]]), "y": torch.tensor([[2.0, 0.0, 0.0, 0.0]])}
    student = {"x": torch.tensor([[2.0, 3.0]], requires_grad=True), "y": torch.tensor([[0.0, 0.0, 0.0, 0.0]])}
    loss, logs = feature_loss(student, teacher)
    # x: mean sq error 0.5 / mean sq 5 = 0.1; y: 1 / 1 = 1
    assert logs["feat/x"] == pytest.approx(0.1) and logs["feat/y"] == pytest.approx(1.0)
    assert loss.item() == pytest.approx(0.55)
    scaled, _ = feature_loss({k: 10 * v for k, v in student.items()}, {k: 10 * v for k, v in teacher.items()})
    assert scaled.item() == pytest.approx(0.55)  # scale-free
    loss.backward()
    assert student["x"].grad is not None and teacher["x"].grad is None


def test_kept_map_selects_teacher_channels():
    teacher = {"f": torch.arange(8.0).reshape(1, 4, 2)}
    student = {"f": teacher["f"][:, [0, 3]].clone()}
    assert feature_loss(student, teacher, {"f": [0, 3]})[0].item() == 0.0
    assert feature_loss(student, teacher, {"f": [0, 2]})[0].item() > 0.0


def test_shape_mismatch_without_a_map_names_the_feature():
    teacher = {"ssh1": torch.zeros(1, 4, 2, 2)}
    student = {"ssh1": torch.zeros(1, 3, 2, 2)}
    with pytest.raises(ValueError, match="feature 'ssh1': student shape .* no kept-channel map"):
        feature_loss(student, teacher)
    with pytest.raises(ValueError, match="feature 'ssh1': kept channels"):
        feature_loss(student, teacher, {"ssh1": [0, 1, 4]})


def test_find_modules_globs_and_a_pattern_matching_nothing():
    model = Net()
    assert find_modules(model, ["branches.?", "stem"]) == ["stem", "branches.a", "branches.b"]
    with pytest.raises(ValueError, match="'fpn.\\*' matches no module"):
        find_modules(model, ["stem", "fpn.*"])


def test_recorder_clones_outputs_and_removes_its_hooks():
    model = Net().eval()
    with FeatureRecorder(model, ["stem.1"]) as recorder:  # the BN output, then an in-place LeakyReLU
        model(*INPUTS)
    bn_output = model.stem[1](model.stem[0](INPUTS[0]))
    assert torch.equal(recorder.features["stem.1"], bn_output)  # not the activation's in-place result
    assert (bn_output < 0).any()
    recorder.features.clear()
    model(*INPUTS)
    assert recorder.features == {}  # no hook left outside the block


def test_recorder_rejects_a_module_run_twice():
    shared = nn.Conv2d(3, 3, 1)
    model = nn.Sequential(shared, shared)
    with pytest.raises(ValueError, match="feature '0': the module ran twice"), FeatureRecorder(model, ["0"]):
        model(torch.zeros(1, 3, 2, 2))


def test_alpha_one_needs_no_task_loss():
    student = torch.tensor([[0.5, -0.5]], requires_grad=True)
    distill = WeightedDistillation(["regression"], regression="l2", alpha=1.0, log_variance_range=None)
    loss, logs = distill([student], [torch.tensor([[0.5, 0.5]])], None)
    assert loss.item() == pytest.approx(0.5) and "task" not in logs
    with pytest.raises(TypeError, match="task_loss must be a tensor"):
        WeightedDistillation(["regression"], alpha=0.5)([student], [student.detach()], None)
