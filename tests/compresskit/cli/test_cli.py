from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner

from compresskit.cli import COMMAND_ENTRY_POINTS, cli, command_plugins

REPO = Path(__file__).resolve().parents[3]
RECIPE = REPO / "recipes" / "shapes_classifier.yaml"


@pytest.fixture
def runner(monkeypatch) -> CliRunner:
    monkeypatch.chdir(REPO)
    return CliRunner()


@pytest.mark.parametrize("command", [[], ["run"], ["prune"], ["export"], ["inspect"]])
def test_help_everywhere(runner, command):
    result = runner.invoke(cli, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage: " in result.output


def test_top_level_help_lists_plugins_without_importing_them(runner, monkeypatch):
    monkeypatch.delitem(sys.modules, "featherface.detect", raising=False)
    result = runner.invoke(cli, ["--help"])
    assert result.exit_code == 0
    for name in ("run", "prune", "export", "inspect", *command_plugins()):
        assert f"  {name} " in result.output
    assert "featherface.detect" not in sys.modules


def test_library_import_does_not_import_reference():
    code = ("import sys, compresskit.cli, compresskit.run, compresskit.config, compresskit.report; "
            "assert not any(m.startswith('reference') for m in sys.modules), "
            "[m for m in sys.modules if m.startswith('reference')]")
    import subprocess

    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_dry_run_prints_the_plan_and_writes_nothing(runner, tmp_path):
    result = runner.invoke(cli, ["run", str(RECIPE), "--dry-run", "--run-dir", str(tmp_path / "r"),
                                 "--set", "distill.epochs=4"])
    assert result.exit_code == 0, result.output
    assert "student: resnet_student, 77,652 params" in result.output
    assert "epochs: distill 4" in result.output
    assert "layer group stage2" in result.output
    assert "rates within the bounds give 6,131 to 77,652 params" in result.output  # the pre-flight's range
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(("args", "fragment"), [
    (["--set", "distill.alpha=3"], "distill.alpha must be within [0, 1], got 3"),
    (["--set", "prune.groups.stage2.bounds=[0.1, 1.2]"],
     "prune.groups.stage2.bounds must be within [0, 1), got 1.2"),
    (["--set", "nonsense"], "expected key.path=value"),
    (["--profile", "nope"], "unknown profile 'nope'"),
    (["--set", "task=examples.shapes_classifier:Nope"], "has no attribute 'Nope'"),
    (["--set", "task_args.colour=red"], "task_args rejected by 'examples.shapes_classifier:ShapesTask'"),
    (["--set", "search.budget.max_params=1000"],
     "search.budget.min_params must be <= search.budget.max_params (1000), got 20000"),
])
def test_recipe_errors_exit_2_with_one_line(runner, args, fragment):
    result = runner.invoke(cli, ["run", str(RECIPE), "--dry-run", *args])
    assert result.exit_code == 2, result.output
    assert fragment in result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_missing_recipe_file_exits_2(runner, tmp_path):
    result = runner.invoke(cli, ["run", str(tmp_path / "absent.yaml")])
    assert result.exit_code == 2
    assert "not found" in result.output and "Traceback" not in result.output


def test_run_refuses_an_existing_run_dir_without_resume(runner, tmp_path):
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump({"name": "other"}))
    result = runner.invoke(cli, ["run", str(RECIPE), "--run-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "already holds a run; pass --resume" in result.output


def test_resume_of_a_missing_directory_exits_2(runner, tmp_path):
    result = runner.invoke(cli, ["run", "--resume", str(tmp_path / "gone")])
    assert result.exit_code == 2
    assert "no recipe.yaml" in result.output


def test_run_without_recipe_or_resume_is_a_usage_error(runner):
    result = runner.invoke(cli, ["run"])
    assert result.exit_code == 2
    assert "give a RECIPE, or --resume RUN_DIR" in result.output


@pytest.mark.parametrize("bad", ["garbage", "zeros"])
def test_bad_checkpoint_exits_2(runner, tmp_path, bad):
    pytest.importorskip("compresskit.models.persist")
    path = tmp_path / "model.pt"
    if bad == "garbage":
        path.write_bytes(b"this is not a checkpoint")
    else:
        torch.save({"weird": torch.zeros(2)}, path)
    for command in (["inspect", str(path)], ["export", str(path), "--out", str(tmp_path / "m.onnx"),
                                             "--input-shape", "1,3,8,8"]):
        result = runner.invoke(cli, command)
        assert result.exit_code == 2, result.output
        assert "model.pt" in result.output and "Traceback" not in result.output


def test_inspect_a_builder_prints_params_and_channels(runner):
    result = runner.invoke(cli, ["inspect", "examples.shapes_classifier:build_model",
                                 "--arg", "name=resnet_tiny"])
    assert result.exit_code == 0, result.output
    model = __import__("examples.shapes_classifier", fromlist=["build_model"]).build_model("resnet_tiny")
    assert f"parameters: {sum(p.numel() for p in model.parameters()):,}" in result.output
    assert "stage3.0.conv2" in result.output


def test_inspect_unknown_builder_exits_2(runner):
    result = runner.invoke(cli, ["inspect", "examples.shapes_classifier:nothing_here"])
    assert result.exit_code == 2
    assert "has no attribute 'nothing_here'" in result.output


def test_plugin_runs_when_importable(runner):
    pytest.importorskip("cv2")
    result = runner.invoke(cli, ["detect", "--help"])
    assert result.exit_code == 0, result.output
    assert "MODEL_OR_CHECKPOINT" in result.output


def test_plugins_are_the_command_entry_points():
    assert set(command_plugins()) >= {"detect", "evaluate"}  # declared in pyproject.toml
    assert all(entry.group == COMMAND_ENTRY_POINTS for entry in command_plugins().values())


@pytest.mark.parametrize(("value", "fragment"), [
    ("no_such_pkg.detect:cli", "importing no_such_pkg.detect:cli failed (ModuleNotFoundError"),
    ("json:dumps", "json:dumps is not a click command"),
])
def test_unavailable_plugin_exits_2(runner, monkeypatch, value, fragment):
    from importlib.metadata import EntryPoint

    entry = EntryPoint("detect", value, COMMAND_ENTRY_POINTS)
    monkeypatch.setattr("compresskit.cli._group.command_plugins", lambda: {"detect": entry})
    assert "  detect " in runner.invoke(cli, ["--help"]).output
    result = runner.invoke(cli, ["detect", "x.jpg"])
    assert result.exit_code == 2
    assert "'detect' is not available" in result.output and fragment in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_prune_inspect_export_round_trip(runner, tmp_path):
    pytest.importorskip("compresskit.models.persist")
    out = tmp_path / "pruned.pt"
    result = runner.invoke(cli, ["prune", "examples.shapes_classifier:build_model", "--arg", "name=resnet_student",
                                 "--group", "s2=stage2.*:0.5", "--group", "s3=stage3.*:0.25",
                                 "--protect", "fc", "--input-shape", "1,3,16,16", "--out", str(out)])
    assert result.exit_code == 0, result.output
    from compresskit.models.persist import load_pruned

    model = load_pruned(out, trust=["examples.shapes_classifier"])
    params = sum(p.numel() for p in model.parameters())
    assert f"77,652 -> {params:,} parameters" in result.output and params < 77_652
    assert model.stage2[0].conv1.out_channels == 16  # 32 channels, half removed
    assert model.stage3[0].conv1.out_channels == 48  # 64 channels, a quarter removed

    result = runner.invoke(cli, ["inspect", str(out), "--input-shape", "1,3,16,16",
                                 "--trust", "examples.shapes_classifier"])
    assert result.exit_code == 0, result.output
    assert f"parameters: {params:,}" in result.output
    assert "MACs @ 1,3,16,16: " in result.output

    onnx_path = tmp_path / "model.onnx"
    result = runner.invoke(cli, ["export", str(out), "--out", str(onnx_path), "--input-shape", "1,3,16,16",
                                 "--trust", "examples.shapes_classifier"])
    assert result.exit_code == 0, result.output
    assert onnx_path.stat().st_size > 0 and "max |ORT - torch|" in result.output


@pytest.mark.parametrize(("args", "fragment"), [
    (["--group", "s2=nothing.*:0.5"], "pattern 'nothing.*' matches no module"),
    (["--rate", "1.5"], "--rate must be in [0, 1), got 1.5"),
    (["--group", "broken"], "expected NAME=GLOB[,GLOB]:RATE"),
])
def test_prune_user_errors_exit_2(runner, tmp_path, args, fragment):
    pytest.importorskip("compresskit.models.persist")
    result = runner.invoke(cli, ["prune", "examples.shapes_classifier:build_model", *args,
                                 "--input-shape", "1,3,16,16", "--out", str(tmp_path / "p.pt")])
    assert result.exit_code == 2, result.output
    assert fragment in result.output and "Traceback" not in result.output


def test_dry_run_reports_an_unreachable_budget(runner):
    result = runner.invoke(cli, ["run", str(RECIPE), "--dry-run", "--set",
                                 "search.budget={min_params: 100, max_params: 1000}"])
    assert result.exit_code == 2
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("Error: ") and last.endswith(
        "shapes_classifier.yaml: search.budget [100, 1000] cannot be met: "
        "rates within the layer-group bounds give 6,131 to 77,652 parameters")


# --- checkpoints from anyone: the builder runs only when trusted ---------------------------------


@pytest.mark.parametrize("command", [["inspect"], ["export", "--out", "x.onnx", "--input-shape", "1,3,8,8"]])
def test_untrusted_checkpoint_builder_is_one_line_and_never_runs(runner, tmp_path, command, monkeypatch):
    monkeypatch.chdir(tmp_path)
    crafted = tmp_path / "crafted.pt"
    torch.save({"format": "compresskit.pruned/1", "builder": "os:system", "builder_kwargs": {"command": "touch pwned"},
                "history": [], "state_dict": {}}, crafted)
    result = runner.invoke(cli, [command[0], str(crafted), *command[1:]])
    assert result.exit_code == 2, result.output
    assert result.output.count("\n") == 1 and "builder 'os:system' is not trusted" in result.output
    assert "--trust os" in result.output and not (tmp_path / "pwned").exists()


def test_boundary_covers_every_command_including_plugins(runner, tmp_path, monkeypatch):
    monkeypatch.setenv("COMPRESSKIT_LOG_DIR", str(tmp_path))
    zero = tmp_path / "zero.jpg"
    zero.write_bytes(b"")
    result = runner.invoke(cli, ["detect", "nano_b", str(zero), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and "zero.jpg: cannot read image: empty file" in result.output
    assert "Traceback" not in result.output and not list(tmp_path.glob("*.log"))
