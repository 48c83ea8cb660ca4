"""Recovery that does no harm: the released RetinaFace-mnet0.25 through the fine-tune, label loss vs feature KD.

A recovery fine-tune must not damage a model that needs no recovery (issue 20, item 3: the unpruned model
loses <= 0.5 AP). The released weights go, unpruned, through ``recipes/retinaface_wider.yaml``'s fine-tune
(``compresskit.run.finetune_model``: the recipe's ``finetune`` section -- AdamW lr 5e-4, batch 8, 320 px crops
of the 1,008 train images, 6 epochs today, 2 when the first rows of ``recovery.jsonl`` were measured (each row
holds its ``finetune_epochs``) -- 1 thread, seeded as the pipeline's finetune phase) under each ``--configs`` entry, and are scored
with the official protocol on the 194 dev images at original size:

* ``released``: no fine-tune (the reference).
* ``label``: the recipe's fine-tune as it is (MultiBox loss on the labels, BatchNorm training).
* ``kd``: label-free: ``distill.phases=[finetune]``, ``alpha: 1`` (no label loss), output KD plus feature KD
  on ``FEATURES`` (``distill.features``), BatchNorm frozen (``distill.freeze_bn``), no weight decay.
* ``kd_decay``: ``kd`` with the recipe's weight decay (1e-4): does AdamW's decay move the fixed point?
* ``kd_train_bn``: ``kd`` with BatchNorm training (batch statistics of 320 px crops vs the teacher's
  running statistics).

``--start uniform_fpgm:0.5`` starts every configuration instead from the released model one-shot pruned to
half its parameters (uniform FPGM, no refit, as ``bench_real_pruning.py``'s ``uniform_fpgm``), the feature
term matched on the kept channels (:func:`compresskit.distill.match_kept_channels`, as the remove phase).
``--start RUN_DIR`` starts from a run's removal (``RUN_DIR/pruned.pt`` and its ``kept_channels.json``), e.g. the
shipped recipe's, to compare recoveries of the very model the recipe fine-tunes:

    .venv/bin/python benchmarks/bench_recovery.py --start runs/retinaface_wider --configs kd,kd_12ep

Each row (one JSON line per configuration, appended to ``--out``) holds the AP, the fine-tune seconds and
the largest relative weight change against the released model (0.0: the recovery left the model exactly
as it was).

    nice -n 5 .venv/bin/python benchmarks/bench_recovery.py --configs released,label,kd,kd_train_bn
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_real_pruning as bench

from compresskit import run as pipeline
from compresskit.config import load_recipe
from compresskit.distill import find_modules, match_kept_channels
from compresskit.groups.surgery import ChannelOp, zero_channels
from featherface import models

ROOT = Path(__file__).resolve().parents[1]

#: RetinaFace's FPN outputs, SSH outputs and head convs (``distill.features`` globs).
FEATURES = ["fpn.output3", "fpn.merge?", "ssh?", "*Head.?.conv1x1"]
KD = ["distill.phases=[finetune]", "distill.alpha=1.0", f"distill.features={json.dumps(FEATURES)}",
      "distill.freeze_bn=true", "finetune.weight_decay=0.0"]

#: Configuration name -> recipe overrides of the fine-tune (``None``: no fine-tune).
CONFIGS: dict[str, list[str] | None] = {
    "released": None,
    "label": [],
    "kd": KD,
    "kd_decay": [*KD, "finetune.weight_decay=1.0e-4"],
    "kd_train_bn": [*KD, "distill.freeze_bn=false"],
    # recovery length and step size from the recipe's pruned model (--start RUN_DIR)
    "kd_12ep": [*KD, "finetune.epochs=12"],
    "kd_lr1e-3": [*KD, "finetune.lr=1.0e-3"],
    "kd_crop480": [*KD, "task_args.image_size=480"],
    "kd_crop640_3ep": [*KD, "task_args.image_size=640", "finetune.epochs=3"],
    "kd_teacher_masks": [*KD, "distill.masks=teacher"],  # no label read at all
}


def largest_change(model: nn.Module, reference: nn.Module) -> float:
    """The largest change of any float parameter or buffer, relative to that tensor's largest magnitude in
    ``reference`` (0.0: the model is exactly the reference)."""
    ours, theirs = model.state_dict(), reference.state_dict()
    return max(float((ours[key] - theirs[key]).abs().max() / theirs[key].abs().max().clamp_min(1e-12))
               for key in ours if theirs[key].is_floating_point())


def pruned_start(data: Path, budget: float) -> tuple[nn.Module, dict[str, list[int]]]:
    """The released model one-shot pruned (uniform FPGM) to ``budget`` of its parameters, and the kept
    channels of the distilled modules."""
    example = torch.randn(1, 3, 320, 320, generator=torch.Generator().manual_seed(0)) * 50
    model, _ = bench.uniform_fpgm(data, int(budget * bench.count_params(bench.released(data))), example)
    ops = [ChannelOp.from_list(op) for op in model.compresskit_history[-1]]
    soft = bench.released(data)
    zero_channels(soft, ops)
    return model, match_kept_channels(soft, model, (example,), ops, find_modules(soft, FEATURES))


def run_start(run_dir: Path) -> tuple[nn.Module, dict[str, list[int]] | None]:
    """A run's removal: ``pruned.pt`` and the kept channels of its ``kept_channels.json`` (if written)."""
    from compresskit.models.persist import load_pruned

    kept_file = run_dir / "kept_channels.json"
    kept = json.loads(kept_file.read_text())["kept"] if kept_file.exists() else None
    return load_pruned(run_dir / "pruned.pt"), kept


