"""Pruning with no training at all on the released RetinaFace-mnet0.25: data-driven channel selection and
statistics correction on top of the least-squares refit (issue 20, items 1 and 2).

Uniform one-shot pruning at ``--budget`` of the parameters (one rate for every layer group, as the bench's
``uniform_fpgm``); the channels are chosen by ``--importance`` (``fpgm``, ``magnitude``, or ``output_error``:
:class:`compresskit.pruning.output_error.OutputError` on the calibration images), the kept weights refit by
``compresskit.pruning.reconstruct`` (``--intercept``: with an intercept folded into each BatchNorm), the channels
removed (verified), then ``--recalibrate-bn`` re-estimates every BatchNorm's statistics on the same images.
Calibration: ``--batches`` x 8 unlabeled training images, either augmented training crops at ``--crop`` px
(``--calibration crops``, as ``reconstruct_ablation.py``) or whole training images padded to a square and
downscaled to ``--crop`` px (``--calibration whole``, drawn by ``--seed``). AP: the official protocol on the
194 dev images at original size. Rows go to ``--out`` (JSON lines).

``--allocation global`` replaces the uniform rate by the global allocation from data (issue 20, item 4;
:mod:`compresskit.search.global_allocation`): each channel group's cumulative relative output error
(``OutputError.eliminate`` on the unpruned model) priced per layer group of the task, rates chosen greedily under
the same parameter budget; ``global-sets`` gives every channel group its own rate (within its layer group's
bounds). The channels are then the same elimination's (``--importance output_error``, not sequential).

    .venv/bin/python benchmarks/data_pruning_ablation.py --budget 0.5 --importance output_error \\
        --intercept --recalibrate-bn
    .venv/bin/python benchmarks/data_pruning_ablation.py --budget 0.5 --importance fpgm   # the old way
    .venv/bin/python benchmarks/data_pruning_ablation.py --budget 0.5 --allocation global --intercept
"""

from __future__ import annotations

import argparse
import copy
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_real_pruning as bench  # noqa: E402

from compresskit import run as pipeline  # noqa: E402
from compresskit.config import load_recipe  # noqa: E402
from compresskit.groups.find import find_groups  # noqa: E402
from compresskit.pruning.batchnorm import recalibrate_bn  # noqa: E402
from compresskit.pruning.budget import ParamPredictor, count_params  # noqa: E402
from compresskit.pruning.output_error import OutputError, SequentialSelection  # noqa: E402
from compresskit.pruning.reconstruct import reconstruct  # noqa: E402
from compresskit.pruning.soft_fpgm import SoftFPGM, remove_zeroed  # noqa: E402
from compresskit.search.global_allocation import allocate_rates, layer_group_costs, rate_levels  # noqa: E402
from featherface import models  # noqa: E402
from featherface.task import _SquareItems, layer_group_specs  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BATCH_SIZE = 8


def whole_images(overrides: list[str], count: int, size: int, seed: int) -> list[tuple[torch.Tensor]]:
    """``count`` x 8 whole training images (drawn by ``seed``), padded to a square and resized to ``size`` px."""
    task = pipeline.build_task(load_recipe(bench.RECIPE, overrides))
    items = _SquareItems(task._train, size)
    chosen = torch.randperm(len(items), generator=torch.Generator().manual_seed(seed))[:count * BATCH_SIZE]
    images = [items[int(i)][0] for i in chosen]
    return [(torch.stack(images[i:i + BATCH_SIZE]),) for i in range(0, len(images), BATCH_SIZE)]


def calibration(args: argparse.Namespace) -> list[tuple[torch.Tensor, ...]]:
    overrides = [*bench.data_overrides(args.data, args.crop), f"seed={args.seed}"]
    if args.calibration == "whole":
        return whole_images(overrides, args.batches, args.crop, args.seed)
    return bench.calibration_batches(overrides, args.batches)


