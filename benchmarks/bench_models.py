"""Side-by-side size, MACs, CPU latency and ONNX Runtime memory of the face-detector family.

Models (one run, measured interleaved):

* RetinaFace-mnet0.25 with the released weights (``retinaface_mnet025_official.pth``),
* FeatherFace V1 with the third-party checkpoint (``featherface_v1_thirdparty.pth``),
* Nano-B unpruned (no trained weights exist: random init, seed 0 — latency does not depend on
  the values),
* the YuNet-n / YuNet-s ONNX peers (``yunet_{n,s}_640_640.onnx``, ONNX only: no torch column),
* any number of compresskit pruned checkpoints (``--pruned PATH``, loaded with
  ``compresskit.models.persist.load_pruned``).

What is measured, and how:

* **params (torch)**: ``compresskit.count_params`` (every ``model.parameters()`` element) — the real count, deformable
  conv weights and BiFPN fusion weights included (unlike ``thop``).
* **ONNX weights**: for every model, the ONNX file that is timed (our models: exported with
  ``compresskit.deploy.export.export_onnx`` at the benchmark size, TorchScript exporter, opset 17, constant
  folding on). Counted = elements of float initializers that are an input other than the data
  input (weight, bias, BN statistics) of ``Conv``, ``ConvTranspose``, ``Gemm``, ``MatMul`` or
  ``BatchNormalization``. Not counted: shape constants, resize scales, folded constants
  feeding element-wise ops (BiFPN fusion weights after ``relu(w)/sum``, the DCN sampling grid).
  Exported graphs have BatchNorm folded into the preceding conv, so this is lower than the torch
  count; for YuNet it is the only count available (the README's training-time 75,856 / 54,608
  include BN gamma/beta that fold into the conv bias: 2 per BN channel).
* **MACs** at ``--size`` (default 640x640), batch 1: ``compresskit.pruning.budget.count_macs``
  (``FlopCounterMode`` FLOPs / 2): multiply-accumulates of conv,
  linear and matmul ops; BN, activations, pooling, element-wise ops, resize and ``grid_sample``
  are not counted. FeatherFace V1's deformable convs are counted as the 3x3 conv they apply to the
  sampled patches plus their offset / modulator convs; the bilinear sampling is not. YuNet (ONNX
  only) and, as a cross-check, every exported model: conv / gemm / matmul MACs read from the ONNX
  graph after shape inference (``ONNX MACs``; after BN folding, so equal to the torch count).
* **Latency**: batch 1, ``--size`` square input. torch eager under ``torch.inference_mode`` with
  ``torch.set_num_threads(n)``; ONNX Runtime CPU with ``intra_op_num_threads = n``,
  ``inter_op_num_threads = 1``, ``ORT_ENABLE_ALL``, sequential execution (other options at their
  defaults, e.g. spinning thread pool). For each n in ``--threads``: ``--warmup`` calls per
  (model, backend), then ``--repeats`` rounds; each round visits every model in turn (round-robin,
  start rotated each round) and times torch then ORT once. Reported: median and IQR (25th-75th
  percentile) in ms, and the ratio to YuNet-n (ORT columns) and to V1 (same backend and threads),
  computed as the median of the per-round ratios (the two calls ran within the same round, so
  slow drifts in machine load cancel).
* **Peak memory**: one fresh ``python`` subprocess per model imports ``onnxruntime`` + ``numpy``,
  creates the session (``--memory-threads`` intra-op threads, default options incl. the memory
  arena), runs ``--memory-runs`` inferences, and reports its peak resident set size; a baseline
  subprocess only imports ``onnxruntime`` + ``numpy``. Both are repeated ``--memory-repeats`` times
  and the medians taken; reported are the absolute peak RSS and delta = peak - baseline (model,
  session, arena, input and output buffers). The peak is ``VmHWM`` from ``/proc/self/status``
  (Linux), not ``ru_maxrss``: Linux carries ``ru_maxrss`` over ``execve`` from the forked parent's
  memory image, so every child of this (torch-loaded) process would report at least the parent's
  peak (measured: ~890 MiB for all children alike). ``VmHWM`` belongs to the child's own image.

Run (from the repository root):
    .venv/bin/python benchmarks/bench_models.py                      # table to stdout
    .venv/bin/python benchmarks/bench_models.py --write-results --json /tmp/bench_models.json
    .venv/bin/python benchmarks/bench_models.py --repeats 5 --threads 1 --no-memory   # quick
    .venv/bin/python benchmarks/bench_models.py --pruned runs/x/pruned.pt --pruned other.pt
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import numpy_helper
from torch import nn

from compresskit.deploy.export import check_onnx, export_onnx
from compresskit.models.persist import load_pruned
from compresskit.pruning.budget import count_macs, count_params
from featherface.data.widerface import BGR_MEAN
from featherface.models import build_model

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _results  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_PATH = REPO_ROOT / "benchmarks" / "RESULTS.md"
SECTION_TITLE = "Model latency"
MAC_METHOD = "compresskit.pruning.budget.count_macs (FlopCounterMode FLOPs/2: conv, linear, matmul)"
DEFAULT_WEIGHTS_DIR = Path("/work/shared/data/weights")
YUNET_N = "YuNet-n"
V1 = "FeatherFace V1"
# ops whose non-data inputs are learned weights (weight, bias, BN statistics)
WEIGHT_OPS = {"Conv", "ConvTranspose", "Gemm", "MatMul", "BatchNormalization"}

_MEMORY_CHILD = r"""
import json, resource, sys
import numpy as np
import onnxruntime as ort