def finetune(model: nn.Module, overrides: list[str], kept: dict[str, list[int]] | None) -> tuple[float, int]:
    """``bench_real_pruning.finetune`` with the removal's ``kept_channels.json`` in the run directory; seconds
    and epochs."""
    run_dir = Path(tempfile.mkdtemp(prefix="recovery_"))
    recipe = load_recipe(bench.RECIPE, [*overrides, f"run_dir={run_dir}"])
    ctx = pipeline.RunContext(recipe=recipe, run_dir=run_dir, task=pipeline.build_task(recipe),
                              log=lambda message: print(message, flush=True))
    if "finetune" in recipe.distill.phases:  # distil from the released model
        torch.save(models.build_model(bench.MODEL, weights=Path(recipe.teacher.checkpoint)).state_dict(),
                   run_dir / "teacher.pt")
    if kept:
        (run_dir / "kept_channels.json").write_text(json.dumps({"kept": kept}))
    pipeline.seed_everything(pipeline.phase_seed(recipe.seed, "finetune"))
    start = time.perf_counter()
    pipeline.finetune_model(ctx, model, evaluate=False)
    return round(time.perf_counter() - start, 1), recipe.finetune.epochs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--configs", default="released,label,kd", help=f"comma-separated, of {sorted(CONFIGS)}")
    parser.add_argument("--set", dest="extra", action="append", default=[], metavar="KEY=VALUE",
                        help="a recipe override for every fine-tune (e.g. finetune.epochs=1)")
    parser.add_argument("--train-size", type=int, default=None, help="first N train images (default: all 1,008)")
    parser.add_argument("--eval-images", type=int, default=None, help="score only the first N dev images (smoke)")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--start", default="released", help="released, uniform_fpgm:BUDGET (e.g. 0.5), or a run directory (its pruned.pt)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "logs" / "recovery.jsonl")
    args = parser.parse_args(argv)
    names = args.configs.split(",")
    unknown = sorted(set(names) - set(CONFIGS))
    if unknown:
        parser.error(f"unknown configs {unknown}; valid: {sorted(CONFIGS)}")
    torch.set_num_threads(1)
    if args.eval_images is not None:
        bench.VAL_IMAGES = bench.first_val_images(args.data, args.eval_images, Path(tempfile.mkdtemp(prefix="val_")))
    budget = float(args.start.split(":")[1]) if args.start.startswith("uniform_fpgm:") else None
    for name in names:
        if budget is not None:
            model, kept = pruned_start(args.data, budget)
        elif args.start != "released":
            model, kept = run_start(Path(args.start))
        else:
            model, kept = bench.released(args.data), None
        reference = copy.deepcopy(model)
        overrides = CONFIGS[name]
        row = {"config": name, "start": args.start, "set": [*(overrides or []), *args.extra],
               "train_size": args.train_size, "eval_images": args.eval_images, "params": bench.count_params(model)}
        if overrides is not None:
            base = [*bench.data_overrides(args.data, train_size=args.train_size), "export.onnx=false"]
            row["finetune_s"], row["finetune_epochs"] = finetune(model, [*base, *overrides, *args.extra], kept)
            row["max_relative_change"] = largest_change(model, reference)
        start = time.perf_counter()
        row["ap"] = bench.official_ap(model, args.data)
        row["eval_s"] = round(time.perf_counter() - start, 1)
        bench.append_row(args.out, row)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
