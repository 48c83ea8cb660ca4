"""Bounded image inputs: an image's size is read from its header and checked before it is decoded.

A small file can decode to gigapixels: a 2 MB 12000x12000 JPEG is 432 MB of BGR bytes and 1.7 GB as a
float tensor, a classic denial of service. Every image-reading path (``detect``, ``evaluate``, training
and validation data, image folders, calibration images) asks :func:`image_size` (Pillow's lazy
``Image.open``: the header only, nothing decoded) and either refuses the image (:func:`check_image_size`)
or decodes it reduced (:func:`decode_reduction`: JPEG's DCT scaling decodes at 1/2, 1/4 or 1/8 without
ever holding the full image).

:data:`DEFAULT_MAX_SIZE` (4096 px on the longest side) comes from what the models need: the detectors
train on 640 px crops and are evaluated on WIDER FACE at original size (at most 1024 px wide); the
classifiers resize to a few hundred pixels. 4096 px keeps a 16-megapixel input (48 MB of bytes, 200 MB
as a float tensor); a larger photo is downscaled by ``detect`` and refused by the data paths, each with
its ``--max-size`` / ``max_size`` to raise the limit.

Caveat: formats other than JPEG decode at full size, so :func:`decode_reduction` refuses them beyond
twice the limit instead of reducing them.
"""

from __future__ import annotations

import io
import math
import os
import warnings

from compresskit.utils.optional import require

__all__ = ["DEFAULT_MAX_SIZE", "ImageTooLargeError", "check_image_size", "decode_reduction", "image_size"]

#: The longest image side (pixels) accepted by default (see the module docstring).
DEFAULT_MAX_SIZE = 4096
#: JPEG DCT scaling factors (libjpeg, OpenCV's ``IMREAD_REDUCED_*``, Pillow's ``draft``).
JPEG_REDUCTIONS = (1, 2, 4, 8)


class ImageTooLargeError(ValueError):
    """An image is over the pixel limit; the message names the file, its size, the limit and the option."""


def image_size(path: str | os.PathLike[str], data: bytes | None = None) -> tuple[int, int, str]:
    """``(width, height, format)`` of the image at ``path`` (or its bytes ``data``) from its header.

    Nothing is decoded.

    Raises:
        ValueError: Not a readable image header (names the file).
        ImageTooLargeError: Over Pillow's decompression-bomb limit (about 179 megapixels).
    """
    Image = require("PIL.Image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # we decide, below
            with Image.open(path if data is None else io.BytesIO(data)) as image:
                return image.size[0], image.size[1], image.format or ""
    except Image.DecompressionBombError as error:
        raise ImageTooLargeError(f"{path}: {error}; downscale the image") from None
    except (OSError, SyntaxError) as error:  # Pillow raises SyntaxError for some malformed headers
        raise ValueError(f"{path}: cannot read image: no readable image header ({error})") from None


def _too_large(path: str | os.PathLike[str], width: int, height: int, max_size: int, option: str) -> str:
    return (f"{path}: {width}x{height} pixels, over the limit of {max_size} px on the longest side; "
            f"downscale the image, or raise the limit ({option})")


def check_image_size(path: str | os.PathLike[str], max_size: int = DEFAULT_MAX_SIZE,
                     option: str = "--max-size", data: bytes | None = None) -> tuple[int, int]:
    """``(width, height)`` of ``path`` from its header, refused when its longest side is over ``max_size``.

    Args:
        path: An image file.
        max_size: The longest side accepted, in pixels.
        option: How the user raises the limit (named in the message).
        data: The file's bytes, when already read (else the header is read from ``path``).

    Raises:
        ImageTooLargeError: Over the limit (nothing was decoded).
        ValueError: Not a readable image header.

    Example:
        >>> check_image_size("big.jpg", 4096)  # doctest: +SKIP
        ImageTooLargeError: big.jpg: 12000x12000 pixels, over the limit of 4096 px on the longest side; ...
    """
    width, height, _ = image_size(path, data)
    if max(width, height) > max_size:
        raise ImageTooLargeError(_too_large(path, width, height, max_size, option))
    return width, height


def decode_reduction(path: str | os.PathLike[str], max_size: int = DEFAULT_MAX_SIZE,
                     option: str = "--max-size", data: bytes | None = None) -> tuple[int, int, int]:
    """``(width, height, factor)``: decode ``path`` at ``1/factor`` so its longest side is at most ``max_size``.

    A JPEG gets the smallest DCT factor (1, 2, 4, 8) that fits, or 8 when none does (the caller resizes
    the rest, from at most twice the limit). Other formats decode at full size (factor 1) up to twice
    the limit.

    Raises:
        ImageTooLargeError: Even the reduced decode would be over twice ``max_size`` on its longest side.
    """
    width, height, format_name = image_size(path, data)
    longest = max(width, height)
    factors = JPEG_REDUCTIONS if format_name == "JPEG" else (1,)
    factor = next((f for f in factors if math.ceil(longest / f) <= max_size), factors[-1])
    if math.ceil(longest / factor) > 2 * max_size:
        raise ImageTooLargeError(_too_large(path, width, height, 2 * max_size, option)
                                 + f" (a {format_name or 'non-JPEG'} file is decoded at "
                                 + ("1/8 size at most" if factor > 1 else "full size") + " before downscaling)")
    return width, height, factor
