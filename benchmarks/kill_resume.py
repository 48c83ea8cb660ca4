"""SIGKILL a real `compresskit run` at random moments, resume until it finishes, compare with an
uninterrupted run (issue 13, item 7 and the kill/resume guarantee).

For each trial the run (the toy shapes recipe, deterministic CPU) is killed with SIGKILL after a random
delay, ``--resume``d, killed again, ... up to ``--kills`` times, then resumed to the end. A trial passes
when, against the uninterrupted run:

* ``teacher.pt``, ``student.pt`` and ``final.pt`` hold bitwise-equal tensors, ``rates.json`` is equal and
  ``model.onnx`` is byte-identical;
* ``metrics.jsonl`` holds exactly one line per (phase, epoch), the same keys as the uninterrupted run;
* no temporary file (``.*.tmp``) is left, every floating tensor in every ``.pt`` is finite.

Kills that left an orphan temporary file (i.e. landed inside an atomic write) are counted separately.

Usage::

    .venv/bin/python benchmarks/kill_resume.py --trials 8 --kills 3 --seed 0
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
RECIPE = {
    "extends": str(REPO / "recipes" / "shapes_classifier.yaml"),
    "name": "kill_toy",
    "task_args": {"image_size": 12, "train_size": 256, "val_size": 48},
    "teacher": {"model": "resnet_student", "train": {"epochs": 2, "batch_size": 32}},
    "student": {"model": "resnet_tiny"},
    "distill": {"epochs": 4, "batch_size": 32},
    "search": {"iterations": 1, "initial_points": 2, "budget": {"min_params": 1000, "max_params": 12000},
               "trial": {"epochs": 0, "batch_size": 48, "max_val_batches": 1}},
    "prune": {"schedule": {"epochs": 4, "batch_size": 32}},
    "finetune": {"epochs": 2, "batch_size": 32},
    "export": {"input_size": [12, 12]},
    "profiles": {},
}


def _command(recipe: Path) -> list[str]:
    return [sys.executable, "-m", "compresskit.cli", "run", str(recipe)]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    payload = torch.load(path, map_location="cpu", weights_only=True)
    return payload.get("state_dict", payload) if isinstance(payload, dict) else payload


def _all_finite(directory: Path) -> bool:
    from compresskit.utils.finite import non_finite_entries

    return all(non_finite_entries(torch.load(p, map_location="cpu", weights_only=True))[0] == 0
               for p in directory.glob("*.pt"))


def _metric_keys(directory: Path) -> list[tuple[str, int]]:
    lines = (directory / "metrics.jsonl").read_text().splitlines()
    return [(r["phase"], r["epoch"]) for r in map(json.loads, lines)]


def _compare(reference: Path, candidate: Path) -> list[str]:
    problems = []
    for name in ("teacher.pt", "student.pt", "final.pt"):
        a, b = _tensors(reference / name), _tensors(candidate / name)
        if a.keys() != b.keys() or not all(torch.equal(a[k], b[k]) for k in a):
            problems.append(f"{name} differs")
    if json.loads((reference / "rates.json").read_text()) != json.loads((candidate / "rates.json").read_text()):
        problems.append("rates.json differs")
    if (reference / "model.onnx").read_bytes() != (candidate / "model.onnx").read_bytes():
        problems.append("model.onnx differs")
    keys = _metric_keys(candidate)
    if keys != _metric_keys(reference) or len(keys) != len(set(keys)):
        problems.append(f"metrics.jsonl lines {keys} != {_metric_keys(reference)}")
    if list(candidate.glob(".*.tmp")):
        problems.append(f"temporaries left: {[p.name for p in candidate.glob('.*.tmp')]}")
    if not _all_finite(candidate):
        problems.append("a non-finite tensor was saved")
    return problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--kills", type=int, default=3, help="kills per trial (each at a random moment)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    chooser = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="kill_resume_"))
    recipe = work / "kill_toy.yaml"
    recipe.write_text(yaml.safe_dump(RECIPE))
    os.chdir(REPO)

    start = time.perf_counter()
    reference = work / "reference"
    subprocess.run([*_command(recipe), "--run-dir", str(reference)], check=True, env=_env(), capture_output=True)
    duration = time.perf_counter() - start
    print(f"uninterrupted run: {duration:.1f} s")

    kills = orphans = passed = 0
    for trial in range(args.trials):
        run_dir = work / f"trial{trial}"
        flags = ["--run-dir", str(run_dir)]
        returncode, stderr = None, ""
        for _ in range(args.kills):
            process = subprocess.Popen([*_command(recipe), *flags], env=_env(),
                                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            time.sleep(chooser.uniform(1.0, duration))
            if process.poll() is not None:  # finished before the kill
                returncode, stderr = process.returncode, process.stderr.read()
                break
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
            kills += 1
            orphans += bool(list(run_dir.glob(".*.tmp")))
            if (run_dir / "recipe.yaml").exists():  # killed before the pre-flight finished: start again
                flags = ["--resume", str(run_dir)]
        if returncode is None:
            result = subprocess.run([*_command(recipe), *flags], env=_env(), capture_output=True, text=True)
            returncode, stderr = result.returncode, result.stderr
        problems = [f"exit {returncode}: {stderr[-300:]}"] if returncode else []
        problems = problems or _compare(reference, run_dir)
        passed += not problems
        print(f"trial {trial}: {'ok' if not problems else '; '.join(problems)}")
    print(f"{passed}/{args.trials} trials equal to the uninterrupted run; {kills} SIGKILLs survived, "
          f"{orphans} of them inside an atomic write (orphan .tmp removed on resume)")
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
