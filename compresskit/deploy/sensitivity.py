"""Which nodes to keep in FP32: per-node INT8 sensitivity measured on calibration inputs.

:func:`auto_exclude` replaces guessing ``--exclude`` globs with a measurement, in the spirit of
mixed-precision searches that rank layers by their quantization error (e.g. HAWQ, Dong et al. 2019,
and ONNX Runtime's ``qdq_loss_debug`` tools, which compare FP32 and QDQ activations per tensor); here the
measure is end to end, on the model's outputs:

1. the FP32 file is pre-processed once and calibrated once (ranges cached, so every trial below
   quantizes with the *same* activation ranges);
2. :func:`output_error` of the fully quantized model against FP32 on ``evaluation`` inputs; if it is
   within ``budget`` nothing is excluded;
3. sensitivity of each quantized node: the output error with that node alone quantized, every other
   node in FP32 (one trial quantization per node: the damage the node does by itself);
4. greedy, most sensitive first: nodes join the FP32 set until the error is within ``budget`` (or
   ``max_nodes`` are kept); then each earlier member is dropped again if the error stays within budget
   without it;
5. the INT8 file is written by :func:`compresskit.deploy.quantize.quantize_onnx` with exactly those nodes.

Caveats:
    * The budget is on outputs, not on task accuracy: a detector's AP must still be measured
      (``benchmarks/bench_int8.py --auto-exclude`` does, on WIDER FACE).
    * Sensitivities are measured one node at a time; errors of several quantized nodes interact (a node
      kept in FP32 also leaves its neighbours' tensors in FP32 or not), which is why step 4 re-measures
      every candidate set instead of summing.
    * Keeping a node in FP32 adds a dequantize / quantize pair around it; fewer INT8 nodes can be
      slower or faster (measure with ``compresskit benchmark``).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from compresskit.deploy._qdq import (
    calibration_method,
    calibration_reader,
    feed,
    pre_process,
    quantize_qdq,
    working_directory,
)

__all__ = ["AutoExcludeResult", "NodeSensitivity", "auto_exclude", "output_error"]

Sample = np.ndarray | Sequence[np.ndarray]


@dataclass(frozen=True)
class NodeSensitivity:
    """One quantized node and the output error of the model with it alone quantized (the rest FP32)."""

    node: str
    op_type: str
    error: float


@dataclass(frozen=True)
class AutoExcludeResult:
    """What :func:`auto_exclude` measured and wrote.

    Attributes:
        path: The INT8 file.
        excluded: Node names kept in FP32, in the order they were added.
        full_error: :func:`output_error` of the fully quantized model.
        error: :func:`output_error` of the written model.
        budget: The error asked for.
        ranking: Every quantized node's :class:`NodeSensitivity`, most sensitive first.
    """

    path: Path
    excluded: tuple[str, ...]
    full_error: float
    error: float
    budget: float
    ranking: tuple[NodeSensitivity, ...]

    @property
    def met(self) -> bool:
        """Whether the written model's output error is within the budget."""
        return self.error <= self.budget


def output_error(actual: Sequence[Sequence[np.ndarray]], expected: Sequence[Sequence[np.ndarray]]) -> float:
    """Worst normalised squared error over outputs: ``max_k sum (a_k - e_k)^2 / sum (e_k - mean e_k)^2``.

    Sums run over every evaluation input. 0 means equal outputs; 1 means as far off as predicting each
    output's mean. ``actual[i][k]`` is output ``k`` for input ``i``.

    Example:
        >>> e = [[np.array([0.0, 2.0])]]
        >>> output_error([[np.array([0.0, 1.0])]], e)
        0.5
    """
    worst = 0.0
    for k in range(len(expected[0])):
        target = np.concatenate([np.ravel(outputs[k]).astype(np.float64) for outputs in expected])
        measured = np.concatenate([np.ravel(outputs[k]).astype(np.float64) for outputs in actual])
        spread = float(np.sum((target - target.mean()) ** 2)) or 1.0
        worst = max(worst, float(np.sum((measured - target) ** 2)) / spread)
    return worst


