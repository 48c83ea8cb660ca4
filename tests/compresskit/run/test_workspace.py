"""The run directory (compresskit.run.workspace): atomic writes, damaged files, reopening a run."""

from __future__ import annotations

import json

import pytest
import torch

from compresskit.run.workspace import RunDirError, Workspace, check_run_dir
from compresskit.train import NonFiniteLossError


def test_save_refuses_a_non_finite_tensor_and_writes_nothing(tmp_path):
    workspace = Workspace(run_dir=tmp_path)
    with pytest.raises(NonFiniteLossError, match=r"1 tensors for student.pt hold NaN/inf \(e.g. w\)"):
        workspace.save({"w": torch.tensor([1.0, float("nan")]), "b": torch.zeros(2)}, "student.pt")
    assert list(tmp_path.iterdir()) == []
    workspace.save({"w": torch.ones(2)}, "student.pt")
    assert torch.equal(workspace.load_state_dict("student.pt")["w"], torch.ones(2))


@pytest.mark.parametrize("content", [b"{not json", b"\xff\xfe"])
def test_an_unreadable_json_file_is_a_damaged_run_dir(tmp_path, content):
    (tmp_path / "rates.json").write_bytes(content)
    with pytest.raises(RunDirError, match=r"rates.json: unreadable .*the run directory is damaged"):
        Workspace(run_dir=tmp_path).read_json("rates.json")


def test_a_state_dict_file_that_is_not_a_dict_is_a_damaged_run_dir(tmp_path):
    torch.save([1, 2], tmp_path / "teacher.pt")
    with pytest.raises(RunDirError, match="holds list, not a state_dict"):
        Workspace(run_dir=tmp_path).load_state_dict("teacher.pt")


def test_json_and_metrics_lines(tmp_path):
    workspace = Workspace(run_dir=tmp_path)
    workspace.write_json("state.json", {"completed": ["teacher"], "phases": {}})
    assert (tmp_path / "state.json").read_text() == json.dumps(
        {"completed": ["teacher"], "phases": {}}, indent=2) + "\n"
    workspace.append_metrics({"phase": "teacher", "epoch": 1})
    workspace.append_metrics({"phase": "teacher", "epoch": 2})
    assert (tmp_path / "metrics.jsonl").read_text().splitlines() == [
        '{"phase": "teacher", "epoch": 1}', '{"phase": "teacher", "epoch": 2}']


def test_check_run_dir_new_resumed_and_refused(tmp_path):
    recipe = {"name": "toy", "seed": 0}
    assert check_run_dir(tmp_path / "new", recipe, resume=False, replace=False) == (
        {"completed": [], "phases": {}}, False)
    with pytest.raises(RunDirError, match="cannot resume .*: no such run directory"):
        check_run_dir(tmp_path / "new", recipe, resume=True, replace=False)
    (tmp_path / "file").write_text("x")
    with pytest.raises(RunDirError, match="is a file, not a directory"):
        check_run_dir(tmp_path / "file", recipe, resume=False, replace=False)
    run = tmp_path / "run"
    run.mkdir()
    (run / "recipe.yaml").write_text("name: toy\nseed: 0\n")
    (run / "state.json").write_text(json.dumps({"completed": ["teacher"], "phases": {"teacher": {}}}))
    assert check_run_dir(run, recipe, resume=True, replace=False)[0]["completed"] == ["teacher"]
    with pytest.raises(RunDirError, match="already holds a run; pass --resume"):
        check_run_dir(run, recipe, resume=False, replace=False)
    with pytest.raises(RunDirError, match=r"different recipe \(differs at seed\)"):
        check_run_dir(run, {**recipe, "seed": 1}, resume=True, replace=False)
    with pytest.raises(RunDirError, match="--replace only replaces a run that completed no phase"):
        check_run_dir(run, recipe, resume=False, replace=True)
