"""Real faces: how much accuracy survives when a trained detector is pruned (WIDER FACE).

The released RetinaFace-mnet0.25 (426,608 params) is pruned to a fraction of its parameters three ways,
each followed by the *same* fine-tune (``compresskit.run.finetune_model`` with the recipe's
``finetune`` config: same epochs, data, crop size, seed, learning rate):

* ``compresskit`` -- ``recipes/retinaface_wider.yaml`` run by the pipeline up to ``remove``: student
  inherits the released weights, per-layer-group rates searched (BoTorch) under the budget with the
  MultiBox loss on held-out *train* images, soft FPGM with distillation from the unpruned model.
* ``uniform_fpgm`` -- one-shot FPGM (compresskit ``prune``) with one rate for every layer group, the
  largest parameter count within the budget.
* ``tp_magnitude`` -- Torch-Pruning's ``MetaPruner`` with ``MagnitudeImportance`` (L2), local, one
  pruning ratio for every layer (head outputs ignored), bisected to the budget.
* ``compresskit_ls`` -- the same recipe with one-shot pruning at the searched rates instead of the soft
  phase, then least-squares reconstruction of the kept weights (``prune.schedule.epochs=0``,
  ``prune.reconstruct``: 8 unlabeled training batches of 8 images; :mod:`compresskit.pruning.reconstruct`).
* ``uniform_fpgm_ls`` -- ``uniform_fpgm`` followed by the same reconstruction (``prune(..., calibration=)``).
* ``unpruned_finetuned`` (``--methods unpruned_finetuned --budgets 1.0``) -- control: the released
  model through the same fine-tune, to show what the short CPU fine-tune alone does to it.

Every AP is measured at each val image's original size on the dev images with the official protocol
(``featherface.detect.evaluate_widerface``, the code behind ``compresskit evaluate``), right
after removal and after the fine-tune. Latency: ONNX Runtime, 640x640, 1 thread, median of 20 right after
each model; ``--latency FILE`` re-times every row's architecture with all models interleaved in the same
minutes (the comparable figure on a shared machine). ``--featherface`` runs the two FeatherFace paths of
``recipes/featherface_wider.yaml`` (V1 -> Nano-B inheriting V1's backbone; V1 pruned) to 120K-180K params.

Rows are written to ``--out`` (JSON) as each model finishes, so a crash loses no finished row;
``--table`` prints the markdown table of a results file.

Usage::

    .venv/bin/python benchmarks/bench_real_pruning.py --out benchmarks/logs/real_pruning.json \\
        --budgets 0.5,0.7,0.35 [--train-size N] [--finetune-epochs E] [--soft-epochs S] [--trials T]
    .venv/bin/python benchmarks/bench_real_pruning.py --featherface --out ... [--train-size N] [--distill-epochs D]
    .venv/bin/python benchmarks/bench_real_pruning.py --latency benchmarks/logs/real_pruning.json
    .venv/bin/python benchmarks/bench_real_pruning.py --table benchmarks/logs/real_pruning.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

from compresskit import run as pipeline  # noqa: E402
from compresskit.config import load_recipe  # noqa: E402
from compresskit.deploy.benchmark import measure, ort_runner  # noqa: E402
from compresskit.deploy.export import export_onnx  # noqa: E402
from compresskit.groups.find import find_groups  # noqa: E402
from compresskit.models.persist import load_pruned  # noqa: E402
from compresskit.pruning.budget import ParamPredictor, count_macs, count_params  # noqa: E402
from compresskit.pruning.soft_fpgm import prune  # noqa: E402
from featherface import models  # noqa: E402
from featherface.data.widerface import BGR_MEAN  # noqa: E402
from featherface.detect import evaluate_widerface  # noqa: E402
from featherface.task import layer_group_specs  # noqa: E402

RECIPE = ROOT / "recipes" / "retinaface_wider.yaml"
FEATHERFACE_RECIPE = ROOT / "recipes" / "featherface_wider.yaml"
BUILDER = "featherface.models:build_model"
MODEL = "retinaface_mnet025"
YUNET_N = "YuNet-n"
#: YuNet-n's AP on the same 194 dev images, from its own evaluation (``../shared/data/README.md``): this bench
#: times it but cannot score it (no YuNet decoder here).
YUNET_N_AP = {"ap": {"easy": 88.93, "medium": 87.00, "hard": 82.47}, "ap_source": "../shared/data/README.md"}


# --------------------------------------------------------------------------------------------
# measurements


VAL_IMAGES: Path | None = None  # set by main(): WIDER_val/images, or a folder linking its first N images


def official_ap(model: nn.Module, data: Path) -> dict[str, float]:
    """AP easy / medium / hard (percent) on ``VAL_IMAGES`` at original size, official protocol."""
    ap = evaluate_widerface(model.eval(), VAL_IMAGES or data / "widerface" / "WIDER_val" / "images",
                            data / "widerface" / "ground_truth", progress=False)
    return {subset: round(100 * value, 2) for subset, value in ap.items()}


def append_row(path: Path, row: dict[str, Any]) -> None:
    """Print ``row`` and append it to the JSON-lines log ``path`` (the ablation scripts beside this bench)."""
    print(json.dumps(row), flush=True)
    with path.open("a") as file:
        file.write(json.dumps(row) + "\n")


def first_val_images(data: Path, count: int, folder: Path) -> Path:
    """A folder of links to the first ``count`` val images (sorted), in the ``<event>/<image>`` layout."""
    paths = sorted((data / "widerface" / "WIDER_val" / "images").glob("*/*.jpg"))[:count]
    for path in paths:
        link = folder / path.parent.name / path.name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(path.resolve())
    return folder


def _latency_image() -> np.ndarray:
    """The input every latency here is timed on: float32[1, 3, 640, 640] uniform noise (seed 0) minus the BGR mean."""
    image = np.random.default_rng(0).uniform(0, 255, (1, 3, 640, 640)).astype(np.float32)
    return image - np.array(BGR_MEAN, dtype=np.float32).reshape(1, 3, 1, 1)


def ort_latency_ms(model: nn.Module, repeats: int = 20) -> float:
    """Median ONNX Runtime latency (ms) at 640x640, 1 intra-op thread (``compresskit.deploy.benchmark.measure``)."""
    image = _latency_image()
    with tempfile.TemporaryDirectory() as tmp:
        path = export_onnx(model.eval(), (torch.from_numpy(image),), Path(tmp) / "model.onnx")
        latency = measure({"model": ort_runner(path, [image], threads=1)}, warmup=3, rounds=repeats)["model"]
    return round(latency.median_ms, 2)


def size_row(model: nn.Module) -> dict[str, Any]:
    return {"params": count_params(model),
            "macs_g": round(count_macs(model.eval(), (torch.zeros(1, 3, 640, 640),)) / 1e9, 3),
            "ort_ms_640_1t": ort_latency_ms(model)}


# --------------------------------------------------------------------------------------------
# results file


class Results:
    """The JSON results file, rewritten atomically after every row."""

    def __init__(self, path: Path, config: dict[str, Any]) -> None:
        self.path = path
        self.data: dict[str, Any] = {"runs": [], "rows": []}
        if path.exists():  # rows of earlier invocations are kept, each with the index of its run
            previous = json.loads(path.read_text())
            self.data["runs"] = previous.get("runs") or [previous["config"]]
            self.data["rows"] = previous.get("rows", [])
        self.data["runs"].append(config)
        self.write()

    def done(self, method: str, budget: float | None, seed: int = 0) -> bool:
        return any(r["method"] == method and r.get("budget") == budget and r.get("seed", 0) == seed
                   for r in self.data["rows"])

    def add(self, row: dict[str, Any]) -> None:
        self.data["rows"].append({**row, "run": len(self.data["runs"]) - 1})
        self.write()
        print(f"ROW {json.dumps(row)}", flush=True)

    def write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text(json.dumps(self.data, indent=1) + "\n")
        os.replace(tmp, self.path)


# --------------------------------------------------------------------------------------------
# pruning methods: each returns (pruned model, details)


def data_overrides(data: Path, crop: int = 320, train_size: int | None = None) -> list[str]:
    """Recipe overrides every real-faces run shares: 1 thread, crop size, the shared slice, the released weights.

    ``task_args.val_size=2`` keeps the pipeline's own per-phase evaluations cheap; the AP reported here is
    :func:`official_ap` on all dev images.
    """
    widerface = data / "widerface"
    return ["threads=1", f"task_args.image_size={crop}",
            f"task_args.train_size={'null' if train_size is None else train_size}", "task_args.val_size=2",
            f"task_args.train_labels={widerface}/retinaface_labels/train_label.txt",
            f"task_args.train_images={widerface}/WIDER_train/images",
            f"task_args.val_labels={widerface}/retinaface_labels/val_label.txt",
            f"task_args.val_images={widerface}/WIDER_val/images", f"task_args.gt_dir={widerface}/ground_truth",
            f"teacher.checkpoint={data}/weights/retinaface_mnet025_official.pth"]


def released(data: Path) -> nn.Module:
    return models.build_model(MODEL, weights=data / "weights" / "retinaface_mnet025_official.pth")


def _bisect(params_at: Callable[[float], int], max_params: int, high: float = 0.95) -> float:
    """Smallest rate in [0, high] whose parameter count is <= ``max_params`` (counts fall with the rate)."""
    low = 0.0
    for _ in range(14):
        middle = (low + high) / 2
        if params_at(middle) <= max_params:
            high = middle
        else:
            low = middle
    return high


def uniform_fpgm(data: Path, max_params: int, example: torch.Tensor) -> tuple[nn.Module, dict[str, Any]]:
    model = released(data)
    groups = find_groups(model, (example,), layer_group_specs(MODEL), protect=models.RETINAFACE_PROTECT_PATTERNS)
    predictor = ParamPredictor(model, groups)
    rate = _bisect(lambda r: int(predictor(r)), max_params)
    prune(model, (example,), rate, groups=groups, importance="fpgm")
    return model, {"rate": round(rate, 4)}


def calibration_batches(overrides: Sequence[str], count: int = 8, batch_size: int = 8) -> list[tuple[torch.Tensor, ...]]:
    """The first ``count`` training batches of the recipe's task (seeded like the recipe), inputs only."""
    recipe = load_recipe(RECIPE, list(overrides))
    task = pipeline.build_task(recipe)
    with torch.random.fork_rng():  # the augmentation draws from the global generator: same images every call
        torch.manual_seed(recipe.seed)
        loader = task.train_loader(batch_size, seed=recipe.seed)
        return [task.inputs(batch) for _, batch in zip(range(count), loader)]


