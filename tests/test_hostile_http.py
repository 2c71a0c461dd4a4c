"""Issue 17, the HTTP half: what an attacker on the network sends, replayed (findings 4, 5, 6, 7, part of 9).

In-process (the app through an ASGI transport, the sample server in-process) for what the app decides:
Content-Type, Host, Origin, body size, concurrent calls, log lines, the listing and docs leaks. On a
real socket (uvicorn on 127.0.0.1, configured by `serve.uvicorn_config` as `mcphub serve` does) for
what only the connection shows: header limits, slow-loris timeouts, a huge body refused before it is
read. One `mcphub serve` process checks that the real command wires both in.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx2
import pytest
import yaml

from mcphub.app import create_app
from mcphub.guard import Hosts
from mcphub.invoker import Invoker
from mcphub.logs import FORMAT, LineFormatter
from mcphub.serve import _Server, uvicorn_config
from tests.helpers import free_port, mcphub_process, wait_until
from tests.hub import HUB_START_TIMEOUT, IN_PROCESS_BASE_URL, RunningHub, assert_error, running_hub, sample_server

pytestmark = pytest.mark.anyio

KEY, OTHER_KEY, TOOLS_KEY = "key-all-0123456789", "key-other-0123456789", "key-tools-0123456789"
WAIT = 10.0  # seconds for anything that takes milliseconds
SOCKET_LIMITS = {"header_timeout": 0.5, "body_timeout": 0.5, "max_header_bytes": 4096, "max_headers": 20}
CLOSE_WITHIN = 5.0  # seconds a slow-loris connection may live with the 0.5 s timeouts above (generous on 2 cores)


def _config(**hub: Any) -> dict[str, Any]:
    return {"hub": hub, "servers": {"sample": sample_server(), "other": sample_server()}}


def _keyed(**hub: Any) -> dict[str, Any]:
    config = _config(**hub)
    config["auth"] = {"api_keys": [
        {"name": "all", "key": KEY},
        {"name": "other-only", "key": OTHER_KEY, "servers": ["other"]},
        {"name": "add-only", "key": TOOLS_KEY, "servers": ["sample"], "tools": ["add"]},
    ]}
    return config


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@asynccontextmanager
async def _guarded(raw: dict[str, Any],
                   hosts: Hosts | None = None) -> AsyncIterator[tuple[RunningHub, httpx2.AsyncClient]]:
    """The hub in-process, plus a client of an app that checks Host as `serve` builds it (`hosts`)."""
    async with running_hub(raw) as hub:
        invoker = Invoker(hub.app.state.invoker.config, lambda: hub.supervisor.servers)
        app = create_app(invoker, hosts=hosts)
        async with httpx2.AsyncClient(base_url=IN_PROCESS_BASE_URL, transport=httpx2.ASGITransport(app=app)) as client:
            yield hub, client


# ---------------------------------------------------------------------------- (4) Content-Type


@pytest.mark.parametrize("content_type", ["text/plain", "multipart/form-data; boundary=x",
                                          "application/x-www-form-urlencoded", None])
async def test_a_body_not_declared_application_json_is_415_and_never_reaches_the_tool(content_type):
    async with running_hub(_config()) as hub:
        headers = {} if content_type is None else {"Content-Type": content_type}
        response = await hub.client.post("/sample/echo", content=b'{"text": "hi"}', headers=headers)
        error = assert_error(response, 415, "unsupported_media_type")
        got = f"'{content_type}'" if content_type else "none"
        assert error["message"] == ("the request body must be JSON sent with 'Content-Type: application/json' "
                                    f"(got {got}; curl sends form data with -d: use --json, or add -H "
                                    "'Content-Type: application/json')")
        metrics = (await hub.client.get("/metrics")).text  # counted as sent, though no tool was called
        assert 'mcphub_requests_refused_total{status="415"} 1.0' in metrics


async def test_json_with_a_charset_and_an_empty_post_without_a_content_type_are_accepted():
    async with running_hub(_config()) as hub:
        response = await hub.client.post("/sample/echo", content=b'{"text": "hi"}',
                                         headers={"Content-Type": "Application/JSON; charset=utf-8"})
        assert response.status_code == 200, response.text
        response = await hub.client.post("/sample/pid")  # curl -X POST: no body, no Content-Type
        assert response.status_code == 200, response.text


# ---------------------------------------------------------------------------- (4) Host


async def test_the_issues_dns_rebinding_request_is_421_before_anything_else():
    async with _guarded(_config(), Hosts.of_listener("127.0.0.1")) as (_, client):
        response = await client.post("/sample/echo", content=b'{"text": "hi"}', headers={
            "Host": "evil.example:8932", "Origin": "http://evil.example:8932", "Content-Type": "text/plain"})
        error = assert_error(response, 421, "misdirected_request")
        assert error["message"] == ("this hub does not answer to Host 'evil.example:8932' (a page of another site may "
                                    "be reaching it by DNS rebinding); if that is a name clients use, add it to "
                                    "hub.allowed_hosts")
        assert (await client.get("/readyz", headers={"Host": "evil.example"})).status_code == 421


@pytest.mark.parametrize("host", ["127.0.0.1:8000", "localhost:8000", "LOCALHOST.", "app.localhost", "[::1]:8000",
                                  "192.168.1.5:8000", "[fe80::1]"])
async def test_loopback_names_and_ip_literals_are_always_answered(host):
    async with _guarded(_config(), Hosts.of_listener("127.0.0.1")) as (_, client):
        response = await client.post("/sample/add", json={"a": 1, "b": 2}, headers={"Host": host})
        assert response.status_code == 200, response.text


async def test_allowed_hosts_the_bound_name_and_the_instance_url_are_answered_and_nothing_else():
    hub = {"allowed_hosts": ["tools.example.com", "*.lan"]}
    async with _guarded(_config(**hub), Hosts.of_listener("box.internal", "http://nas.home:8002")) as (_, client):
        for host in ("tools.example.com", "TOOLS.example.com:443", "nas.lan:8000", "box.internal:8000",
                     "nas.home:8002"):
            assert (await client.get("/healthz", headers={"Host": host})).status_code == 200, host
        for host in ("example.com", "lan", "evil.tools.example.com", "nas.lan.evil.example"):
            assert_error(await client.get("/healthz", headers={"Host": host}), 421, "misdirected_request")


async def test_a_hub_bound_to_every_address_answers_any_name_unless_allowed_hosts_lists_them():
    async with _guarded(_config(), Hosts.of_listener("0.0.0.0")) as (_, client):
        for host in ("hub:8000", "nas.lan:8000", "whatever.example"):  # containers, LAN names
            assert (await client.post("/sample/add", json={"a": 1, "b": 1}, headers={"Host": host})).status_code == 200
    async with _guarded(_config(allowed_hosts=["hub"]), Hosts.of_listener("0.0.0.0")) as (_, client):
        assert (await client.get("/healthz", headers={"Host": "hub:8000"})).status_code == 200
        assert_error(await client.get("/healthz", headers={"Host": "nas.lan:8000"}), 421, "misdirected_request")


# ---------------------------------------------------------------------------- (4) Origin


async def test_a_page_of_another_site_may_not_post_to_a_hub_without_a_credential():
    async with _guarded(_config(cors_origins=["http://webui.lan:3000"]), Hosts.of_listener("127.0.0.1")) as (_, c):
        response = await c.post("/sample/echo", json={"text": "hi"},
                                headers={"Host": "127.0.0.1:8000", "Origin": "http://evil.example:8932"})
        error = assert_error(response, 403, "forbidden")
        assert error["message"] == ("cross-site request refused: a page of 'http://evil.example:8932' may not POST to "
                                    "this hub, which has no credential configured; add the origin to "
                                    "hub.cors_origins, or configure a credential (auth.api_keys)")
        for origin in ("http://localhost:3000", "null", "http://127.0.0.1:9999"):  # another port is another site
            response = await c.post("/sample/echo", json={"text": "hi"},
                                    headers={"Host": "127.0.0.1:8000", "Origin": origin})
            assert_error(response, 403, "forbidden")
        # its own Swagger UI (same origin), a listed origin, GETs, and clients that send no Origin
        for origin in ("http://127.0.0.1:8000", "http://webui.lan:3000", None):
            headers = {"Host": "127.0.0.1:8000"} | ({"Origin": origin} if origin else {})
            response = await c.post("/sample/echo", json={"text": "hi"}, headers=headers)
            assert response.status_code == 200, (origin, response.text)
        response = await c.get("/openapi.json", headers={"Host": "127.0.0.1:8000", "Origin": "http://evil.example"})
        assert response.status_code == 200


async def test_with_a_credential_configured_the_credential_is_the_csrf_defence_and_origin_is_not_checked():
    async with _guarded(_keyed()) as (_, client):
        response = await client.post("/sample/add", json={"a": 1, "b": 1},
                                     headers={"Origin": "http://evil.example"} | _bearer(KEY))
        assert response.status_code == 200, response.text


async def test_mcp_streamable_http_requests_pass_the_guard():
    """POST application/json with Accept for JSON and SSE, GET for the SSE stream, DELETE to end a session:
    none is refused by the guard (no route answers them on this branch: 404/405, never 415/421/403)."""
    async with _guarded(_config(), Hosts.of_listener("127.0.0.1")) as (_, client):
        headers = {"Host": "127.0.0.1:8000", "Accept": "application/json, text/event-stream",
                   "Mcp-Session-Id": "abc", "MCP-Protocol-Version": "2025-11-25"}
        posted = await client.post("/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "ping"}, headers=headers)
        got = await client.get("/sample/mcp", headers=headers | {"Accept": "text/event-stream"})
        deleted = await client.delete("/mcp", headers=headers)
        for response in (posted, got, deleted):
            assert response.status_code not in (403, 415, 421), response.text


# ------------------------------------------------------------------------------ (5) log lines


@pytest.fixture
def access_log() -> Any:
    """What the access logger writes through the hub's own formatter (logs.configure_logging's)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(LineFormatter(FORMAT))
    logger = logging.getLogger("mcphub.access")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


