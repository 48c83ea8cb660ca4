from __future__ import annotations

import os
import socket
import tempfile

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from training_helpers import dataset, make_optimizer, make_scheduler, noisy_loss, seed_all, tiny_model

from compresskit.train import Callback, NonFiniteLossError, TrainState, fit, load_checkpoint, save_checkpoint


def _dataset(n: int = 32) -> TensorDataset:
    return dataset(n, seed=123)


class _Recorder(Callback):
    def __init__(self) -> None:
        self.events: list[tuple[str, int, int]] = []

    def on_train_start(self, state):
        self.events.append(("start", state.epoch, state.step))

    def on_step_end(self, state):
        self.events.append(("step", state.epoch, state.step))

    def on_epoch_end(self, state):
        self.events.append(("epoch", state.epoch, state.step))

    def on_train_end(self, state):
        self.events.append(("end", state.epoch, state.step))


def test_callback_order_and_counters():
    seed_all(0)
    model = tiny_model()
    loader = DataLoader(_dataset(16), batch_size=8, shuffle=True)
    recorder = _Recorder()
    state = fit(model, noisy_loss, loader, 2, make_optimizer, callbacks=[recorder], progress=False)
    assert recorder.events == [
        ("start", 0, 0),
        ("step", 0, 1),
        ("step", 0, 2),
        ("epoch", 1, 2),
        ("step", 1, 3),
        ("step", 1, 4),
        ("epoch", 2, 4),
        ("end", 2, 4),
    ]
    assert state.epoch == 2 and state.step == 4
    assert set(state.metrics) >= {"loss", "lr", "epoch_loss", "weight"}


def test_training_reduces_loss():
    seed_all(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    loader = DataLoader(_dataset(64), batch_size=16, shuffle=True)
    x, y = loader.dataset.tensors
    before = F.cross_entropy(model(x), y).item()
    fit(model, noisy_loss, loader, 10, make_optimizer, progress=False)
    after = F.cross_entropy(model(x), y).item()
    assert after < 0.5 * before


def test_resume_matches_uninterrupted_run(tmp_path):
    torch.use_deterministic_algorithms(True)
    try:
        seed_all(7)
        model = tiny_model()
        loader = DataLoader(_dataset(), batch_size=8, shuffle=True)
        straight = fit(model, noisy_loss, loader, 4, make_optimizer, make_scheduler, progress=False)
        expected = {k: v.clone() for k, v in straight.model.state_dict().items()}

        path = tmp_path / "last.pt"
        seed_all(7)
        model = tiny_model()
        loader = DataLoader(_dataset(), batch_size=8, shuffle=True)
        fit(
            model, noisy_loss, loader, 2, make_optimizer, make_scheduler, progress=False,
            checkpoint=lambda s: save_checkpoint(path, s, extra={"recipe": "x.yaml"}),
        )
        # a "new process": different RNG, fresh model/optimizer/scheduler, then restore
        seed_all(999)
        model = tiny_model()
        optimizer = make_optimizer(model)
        state = TrainState(model, optimizer, make_scheduler(optimizer))
        payload = load_checkpoint(path, state)
        assert payload["extra"] == {"recipe": "x.yaml"}
        assert state.epoch == 2 and state.step == 8
        loader = DataLoader(_dataset(), batch_size=8, shuffle=True)
        resumed = fit(
            model, noisy_loss, loader, 4, make_optimizer, make_scheduler, state=state, progress=False
        )
        assert resumed.epoch == 4 and resumed.step == straight.step
        for key, value in resumed.model.state_dict().items():
            assert torch.equal(value, expected[key]), key
        assert resumed.optimizer.param_groups[0]["lr"] == pytest.approx(0.1 * 0.5**4)
    finally:
        torch.use_deterministic_algorithms(False)


def test_checkpoint_loads_with_weights_only_and_is_atomic(tmp_path):
    seed_all(0)
    model = tiny_model()
    optimizer = make_optimizer(model)
    state = TrainState(model, optimizer, make_scheduler(optimizer), epoch=3, step=12)
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, state)
    payload = torch.load(path, weights_only=True)
    assert payload["epoch"] == 3 and payload["step"] == 12
    assert set(payload["rng"]) >= {"torch", "numpy", "python"}
    assert os.listdir(tmp_path) == ["ckpt.pt"]  # no temporary left behind


