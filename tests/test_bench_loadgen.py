"""bench/loadgen.py against a tiny uvicorn app on 127.0.0.1: it must catch what would make a figure wrong."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import anyio
import pytest
import uvicorn

from bench.loadgen import JSONPoster, LoadError, add_call

pytestmark = pytest.mark.anyio

KEY = "bench-test-key"
CALLS = 300
CONCURRENCY = 10
TIMEOUT = 20.0  # seconds for any one test's calls: well under 1 s here; the bound only stops a hang


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """`add` as the benchmark calls it, and ways to get it wrong: /add, /chunked, /close, /stale, /fail."""
    assert scope["type"] == "http"
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    if dict(scope["headers"]).get(b"authorization") != f"Bearer {KEY}".encode():
        await _respond(send, 401, b'{"detail": "no key"}')
        return
    args = json.loads(body)
    answer = str(args["a"] + args["b"]).encode()
    path = scope["path"]
    if path == "/stale":  # the answer to the previous request: what a proxy mixing up sessions would send
        answer, app.previous = app.previous, answer  # type: ignore[attr-defined]
    if path == "/fail":
        await _respond(send, 500, b'{"detail": "boom"}')
    elif path == "/chunked":  # no Content-Length: uvicorn frames the body as chunks
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        for i in range(len(answer)):
            await send({"type": "http.response.body", "body": answer[i : i + 1], "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    else:
        await _respond(send, 200, answer, close=path == "/close")


app.previous = b"0"  # type: ignore[attr-defined]


async def _respond(send: Any, status: int, body: bytes, *, close: bool = False) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class _Server(uvicorn.Server):
    def capture_signals(self) -> Any:  # uvicorn's would re-raise a signal in the test process afterwards
        return _no_signals()


@contextmanager
def _no_signals() -> Iterator[None]:
    yield


@asynccontextmanager
async def serving() -> AsyncIterator[str]:
    """The app on a listening socket of a random loopback port: connections queue until uvicorn accepts."""
    server = _Server(uvicorn.Config(app, lifespan="off", log_level="warning", access_log=False))
    # proto=IPPROTO_TCP, or asyncio leaves Nagle on for accepted connections (it sets TCP_NODELAY only when
    # sock.proto says TCP) and each answer, written as head then body, waits ~40 ms for a delayed ACK
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)
        async with anyio.create_task_group() as tg:
            tg.start_soon(server.serve, [sock])
            try:
                yield f"http://127.0.0.1:{sock.getsockname()[1]}"
            finally:
                server.should_exit = True


async def drive(url: str, *, api_key: str | None = KEY) -> JSONPoster:
    """CALLS benchmark calls from CONCURRENCY tasks, as bench/run.py makes them."""
    requests = iter(range(CALLS))
    async with JSONPoster(url, concurrency=CONCURRENCY, api_key=api_key) as poster:
        call = add_call(poster)

        async def worker() -> None:
            for i in requests:
                await call(i)

        with anyio.fail_after(TIMEOUT):
            async with anyio.create_task_group() as tg:
                for _ in range(CONCURRENCY):
                    tg.start_soon(worker)
    return poster


async def test_every_call_is_answered_over_its_own_kept_alive_connection():
    async with serving() as url:
        poster = await drive(f"{url}/add")
    assert poster.reconnects == 0


async def test_a_chunked_answer_is_read_whole():
    async with serving() as url:
        await drive(f"{url}/chunked")


async def test_an_answer_meant_for_another_request_fails_the_run():
    async with serving() as url:
        with pytest.raises(ExceptionGroup) as caught:
            await drive(f"{url}/stale")
    assert caught.group_contains(LoadError, match=r"call \d+: expected \d+, got b'\d+'")


async def test_an_error_status_fails_the_run():
    async with serving() as url:
        with pytest.raises(ExceptionGroup) as caught:
            await drive(f"{url}/fail")
    assert caught.group_contains(LoadError, match="HTTP 500")


async def test_the_key_is_sent_and_without_it_the_run_fails():
    async with serving() as url:
        with pytest.raises(ExceptionGroup) as caught:
            await drive(f"{url}/add", api_key=None)
    assert caught.group_contains(LoadError, match="HTTP 401")


async def test_a_connection_the_server_closes_is_opened_again():
    async with serving() as url:
        poster = await drive(f"{url}/close")
    assert poster.reconnects >= CALLS - CONCURRENCY


def test_only_loopback_http_is_accepted():
    with pytest.raises(ValueError, match="loopback"):
        JSONPoster("http://example.org:80/add", concurrency=1)
