"""Other projects' internals mcphub relies on: the one list, and a contract test for each.

Each test below exercises the real dependency (the MCP SDK in process, uvicorn on 127.0.0.1) and fails
with a message naming what changed and where mcphub depends on it. When one fails after an upgrade, fix
the named place, re-run this file, and move the version bound in pyproject.toml (which points here).

Tested on: mcp 2.3.0 (and mcp-types 2.3.0), uvicorn 0.55.0, httpx2 2.17.0, Python 3.11.7.
Bounds in pyproject.toml: mcp >=2.3,<2.4; uvicorn >=0.30,<0.56.

| internal | used in | why | tested on | contract test |
|---|---|---|---|---|
| `mcp.shared.message.SessionMessage` (dataclass: `message`, `metadata`): the item type of the SDK's `mcp.client.Transport` streams | stdio.py (yields and reads them); transports.py (`Item`, `_Sender`, `_SessionGoneRead` builds one) | our stdio transport and read-stream wrappers speak the SDK's transport protocol (mypy checks the shape against `mcp.client.Transport`; this checks the runtime) | mcp 2.3.0 | `test_a_client_runs_over_mcphubs_read_stream_wrapper_and_session_messages` |
| the SDK's `ReadStream` protocol (in private `mcp.client._transport`): receive, aclose, async iteration and context; `last_context` read with getattr | transports.py `_ReadStream` (implements it; delegates other attributes) | the EOF watch and the stale-session rewrite wrap the SDK's read stream | mcp 2.3.0 | `test_read_stream_wrapper_implements_every_member_of_the_sdks_read_stream_protocol` |
| an `Exception` item on the read stream goes to `message_handler` and the session carries on | stdio.py (a stdout line that is not JSON-RPC); transports.py `_WatchedRead` (reports them) | a server printing junk to stdout keeps its connection | mcp 2.3.0 | `test_a_client_runs_over_...` |
| the end of the read stream fails calls with `MCPError(CONNECTION_CLOSED, "Connection closed")` | transports.connect (docstring); supervisor (`exc.code == CONNECTION_CLOSED`: replica lost) | every caller notices a dead stdio child or HTTP stream | mcp 2.3.0 | `test_a_client_runs_over_...` |
| `mcp.client.stdio.get_default_environment()` (no underscore, in no `__all__`) | transports._spawner | a stdio child's base environment (HOME, LOGNAME, PATH, SHELL, TERM, USER) is the SDK's | mcp 2.3.0 | `test_sdk_default_environment_is_the_inherited_basics` |
| HTTP error status without a JSON-RPC body → `MCPError(INTERNAL_ERROR, "Server returned an error response")` | supervisor.SDK_BARE_HTTP_ERROR (`_call_once`, `_ping`) | a proxy's 502 page is a 502 bad_gateway, not the tool's error | mcp 2.3.0 | `test_sdk_reports_an_http_error_page_as_a_bare_http_error` |
| bare 404 to a request with a session id → `MCPError(INVALID_REQUEST, "Session terminated")` | transports.SESSION_GONE (`_SessionGoneRead` writes it); supervisor._is_session_gone ("session terminated") | a restarted server: reconnect and resend, not an error | mcp 2.3.0 | `test_sdk_reports_a_bare_404_with_a_session_as_session_terminated` |
| streamable HTTP: each message POSTed as a plain JSON body with `mcp-session-id`, through the `http_client`'s response hooks; a 4xx body read after them (httpx2 keeps what a hook read) | transports._http_transport (`notice_lost_session`, `_request_id`, `_error_body`) | stale-session answers are tied to their request id, whatever the server's wording | mcp 2.3.0, httpx2 2.17.0 | `test_sdk_http_requests_pass_the_response_hook_which_can_read_their_id_and_body` |
| `StreamableHTTPSessionManager` routes a request by its `MCP-Protocol-Version` header: a 2026 one to the stateless single-exchange path, others to 2025 sessions | mcp_face.McpFace (one manager serves both eras on one URL) | `/mcp` answers both SDK client modes and the TypeScript client | mcp 2.3.0 | tests/test_mcp_face.py (every test runs `auto` and `legacy`) |
| `ServerRequestContext.request` is the Starlette `Request` of the HTTP POST that carried the message, in both eras (the same ASGI scope the face wrote the caller into) | mcp_face._caller | each call runs as the credential of the HTTP request it came in, not the session's first | mcp 2.3.0 | tests/test_mcp_face.py `test_a_scoped_key_lists_and_calls_only_what_it_may` |
| `scope["user"]` holding an `AuthenticatedUser` binds a 2025 session to that credential (`authorization_context`) | mcp_face._admit | a session id is useless with another key | mcp 2.3.0 | tests/test_mcp_face.py `test_a_session_stays_with_the_key_that_opened_it` |
| the session runner takes `InitializationOptions` from `Server.create_initialization_options()` (overridden to announce `tools.listChanged`) | mcp_face._HubServer | 2025 clients know to expect `notifications/tools/list_changed` | mcp 2.3.0 | tests/test_mcp_face.py `test_a_session_client_is_told_when_the_tools_change` |
| `Server(get_tool_input_schema=)` is called in the request's own task (a context variable set by the ASGI app is visible) | mcp_face._input_schema | the `Mcp-Param-*` check uses the caller's view without listing every tool per call | mcp 2.3.0 | `test_the_sdk_looks_up_a_tools_input_schema_in_the_requests_own_context` |
| the SDK's debug line `GET stream max reconnection attempts (N) exceeded` (`mcp.client.streamable_http`) | tests/test_thirdparty.py (`SDK_GAVE_UP`) only | the restart test waits for the SDK to give up its GET stream instead of sleeping | mcp 2.3.0 | tests/test_thirdparty.py `test_everything_server_over_http_restarted_answers_concurrent_calls_on_one_new_session` (fails naming the line) |
| `jsonrpc_message_adapter.validate_json` refuses a lone surrogate escape (`\\ud800`) that Python's `json` takes | stdio.unreadable_answer (answers the call it names with an error) | such an answer fails its call at once (502), not at the timeout | mcp 2.3.0, pydantic-core 2 | tests/test_faults.py `test_an_answer_the_sdk_cannot_read_fails_that_call_at_once_not_at_its_timeout` |
| `ClientSession._dispatcher` (private attribute) and its `send_raw_request(method, params, opts)` (the public `Dispatcher` protocol): the raw result dict | upstream_tasks._create (the task-augmented `tools/call`) | `ClientSession.send_request` checks a 2025 `tools/call` answer against `CallToolResult` and rejects the `CreateTaskResult` (measured: pydantic "content: Field required"); the SDK has no other way to receive it | mcp 2.3.0 | `test_a_2025_session_carries_tasks_through_middleware_request_handlers_and_the_raw_dispatcher` |
| `ClientSession.send_request` skips its per-version result check for methods outside the spec tables (`tasks/get`, `tasks/result`, `tasks/cancel`, `tasks/list`) and validates the raw result into the given type | upstream_tasks.call_tool | polling, fetching and cancelling a server's task with the SDK's own 2025 task types | mcp 2.3.0 | `test_a_2025_session_carries_...` |
| `Server.middleware` (marked provisional, TODO(L54)): runs before params validation and the runner's per-version result check; a short-circuit's dict is sent as returned | mcp_tasks.McpTasks._task_call | a 2025 `tools/call` handler cannot answer `CreateTaskResult` (the runner answers -32603 "Handler returned an invalid result") | mcp 2.3.0 | `test_a_2025_session_carries_...` |
| `Server.add_request_handler` for methods outside the spec's tables (`tasks/*`): reached at every version, result not checked; `Server.extensions` announced in `server/discover`; a 2026 middleware result with a non-core `resultType` reaches a client `ResultClaim`; `create_initialization_options()`'s capabilities (with `tasks`) are the `initialize` result's | mcp_tasks.McpTasks.install; mcp_face._HubServer | the MCP face serves tasks/get, tasks/result, tasks/cancel, tasks/list and announces `tasks` | mcp 2.3.0 | `test_a_2025_session_carries_...`, `test_a_2026_request_carries_a_task_result_from_middleware_to_a_client_extensions_claim` |
| `uvicorn.Server.capture_signals()`: where `serve()` installs its signal handlers | serve._Server (no-op override); tests/hub.py | uvicorn would re-raise the signal after serving, killing the hub before its servers stop | uvicorn 0.55.0 | `test_uvicorn_installs_its_signal_handlers_only_through_capture_signals` |
| `uvicorn.Server.serve(sockets=[sock])` (the gunicorn worker's path): serves on a socket bound by the caller | serve._serve_until_done (the port is bound by serve._bind first) | a busy port is found, and said in one line, before any server starts | uvicorn 0.55.0 | `test_uvicorn_serves_on_a_socket_bound_by_the_caller` |
| `uvicorn.Server.serve()` ends with `SystemExit` when its start-up fails (after logging why) | serve._serve_until_done (→ ListenError) | a failed start is one line and exit 2, not a traceback | uvicorn 0.55.0 | `test_uvicorn_serve_raises_system_exit_when_the_port_is_taken` |
| `uvicorn.Server.should_exit`, `force_exit`, `started` (attributes) | serve._Lifetime.stop; tests/hub.py | stop every listener on a signal; wait for a test hub to listen | uvicorn 0.55.0 | `test_uvicorn_should_exit_ends_serve` |
| uvicorn's `HttpToolsProtocol` (module `uvicorn.protocols.http.httptools_impl`): subclassed; its `connection_made`, `data_received`, `connection_lost`, parser callbacks `on_message_begin`/`on_url`/`on_header`/`on_headers_complete`/`on_message_complete`, a callback that raises ending in `send_400_response(msg)`, attributes `transport`, `loop`, `flow.read_paused`, `cycle.response_complete`; `uvicorn.Config(http=<class>)` | connection.py (`LimitedHttpToolsProtocol`); serve.uvicorn_config | header size/count limits (431), header and body timeouts (slow-loris), the error shape for an unparseable request | uvicorn 0.55.0, httptools 0.9.0 | `test_uvicorn_httptools_protocol_can_be_subclassed_to_count_headers_and_refuse_a_request` |
| `threading._shutdown` | launcher.py | a forked server ends as the interpreter would (thread pools shut down, non-daemon threads joined) | Python 3.10.13-3.13.0 | tests/test_launcher.py `test_contract_threading_shutdown_shuts_thread_pools_down_and_joins_non_daemon_threads` |
| `atexit._run_exitfuncs` | launcher.py | a forked server runs its atexit handlers, last registered first | Python 3.10.13-3.13.0 | tests/test_launcher.py `test_contract_atexit_run_exitfuncs_runs_every_handler_last_registered_first` |
| `setproctitle` (public, but what it overwrites matters) | launcher.py | `ps` shows a forked server's command line; the environment block is blanked so the hub's secrets never show | setproctitle 1.3.8 (`<1.4`) | tests/test_launcher.py `test_contract_setproctitle_sets_what_ps_shows_and_overwrites_the_environment_block` |

Dropped: `mcp.os.posix.utilities.terminate_posix_process_tree` (stdio.py now signals the process group
itself: `stdio._terminate_group`). Public API, not listed: `mcp.types.jsonrpc_message_adapter` (in
`mcp.types.__all__`), `mcp.client.Transport` and `IncomingMessage`, `ClientSession.send_request` /
`send_ping`, the error codes in `mcp.types`.
"""  # noqa: E501 (the table's rows)

