"""Where ONNX Runtime spends its time: per-operator and per-top-level-module shares of kernel time.

Exports a model, read by ``featherface.detect.load_model`` (a pruned checkpoint ``*.pt``,
``name:weights`` or a bare reference model name), at a square input size, runs it with ONNX Runtime's
profiler (CPU, 1 intra-op thread by default) and prints two tables. Used to explain latency results in ``benchmarks/RESULTS.md``.

    .venv/bin/python benchmarks/profile_onnx.py runs/featherface_nano_b/final.pt --size 640
"""

from __future__ import annotations

import argparse
import collections
import json
import tempfile
from pathlib import Path

import onnxruntime as ort
import torch

from compresskit import export_onnx
from featherface.detect import load_model


def profile(model: torch.nn.Module, size: int, runs: int, threads: int) -> tuple[float, dict, dict]:
    """Mean kernel ms per run, and shares of kernel time by operator type and by top-level module."""
    inputs = torch.randn(1, 3, size, size)
    with tempfile.TemporaryDirectory() as folder:
        path = export_onnx(model, inputs, Path(folder) / "model.onnx")
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(folder) / "profile")
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: inputs.numpy()}
        session.run(None, feed)  # warm-up (also profiled, but negligible against `runs`)
        for _ in range(runs):
            session.run(None, feed)
        events = json.loads(Path(session.end_profiling()).read_text())
    by_op: collections.Counter[str] = collections.Counter()
    by_module: collections.Counter[str] = collections.Counter()
    for event in events:
        if event.get("cat") != "Node" or not event["name"].endswith("_kernel_time"):
            continue
        node = event["name"].removesuffix("_kernel_time")
        by_op[event["args"]["op_name"]] += event["dur"]
        by_module[node.strip("/").split("/")[0] if "/" in node else "(graph-level)"] += event["dur"]
    total = sum(by_op.values())
    share = lambda counter: {key: value / total for key, value in counter.most_common()}  # noqa: E731
    return total / (runs + 1) / 1000, share(by_op), share(by_module)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="pruned checkpoint (.pt), name:weights or reference model name (e.g. nano_b)")
    parser.add_argument("--size", type=int, default=640)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--top", type=int, default=10)
    args = parser.parse_args()
    milliseconds, by_op, by_module = profile(load_model(args.model), args.size, args.runs, args.threads)
    print(f"{args.model} @{args.size}: {milliseconds:.1f} ms kernel time per run ({args.threads} thread(s))\n")
    for title, shares in (("operator", by_op), ("module", by_module)):
        print(f"| {title} | share |\n|---|---:|")
        for key, value in list(shares.items())[: args.top]:
            print(f"| {key} | {value:.1%} |")
        print()


if __name__ == "__main__":
    main()