async def test_a_path_with_a_newline_cannot_forge_an_audit_line(access_log, caplog):
    forged = "/x%20401%0A2026-12-05%2020%3A00%3A00%2C000%20INFO%20mcphub.access%3A%20key%3Aadmin%20ab%20200/t%00"
    caplog.set_level(logging.INFO, logger="mcphub.access")
    async with running_hub(_config()) as hub:
        response = await hub.client.post(forged, json={})
        assert_error(response, 404, "not_found")
    lines = access_log.getvalue().splitlines()
    assert len(lines) == 1, lines
    assert "x 401\\x0a2026-12-05 20:00:00,000 INFO mcphub.access: key:admin ab 200/t\\x00 404" in lines[0]
    assert "\x00" not in access_log.getvalue()
    # escaped at the source too: a handler with a formatter of its own gets one line as well
    messages = [r.getMessage() for r in caplog.records if r.name == "mcphub.access"]
    assert len(messages) == 1 and "\n" not in messages[0] and "\x00" not in messages[0], messages


def test_every_interpolated_value_is_escaped_and_a_records_later_lines_are_indented():
    formatter = LineFormatter("%(levelname)s %(message)s")
    record = logging.LogRecord("x", logging.WARNING, __file__, 1, "caller sent %s (%d)",
                               ("a\r\nINFO forged\x1b[2J\u202egnp.exe", 3), None)
    assert formatter.format(record) == "WARNING caller sent a\\x0d\\x0aINFO forged\\x1b[2J\\u202egnp.exe (3)"
    try:
        raise ValueError("bad\nINFO forged")
    except ValueError as exc:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", None, (ValueError, exc, None))
    text = formatter.format(record)
    assert all(line.startswith("    ") for line in text.splitlines()[1:]), text  # no forged line at column 0