class _NaNAt:
    def __init__(self, bad_step: int) -> None:
        self.bad_step = bad_step
        self.calls = 0

    def __call__(self, model, batch):
        self.calls += 1
        return self._loss(model, batch, bad=self.calls == self.bad_step)

    def _loss(self, model, batch, bad: bool):
        loss, logs = noisy_loss(model, batch)
        return (loss * float("nan") if bad else loss), logs


def test_non_finite_loss_raises_before_the_step():
    seed_all(0)
    model = nn.Linear(4, 2)
    loader = DataLoader(_dataset(32), batch_size=8)  # 4 batches per epoch
    snapshot = {}

    class Snap(Callback):
        def on_step_end(self, state):
            snapshot.update({k: v.clone() for k, v in state.model.state_dict().items()})

    with pytest.raises(NonFiniteLossError, match=r"epoch 2 .*batch 1, step 5"):
        fit(model, _NaNAt(6), loader, 3, make_optimizer, callbacks=[Snap()], progress=False)
    for key, value in model.state_dict().items():  # unchanged since the last good step
        assert torch.equal(value, snapshot[key])
        assert torch.isfinite(value).all()


class _ReplaceParameters(Callback):
    """Mimics physical channel removal: new, smaller Parameter objects at epoch 2."""

    def on_epoch_end(self, state):
        if state.epoch == 2:
            first, last = state.model[0], state.model[2]
            keep = torch.arange(4)
            first.weight = nn.Parameter(first.weight.detach()[keep].clone())
            first.bias = nn.Parameter(first.bias.detach()[keep].clone())
            first.out_features = 4
            last.weight = nn.Parameter(last.weight.detach()[:, keep].clone())
            last.in_features = 4


def test_parameter_replacement_rebuilds_optimizer_and_keeps_lr():
    seed_all(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    loader = DataLoader(_dataset(16), batch_size=8)
    built = []

    def recording_optimizer(m):
        optimizer = make_optimizer(m)
        built.append(optimizer)
        return optimizer

    state = fit(
        model, noisy_loss, loader, 4, recording_optimizer, make_scheduler,
        callbacks=[_ReplaceParameters()], progress=False,
    )
    assert len(built) == 2
    optimizer_params = {id(p) for group in state.optimizer.param_groups for p in group["params"]}
    assert optimizer_params == {id(p) for p in model.parameters()}
    assert model[0].weight.shape == (4, 4)
    # StepLR(gamma=0.5) continued from where it was: 0.1 * 0.5**4 after 4 epochs
    assert state.optimizer.param_groups[0]["lr"] == pytest.approx(0.1 * 0.5**4)
    assert state.scheduler.last_epoch == 4


def test_stop_request_ends_training():
    class StopAfterOne(Callback):
        def on_epoch_end(self, state):
            state.stop = True

    seed_all(0)
    state = fit(
        tiny_model(), noisy_loss, DataLoader(_dataset(16), batch_size=8), 5, make_optimizer,
        callbacks=[StopAfterOne()], progress=False,
    )
    assert state.epoch == 1


@pytest.mark.parametrize("bad", [-1, 1.5, True])
def test_bad_epochs_raise(bad):
    with pytest.raises(ValueError, match="epochs"):
        fit(tiny_model(), noisy_loss, [], bad, make_optimizer, progress=False)


def test_state_for_another_model_raises():
    with pytest.raises(ValueError, match="state.model"):
        fit(tiny_model(), noisy_loss, [], 1, make_optimizer, state=TrainState(tiny_model()), progress=False)


# --------------------------------------------------------------------------- DDP (gloo, 2 ranks)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ddp_worker(rank: int, world_size: int, port: int, out_dir: str) -> None:
    os.environ.update(
        RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
    )
    torch.set_num_threads(1)
    from torch.utils.data.distributed import DistributedSampler

    from compresskit.train import setup_distributed

    info = setup_distributed()
    torch.manual_seed(100 + rank)  # different init per rank: DDP must broadcast rank 0's
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    dataset = _dataset(32)
    sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=0)
    loader = DataLoader(dataset, batch_size=4, sampler=sampler)

    def loss_fn(m, batch):
        x, y = batch
        return F.cross_entropy(m(x), y), {}

    calls = []
    state = fit(
        model, loss_fn, loader, 1, make_optimizer, device=info.device, progress=False,
        checkpoint=lambda s: calls.append(s.epoch),
    )
    torch.save(
        {"state": state.model.state_dict(), "calls": calls, "steps": state.step},
        os.path.join(out_dir, f"rank{rank}.pt"),
    )
    torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_ddp_two_ranks_end_with_identical_weights():
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory() as out_dir:
        mp.spawn(_ddp_worker, args=(2, _free_port(), out_dir), nprocs=2, join=True)
        rank0 = torch.load(os.path.join(out_dir, "rank0.pt"), weights_only=True)
        rank1 = torch.load(os.path.join(out_dir, "rank1.pt"), weights_only=True)
    assert rank0["steps"] == rank1["steps"] == 4  # 32 samples / 2 ranks / batch 4
    assert rank0["calls"] == [1] and rank1["calls"] == []  # checkpoint on rank 0 only
    torch.manual_seed(100)
    init = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)).state_dict()
    for key, value in rank0["state"].items():
        assert torch.equal(value, rank1["state"][key]), key
        assert not torch.equal(value, init[key]), key  # it trained


