"""Released weights by name: ``NAME:released`` -> a file in the torch hub cache, its sha256 checked.

A model family declares its released checkpoints as plain data in the ``compresskit.weights`` entry-point
group (``mypkg = "mypkg.models:RELEASED_WEIGHTS"`` in its ``pyproject.toml``): a dict ``model name -> {"file",
"sha256", "url", "licence", "source"}``. :func:`fetch_released` returns the cached file
(``torch.hub.get_dir()/checkpoints/<file>``, where ``torch.hub.load_state_dict_from_url`` keeps its
downloads), downloading it first when it is missing and a URL is known, and checks the full sha256 of
the file either way (a download with another hash is deleted). Offline, or with no URL known, the error
is one line: which file, with which sha256, to place where. A local path always works instead.

Caveats:
    The URL of a release is whatever its family declares; this module trusts no host, only the hash.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["RELEASED", "WEIGHTS_ENTRY_POINTS", "ReleasedWeights", "cache_dir", "fetch_released", "file_sha256",
           "released_weights", "resolve_weights"]

#: The weights part of a model spec that names a model's released checkpoint (``retinaface_mnet025:released``).
RELEASED = "released"
#: Entry-point group where model families declare their released weights (value: ``module:dict``).
WEIGHTS_ENTRY_POINTS = "compresskit.weights"


@dataclass(frozen=True)
class ReleasedWeights:
    """One released checkpoint.

    Attributes:
        name: The model name it belongs to (``retinaface_mnet025``).
        file: The file name in the cache.
        sha256: The file's full SHA-256, hex.
        url: Where to download it from (``""`` when no direct URL is known: the file is placed by hand).
        licence: Its licence, as its authors state it.
        source: Where it comes from, in words.
    """

    name: str
    file: str
    sha256: str
    url: str = ""
    licence: str = ""
    source: str = ""


def released_weights() -> dict[str, ReleasedWeights]:
    """Every declared released checkpoint, by model name (the ``compresskit.weights`` entry points).

    Raises:
        ValueError, TypeError: A declared entry is malformed (the message names the entry point).
    """
    found: dict[str, ReleasedWeights] = {}
    for entry in metadata.entry_points(group=WEIGHTS_ENTRY_POINTS):
        table = entry.load()
        if not isinstance(table, dict):
            raise TypeError(f"{WEIGHTS_ENTRY_POINTS} entry point {entry.value!r} is not a dict of releases")
        for name, fields in table.items():
            try:
                found[name] = ReleasedWeights(name=name, **fields)
            except TypeError as error:
                raise ValueError(f"{entry.value}[{name!r}]: {error}") from None
    return found


def cache_dir() -> Path:
    """Where released weights are kept: ``torch.hub.get_dir()/checkpoints`` (``$TORCH_HOME`` moves it)."""
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints"


def fetch_released(name: str, download: bool = True) -> Path:
    """The cached file of ``name``'s released weights, downloaded first when missing; its sha256 checked.

    Args:
        name: A model name with declared released weights (see :func:`released_weights`).
        download: Download a missing file when a URL is known.

    Returns:
        The file's path in :func:`cache_dir`.

    Raises:
        ValueError: Unknown name, a file with another sha256, or a missing file that cannot be downloaded
            (one line naming the file, its sha256 and the path to place it at).

    Example:
        >>> fetch_released("retinaface_mnet025")  # doctest: +SKIP
        PosixPath('/home/me/.cache/torch/hub/checkpoints/retinaface_mnet025_official.pth')
    """
    releases = released_weights()
    if name not in releases:
        raise ValueError(f"no released weights for {name!r}; known: {sorted(releases)}")
    release = releases[name]
    target = cache_dir() / release.file
    if not target.is_file() and download and release.url:
        _download(release, target)
    if not target.is_file():
        why = "offline or unreachable" if release.url else "no direct download URL is known"
        where = f" from {release.url}" if release.url else f" ({release.source})" if release.source else ""
        raise ValueError(f"{name}:{RELEASED}: {release.file} is not in the cache ({why}); place the file{where} "
                         f"at {target} (sha256 {release.sha256}), or give a local path instead of "
                         f"'{RELEASED}'")
    actual = file_sha256(target)
    if actual != release.sha256:
        raise ValueError(f"{target}: sha256 {actual} differs from the release's {release.sha256}; "
                         "delete the file (it is not the released checkpoint)")
    return target


def _download(release: ReleasedWeights, target: Path) -> None:
    """``torch.hub.download_url_to_file`` with the full hash checked (a mismatch leaves nothing behind)."""
    import urllib.error

    import torch.hub

    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(release.url, os.fspath(target), hash_prefix=release.sha256, progress=False)
    except (urllib.error.URLError, OSError):
        return  # offline or unreachable: the caller says where to place the file
    except RuntimeError as error:  # torch.hub: "invalid hash value (expected ..., got ...)"; file removed
        raise ValueError(f"{release.name}:{RELEASED}: the download from {release.url} failed its sha256 check "
                         f"({' '.join(str(error).split())}); nothing was kept") from None


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    """The hex SHA-256 of the file ``path``."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def resolve_weights(name: str, weights: Any) -> Any:
    """``weights`` as given, or the fetched file when it is :data:`RELEASED` (``NAME:released``)."""
    return fetch_released(name) if str(weights) == RELEASED else weights
