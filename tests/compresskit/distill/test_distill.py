from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from compresskit.distill.losses import WeightedDistillation


def _task_loss(*tensors: torch.Tensor) -> torch.Tensor:
    return sum(t.float().pow(2).mean() for t in tensors)


def test_classification_kl_matches_hand_computation_with_t4_scaling():
    student = torch.tensor([[1.0, 2.0, 3.0]], requires_grad=True)
    teacher = torch.tensor([[3.0, 1.0, 0.0]])
    distill = WeightedDistillation("classification", temperature=4.0, alpha=1.0, log_variance_range=None)
    loss, logs = distill(student, teacher, _task_loss(student))

    def softmax(values):
        exps = [math.exp(v / 4.0) for v in values]
        return [e / sum(exps) for e in exps]

    p_t, p_s = softmax([3.0, 1.0, 0.0]), softmax([1.0, 2.0, 3.0])
    expected = 16.0 * sum(t * (math.log(t) - math.log(s)) for t, s in zip(p_t, p_s))
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert logs["kd/0"] == pytest.approx(expected, rel=1e-5)
    # identical to torch's batchmean KL * T^2
    reference = F.kl_div(F.log_softmax(student / 4, -1), F.softmax(teacher / 4, -1), reduction="batchmean") * 16
    assert loss.item() == pytest.approx(reference.item(), rel=1e-6)


def test_alpha_mixes_kd_and_task_loss():
    student = torch.tensor([[0.5, -0.5]], requires_grad=True)
    teacher = torch.tensor([[0.4, -0.1]])
    task = (student * 3).sum() + 2.0
    distill = WeightedDistillation(["regression"], regression="l2", alpha=0.7, log_variance_range=None)
    loss, logs = distill([student], [teacher], task)
    kd = ((0.5 - 0.4) ** 2 + (-0.5 + 0.1) ** 2) / 2
    assert logs["kd"] == pytest.approx(kd)
    assert loss.item() == pytest.approx(0.7 * kd + 0.3 * task.item())


def test_smooth_l1_regression_both_branches():
    student = torch.tensor([[0.0, 0.0]], requires_grad=True)
    teacher = torch.tensor([[0.5, 3.0]])  # |d| < 1 -> 0.5 d^2 ; |d| >= 1 -> |d| - 0.5
    distill = WeightedDistillation("regression", alpha=1.0, log_variance_range=None)
    loss, _ = distill(student, teacher, _task_loss(student))
    assert loss.item() == pytest.approx((0.5 * 0.25 + 2.5) / 2)


def test_kd_part_is_zero_when_student_equals_teacher():
    torch.manual_seed(0)
    outputs = {"bbox": torch.randn(2, 5, 4), "cls": torch.randn(2, 5, 2), "landm": torch.randn(2, 5, 10)}
    student = {k: v.clone().requires_grad_() for k, v in outputs.items()}
    distill = WeightedDistillation({"bbox": "regression", "cls": "classification", "landm": "regression"})
    _, logs = distill(student, outputs, _task_loss(*student.values()))
    for name in ("bbox", "cls", "landm"):
        assert logs[f"kd/{name}"] == pytest.approx(0.0, abs=1e-6)
    assert logs["kd"] == pytest.approx(0.0, abs=1e-6)  # s_i = 0 at start: exp(0) * 0 + 0


def test_learnable_weights_receive_gradients_and_learn():
    torch.manual_seed(0)
    student = torch.randn(8, 3, requires_grad=True)
    teacher = torch.randn(8, 3)
    distill = WeightedDistillation(["classification", "regression"], alpha=1.0)
    assert [p is distill.raw_log_variances for p in distill.weight_parameters()] == [True]
    loss, logs = distill([student, student * 2], [teacher, teacher], _task_loss(student))
    loss.backward()
    grad = distill.raw_log_variances.grad
    assert grad is not None and torch.all(grad != 0)
    # d/ds (exp(-s) L + s) at s=0 is 1 - L (the tanh bound has slope 1 at 0)
    expected = torch.tensor([1 - logs["kd/0"], 1 - logs["kd/1"]])
    assert torch.allclose(grad, expected, atol=1e-5)

    # with fixed term losses, s converges to log(L) (Kendall optimum), within the bounds
    optimizer = torch.optim.SGD(distill.weight_parameters(), lr=0.1)
    fixed_student = [student.detach(), (student * 2).detach()]
    for _ in range(500):
        optimizer.zero_grad()
        loss, logs = distill(fixed_student, [teacher, teacher], torch.zeros(()))
        loss.backward()
        optimizer.step()
    for name in ("0", "1"):
        assert logs[f"log_var/{name}"] == pytest.approx(math.log(logs[f"kd/{name}"]), abs=1e-2)