def auto_exclude(model_path: str | os.PathLike[str], out_path: str | os.PathLike[str], calibration: Sequence[Sample],
                 budget: float = 0.01, evaluation: Sequence[Sample] | None = None, method: str = "minmax",
                 max_nodes: int = 16, progress: Callable[[str], None] | None = None) -> AutoExcludeResult:
    """Quantize ``model_path`` to INT8 keeping in FP32 the fewest nodes that hold ``budget`` (see module doc).

    Args:
        model_path: The FP32 ``.onnx`` file.
        out_path: The INT8 ``.onnx`` file to write.
        calibration: Calibration inputs (as :func:`~compresskit.deploy.quantize.quantize_onnx` takes them).
        budget: Largest accepted :func:`output_error` against FP32 (``> 0``).
        evaluation: Inputs the error is measured on (default: the first 8 calibration inputs).
        method: Calibration method (:data:`~compresskit.deploy.quantize.CALIBRATION_METHODS`).
        max_nodes: Most nodes kept in FP32.
        progress: Called with one line per stage (e.g. ``click.echo``).

    Returns:
        An :class:`AutoExcludeResult` (``met`` is false when ``max_nodes`` nodes did not reach the budget;
        the file is written either way, with the best set found).

    Example:
        >>> result = auto_exclude("m.onnx", "m.int8.onnx", calibration_images("images/", meta))  # doctest: +SKIP
        >>> result.excluded, result.error <= result.budget  # doctest: +SKIP
        (('/body/stage1/stage1.0/Conv',), True)
    """
    from compresskit.deploy.quantize import quantize_onnx

    if not budget > 0:
        raise ValueError(f"budget must be > 0, got {budget!r}")
    if max_nodes < 0:
        raise ValueError(f"max_nodes must be >= 0, got {max_nodes!r}")
    samples = list(calibration)
    if not samples:
        raise ValueError("no calibration samples: give at least one input")
    evaluation = list(evaluation) if evaluation is not None else samples[:8]
    say = progress or (lambda line: None)
    model_path = Path(model_path).resolve()
    with tempfile.TemporaryDirectory(prefix="compresskit_sensitivity_") as scratch, working_directory(scratch):
        trials = _Trials(model_path, Path(scratch), samples, evaluation, calibration_method(method))
        full_error = trials.error(())
        say(f"full INT8: output error {full_error:.4g} (budget {budget:g}), {len(trials.candidates)} quantized nodes")
        ranking: tuple[NodeSensitivity, ...] = ()
        excluded: list[str] = []
        error = full_error
        if full_error > budget and max_nodes > 0:
            ranking = tuple(sorted((NodeSensitivity(node, op, trials.error_alone(node))
                                    for node, op in trials.candidates.items()), key=lambda s: -s.error))
            say("most sensitive: " + ", ".join(f"{s.node} ({s.error:.3g})" for s in ranking[:5]))
            excluded, error = _greedy(ranking, trials, full_error, budget, max_nodes, say)
    patterns = [_literal(name) for name in excluded]
    path = quantize_onnx(model_path, out_path, samples, method=method, exclude=patterns)
    return AutoExcludeResult(Path(path), tuple(excluded), full_error, error, budget, ranking)


def _greedy(ranking: Sequence[NodeSensitivity], trials: _Trials, full_error: float, budget: float, max_nodes: int,
            say: Callable[[str], None]) -> tuple[list[str], float]:
    """Nodes in ``ranking`` order until the error is within ``budget``; then drop the ones not needed."""
    excluded: list[str] = []
    error = full_error
    for sensitivity in ranking[:max_nodes]:
        if error <= budget:
            break
        excluded.append(sensitivity.node)
        error = trials.error(excluded)
        say(f"keep {sensitivity.node} in FP32: output error {error:.4g}")
    if error <= budget:
        for node in reversed(excluded[:-1]):
            fewer = [name for name in excluded if name != node]
            trial = trials.error(fewer)
            if trial <= budget:
                excluded, error = fewer, trial
                say(f"not needed: {node} (output error {error:.4g} without it)")
    return excluded, error


class _Trials:
    """Trial quantizations of one pre-processed model, all with the same cached activation ranges."""

    def __init__(self, model_path: Path, scratch: Path, samples: Sequence[Sample], evaluation: Sequence[Sample],
                 calibrate_method: object) -> None:
        import onnx

        self.prepared = pre_process(model_path, scratch / "prepared.onnx")
        self.names = [i.name for i in onnx.load(str(self.prepared), load_external_data=False).graph.input]
        self.scratch, self.cache = scratch, scratch / "ranges.json"
        self.settings = {"calibrate_method": calibrate_method, "per_channel": True}
        self.evaluation = [feed(self.names, sample, "an evaluation sample") for sample in evaluation]
        self.target = self._run(self.prepared)
        full = self._quantize((), calibration_reader(self.names, samples))
        self.candidates = _quantized_nodes(full)

    def error(self, excluded: Sequence[str]) -> float:
        """:func:`output_error` of the INT8 model with ``excluded`` kept in FP32."""
        return output_error(self._run(self._quantize(excluded)), self.target)

    def error_alone(self, node: str) -> float:
        """:func:`output_error` of the model with only ``node`` quantized."""
        return output_error(self._run(self._quantize((), only=node)), self.target)

    def _quantize(self, excluded: Sequence[str], reader: object = None, only: str | None = None) -> Path:
        path = self.scratch / "trial.onnx"
        settings = {**self.settings, "nodes_to_exclude": list(excluded)}
        if only is not None:
            settings["nodes_to_quantize"] = [only]
        quantize_qdq(self.prepared, path, reader, settings, self.cache)
        return path

    def _run(self, path: Path) -> list[list[np.ndarray]]:
        from compresskit.deploy.runtime import ort_session

        session = ort_session(path, threads=1)
        return [session.run(None, inputs) for inputs in self.evaluation]


def _quantized_nodes(path: Path) -> dict[str, str]:
    """Name -> op type of every node of a QDQ graph that reads a ``DequantizeLinear`` output (Q/DQ excluded)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    dequantized = {out for node in graph.node if node.op_type == "DequantizeLinear" for out in node.output}
    return {node.name: node.op_type for node in graph.node
            if node.op_type not in ("QuantizeLinear", "DequantizeLinear") and node.name
            and any(name in dequantized for name in node.input)}


def _literal(name: str) -> str:
    """An ``fnmatch`` glob matching exactly ``name``."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)
