"""Does the gap close with more fine-tuning? Official AP along a longer fine-tune, per pruning method.

The 50 % models of ``bench_real_pruning.py`` — compresskit (its run directory's ``pruned.pt``: searched rates
+ soft FPGM, before any fine-tune), uniform one-shot FPGM and Torch-Pruning's magnitude ``MetaPruner`` — each
go through the recipe's fine-tune (``recipes/retinaface_wider.yaml``: AdamW, cosine, batch 8, 320 px crops,
the 1,008-image train slice, 1 thread, seeded as the pipeline's finetune phase) for ``--epochs`` epochs
instead of 2; the official WIDER FACE AP on the 194 dev images at original size is taken every ``--every``
epochs (and before the first). Rows go to ``--out`` (JSON lines, one per evaluation, written as they come),
the figure to ``--plot``.

    .venv/bin/python benchmarks/recovery_curve.py --epochs 12 --every 3 \\
        --compresskit-run benchmarks/logs/real_pruning_runs/compresskit_0.5
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_real_pruning as bench  # noqa: E402

from compresskit import run as pipeline  # noqa: E402
from compresskit.config import load_recipe  # noqa: E402
from compresskit.models.persist import load_pruned  # noqa: E402
from compresskit.pruning.budget import count_params  # noqa: E402
from compresskit.run.distillation import phase_training  # noqa: E402
from compresskit.run.training import train_phase  # noqa: E402
from compresskit.train import Callback, TrainState  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


class OfficialAP(Callback):
    """Every ``every`` epochs: the official AP of the model being trained, appended to ``out``."""

    def __init__(self, model: nn.Module, data: Path, every: int, record: dict[str, Any], out: Path) -> None:
        self.model, self.data, self.every, self.record, self.out = model, data, every, record, out

    def on_epoch_end(self, state: TrainState) -> None:
        if state.epoch % self.every == 0:
            self.write(state.epoch)

    def write(self, epoch: int) -> None:
        was_training = self.model.training
        start = time.perf_counter()
        ap = bench.official_ap(self.model, self.data)
        self.model.train(was_training)
        row = {**self.record, "epoch": epoch, "ap": ap, "eval_s": round(time.perf_counter() - start, 1)}
        bench.append_row(self.out, row)


def pruned_model(method: str, args: argparse.Namespace, max_params: int) -> nn.Module:
    if method == "compresskit":
        return load_pruned(args.compresskit_run / "pruned.pt", trust=[bench.BUILDER.split(":")[0]])
    example = torch.zeros(1, 3, 640, 640)
    builders = {"uniform_fpgm": bench.uniform_fpgm, "tp_magnitude": bench.tp_magnitude}
    return builders[method](args.data, max_params, example)[0]


def finetune_with_curve(model: nn.Module, method: str, args: argparse.Namespace) -> None:
    run_dir = args.work / f"recovery_{method}"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    overrides = [*bench.data_overrides(args.data), f"finetune.epochs={args.epochs}", "export.onnx=false",
                 f"run_dir={run_dir}"]
    recipe = load_recipe(bench.RECIPE, overrides)
    task = pipeline.build_task(recipe)
    ctx = pipeline.RunContext(recipe=recipe, run_dir=run_dir, task=task, log=lambda m: print(m, flush=True))
    record = {"method": method, "params": count_params(model), "epochs": args.epochs,
              "lr": recipe.finetune.lr, "batch_size": recipe.finetune.batch_size}
    curve = OfficialAP(model, args.data, args.every, record, args.out)
    curve.write(0)
    pipeline.seed_everything(pipeline.phase_seed(recipe.seed, "finetune"))
    trained, loss_fn, no_decay = phase_training(ctx, task, model, None)
    train_phase(ctx, task, "finetune", trained, loss_fn, recipe.finetune, seed=recipe.seed, callbacks=[curve],
                no_decay=no_decay)


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 3, figsize=(13, 3.8), sharex=True)
    for axis, subset in zip(axes, ("easy", "medium", "hard")):
        for method in dict.fromkeys(row["method"] for row in rows):
            points = [(row["epoch"], row["ap"][subset]) for row in rows if row["method"] == method]
            axis.plot(*zip(*points), marker="o", label=method)
        axis.axhline(bench_released_ap()[subset], color="gray", linestyle="--", label="released (unpruned)")
        axis.set_title(f"AP {subset}, 194 dev images")
        axis.set_xlabel("fine-tune epoch")
    axes[0].set_ylabel("AP (%)")
    axes[0].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def bench_released_ap() -> dict[str, float]:
    """The released RetinaFace-mnet0.25's AP as measured by ``bench_real_pruning.py`` (its unpruned row)."""
    rows = json.loads((ROOT / "benchmarks" / "logs" / "real_pruning.json").read_text())["rows"]
    return next(row["ap_finetuned"] for row in rows if row["method"] == "unpruned")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--budget", type=float, default=0.5)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--every", type=int, default=3)
    parser.add_argument("--methods", default="compresskit,uniform_fpgm,tp_magnitude")
    parser.add_argument("--compresskit-run", type=Path,
                        default=ROOT / "benchmarks" / "logs" / "real_pruning_runs" / "compresskit_0.5")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "logs" / "real_pruning_runs")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "logs" / "recovery_curve.jsonl")
    parser.add_argument("--plot", type=Path, default=ROOT / "benchmarks" / "recovery_curve.png")
    parser.add_argument("--plot-only", action="store_true")
    args = parser.parse_args(argv)
    if not args.plot_only:
        torch.set_num_threads(1)
        max_params = int(args.budget * count_params(bench.released(args.data)))
        for method in args.methods.split(","):
            finetune_with_curve(pruned_model(method, args, max_params), method, args)
    plot([json.loads(line) for line in args.out.read_text().splitlines()], args.plot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