def test_log_variances_stay_within_range():
    distill = WeightedDistillation(["regression"], log_variance_range=(-1.0, 2.0))
    assert distill.log_variances().item() == pytest.approx(0.0, abs=1e-6)
    with torch.no_grad():
        distill.raw_log_variances.fill_(100.0)
    assert -1.0 <= distill.log_variances().item() <= 2.0
    with torch.no_grad():
        distill.raw_log_variances.fill_(-100.0)
    assert distill.log_variances().item() == pytest.approx(-1.0)


def test_mask_fn_selects_confident_positions_only():
    teacher = torch.tensor([[[4.0, -4.0], [0.1, 0.0], [-4.0, 4.0]]])  # [N=1, P=3, C=2]
    student = torch.zeros(1, 3, 2, requires_grad=True)

    def confident(t):
        return t.softmax(-1).max(-1).values > 0.9  # [N, P]

    masked = WeightedDistillation("classification", alpha=1.0, mask_fns=[confident], log_variance_range=None)
    unmasked = WeightedDistillation("classification", alpha=1.0, log_variance_range=None)
    task = _task_loss(student)
    loss_masked, _ = masked(student, teacher, task)
    # same as the mean over positions 0 and 2 only
    loss_02, _ = unmasked(student[:, [0, 2]], teacher[:, [0, 2]], task)
    assert loss_masked.item() == pytest.approx(loss_02.item())
    # the gradient never reaches the masked-out position
    loss_masked.backward()
    assert torch.all(student.grad[0, 1] == 0) and torch.any(student.grad[0, 0] != 0)
    # an explicit mask overrides mask_fns; an empty mask gives exactly 0
    loss_none, logs = masked(student, teacher, task, mask=[torch.zeros(1, 3, dtype=torch.bool)])
    assert loss_none.item() == 0.0 and logs["kd/0"] == 0.0


def test_task_loss_must_be_a_real_tensor():
    student = torch.randn(2, 3, requires_grad=True)
    distill = WeightedDistillation("classification")
    with pytest.raises(TypeError, match="task_loss"):
        distill(student, student.detach(), 0.0)
    with pytest.raises(ValueError, match="task_loss does not require grad"):
        distill(student, student.detach(), torch.tensor(1.0))
    with pytest.raises(ValueError, match="scalar"):
        distill(student, student.detach(), student.sum(0))


def test_structure_and_shape_mismatches_raise():
    a, b = torch.randn(2, 4, requires_grad=True), torch.randn(2, 2, requires_grad=True)
    task = _task_loss(a, b)
    seq = WeightedDistillation(["regression", "classification"])
    with pytest.raises(ValueError, match="expected 2 outputs, got 1"):
        seq([a], [a.detach()], task)
    with pytest.raises(ValueError, match="student_out: expected a tensor or sequence"):
        seq({"a": a, "b": b}, [a, b], task)
    with pytest.raises(ValueError, match=r"output '1': student shape \(2, 2\) != teacher shape \(2, 3\)"):
        seq([a, b], [a.detach(), torch.randn(2, 3)], task)
    mapping = WeightedDistillation({"box": "regression", "cls": "classification"})
    with pytest.raises(ValueError, match="keys"):
        mapping({"box": a, "logits": b}, {"box": a, "logits": b}, task)
    with pytest.raises(ValueError, match="mask shape"):
        seq([a, b], [a, b], task, mask=[None, torch.ones(3, dtype=torch.bool)])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"kinds": ["detection"]}, "unknown kind 'detection'"),
        ({"kinds": []}, "at least one"),
        ({"kinds": "regression", "temperature": 0.0}, "temperature"),
        ({"kinds": "regression", "alpha": 1.5}, "alpha"),
        ({"kinds": "regression", "regression": "l1"}, "unknown regression loss 'l1'"),
        ({"kinds": "regression", "log_variance_range": (0.0, 4.0)}, "lo < 0 < hi"),
    ],
)
def test_bad_constructor_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        WeightedDistillation(**kwargs)
