"""Issue 10: a recipe whose layer group matches nothing, whose budget cannot be met or whose checkpoint
does not fit fails before any training, with the same one line in ``--dry-run`` and in ``run``, exit 2,
and writes no run directory. (The time it takes is measured in ``benchmarks/preflight.py``.)"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from compresskit.cli import cli

RECIPE = Path(__file__).resolve().parents[3] / "recipes" / "shapes_classifier.yaml"


def _bad_checkpoint(tmp_path: Path) -> str:
    path = tmp_path / "other_model.pt"
    torch.save(torch.nn.Linear(3, 2).state_dict(), path)
    return str(path)


CASES = {
    "unknown group": (lambda tmp: ["prune.groups.extra={patterns: ['no_such_layer.*'], bounds: [0.0, 0.5]}"],
                      "layer group 'extra': pattern 'no_such_layer.*' matches no module"),
    "unreachable budget": (lambda tmp: ["search.budget={min_params: 100, max_params: 1000}"],
                           "search.budget [100, 1000] cannot be met"),
    "mismatching checkpoint": (lambda tmp: [f"teacher.checkpoint={_bad_checkpoint(tmp)}"], "teacher.checkpoint"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_same_one_line_error_in_dry_run_and_run_before_anything_is_written(case, tmp_path):
    overrides, fragment = CASES[case]
    sets = [arg for override in overrides(tmp_path) for arg in ("--set", override)]
    outputs = []
    for dry in (["--dry-run"], []):
        run_dir = tmp_path / f"run{len(outputs)}"
        result = CliRunner().invoke(cli, ["run", str(RECIPE), "--run-dir", str(run_dir), *sets, *dry])
        assert result.exit_code == 2, result.output
        assert "Traceback" not in result.output and not run_dir.exists()
        lines = [line for line in result.output.splitlines() if line.startswith("Error: ")]
        assert len(lines) == 1 and fragment in lines[0], result.output
        outputs.append(lines[0])
    assert outputs[0] == outputs[1]