from __future__ import annotations

import json
import signal
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from contextvars import ContextVar
from typing import Any, Literal

import anyio
import httpx2
import pydantic
import pytest
import uvicorn
from mcp import Client, MCPError
from mcp.client.extension import ClaimContext, ClientExtension, ResultClaim
from mcp.client.stdio import get_default_environment
from mcp.client.streamable_http import streamable_http_client
from mcp.server import Server
from mcp.server.mcpserver import MCPServer
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.shared.message import SessionMessage
from mcp.types import (
    CONNECTION_CLOSED,
    INTERNAL_ERROR,
    INVALID_REQUEST,
    CallToolRequest,
    CallToolRequestParams,
    CallToolResult,
    CreateTaskResult,
    GetTaskRequest,
    GetTaskRequestParams,
    GetTaskResult,
    ListToolsResult,
    Result,
    TextContent,
    Tool,
)
from starlette.applications import Starlette
from typing_extensions import get_protocol_members

from mcphub import mcp_tasks, supervisor, transports
from tests.helpers import free_port

pytestmark = pytest.mark.anyio

WAIT = 10.0  # seconds for any one in-process exchange: they take milliseconds
URL = "http://127.0.0.1:8000/mcp"  # the SDK app's own host check accepts 127.0.0.1:<port>; nothing listens here


