"""Exact-value tests of the training hooks (compresskit.train.hooks) and of resuming through them."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset
from training_helpers import dataset, make_optimizer, make_scheduler, noisy_loss, seed_all, tiny_model

from compresskit.train import Callback, EpochCheckpoint, EveryNEpochs, SchedulerStep, TrainState, fit, load_checkpoint


def _dataset(n: int = 24) -> TensorDataset:
    return dataset(n, seed=5)


class _CountingScheduler:
    """Counts step() calls; state_dict round-trips the count."""

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        self.steps = 0

    def step(self) -> None:
        self.steps += 1

    def state_dict(self) -> dict:
        return {"steps": self.steps}

    def load_state_dict(self, state_dict: dict) -> None:
        self.steps = state_dict["steps"]


class _EpochRecorder(Callback):
    def __init__(self) -> None:
        self.epochs: list[int] = []
        self.steps = 0
        self.scheduler_steps: list[int] = []

    def on_step_end(self, state: TrainState) -> None:
        self.steps += 1

    def on_epoch_end(self, state: TrainState) -> None:
        self.epochs.append(state.epoch)
        self.scheduler_steps.append(getattr(state.scheduler, "steps", -1))

    def state_dict(self) -> dict:
        return {"epochs": list(self.epochs), "steps": self.steps}

    def load_state_dict(self, state_dict) -> None:
        self.epochs, self.steps = list(state_dict["epochs"]), state_dict["steps"]


class _ZeroRow(Callback):
    """A hook whose own state changes training: zeroes row ``count % 8`` of the first layer each epoch."""

    def __init__(self) -> None:
        self.count = 0

    def on_epoch_end(self, state: TrainState) -> None:
        with torch.no_grad():
            state.model[0].weight[self.count % 8].zero_()
        self.count += 1

    def state_dict(self) -> dict:
        return {"count": self.count}

    def load_state_dict(self, state_dict) -> None:
        self.count = state_dict["count"]


# --- SchedulerStep -------------------------------------------------------------------------------


@pytest.mark.parametrize(("per", "expected"), [("step", 3 * 4), ("epoch", 4)])
def test_scheduler_steps_per_step_or_per_epoch(per, expected):
    loader = DataLoader(_dataset(24), batch_size=8)  # 3 batches per epoch
    state = fit(tiny_model(), noisy_loss, loader, 4, make_optimizer, _CountingScheduler,
                progress=False, scheduler_per=per)
    assert state.scheduler.steps == expected


def test_scheduler_steps_before_the_callbacks_at_epoch_end():
    recorder = _EpochRecorder()
    fit(tiny_model(), noisy_loss, DataLoader(_dataset(24), batch_size=8), 3, make_optimizer, _CountingScheduler,
        callbacks=[recorder], progress=False)
    assert recorder.epochs == [1, 2, 3]
    assert recorder.scheduler_steps == [1, 2, 3]


def test_per_step_one_cycle_lr_follows_optimizer_steps():
    loader = DataLoader(_dataset(24), batch_size=8)
    lrs: list[float] = []

    class Lr(Callback):
        def on_step_end(self, state):
            lrs.append(state.metrics["lr"])  # the LR the step just used

    fit(tiny_model(), noisy_loss, loader, 2, make_optimizer,
        lambda optimizer: torch.optim.lr_scheduler.OneCycleLR(optimizer, 0.1, total_steps=6),
        callbacks=[Lr()], progress=False, scheduler_per="step")
    reference = torch.optim.lr_scheduler.OneCycleLR(make_optimizer(tiny_model()), 0.1, total_steps=6)
    expected = []
    for _ in range(6):
        expected.append(reference.get_last_lr()[0])
        reference.optimizer.step()
        reference.step()
    assert lrs == expected


def test_scheduler_step_rejects_an_unknown_unit():
    with pytest.raises(ValueError, match="'batch'"):
        SchedulerStep("batch")
    with pytest.raises(ValueError, match="'batch'"):
        fit(tiny_model(), noisy_loss, [], 1, make_optimizer, progress=False, scheduler_per="batch")


# --- EveryNEpochs --------------------------------------------------------------------------------


def test_every_n_epochs_forwards_at_multiples_of_n_and_the_last_epoch():
    recorder = _EpochRecorder()
    wrapper = EveryNEpochs(recorder, n=3, last=7)
    fit(tiny_model(), noisy_loss, DataLoader(_dataset(16), batch_size=8), 7, make_optimizer,
        callbacks=[wrapper], progress=False)
    assert recorder.epochs == [3, 6, 7]
    assert recorder.steps == 7 * 2  # on_step_end is always forwarded
    assert wrapper.state_dict() == {"epochs": [3, 6, 7], "steps": 14}
    wrapper.load_state_dict({"epochs": [1], "steps": 2})
    assert recorder.epochs == [1] and recorder.steps == 2


def test_every_n_epochs_rejects_a_period_below_one():
    with pytest.raises(ValueError, match="n must be >= 1, got 0"):
        EveryNEpochs(Callback(), n=0, last=3)


def test_callback_default_state_is_empty():
    callback = Callback()
    assert callback.state_dict() == {}
    callback.load_state_dict({"anything": 1})  # a no-op


# --- EpochCheckpoint -----------------------------------------------------------------------------


def test_epoch_checkpoint_round_trips_every_hook_state(tmp_path):
    path = tmp_path / "last.pt"
    recorder, zero_row = _EpochRecorder(), _ZeroRow()
    saver = EpochCheckpoint(path, {"recorder": recorder, "zero_row": EveryNEpochs(zero_row, 2, 3)})
    model = tiny_model()
    fit(model, noisy_loss, DataLoader(_dataset(16), batch_size=8), 3, make_optimizer, make_scheduler,
        callbacks=[recorder, saver.hooks["zero_row"], saver], progress=False)
    payload = load_checkpoint(path, restore_rng=False)
    assert payload["epoch"] == 3 and payload["step"] == 6
    assert payload["extra"] == {"recorder": {"epochs": [1, 2, 3], "steps": 6}, "zero_row": {"count": 2}}
    assert torch.load(path, weights_only=True)["extra"] == payload["extra"]

    fresh_recorder, fresh_zero_row = _EpochRecorder(), _ZeroRow()
    fresh_model = tiny_model()
    optimizer = make_optimizer(fresh_model)
    state = TrainState(fresh_model, optimizer, make_scheduler(optimizer))
    EpochCheckpoint(path, {"recorder": fresh_recorder, "zero_row": EveryNEpochs(fresh_zero_row, 2, 3)}).restore(state)
    assert (fresh_recorder.epochs, fresh_recorder.steps, fresh_zero_row.count) == ([1, 2, 3], 6, 2)
    assert state.epoch == 3 and state.step == 6
    for key, value in fresh_model.state_dict().items():
        assert torch.equal(value, model.state_dict()[key]), key


def test_epoch_checkpoint_restore_names_a_missing_hook(tmp_path):
    path = tmp_path / "last.pt"
    saver = EpochCheckpoint(path, {"recorder": _EpochRecorder()})
    fit(tiny_model(), noisy_loss, DataLoader(_dataset(8), batch_size=8), 1, make_optimizer,
        callbacks=[saver], progress=False)
    model = tiny_model()
    state = TrainState(model, make_optimizer(model))
    with pytest.raises(ValueError, match=r"no state for the hooks \['pruner'\] \(the checkpoint holds \['recorder'\]\)"):
        EpochCheckpoint(path, {"recorder": _EpochRecorder(), "pruner": Callback()}).restore(state)


def test_epoch_checkpoint_writes_on_the_main_rank_only(tmp_path):
    path = tmp_path / "last.pt"
    model = tiny_model()
    EpochCheckpoint(path).on_epoch_end(TrainState(model, make_optimizer(model), is_main=False))
    assert not path.exists()
    EpochCheckpoint(path).on_epoch_end(TrainState(model, make_optimizer(model)))
    assert load_checkpoint(path, restore_rng=False)["extra"] == {}


def test_resumed_fit_with_hooks_reproduces_an_uninterrupted_one(tmp_path):
    def run(epochs: int, path, resume: bool):
        zero_row = _ZeroRow()
        pruner = EveryNEpochs(zero_row, n=1, last=4)
        saver = EpochCheckpoint(path, {"pruner": pruner})
        model = tiny_model()
        state = None
        if resume:
            seed_all(999)  # a "new process": other RNG states until the checkpoint restores them
            optimizer = make_optimizer(model)
            state = TrainState(model, optimizer, make_scheduler(optimizer))
            saver.restore(state)
        loader = DataLoader(_dataset(), batch_size=8, shuffle=True)
        state = fit(model, noisy_loss, loader, epochs, make_optimizer, make_scheduler,
                    callbacks=[pruner, saver], state=state, progress=False)
        return state, zero_row

    torch.use_deterministic_algorithms(True)
    try:
        seed_all(7)
        straight, straight_hook = run(4, tmp_path / "straight.pt", resume=False)
        seed_all(7)
        run(2, tmp_path / "split.pt", resume=False)
        resumed, resumed_hook = run(4, tmp_path / "split.pt", resume=True)
    finally:
        torch.use_deterministic_algorithms(False)
    assert resumed.epoch == straight.epoch == 4 and resumed.step == straight.step == 12
    assert resumed_hook.count == straight_hook.count == 4
    for key, value in resumed.model.state_dict().items():
        assert torch.equal(value, straight.model.state_dict()[key]), key
    assert resumed.optimizer.param_groups[0]["lr"] == straight.optimizer.param_groups[0]["lr"] == 0.1 * 0.5**4
