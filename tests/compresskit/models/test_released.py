"""``NAME:released``: fetched into the torch hub cache with the full sha256 checked; offline, one line."""

from __future__ import annotations

import hashlib
import http.server
import socket
import threading
from pathlib import Path

import pytest

from compresskit.models import released
from compresskit.models.released import ReleasedWeights, fetch_released
from compresskit.models.spec import parse_spec

PAYLOAD = b"released weights " * 1000
SHA256 = hashlib.sha256(PAYLOAD).hexdigest()


@pytest.fixture()
def hub(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "torch" / "hub" / "checkpoints"


def _declare(monkeypatch, url: str, sha256: str = SHA256) -> None:
    release = ReleasedWeights("toy", "toy.pth", sha256, url=url, licence="MIT", source="a toy release")
    monkeypatch.setattr(released, "released_weights", lambda: {"toy": release})


@pytest.fixture()
def server(tmp_path):
    (tmp_path / "served").mkdir()
    (tmp_path / "served" / "toy.pth").write_bytes(PAYLOAD)
    handler = lambda *a: http.server.SimpleHTTPRequestHandler(*a, directory=str(tmp_path / "served"))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/toy.pth"
    httpd.shutdown()


def test_a_file_url_is_fetched_into_the_hub_cache_once(hub, tmp_path, monkeypatch):
    source = tmp_path / "toy.pth"
    source.write_bytes(PAYLOAD)
    _declare(monkeypatch, source.as_uri())
    assert fetch_released("toy") == hub / "toy.pth"
    assert (hub / "toy.pth").read_bytes() == PAYLOAD
    source.unlink()  # the second call reads the cache
    assert fetch_released("toy") == hub / "toy.pth"


def test_an_http_download_with_the_right_hash_is_kept(hub, server, monkeypatch):
    _declare(monkeypatch, server)
    assert fetch_released("toy").read_bytes() == PAYLOAD


def test_a_download_with_another_hash_is_refused_and_not_kept(hub, server, monkeypatch):
    _declare(monkeypatch, server, sha256="0" * 64)
    with pytest.raises(ValueError, match=r"toy:released: the download from http://127\.0\.0\.1:\d+/toy\.pth "
                                         r"failed its sha256 check"):
        fetch_released("toy")
    assert not (hub / "toy.pth").exists()


def test_offline_says_in_one_line_which_file_to_place_where(hub, monkeypatch):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    _declare(monkeypatch, f"http://127.0.0.1:{port}/toy.pth")
    with pytest.raises(ValueError) as error:
        fetch_released("toy")
    assert str(error.value) == (
        f"toy:released: toy.pth is not in the cache (offline or unreachable); place the file from "
        f"http://127.0.0.1:{port}/toy.pth at {hub / 'toy.pth'} (sha256 {SHA256}), or give a local path "
        "instead of 'released'")


def test_a_placed_file_is_hash_checked(hub, monkeypatch):
    _declare(monkeypatch, "")
    with pytest.raises(ValueError, match=r"no direct download URL is known\); place the file \(a toy release\)"):
        fetch_released("toy")
    hub.mkdir(parents=True)
    (hub / "toy.pth").write_bytes(PAYLOAD[:-1])
    with pytest.raises(ValueError, match="differs from the release's"):
        fetch_released("toy")
    (hub / "toy.pth").write_bytes(PAYLOAD)
    assert fetch_released("toy") == hub / "toy.pth"


def test_released_is_the_weights_part_of_a_spec_and_unknown_names_are_listed(hub):
    assert parse_spec("retinaface_mnet025:released").weights == Path("released")
    with pytest.raises(ValueError, match=r"no released weights for 'nope'; known: \['featherface_v1', "
                                         r"'retinaface_mnet025'\]"):
        fetch_released("nope")