def broken(what: str, where: str, consequence: str) -> str:
    """The failure message: what changed, in which versions, where mcphub depends on it, what would follow."""
    return (f"{what} [mcp {_version('mcp')}, uvicorn {_version('uvicorn')}]. mcphub depends on this in {where}: "
            f"{consequence}")


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


# ------------------------------------------------------------------------- the SDK's stream transport


def _lowlevel_server() -> Server[Any]:
    async def list_tools(ctx: Any, params: Any) -> ListToolsResult:
        return ListToolsResult(tools=[Tool(name="echo", input_schema={"type": "object"})])

    async def call_tool(ctx: Any, params: Any) -> CallToolResult:
        return CallToolResult(content=[TextContent(type="text", text=json.dumps(params.arguments))])

    return Server("contract", version="1", on_list_tools=list_tools, on_call_tool=call_tool)


async def test_a_client_runs_over_mcphubs_read_stream_wrapper_and_session_messages() -> None:
    """A real SDK server and Client joined by memory streams of SessionMessage, the client's read side
    through transports._watched (the wrapper every connection uses): calls work, an Exception item
    reaches message_handler without ending the session, and the end of the stream ends calls with
    CONNECTION_CLOSED and calls on_closed."""
    server = _lowlevel_server()
    to_server, server_reads = anyio.create_memory_object_stream[SessionMessage | Exception](16)
    server_writes, relay_reads = anyio.create_memory_object_stream[SessionMessage](16)
    to_client, client_reads = anyio.create_memory_object_stream[SessionMessage | Exception](16)
    closed = anyio.Event()
    handled: list[object] = []
    handled_one = anyio.Event()

    @asynccontextmanager
    async def transport() -> AsyncIterator[tuple[Any, Any]]:
        yield client_reads, to_server

    async def relay() -> None:  # server → client, until the test cuts the line
        async with relay_reads:
            async for item in relay_reads:
                assert isinstance(item, SessionMessage), broken(
                    f"the SDK server wrote a {type(item).__name__}, not a SessionMessage, to its write stream",
                    "stdio.py and transports.py (the transport item type)",
                    "mcphub's stdio transport would hand the Client items it cannot read",
                )
                await to_client.send(item)

    async def handler(message: object) -> None:
        handled.append(message)
        handled_one.set()

    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tg:
            tg.start_soon(server.run, server_reads, server_writes, server.create_initialization_options())
            relaying = anyio.CancelScope()

            async def run_relay() -> None:
                with relaying:
                    await relay()

            tg.start_soon(run_relay)
            async with Client(transports._watched(transport(), closed.set, "contract"), cache=None,
                              message_handler=handler) as client:
                result = await client.call_tool("echo", {"x": 1})
                assert result.content[0].text == '{"x": 1}'  # type: ignore[union-attr]

                await to_client.send(ValueError("this is not json"))  # what stdio.py makes of a bad line
                result = await client.call_tool("echo", {"x": 2})
                with anyio.move_on_after(WAIT / 2):
                    await handled_one.wait()
                assert any(isinstance(m, ValueError) for m in handled), broken(
                    "an Exception item on the read stream no longer reaches the Client's message_handler",
                    "stdio.py (a stdout line that is not JSON-RPC) and transports._WatchedRead",
                    "a server's stray output would go unreported or end its session",
                )
                assert result.content[0].text == '{"x": 2}', broken(  # type: ignore[union-attr]
                    "the session did not carry on after an Exception item on its read stream",
                    "stdio.py (a stdout line that is not JSON-RPC becomes one)",
                    "one stray line from a server would end its connection",
                )

                relaying.cancel()
                await to_client.aclose()  # the read stream ends, as when a stdio child exits
                with pytest.raises(MCPError) as caught:
                    await client.call_tool("echo", {"x": 3})
                assert caught.value.code == CONNECTION_CLOSED, broken(
                    f"after the read stream ended a call failed with {caught.value.code} "
                    f"{caught.value.message!r}, not CONNECTION_CLOSED",
                    "supervisor (`exc.code == CONNECTION_CLOSED` marks the replica lost)",
                    "a dead server would be reported as the tool's error and never restarted",
                )
                assert closed.is_set(), "transports._WatchedRead did not call on_closed at the end of the stream"
            tg.cancel_scope.cancel()