def uniform_fpgm_ls(data: Path, max_params: int, example: torch.Tensor,
                    overrides: Sequence[str]) -> tuple[nn.Module, dict[str, Any]]:
    """``uniform_fpgm`` with least-squares reconstruction on 8 unlabeled training batches before removal."""
    model = released(data)
    groups = find_groups(model, (example,), layer_group_specs(MODEL), protect=models.RETINAFACE_PROTECT_PATTERNS)
    predictor = ParamPredictor(model, groups)
    rate = _bisect(lambda r: int(predictor(r)), max_params)
    prune(model, (example,), rate, groups=groups, importance="fpgm", calibration=calibration_batches(overrides))
    return model, {"rate": round(rate, 4)}


ONE_SHOT_LS = ["prune.schedule.epochs=0", "prune.schedule.end=null", "prune.schedule.kind=constant",
               "prune.reconstruct.batches=8"]


def tp_magnitude(data: Path, max_params: int, example: torch.Tensor) -> tuple[nn.Module, dict[str, Any]]:
    import torch_pruning as tp

    def pruned_at(ratio: float) -> nn.Module:
        model = released(data)
        heads = [m for name, m in model.named_modules() if name.endswith("conv1x1")]  # the outputs
        pruner = tp.pruner.MetaPruner(model, example, importance=tp.importance.MagnitudeImportance(p=2),
                                      pruning_ratio=ratio, ignored_layers=heads)
        pruner.step()
        return model

    ratio = _bisect(lambda r: count_params(pruned_at(r)), max_params)
    model = pruned_at(ratio)
    shapes = [tuple(o.shape) for o in model.eval()(example)]
    reference = [tuple(o.shape) for o in released(data).eval()(example)]
    if shapes != reference:  # Torch-Pruning must not touch the detection outputs
        raise RuntimeError(f"Torch-Pruning changed the outputs: {shapes} vs {reference}")
    return model, {"ratio": round(ratio, 4)}


