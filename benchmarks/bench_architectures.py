"""Exactness guard cost (before/after) and coverage side by side with Torch-Pruning, on the zoo.

Usage: ``.venv/bin/python benchmarks/bench_architectures.py [--baseline 73ec8bf] [--repeats 5] [--rounds 2]
[--no-write]``

1. Time of ``find_groups`` (trace + the numerical soft == hard guard) per zoo model and on
   FeatherFace V1 / Nano-B (64x64, the layer groups of ``featherface``), for the code at
   ``--baseline`` (a git revision, unpacked with ``git archive`` into a temporary directory: one
   float32 probe selection) and for the working tree (3 float64 selections). Both run in fresh
   subprocesses, alternating ``--rounds`` times (the box is shared); each figure is the median over
   all repeats of all rounds.
2. The apply-time guard: ``prune(..., verify=True)`` vs ``verify=False`` at rate 0.5.
3. Coverage: per zoo model, what compresskit prunes (sets pruned / skipped, exact in float64) and
   what Torch-Pruning 1.6's ``MetaPruner`` (magnitude importance, rate 0.5, the same protected
   layers ignored) does: crash, shape change, or the soft == hard check in float64 (the channels it
   removes zeroed in a copy first: producer filters, biases, BN affine parameters).

Writes the "Architectures" section of ``benchmarks/RESULTS.md`` (other sections untouched).
One intra-op thread.
"""

from __future__ import annotations

import argparse
import copy
import fnmatch
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

from _results import write_section

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## Architectures: exactness guard and Torch-Pruning side by side"
FEATHERFACE = ("nano_b", "featherface_v1")


def _timings(repeats: int) -> dict[str, float]:
    """Worker: median ``find_groups`` seconds per model with whatever ``compresskit`` is importable."""
    import torch
    from zoo import ZOO, ZOO_PROTECT

    import compresskit as ck

    torch.set_num_threads(1)
    warnings.simplefilter("ignore")

    def median(fn: Any) -> float:
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    out: dict[str, float] = {}
    for name, build in ZOO.items():
        model, example = build()
        try:
            ck.find_groups(model, example, protect=ZOO_PROTECT[name])  # warm-up (first calls import lazily)
            out[name] = median(lambda: ck.find_groups(model, example, protect=ZOO_PROTECT[name]))
        except Exception:  # noqa: BLE001 - the baseline crashes on some zoo models
            out[name] = float("nan")
    from featherface import models

    for name in FEATHERFACE:
        table = models.NANO_B_LAYER_GROUPS if name == "nano_b" else models.FEATHERFACE_V1_LAYER_GROUPS
        protect = models.NANO_B_PROTECT_PATTERNS if name == "nano_b" else models.FEATHERFACE_V1_PROTECT_PATTERNS
        specs = [ck.LayerGroupSpec(g["name"], tuple(g["patterns"]), bounds=tuple(g["bounds"])) for g in table]
        torch.manual_seed(0)
        model = models.build_model(name).eval()
        example = torch.randn(1, 3, 64, 64) * 50.0
        out[name] = median(lambda: ck.find_groups(model, example, layer_groups=specs, protect=protect))
    return out