# ---------------------------------------------------------------------------- (6) body size

LIMIT = 1000  # bytes: hub.limits.max_body_bytes in these tests


class _Body:
    """A request body that counts how much of it the hub pulled."""

    def __init__(self, size: int, chunk: int = 100) -> None:
        self.size, self.chunk, self.pulled = size, chunk, 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        sent = 0
        while sent < self.size:
            self.pulled += 1
            piece = b" " * min(self.chunk, self.size - sent)
            sent += len(piece)
            yield piece


async def test_a_body_over_the_limit_is_413_from_content_length_without_reading_it_and_is_audited_413():
    async with running_hub(_config(limits={"max_body_bytes": LIMIT})) as hub:
        body = _Body(50 * LIMIT)
        response = await hub.client.post("/sample/echo", content=body,
                                         headers={"Content-Type": "application/json",
                                                  "Content-Length": str(50 * LIMIT)})
        error = assert_error(response, 413, "body_too_large")
        assert error["message"] == ("the request body of 50000 bytes (Content-Length) is over this hub's limit of "
                                    "1000 bytes (hub.limits.max_body_bytes); send large data by reference (a URL "
                                    "or a path)")
        assert body.pulled == 0
        assert response.headers["connection"] == "close"
        metrics = (await hub.client.get("/metrics")).text
        assert 'mcphub_tool_calls_total{face="http",server="sample",status="413",tool="echo"} 1.0' in metrics


