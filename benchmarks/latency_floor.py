"""The ONNX Runtime latency floor of Nano-B inside the seeds' pruning bounds, beside YuNet-n.

Prunes a freshly built Nano-B with every layer group at its upper bound (the smallest model the
search may return), exports it at 640x640 and times it with ONNX Runtime (1 intra-op thread,
median of interleaved runs) next to ``yunet_n_640_640.onnx``. Weights don't change latency, so
random initialisation is fine here.

    .venv/bin/python benchmarks/latency_floor.py [--weights-dir ../shared/data/weights]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from compresskit import LayerGroupSpec, count_params, export_onnx, find_groups, prune
from reference.featherface.models import NANO_B_LAYER_GROUPS, NANO_B_PROTECT_PATTERNS, build_model

ROOT = Path(__file__).resolve().parents[1]


def session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights-dir", type=Path, default=ROOT.parent / "shared" / "data" / "weights")
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    yunet = args.weights_dir / "yunet_n_640_640.onnx"
    if not yunet.is_file():
        raise SystemExit(f"{yunet}: not found (give --weights-dir)")

    model = build_model("nano_b").eval()
    specs = [LayerGroupSpec(name=g["name"], patterns=tuple(g["patterns"]), bounds=tuple(g["bounds"]))
             for g in NANO_B_LAYER_GROUPS]
    trace_input = torch.randn(1, 3, 128, 128)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        groups = find_groups(model, trace_input, layer_groups=specs, protect=NANO_B_PROTECT_PATTERNS)
        prune(model, trace_input, {spec.name: spec.bounds[1] for spec in specs}, groups=groups)
    image = torch.randn(1, 3, 640, 640)
    with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        nano = export_onnx(model, image, Path(folder) / "nano_b_upper.onnx")
        sessions = {"Nano-B at every upper bound": session(nano), "YuNet-n": session(yunet)}
        feeds = {name: {s.get_inputs()[0].name: image.numpy()} for name, s in sessions.items()}
        times: dict[str, list[float]] = {name: [] for name in sessions}
        for _ in range(3):  # warm-up
            for name, s in sessions.items():
                s.run(None, feeds[name])
        for _ in range(args.rounds):  # interleaved, so machine load hits both alike
            for name, s in sessions.items():
                start = time.perf_counter()
                s.run(None, feeds[name])
                times[name].append(1000 * (time.perf_counter() - start))
    print("| model | params | ORT 1 thread, 640x640 (median ms) |\n|---|---:|---:|")
    print(f"| Nano-B at every upper bound | {count_params(model):,} | {np.median(times['Nano-B at every upper bound']):.1f} |")
    print(f"| YuNet-n | 73,840 (ONNX) | {np.median(times['YuNet-n']):.1f} |")


if __name__ == "__main__":
    main()
