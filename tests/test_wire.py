"""The hub's HTTP/1.1 protocol (mcphub.wire): a response leaves in one write, and nothing is lost
or reordered by combining — keep-alive, pipelining, `Connection: close`, large bodies."""

from __future__ import annotations

import json
import socket
import subprocess
import time

import httpx2
import pytest
import yaml
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.helpers import PYTHON, REPO, free_port, mcphub_process, wait_until
from tests.hub import sample_server

PROTOCOL = "mcphub.wire:CombiningHttpToolsProtocol"  # what `mcphub serve` hands uvicorn
START_TIMEOUT = 20.0  # seconds for the uvicorn child to accept connections

RECV_TIMEOUT = 10.0  # seconds any single read may wait


async def echo(request: Request) -> JSONResponse:
    body = await request.json()
    return JSONResponse({"echo": body, "pad": "x" * int(body.get("pad", 0))})


app = Starlette(routes=[Route("/echo", echo, methods=["POST"])])


@pytest.fixture(scope="module")
def url() -> str:
    # A process of its own: in a thread of the test process the GIL would hold the client back until
    # both of an uncombined response's writes were out, and the first test could not fail.
    port = free_port()
    proc = subprocess.Popen([PYTHON, "-m", "uvicorn", "tests.test_wire:app", "--port", str(port), "--http", PROTOCOL,
                             "--log-level", "warning"], cwd=REPO)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, "uvicorn did not start"
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=START_TIMEOUT)


def _request(n: int, pad: int = 0, close: bool = False) -> bytes:
    body = json.dumps({"n": n, "pad": pad}).encode()
    extra = b"connection: close\r\n" if close else b""
    return (b"POST /echo HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\n" + extra
            + b"content-length: %d\r\n\r\n" % len(body) + body)


def _connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=RECV_TIMEOUT)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _read_response(sock: socket.socket, buffer: bytearray) -> tuple[bytes, dict[str, object]]:
    """One response off `buffer` (filled from `sock` as needed): (head, parsed JSON body)."""
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed mid-head: {bytes(buffer)!r}"
        buffer += chunk
    head, _, rest = bytes(buffer).partition(b"\r\n\r\n")
    lines = head.lower().split(b"\r\n")
    length = int(next(line.split(b":")[1] for line in lines if line.startswith(b"content-length")))
    while len(rest) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed mid-body"
        rest += chunk
    buffer[:] = rest[length:]
    return head, json.loads(rest[:length])


def test_head_and_body_arrive_in_one_read(url: str):
    # Uncombined, the status line and headers leave in one send and the body in another, and a
    # client waiting in recv() is woken by the first: some first reads hold only the head.
    with _connect(url) as sock:
        partial = 0
        for n in range(50):
            sock.sendall(_request(n))
            first = sock.recv(65536)
            head, _, body = first.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200"), first
            if not body:
                partial += 1
                body = sock.recv(65536)
            assert json.loads(body)["echo"]["n"] == n
        assert partial == 0


def test_keep_alive_and_pipelined_requests_answer_in_order(url: str):
    with _connect(url) as sock:
        buffer = bytearray()
        sock.sendall(b"".join(_request(n) for n in range(20)))  # twenty requests in one write
        for n in range(20):
            head, body = _read_response(sock, buffer)
            assert head.startswith(b"HTTP/1.1 200") and body["echo"]["n"] == n
        sock.sendall(_request(99))
        assert _read_response(sock, buffer)[1]["echo"]["n"] == 99


def test_connection_close_sends_the_whole_answer_before_closing(url: str):
    with _connect(url) as sock:
        sock.sendall(_request(7, pad=300_000, close=True))  # larger than any socket buffer's first write
        data = bytearray()
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = bytes(data).partition(b"\r\n\r\n")
    assert b"connection: close" in head.lower()
    parsed = json.loads(body)
    assert parsed["echo"]["n"] == 7 and len(parsed["pad"]) == 300_000


def test_mcphub_serve_answers_with_combined_writes(tmp_path):
    config = tmp_path / "hub.yaml"
    config.write_text(yaml.safe_dump({"servers": {"sample": sample_server()}}), encoding="utf-8")
    port = free_port()
    with mcphub_process("serve", "-c", str(config), "--port", str(port)):
        base = f"http://127.0.0.1:{port}"
        wait_until(lambda: httpx2.get(f"{base}/readyz", timeout=5).status_code == 200, timeout=START_TIMEOUT,
                   what="hub ready")
        with _connect(base) as sock:
            for n in range(20):
                body = json.dumps({"a": n, "b": 1}).encode()
                sock.sendall(b"POST /sample/add HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\n"
                             b"content-length: %d\r\n\r\n" % len(body) + body)
                head, _, rest = sock.recv(65536).partition(b"\r\n\r\n")
                assert head.startswith(b"HTTP/1.1 200"), head
                assert json.loads(rest)["total"] == n + 1