async def test_a_streamed_body_is_refused_413_as_soon_as_it_passes_the_limit():
    async with running_hub(_config(limits={"max_body_bytes": LIMIT})) as hub:
        body = _Body(50 * LIMIT)  # no Content-Length: chunked
        response = await hub.client.post("/sample/echo", content=body, headers={"Content-Type": "application/json"})
        error = assert_error(response, 413, "body_too_large")
        assert "of more than 1000 bytes is over this hub's limit" in error["message"]
        assert body.pulled <= LIMIT // body.chunk + 1


async def test_a_body_at_the_limit_is_accepted():
    async with running_hub(_config(limits={"max_body_bytes": LIMIT})) as hub:
        text = "y" * (LIMIT - len('{"text": ""}'))
        response = await hub.client.post("/sample/echo", json={"text": text})
        assert response.status_code == 200, response.text


async def test_a_body_to_a_server_the_key_may_not_use_is_403_without_reading_it():
    async with running_hub(_keyed(limits={"max_body_bytes": LIMIT})) as hub:
        for size, headers in ((50 * LIMIT, {"Content-Length": str(50 * LIMIT)}), (50 * LIMIT, {}), (10, {})):
            body = _Body(size)
            response = await hub.client.post("/sample/echo", content=body, headers={
                "Content-Type": "application/json"} | headers | _bearer(OTHER_KEY))
            assert_error(response, 403, "forbidden")
            assert body.pulled == 0
            body = _Body(size)
            response = await hub.client.post("/sample/echo", content=body,
                                             headers={"Content-Type": "application/json"} | headers)
            assert_error(response, 401, "unauthorized")
            assert body.pulled == 0


