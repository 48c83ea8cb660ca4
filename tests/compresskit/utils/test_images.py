"""Image sizes from the header, and the pixel limit checked before anything is decoded."""

from __future__ import annotations

import numpy as np
import pytest

from compresskit.utils.images import ImageTooLargeError, check_image_size, decode_reduction, image_size

cv2 = pytest.importorskip("cv2")


def _write(path, height, width):
    assert cv2.imwrite(str(path), np.full((height, width, 3), 128, dtype=np.uint8))
    return path


def test_the_size_comes_from_the_header_without_decoding(tmp_path, monkeypatch):
    from PIL import ImageFile

    path = _write(tmp_path / "a.jpg", 30, 50)
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: pytest.fail("decoded"))
    assert image_size(path) == (50, 30, "JPEG")
    assert image_size(path, data=path.read_bytes()) == (50, 30, "JPEG")
    assert check_image_size(path, max_size=50) == (50, 30)


def test_an_image_over_the_limit_is_refused_naming_file_size_limit_and_option(tmp_path):
    path = _write(tmp_path / "big.png", 300, 700)
    with pytest.raises(ImageTooLargeError) as caught:
        check_image_size(path, max_size=512, option="--max-size")
    assert str(caught.value) == (f"{path}: 700x300 pixels, over the limit of 512 px on the longest side; "
                                 f"downscale the image, or raise the limit (--max-size)")


@pytest.mark.parametrize("side, factor", [(512, 1), (513, 2), (1024, 2), (1025, 4), (4096, 8), (8192, 8)])
def test_a_jpeg_decodes_at_the_smallest_reduction_that_fits(side, factor, tmp_path):
    path = _write(tmp_path / "a.jpg", 16, side)
    assert decode_reduction(path, max_size=512) == (side, 16, factor)


def test_beyond_what_the_reduction_can_bring_under_twice_the_limit_is_refused(tmp_path):
    jpeg = _write(tmp_path / "a.jpg", 8, 64 * 8 + 8)  # /8 -> 65 > 2 * 32
    with pytest.raises(ImageTooLargeError, match="decoded at 1/8 size at most"):
        decode_reduction(jpeg, max_size=32)
    png = _write(tmp_path / "a.png", 8, 65)  # no reduction for PNG: 65 > 2 * 32
    with pytest.raises(ImageTooLargeError, match="PNG file is decoded at full size"):
        decode_reduction(png, max_size=32)
    assert decode_reduction(_write(tmp_path / "b.png", 8, 64), max_size=32) == (64, 8, 1)


def test_a_decompression_bomb_and_a_non_image_are_value_errors(tmp_path):
    import struct
    import zlib

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    bomb = tmp_path / "bomb.png"  # a PNG header claiming 60000 x 60000 (3.6 gigapixels), 60 bytes
    bomb.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 60000, 60000, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))
    with pytest.raises(ImageTooLargeError, match="bomb.png: .*exceeds limit"):
        check_image_size(bomb)
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    with pytest.raises(ValueError, match="notes.jpg: cannot read image: no readable image header"):
        image_size(text)
