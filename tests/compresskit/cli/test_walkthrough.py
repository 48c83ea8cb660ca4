"""The README's new-user walkthrough, executed: a torchvision-style classifier built in the test
(``user_project.py``), pruned, fine-tuned and exported through the CLI with the ready
``image_classification`` task type.

The commands are read from the README's walkthrough block. Substitutions, and only these: the
model spec ``torchvision:resnet18:r18.pth`` becomes the test's own module and weights (torchvision
does not import on this machine), 10 classes become 4 (weights saved for 4; the data has 3), 224x224 inputs become 16x16, the budget
becomes 75% of the small model, and ``run`` gets short epochs and search settings so it takes seconds.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
from click.testing import CliRunner
from user_project import write_user_project

from compresskit.cli import cli

REPO = Path(__file__).resolve().parents[3]
MODULE = "ck_walkthrough_models"
FAST = ["--set", "task_args.image_size=16", "--set", "search.iterations=1", "--set", "search.initial_points=2",
        "--set", "search.trial.batch_size=8", "--set", "prune.schedule.epochs=1", "--set", "finetune.epochs=1",
        "--set", "prune.schedule.batch_size=8", "--set", "finetune.batch_size=8"]


def walkthrough_commands() -> list[list[str]]:
    text = (REPO / "README.md").read_text()
    block = re.search(r"<!-- walkthrough:.*?-->\n```bash\n(.*?)```", text, re.S)
    assert block, "README has no walkthrough block"
    lines = block.group(1).replace("\\\n", " ").splitlines()
    return [shlex.split(line) for line in lines if line.startswith("compresskit ")]


def substitute(args: list[str], budget: int) -> list[str]:
    replaced = []
    for arg in args[1:]:  # drop the program name
        arg = arg.replace("torchvision:resnet18:r18.pth", f"{MODULE}:resnet_tiny:resnet_tiny.pth")
        arg = arg.replace("num_classes=10", "num_classes=4").replace("num_classes: 10", "num_classes: 4")
        arg = arg.replace("224,224", "16,16").replace("max_params=5500000", f"max_params={budget}")
        arg = str(REPO / arg) if arg.startswith("recipes/") else arg
        replaced.append(MODULE if arg == "torchvision" else arg)
    return replaced + (FAST if replaced[0] == "run" else [])


@pytest.mark.slow
def test_readme_walkthrough_prunes_finetunes_and_exports(tmp_path, monkeypatch):
    write_user_project(tmp_path, MODULE, num_classes=4)  # not the builder's default (3), as 10 is not ResNet's
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    commands = walkthrough_commands()
    assert [c[1] for c in commands] == ["inspect", "run", "inspect", "export"]

    first = runner.invoke(cli, substitute(commands[0], 0))
    assert first.exit_code == 0, first.output
    params = int(re.search(r"parameters: ([\d,]+)", first.output).group(1).replace(",", ""))
    budget = int(params * 0.75)
    outputs = [first.output]
    for command in commands[1:]:
        result = runner.invoke(cli, substitute(command, budget))
        assert result.exit_code == 0, result.output
        outputs.append(result.output)

    run_dir = tmp_path / "runs" / "r18"
    evaluation = json.loads((run_dir / "evaluation.json").read_text())
    final = evaluation["pruned"]  # evaluation.json: teacher / student / pruned (the fine-tuned final.pt)
    assert (run_dir / "final.pt").is_file() and (run_dir / "report.md").is_file()
    inspected = outputs[2]
    after = int(re.search(r"parameters: ([\d,]+) \(before pruning ([\d,]+)", inspected).group(1).replace(",", ""))
    assert after <= budget < params, (after, budget, params)
    assert re.search(r"\n(layer\d\.\S+) +\d+ -> \d+ ", inspected), inspected  # per-layer before -> after
    assert "wrote " in outputs[3] and (tmp_path / "r18_pruned.onnx").stat().st_size > 0
    assert "accuracy" in final["metrics"] and final["params"] == after  # the evaluated model is the inspected one


def test_inspect_json_before_after_and_per_layer_macs_add_up(tmp_path, monkeypatch):
    write_user_project(tmp_path, "ck_inspect_models")
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    result = runner.invoke(cli, ["prune", "ck_inspect_models:resnet_tiny:resnet_tiny.pth", "--rate", "0.4",
                                 "--input-shape", "1,3,16,16", "--out", "p.pt"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(cli, ["inspect", "p.pt", "--trust", "ck_inspect_models", "--input-shape", "1,3,16,16",
                                 "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    layers = info["layers"]
    assert info["kind"] == "checkpoint" and info["params"] < info["before"]["params"]
    assert sum(row["macs"] for row in layers.values()) == info["macs"]  # conv + linear are all the MACs here
    assert sum(row["macs_before"] for row in layers.values()) == info["before"]["macs"]
    assert layers["fc"]["out"] == layers["fc"]["out_before"] == 3  # the classifier keeps its logits
    assert any(row["out"] < row["out_before"] for row in layers.values())