async def test_the_runners_body_is_limited_too():
    config = _config(limits={"max_body_bytes": LIMIT})
    config["runner"] = {"backend": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m"}
    async with running_hub(config) as hub:
        response = await hub.client.post("/v1/chat/completions", content=b"{" + b" " * 2 * LIMIT + b"}",
                                         headers={"Content-Type": "application/json"})
        assert_error(response, 413, "body_too_large")


# -------------------------------------------------------------------------- concurrent calls


async def test_a_caller_over_its_concurrent_calls_is_429_and_other_callers_are_not_affected():
    async with running_hub(_keyed(limits={"max_concurrent_calls": 2})) as hub:
        invoker: Invoker = hub.app.state.invoker
        async with anyio.create_task_group() as tg:
            for tag in ("a", "b"):
                tg.start_soon(lambda tag=tag: hub.client.post("/sample/sleep", json={"seconds": 30, "tag": tag},
                                                              headers=_bearer(KEY)))
            with anyio.fail_after(WAIT):
                while invoker.concurrency.in_flight("key:all") < 2:
                    await anyio.sleep(0.01)
            response = await hub.client.post("/sample/add", json={"a": 1, "b": 1}, headers=_bearer(KEY))
            error = assert_error(response, 429, "rate_limited")
            assert error["message"] == ("credential 'all' has 2 calls in flight, the most this hub runs at once "
                                        "for one caller (hub.limits.max_concurrent_calls); retry when one has ended")
            assert response.headers["retry-after"] == "1"
            response = await hub.client.post("/other/add", json={"a": 1, "b": 1}, headers=_bearer(OTHER_KEY))
            assert response.status_code == 200, response.text
            tg.cancel_scope.cancel()
        assert invoker.concurrency.in_flight("key:all") == 0  # slots are given back by cancelled calls
        response = await hub.client.post("/sample/add", json={"a": 1, "b": 1}, headers=_bearer(KEY))
        assert response.status_code == 200, response.text


# ----------------------------------------------------------------------------- (9) leaks


async def test_without_public_docs_an_unknown_servers_docs_name_no_server():
    async with running_hub(_keyed(public_docs=False)) as hub:
        for path in ("/nosuch/docs", "/nosuch/openapi.json", "/sample/docs"):
            response = await hub.client.get(path)
            assert_error(response, 401, "unauthorized")
            assert "sample" not in response.text and "other" not in response.text


async def test_a_404_lists_only_what_the_key_may_call():
    async with running_hub(_keyed()) as hub:
        error = assert_error(await hub.client.post("/sample/nosuch", json={}, headers=_bearer(TOOLS_KEY)),
                             404, "not_found")
        assert error["message"] == "server 'sample' has no tool 'nosuch' (tools: add)"
        error = assert_error(await hub.client.post("/nosuch/add", json={}, headers=_bearer(OTHER_KEY)),
                             404, "not_found")
        assert error["message"] == "no server named 'nosuch' (servers: other)"
        error = assert_error(await hub.client.get("/nosuch/openapi.json", headers=_bearer(OTHER_KEY)),
                             404, "not_found")
        assert error["message"] == "no server named 'nosuch' (servers: other)"


async def test_a_scoped_key_gets_403_for_another_servers_docs_page():
    async with running_hub(_keyed()) as hub:
        error = assert_error(await hub.client.get("/sample/docs", headers=_bearer(OTHER_KEY)), 403, "forbidden")
        assert error["message"] == "credential 'other-only' may not use server 'sample'"
        assert (await hub.client.get("/other/docs", headers=_bearer(OTHER_KEY))).status_code == 200
        assert (await hub.client.get("/sample/docs")).status_code == 200  # public_docs: the page is public


async def test_public_status_false_hides_server_names_from_callers_without_a_credential():
    async with running_hub(_keyed(public_status=False)) as hub:
        index = await hub.client.get("/")
        assert index.status_code == 200 and "servers" not in index.json()
        ready = await hub.client.get("/readyz")
        assert ready.status_code == 200 and ready.json() == {"status": "ready"}
        error = assert_error(await hub.client.get("/metrics"), 401, "unauthorized")
        assert "sample" not in error["message"]
        # a credential sees the servers it may use; /metrics names every server to any credential
        assert set((await hub.client.get("/readyz", headers=_bearer(OTHER_KEY))).json()["servers"]) == {"other"}
        assert set((await hub.client.get("/", headers=_bearer(KEY))).json()["servers"]) == {"sample", "other"}
        assert 'server="sample"' in (await hub.client.get("/metrics", headers=_bearer(OTHER_KEY))).text
    async with running_hub(_keyed()) as hub:  # the default: public, as documented
        assert set((await hub.client.get("/readyz")).json()["servers"]) == {"sample", "other"}


async def test_a_trailing_slash_is_not_redirected_to_the_host_header():
    async with running_hub(_config()) as hub:
        for method, path in (("GET", "/docs/"), ("POST", "/sample/add/"), ("GET", "/sample/openapi.json/")):
            response = await hub.client.request(method, path, headers={"Host": "evil.example"}, json={})
            error = assert_error(response, 404, "not_found")
            assert "location" not in response.headers
            assert error["message"] == f"no route for {method} {path} (did you mean {path.rstrip('/')}?)"


# ------------------------------------------------------------------ (6, 7) on a real socket


@asynccontextmanager
async def _listening(raw: dict[str, Any], bound: str = "127.0.0.1") -> AsyncIterator[int]:
    """The hub on uvicorn at 127.0.0.1, configured as `mcphub serve` configures a listener."""
    async with running_hub(raw) as hub:
        invoker = Invoker(hub.app.state.invoker.config, lambda: hub.supervisor.servers)
        app = create_app(invoker, hosts=Hosts.of_listener(bound))
        port = free_port()
        server = _Server(uvicorn_config(app, invoker, host="127.0.0.1", port=port))
        async with anyio.create_task_group() as tg:
            tg.start_soon(server.serve)
            with anyio.fail_after(HUB_START_TIMEOUT):
                while not server.started:
                    await anyio.sleep(0.01)
            yield port
            server.should_exit = True


async def _exchange(port: int, *parts: bytes, pause: float = 0.0) -> tuple[bytes, float]:
    """Send `parts` (with `pause` seconds between them) and read until the hub closes the connection:
    (what it answered, seconds until it closed)."""
    started = anyio.current_time()
    async with await anyio.connect_tcp("127.0.0.1", port) as stream:
        for i, part in enumerate(parts):
            if i and pause:
                await anyio.sleep(pause)
            try:
                await stream.send(part)
            except anyio.BrokenResourceError:  # the hub closed the connection: read what it said
                break
        answer = b""
        with anyio.fail_after(CLOSE_WITHIN):
            while True:
                try:
                    chunk = await stream.receive()
                except (anyio.EndOfStream, anyio.BrokenResourceError):
                    break
                answer += chunk
    return answer, anyio.current_time() - started


def _status_and_error(answer: bytes) -> tuple[int, dict[str, Any]]:
    head, _, body = answer.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body)["error"]