def compresskit_pipeline(overrides: Sequence[str], run_dir: Path) -> tuple[nn.Module, dict[str, Any]]:
    """``recipes/retinaface_wider.yaml`` up to ``remove``; returns the pruned model and phase timings."""
    if run_dir.exists():
        shutil.rmtree(run_dir)
    recipe = load_recipe(RECIPE, [*overrides, f"run_dir={run_dir}"])
    ctx = pipeline.run(recipe, stop_after="remove", log=lambda m: print(m, flush=True))
    phases = ctx.state["phases"]
    model = load_pruned(ctx.path("pruned.pt"), trust=[BUILDER])
    return model, {"rates": {k: round(v, 3) for k, v in phases["search"]["rates"].items()},
                   "search_trials": phases["search"].get("trials"),
                   "seconds": {name: phases[name]["seconds"] for name in ("search", "soft_prune")},
                   **({"reconstruction": phases["soft_prune"]["reconstruction"]}
                      if "reconstruction" in phases["soft_prune"] else {}),
                   "distill_start": phases["distill"].get("start")}


def featherface_path(profile: str | None, overrides: Sequence[str], run_dir: Path) -> tuple[nn.Module, nn.Module,
                                                                                             dict[str, Any]]:
    """``recipes/featherface_wider.yaml`` (Nano-B path, or ``v1_pruned``) up to ``finetune``:
    ``(pruned model before fine-tune, final model, details)``."""
    if run_dir.exists():
        shutil.rmtree(run_dir)
    recipe = load_recipe(FEATHERFACE_RECIPE, [*overrides, f"run_dir={run_dir}"], profile=profile)
    ctx = pipeline.run(recipe, stop_after="finetune", log=lambda m: print(m, flush=True))
    phases = ctx.state["phases"]
    seconds = {name: phases[name]["seconds"] for name in ("distill", "search", "soft_prune", "finetune")}
    return (load_pruned(ctx.path("pruned.pt"), trust=[BUILDER]), load_pruned(ctx.path("final.pt"), trust=[BUILDER]),
            {"rates": {k: round(v, 3) for k, v in phases["search"]["rates"].items()},
             "distill_start": phases["distill"].get("start"), "seconds": seconds,
             "prune_seconds": round(sum(seconds.values()) - seconds["finetune"], 1),
             "finetune_seconds": seconds["finetune"]})