def test_sampler_set_epoch_called_each_epoch_and_progress_bar_runs():
    class EpochSampler(torch.utils.data.Sampler):
        def __init__(self, n):
            self.n, self.epochs = n, []

        def set_epoch(self, epoch):
            self.epochs.append(epoch)

        def __iter__(self):
            return iter(range(self.n))

        def __len__(self):
            return self.n

    sampler = EpochSampler(16)
    loader = DataLoader(_dataset(16), batch_size=8, sampler=sampler)
    seed_all(0)
    state = fit(tiny_model(), noisy_loss, loader, 3, make_optimizer, progress=True)
    assert sampler.epochs == [0, 1, 2] and state.step == 6


# --- non-finite gradients and weights never reach a checkpoint ---------------------------------


class _NaNGradientAt(_NaNAt):
    """A finite loss whose gradient is NaN at one step (what a bad op on the last batch does)."""

    def _loss(self, model, batch, bad: bool):
        x, y = batch
        logits = model(x)
        if bad:
            logits.register_hook(lambda grad: torch.full_like(grad, float("nan")))
        return F.cross_entropy(logits, y), {}


@pytest.mark.parametrize("bad_step", [4, 6, 8])  # last step of epoch 1, mid epoch 2, last step of epoch 2
def test_non_finite_gradient_stops_before_the_step_and_the_checkpoint(tmp_path, bad_step):
    seed_all(0)
    model = nn.Linear(4, 2)
    loader = DataLoader(_dataset(32), batch_size=8)  # 4 batches per epoch
    path = tmp_path / "last.pt"
    loss_fn = _NaNGradientAt(bad_step)
    with pytest.raises(NonFiniteLossError, match=r"non-finite gradient \(finite loss\).*weight"):
        fit(model, loss_fn, loader, 3, make_optimizer, progress=False,
            checkpoint=lambda s: save_checkpoint(path, s))
    assert all(torch.isfinite(v).all() for v in model.state_dict().values())
    epochs_done = (bad_step - 1) // 4
    if epochs_done:
        payload = load_checkpoint(path, restore_rng=False)
        assert payload["epoch"] == epochs_done
        for tensors in (payload["model"], payload["optimizer"]["state"]):
            for value in (v for t in tensors.values() for v in (t.values() if isinstance(t, dict) else [t])):
                assert torch.isfinite(value).all()
        resumed = TrainState(model=nn.Linear(4, 2))
        resumed.optimizer = make_optimizer(resumed.model)
        load_checkpoint(path, resumed)  # the kept checkpoint resumes
        fit(resumed.model, noisy_loss, loader, 3, make_optimizer, state=resumed, progress=False)
        assert resumed.epoch == 3
    else:
        assert not path.exists()


@pytest.mark.parametrize("where", ["model", "optimizer"])
def test_save_checkpoint_refuses_non_finite_state_and_keeps_the_previous_file(tmp_path, where):
    model = nn.Linear(4, 2)
    optimizer = make_optimizer(model)
    model(torch.randn(2, 4)).sum().backward()
    optimizer.step()
    state = TrainState(model=model, optimizer=optimizer, epoch=1)
    path = tmp_path / "last.pt"
    save_checkpoint(path, state)
    good = path.read_bytes()
    with torch.no_grad():
        if where == "model":
            model.bias[0] = float("inf")
        else:
            optimizer.state[model.weight]["momentum_buffer"][0, 0] = float("nan")
    state.epoch = 2
    with pytest.raises(NonFiniteLossError, match=f"1 {where} tensors hold NaN/inf after epoch 2"):
        save_checkpoint(path, state)
    assert path.read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]