@pytest.fixture
async def port() -> AsyncIterator[int]:
    async with _listening(_config(limits=SOCKET_LIMITS)) as listening:
        yield listening


async def test_headers_over_the_size_limit_are_431_and_the_connection_closed(port):
    huge = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n"
    answer, _ = await _exchange(port, huge)
    status, error = _status_and_error(answer)
    assert (status, error["type"]) == (431, "headers_too_large")
    assert error["message"] == "request headers of more than 4096 bytes (hub.limits.max_header_bytes)"


async def test_headers_sent_in_many_small_packets_are_counted_too(port):
    parts = [b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: "] + [b"a" * 1000] * 6 + [b"\r\n\r\n"]
    answer, _ = await _exchange(port, *parts, pause=0.01)
    assert _status_and_error(answer)[0] == 431


async def test_too_many_headers_are_431(port):
    many = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(50)) + b"\r\n"
    status, error = _status_and_error((await _exchange(port, many))[0])
    assert (status, error["message"]) == (431, "more than 20 request headers (hub.limits.max_headers)")


async def test_a_connection_that_sends_nothing_is_closed_within_the_header_timeout(port):
    answer, seconds = await _exchange(port)
    assert answer == b"" and seconds >= 0.4


async def test_partial_headers_are_408_and_closed(port):
    answer, seconds = await _exchange(port, b"GET /healthz HTTP/1.1\r\nHost: 127.")
    status, error = _status_and_error(answer)
    assert (status, error["type"]) == (408, "request_timeout")
    assert error["message"] == "request headers not complete within 0.5s (hub.limits.header_timeout)"


async def test_headers_a_byte_at_a_time_are_closed_at_the_header_timeout_not_reset_by_each_byte(port):
    request = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 100
    answer, seconds = await _exchange(port, *[request[i:i + 1] for i in range(len(request))], pause=0.02)
    assert answer == b"" or _status_and_error(answer)[0] == 408  # closed mid-trickle: the write may fail first


async def test_a_stalled_body_closes_the_connection(port):
    head = (b"POST /sample/echo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100\r\n\r\n{\"text\": ")
    answer, seconds = await _exchange(port, head)
    assert answer == b"", answer  # the call never started; the client is gone (audited 499)


async def test_an_honest_client_on_a_keep_alive_connection_is_served(port):
    async with httpx2.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
        for _ in range(3):
            assert (await client.post("/sample/add", json={"a": 1, "b": 2})).status_code == 200


async def test_a_huge_body_is_refused_413_before_the_rest_is_sent(port):
    head = (b"POST /sample/echo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: 52428800\r\n\r\n" + b" " * 1000)
    answer, _ = await _exchange(port, head)  # only 1 KB of the 50 MB sent: the answer comes anyway
    status, error = _status_and_error(answer)
    assert (status, error["type"]) == (413, "body_too_large")


async def test_an_unparseable_request_is_400_in_the_error_shape(port):
    status, error = _status_and_error((await _exchange(port, b"GET /\x01 HTTP/1.1\r\n\r\n"))[0])
    assert (status, error["type"]) == (400, "bad_request")
    assert error["message"].startswith("invalid HTTP request")


def test_mcphub_serve_checks_host_and_closes_slow_connections(tmp_path):
    """The real command wires both in: a rebinding Host is 421, half a request is 408 at the timeout."""
    config = _config(limits={"header_timeout": 1})
    del config["servers"]["other"]
    path = tmp_path / "hub.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    port = free_port()
    with mcphub_process("serve", "-c", str(path), "--port", str(port)):
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: httpx2.get(f"{url}/readyz").status_code == 200, timeout=HUB_START_TIMEOUT,
                   what="the hub to be ready")
        response = httpx2.post(f"{url}/sample/add", json={"a": 1, "b": 2}, headers={"Host": "evil.example"})
        assert_error(response, 421, "misdirected_request")
        assert httpx2.post(f"{url}/sample/add", json={"a": 1, "b": 2}).json()["total"] == 3
        answer, seconds = anyio.run(_exchange, port, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        assert _status_and_error(answer)[0] == 408 and seconds >= 0.9
