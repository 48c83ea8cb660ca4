"""save_pruned / load_pruned: bit-exact round trip, weights_only, clear errors."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn
from zoo import ZOO, ZOO_PROTECT

import compresskit as ck

TRUST = ["test_persist"]  # this module builds the checkpoints below


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

    loaded = ck.load_pruned(path, trust=TRUST)
    with torch.no_grad():
        assert torch.equal(model(example), loaded(example))
    assert ck.count_params(loaded) == ck.count_params(model)
    assert loaded.compresskit_history == model.compresskit_history


def test_saving_again_after_loading(tmp_path: Path) -> None:
    model, example = _pruned("mobilenetv2")
    ck.save_pruned(tmp_path / "a.pt", model, "test_persist:build", {"name": "mobilenetv2"})
    loaded = ck.load_pruned(tmp_path / "a.pt", trust=TRUST)
    ck.save_pruned(tmp_path / "b.pt", loaded, "test_persist:build", {"name": "mobilenetv2"})
    again = ck.load_pruned(tmp_path / "b.pt", trust=TRUST)
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
        ck.load_pruned(tmp_path / "x.pt", trust=TRUST)


def test_bad_checkpoints_name_the_file(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="garbage.pt"):
        ck.load_pruned(garbage, trust=TRUST)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(ValueError, match="foreign.pt.*not a compresskit"):
        ck.load_pruned(foreign, trust=TRUST)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        ck.load_pruned(tmp_path / "missing.pt", trust=TRUST)


def test_history_that_does_not_fit_the_model(tmp_path: Path) -> None:
    model, _ = _pruned("resnet_downsample")
    path = tmp_path / "mismatch.pt"
    ck.save_pruned(path, model, "test_persist:build", {"name": "mobilenetv2"})  # wrong architecture
    with pytest.raises(ValueError, match="mismatch.pt.*does not fit"):
        ck.load_pruned(path, trust=TRUST)


def test_pickled_modules_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "pickled.pt"
    torch.save({"format": "compresskit.pruned/1", "model": nn.Linear(2, 2)}, path)
    with pytest.raises(ValueError, match="pickled.pt"):
        ck.load_pruned(path, trust=TRUST)


# --- trust: a checkpoint's builder runs only when the user trusts it ---------------------------

CALLS: list[dict] = []
imported_call = os.path.join  # a name this module imports: its __module__ is not test_persist


def record_call(**kwargs) -> nn.Module:
    """A builder with a visible side effect: any call is recorded."""
    CALLS.append(kwargs)
    return nn.Linear(2, 2)


def _crafted(path: Path, builder: str, kwargs: dict | None = None) -> Path:
    torch.save({"format": "compresskit.pruned/1", "builder": builder, "builder_kwargs": kwargs or {},
                "history": [], "state_dict": nn.Linear(2, 2).state_dict()}, path)
    return path


@pytest.mark.parametrize("builder", ["os:system", "subprocess:check_call", "builtins:exec",
                                     "test_persist:record_call", "no_such_module_xyz:build"])
def test_untrusted_builder_is_neither_imported_nor_called(tmp_path: Path, builder: str) -> None:
    import sys

    path = _crafted(tmp_path / "crafted.pt", builder, {"args": "touch pwned"})
    CALLS.clear()
    module = builder.partition(":")[0]
    with pytest.raises(ck.UntrustedBuilderError) as raised:
        ck.load_pruned(path)
    message = str(raised.value)
    assert "\n" not in message and f"builder {builder!r} is not trusted" in message
    assert f"--trust {module}" in message and f"trust=[{module!r}]" in message
    assert CALLS == [] and "no_such_module_xyz" not in sys.modules


def test_trust_by_module_by_builder_and_by_registry(tmp_path: Path) -> None:
    path = _crafted(tmp_path / "ok.pt", "test_persist:record_call", {"tag": 1})
    CALLS.clear()
    assert isinstance(ck.load_pruned(path, trust=["test_persist"]), nn.Linear)
    assert isinstance(ck.load_pruned(path, trust="test_persist:record_call"), nn.Linear)
    assert CALLS == [{"tag": 1}, {"tag": 1}]
    for near_miss in (["test_persis"], ["test_persist:build"], ["test_persist.sub"]):
        with pytest.raises(ck.UntrustedBuilderError):
            ck.load_pruned(path, trust=near_miss)
    from compresskit.models import persist

    persist.trust_builder("test_persist:record_call")
    try:
        ck.load_pruned(path)
    finally:
        persist.TRUSTED_BUILDERS.discard("test_persist:record_call")
    assert len(CALLS) == 3
    with pytest.raises(ck.UntrustedBuilderError):
        ck.load_pruned(path)


@pytest.mark.parametrize("builder", ["test_persist:os.system", "test_persist:torch.load", "test_persist:imported_call"])
def test_trusting_a_module_does_not_trust_what_it_imports(tmp_path: Path, builder: str) -> None:
    """`--trust my_module` covers callables my_module defines, not `my_module:os.system` or an imported name."""
    path = _crafted(tmp_path / "crafted.pt", builder, {"command": "touch pwned"})
    CALLS.clear()
    with pytest.raises(ck.UntrustedBuilderError) as raised:
        ck.load_pruned(path, trust=["test_persist"])
    assert "\n" not in str(raised.value) and builder in str(raised.value)
    assert CALLS == [] and not (tmp_path / "pwned").exists()


def test_trusting_a_package_trusts_its_submodules_only() -> None:
    from compresskit.models.persist import is_trusted

    assert is_trusted("pkg.models.sub:build", ["pkg.models"])
    assert not is_trusted("pkg.modelsx:build", ["pkg.models"])
    assert not is_trusted("os:system", ["pkg"])


def test_reference_builder_is_trusted_through_the_entry_point() -> None:
    from importlib import metadata

    from compresskit.models.persist import BUILDER_ENTRY_POINTS, is_trusted

    declared = {entry.value for entry in metadata.entry_points(group=BUILDER_ENTRY_POINTS)}
    assert "featherface.models:build_model" in declared
    assert is_trusted("featherface.models:build_model")
    assert not is_trusted("featherface.models:load_weights")


def test_huge_builder_string_gives_a_short_message(tmp_path: Path) -> None:
    path = _crafted(tmp_path / "long.pt", "m" * 100_000 + ":f")
    with pytest.raises(ck.UntrustedBuilderError) as raised:
        ck.load_pruned(path)
    assert len(str(raised.value)) < 1000


def test_non_finite_weights_are_never_saved(tmp_path: Path) -> None:
    model = nn.Linear(3, 2)
    with torch.no_grad():
        model.weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match="non-finite.*weight"):
        ck.save_pruned(tmp_path / "nan.pt", model, "test_persist:build")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("name", ["grouped_shuffle", "se_cbam"])
def test_safetensors_round_trip_is_bit_exact_and_runs_no_code(tmp_path: Path, name: str) -> None:
    import json

    from safetensors import safe_open

    model, example = _pruned(name, 2)
    path = tmp_path / "pruned.safetensors"
    ck.save_pruned(path, model, "test_persist:build", {"name": name})
    assert os.listdir(tmp_path) == ["pruned.safetensors"]
    with safe_open(str(path), framework="pt") as handle:  # a plain safetensors file, readable by anyone
        metadata = handle.metadata()
        assert set(handle.keys()) == set(model.state_dict())
    assert metadata["format"] == "compresskit.pruned/1" and metadata["builder"] == "test_persist:build"
    assert json.loads(metadata["builder_kwargs"]) == {"name": name}
    assert json.loads(metadata["history"]) == model.compresskit_history
    loaded = ck.load_pruned(path, trust=TRUST)
    with torch.no_grad():
        assert torch.equal(model(example), loaded(example))
    assert loaded.compresskit_history == model.compresskit_history
    ck.save_pruned(tmp_path / "again.pt", loaded, "test_persist:build", {"name": name})  # and back to .pt
    with torch.no_grad():
        assert torch.equal(ck.load_pruned(tmp_path / "again.pt", trust=TRUST)(example), loaded(example))


def test_a_safetensors_file_without_compresskit_metadata_is_refused(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    save_file({"weight": torch.zeros(2)}, tmp_path / "plain.safetensors")
    with pytest.raises(ValueError, match="not a compresskit pruned-model checkpoint"):
        ck.load_pruned(tmp_path / "plain.safetensors")
