"""Core pruning benchmark: find_groups / prune time per zoo model, predictor call time,
and the cost of one SoftFPGM step relative to one training epoch.

Usage: ``.venv/bin/python benchmarks/bench_core.py [--repeats 5] [--no-write]``

Writes the "Core pruning" section of ``benchmarks/RESULTS.md`` (other sections untouched).
Runs with one intra-op thread (the shared CI box has 2 cores; more threads only add contention).
"""

from __future__ import annotations

import argparse
import copy
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "compresskit"))

from _results import write_section  # noqa: E402
from zoo import ZOO, ZOO_PROTECT  # noqa: E402

import compresskit as ck  # noqa: E402

SECTION = "## Core pruning"
EPOCH_IMAGES = 2048
BATCH = 64


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_models(repeats: int) -> list[str]:
    rows = [
        "| model | params | groups (skipped) | find_groups | prune 0.5 (find + step + remove) | predictor call |",
        "|---|---|---|---|---|---|",
    ]
    for name, build in ZOO.items():
        model, example = build()
        protect = ZOO_PROTECT[name]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ck.UnprunableWarning)
            groups = ck.find_groups(model, example, protect=protect)
            find = median_seconds(lambda: ck.find_groups(model, example, protect=protect), repeats)
            prune = median_seconds(
                lambda: ck.prune(copy.deepcopy(model), example, 0.5, protect=protect), repeats
            )
        predictor = ck.ParamPredictor(model, groups)
        calls = 2000
        predict = median_seconds(lambda: [predictor(0.37) for _ in range(calls)], repeats) / calls
        rows.append(
            f"| {name} | {ck.count_params(model):,} | {len(groups)} ({len(groups.skipped)}) | "
            f"{1e3 * find:.0f} ms | {1e3 * prune:.0f} ms | {1e6 * predict:.0f} µs |"
        )
    return rows


def bench_step_vs_epoch(repeats: int) -> list[str]:
    rows = [
        f"| model | one SoftFPGM step | one epoch ({EPOCH_IMAGES} images, batch {BATCH}, SGD) | step / epoch |",
        "|---|---|---|---|",
    ]
    for name in ("resnet_downsample", "mobilenetv2"):
        model, example = ZOO[name]()
        groups = ck.find_groups(model, example, protect=ZOO_PROTECT[name])
        pruner = ck.SoftFPGM(groups, ck.constant(0.4))
        step = median_seconds(lambda: pruner.step(1), repeats)

        images = torch.randn(EPOCH_IMAGES, *example.shape[1:])
        labels = torch.randint(0, 10, (EPOCH_IMAGES,))
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        loss_fn = nn.CrossEntropyLoss()

        def epoch() -> None:
            model.train()
            for start in range(0, EPOCH_IMAGES, BATCH):
                optimizer.zero_grad()
                loss_fn(model(images[start : start + BATCH]), labels[start : start + BATCH]).backward()
                optimizer.step()

        epoch_seconds = median_seconds(epoch, max(1, repeats // 2))
        rows.append(
            f"| {name} | {1e3 * step:.1f} ms | {epoch_seconds:.2f} s | {100 * step / epoch_seconds:.2f} % |"
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)

    models = bench_models(args.repeats)
    steps = bench_step_vs_epoch(args.repeats)
    text = "\n".join(
        [
            SECTION,
            "",
            f"Command: `.venv/bin/python benchmarks/bench_core.py --repeats {args.repeats}` "
            f"(median of {args.repeats} repeats, 1 intra-op thread, torch {torch.__version__}, "
            f"{platform.processor() or platform.machine()}, shared 2-core box).",
            "",
            "Per zoo model: `find_groups` (Torch-Pruning trace + our checks + the numerical soft==hard probe), "
            "one-shot `prune` at rate 0.5 (includes its own `find_groups`) and one `ParamPredictor` call.",
            "",
            *models,
            "",
            "Cost of one `SoftFPGM.step` (re-rank with FPGM + zero) relative to one training epoch. The epoch "
            f"here is deliberately small ({EPOCH_IMAGES} images at the zoo input size); a real epoch "
            "(e.g. CIFAR-10, 50 000 images) is ~25x longer, so the ratio is an upper bound.",
            "",
            *steps,
            "",
        ]
    )
    print(text)
    if not args.no_write:
        write_section(SECTION, text)


if __name__ == "__main__":
    main()
