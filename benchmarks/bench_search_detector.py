"""BO (LogEI) vs random rate search on the detector objective the pipeline uses (FeatherFace Nano-B).

For each seed, ``compresskit.search.search_rates`` (BoTorch) and ``random_search`` get the same
number of objective evaluations over Nano-B's 6 layer groups (bounds from the task's
``NANO_B_LAYER_GROUPS``), under ``search.budget`` of ``recipes/featherface_nano_b.yaml`` (read at
run time, so the benchmark follows the recipe).

The objective is the pipeline's own, from ``compresskit.run.search_problem`` (one-shot FPGM pruning of a copy of the distilled student at the candidate rates, ``search.trial.epochs``
of fine-tuning on a ``search.trial.subset`` of the synthetic training faces, then the mean MultiBox
loss on the validation batches; seeded by the candidate itself, so a candidate scores the same
whichever method proposes it), with the exact ``ParamPredictor``, the bounds and the budget.

Starting student: the recipe's own teacher + distill phases (``compresskit.run.run(...,
stop_after="distill")``), run once and cached in a temporary directory keyed by the resolved
recipe, so every search of every seed starts from identical weights (delete the cache directory,
or pass ``--cache-dir``, to retrain).

Run (defaults: 3 seeds x 12 evaluations per method, BO = 4 Sobol + 8 LogEI proposals, trial
fine-tune of 1 epoch, 1 torch thread; ~3.5 minutes to train the starting student the first time,
then ~1-2 minutes on 2 shared cores):
    .venv/bin/python benchmarks/bench_search_detector.py --write-results
    .venv/bin/python benchmarks/bench_search_detector.py --seeds 1 --evaluations 6   # quick
    .venv/bin/python benchmarks/bench_search_detector.py --set search.trial.subset=0.5  # recipe overrides
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

import compresskit.search as search_module  # noqa: E402
from compresskit import run as pipeline  # noqa: E402
from compresskit.config import load_recipe, recipe_to_dict  # noqa: E402

RECIPE = ROOT / "recipes" / "featherface_nano_b.yaml"
RESULTS = ROOT / "benchmarks" / "RESULTS.md"
PLOT = ROOT / "benchmarks" / "bench_search_detector.png"
SECTION = "## Rate search on the detector objective"
INTRO = (
    "BoTorch `search_rates` (LogEI) vs `random_search` over Nano-B's 6 layer groups, same number of objective "
    "evaluations and same seeds, on the objective `compresskit run` uses in its search phase (`compresskit."
    "pipeline.search_problem`, not re-implemented). A candidate's score depends only on its rates "
    "(the objective seeds itself from them), so the comparison has no evaluation noise; the seeds only change "
    "which points each method proposes."
)


def conclusion(results: list[tuple[dict[str, Any], dict[str, Any]]]) -> str:
    parts, better = [], True
    for data, summary in results:
        gap = summary["median_best"]["random"] - summary["median_best"]["bo"]
        better &= gap > 0 and summary["bo_wins"] > data["seeds"] / 2
        parts.append(f"{summary['bo_wins']}/{data['seeds']} seeds at {data['budget'][0] // 1000}K-"
                     f"{data['budget'][1] // 1000}K (median gap {gap:+.4f})")
    first, overhead = results[0][0], statistics.median(s["bo_overhead_median"] for _, s in results)
    verdict = (
        "So the budget-constrained LogEI loop finds lower values of the pipeline's real objective than uniform "
        f"feasible sampling with the same evaluations, for ~{overhead:.1f} s of proposal overhead per iteration "
        "(negligible next to a paper-scale trial)."
        if better else
        "So at this scale BO does not reliably beat random search on this objective: with so few evaluations "
        f"in 6 dimensions and a nearly flat objective the GP has little to exploit (proposal overhead "
        f"~{overhead:.1f} s per iteration)."
    )
    return (
        "**Conclusion.** With equal evaluations and seeds, BO's best objective was <= random search's on "
        + "; ".join(parts) + ". " + verdict + " Read it for what it is: at this CPU smoke scale the starting "
        f"student is barely trained ({first['task_args'].get('train_size')} synthetic images, teacher "
        f"{first['teacher_epochs']} + distillation {first['distill_epochs']} epochs), so the objective largely "
        f"measures how little one-shot pruning plus a {first['trial']['epochs']}-epoch fine-tune on "
        f"{first['trial']['subset']:.0%} of those images disturbs a near-initial network, scored on "
        f"{first['task_args'].get('val_size')} validation images; the gaps are a fraction of a percent of the "
        "loss. Whether the gap carries over to AP after the full soft-prune + fine-tune is not measured here; "
        "that needs the paper-profile (WIDER FACE) trial objective and a trained student."
    )


def pipeline_objective(recipe, cache_dir: Path, log=print) -> tuple[Any, dict, Any, tuple[int, int], Path]:
    """The pipeline's search objective (+ bounds, predictor, budget) on a cached distilled student."""
    # Keyed by what determines the student (not the search settings), so changing the
    # benchmark's trial settings reuses the same starting weights.
    resolved = recipe_to_dict(recipe)
    student_keys = {k: resolved.get(k) for k in ("seed", "deterministic", "threads", "task", "task_args",
                                                 "teacher", "student", "distill")}
    key = hashlib.sha256(json.dumps(student_keys, sort_keys=True, default=str).encode()).hexdigest()[:12]
    run_dir = cache_dir / f"{recipe.name}-{key}"
    state_path = run_dir / "state.json"
    started = time.perf_counter()
    if state_path.exists() and "distill" in json.loads(state_path.read_text())["completed"]:
        ctx = pipeline.RunContext(recipe=recipe, run_dir=run_dir, task=pipeline.build_task(recipe), log=log)
        how = "cached"
    else:  # trained once (resumes an interrupted cache run of the same recipe)
        ctx = pipeline.run(recipe, run_dir=run_dir, resume=(run_dir / "recipe.yaml").exists(),
                           stop_after="distill", log=lambda message: log(f"  {message}"))
        how = "trained"
    log(f"starting student: {run_dir / 'student.pt'} ({how}, {time.perf_counter() - started:.0f} s)")
    # What pipeline.run does before each phase, for the search phase (index 2).
    pipeline.seed_everything(pipeline.phase_seed(recipe.seed, "search"))
    problem = pipeline.search_problem(ctx)
    return problem.objective, problem.bounds, problem.predict_params, problem.budget, run_dir