def _run_worker(package_root: Path, repeats: int) -> dict[str, float]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(package_root), str(ROOT / "tests" / "compresskit")]))
    result = subprocess.run(
        [sys.executable, __file__, "--worker", str(package_root), "--repeats", str(repeats)],
        env=env, capture_output=True, text=True, check=True, cwd=package_root,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def guard_timings(baseline: str, repeats: int, rounds: int) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    before: dict[str, list[float]] = {}
    after: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", baseline, "compresskit", "reference"], capture_output=True, check=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
        for _ in range(rounds):
            for target, root in ((before, Path(tmp)), (after, ROOT)):
                for name, seconds in _run_worker(root, repeats).items():
                    target.setdefault(name, []).append(seconds)
    return before, after


def apply_guard_rows(repeats: int) -> list[str]:
    from zoo import ZOO, ZOO_PROTECT

    import compresskit as ck

    rows = ["| model | prune 0.5, verify=False | verify=True | ratio |", "|---|---|---|---|"]
    for name, build in ZOO.items():
        model, example = build()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            groups = ck.find_groups(model, example, protect=ZOO_PROTECT[name])
        seconds = {}
        for verify in (False, True):
            times = []
            for _ in range(repeats):
                pruned, pruned_groups = copy.deepcopy((model, groups))
                start = time.perf_counter()
                ck.prune(pruned, example, 0.5, groups=pruned_groups, verify=verify)
                times.append(time.perf_counter() - start)
            seconds[verify] = statistics.median(times)
        rows.append(
            f"| {name} | {1e3 * seconds[False]:.1f} ms | {1e3 * seconds[True]:.1f} ms | "
            f"{seconds[True] / seconds[False]:.1f}x |"
        )
    return rows


def _relative(a: Any, b: Any) -> float:
    from compresskit.groups.surgery import max_relative_difference

    return max_relative_difference(a, b)


def _torch_pruning_result(model: Any, example: Any, protect: list[str]) -> str:
    """What Torch-Pruning's MetaPruner does to a float64 copy at rate 0.5."""
    import torch
    import torch_pruning as tp

    from compresskit.groups.surgery import flatten_outputs

    model, example = copy.deepcopy(model).double(), example.double()
    ignored = [m for n, m in model.named_modules() if n and any(fnmatch.fnmatchcase(n, p) for p in protect)]
    with torch.no_grad():
        reference = model(example)
    try:
        pruner = tp.pruner.MetaPruner(
            model, example, importance=tp.importance.MagnitudeImportance(p=2), pruning_ratio=0.5,
            ignored_layers=ignored,
        )
        soft = copy.deepcopy(model)
        soft_modules = dict(soft.named_modules())
        names = {m: n for n, m in model.named_modules()}
        params_before = sum(p.numel() for p in model.parameters())
        for group in pruner.step(interactive=True):
            with torch.no_grad():
                for dep, idxs in group:
                    layer, handler = dep.target.module, dep.handler.__name__
                    target = soft_modules.get(names.get(layer, ""), None)
                    if target is None or "out_channels" not in handler:
                        continue
                    index = torch.tensor(sorted(set(int(i) for i in idxs)), dtype=torch.long)
                    if isinstance(target, torch.nn.modules.conv._ConvNd):
                        target.weight.index_fill_(1 if target.transposed else 0, index, 0.0)
                    elif isinstance(target, (torch.nn.Linear, torch.nn.modules.batchnorm._BatchNorm)):
                        if getattr(target, "weight", None) is not None:
                            target.weight.index_fill_(0, index, 0.0)
                    if getattr(target, "bias", None) is not None and target.bias is not None:
                        target.bias.index_fill_(0, index, 0.0)
            group.prune()
        with torch.no_grad():
            hard, soft_out = model(example), soft(example)
    except Exception as error:  # noqa: BLE001 - recording what happens is the point
        return f"crash ({type(error).__name__})"
    if [t.shape for t in flatten_outputs(hard)] != [t.shape for t in flatten_outputs(reference)]:
        return "output shape changed"
    removed = 1 - sum(p.numel() for p in model.parameters()) / params_before
    difference = _relative(soft_out, hard)
    verdict = "exact" if difference <= 1e-9 else f"**not exact** ({difference:.1e})"
    return f"{verdict}, {100 * removed:.0f} % params removed"


def coverage_rows() -> list[str]:
    import torch
    from zoo import ZOO, ZOO_PROTECT

    import compresskit as ck

    rows = [
        "| model | compresskit: sets pruned (skipped) | compresskit prune 0.5 (float64) | Torch-Pruning 1.6 MetaPruner 0.5 (float64) |",
        "|---|---|---|---|",
    ]
    for name, build in ZOO.items():
        model, example = build()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            groups = ck.find_groups(model, example, protect=ZOO_PROTECT[name])
            ours = copy.deepcopy(model).double()
            x = example.double()
            with torch.no_grad():
                ours_groups = ck.find_groups(ours, x, protect=ZOO_PROTECT[name])
                pruner = ck.SoftFPGM(ours_groups, ck.constant(0.5))
                pruner.step(0)
                soft = ours(x)
            before = ck.count_params(ours)
            pruner.apply()
            with torch.no_grad():
                difference = _relative(soft, ours(x))
        removed = 1 - ck.count_params(ours) / before
        verdict = "exact" if difference <= 1e-9 else f"**not exact** ({difference:.1e})"
        rows.append(
            f"| {name} | {len(groups)} ({len(groups.skipped)}) | {verdict}, {100 * removed:.0f} % params removed | "
            f"{_torch_pruning_result(model, example, ZOO_PROTECT[name])} |"
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--baseline", default="73ec8bf", help="git revision to compare against")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        sys.path[:0] = [args.worker, str(ROOT / "tests" / "compresskit")]
        print(json.dumps(_timings(args.repeats)))
        return
    sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "compresskit")]
    import torch
    import torch_pruning as tp

    torch.set_num_threads(1)
    before, after = guard_timings(args.baseline, args.repeats, args.rounds)
    timing_rows = [
        f"| model | find_groups before ({args.baseline}: 1 float32 probe) | after (3 float64 selections) | after / before |",
        "|---|---|---|---|",
    ]
    for name in after:
        b, a = statistics.median(before.get(name, [float("nan")])), statistics.median(after[name])
        shown = "crash" if b != b else f"{1e3 * b:.0f} ms"
        ratio = "—" if b != b else f"{a / b:.2f}x"
        timing_rows.append(f"| {name} | {shown} | {1e3 * a:.0f} ms | {ratio} |")
    command = (
        f"`.venv/bin/python benchmarks/bench_architectures.py --baseline {args.baseline} "
        f"--repeats {args.repeats} --rounds {args.rounds}`"
    )
    text = "\n".join(
        [
            SECTION,
            "",
            f"Command: {command} (1 intra-op thread, torch {torch.__version__}, torch-pruning {tp.__version__}, "
            f"{platform.processor() or platform.machine()}, shared 2-core box: other jobs were running).",
            "",
            "`find_groups` time including its soft == hard guard, before (one random selection per set, float32, "
            "1e-5) and after (3 selections per set at rates 0.5/0.25/0.75, float64, 1e-9; cheap model copies "
            "instead of `deepcopy`; derived split/concat routing). Medians over repeats x rounds, baseline and "
            "current alternating in fresh processes. FeatherFace at 64x64 with its layer groups.",
            "",
            *timing_rows,
            "",
            "The apply-time guard (`prune(..., verify=True)`, now the default; also `SoftFPGM.apply()`): the chosen "
            "channels removed from a float64 copy first.",
            "",
            *apply_guard_rows(args.repeats),
            "",
            "Coverage on the zoo, side by side. compresskit: coupled sets returned (skipped with a reason), then "
            "one-shot prune at 0.5 on a float64 copy, soft-zeroed vs pruned outputs. Torch-Pruning: `MetaPruner` "
            "with magnitude importance at 0.5, the zoo's protected layers as `ignored_layers`, on a float64 copy; "
            "the channels it removes are first zeroed in a second copy (producer filters, biases, BN affine) and "
            "the outputs compared the same way. \"not exact\" = the pruned model computes something else.",
            "",
            *coverage_rows(),
            "",
        ]
    )
    print(text)
    if not args.no_write:
        write_section(SECTION, text)


if __name__ == "__main__":
    main()