def test_read_stream_wrapper_implements_every_member_of_the_sdks_read_stream_protocol() -> None:
    from mcp.client import _transport  # private: where the SDK's Transport protocol finds ReadStream

    read_stream = getattr(_transport, "ReadStream", None)
    assert read_stream is not None, broken(
        "mcp.client._transport.ReadStream is gone", "transports._ReadStream (implements that protocol)",
        "find the new read-stream protocol and check _ReadStream against it",
    )
    missing = sorted(m for m in get_protocol_members(read_stream) if not hasattr(transports._ReadStream, m))
    assert not missing, broken(
        f"the SDK's ReadStream protocol now has {missing}", "transports._ReadStream",
        "the Client may call what the wrapper does not implement (it delegates only through __getattr__)",
    )
    assert "last_context" in (read_stream.__doc__ or ""), broken(
        "the SDK's ReadStream no longer documents `last_context` (read with getattr)",
        "transports._ReadStream.__getattr__ (delegates it to the wrapped stream)",
        "check how the SDK now reads the sender's context from a read stream",
    )


def test_sdk_default_environment_is_the_inherited_basics(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", "/home/contract")
    monkeypatch.setenv("MCPHUB_CONTRACT_SECRET", "x")
    env = get_default_environment()
    assert env.get("HOME") == "/home/contract" and "MCPHUB_CONTRACT_SECRET" not in env, broken(
        f"mcp.client.stdio.get_default_environment() returned {sorted(env)}",
        "transports._spawner (a stdio child's base environment)",
        "children would lose HOME/PATH or inherit the hub's secrets",
    )
    basics = {"HOME", "LOGNAME", "PATH", "SHELL", "TERM", "USER"}
    assert set(env) <= basics, broken(
        f"get_default_environment() now passes {sorted(set(env) - basics)}",
        "transports._spawner and README (what a stdio child inherits)", "update the documented allowlist",
    )


# ---------------------------------------------------------------------- the SDK's streamable HTTP client


Answer = Callable[[httpx2.Request], httpx2.Response]


class _Intercept(httpx2.AsyncBaseTransport):
    """The SDK server app in process, except that `tools/call` gets `answer` (a proxy, a restarted server)."""

    def __init__(self, app: Starlette, answer: Answer) -> None:
        self._app = httpx2.ASGITransport(app=app)
        self._answer = answer

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        if request.method == "GET":
            return httpx2.Response(405)  # no standalone SSE stream: the in-process app would hold it open
        if request.method == "POST" and json.loads(request.content).get("method") == "tools/call":
            return self._answer(request)
        return await self._app.handle_async_request(request)


def _http_sample() -> MCPServer:
    server = MCPServer("contract", version="1")

    @server.tool()
    def add(a: int, b: int) -> int:
        return a + b

    return server


async def _call_through(answer: Answer, *, mode: str = "legacy", hooks: list[Any] | None = None) -> MCPError:
    """One tools/call over the SDK's streamable HTTP client, answered by `answer`; the MCPError it raised.
    `legacy`: the 2025 handshake, which gives the connection a session id (2026 has none)."""
    server = _http_sample()
    app = server.streamable_http_app(json_response=True)
    with anyio.fail_after(WAIT):
        async with server.session_manager.run():
            http = httpx2.AsyncClient(transport=_Intercept(app, answer), event_hooks={"response": hooks or []})
            async with http, Client(streamable_http_client(URL, http_client=http), mode=mode, cache=None) as c:
                with pytest.raises(MCPError) as caught:
                    await c.call_tool("add", {"a": 1, "b": 2})
    return caught.value


async def test_sdk_reports_an_http_error_page_as_a_bare_http_error() -> None:
    for mode in ("legacy", "auto"):
        error = await _call_through(lambda _: httpx2.Response(502, html="<html><h1>502 Bad Gateway</h1></html>"),
                                    mode=mode)
        assert (error.code, error.message) == (INTERNAL_ERROR, supervisor.SDK_BARE_HTTP_ERROR), broken(
            f"the SDK now reports an HTTP 502 page ({mode}) as {error.code} {error.message!r}, not "
            f"{INTERNAL_ERROR} {supervisor.SDK_BARE_HTTP_ERROR!r}",
            "supervisor.SDK_BARE_HTTP_ERROR (_call_once, _ping)",
            "a proxy's 502 page would become a 400 tool_error instead of a 502 bad_gateway",
        )


async def test_sdk_reports_a_bare_404_with_a_session_as_session_terminated() -> None:
    error = await _call_through(lambda _: httpx2.Response(404))
    assert error.code == INVALID_REQUEST and error.message == transports.SESSION_GONE, broken(
        f"the SDK now reports a bare 404 to a request with a session id as {error.code} {error.message!r}, "
        f"not {INVALID_REQUEST} {transports.SESSION_GONE!r}",
        "transports.SESSION_GONE and supervisor._is_session_gone",
        "a restarted server's 404 would be a tool error instead of a reconnect and a resend",
    )
    assert supervisor._is_session_gone(error.message), "supervisor._is_session_gone no longer matches SESSION_GONE"


async def test_sdk_http_requests_pass_the_response_hook_which_can_read_their_id_and_body() -> None:
    """What transports.notice_lost_session does, with its own helpers: read the failed request's id and
    the error body in the response hook; the SDK must still see the same body afterwards."""
    seen: list[tuple[Any, Any, bytes]] = []

    async def hook(response: httpx2.Response) -> None:
        if response.status_code == 400:
            request = response.request
            seen.append((transports._request_id(request), request.headers.get("mcp-session-id"),
                         await transports._error_body(response)))

    def refuse(request: httpx2.Request) -> httpx2.Response:
        request_id = json.loads(request.content)["id"]
        return httpx2.Response(400, json={"jsonrpc": "2.0", "id": request_id,
                                          "error": {"code": -32000, "message": "Bad Request: session expired"}})

    error = await _call_through(refuse, hooks=[hook])
    assert len(seen) == 1, broken(
        "the SDK's HTTP requests no longer pass the http_client's response event hooks",
        "transports._http_transport (notice_lost_session)", "stale sessions would no longer be noticed",
    )
    request_id, session, body = seen[0]
    assert request_id is not None and session, broken(
        f"in the response hook the SDK's POST showed id {request_id!r} and mcp-session-id {session!r}",
        "transports._request_id / notice_lost_session (read the JSON body and header of the request)",
        "a stale-session answer could no longer be tied to its request and resent",
    )
    assert b"session expired" in body, "transports._error_body did not read the 400's body in the hook"
    assert error.message == "Bad Request: session expired", broken(
        f"after the hook read the body, the SDK reported {error.code} {error.message!r}",
        "transports._error_body (reads the body before the SDK does)",
        "reading it in the hook would hide the server's own JSON-RPC error from the caller",
    )


# ------------------------------------------------------------------------------------------- uvicorn


async def _ok(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})