def best_so_far(values: list[float]) -> list[float]:
    out, best = [], math.inf
    for value in values:
        best = min(best, value)
        out.append(best)
    return out


def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    trial = [] if args.trial_epochs is None else [f"search.trial.epochs={args.trial_epochs}"]
    overrides = [*trial, *args.set]
    recipe = load_recipe(args.recipe, overrides=overrides, profile=args.profile)
    if recipe.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    cache_dir = Path(args.cache_dir) if args.cache_dir else Path(tempfile.gettempdir()) / "compresskit_bench_search_detector"
    objective, bounds, predictor, budget, run_dir = pipeline_objective(recipe, cache_dir)
    threads = args.threads or recipe.threads  # after pipeline.run, which applies the recipe's
    if threads:
        torch.set_num_threads(threads)
    reachable = pipeline.reachable_params(predictor, bounds)
    print(f"budget {list(budget)} (search.budget); reachable at the bounds {list(reachable)}; "
          f"{len(bounds)} layer groups; {args.evaluations} evaluations per method; seeds 0..{args.seeds - 1}")
    import botorch  # noqa: F401  (imported once here so no trial's overhead includes the import)

    initial = args.initial_points
    iterations = args.evaluations - initial
    if iterations < 1:
        raise SystemExit(f"--evaluations ({args.evaluations}) must exceed --initial-points ({initial})")
    runs: list[dict[str, Any]] = []
    for seed in range(args.seeds):
        for method, search in (("bo", search_module.search_rates), ("random", search_module.random_search)):
            started = time.perf_counter()
            result = search(objective, bounds, predictor, budget, iterations=iterations,
                            initial_points=initial, seed=seed, progress=False)
            seconds = time.perf_counter() - started
            values = [t.objective for t in result.trials]
            assert len(values) == args.evaluations
            assert all(budget[0] <= t.predicted_params <= budget[1] for t in result.trials)
            runs.append({
                "seed": seed, "method": method, "best": result.best_objective,
                "best_rates": result.best_rates,
                "best_params": min(result.trials, key=lambda t: t.objective).predicted_params,
                "curve": best_so_far(values), "values": values,
                "kinds": [t.kind for t in result.trials],
                "params": [t.predicted_params for t in result.trials],
                "objective_seconds": [t.seconds for t in result.trials],
                "overhead_seconds": [t.overhead_seconds for t in result.trials],
                "seconds": seconds,
            })
            bo_overheads = [t.overhead_seconds for t in result.trials if t.kind == "bo"]
            print(f"seed {seed} {method:>6}: best {result.best_objective:.4f} "
                  f"({runs[-1]['best_params']:,} params) in {seconds:.0f} s"
                  + (f"; BO overhead/iter median {statistics.median(bo_overheads):.2f} s" if bo_overheads else ""),
                  flush=True)
    return {
        "command": "benchmarks/bench_search_detector.py " + " ".join(args.argv),
        "recipe": str(Path(args.recipe).resolve().relative_to(ROOT)) if Path(args.recipe).resolve().is_relative_to(ROOT) else str(args.recipe),
        "overrides": overrides, "profile": args.profile,
        "budget": list(budget), "reachable": list(reachable), "bounds": {k: list(v) for k, v in bounds.items()},
        "seeds": args.seeds, "evaluations": args.evaluations, "initial_points": initial,
        "threads": torch.get_num_threads(),
        "trial": {k: getattr(recipe.search.trial, k) for k in ("epochs", "subset", "lr", "batch_size",
                                                               "max_val_batches")},
        "task_args": dict(recipe.task_args), "distill_epochs": recipe.distill.epochs,
        "teacher_epochs": recipe.teacher.train.epochs if recipe.teacher and recipe.teacher.checkpoint is None else None,
        "student_cache": str(run_dir), "runs": runs,
        "student_metrics": json.loads((run_dir / "state.json").read_text())["phases"]["distill"]["metrics"],
        "git": _git_head(),
    }


