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

Targeted kills (issue 23, item 5): the first attempt of a trial runs with a hook that SIGKILLs the
process at one named point, on its N-th occurrence, then the run is resumed to the end (``--points``):

* ``checkpoint``: inside the write of an epoch checkpoint (``*.last.pt``: half its bytes written);
* ``search_between``: right after the search history records a trial;
* ``search_inside``: inside a search trial (while its candidate is pruned);
* ``export``: inside the write of ``model.onnx`` (the temporary file holds the model, not renamed);
* ``quantize``: inside the write of ``model.int8.onnx`` (the recipe enables ``quantize``).

A targeted trial that ends without its kill (the point was never reached) is reported, not counted.

Usage::

    .venv/bin/python benchmarks/kill_resume.py --trials 8 --kills 3 --seed 0
    .venv/bin/python benchmarks/kill_resume.py --trials 4 --kills 3 --seed 2 --points all
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
    "quantize": {"enabled": True, "calibration_samples": 4},
    "profiles": {},
}

#: Targeted kill points and the occurrences tried (see the module docstring).
POINTS = {"checkpoint": (1, 4, 9), "search_between": (1, 2), "search_inside": (1, 3), "export": (1,),
          "quantize": (1,)}


def _kill_self() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _install_kill(point: str, occurrence: int) -> None:
    """Make this process SIGKILL itself at the ``occurrence``-th ``point`` (inside the run's own code)."""
    import io

    import compresskit.deploy._onnx_export as onnx_export
    import compresskit.deploy.quantize as quantize
    import compresskit.pruning.soft_fpgm as soft_fpgm
    import compresskit.search.bayesian as bayesian
    import compresskit.utils.atomic as atomic

    seen = [0]

    def due() -> bool:
        seen[0] += 1
        return seen[0] == occurrence

    def wrap(module, name, before=False, when=lambda *args: True):
        original = getattr(module, name)

        def hooked(*args, **kwargs):
            if before and when(*args) and due():
                _kill_self()
            result = original(*args, **kwargs)
            if not before and when(*args) and due():
                _kill_self()
            return result

        setattr(module, name, hooked)

    if point == "checkpoint":
        save = torch.save

        def half_then_kill(obj, handle, *args, **kwargs):
            if ".last.pt." in str(getattr(handle, "name", "")) and due():
                buffer = io.BytesIO()
                save(obj, buffer, *args, **kwargs)
                handle.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
                handle.flush()
                _kill_self()
            return save(obj, handle, *args, **kwargs)

        atomic.torch.save = half_then_kill
    elif point == "search_between":
        wrap(bayesian, "atomic_write_text")
    elif point == "search_inside":
        wrap(soft_fpgm, "prune", before=True)  # the search imports it per run
    elif point == "export":
        wrap(onnx_export, "_write_onnx", when=lambda model, inputs, path, *rest: Path(path).name.startswith(".model.onnx."))
    elif point == "quantize":
        wrap(quantize, "write_metadata")
    else:
        raise ValueError(f"unknown kill point {point!r}; valid: {sorted(POINTS)}")


def _command(recipe: Path, kill_at: str | None = None) -> list[str]:
    if kill_at is None:
        return [sys.executable, "-m", "compresskit.cli", "run", str(recipe)]
    return [sys.executable, str(Path(__file__).resolve()), "--child", kill_at, "run", str(recipe)]


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
    for name in ("model.onnx", "model.fp32.onnx", "model.int8.onnx"):
        if (reference / name).read_bytes() != (candidate / name).read_bytes():
            problems.append(f"{name} differs")
    keys = _metric_keys(candidate)
    if keys != _metric_keys(reference) or len(keys) != len(set(keys)):
        problems.append(f"metrics.jsonl lines {keys} != {_metric_keys(reference)}")
    if list(candidate.glob(".*.tmp")):
        problems.append(f"temporaries left: {[p.name for p in candidate.glob('.*.tmp')]}")
    if not _all_finite(candidate):
        problems.append("a non-finite tensor was saved")
    return problems


