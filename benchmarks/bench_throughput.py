"""Training throughput of ``recipes/retinaface_wider.yaml``: the data path against the model's own cost.

Three rates (images/s) side by side in one process, for the recipe's training setup (RetinaFace-mnet0.25 from
the released weights, 320 px augmented crops of the WIDER FACE train slice, batch 8, its fine-tune optimizer):

* ``step``: the full training step with the real loader (``task.train_loader``: read, augment, collate),
  forward, MultiBox loss, backward, optimizer step -- what a training phase does per batch;
* ``bare``: the same forward + backward + optimizer step on batches made beforehand (the same crops);
* ``loader``: drawing batches from the loader alone.

If ``step`` sits well below ``bare`` and ``loader`` is not far above it, the data path is the bottleneck.
Every (threads, rate) cell is measured once per round, rounds interleave the cells, and the table shows medians
(the machine is shared). ``--workers N`` builds the loader with ``N`` DataLoader worker processes.
One JSON row per invocation is appended to ``benchmarks/logs/throughput.jsonl``.

    nice -n 5 .venv/bin/python benchmarks/bench_throughput.py --threads 1,2 --rounds 7 --batches 4
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from compresskit.config import load_recipe
from compresskit.run.training import make_optimizer

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "retinaface_wider.yaml"
LOG = ROOT / "benchmarks" / "logs" / "throughput.jsonl"
KINDS = ("step", "bare", "loader")


def build(overrides: list[str], workers: int) -> tuple[Any, torch.nn.Module, Any, DataLoader, Any]:
    """``(task, model, optimizer, loader, recipe)`` as the recipe's fine-tune phase would train them."""
    from featherface.task import FeatherFaceTask

    recipe = load_recipe(RECIPE, overrides)
    task = FeatherFaceTask(**recipe.task_args)
    model = task.load_checkpoint(task.build_model(recipe.teacher.model), recipe.teacher.checkpoint)
    model.train()
    optimizer = make_optimizer(recipe.finetune)(model)
    loader = task.train_loader(recipe.finetune.batch_size)
    if workers:
        loader = DataLoader(loader.dataset, batch_size=loader.batch_size, sampler=loader.sampler,
                            collate_fn=loader.collate_fn, num_workers=workers, persistent_workers=True)
    return task, model, optimizer, loader, recipe


def endless(loader: DataLoader) -> Iterator[Any]:
    while True:
        yield from loader


def train_step(task: Any, model: torch.nn.Module, optimizer: Any, batch: Any) -> None:
    optimizer.zero_grad(set_to_none=True)
    loss, _ = task.task_loss(model(*task.inputs(batch)), batch)
    loss.backward()
    optimizer.step()


def measure(kind: str, batches: int, task: Any, model: torch.nn.Module, optimizer: Any,
            stream: Iterator[Any], made: list[Any]) -> float:
    """Images per second of ``kind`` over ``batches`` batches."""
    images = 0
    start = time.perf_counter()
    for index in range(batches):
        batch = made[index % len(made)] if kind == "bare" else next(stream)
        if kind != "loader":
            train_step(task, model, optimizer, batch)
        images += batch[0].shape[0]
    return images / (time.perf_counter() - start)


def table(medians: dict[int, dict[str, float]]) -> str:
    lines = ["| threads | step (img/s) | bare fwd+bwd+opt (img/s) | loader alone (img/s) | step / bare |",
             "|---:|---:|---:|---:|---:|"]
    for threads, row in medians.items():
        lines.append(f"| {threads} | {row['step']:.1f} | {row['bare']:.1f} | {row['loader']:.1f} | "
                     f"{row['step'] / row['bare']:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", default="1,2", help="comma list of torch thread counts")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--batches", type=int, default=4, help="batches per measurement")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="recipe override (e.g. task_args.train_size=200)")
    parser.add_argument("--tag", default="", help="a label stored with the JSON row")
    parser.add_argument("--out", type=Path, default=LOG)
    args = parser.parse_args(argv)
    thread_counts = [int(t) for t in args.threads.split(",")]
    torch.manual_seed(0)
    started = time.perf_counter()
    task, model, optimizer, loader, recipe = build(args.overrides, args.workers)
    stream = endless(loader)
    made = [next(stream) for _ in range(args.batches)]  # the bare rate's batches: the same kind of crops
    for threads in thread_counts:  # warm-up: allocator, oneDNN kernels, a loader pass
        torch.set_num_threads(threads)
        measure("step", 2, task, model, optimizer, stream, made)
    rates: dict[int, dict[str, list[float]]] = {t: {k: [] for k in KINDS} for t in thread_counts}
    for round_index in range(args.rounds):
        order = thread_counts if round_index % 2 == 0 else thread_counts[::-1]
        for threads in order:
            torch.set_num_threads(threads)
            for kind in KINDS:
                rates[threads][kind].append(measure(kind, args.batches, task, model, optimizer, stream, made))
    medians = {t: {k: statistics.median(v) for k, v in row.items()} for t, row in rates.items()}
    print(table(medians))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], check=False, cwd=ROOT, capture_output=True, text=True)
    row = {"tag": args.tag, "commit": commit.stdout.strip(), "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
           "host": platform.node(), "cpus": os.cpu_count(),
           "batch_size": recipe.finetune.batch_size, "image_size": recipe.task_args.get("image_size"),
           "train_images": len(loader.dataset), "workers": args.workers, "overrides": args.overrides,
           "rounds": args.rounds, "batches": args.batches, "median_img_per_s": medians,
           "all_img_per_s": rates, "wall_s": round(time.perf_counter() - started, 1)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("a") as handle:
        handle.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