def _config(port: int) -> uvicorn.Config:
    return uvicorn.Config(_ok, host="127.0.0.1", port=port, lifespan="off", log_config=None, access_log=False)


async def _until_started(server: uvicorn.Server) -> None:
    with anyio.fail_after(WAIT):
        while not server.started:
            await anyio.sleep(0.01)  # uvicorn offers no event for this; a bounded poll of its flag


async def test_uvicorn_installs_its_signal_handlers_only_through_capture_signals() -> None:
    from contextlib import contextmanager

    class NoSignals(uvicorn.Server):  # what serve._Server does
        @contextmanager
        def capture_signals(self) -> Any:
            yield

    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    server = NoSignals(_config(free_port()))
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve)
        await _until_started(server)
        during = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
        server.should_exit = True
    assert during == before, broken(
        "uvicorn.Server.serve() installed signal handlers although capture_signals() was overridden",
        "serve._Server (overrides capture_signals so the hub handles SIGINT/SIGTERM itself)",
        "uvicorn would re-raise the signal after serving and kill the hub before its servers are stopped",
    )


async def test_uvicorn_serve_raises_system_exit_when_the_port_is_taken() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        server = uvicorn.Server(_config(taken.getsockname()[1]))
        server.capture_signals = _no_signals  # type: ignore[method-assign]
        try:
            with anyio.fail_after(WAIT):
                await server.serve()
        except SystemExit:
            return
        except Exception as exc:  # noqa: BLE001 (reported, as what changed)
            ended = f"ends with {type(exc).__name__}: {exc}"
        else:
            ended = "returns normally"
    pytest.fail(broken(
        f"uvicorn.Server.serve() {ended} when its port is taken, not with SystemExit",
        "serve._serve_until_done (turns that SystemExit into ListenError: one line, exit 2)",
        "a busy port would end in a traceback or go unnoticed",
    ))