def _finish(recipe: Path, flags: list[str], reference: Path, run_dir: Path) -> list[str]:
    """Resume ``run_dir`` to the end; the problems against the uninterrupted run."""
    result = subprocess.run([*_command(recipe), *flags], env=_env(), capture_output=True, text=True)
    if result.returncode:
        return [f"exit {result.returncode}: {result.stderr[-300:]}"]
    return _compare(reference, run_dir)


def _random_trial(recipe: Path, run_dir: Path, kills: int, duration: float, chooser: random.Random,
                  reference: Path) -> tuple[list[str], int, int]:
    """Kill at random moments up to ``kills`` times, resume to the end: ``(problems, kills, orphans)``."""
    flags, killed, orphans = ["--run-dir", str(run_dir)], 0, 0
    for _ in range(kills):
        process = subprocess.Popen([*_command(recipe), *flags], env=_env(),
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        time.sleep(chooser.uniform(1.0, duration))
        if process.poll() is not None:  # finished before the kill
            stderr = process.stderr.read()
            return ([f"exit {process.returncode}: {stderr[-300:]}"] if process.returncode
                    else _compare(reference, run_dir)), killed, orphans
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        killed += 1
        orphans += bool(list(run_dir.glob(".*.tmp")))
        if (run_dir / "recipe.yaml").exists():  # killed before the pre-flight finished: start again
            flags = ["--resume", str(run_dir)]
    return _finish(recipe, flags, reference, run_dir), killed, orphans


def _targeted_trial(recipe: Path, run_dir: Path, point: str, occurrence: int,
                    reference: Path) -> tuple[list[str], bool, bool]:
    """SIGKILL at ``point`` #``occurrence``, resume to the end: ``(problems, killed, orphan left)``."""
    result = subprocess.run([*_command(recipe, f"{point}:{occurrence}"), "--run-dir", str(run_dir)], env=_env(),
                            capture_output=True, text=True)
    if result.returncode != -signal.SIGKILL:
        return ([f"exit {result.returncode}: {result.stderr[-300:]}"] if result.returncode
                else _compare(reference, run_dir)), False, False
    orphan = bool(list(run_dir.glob(".*.tmp")))
    return _finish(recipe, ["--resume", str(run_dir)], reference, run_dir), True, orphan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8, help="trials killed at random moments")
    parser.add_argument("--kills", type=int, default=3, help="kills per random trial (each at a random moment)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--points", default="", help=f"'all' or a comma list of {sorted(POINTS)}: targeted trials")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)  # POINT:N, then compresskit's arguments
    args, rest = parser.parse_known_args()
    if args.child is not None:  # a run with a kill hook installed
        point, occurrence = args.child.split(":")
        _install_kill(point, int(occurrence))
        from compresskit.cli import cli

        cli(rest)
        return
    points = sorted(POINTS) if args.points == "all" else [p for p in args.points.split(",") if p]
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

    kills = orphans = passed = trials = 0
    for trial in range(args.trials):
        problems, killed, orphaned = _random_trial(recipe, work / f"trial{trial}", args.kills, duration, chooser,
                                                   reference)
        kills, orphans, passed, trials = kills + killed, orphans + orphaned, passed + (not problems), trials + 1
        print(f"random trial {trial} ({killed} kills): {'ok' if not problems else '; '.join(problems)}")
    unreached = []
    for point in points:
        for occurrence in POINTS[point]:
            run_dir = work / f"{point}{occurrence}"
            problems, killed, orphaned = _targeted_trial(recipe, run_dir, point, occurrence, reference)
            if not killed and not problems:
                unreached.append(f"{point}:{occurrence}")
                print(f"{point} #{occurrence}: never reached (ran to the end unkilled)")
                continue
            kills, orphans, passed, trials = kills + killed, orphans + orphaned, passed + (not problems), trials + 1
            print(f"{point} #{occurrence}: {'ok' if not problems else '; '.join(problems)}"
                  + (" (orphan .tmp removed on resume)" if orphaned else ""))
    print(f"{passed}/{trials} trials equal to the uninterrupted run; {kills} SIGKILLs survived, "
          f"{orphans} of them inside an atomic write (orphan .tmp removed on resume)"
          + (f"; never reached: {', '.join(unreached)}" if unreached else ""))
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