def render(path: Path) -> str:
    """A markdown table of the rows in ``path``, in file order."""
    lines = ["| budget | params | selection | refit | intercept | BN recal. | calibration | AP (E / M / H) |",
             "|---:|---:|---|---|---|---|---|---|"]
    for line in path.read_text().splitlines():
        row = json.loads(line)
        selection = row["importance"] + (" (sequential)" if row.get("sequential") else "")
        if row.get("allocation", "uniform") != "uniform":
            selection += f", {row['allocation']} rates"
        if row.get("damping", 1e-2) != 1e-2:
            selection += f", damping {row['damping']:g}"
        ap = row["ap"]
        flags = " | ".join("yes" if row[key] else "no" for key in ("refit", "intercept", "recalibrate_bn"))
        lines.append(f"| {100 * row['budget']:.0f} % | {row['params']:,} | {selection} | {flags}"
                     f" | {row['images']} {row['calibration']} {row['crop']} px, seed {row['seed']}"
                     f" | {ap['easy']:.2f} / {ap['medium']:.2f} / {ap['hard']:.2f} |")
    return "\n".join(lines)


def allocate(model: torch.nn.Module, groups: list, batches: list,
             args: argparse.Namespace) -> tuple[list, dict, dict[str, torch.Tensor]]:
    """Global allocation at ``--budget``: ``(groups, {rates, predicted_params, cost}, scores per group name)``.

    ``global-sets``: every channel group becomes its own layer group (named after the group), with the bounds of the
    layer group it was in; the returned groups are then a plain list (no ``layer_groups`` table).
    """
    bounds = {spec.name: spec.bounds for spec in layer_group_specs(bench.MODEL)}
    if args.allocation == "global-sets":
        for group in groups:
            bounds[group.name] = bounds[group.layer_group]
            group.layer_group = group.name
        groups = list(groups)
        bounds = {group.name: bounds[group.name] for group in groups}
    importance = OutputError(batches, damping=args.damping)
    eliminations = [importance.eliminate(group) for group in groups]
    scores = {g.name: (e.scores if e is not None else importance(g)) for g, e in zip(groups, eliminations)}
    levels = rate_levels(groups, bounds)
    costs = layer_group_costs(groups, [getattr(e, "curve", None) for e in eliminations], levels)
    allocation = allocate_rates(levels, costs, ParamPredictor(model, groups), int(args.budget * count_params(model)))
    return groups, {"rates": allocation.rates, "predicted_params": allocation.predicted_params,
                    "cost": round(allocation.cost, 4)}, scores  # exact rates (k / C): rounding them prunes less


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--budget", type=float, default=0.5, help="fraction of the parameters kept")
    parser.add_argument("--importance", default="output_error", choices=["fpgm", "magnitude", "output_error"])
    parser.add_argument("--intercept", action="store_true", help="refit with intercepts folded into BatchNorm")
    parser.add_argument("--recalibrate-bn", action="store_true", help="re-estimate BatchNorm statistics")
    parser.add_argument("--no-refit", action="store_true", help="skip the least-squares refit")
    parser.add_argument("--allocation", default="uniform", choices=["uniform", "global", "global-sets"],
                        help="one rate for all, or rates allocated from output_error costs per layer group / per set")
    parser.add_argument("--sequential", action="store_true",
                        help="output_error on the partly pruned and refit model, group by group (SequentialSelection)")
    parser.add_argument("--calibration", default="crops", choices=["crops", "whole"])
    parser.add_argument("--crop", type=int, default=320, help="calibration image side in px")
    parser.add_argument("--batches", type=int, default=8, help="calibration batches of 8 images")
    parser.add_argument("--ridge", type=float, default=1e-2, help="refit damping towards the pruned weights")
    parser.add_argument("--damping", type=float, default=1e-2, help="output_error: damping of the Gram matrices")
    parser.add_argument("--seed", type=int, default=0, help="which calibration images")
    parser.add_argument("--eval-images", type=int, default=None, help="score only the first N dev images (smoke)")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "logs" / "data_pruning.jsonl")
    parser.add_argument("--table", action="store_true", help="print the rows of --out as a markdown table")
    args = parser.parse_args(argv)
    if args.table:
        print(render(args.out))
        return 0
    torch.set_num_threads(1)
    if args.eval_images is not None:
        bench.VAL_IMAGES = bench.first_val_images(args.data, args.eval_images, Path(tempfile.mkdtemp(prefix="val_")))
    batches = calibration(args)
    model = bench.released(args.data)
    unpruned = copy.deepcopy(model)
    example = (torch.zeros(1, 3, 640, 640),)
    groups = find_groups(model, example, layer_group_specs(bench.MODEL), protect=models.RETINAFACE_PROTECT_PATTERNS)
    rate = bench._bisect(lambda r: int(ParamPredictor(model, groups)(r)), int(args.budget * count_params(model)))
    seconds = {}
    start = time.perf_counter()
    allocated = None
    if args.allocation != "uniform":
        if args.importance != "output_error" or args.sequential:
            parser.error("--allocation global prices and selects channels by output_error (not sequential)")
        groups, allocated, scores = allocate(model, groups, batches, args)
        seconds["allocate"] = round(time.perf_counter() - start, 1)
        start = time.perf_counter()
        pruner = SoftFPGM(groups, schedule={name: (lambda epoch, r=r: r) for name, r in allocated["rates"].items()},
                          importance=lambda group: scores[group.name])
        pruner.step(0)
        reconstruct(model, unpruned, batches, on_layer_done=pruner.rezero, ridge=args.ridge,
                    intercept=args.intercept, progress=True)
        seconds["refit"] = round(time.perf_counter() - start, 1)
        pruner.apply(verify=True)
    elif args.sequential:  # selection interleaved with the refit: its time is in "refit"
        if args.importance != "output_error" or args.no_refit:
            parser.error("--sequential selects by output_error during the refit")
        selection = SequentialSelection(groups, rate, batches, damping=args.damping)
        reconstruct(model, unpruned, batches, before_layer=selection.before_layer, on_layer_done=selection.rezero,
                    ridge=args.ridge, intercept=args.intercept, progress=True)
        remove_zeroed(groups, selection.finish(), verify=True)
        seconds["refit"] = round(time.perf_counter() - start, 1)
    else:
        importance = args.importance
        if importance == "output_error":
            importance = OutputError(batches, damping=args.damping)
        pruner = SoftFPGM(groups, schedule=lambda epoch: rate, importance=importance)
        pruner.step(0)
        seconds["select"] = round(time.perf_counter() - start, 1)
        start = time.perf_counter()
        if not args.no_refit:
            reconstruct(model, unpruned, batches, on_layer_done=pruner.rezero, ridge=args.ridge,
                        intercept=args.intercept, progress=True)
        seconds["refit"] = round(time.perf_counter() - start, 1)
        pruner.apply(verify=True)
    start = time.perf_counter()
    if args.recalibrate_bn:
        recalibrate_bn(model, batches)
    seconds["recalibrate"] = round(time.perf_counter() - start, 1)
    row = {"budget": args.budget, "rate": round(rate, 4), "params": count_params(model),
           "allocation": args.allocation, **({"allocated": allocated} if allocated else {}),
           "importance": args.importance, "refit": not args.no_refit, "intercept": args.intercept,
           "recalibrate_bn": args.recalibrate_bn, "sequential": args.sequential, "calibration": args.calibration,
           "crop": args.crop,
           "images": BATCH_SIZE * args.batches, "seed": args.seed, "ridge": args.ridge,
           **({"damping": args.damping} if args.importance == "output_error" else {}),
           "eval_images": args.eval_images or 194, "seconds": seconds,
           "command": " ".join([".venv/bin/python", "benchmarks/data_pruning_ablation.py", *sys.argv[1:]]),
           "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                    text=True).stdout.strip(),
           "ap": bench.official_ap(model, args.data)}
    bench.append_row(args.out, row)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