async def test_uvicorn_should_exit_ends_serve() -> None:
    server = uvicorn.Server(_config(free_port()))
    server.capture_signals = _no_signals  # type: ignore[method-assign]
    done = anyio.Event()

    async def serve() -> None:
        await server.serve()
        done.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(serve)
        await _until_started(server)
        server.should_exit = True
        with anyio.move_on_after(WAIT):
            await done.wait()
        if not done.is_set():
            tg.cancel_scope.cancel()
    assert done.is_set(), broken(
        f"setting uvicorn.Server.should_exit did not end serve() within {WAIT:g}s",
        "serve._on_signals (stops every listener on SIGINT/SIGTERM)", "the hub would not stop on a signal",
    )


async def test_uvicorn_serves_on_a_socket_bound_by_the_caller() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # bound, not listening: what serve._bind hands uvicorn
        port = sock.getsockname()[1]
        server = uvicorn.Server(_config(port))
        server.capture_signals = _no_signals  # type: ignore[method-assign]
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: server.serve(sockets=[sock]))
            await _until_started(server)
            try:
                async with httpx2.AsyncClient(timeout=WAIT) as http:
                    status = (await http.get(f"http://127.0.0.1:{port}/")).status_code
            except httpx2.TransportError as exc:
                status = None
                reason = f"{type(exc).__name__}: {exc}"
            finally:
                server.should_exit = True
    assert status == 204, broken(
        f"uvicorn.Server.serve(sockets=[a bound socket]) did not serve on it ({status or reason})",
        "serve._serve_until_done (uvicorn serves on the socket serve._bind bound)",
        "the hub would not answer on its port",
    )


def _no_signals() -> Any:
    from contextlib import nullcontext

    return nullcontext()


async def test_the_sdk_looks_up_a_tools_input_schema_in_the_requests_own_context() -> None:
    caller: ContextVar[str] = ContextVar("caller")
    seen: list[str | None] = []
    tool = Tool(name="t", input_schema={"type": "object", "properties": {"x": {"type": "string"}}})

    def schema(name: str) -> Any:
        seen.append(caller.get(None))
        return tool.input_schema

    async def list_tools(ctx: Any, params: Any) -> ListToolsResult:
        return ListToolsResult(tools=[tool])

    async def call_tool(ctx: Any, params: CallToolRequestParams) -> CallToolResult:
        return CallToolResult(content=[TextContent(type="text", text="ok")])

    manager = StreamableHTTPSessionManager(Server("c", on_list_tools=list_tools, on_call_tool=call_tool,
                                                  get_tool_input_schema=schema))

    async def app(scope: Any, receive: Any, send: Any) -> None:  # what McpFace.__call__ does
        caller.set("the caller of this request")
        await manager.handle_request(scope, receive, send)

    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {
        "name": "t", "arguments": {"x": "y"}, "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                                                      "io.modelcontextprotocol/clientCapabilities": {}}}}
    headers = {"MCP-Protocol-Version": "2026-07-28", "Accept": "application/json, text/event-stream",
               "Mcp-Method": "tools/call", "Mcp-Name": "t"}
    async with manager.run(), httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url="http://c") as http:
        response = await http.post("/", json=body, headers=headers)
    assert response.status_code == 200, response.text
    assert seen == ["the caller of this request"], broken(
        f"the SDK no longer calls get_tool_input_schema in the request's task (saw {seen})",
        "mcp_face.McpFace._input_schema (reads the caller from a context variable)",
        "2026 calls through the MCP face would skip the Mcp-Param check or see another caller's view",
    )


