"""The latency cache: one JSON file of direct measurements per :class:`LatencyKey`.

A key is what a measurement depends on: the model's name and architecture fingerprint
(:func:`architecture_fingerprint`), the timed input shape, the ONNX Runtime thread count and the
onnxruntime version. Its file lives under the cache folder (:func:`default_cache_dir` unless the
recipe names one) and is named after the model and a hash of the key.

File format (``"format": CACHE_FORMAT``)::

    {"format": "compresskit.latency/1", "key": {...}, "reference_ms": 12.3,
     "entries": {"<channel configuration hash>": {"ratio", "candidate_ms", "reference_ms", "rates"}}}

Contract: a file whose stored format or key differs from the one asked for is never read (a hash
collision in the file name, another machine's settings); an unreadable file is a one-line
``ValueError``; writes are atomic. Changing any of this invalidates the caches users keep.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from compresskit.utils.atomic import atomic_write_text

__all__ = ["CACHE_FORMAT", "LatencyKey", "architecture_fingerprint", "default_cache_dir", "load_cache",
           "save_cache"]

CACHE_FORMAT = "compresskit.latency/1"


@dataclass(frozen=True)
class LatencyKey:
    """What a latency measurement depends on; one cache file per key.

    Attributes:
        model: The caller's model name plus its architecture fingerprint.
        input_shape: Shape of the timed input, e.g. ``(1, 3, 640, 640)``.
        threads: ONNX Runtime intra-op threads.
        runtime: ``"onnxruntime <version>"``.
    """

    model: str
    input_shape: tuple[int, ...]
    threads: int
    runtime: str

    def to_dict(self) -> dict[str, Any]:
        """The key as stored in the cache file."""
        return {"model": self.model, "input_shape": list(self.input_shape), "threads": self.threads,
                "runtime": self.runtime}

    def file_name(self) -> str:
        """``<model name>-<16 hex digits of the key's hash>.json``."""
        digest = hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]
        stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in self.model.split("@")[0])[:40]
        return f"{stem}-{digest}.json"


def architecture_fingerprint(model: nn.Module) -> str:
    """Short hash of every module's type and the channel/kernel/stride/group settings of its layers."""
    parts = []
    for name, module in model.named_modules():
        settings = [type(module).__name__]
        for attribute in ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups",
                          "in_features", "out_features", "num_features"):
            if hasattr(module, attribute):
                settings.append(f"{attribute}={getattr(module, attribute)}")
        parts.append(f"{name}:{','.join(settings)}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:12]


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/compresskit/latency`` (``~/.cache/compresskit/latency``)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "compresskit" / "latency"


def load_cache(path: Path | None, key: LatencyKey) -> tuple[dict[str, dict[str, Any]], float | None]:
    """``(entries, reference_ms)`` stored in ``path`` for ``key``; ``({}, None)`` when there are none.

    Raises:
        ValueError: The file exists but is not readable JSON (the message says to delete it).
    """
    if path is None or not path.is_file():
        return {}, None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ValueError(f"{path}: latency cache is unreadable ({error}); delete it") from None
    if not isinstance(data, dict) or data.get("format") != CACHE_FORMAT or data.get("key") != key.to_dict():
        return {}, None  # another key (a hash collision in the file name) or format: never read
    return {str(k): dict(v) for k, v in data.get("entries", {}).items()}, data.get("reference_ms")


def save_cache(path: Path | None, key: LatencyKey, entries: dict[str, dict[str, Any]],
               reference_ms: float | None) -> None:
    """Write the cache file atomically (creating its folder); nothing when ``path`` is None."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps({"format": CACHE_FORMAT, "key": key.to_dict(), "reference_ms": reference_ms,
                                        "entries": entries}, indent=1))
