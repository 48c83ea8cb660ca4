"""Every command, given bad input, prints one line naming the input, the problem and the fix, and exits 2.

A table of (command line, a fragment the line must contain). The commands run in a fresh user
project (``user_project.py``: a torchvision-style classifier module, weights, image folders).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from user_project import write_user_project

from compresskit.cli import cli

REPO = Path(__file__).resolve().parents[3]
MODULE = "ck_errors_models"
SPEC = f"{MODULE}:resnet_tiny"
CLASSIFICATION = str(REPO / "recipes" / "image_classification.yaml")
FEATHERFACE = str(REPO / "recipes" / "featherface_nano_b.yaml")
RUN = ["run", CLASSIFICATION, "--dry-run", "--set", f"task_args.model={SPEC}", "--set", "task_args.image_size=16",
       "--set", "task_args.train_dir=data/train", "--set", "task_args.val_dir=data/val"]


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("project")
    weights = write_user_project(folder, MODULE)
    state = torch.load(weights, weights_only=True)
    torch.save({**state, "layer1.0.conv1.extra": torch.zeros(1), "not_a_layer.weight": torch.zeros(2)},
               folder / "wrong_keys.pth")
    torch.save({**state, "total_ops": torch.zeros(1), "conv1.total_ops": torch.zeros(1),
                "conv1.total_params": torch.zeros(1)}, folder / "profiled.pth")
    (folder / "notes.pth").write_text("not a tensor file")
    (folder / "corrupt.onnx").write_text("not a protobuf")
    (folder / "model.onnx").write_text("not onnx")
    torch.save({"format": "something else"}, folder / "foreign.pt")
    return folder


@pytest.fixture
def runner(project, monkeypatch) -> CliRunner:
    monkeypatch.chdir(project)
    return CliRunner()


@pytest.fixture
def checkpoint(runner) -> str:
    result = runner.invoke(cli, ["prune", SPEC, "--rate", "0.3", "--input-shape", "1,3,16,16", "--out", "pruned.pt"])
    assert result.exit_code == 0, result.output
    return "pruned.pt"


TRUST = ["--trust", MODULE]

CASES = [
    # prune
    (["prune", SPEC, "--rate", "0.3", "--input-shape", "1,3,16", "--out", "p.pt"],
     "does not accept an input of shape 1,3,16"),
    (["prune", SPEC, "--rate", "0.3", "--input-shape", "1,1,16,16", "--out", "p.pt"],
     "does not accept an input of shape 1,1,16,16"),
    (["prune", SPEC, "--weights", "wrong_keys.pth", "--rate", "0.3", "--input-shape", "1,3,16,16", "--out", "p.pt"],
     "2 unexpected keys (first: layer1.0.conv1.extra, not_a_layer.weight)"),
    (["prune", f"{SPEC}:notes.pth", "--rate", "0.3", "--input-shape", "1,3,16,16", "--out", "p.pt"],
     "notes.pth: not a torch state_dict"),
    (["prune", f"{SPEC}:missing.pth", "--rate", "0.3", "--input-shape", "1,3,16,16", "--out", "p.pt"],
     "weights file not found: missing.pth"),
    (["prune", "no_such_module:build", "--rate", "0.3", "--input-shape", "1,3,16,16", "--out", "p.pt"],
     "cannot import no_such_module"),
    (["prune", f"{MODULE}:no_builder", "--rate", "0.3", "--input-shape", "1,3,16,16", "--out", "p.pt"],
     "has no attribute 'no_builder'"),
    (["prune", SPEC, "--rate", "1.5", "--input-shape", "1,3,16,16", "--out", "p.pt"], "--rate must be in [0, 1)"),
    (["prune", SPEC, "--rate", "0.3", "--input-shape", "1,x,16,16", "--out", "p.pt"], "expected integers"),
    (["prune", SPEC, "--rate", "0.3", "--out", "p.pt"], "Missing option '--input-shape'"),
    (["prune", SPEC, "--group", "nonsense", "--input-shape", "1,3,16,16", "--out", "p.pt"],
     "expected NAME=GLOB[,GLOB]:RATE"),
    (["prune", SPEC, "--arg", "num_classes=x", "--rate", "0.3", "--input-shape", "1,3,16,16", "--out", "p.pt"],
     "building the model failed"),
    (["prune", "final.pt", "--rate", "0.3", "--input-shape", "1,3,16,16", "--out", "p.pt"], "file not found: final.pt"),
    # export
    (["export", "{checkpoint}", *TRUST, "--input-shape", "1,1,16,16", "--out", "m.onnx"],
     "does not accept an input of shape 1,1,16,16"),
    (["export", "{checkpoint}", "--input-shape", "1,3,16,16", "--out", "m.onnx"], f"--trust {MODULE}"),
    (["export", "missing.pt", "--input-shape", "1,3,16,16", "--out", "m.onnx"], "file not found: missing.pt"),
    (["export", "foreign.pt", "--input-shape", "1,3,16,16", "--out", "m.onnx"], "not a compresskit pruned-model"),
    (["export", "{checkpoint}", *TRUST, "--input-shape", "1,3,16,16", "--out", "m.onnx", "--format", "tflite"],
     "'tflite' is not one of"),
    # inspect
    (["inspect", "{checkpoint}", *TRUST, "--input-shape", "1,3"], "does not accept an input of shape 1,3"),
    (["inspect", "notes.pth"], "not a readable compresskit checkpoint"),
    (["inspect", "nothing_here"], "no file of that name"),
    (["inspect", "torchvision_typo:resnet18"], "cannot import torchvision_typo"),
    (["inspect", SPEC, "--weights", "wrong_keys.pth"], "2 unexpected keys"),
    (["inspect", "{checkpoint}", *TRUST, "--weights", "resnet_tiny.pth"], "--weights applies to a model spec"),
    # quantize / benchmark
    (["quantize", "notes.pth", "--calibration-images", "data", "--out", "q.onnx"], "not an existing .onnx file"),
    (["quantize", "model.onnx", "--calibration-images", "no_folder", "--out", "q.onnx"], "not a folder"),
    (["quantize", "corrupt.onnx", "--calibration-images", "data", "--out", "q.onnx"], "is not a readable ONNX file"),
    (["benchmark", SPEC, "--threads", "0"], "need --threads >= 1"),
    (["benchmark", "missing.onnx"], "file not found: missing.onnx"),
    # run
    (["run", "no_recipe.yaml"], "no such recipe file, and not a shipped recipe"),
    ([*RUN, "--set", "student.model=resnet_nope"], "unknown model 'resnet_nope'"),
    ([*RUN, "--set", "task_args.train_dir=no_images"], "task_args.train_dir"),
    ([*RUN, "--set", "task_args.model=ck_errors_models:resnet_tiny:missing.pth"], "task_args.weights"),
    (["run", FEATHERFACE, "--dry-run", "--set", "task_args.data=widerface", "--set",
      "task_args.train_labels=no/labels.txt", "--set", "task_args.val_labels=no/val.txt"],
     "task_args.train_labels: file not found: no/labels.txt"),
    (["run", FEATHERFACE, "--stop-after", "nap"], "unknown phase 'nap'"),
    (["no-such-command"], "No such command"),
    # detect / evaluate (plugins from featherface)
    (["detect", "nothing.onnx", "data/val", "--out", "o"], "'nothing.onnx' does not exist"),
    (["detect", "resnet_tiny.pth", "data/val", "--out", "o"], "not a compresskit pruned-model checkpoint"),
    (["detect", "retinaface_mnet025:nothere.pth", "data/val", "--out", "o"], "nothere.pth"),
    (["detect", "retinaface_mnet025", "no_images", "--out", "o"], "'no_images' does not exist"),
    (["evaluate", "retinaface_mnet025:x.pth"], "Missing option '--gt'"),
]


@pytest.mark.parametrize(("args", "fragment"), CASES, ids=[" ".join(a[:2]) + f" [{i}]" for i, (a, _) in enumerate(CASES)])
def test_bad_input_is_one_line_and_exit_2(runner, request, args, fragment):
    if "{checkpoint}" in args:
        path = request.getfixturevalue("checkpoint")
        args = [path if a == "{checkpoint}" else a for a in args]
    result = runner.invoke(cli, args)
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2, result.output
    assert len(lines) == 1, result.output
    assert lines[0].startswith("Error: ") and "Traceback" not in result.output
    assert fragment in lines[0], lines[0]


def test_profiler_leftovers_in_weights_are_dropped(runner):
    result = runner.invoke(cli, ["prune", SPEC, "--weights", "profiled.pth", "--rate", "0.3",
                                 "--input-shape", "1,3,16,16", "--out", "profiled_pruned.pt"])
    assert result.exit_code == 0, result.output
    assert Path("profiled_pruned.pt").is_file()


def test_a_user_module_checkpoint_from_another_folder_says_to_add_it_to_pythonpath(checkpoint, project, tmp_path):
    import subprocess
    import sys

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = subprocess.run([sys.executable, "-m", "compresskit", "inspect", str(project / checkpoint), *TRUST],
                            cwd=elsewhere, capture_output=True, text=True)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert f"the builder's module '{MODULE}' is not importable from here: add the folder that holds it to " \
           "PYTHONPATH" in lines[0]
    fixed = subprocess.run([sys.executable, "-m", "compresskit", "inspect", str(project / checkpoint), *TRUST],
                           cwd=elsewhere, capture_output=True, text=True, env={**__import__("os").environ,
                                                                               "PYTHONPATH": str(project)})
    assert fixed.returncode == 0 and "(before pruning " in fixed.stdout, fixed.stderr


@pytest.mark.parametrize("text", ["a,b,c", "1,2", "1,2,3,4", ""])
def test_parse_floats_names_the_option_and_the_count(text):
    import click

    from compresskit.cli._options import parse_floats

    assert parse_floats("1,2.5,-3", 3, "--mean") == (1.0, 2.5, -3.0) and parse_floats(None, 3, "--mean") is None
    with pytest.raises(click.BadParameter) as caught:
        parse_floats(text, 3, "--mean")
    assert caught.value.format_message() == f"Invalid value for --mean: expected 3 comma-separated numbers, got {text!r}"


@pytest.mark.parametrize(("error", "exit_code", "message"), [
    (FileNotFoundError("no checkpoint at 'x.pt'"), 2, "file not found: no checkpoint at 'x.pt'"),
    (FileNotFoundError(2, "No such file or directory", "x.pt"), 2, "file not found: x.pt"),
    (OSError(28, "No space left on device", "out/m.onnx"), 2, "out/m.onnx: No space left on device"),
    (ValueError("bad\n  value"), 2, "bad value"),
    (EOFError(), 2, "unreadable file (EOFError: EOFError)"),
])
def test_the_boundary_maps_user_errors_to_one_line_and_exit_2(error, exit_code, message):
    from compresskit.cli._error_boundary import to_click_error

    mapped = to_click_error(error)
    assert (mapped.exit_code, mapped.format_message()) == (exit_code, message)


def test_an_unexpected_error_exits_1_naming_its_log(tmp_path, monkeypatch):
    from compresskit.cli._error_boundary import to_click_error

    monkeypatch.setenv("COMPRESSKIT_LOG_DIR", str(tmp_path))
    mapped = to_click_error(RuntimeError("boom"))
    logs = list(tmp_path.glob("compresskit-error-*.log"))
    assert mapped.exit_code == 1 and len(logs) == 1
    assert mapped.format_message() == f"unexpected RuntimeError: boom; traceback in {logs[0]}"