async def test_uvicorn_httptools_protocol_can_be_subclassed_to_count_headers_and_refuse_a_request() -> None:
    """What mcphub/connection.py overrides in uvicorn's httptools protocol still exists and is still called."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    missing = [name for name in ("connection_made", "data_received", "connection_lost", "on_message_begin", "on_url",
                                 "on_header", "on_headers_complete", "on_message_complete", "send_400_response")
               if not callable(getattr(HttpToolsProtocol, name, None))]
    assert not missing, broken(f"uvicorn's HttpToolsProtocol has no {', '.join(missing)}",
                               "connection.LimitedHttpToolsProtocol (overrides them)",
                               "header limits and slow-loris timeouts would silently stop applying")
    seen: dict[str, Any] = {}

    class Counting(HttpToolsProtocol):
        def connection_made(self, transport: Any) -> None:  # type: ignore[override]
            super().connection_made(transport)
            seen["attributes"] = (self.transport is transport, isinstance(self.flow.read_paused, bool),
                                  callable(self.loop.call_later))

        def on_url(self, url: bytes) -> None:
            seen["url"] = url
            super().on_url(url)

        def on_header(self, name: bytes, value: bytes) -> None:
            if name.lower() == b"x-stop":
                raise RuntimeError("refused")
            super().on_header(name, value)

        def send_400_response(self, msg: str) -> None:
            seen["400"] = msg
            seen["cycle"] = isinstance(getattr(self.cycle, "response_complete", None), bool)
            super().send_400_response(msg)

    port = free_port()
    config = uvicorn.Config(_ok, host="127.0.0.1", port=port, lifespan="off", log_config=None, access_log=False,
                            http=Counting)
    server = uvicorn.Server(config)
    server.capture_signals = _no_signals  # type: ignore[method-assign]
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve)
        await _until_started(server)
        try:
            async with await anyio.connect_tcp("127.0.0.1", port) as stream:
                await stream.send(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\nGET /y HTTP/1.1\r\nHost: a\r\nX-Stop: 1\r\n\r\n")
                with anyio.fail_after(WAIT):
                    answer = b""
                    while True:
                        try:
                            answer += await stream.receive()
                        except (anyio.EndOfStream, anyio.BrokenResourceError):
                            break
        finally:
            server.should_exit = True
    assert seen.get("attributes") == (True, True, True), broken(
        "uvicorn's HttpToolsProtocol no longer has `transport`, `flow.read_paused` or `loop` as before",
        "connection.LimitedHttpToolsProtocol (timers on `loop`, answers on `transport`, stalls vs. `flow.read_paused`)",
        "the connection limits would fail on every connection")
    assert seen.get("cycle") is True, broken(
        "uvicorn's HttpToolsProtocol.cycle (the request being answered) has no boolean `response_complete`",
        "connection.LimitedHttpToolsProtocol._answering (no refusal written over an answer in progress)",
        "a pipelined request's 408/431 could be written into the middle of another response")
    assert seen.get("url") == b"/y" and "400" in seen and b"HTTP/1.1 400" in answer, broken(
        f"a parser callback that raises no longer ends in send_400_response (seen: {sorted(seen)}, "
        f"answer: {answer[:40]!r})", "connection.LimitedHttpToolsProtocol (raises _Refused from on_header/on_url)",
        "a request over hub.limits.max_headers would be served, or answered without the 431 error body")


# ------------------------------------------------------------------------------- MCP tasks (2025-11-25)


def _task_server() -> Server[Any]:
    """A 2025 task server as the MCP face builds one: `Server.middleware` answers a task-augmented tools/call,
    `add_request_handler` serves tasks/get, `create_initialization_options` announces `tasks`."""
    task = {"taskId": "t1", "status": "working", "createdAt": "2026-01-01T00:00:00Z",
            "lastUpdatedAt": "2026-01-01T00:00:00Z", "ttl": 1000, "pollInterval": 10}

    class TaskServer(Server[Any]):
        def create_initialization_options(self, *args: Any, **kwargs: Any) -> Any:
            options = super().create_initialization_options(*args, **kwargs)
            options.capabilities = options.capabilities.model_copy(update={"tasks": mcp_tasks.CAPABILITY})
            return options

    async def answer_task(ctx: Any, call_next: Any) -> Any:
        if ctx.method == "tools/call" and (ctx.params or {}).get("task") is not None:
            return {"task": task}
        if ctx.method == "tools/call" and ctx.protocol_version == "2026-07-28":  # the extension's shape
            return {**task, "resultType": "task"}
        return await call_next(ctx)

    async def get_task(ctx: Any, params: GetTaskRequestParams) -> dict[str, Any]:
        return {**task, "taskId": params.task_id, "status": "completed"}

    async def call_tool(ctx: Any, params: Any) -> CallToolResult:
        return CallToolResult(content=[TextContent(type="text", text="not as a task")])

    async def list_tools(ctx: Any, params: Any) -> ListToolsResult:
        return ListToolsResult(tools=[Tool(name="echo", input_schema={"type": "object"})])

    server = TaskServer("contract", version="1", on_list_tools=list_tools, on_call_tool=call_tool)
    server.middleware.append(answer_task)
    server.add_request_handler("tasks/get", GetTaskRequestParams, get_task)
    server.extensions[mcp_tasks.EXTENSION] = {}
    return server


class _Claimed(Result):
    result_type: Literal["task"] = "task"
    task_id: str


class _TasksExtension(ClientExtension):
    identifier = mcp_tasks.EXTENSION

    def claims(self) -> list[ResultClaim[Any]]:
        async def resolve(claimed: _Claimed, context: ClaimContext) -> CallToolResult:
            got = await context.session.send_request(
                GetTaskRequest(params=GetTaskRequestParams(task_id=claimed.task_id)), GetTaskResult)
            return CallToolResult(content=[TextContent(type="text", text=f"{got.task_id} {got.status}")])

        return [ResultClaim(result_type="task", model=_Claimed, resolve=resolve)]


async def test_a_2026_request_carries_a_task_result_from_middleware_to_a_client_extensions_claim() -> None:
    with anyio.fail_after(WAIT):
        async with Client(_task_server(), extensions=[_TasksExtension()]) as client:
            assert client.protocol_version == "2026-07-28"
            assert client.server_capabilities.extensions == {mcp_tasks.EXTENSION: {}}, broken(
                "Server.extensions is no longer announced to 2026 clients", "mcp_tasks.McpTasks.install",
                "2026 clients would not know the MCP face serves tasks")
            result = await client.call_tool("echo", {})
            assert result.content == [TextContent(type="text", text="t1 completed")], broken(
                f"a 2026 middleware result with resultType 'task' no longer reaches a client's claim ({result})",
                "mcp_tasks.McpTasks._task_call (2026 branch)", "2026 task-augmented calls would fail on the face")


async def test_a_2025_session_carries_tasks_through_middleware_request_handlers_and_the_raw_dispatcher() -> None:
    task_call = {"name": "echo", "arguments": {}, "task": {"ttl": 1000}}
    with anyio.fail_after(WAIT):
        async with Client(_task_server(), mode="legacy") as client:
            assert client.server_capabilities.tasks == mcp_tasks.CAPABILITY, broken(
                "the initialize result no longer carries the capabilities of create_initialization_options",
                "mcp_face._HubServer.create_initialization_options", "2025 clients would not see `tasks`")
            with pytest.raises(pydantic.ValidationError):  # why upstream_tasks goes one level down to create
                await client.session.send_request(CallToolRequest(params=CallToolRequestParams.model_validate(
                    task_call)), CreateTaskResult)
            raw = await client.session._dispatcher.send_raw_request("tools/call", task_call, {})
            assert raw["task"]["taskId"] == "t1", broken(
                f"a Server.middleware result, or ClientSession._dispatcher.send_raw_request, changed ({raw})",
                "mcp_tasks.McpTasks._task_call (answers CreateTaskResult from a middleware); "
                "upstream_tasks._create (reads it raw)",
                "task-augmented tools/call would fail on the MCP face and upstream")
            got = await client.session.send_request(GetTaskRequest(params=GetTaskRequestParams(task_id="t9")),
                                                    GetTaskResult)
            assert (got.task_id, got.status) == ("t9", "completed"), broken(
                "a method outside the spec's tables no longer reaches add_request_handler's handler, or "
                "ClientSession.send_request checks its result against the core tables",
                "mcp_tasks.McpTasks.install; upstream_tasks.call_tool (tasks/get, tasks/result, tasks/cancel)",
                "tasks could not be polled, fetched or cancelled")