def peak_kib():  # VmHWM: peak RSS of this process image (since exec)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status")

result = {"after_import_kib": peak_kib()}
if sys.argv[1] == "run":
    path, threads, runs = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    meta = session.get_inputs()[0]
    x = np.random.default_rng(0).uniform(-120, 150, size=meta.shape).astype(np.float32)
    for _ in range(runs):
        session.run(None, {meta.name: x})
result["peak_kib"] = peak_kib()
result["ru_maxrss_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps(result))
"""


@dataclass
class BenchModel:
    """One benchmarked model: a torch model (optional) and the ONNX file that is timed."""

    name: str
    source: str
    torch_model: nn.Module | None = None
    onnx_path: Path | None = None
    note: str = ""
    stats: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# counting


def onnx_weight_counts(path: Path) -> dict[str, int]:
    """``{"weights": n, "other_float": m}``: elements of float initializers feeding weight ops."""
    graph = onnx.load(str(path)).graph
    inits = {init.name: init for init in graph.initializer}
    weight_names = {
        name for node in graph.node if node.op_type in WEIGHT_OPS for name in node.input[1:] if name in inits
    }
    counts = {"weights": 0, "other_float": 0}
    for name, init in inits.items():
        array = numpy_helper.to_array(init)
        if not np.issubdtype(array.dtype, np.floating):
            continue
        counts["weights" if name in weight_names else "other_float"] += int(array.size)
    return counts


def _tensor_shapes(model: onnx.ModelProto, names: set[str]) -> dict[str, list[int]]:
    """Shapes of intermediate tensors ``names``, from one ONNX Runtime run on a zero input.

    Static shape inference cannot always follow ``Resize`` with computed sizes, so the tensors
    are made graph outputs and observed (graph optimisation off, so every node stays).
    """
    model = onnx.ModelProto.FromString(model.SerializeToString())
    existing = {o.name for o in model.graph.output}
    for name in sorted(names - existing):
        model.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    feed = {i.name: np.zeros(i.shape, dtype=np.float32) for i in session.get_inputs()}
    outputs = session.run(None, feed)
    return {meta.name: list(value.shape) for meta, value in zip(session.get_outputs(), outputs)}


def onnx_macs(path: Path) -> int:
    """Conv / ConvTranspose / Gemm / MatMul multiply-accumulates of an ONNX graph (batch-1 input)."""
    model = onnx.load(str(path))
    graph = model.graph
    inits = {init.name: list(init.dims) for init in graph.initializer}
    nodes = [n for n in graph.node if n.op_type in {"Conv", "ConvTranspose", "Gemm", "MatMul"}]
    wanted = {name for n in nodes for name in (n.input[0], n.input[1], n.output[0]) if name not in inits}
    shapes = {**_tensor_shapes(model, wanted), **inits}
    total = 0
    for node in nodes:
        in_shape, weight_shape, out_shape = (shapes[name] for name in (node.input[0], node.input[1], node.output[0]))
        if node.op_type == "Conv":  # out elements x (C_in / groups) x kh x kw
            total += int(np.prod(out_shape)) * int(np.prod(weight_shape[1:]))
        elif node.op_type == "ConvTranspose":  # in elements x (C_out / groups) x kh x kw
            total += int(np.prod(in_shape)) * int(np.prod(weight_shape[1:]))
        else:  # out elements x K (the reduced dimension of the first input)
            total += int(np.prod(out_shape)) * int(in_shape[-1])
    return total


# --------------------------------------------------------------------------------------------
# model set


def _require(path: Path, allow_missing: bool, notes: list[str], label: str) -> bool:
    if path.is_file():
        return True
    if not allow_missing:
        sys.exit(f"bench_models: missing weights file {path} (needed for {label}; "
                 "pass --weights-dir, or --allow-missing to skip that model)")
    notes.append(f"{label} skipped: missing {path}")
    return False


def collect_models(args: argparse.Namespace, notes: list[str]) -> list[BenchModel]:
    weights = Path(args.weights_dir)
    models: list[BenchModel] = []
    for label, name, file in (
        ("RetinaFace-mnet0.25", "retinaface_mnet025", "retinaface_mnet025_official.pth"),
        (V1, "featherface_v1", "featherface_v1_thirdparty.pth"),
    ):
        path = weights / file
        if _require(path, args.allow_missing, notes, label):
            models.append(BenchModel(label, str(path), build_model(name, weights=path).eval()))
    torch.manual_seed(0)
    models.append(BenchModel("Nano-B (unpruned)", "build_model('nano_b'), random init (seed 0)",
                             build_model("nano_b").eval()))
    for label, file in ((YUNET_N, "yunet_n_640_640.onnx"), ("YuNet-s", "yunet_s_640_640.onnx")):
        path = weights / file
        if _require(path, args.allow_missing, notes, label):
            models.append(BenchModel(label, str(path), onnx_path=path))
    for file in args.pruned:
        path = Path(file)
        if not path.is_file():
            if not args.allow_missing:
                sys.exit(f"bench_models: missing pruned checkpoint {path}")
            notes.append(f"pruned {path} skipped: missing")
            continue
        models.append(BenchModel(f"pruned:{path.stem}", str(path), load_pruned(path).eval()))
    return models


def _check_yunet_size(model: BenchModel, size: int) -> None:
    graph = onnx.load(str(model.onnx_path)).graph
    dims = [d.dim_value for d in graph.input[0].type.tensor_type.shape.dim]
    if dims[2:] != [size, size]:
        raise SystemExit(f"bench_models: {model.onnx_path} has a fixed input {dims}, not {size}x{size}")


def prepare(models: Sequence[BenchModel], size: int, tmp_dir: Path) -> None:
    """Count params / MACs, export torch models to ONNX in ``tmp_dir``, check parity."""
    example = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0)) * 50
    for model in models:
        if model.torch_model is not None:
            model.stats["params_torch"] = count_params(model.torch_model)
            model.stats["macs"] = int(count_macs(model.torch_model, example))
            slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", model.name)
            start = time.perf_counter()
            model.onnx_path = export_onnx(model.torch_model, example, tmp_dir / f"{slug}.onnx")
            model.stats["export_seconds"] = time.perf_counter() - start
            model.stats["onnx_max_abs_diff"] = check_onnx(model.onnx_path, model.torch_model, example, atol=1e-2)
        else:
            _check_yunet_size(model, size)
        model.stats.update({f"onnx_{k}": v for k, v in onnx_weight_counts(model.onnx_path).items()})
        model.stats["onnx_macs"] = onnx_macs(model.onnx_path)
        model.stats.setdefault("macs", model.stats["onnx_macs"])
        print(f"prepared {model.name}: {model.stats}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# latency


def _input(size: int, yunet: bool) -> np.ndarray:
    rng = np.random.default_rng(0)
    image = rng.uniform(0, 255, size=(1, 3, size, size)).astype(np.float32)  # BGR 0..255
    if not yunet:  # RetinaFace-family preprocessing: mean subtraction
        image -= np.array(BGR_MEAN, dtype=np.float32).reshape(1, 3, 1, 1)
    return image


def measure_latency(models: Sequence[BenchModel], size: int, threads: Sequence[int], warmup: int,
                    repeats: int, loads: dict[str, list[float]]) -> dict[str, dict[str, list[float]]]:
    """``{column: {model name: [ms per round]}}`` with columns ``"torch/1t"``, ``"ort/2t"``...

    Timed by ``compresskit.deploy.benchmark.measure`` (the library's one latency function): per thread
    count, ``warmup`` calls per (model, backend), then ``repeats`` rounds visiting every (model,
    backend) once in rotated order. ``loads`` receives the 1-minute load average at the start and end
    of each thread count.
    """
    from compresskit.deploy.benchmark import measure, ort_runner, torch_runner

    times: dict[str, dict[str, list[float]]] = {}
    inputs = {m.name: _input(size, m.torch_model is None) for m in models}
    for n in threads:
        torch.set_num_threads(n)
        runners = {}
        for model in models:
            if model.torch_model is not None:
                runners[("torch", model.name)] = torch_runner(model.torch_model, (torch.from_numpy(inputs[model.name]),))
            runners[("ort", model.name)] = ort_runner(model.onnx_path, (inputs[model.name],), n)
        loads[f"{n}t"] = [round(os.getloadavg()[0], 2)]
        latencies = measure(runners, warmup=warmup, rounds=repeats, on_round=lambda index: print(
            f"threads {n}: round {index + 1}/{repeats}, load {os.getloadavg()[0]:.2f}", file=sys.stderr, flush=True))
        for (backend, name), latency in latencies.items():
            times.setdefault(f"{backend}/{n}t", {})[name] = list(latency.samples_ms)
        loads[f"{n}t"].append(round(os.getloadavg()[0], 2))
    order = sorted(times, key=lambda column: (int(column.split("/")[1][:-1]), column.startswith("ort")))
    return {column: times[column] for column in order}  # torch/1t, ort/1t, torch/2t, ...


def summarise(samples: Sequence[float]) -> dict[str, float]:
    q25, median, q75 = np.percentile(samples, [25, 50, 75])
    return {"median_ms": float(median), "q25_ms": float(q25), "q75_ms": float(q75), "iqr_ms": float(q75 - q25)}


def paired_ratio(samples: Sequence[float], reference: Sequence[float] | None) -> float | None:
    """Median over rounds of ``samples[r] / reference[r]`` (same round, so load drift cancels)."""
    if reference is None or len(reference) != len(samples):
        return None
    return float(np.median(np.asarray(samples) / np.asarray(reference)))


# --------------------------------------------------------------------------------------------
# memory


def _child(argv: Sequence[str]) -> dict[str, int]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    completed = subprocess.run([sys.executable, "-c", _MEMORY_CHILD, *argv], capture_output=True,
                               text=True, env=env, check=False)
    if completed.returncode != 0:
        raise RuntimeError(f"memory child {argv} failed: {completed.stderr.strip().splitlines()[-1:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def measure_memory(models: Sequence[BenchModel], threads: int, runs: int, repeats: int) -> dict[str, float]:
    """Median baseline peak RSS (MiB); fills ``stats['peak_rss_mib']`` / ``['delta_rss_mib']``."""
    baseline, peaks = [], {m.name: [] for m in models}
    for _ in range(repeats):  # interleaved too: machine-wide page-cache effects hit all alike
        baseline.append(_child(["baseline"])["peak_kib"] / 1024)
        for model in models:
            peaks[model.name].append(_child(["run", str(model.onnx_path), str(threads), str(runs)])["peak_kib"] / 1024)
    base = float(np.median(baseline))
    for model in models:
        peak = float(np.median(peaks[model.name]))
        model.stats.update({"peak_rss_mib": peak, "delta_rss_mib": peak - base})
    return base


# --------------------------------------------------------------------------------------------
# report


def _fmt_int(value: int | None) -> str:
    return "—" if value is None else f"{value:,}"


def _fmt_ratio(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}x"


def machine_notes() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnxruntime": ort.__version__,
        "onnx": onnx.__version__,
    }


def render(result: dict[str, Any]) -> str:
    models, columns = result["models"], result["latency_columns"]
    lines = [
        f"Date: {result['date']}  ",
        f"Command: `{result['command']}`  ",
        f"Input {result['size']}x{result['size']}, batch 1; threads {result['threads']} "
        f"(torch `set_num_threads`, ORT `intra_op_num_threads`, `inter_op_num_threads=1`, ORT_ENABLE_ALL); "
        f"{result['warmup']} warm-up calls, then {result['repeats']} interleaved round-robin rounds.  ",
        f"Machine: {result['machine']['cpu']}, nproc {result['machine']['nproc']}, load average "
        f"{result['load_before']} before / {result['load_after']} after (1/5/15 min); 1-min load at start/end "
        f"of each thread count: {', '.join(f'{k} {v[0]}/{v[-1]}' for k, v in result['load_by_threads'].items())} "
        f"— a shared box, "
        f"other jobs running; torch {result['machine']['torch']}, onnxruntime {result['machine']['onnxruntime']}.",
        "",
        "Size (MACs: " + result["mac_method"] + "; ONNX MACs read from the exported graph):",
        "",
        "| model | params (torch) | ONNX weights | MACs @" + str(result["size"]) + " | ONNX MACs | ORT parity (max abs diff) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for m in models:
        s = m["stats"]
        parity = s.get("onnx_max_abs_diff")
        lines.append(
            f"| {m['name']} | {_fmt_int(s.get('params_torch'))} | {_fmt_int(s['onnx_weights'])} | "
            f"{s['macs'] / 1e9:.3f} G | {s['onnx_macs'] / 1e9:.3f} G | "
            f"{'—' if parity is None else f'{parity:.1e}'} |"
        )
    lines += [
        "",
        "Latency, ms: median (IQR). Torch = eager; ORT = ONNX Runtime CPU on the same model's ONNX export.",
        "",
        "| model | " + " | ".join(columns) + " |",
        "|---|" + "---:|" * len(columns),
    ]
    for m in models:
        cells = []
        for column in columns:
            lat = m["latency"].get(column)
            cells.append("—" if lat is None else f"{lat['median_ms']:.1f} ({lat['iqr_ms']:.1f})")
        lines.append(f"| {m['name']} | " + " | ".join(cells) + " |")
    ort_columns = [c for c in columns if c.startswith("ort/")]
    lines += [
        "",
        "Ratios (median of per-round paired ratios; > 1 = slower). vs YuNet-n: ORT columns only (YuNet has no "
        "torch model); vs V1: same backend and threads.",
        "",
        "| model | " + " | ".join(f"{c} vs YuNet-n" for c in ort_columns) + " | "
        + " | ".join(f"{c} vs V1" for c in columns) + " |",
        "|---|" + "---:|" * (len(ort_columns) + len(columns)),
    ]
    for m in models:
        cells = [_fmt_ratio(m["latency"].get(c, {}).get("ratio_yunet_n")) for c in ort_columns]
        cells += [_fmt_ratio(m["latency"].get(c, {}).get("ratio_v1")) for c in columns]
        lines.append(f"| {m['name']} | " + " | ".join(cells) + " |")
    if result.get("memory"):
        mem = result["memory"]
        lines += [
            "",
            f"ONNX Runtime peak memory: fresh subprocess per model (session with {mem['threads']} intra-op "
            f"thread(s), {mem['runs']} inferences), peak RSS = `VmHWM` of the child (not `ru_maxrss`, which Linux carries over from the forking parent), median of {mem['repeats']} children; "
            f"baseline child importing only onnxruntime + numpy: {mem['baseline_mib']:.1f} MiB.",
            "",
            "| model | peak RSS (MiB) | delta over baseline (MiB) |",
            "|---|---:|---:|",
        ]
        for m in models:
            lines.append(f"| {m['name']} | {m['stats']['peak_rss_mib']:.1f} | {m['stats']['delta_rss_mib']:.1f} |")
    if result["notes"]:
        lines += ["", "Notes:", ""] + [f"- {note}" for note in result["notes"]]
    return "\n".join(lines) + "\n"


def write_section(path: Path, title: str, body: str) -> None:
    """Replace (or append) the ``## title`` section of ``path`` (:func:`_results.write_section`)."""
    _results.write_section(f"## {title}", f"## {title}\n\n{body}", path)


def publish(table: str, results: Any, json_path: str | None, write_results: bool, title: str) -> None:
    """Print ``table``; write ``results`` to ``json_path`` (if given) and ``table`` as RESULTS.md's ``## title``."""
    print(table)
    if json_path:
        Path(json_path).write_text(json.dumps(results, indent=1) + "\n")
    if write_results:
        write_section(REPO_ROOT / "benchmarks" / "RESULTS.md", title, table)


def _command() -> str:
    python = Path(sys.executable)
    try:
        python_text = str(python.relative_to(REPO_ROOT))
    except ValueError:
        python_text = "python"
    script = Path(sys.argv[0])
    try:
        script_text = str(script.resolve().relative_to(REPO_ROOT))
    except ValueError:
        script_text = str(script)
    return " ".join([python_text, shlex.join([script_text, *sys.argv[1:]])])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights-dir", default=str(DEFAULT_WEIGHTS_DIR), help="read in place, never copied")
    parser.add_argument("--pruned", action="append", default=[], metavar="PATH",
                        help="compresskit pruned checkpoint (compresskit.models.persist.load_pruned); repeatable")
    parser.add_argument("--allow-missing", action="store_true", help="skip models whose weights are absent")
    parser.add_argument("--size", type=int, default=640, help="square input size (YuNet files are fixed 640)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=15, help="interleaved rounds per thread count")
    parser.add_argument("--no-memory", action="store_true", help="skip the subprocess memory measurement")
    parser.add_argument("--memory-threads", type=int, default=1)
    parser.add_argument("--memory-runs", type=int, default=3, help="inferences per memory child")
    parser.add_argument("--memory-repeats", type=int, default=3, help="children per model (median)")
    parser.add_argument("--json", metavar="PATH", help="write machine-readable results here")
    parser.add_argument("--write-results", action="store_true",
                        help=f"rewrite the '{SECTION_TITLE}' section of {RESULTS_PATH.relative_to(REPO_ROOT)}")
    args = parser.parse_args(argv)
    for name in ("size", "warmup", "repeats", "memory_threads", "memory_runs", "memory_repeats"):
        minimum = 0 if name == "warmup" else 1
        if getattr(args, name) < minimum:
            parser.error(f"--{name.replace('_', '-')} must be >= {minimum}, got {getattr(args, name)}")
    if any(n < 1 for n in args.threads):
        parser.error(f"--threads must be >= 1, got {args.threads}")

    notes: list[str] = []
    load_before = [round(x, 2) for x in os.getloadavg()]
    models = collect_models(args, notes)
    if not models:
        sys.exit("bench_models: no model to benchmark")
    with tempfile.TemporaryDirectory(prefix="bench_models_") as tmp:
        prepare(models, args.size, Path(tmp))
        loads: dict[str, list[float]] = {}
        times = measure_latency(models, args.size, args.threads, args.warmup, args.repeats, loads)
        memory = None
        if not args.no_memory:
            baseline = measure_memory(models, args.memory_threads, args.memory_runs, args.memory_repeats)
            memory = {"threads": args.memory_threads, "runs": args.memory_runs,
                      "repeats": args.memory_repeats, "baseline_mib": baseline}
    load_after = [round(x, 2) for x in os.getloadavg()]

    names = {m.name for m in models}
    if YUNET_N not in names:
        notes.append("YuNet-n absent: no ratio to YuNet-n")
    if V1 not in names:
        notes.append("FeatherFace V1 absent: no ratio to V1")
    if names & {YUNET_N, "YuNet-s"}:
        notes.append("YuNet params = ONNX weights (BN folded): 73,840 (n) / 53,104 (s); the README's "
                     "75,856 / 54,608 are training-time counts, exactly 2 x 1,008 / 2 x 752 more (BN gamma and "
                     "beta of the 1,008 / 752 BN channels fold into the conv bias). Our models' 'ONNX weights' "
                     "are lower than their torch counts for the same reason (bias-free conv + BN: one bias "
                     "per BN channel replaces gamma and beta).")
        notes.append("YuNet MACs: the README's 149 M (n) / 96 M (s) at 320x320 compare with "
                     "ONNX-conv MACs / 4 = 136 M / 86 M here (all strides divide 320, so conv MACs scale "
                     "exactly); the README's counter includes more than conv MACs.")
    nproc = os.cpu_count() or 1
    busiest = max([load_before[0], load_after[0], *(x for pair in loads.values() for x in pair)])
    if busiest > nproc:
        notes.append(f"Load average reached {busiest:.1f} on {nproc} cores: the box was oversubscribed, so "
                     "timings with more threads than free cores are dominated by contention (an OpenMP barrier "
                     "waits for a descheduled thread; see the IQRs). Compare models through the paired ratios, "
                     "and prefer the 1-thread columns.")
    notes.append("Nano-B has no trained weights (random init); FeatherFace V1 DCN is compresskit's plain-torch "
                 "grid_sample implementation (ONNX GridSample), not torchvision's deform_conv2d kernel.")
    columns = list(times)
    result: dict[str, Any] = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": _command(),
        "size": args.size,
        "threads": args.threads,
        "warmup": args.warmup,
        "repeats": args.repeats,
        "mac_method": MAC_METHOD,
        "machine": machine_notes(),
        "load_before": load_before,
        "load_after": load_after,
        "load_by_threads": loads,
        "latency_columns": columns,
        "memory": memory,
        "notes": notes,
        "models": [],
    }
    for model in models:
        latency = {}
        for column in columns:
            samples = times[column].get(model.name)
            if samples is None:
                continue
            entry = summarise(samples)
            yunet = times[column].get(YUNET_N) if column.startswith("ort/") else None
            entry["ratio_yunet_n"] = paired_ratio(samples, yunet)
            entry["ratio_v1"] = paired_ratio(samples, times[column].get(V1))
            entry["samples_ms"] = [round(t, 3) for t in samples]
            latency[column] = entry
        result["models"].append({"name": model.name, "source": model.source, "stats": model.stats,
                                 "latency": latency})

    table = render(result)
    print(table)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    if args.write_results:
        write_section(RESULTS_PATH, SECTION_TITLE, table)
        print(f"wrote section '{SECTION_TITLE}' of {RESULTS_PATH}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
