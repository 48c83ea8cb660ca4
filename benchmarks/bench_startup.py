"""Start-up time of `compresskit --help` (and `--version`), side by side with bare Python and `import torch`.

Each command is run ``--rounds`` times, interleaved (round-robin, so machine load hits all alike), in a
fresh process; the median and p90 wall time per command are printed with the ratio to bare Python.
The goal of issue 12 is `compresskit --help` under 1 s (it used to import torch and onnx: 3-5 s).

    .venv/bin/python benchmarks/bench_startup.py --rounds 21
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EXECUTABLE = Path(sys.executable)
COMMANDS = {
    "python -c pass": [str(EXECUTABLE), "-c", "pass"],
    "compresskit --help": [str(EXECUTABLE.parent / "compresskit"), "--help"],
    "compresskit --version": [str(EXECUTABLE.parent / "compresskit"), "--version"],
    "compresskit prune --help": [str(EXECUTABLE.parent / "compresskit"), "prune", "--help"],
    "python -c 'import torch'": [str(EXECUTABLE), "-c", "import torch"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=21)
    args = parser.parse_args()
    samples: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(args.rounds):
        for name, command in COMMANDS.items():
            started = time.perf_counter()
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL, cwd=REPO)
            samples[name].append(time.perf_counter() - started)
    base = statistics.median(samples["python -c pass"])
    print(f"{'command':<28} {'median s':>9} {'p90 s':>7} {'x python':>9}")
    for name, values in samples.items():
        p90 = sorted(values)[int(0.9 * (len(values) - 1))]
        print(f"{name:<28} {statistics.median(values):>9.3f} {p90:>7.3f} {statistics.median(values) / base:>9.1f}")


if __name__ == "__main__":
    main()
