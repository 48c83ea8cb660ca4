"""The package surface: lazy imports (fast start-up), __version__, fit exported, compresskit.prune not shadowed."""

from __future__ import annotations

import subprocess
import sys
import types
import warnings

import pytest
import torch
from torch import nn


def _run(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.strip()


def test_import_and_cli_help_do_not_import_torch_or_onnx():
    code = ("import sys; from compresskit.cli import cli; import compresskit; "
            "from click.testing import CliRunner; r = CliRunner().invoke(cli, ['--help']); assert r.exit_code == 0; "
            "print(sorted(m for m in ('torch', 'onnx', 'onnxruntime', 'yaml', 'numpy') if m in sys.modules))")
    assert _run(code) == "[]"


def test_version_everywhere():
    import compresskit
    from importlib.metadata import version

    from click.testing import CliRunner
    from compresskit.cli import cli

    assert compresskit.__version__ == version("compresskit")
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"compresskit {compresskit.__version__}"


def test_public_names_resolve_and_fit_is_exported():
    import compresskit
    from compresskit.train import fit

    assert compresskit.fit is fit
    for name in compresskit.__all__:
        assert getattr(compresskit, name) is not None, name
    with pytest.raises(AttributeError, match="no attribute 'nonexistent'"):
        compresskit.nonexistent  # noqa: B018


def test_compresskit_prune_is_the_module_and_still_prunes_when_called():
    code = ("import compresskit.prune, types; m = compresskit.prune; "
            "print(isinstance(m, types.ModuleType), m.SoftFPGM.__name__, m.prune.__name__)")
    assert _run(code) == "True SoftFPGM prune"
    from compresskit import prune

    assert isinstance(prune, types.ModuleType)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 3))
    assert prune(model, torch.randn(1, 3, 12, 12), 0.5) is model  # the old `from compresskit import prune` call
    assert model[0].out_channels == 4


def _pruned_with_old_optimizer() -> tuple[nn.Module, torch.optim.Optimizer]:
    from compresskit import prune

    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    prune(model, torch.randn(1, 3, 12, 12), 0.5)
    model(torch.randn(2, 3, 12, 12)).sum().backward()
    return model, optimizer


def test_stepping_an_optimizer_built_before_pruning_warns_once():
    from compresskit import StaleOptimizerWarning

    model, optimizer = _pruned_with_old_optimizer()
    with pytest.warns(StaleOptimizerWarning, match="SGD steps 3 parameter"):
        optimizer.step()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        optimizer.step()  # once per optimizer
        torch.optim.SGD(model.parameters(), lr=0.1).step()  # a rebuilt optimizer is fine
