"""Least-squares reconstruction on the released RetinaFace-mnet0.25: what it recovers with no training at all.

Uniform one-shot FPGM at ``--budget`` of the parameters (the bench's ``uniform_fpgm``), then
``compresskit.pruning.reconstruct`` on ``--batches`` x 8 unlabeled training images augmented like the recipe's
training crops at ``--crop`` px, then removal; the official AP on the 194 dev images at original size.
``--from-soft RUN`` instead starts from a run directory's ``soft_pruned.pt`` (a student soft-pruned *with
training*) and refits it to the released model before removal: the case the recipe refuses.
``--batches 0`` gives the row without reconstruction. Rows go to ``--out`` (JSON lines).

    .venv/bin/python benchmarks/reconstruct_ablation.py --budget 0.7 --crop 320 --batches 8
    .venv/bin/python benchmarks/reconstruct_ablation.py --from-soft benchmarks/logs/real_pruning_runs/compresskit_0.5
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_real_pruning as bench  # noqa: E402

from compresskit.groups.find import find_groups  # noqa: E402
from compresskit.pruning.budget import ParamPredictor, count_params  # noqa: E402
from compresskit.pruning.reconstruct import reconstruct  # noqa: E402
from compresskit.pruning.soft_fpgm import SoftFPGM, remove_zeroed  # noqa: E402
from featherface import models  # noqa: E402
from featherface.task import layer_group_specs  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def soft_zeroed(args: argparse.Namespace, example: torch.Tensor) -> tuple[torch.nn.Module, list, list]:
    """``(model, groups, zeroed per group)``: uniform FPGM at the budget, or a run's ``soft_pruned.pt``."""
    model = bench.released(args.data)
    groups = find_groups(model, (example,), layer_group_specs(bench.MODEL), protect=models.RETINAFACE_PROTECT_PATTERNS)
    if args.from_soft is not None:
        payload = torch.load(args.from_soft / "soft_pruned.pt", weights_only=True)
        model.load_state_dict(payload["state_dict"])
        return model, groups, [payload["zeroed"][group.name] for group in groups]
    rate = bench._bisect(lambda r: int(ParamPredictor(model, groups)(r)), int(args.budget * count_params(model)))
    pruner = SoftFPGM(groups, schedule=lambda epoch: rate)
    pruner.step(0)
    return model, groups, pruner.zeroed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--budget", type=float, default=0.7)
    parser.add_argument("--crop", type=int, default=320, help="calibration crop side (the recipe trains at 320)")
    parser.add_argument("--batches", type=int, default=8, help="calibration batches of 8 images (0: none)")
    parser.add_argument("--from-soft", type=Path, default=None)
    parser.add_argument("--ridge", type=float, default=1e-2, help="damping towards the pruned weights")
    parser.add_argument("--seed", type=int, default=0, help="which calibration images (the recipe's seed)")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "logs" / "reconstruct_ablation.jsonl")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    model, groups, zeroed = soft_zeroed(args, torch.zeros(1, 3, 640, 640))
    overrides = [*bench.data_overrides(args.data, args.crop), f"seed={args.seed}"]
    start = time.perf_counter()
    if args.batches:
        def rezero() -> None:
            for group, removed in zip(groups, zeroed):
                group.zero_(removed)

        reconstruct(model, bench.released(args.data), bench.calibration_batches(overrides, args.batches),
                    on_layer_done=rezero, ridge=args.ridge, progress=True)
    seconds = round(time.perf_counter() - start, 1)
    remove_zeroed(groups, zeroed, verify=True)
    row = {"start": str(args.from_soft) if args.from_soft else f"uniform_fpgm {args.budget}",
           "params": count_params(model), "crop": args.crop, "images": 8 * args.batches,
           "seed": args.seed, "ridge": args.ridge,
           "reconstruct_s": seconds, "ap": bench.official_ap(model, args.data)}
    bench.append_row(args.out, row)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