def schedule_overrides(args: argparse.Namespace) -> list[str]:
    """``--finetune-epochs`` / ``--soft-epochs`` / ``--trials`` as recipe overrides (the recipe's own when unset)."""
    overrides = [] if args.finetune_epochs is None else [f"finetune.epochs={args.finetune_epochs}"]
    if args.soft_epochs is not None:
        overrides += [f"prune.schedule.epochs={args.soft_epochs}", f"prune.schedule.end={max(1, args.soft_epochs - 1)}"]
    if args.trials is not None:
        initial = max(2, args.trials // 2)
        overrides += [f"search.initial_points={initial}", f"search.iterations={max(0, args.trials - initial)}"]
    return overrides


def run_featherface(args: argparse.Namespace, results: Results, data: Path) -> None:
    overrides = [
        "threads=1", f"task_args.image_size={args.crop}",
        f"task_args.train_size={'null' if args.train_size is None else args.train_size}", "task_args.val_size=2",
        f"task_args.train_labels={data}/widerface/retinaface_labels/train_label.txt",
        f"task_args.train_images={data}/widerface/WIDER_train/images",
        f"task_args.val_labels={data}/widerface/retinaface_labels/val_label.txt",
        f"task_args.val_images={data}/widerface/WIDER_val/images",
        f"task_args.gt_dir={data}/widerface/ground_truth",
        f"teacher.checkpoint={data}/weights/featherface_v1_thirdparty.pth",
        *schedule_overrides(args), "export.onnx=false",
    ]
    if not results.done("featherface_v1", None):
        model = models.build_model("featherface_v1", weights=data / "weights" / "featherface_v1_thirdparty.pth")
        results.add({"method": "featherface_v1", "budget": None, **size_row(model), "ap_removed": None,
                     "ap_finetuned": official_ap(model, data), "load_avg_1m": round(os.getloadavg()[0], 2)})
    paths = {"featherface_nano_b": (None, [f"distill.epochs={args.distill_epochs}"]),
             "featherface_v1_pruned": ("v1_pruned", [])}
    for method, (profile, extra) in paths.items():
        if results.done(method, "120K-180K"):
            continue
        pruned, final, details = featherface_path(profile, [*overrides, *extra], args.work / method)
        results.add({"method": method, "budget": "120K-180K", **size_row(final),
                     "ap_removed": official_ap(pruned, data), "ap_finetuned": official_ap(final, data),
                     **details, "load_avg_1m": round(os.getloadavg()[0], 2)})


def architecture(row: dict[str, Any], args: argparse.Namespace, total: int, example: torch.Tensor) -> nn.Module:
    """A model with the architecture of ``row`` (latency does not depend on the weights): rebuilt by the
    same deterministic pruning, or read from the run directory the row's pipeline wrote."""
    method, budget = row["method"], row.get("budget")
    if method in ("unpruned", "unpruned_finetuned"):
        return released(args.data)
    if method == "featherface_v1":
        return models.build_model("featherface_v1")
    if method.startswith("featherface_"):
        return load_pruned(args.work / method / "final.pt", trust=[BUILDER])
    if method in ("compresskit", "compresskit_ls"):
        suffix = f"_{row['seed']}" if "seed" in row else ""  # rows before --seeds have no seed in the folder name
        return load_pruned(args.work / f"{method}_{budget}{suffix}" / "pruned.pt", trust=[BUILDER])
    prune_to = {"uniform_fpgm": uniform_fpgm, "uniform_fpgm_ls": uniform_fpgm, "tp_magnitude": tp_magnitude}[method]
    return prune_to(args.data, int(budget * total), example)[0]


def measure_latencies(args: argparse.Namespace, results: Results, rounds: int = 30) -> None:
    """ORT latency (640x640, 1 thread) of every row's model, all sessions timed round-robin in the same
    minutes (so machine load hits every model alike); median and IQR per row, written to the file."""
    example = torch.randn(1, 3, args.crop, args.crop, generator=torch.Generator().manual_seed(0)) * 50
    total = count_params(released(args.data))
    image = _latency_image()
    rows = results.data["rows"]
    with tempfile.TemporaryDirectory() as tmp:
        runners = {}
        for index, row in enumerate(rows):
            path = export_onnx(architecture(row, args, total, example).eval(), (torch.from_numpy(image),),
                               Path(tmp) / f"{index}.onnx")
            runners[str(index)] = ort_runner(path, [image], threads=1)
        yunet = args.data / "weights" / "yunet_n_640_640.onnx"
        if yunet.is_file():  # the peer, timed in the same rounds (its input: raw BGR 0..255, no mean)
            runners[YUNET_N] = ort_runner(yunet, [image + np.array(BGR_MEAN, dtype=np.float32).reshape(1, 3, 1, 1)],
                                          threads=1)
        loads = [os.getloadavg()[0]]
        latencies = measure(runners, warmup=3, rounds=rounds)
        loads.append(os.getloadavg()[0])
    for index, row in enumerate(rows):
        q25, median, q75 = np.percentile(latencies[str(index)].samples_ms, [25, 50, 75])
        row["ort_interleaved"] = {"median_ms": round(float(median), 2), "iqr_ms": round(float(q75 - q25), 2),
                                  "rounds": rounds, "load_1m": [round(v, 2) for v in loads]}
    if YUNET_N in latencies:
        q25, median, q75 = np.percentile(latencies[YUNET_N].samples_ms, [25, 50, 75])
        results.data["peers"] = {YUNET_N: {**YUNET_N_AP, "params": 75856, "median_ms": round(float(median), 2),
                                           "iqr_ms": round(float(q75 - q25), 2), "rounds": rounds}}
    results.data["latency_command"] = " ".join([".venv/bin/python", "benchmarks/bench_real_pruning.py", *sys.argv[1:]])
    results.write()


# --------------------------------------------------------------------------------------------
# driver


def finetune(model: nn.Module, overrides: Sequence[str], run_dir: Path) -> float:
    """The recipe's fine-tune of ``model`` in place (seeded as the pipeline's finetune phase); seconds."""
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    recipe = load_recipe(RECIPE, [*overrides, f"run_dir={run_dir}"])
    ctx = pipeline.RunContext(recipe=recipe, run_dir=run_dir, task=pipeline.build_task(recipe),
                              log=lambda m: print(m, flush=True))
    if "finetune" in recipe.distill.phases:  # distil from the recipe's teacher (the released model)
        torch.save(models.build_model(MODEL, weights=Path(recipe.teacher.checkpoint)).state_dict(),
                   run_dir / "teacher.pt")
    pipeline.seed_everything(pipeline.phase_seed(recipe.seed, "finetune"))
    start = time.perf_counter()
    pipeline.finetune_model(ctx, model, evaluate=False)
    return round(time.perf_counter() - start, 1)


def run_budget(budget: float, args: argparse.Namespace, results: Results, overrides: list[str],
               example: torch.Tensor, total: int, seed: int = 0) -> None:
    max_params = int(budget * total)
    min_params = int((budget - args.band) * total)
    budget_overrides = [*overrides, f"seed={seed}", f"search.budget.max_params={max_params}",
                        f"search.budget.min_params={min_params}"]
    methods: dict[str, Callable[[], tuple[nn.Module, dict[str, Any]]]] = {
        "compresskit": lambda: compresskit_pipeline(budget_overrides, args.work / f"compresskit_{budget}_{seed}"),
        "compresskit_ls": lambda: compresskit_pipeline([*budget_overrides, *ONE_SHOT_LS],
                                                       args.work / f"compresskit_ls_{budget}_{seed}"),
        "uniform_fpgm": lambda: uniform_fpgm(args.data, max_params, example),
        "uniform_fpgm_ls": lambda: uniform_fpgm_ls(args.data, max_params, example, budget_overrides),
        "tp_magnitude": lambda: tp_magnitude(args.data, max_params, example),
        # control: the released model through the same fine-tune (what the fine-tune alone does)
        "unpruned_finetuned": lambda: (released(args.data), {}),
    }
    for method in args.methods:
        if results.done(method, budget, seed):
            print(f"skip {method} @ {budget} seed {seed}: already in {results.path}", flush=True)
            continue
        start = time.perf_counter()
        model, details = methods[method]()
        prune_seconds = round(time.perf_counter() - start, 1)
        row: dict[str, Any] = {"method": method, "budget": budget, "seed": seed, **size_row(model),
                               "ap_removed": official_ap(model, args.data), **details,
                               "prune_seconds": prune_seconds}
        row["finetune_seconds"] = finetune(model, budget_overrides, args.work / f"finetune_{method}_{budget}_{seed}")
        row["ap_finetuned"] = official_ap(model, args.data)
        row["load_avg_1m"] = round(os.getloadavg()[0], 2)
        results.add(row)


def render(data: dict[str, Any]) -> str:
    lines = []
    for index, config in enumerate(data.get("runs") or [data["config"]]):
        lines += [f"Run {index}: `{config['command']}`  ",
                  f"started {config['started']}; torch threads 1; training crop {config['crop']} px, "
                  f"train images {config['train_size']}, fine-tune {_schedule(config, 'finetune_epochs', 'epoch(s)')}, "
                  f"soft-prune {_schedule(config, 'soft_epochs', 'epoch(s)')}, search {_schedule(config, 'trials', 'trials')}"
                  + (f", seeds {config['seeds']}" if "seeds" in config else "") + ".", ""]
    lines += ["| model | budget | seed | params | MACs @640 | ORT ms @640 1t | AP after removal (E/M/H) | "
              "AP after fine-tune (E/M/H) | prune s | fine-tune s | run | load |",
              "|---|---:|---:|---:|---:|---:|---|---|---:|---:|---:|---:|"]

    def ap(values: dict[str, float] | None) -> str:
        return "—" if not values else f"{values['easy']:.2f} / {values['medium']:.2f} / {values['hard']:.2f}"

    def latency(row: dict[str, Any]) -> str:
        if "ort_interleaved" in row:  # all rows timed in the same minutes: comparable
            return f"{row['ort_interleaved']['median_ms']:.1f} ({row['ort_interleaved']['iqr_ms']:.1f})"
        return f"{row['ort_ms_640_1t']:.1f}*"

    for row in data["rows"]:
        budget = row.get("budget")
        budget = "100%" if budget is None else budget if isinstance(budget, str) else f"{100 * budget:.0f}%"
        lines.append(f"| {row['method']} | {budget} | {row.get('seed', 0)} | {row['params']:,} | {row['macs_g']:.3f} G | "
                     f"{latency(row)} | {ap(row.get('ap_removed'))} | {ap(row.get('ap_finetuned'))} | "
                     f"{row.get('prune_seconds', 0):.0f} | {row.get('finetune_seconds', 0):.0f} | "
                     f"{row.get('run', 0)} | {row.get('load_avg_1m', float('nan')):.1f} |")
    if "latency_command" in data:
        lines += ["", f"ORT ms: median (IQR) of 30 interleaved rounds, all models in the same minutes: "
                      f"`{data['latency_command']}`."]
    else:
        lines += ["", "ORT ms*: measured right after each model, under whatever load the machine had then."]
    return "\n".join(lines + render_means(data["rows"])) + "\n"


def _schedule(config: dict[str, Any], key: str, unit: str) -> str:
    return "the recipe's" if config.get(key) is None else f"{config[key]} {unit}"


def render_means(rows: list[dict[str, Any]]) -> list[str]:
    """Per method and budget with several seeds: mean (sample std) of every AP, params, latency ratio and CPU
    minutes (1 thread: wall = CPU time of prune + fine-tune)."""
    unpruned = [r["ort_interleaved"]["median_ms"] for r in rows if r["method"] == "unpruned" and "ort_interleaved" in r]
    cells: dict[tuple[str, Any], list[dict[str, Any]]] = {}
    for row in rows:
        if isinstance(row.get("budget"), float) and "seed" in row:
            cells.setdefault((row["method"], row["budget"]), []).append(row)
    if not any(len(group) > 1 for group in cells.values()):
        return []

    def stat(values: list[float]) -> str:
        return f"{np.mean(values):.2f} ({np.std(values, ddof=1):.2f})" if len(values) > 1 else f"{values[0]:.2f}"

    def aps(group: list[dict[str, Any]], key: str) -> str:
        if any(not r.get(key) for r in group):
            return "—"
        return " / ".join(stat([r[key][subset] for r in group]) for subset in ("easy", "medium", "hard"))

    lines = ["", "Means over seeds (sample std): AP easy / medium / hard; latency as a ratio to the unpruned model "
                 "(interleaved ORT medians); CPU min = prune + fine-tune seconds / 60 at 1 thread.", "",
             "| model | budget | seeds | params | ORT ratio | AP after removal | AP after recovery | CPU min |",
             "|---|---:|---:|---:|---:|---|---|---:|"]
    for (method, budget), group in sorted(cells.items(), key=lambda item: (-item[0][1], item[0][0])):
        ratio = ("—" if not unpruned or any("ort_interleaved" not in r for r in group)
                 else stat([r["ort_interleaved"]["median_ms"] / unpruned[0] for r in group]))
        minutes = stat([(r.get("prune_seconds", 0) + r.get("finetune_seconds", 0)) / 60 for r in group])
        lines.append(f"| {method} | {100 * budget:.0f}% | {len(group)} | {np.mean([r['params'] for r in group]):,.0f} | "
                     f"{ratio} | {aps(group, 'ap_removed')} | {aps(group, 'ap_finetuned')} | {minutes} |")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "logs" / "real_pruning.json")
    parser.add_argument("--table", type=Path, default=None, help="print the markdown table of a results file")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "logs" / "real_pruning_runs")
    parser.add_argument("--budgets", default="0.5,0.7,0.35")
    parser.add_argument("--band", type=float, default=0.04, help="search budget: [budget - band, budget]")
    parser.add_argument("--methods", default="compresskit,uniform_fpgm,tp_magnitude")
    parser.add_argument("--crop", type=int, default=320)
    parser.add_argument("--train-size", type=int, default=None)
    parser.add_argument("--finetune-epochs", type=int, default=None, help="default: the recipe's")
    parser.add_argument("--soft-epochs", type=int, default=None, help="default: the recipe's")
    parser.add_argument("--trials", type=int, default=None, help="search: half initial points, half BO (default: the recipe's)")
    parser.add_argument("--seeds", default="0", help="recipe seeds, each a full set of rows (e.g. 0,1,2)")
    parser.add_argument("--featherface", action="store_true",
                        help="instead: the FeatherFace paths (V1 -> Nano-B, V1 pruned) to 120K-180K params")
    parser.add_argument("--distill-epochs", type=int, default=2, help="FeatherFace Nano-B path: distillation")
    parser.add_argument("--latency", type=Path, default=None,
                        help="re-time every model of this results file (ORT, interleaved) and add it to the file")
    parser.add_argument("--set", dest="extra", action="append", default=[], metavar="KEY=VALUE",
                        help="a recipe override applied to every method's run and fine-tune (repeatable)")
    parser.add_argument("--eval-images", type=int, default=None,
                        help="score only the first N val images (smoke runs; default: all 194)")
    args = parser.parse_args(argv)
    if args.table is not None:
        print(render(json.loads(args.table.read_text())))
        return 0
    if args.latency is not None:
        torch.set_num_threads(1)
        results = Results.__new__(Results)
        results.path, results.data = args.latency, json.loads(args.latency.read_text())
        measure_latencies(args, results)
        print(render(results.data))
        return 0
    torch.set_num_threads(1)
    args.methods = args.methods.split(",")
    data = args.data
    overrides = [
        *data_overrides(data, args.crop, args.train_size),
        *schedule_overrides(args), "export.onnx=false", *args.extra,
    ]
    config = {"command": " ".join([".venv/bin/python", "benchmarks/bench_real_pruning.py", *sys.argv[1:]]),
              "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "crop": args.crop,
              "train_size": args.train_size or "all", "finetune_epochs": args.finetune_epochs,
              "soft_epochs": args.soft_epochs, "trials": args.trials, "seeds": args.seeds, "overrides": overrides}
    if args.eval_images is not None:
        global VAL_IMAGES
        VAL_IMAGES = first_val_images(data, args.eval_images, Path(tempfile.mkdtemp(prefix="val_")))
        config["eval_images"] = args.eval_images
    results = Results(args.out, config)
    if args.featherface:
        run_featherface(args, results, data)
        print(render(results.data))
        return 0
    example = torch.randn(1, 3, args.crop, args.crop, generator=torch.Generator().manual_seed(0)) * 50
    total = count_params(released(data))
    if not results.done("unpruned", None):
        model = released(data)
        results.add({"method": "unpruned", "budget": None, **size_row(model), "ap_removed": None,
                     "ap_finetuned": official_ap(model, data), "load_avg_1m": round(os.getloadavg()[0], 2)})
    for seed in (int(value) for value in args.seeds.split(",")):
        for budget in (float(b) for b in args.budgets.split(",")):
            run_budget(budget, args, results, overrides, example, total, seed)
    print(render(results.data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
