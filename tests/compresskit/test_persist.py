"""save_pruned / load_pruned: bit-exact round trip, weights_only, clear errors."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

import compresskit as ck
from zoo import ZOO, ZOO_PROTECT


def build(name: str) -> nn.Module:
    """Builder used by the checkpoints below (``test_persist:build``)."""
    return ZOO[name]()[0]


def _pruned(name: str, steps: int = 1) -> tuple[nn.Module, torch.Tensor]:
    model, example = ZOO[name]()
    for rate in (0.3, 0.5)[:steps]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ck.UnprunableWarning)
            ck.prune(model, example, rate, protect=ZOO_PROTECT[name])
    return model, example


@pytest.mark.parametrize(
    ("name", "steps"), [("grouped_shuffle", 2), ("unet_concat_transposed", 1), ("se_cbam", 2)]
)
def test_round_trip_is_bit_exact(tmp_path: Path, name: str, steps: int) -> None:
    model, example = _pruned(name, steps)
    assert len(model.compresskit_history) == steps
    path = tmp_path / "pruned.pt"
    ck.save_pruned(path, model, "test_persist:build", {"name": name})
    assert os.listdir(tmp_path) == ["pruned.pt"]  # no temporary file left behind

    payload = torch.load(path, weights_only=True)
    assert payload["builder"] == "test_persist:build" and payload["builder_kwargs"] == {"name": name}
    assert all(isinstance(i, int) for step in payload["history"] for op in step for i in op[2])

    loaded = ck.load_pruned(path)
    with torch.no_grad():
        assert torch.equal(model(example), loaded(example))
    assert ck.count_params(loaded) == ck.count_params(model)
    assert loaded.compresskit_history == model.compresskit_history


def test_saving_again_after_loading(tmp_path: Path) -> None:
    model, example = _pruned("mobilenetv2")
    ck.save_pruned(tmp_path / "a.pt", model, "test_persist:build", {"name": "mobilenetv2"})
    loaded = ck.load_pruned(tmp_path / "a.pt")
    ck.save_pruned(tmp_path / "b.pt", loaded, "test_persist:build", {"name": "mobilenetv2"})
    again = ck.load_pruned(tmp_path / "b.pt")
    with torch.no_grad():
        assert torch.equal(again(example), model(example))


def test_bad_builder_and_kwargs(tmp_path: Path) -> None:
    model, _ = _pruned("conv_flatten_linear")
    with pytest.raises(ValueError, match="'no_colon'"):
        ck.save_pruned(tmp_path / "x.pt", model, "no_colon", {})
    with pytest.raises(TypeError, match="builder_kwargs.layer"):
        ck.save_pruned(tmp_path / "x.pt", model, "test_persist:build", {"layer": nn.ReLU()})
    ck.save_pruned(tmp_path / "x.pt", model, "test_persist:nope", {"name": "conv_flatten_linear"})
    with pytest.raises(ValueError, match=r"x\.pt.*cannot import builder 'test_persist:nope'"):
        ck.load_pruned(tmp_path / "x.pt")


def test_bad_checkpoints_name_the_file(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="garbage.pt"):
        ck.load_pruned(garbage)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(ValueError, match="foreign.pt.*not a compresskit"):
        ck.load_pruned(foreign)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        ck.load_pruned(tmp_path / "missing.pt")


def test_history_that_does_not_fit_the_model(tmp_path: Path) -> None:
    model, _ = _pruned("resnet_downsample")
    path = tmp_path / "mismatch.pt"
    ck.save_pruned(path, model, "test_persist:build", {"name": "mobilenetv2"})  # wrong architecture
    with pytest.raises(ValueError, match="mismatch.pt.*does not fit"):
        ck.load_pruned(path)


def test_pickled_modules_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "pickled.pt"
    torch.save({"format": "compresskit.pruned/1", "model": nn.Linear(2, 2)}, path)
    with pytest.raises(ValueError, match="pickled.pt"):
        ck.load_pruned(path)
