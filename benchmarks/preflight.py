"""How long a bad recipe takes to fail: the pre-flight on the default recipe (issue 10).

Three mistakes on ``recipes/featherface_nano_b.yaml`` — a layer group whose pattern matches nothing, a
parameter budget no rates can meet, a teacher checkpoint of another model — each run through the CLI as
``compresskit run ... --dry-run`` and as ``compresskit run ...``, in fresh processes (interpreter and
torch start-up included), interleaved, median of ``--rounds``. Checked every round: exit code 2, one
``Error:`` line, the same line in both modes, no run directory created.

    .venv/bin/python benchmarks/preflight.py [--rounds 3] [--write-results]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "featherface_nano_b.yaml"
SECTION = "## Pre-flight: time to fail on a bad recipe"


def cases(folder: Path) -> dict[str, list[str]]:
    checkpoint = folder / "other_model.pt"
    torch.save(torch.nn.Linear(3, 2).state_dict(), checkpoint)
    return {"layer group matches nothing": ["prune.groups.extra={patterns: ['no_such_layer.*'], bounds: [0.0, 0.5]}"],
            "unreachable budget": ["search.budget={min_params: 1000, max_params: 2000}"],
            "mismatching teacher checkpoint": [f"teacher.checkpoint={checkpoint}"]}


def attempt(overrides: list[str], dry_run: bool, run_dir: Path) -> tuple[float, str]:
    """One CLI run: (seconds, its one error line); raises if it did not fail as promised."""
    sets = [arg for override in overrides for arg in ("--set", override)]
    command = [sys.executable, "-m", "compresskit", "run", str(RECIPE), "--run-dir", str(run_dir), *sets,
               *(["--dry-run"] if dry_run else [])]
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=600)
    seconds = time.perf_counter() - start
    errors = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("Error: ")]
    if result.returncode != 2 or len(errors) != 1 or run_dir.exists():
        raise SystemExit(f"{' '.join(command)}: exit {result.returncode}, {len(errors)} error lines, "
                         f"run dir created: {run_dir.exists()}\n{result.stderr[-2000:]}")
    return seconds, errors[0]


def shorten(line: str, limit: int = 200) -> str:
    """The error line for the table: repository and temporary paths dropped, cut at ``limit`` characters."""
    line = re.sub(r"/\S*/(other_model\.pt)", r"\1", line.replace(str(ROOT) + "/", ""))
    return line if len(line) <= limit else line[:limit] + " ..."


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--write-results", action="store_true")
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for name, overrides in cases(Path(folder)).items():
            seconds: dict[bool, list[float]] = {True: [], False: []}
            lines: set[str] = set()
            for index in range(args.rounds):
                for dry_run in (True, False) if index % 2 == 0 else (False, True):
                    elapsed, line = attempt(overrides, dry_run, Path(folder) / "run")
                    seconds[dry_run].append(elapsed)
                    lines.add(line)
            if len(lines) != 1:
                raise SystemExit(f"{name}: --dry-run and run printed different lines: {sorted(lines)}")
            rows.append((name, statistics.median(seconds[True]), statistics.median(seconds[False]), lines.pop()))
            print(f"{name}: dry-run {rows[-1][1]:.1f} s, run {rows[-1][2]:.1f} s: {rows[-1][3]}", flush=True)
    load = os.getloadavg()[0]
    text = "\n".join([
        SECTION, "",
        f"`.venv/bin/python benchmarks/preflight.py --rounds {args.rounds} --write-results` "
        f"({time.strftime('%Y-%m-%d', time.gmtime())}, {os.cpu_count()} CPUs, 1-min load {load:.1f}). Wall time of a fresh "
        "`compresskit run` process on `recipes/featherface_nano_b.yaml` with one mistake, start-up included, median; "
        "every round exited 2 with one `Error:` line, the same in both modes, and created no run directory.", "",
        "| mistake | `--dry-run` s | `run` s | the line (path shortened) |", "|---|---:|---:|---|",
        *[f"| {name} | {dry:.1f} | {run:.1f} | `{shorten(line)}` |" for name, dry, run, line in rows],
        ""])
    print(text)
    if args.write_results:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from _results import write_section

        write_section(SECTION, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
