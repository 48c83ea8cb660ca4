"""The package surface: lazy imports (fast start-up), __version__, fit exported, compresskit.pruning.soft_fpgm not shadowed."""

from __future__ import annotations

import importlib
import subprocess
import sys
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
    from importlib.metadata import version

    from click.testing import CliRunner

    import compresskit
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


def test_compresskit_prune_is_the_one_shot_function():
    from compresskit import prune
    from compresskit.pruning.soft_fpgm import prune as defined

    assert prune is defined
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 3))
    assert prune(model, torch.randn(1, 3, 12, 12), 0.5) is model
    assert model[0].out_channels == 4


OLD_PATHS = {"compresskit.budget": "count_params", "compresskit.pipeline": "run", "compresskit.recipe": "load_recipe",
             "compresskit.plan": "plan", "compresskit.persist": "load_pruned", "compresskit.export": "export_model",
             "compresskit.prune": "SoftFPGM", "compresskit.task": "Task", "compresskit.checkpoints": "inherit_matching"}


@pytest.mark.parametrize("old", sorted(OLD_PATHS))
def test_an_old_module_path_imports_with_a_deprecation_warning(old):
    """compresskit 0.1's root modules still import for one release: a DeprecationWarning naming the new path,
    and the same objects as the new module."""
    import compresskit

    new = compresskit.MOVED_MODULES[old.split(".")[1]]
    code = (f"import warnings; warnings.simplefilter('error', DeprecationWarning)\n"
            f"try:\n    import {old}\nexcept DeprecationWarning as w:\n    print(w)\n")
    assert _run(code) == f"{old} moved to {new}; the old path goes in the next release"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        module = importlib.import_module(old)
    name = OLD_PATHS[old]
    assert getattr(module, name) is getattr(importlib.import_module(new), name)


def test_every_old_path_names_an_existing_module():
    import compresskit

    for new in compresskit.MOVED_MODULES.values():
        importlib.import_module(new)


def test_the_old_callable_prune_module_still_prunes():
    code = ("import warnings; warnings.simplefilter('ignore', DeprecationWarning)\n"
            "import torch, compresskit.prune\nfrom torch import nn\n"
            "m = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 3))\n"
            "compresskit.prune(m, torch.randn(1, 3, 12, 12), 0.5); print(m[0].out_channels)")
    assert _run(code) == "4"


def _pruned_with_old_optimizer() -> tuple[nn.Module, torch.optim.Optimizer]:
    from compresskit.pruning import prune

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
