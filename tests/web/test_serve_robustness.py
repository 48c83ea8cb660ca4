"""The demo server (``web/serve.mjs``) survives any request.

Starts ``node web/serve.mjs --data <tmp> --port 0`` and sends raw requests over sockets to 127.0.0.1
only: malformed percent-encodings, directories, a 10,000-character path, methods other than GET/HEAD,
``..`` traversal (raw, percent-encoded, backslash), symlinks out of the data folder, NUL bytes, clients
that hang up mid-request or mid-download (their files must be closed again), and a seeded fuzz loop
(300 requests, at most ~20 s). Every abusive request gets a 4xx answer (or a closed connection where
no answer is possible), never a 5xx; after each group the process is still running and good requests
return 200 with the right bytes. Skips only where ``node`` is not installed (``.ci/run`` installs it).
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import shutil
import socket
import struct
import subprocess
import time
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
WEB = REPO_ROOT / "web"
HELLO = b"hello from the data folder\n"
SECRET = b"SECRET-OUTSIDE-THE-ROOTS-5e1b\n"
BIG_SIZE = 32 * 1024 * 1024  # larger than the loopback socket buffers, so a download is mid-stream when cut
FUZZ_COUNT, FUZZ_SECONDS = 300, 20.0


class Server:
    """One ``node serve.mjs`` process on a free loopback port; its stdout and stderr go to files in ``root``."""

    def __init__(self, node: str, root: Path) -> None:
        self.root = root
        self.stdout, self.stderr = open(root / "stdout.txt", "wb"), open(root / "stderr.txt", "wb")
        self.process = subprocess.Popen([node, str(WEB / "serve.mjs"), "--data", str(root / "data"), "--port", "0"],
                                        cwd=WEB, stdin=subprocess.DEVNULL, stdout=self.stdout, stderr=self.stderr)
        self.port = None
        deadline = time.monotonic() + 10
        while self.port is None and self.process.poll() is None and time.monotonic() < deadline:
            match = re.search(rb"http://127\.0\.0\.1:(\d+)/", (root / "stdout.txt").read_bytes())
            self.port = match and int(match.group(1))  # "serving <web> at http://127.0.0.1:<port>/"
            time.sleep(0.05)
        if self.port is None:
            self.stop()
            pytest.fail(f"serve.mjs did not start: {self.log()}")

    def log(self) -> str:
        return (self.root / "stderr.txt").read_text(errors="replace")[-2000:]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.stdout.close()
        self.stderr.close()


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    """The data folder (files, a subfolder, symlinks in and out of it) and the server serving it."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed (apt-get install -y nodejs; .ci/run installs it)")
    root = tmp_path_factory.mktemp("serve")
    data, outside = root / "data", root / "outside"
    (data / "sub").mkdir(parents=True)
    outside.mkdir()
    (data / "hello.txt").write_bytes(HELLO)
    (data / "sub" / "inner.txt").write_bytes(HELLO)
    (data / "big.bin").write_bytes(bytes(range(256)) * (BIG_SIZE // 256))
    (outside / "secret.txt").write_bytes(SECRET)
    (data / "alias.txt").symlink_to(data / "hello.txt")  # stays inside the root: served
    (data / "leak.txt").symlink_to(outside / "secret.txt")  # leaves the root: refused
    (data / "leakdir").symlink_to(outside, target_is_directory=True)
    (data / "leakrel.txt").symlink_to(Path("..") / "outside" / "secret.txt")
    running = [Server(node, root)]
    yield node, root, running
    running[-1].stop()


@pytest.fixture
def server(servers):
    """The running server. Each test ends by checking it is still alive; should one have killed it anyway,
    the next test starts a new one, so that every failing request shows up, not only the first."""
    node, root, running = servers
    if running[-1].process.poll() is not None:
        running[-1].stop()
        running.append(Server(node, root))
    return running[-1]


def _read_response(sock: socket.socket, head: bool = False) -> tuple[int | None, dict[str, str], bytes]:
    """(status, headers, body) of one response; status None where the server closed without answering."""
    buffer = b""
    try:
        while b"\r\n\r\n" not in buffer:
            chunk = sock.recv(65536)
            if not chunk:
                return None, {}, buffer
            buffer += chunk
    except (TimeoutError, ConnectionError):
        return None, {}, buffer
    header, body = buffer.split(b"\r\n\r\n", 1)
    lines = header.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = 0 if head else int(headers.get("content-length", -1))  # -1: read until the server closes
    try:
        while length < 0 or len(body) < length:
            chunk = sock.recv(1 << 20)
            if not chunk:
                break
            body += chunk
    except (TimeoutError, ConnectionError):
        pass
    return status, headers, body


def _exchange(server: Server, raw: bytes, head: bool = False, timeout: float = 5.0):
    with socket.create_connection(("127.0.0.1", server.port), timeout=timeout) as sock:
        try:
            sock.sendall(raw)
        except OSError:  # the server hung up before reading it all (node refuses oversized headers early)
            return None, {}, b""
        return _read_response(sock, head)


def _request(server: Server, target: bytes | str, method: str = "GET"):
    if isinstance(target, str):
        target = target.encode("latin-1")
    raw = method.encode() + b" " + target + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    return _exchange(server, raw, head=method == "HEAD")


def _assert_refused(server: Server, response, what) -> None:
    status, _, body = response
    assert status is None or 400 <= status < 500, f"{what!r}: answered {status} {body[:200]!r}\n{server.log()}"
    assert SECRET not in body, f"{what!r} served the file outside the roots"


def _assert_alive(server: Server) -> None:
    assert server.process.poll() is None, f"serve.mjs exited ({server.process.returncode}):\n{server.log()}"
    status, headers, body = _request(server, "/")
    assert (status, body) == (200, (WEB / "index.html").read_bytes()), f"GET / answered {status}\n{server.log()}"
    assert headers["content-type"].startswith("text/html")
    assert _request(server, "/data/hello.txt")[::2] == (200, HELLO)


def test_good_requests_are_served(server):
    status, headers, body = _request(server, "/app.js")
    assert (status, body) == (200, (WEB / "app.js").read_bytes())
    assert headers["content-type"].startswith("text/javascript")
    assert _request(server, "/data/alias.txt")[::2] == (200, HELLO)  # a symlink that stays inside the root
    assert _request(server, "/data/sub/inner.txt?x=%zz#frag")[::2] == (200, HELLO)
    assert _request(server, "/data/hello%2Etxt")[::2] == (200, HELLO)
    status, headers, body = _request(server, "/data/hello.txt", method="HEAD")
    assert (status, headers["content-length"], body) == (200, str(len(HELLO)), b"")
    status, headers, body = _request(server, "/data/big.bin")
    assert (status, len(body)) == (200, BIG_SIZE)
    assert hashlib.sha256(body).digest() == hashlib.sha256((server.root / "data" / "big.bin").read_bytes()).digest()
    assert _request(server, "/data/missing.txt")[0] == 404
    _assert_alive(server)


@pytest.mark.parametrize("target", ["/%E0%A4%A", "/%", "/%zz", "/data/%E0%A4%A", "/data/%C0%AF", "/%ff%fe", "/a%2"])
def test_malformed_percent_encoding_is_400(server, target):
    assert _request(server, target)[0] == 400
    _assert_alive(server)


@pytest.mark.parametrize("target", ["/data/", "/data/sub", "/data/sub/", "/data/sub/.", "/data/.", "/data/sub/..",
                                    "/data//", "/data/sub//"])
def test_directory_is_not_served(server, target):
    status = _request(server, target)[0]
    assert status in (403, 404), f"{target}: {status}"
    _assert_alive(server)


def test_very_long_path_is_414(server):
    assert _request(server, "/" + "a" * 10_000)[0] == 414
    assert _request(server, "/data/" + "%41" * 3_000)[0] == 414
    _assert_refused(server, _request(server, "/" + "b" * 100_000), "100,000-character path")  # node's own 431
    _assert_alive(server)


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE", "CONNECT"])
def test_other_methods_are_405(server, method):
    target = "127.0.0.1:1" if method == "CONNECT" else "/data/hello.txt"
    status, headers, body = _request(server, target, method)
    if method == "CONNECT":  # node's parser may refuse CONNECT itself (then there is no Allow header)
        _assert_refused(server, (status, headers, body), method)
    else:
        assert status == 405, f"{method}: {status}"
        assert set(headers["allow"].replace(" ", "").split(",")) == {"GET", "HEAD"}
    _assert_alive(server)


TRAVERSALS = [
    "/data/../outside/secret.txt", "/data/%2e%2e/outside/secret.txt", "/data/%2E%2E/outside/secret.txt",
    "/data/..%2foutside%2fsecret.txt", "/data/%2e%2e%2foutside%2fsecret.txt", "/data/..\\outside\\secret.txt",
    "/data/..%5coutside%5csecret.txt", "/data/sub/..%2f..%2f..%2foutside/secret.txt", "/data/....//outside/secret.txt",
    "/../../../../../../etc/passwd", "/..%2f..%2f..%2f..%2f..%2fetc%2fpasswd", "/%2e%2e/pyproject.toml",
    "/..%2fpyproject.toml", "/..\\pyproject.toml", "/..%5cpyproject.toml", "/data/%252e%252e/outside/secret.txt",
    "//etc/passwd",
    "http://127.0.0.1/../../etc/passwd", "/data/hello.txt/../../outside/secret.txt",
]


@pytest.mark.parametrize("target", TRAVERSALS)
def test_traversal_is_refused(server, target):
    status, headers, body = _request(server, target)
    _assert_refused(server, (status, headers, body), target)
    assert b"root:" not in body and b"[project]" not in body, f"{target} served a file outside the roots"
    _assert_alive(server)


@pytest.mark.parametrize("target", ["/data/leak.txt", "/data/leakdir/secret.txt", "/data/leakrel.txt",
                                    "/data/leakdir/", "/data/leakdir"])
def test_symlink_out_of_the_root_is_refused(server, target):
    status, headers, body = _request(server, target)
    _assert_refused(server, (status, headers, body), target)
    assert status in (403, 404)
    _assert_alive(server)


@pytest.mark.parametrize("target", [b"/data/hello.txt%00", b"/data/hello.txt%00.png", b"/%00", b"/data/\x00",
                                    b"/index.html\x00"])
def test_nul_byte_is_refused(server, target):
    _assert_refused(server, _request(server, target), target)
    _assert_alive(server)


@pytest.mark.parametrize("target", [b"http://[", b"http://[::1", b"//", b"///", b"http://a:99999999/", b"*",
                                    b"\xff\xfe", "/\u00e9".encode(), b"http:", b"/a/../../.."])
def test_odd_request_targets(server, target):
    """Targets that no URL parser likes; the last three mean "/" to a WHATWG parser, hence the 200."""
    status, _, body = _request(server, target)
    assert status is None or 400 <= status < 500 or (status, body) == (200, (WEB / "index.html").read_bytes()), \
        f"{target!r}: {status}"
    _assert_alive(server)


def _reset(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close sends RST
    sock.close()


def _open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_clients_that_hang_up_early(server):
    big = b"GET /data/big.bin HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    fds = _open_fds(server.process.pid) if Path("/proc/self/fd").is_dir() else None
    for _ in range(5):
        for raw in (b"GET / HTTP/1.1\r\nHost: 127.0", b"GET /data/big.bin HTTP/1.1\r\n", b"GET /data/big.bin"):
            with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
                sock.sendall(raw)  # half the headers, then gone
        for how in ("close", "reset", "read-then-close", "read-then-reset", "pipelined-request-line"):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
            sock.sendall(big)
            if how != "close" and how != "reset":
                sock.recv(65536)  # the download is under way
            if how == "pipelined-request-line":  # the next request's line only, while the file streams
                sock.sendall(b"GET /data/hello.txt HTTP/1.1\r\n")
            if how == "close" or how == "read-then-close":
                sock.close()
            else:
                _reset(sock)
        # a second client gives up after its request line while another one is streaming the big file
        streaming = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        streaming.sendall(big)
        streaming.recv(65536)
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            sock.sendall(b"GET /data/big.bin HTTP/1.1\r\n")
        _reset(streaming)
    _assert_alive(server)
    if fds is not None:  # aborted downloads close their files (within a few seconds)
        deadline = time.monotonic() + 5
        while _open_fds(server.process.pid) > fds + 4 and time.monotonic() < deadline:
            time.sleep(0.1)
        after = _open_fds(server.process.pid)
        assert after <= fds + 4, f"{fds} open files before the aborted downloads, {after} after"


def _fuzz_request(rng: random.Random) -> bytes:
    junk = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40)))
    pieces = ["%", "%2", "%zz", "%2e", "%2E%2e", "..", "/", "\\", "%5c", "%2f", "%00", "%C0%AF", "%E0%A4", "%ff",
              "?", "#", "data", "sub", "leak.txt", "leakdir", ";", "%25", "~", "."]
    kind = rng.randrange(4)
    if kind == 0:  # random bytes as the request target, with sound framing
        target = b"/fz" + junk.replace(b" ", b"_")
    elif kind == 1:  # a path assembled from tricky pieces
        target = ("/data/fz" if rng.random() < 0.5 else "/fz").encode() + \
            "".join(rng.choice(pieces) for _ in range(rng.randrange(1, 12))).encode()
    elif kind == 2:  # a random method, sound target
        method = rng.choice([b"POST", b"PUT", b"DELETE", b"get", b"G\xc3T", b"OPTIONS", b"PROPFIND", junk[:8]])
        return method + b" /data/hello.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    else:  # random bytes, headers terminated
        return junk + b"\r\n\r\n"
    return b"GET " + target + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"


def test_fuzz(server):
    rng = random.Random(20240523)
    index = (WEB / "index.html").read_bytes()
    start, sent = time.monotonic(), 0
    while sent < FUZZ_COUNT and time.monotonic() - start < FUZZ_SECONDS:
        raw = _fuzz_request(rng)
        status, headers, body = _exchange(server, raw, timeout=2.0)
        sent += 1
        if status == 200:  # a path from pieces may normalise to "/" ("/fz/..")
            assert body == index, f"{raw!r} served {body[:100]!r}"
        _assert_refused(server, (None if status == 200 else status, headers, body), raw)
        assert server.process.poll() is None, f"serve.mjs exited after {raw!r}:\n{server.log()}"
    assert sent >= 50, f"only {sent} fuzz requests in {FUZZ_SECONDS} s"
    _assert_alive(server)


def test_still_serving_after_everything(server):
    _assert_alive(server)
    status, _, body = _request(server, "/data/big.bin")
    assert (status, len(body)) == (200, BIG_SIZE)