def _git_head() -> str:
    import subprocess

    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                               text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def summarise(data: dict[str, Any]) -> dict[str, Any]:
    by = {m: [r for r in data["runs"] if r["method"] == m] for m in ("bo", "random")}
    n = data["evaluations"]
    bo_overheads = [o for r in by["bo"] for o, k in zip(r["overhead_seconds"], r["kinds"]) if k == "bo"]
    all_objective_seconds = [s for r in data["runs"] for s in r["objective_seconds"]]
    return {
        "median_best": {m: statistics.median(r["best"] for r in runs) for m, runs in by.items()},
        "bo_wins": sum(b["best"] <= r["best"] for b, r in zip(by["bo"], by["random"])),
        "mean_curve": {m: [statistics.fmean(r["curve"][i] for r in runs) for i in range(n)]
                       for m, runs in by.items()},
        "seconds": {m: statistics.fmean(r["seconds"] for r in runs) for m, runs in by.items()},
        "bo_overhead_median": statistics.median(bo_overheads) if bo_overheads else float("nan"),
        "bo_overhead_max": max(bo_overheads) if bo_overheads else float("nan"),
        "random_overhead_median": statistics.median(o for r in by["random"] for o in r["overhead_seconds"]),
        "objective_seconds_median": statistics.median(all_objective_seconds),
        # spread of the objective over uniform feasible points, to read the margins against
        "random_values": sorted(v for r in by["random"] for v in r["values"]),
        "by": by,
    }


