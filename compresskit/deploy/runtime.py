"""ONNX Runtime sessions, and an ONNX file wrapped as an ``nn.Module``.

:func:`ort_session` opens a CPU session with an explicit thread count (the one place compresskit
sets ORT's threading options). :class:`OrtModule` runs an ONNX file where a torch model is expected
(``task.evaluate(OrtModule("model.int8.onnx"))``, the detector's ``detect``): tensors in, tensors out.

Caveat: an :class:`OrtModule` has no parameters and no gradients; ``train()`` / ``eval()`` do nothing
to the graph (an exported graph is always in eval mode).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import Tensor, nn

__all__ = ["OrtModule", "is_quantized", "ort_session"]

#: Operators that mark a quantized (QDQ or QOperator) graph.
QUANTIZED_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "QLinearConv", "ConvInteger", "MatMulInteger"})


def ort_session(path: str | os.PathLike[str], threads: int = 1) -> "ort.InferenceSession":  # noqa: F821
    """A CPU ``InferenceSession``: ``threads`` intra-op threads, one inter-op thread, all graph optimisations.

    Raises:
        ValueError: ``path`` does not exist, ``threads < 1``, or ONNX Runtime cannot load the file.
    """
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"ONNX file {str(path)!r} does not exist")
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors reach the caller as exceptions
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as error:  # noqa: BLE001 - ORT raises its own untyped errors
        raise ValueError(f"{path}: ONNX Runtime cannot load it ({str(error).splitlines()[0]})") from None


def is_quantized(path: str | os.PathLike[str]) -> bool:
    """Whether an ONNX graph holds quantization operators (QDQ pairs, QLinear / integer ops)."""
    graph = onnx.load(str(path), load_external_data=False).graph
    return any(node.op_type in QUANTIZED_OPS for node in graph.node)


class OrtModule(nn.Module):
    """An ONNX file run by ONNX Runtime behind the ``nn.Module`` call interface.

    ``forward(*inputs)`` feeds the tensors to the graph inputs in order and returns the outputs as
    float tensors: one tensor for a single output, else a tuple in graph order.

    Attributes:
        path: The ONNX file.
        metadata: Its ``metadata_props``.
        quantized: Whether the graph is quantized (:func:`is_quantized`).
        input_shape: The first input's shape, ``None`` (or a name) where an axis is dynamic.

    Example:
        >>> model = OrtModule("model.int8.onnx")  # doctest: +SKIP
        >>> bbox_deltas, cls_logits, landmark_deltas = model(torch.zeros(1, 3, 640, 640))  # doctest: +SKIP
    """

    def __init__(self, path: str | os.PathLike[str], threads: int = 1) -> None:
        super().__init__()
        self.path = Path(path)
        self.session = ort_session(self.path, threads)
        meta = self.session.get_modelmeta()
        self.metadata: dict[str, str] = dict(meta.custom_metadata_map)
        self.quantized = is_quantized(self.path)
        inputs = self.session.get_inputs()
        self.input_names = [i.name for i in inputs]
        self.input_shape = [d if isinstance(d, int) else None for d in inputs[0].shape]

    def forward(self, *inputs: Tensor) -> Tensor | tuple[Tensor, ...]:
        if len(inputs) != len(self.input_names):
            raise ValueError(f"{self.path.name} takes {len(self.input_names)} inputs {self.input_names}, "
                             f"got {len(inputs)}")
        feed = {name: np.ascontiguousarray(t.detach().cpu().numpy()) for name, t in zip(self.input_names, inputs)}
        outputs = tuple(torch.from_numpy(np.asarray(o)) for o in self.session.run(None, feed))
        return outputs[0] if len(outputs) == 1 else outputs

    def extra_repr(self) -> str:
        return f"{self.path.name}, quantized={self.quantized}"