def plot(results: list[tuple[dict[str, Any], dict[str, Any]]], path: Path) -> None:
    """Mean (thick) and per-seed (thin) best-so-far vs evaluations, one panel per budget."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(5.0 * len(results), 3.4), constrained_layout=True)
    FigureCanvasAgg(figure)
    panels = figure.subplots(1, len(results), squeeze=False)[0]
    for axes, (data, summary) in zip(panels, results):
        steps = list(range(1, data["evaluations"] + 1))
        for method, label, colour in (("bo", "BO (LogEI)", "tab:blue"), ("random", "random", "tab:orange")):
            for run in summary["by"][method]:
                axes.step(steps, run["curve"], where="post", color=colour, alpha=0.2, linewidth=0.8)
            axes.step(steps, summary["mean_curve"][method], where="post", color=colour, linewidth=2,
                      label=f"{label}, mean of {data['seeds']} seeds")
        axes.axvline(data["initial_points"] + 0.5, color="grey", linestyle=":", linewidth=1)
        axes.set_xlabel(f"evaluations (BO: {data['initial_points']} Sobol, then LogEI)")
        axes.set_ylabel("best validation loss so far")
        axes.set_title(f"Nano-B, budget {data['budget'][0] // 1000}K-{data['budget'][1] // 1000}K params",
                       fontsize=10)
        axes.legend(fontsize=8)
    figure.savefig(path, dpi=80)


def _student_metrics(data: dict[str, Any]) -> dict[str, float] | None:
    state = Path(data["student_cache"]) / "state.json"
    if not state.exists():
        return None
    return json.loads(state.read_text(encoding="utf-8"))["phases"]["distill"]["metrics"]


def markdown(data: dict[str, Any], summary: dict[str, Any]) -> str:
    t = data["trial"]
    by = summary["by"]
    student = data.get("student_metrics") or {}
    lines = [
        f"### Budget {data['budget'][0]:,}-{data['budget'][1]:,}", "",
        f"`.venv/bin/python {data['command'].strip()}` (commit {data['git']} + working tree; "
        f"{data['threads']} torch thread(s) on the shared 2-core box).", "",
        f"Settings: recipe `{data['recipe']}` with `{' '.join('--set ' + o for o in data['overrides'])}`"
        + (f", profile `{data['profile']}`" if data["profile"] else "")
        + f"; parameter budget **{data['budget'][0]:,}-{data['budget'][1]:,}** (`search.budget` "
        f"{'from --set' if any(o.startswith('search.budget') for o in data['overrides']) else 'read from the recipe'}; "
        f"the 6 layer groups' bounds reach {data['reachable'][0]:,}-{data['reachable'][1]:,}). "
        f"Objective = the pipeline's trial objective: one-shot FPGM prune of the starting student at the candidate "
        f"rates, {t['epochs']} epoch(s) of AdamW (lr {t['lr']}) on {t['subset']:.0%} of "
        f"{data['task_args'].get('train_size')} synthetic {data['task_args'].get('image_size')}px training faces "
        f"(batch {t['batch_size']}), then mean MultiBox validation loss over "
        f"{'all' if t['max_val_batches'] is None else 'at most ' + str(t['max_val_batches'])} val batch(es) of "
        f"{data['task_args'].get('val_size')} images. Starting student: the recipe's teacher "
        f"({data['teacher_epochs']} epochs) + weighted-distillation ({data['distill_epochs']} epochs) phases, "
        f"trained once and cached, identical for every search"
        + (f" (its val loss {student['val_loss']:.2f}, AP easy {student['ap_easy']:.3f}: barely trained at this "
           f"scale)" if student else "") + f". {data['seeds']} seeds x {data['evaluations']} "
        f"evaluations per method; BO = {data['initial_points']} scrambled-Sobol points + "
        f"{data['evaluations'] - data['initial_points']} LogEI proposals, random = {data['evaluations']} uniform "
        f"feasible points; same seed for both.", "",
        "| seed | BO best val loss | random best val loss | BO <= random |", "|---|---|---|---|",
    ]
    for bo, rs in zip(by["bo"], by["random"]):
        lines.append(f"| {bo['seed']} | {bo['best']:.4f} ({bo['best_params']:,} params) | "
                     f"{rs['best']:.4f} ({rs['best_params']:,} params) | {'yes' if bo['best'] <= rs['best'] else 'no'} |")
    med = summary["median_best"]
    lines += [
        f"| **median** | **{med['bo']:.4f}** | **{med['random']:.4f}** | "
        f"**{summary['bo_wins']}/{data['seeds']}** |", "",
        f"For scale: over all {len(summary['random_values'])} random (uniform feasible) evaluations the objective "
        f"spans {summary['random_values'][0]:.4f}-{summary['random_values'][-1]:.4f} (median "
        f"{statistics.median(summary['random_values']):.4f}, std {statistics.pstdev(summary['random_values']):.4f}).", "",
        "Mean best-so-far over seeds, by number of evaluations:", "",
        "| evaluations | " + " | ".join(str(i + 1) for i in range(data["evaluations"])) + " |",
        "|---|" + "---|" * data["evaluations"],
        "| BO | " + " | ".join(f"{v:.3f}" for v in summary["mean_curve"]["bo"]) + " |",
        "| random | " + " | ".join(f"{v:.3f}" for v in summary["mean_curve"]["random"]) + " |", "",
        f"Time: {summary['seconds']['bo']:.0f} s per BO run, {summary['seconds']['random']:.0f} s per random run "
        f"(mean over seeds); one objective evaluation {summary['objective_seconds_median']:.1f} s (median). "
        f"Search overhead per iteration (`Trial.overhead_seconds`, excluding the objective): BO proposals "
        f"median {summary['bo_overhead_median']:.2f} s, max {summary['bo_overhead_max']:.2f} s; random "
        f"{summary['random_overhead_median'] * 1e6:.0f} µs.", "",
    ]
    gap = summary["median_best"]["random"] - summary["median_best"]["bo"]
    spread = statistics.pstdev(summary["random_values"])
    lines += [
        f"Median gap (random - BO): {gap:+.4f}, i.e. {gap / spread:+.2f} standard deviations of the objective over "
        f"random feasible points; BO's best <= random's on {summary['bo_wins']}/{data['seeds']} seeds. "
        f"Total wall time {data['total_seconds'] / 60:.1f} min.", "",
    ]
    return "\n".join(lines)


def write_section(path: Path, text: str) -> None:
    """Replace (or append) this benchmark's section of RESULTS.md, leaving the others untouched."""
    content = path.read_text(encoding="utf-8") if path.exists() else "# Benchmark results\n"
    pattern = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.S | re.M)
    block = text.rstrip("\n") + "\n\n"
    if pattern.search(content):
        content = pattern.sub(lambda _: block, content, count=1)
    else:
        content = content.rstrip("\n") + "\n\n" + block
    path.write_text(content.rstrip("\n") + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default=str(RECIPE))
    parser.add_argument("--profile", default=None)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="recipe override (after --trial-epochs), as `compresskit run --set`")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--evaluations", type=int, default=12, help="objective evaluations per method and seed")
    parser.add_argument("--initial-points", type=int, default=4, help="BO's Sobol design (part of --evaluations)")
    parser.add_argument("--trial-epochs", type=int, default=None,
                        help="override search.trial.epochs (default: the recipe's; 0 scores right after pruning)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads for the searches (0: the recipe's). Default 1: on the shared 2-core "
                             "box one objective call measured 0.35 s with 1 thread vs 4.5-22 s with 2 under load")
    parser.add_argument("--cache-dir", default=None, help="where the starting student is cached")
    parser.add_argument("--json", default=None, help="also write every trial to this JSON file")
    parser.add_argument("--plot", default=str(PLOT))
    parser.add_argument("--write-results", action="store_true", help=f"write the section into {RESULTS.name}")
    parser.add_argument("--from-json", nargs="+", default=None, metavar="JSON",
                        help="render the section/plot from --json files (one subsection each) instead of measuring")
    args = parser.parse_args(argv)
    args.argv = argv
    if args.from_json:
        datasets = [json.loads(Path(p).read_text(encoding="utf-8")) for p in args.from_json]
    else:
        started = time.perf_counter()
        datasets = [run_benchmark(args)]
        datasets[0]["total_seconds"] = time.perf_counter() - started
        if args.json:
            Path(args.json).write_text(json.dumps(datasets[0], indent=1) + "\n", encoding="utf-8")
    for data in datasets:
        data.setdefault("student_metrics", _student_metrics(data))
    results = [(data, summarise(data)) for data in datasets]
    plot_name = None
    if args.plot:
        plot(results, Path(args.plot))
        plot_name = Path(args.plot).name
    text = "\n".join([SECTION, "", INTRO, ""] + [markdown(d, s) for d, s in results])
    if plot_name:
        text += f"\n![mean best-so-far vs evaluations]({plot_name})\n"
    text += f"\n{conclusion(results)}\n"
    print("\n" + text)
    if args.write_results:
        write_section(RESULTS, text)
        print(f"wrote section {SECTION!r} of {RESULTS}")

if __name__ == "__main__":
    main()
