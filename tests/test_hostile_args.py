"""Hostile arguments cost no one else (#17, the argument and transport findings), replayed as the issue
states them, plus a property-based fuzz of argument values.

Each replay checks the status and message the caller gets, that the server did not restart (same
process, no restart counted, /readyz 200), and that an honest call on the same server, in flight while
the hostile one is answered, succeeds.

Real processes on purpose: the findings are about a real stdio child and its wire (`running_hub(...,
in_process=False)`: the sample server as a child process, the hub on uvicorn), shared by the module's
tests, which never kill it. Two replays need what a process does not give: a tool whose own schema loops
(an in-process low-level server behind the supervisor's `connect=` seam), and a child that dies with
a caller's words on its stderr (a hub of its own).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import anyio.from_thread
import httpx2
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from mcp import Client
from mcp.server import Server, ServerRequestContext
from mcp.types import CallToolRequestParams, CallToolResult, ListToolsResult, TextContent, Tool

from mcphub.auth import Principal
from mcphub.config import ServerConfig
from mcphub.invoker import Call
from mcphub.outbound import Unsendable
from mcphub.supervisor import Supervisor
from mcphub.toolserver import State
from mcphub.validation import MAX_DEPTH, MAX_VALUES
from tests.helpers import free_port
from tests.hub import (
    IN_PROCESS_BASE_URL,
    RunningHub,
    assert_error,
    config_of,
    core,
    make_app,
    running_hub,
    running_instances,
    sample_server,
)

# hypothesis imports libcst to print a failing example as a patch; libcst warns on import, and the
# suite's filterwarnings=error would turn a readable failure into an INTERNALERROR
pytestmark = [pytest.mark.anyio, pytest.mark.filterwarnings("ignore::DeprecationWarning:mypy_extensions")]

WAIT = 10.0  # seconds any one replay may take on a loaded machine (the issue saw 504s after 60 s)
HONEST_SLEEP = 0.3  # seconds the honest call stays in flight on the server
FUZZ_EXAMPLES = 100  # bounded: a few seconds through the real child
DOCUMENTED = {200, 413, 422}  # what a call with hostile arguments may get (413: the hub's body limit)


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def markers(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("markers")


@pytest.fixture(scope="module")
async def hub(markers: Path) -> AsyncIterator[RunningHub]:
    config = {"servers": {"s": sample_server(env={"SAMPLE_MARKERS": str(markers)})}}
    async with running_hub(config, in_process=False) as running:
        yield running


async def post(hub: RunningHub, tool: str, body: str | bytes) -> httpx2.Response:
    """POST a body as written: lone surrogates and NaN only exist as JSON text (`\\ud800`, `NaN`)."""
    return await hub.client.post(f"/s/{tool}", content=body, headers={"Content-Type": "application/json"})


def nested(depth: int) -> str:
    return "[" * depth + "0" + "]" * depth


class Unharmed:
    """The server as it was before the hostile calls: same process, no restart; checked after them."""

    def __init__(self, hub: RunningHub, pid: int) -> None:
        self.hub = hub
        self.pid = pid

    @classmethod
    async def before(cls, hub: RunningHub) -> Unharmed:
        response = await post(hub, "pid", b"{}")
        assert response.status_code == 200, response.text
        return cls(hub, response.json()["result"])

    async def check(self) -> None:
        ready = await self.hub.client.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["servers"]["s"]["restarts"] == 0, ready.text
        response = await post(self.hub, "pid", b"{}")
        assert response.status_code == 200 and response.json()["result"] == self.pid, response.text


async def alongside(hub: RunningHub, markers: Path, tag: str, hostile: Callable[[], Awaitable[Any]]) -> Any:
    """Run `hostile` while an honest call is in flight on the same server (it has started its sleep
    there); the honest call must succeed. Returns what `hostile` returned."""
    honest: list[httpx2.Response] = []
    found: list[Any] = []

    async def honest_call() -> None:
        honest.append(await post(hub, "sleep", json.dumps({"seconds": HONEST_SLEEP, "tag": tag})))

    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tg:
            tg.start_soon(honest_call)
            while not (markers / f"started-{tag}").exists():  # the server is running the honest call
                await anyio.sleep(0.01)
            found.append(await hostile())
    assert honest[0].status_code == 200 and honest[0].json() == {"result": f"slept {HONEST_SLEEP}"}, honest[0].text
    return found[0]


# ------------------------------------------------------------------------- 1: a lone surrogate, deep nesting


async def test_a_lone_surrogate_is_422_before_anything_is_sent_and_costs_no_one_else(
    hub: RunningHub, markers: Path
) -> None:
    unharmed = await Unharmed.before(hub)
    cases = {  # where the surrogate is → where the 422 says it is
        '{"text": "\\ud800"}': ("echo", "text: a string holds a lone surrogate (\\ud800)"),
        '{"seconds": 0, "tag": "hostile", "note": ["ok", "x\\udfff"]}': (
            "sleep", "note.1: a string holds a lone surrogate (\\udfff)"),
        '{"seconds": 0, "tag": "hostile", "\\ud83d": 1}': ("sleep", "\\ud83d: a key holds a lone surrogate (\\ud83d)"),
    }
    for body, (tool, where) in cases.items():
        response = await alongside(hub, markers, f"surrogate-{tool}-{len(body)}", partial(post, hub, tool, body))
        error = assert_error(response, 422, "invalid_arguments")
        assert error["message"] == (f"arguments of tool '{tool}' cannot be sent: {where}, which is not Unicode "
                                    "text and cannot be sent as UTF-8; send the whole surrogate pair or the character "
                                    "itself")
    assert not (markers / "started-hostile").exists()  # the server never saw those calls
    # a surrogate pair written as JSON escapes is one character, and goes through
    response = await post(hub, "echo", '{"text": "\\ud83d\\ude00"}')
    assert response.status_code == 200 and response.json() == {"result": "\U0001f600"}, response.text
    await unharmed.check()


@pytest.mark.parametrize("depth", [MAX_DEPTH, 200, 254, 255, 256, 470, 970, 5000, 50_000])
async def test_arguments_nested_beyond_the_bound_are_422_at_once_and_recorded_as_sent(
    hub: RunningHub, markers: Path, depth: int, caplog: pytest.LogCaptureFixture
) -> None:
    # the issue's three bands: 200-254 dropped by the server (504 after 60 s), 256+ "the server answered
    # something invalid" (502), ~970+ a 500 with tracebacks while metrics and audit said 200
    unharmed = await Unharmed.before(hub)
    caplog.set_level(logging.INFO, logger="mcphub.access")
    before = await _count(hub, "echo", 422)
    body = f'{{"text": "x", "deep": {nested(depth)}}}'  # `deep` is level 2: the arguments nest depth + 1
    response = await alongside(hub, markers, f"deep-{depth}", lambda: post(hub, "echo", body))
    error = assert_error(response, 422, "invalid_arguments")
    assert error["message"] == (f"arguments of tool 'echo' are nested too deeply: nested more than {MAX_DEPTH} "
                                "levels deep (the hub's limit)")
    assert await _count(hub, "echo", 422) == before + 1
    audited = [r.audit["status"] for r in caplog.records if r.name == "mcphub.access" and r.audit["tool"] == "echo"]
    assert audited == [422], audited
    # one level less goes through the child and back
    response = await post(hub, "echo", f'{{"text": "x", "deep": {nested(MAX_DEPTH - 1)}}}')
    assert response.status_code == 200 and response.json() == {"result": "x"}, response.text
    await unharmed.check()


async def test_a_body_with_more_values_than_the_bound_is_422_and_one_within_it_goes_through(
    hub: RunningHub, markers: Path
) -> None:
    unharmed = await Unharmed.before(hub)
    over = f'{{"text": "x", "many": [{",".join(["0"] * (MAX_VALUES - 1))}]}}'  # + text + many: one too many
    response = await alongside(hub, markers, "many", lambda: post(hub, "echo", over))
    error = assert_error(response, 422, "invalid_arguments")
    assert error["message"] == (f"arguments of tool 'echo' are too large: more than {MAX_VALUES} values (object "
                                "members and array items; the hub's limit)")
    within = f'{{"text": "x", "many": [{",".join(["0"] * (MAX_VALUES - 2))}]}}'
    response = await post(hub, "echo", within)
    assert response.status_code == 200 and response.json() == {"result": "x"}, response.text
    await unharmed.check()


@pytest.mark.parametrize(("number", "message"), [
    ("NaN", "request body is not valid JSON: NaN is not JSON (JSON numbers must be finite)"),
    ("-Infinity", "request body is not valid JSON: -Infinity is not JSON (JSON numbers must be finite)"),
    ("1e400", "arguments of tool 'echo' cannot be sent: n: the number is not finite (inf); JSON numbers must be "
              "finite (within ±1.8e308)"),
])
async def test_a_number_json_cannot_carry_is_422_not_silently_null(hub: RunningHub, number: str, message: str) -> None:
    response = await post(hub, "echo", f'{{"text": "x", "n": {number}}}')
    assert assert_error(response, 422, "invalid_arguments")["message"] == message


async def test_an_encode_failure_past_the_check_fails_that_call_alone_on_the_stdio_connection(
    hub: RunningHub, markers: Path
) -> None:
    # straight at the server handle, past the invoker's check: the transport's backstop (the stdio writer
    # used to end the connection for every caller here)
    unharmed = await Unharmed.before(hub)
    handle = hub.supervisor.servers["s"]

    async def hostile() -> Unsendable:
        with pytest.raises(Unsendable) as refused:
            await handle.call_tool("echo", {"text": "\ud800"})
        return refused.value

    refused = await alongside(hub, markers, "backstop", hostile)
    assert refused.status_code == 422
    assert refused.message == ("arguments of tool 'echo' cannot be sent to its server: a string holds a lone "
                               "surrogate, which is not Unicode text and cannot be sent as UTF-8")
    assert handle.state is State.READY
    await unharmed.check()


async def test_arguments_for_a_mounted_hubs_server_are_checked_here_before_they_are_sent() -> None:
    # a mounted server is validated by the hub that runs it; what this hub cannot even send is refused here
    b_port, a_port = free_port(), free_port()
    b_cfg = {"hub": {"port": b_port}, "servers": {"beta": sample_server()}}
    a_cfg = {"hub": {"port": a_port, "mount": ["b"]}, "remotes": {"b": {"url": f"http://127.0.0.1:{b_port}"}}}
    async with running_instances(b_cfg) as b_hubs, running_instances(a_cfg) as a_hubs:
        a, b = a_hubs["hub"], b_hubs["hub"]
        with anyio.fail_after(WAIT):
            while (await a.client.get("/readyz")).json()["servers"].get("beta", {}).get("state") != "ready":
                await anyio.sleep(0.05)
            refused: list[httpx2.Response] = []
            honest: list[httpx2.Response] = []

            async def send(into: list[httpx2.Response], body: str) -> None:
                into.append(await a.client.post("/beta/echo", content=body,
                                                headers={"Content-Type": "application/json"}))

            async with anyio.create_task_group() as tg:
                tg.start_soon(send, honest, '{"text": "honest"}')
                tg.start_soon(send, refused, '{"text": "\\ud800"}')
                tg.start_soon(send, refused, f'{{"text": "x", "deep": {nested(MAX_DEPTH)}}}')
            # the same through the call path every face uses (the runner, the CLI, MCP hand over parsed arguments)
            direct = await core(a).invoke(Call(Principal(name="test"), "beta", "echo", {"text": "x\udc00"}))
        at_b = (await b.client.get("/metrics")).text
    assert direct.status == 422 and "a string holds a lone surrogate (\\udc00)" in direct.body["error"]["message"]
    assert honest[0].status_code == 200 and honest[0].json() == {"result": "honest"}, honest[0].text
    messages = sorted(assert_error(r, 422, "invalid_arguments")["message"] for r in refused)
    assert messages[0].startswith("arguments of tool 'echo' are nested too deeply"), messages
    assert messages[1].startswith("arguments of tool 'echo' cannot be sent: text: a string holds a lone surrogate")
    calls_at_b = [row for row in at_b.splitlines() if row.startswith("mcphub_tool_calls_total{")]
    assert calls_at_b == ['mcphub_tool_calls_total{face="http",server="beta",status="200",tool="echo"} 1.0'], calls_at_b


async def _count(hub: RunningHub, tool: str, status: int) -> float:
    text = (await hub.client.get("/metrics")).text
    line = f'mcphub_tool_calls_total{{face="http",server="s",status="{status}",tool="{tool}"}} '
    found = [float(row.removeprefix(line)) for row in text.splitlines() if row.startswith(line)]
    return found[0] if found else 0.0


# ------------------------------------------------------------------------------- 2: /readyz carries no caller data


async def test_readyz_never_shows_what_a_servers_stderr_said() -> None:
    # The chain: a connection ended by an error, and last_error carried the child's last stderr
    # line, which held the previous caller's argument. Here a server writes a caller's argument to its
    # stderr (the tail the transport keeps), then its connection ends with an error.
    secret = "card 4111-1111-1111-1111"
    ended: list[Callable[[], None]] = []
    tails: list[Any] = []

    async def list_tools(ctx: ServerRequestContext[Any], params: Any) -> ListToolsResult:
        return ListToolsResult(tools=[Tool(name="leak", input_schema={"type": "object"})])

    async def call_tool(ctx: ServerRequestContext[Any], params: CallToolRequestParams) -> CallToolResult:
        tails[-1].append(f"processing {json.dumps(params.arguments)}")  # its stderr, as the transport keeps it
        ended[-1]()  # and then its connection ends
        return CallToolResult(content=[TextContent(type="text", text="ok")])

    server = Server("leaky", version="0.0.1", on_list_tools=list_tools, on_call_tool=call_tool)

    @asynccontextmanager
    async def connect(name: str, cfg: ServerConfig, *, on_closed: Callable[[], None], stderr_tail: Any,
                      **_: Any) -> AsyncIterator[Client]:
        ended.append(on_closed)
        tails.append(stderr_tail)
        async with Client(server, cache=None) as client:
            yield client
        raise OSError("the pipe broke")  # the connection ends with an error, as the hostile call made it

    config = config_of({"servers": {"t": sample_server(restart={"initial_delay": 60, "max_delay": 60})}})
    async with Supervisor(config, connect=connect) as supervisor:
        transport = httpx2.ASGITransport(app=make_app(supervisor, config))
        async with httpx2.AsyncClient(base_url=IN_PROCESS_BASE_URL, transport=transport) as client:
            assert (await client.post("/t/leak", json={"card": secret})).status_code == 200
            with anyio.fail_after(WAIT):  # until the hub has seen the connection end (it restarts in 60 s)
                while supervisor.servers["t"].last_error is None:
                    await anyio.sleep(0.01)
            ready = await client.get("/readyz")
            refused = await client.post("/t/leak", json={})
    assert ready.status_code == 503, ready.text
    assert ready.json()["servers"]["t"]["last_error"] == "OSError: the pipe broke; see its stderr in the hub's log"
    error = assert_error(refused, 503, "server_unavailable")
    assert "4111" not in ready.text and "4111" not in error["message"], (ready.text, error)


# --------------------------------------------------------------------- 3: validation never silently turns off

NODE = {  # the tool: its schema refers to itself (a tree)
    "type": "object",
    "$defs": {"node": {"type": "object",
                       "properties": {"children": {"type": "array", "items": {"$ref": "#/$defs/node"}}},
                       "additionalProperties": False}},
    "properties": {"tree": {"$ref": "#/$defs/node"}},
    "additionalProperties": False,
}
LOOP = {  # `x` loops through two $refs without consuming anything: any `x` recurses without end
    "type": "object",
    "properties": {"x": {"$ref": "#/$defs/a"}, "n": {"type": "integer"}},
    "$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}},
}
NOWHERE = {  # under a nested $id, a $ref the hub cannot open ahead of time: only the inputs that reach it fail
    "type": "object",
    "properties": {"y": {"$id": "https://schemas.example/y", "$ref": "#/$defs/missing"}, "n": {"type": "integer"}},
}


class _Schemas:
    """A low-level server whose tools have those schemas; each echoes its arguments."""

    def __init__(self, extra: list[Tool] | None = None) -> None:
        self.calls = 0
        self.tools = [Tool(name="tree", input_schema=NODE), Tool(name="loop", input_schema=LOOP),
                      Tool(name="nowhere", input_schema=NOWHERE), *(extra or [])]
        self.server = Server("schemas", version="0.0.1", on_list_tools=self._list, on_call_tool=self._call)

    async def _list(self, ctx: ServerRequestContext[Any], params: Any) -> ListToolsResult:
        return ListToolsResult(tools=self.tools)

    async def _call(self, ctx: ServerRequestContext[Any], params: CallToolRequestParams) -> CallToolResult:
        self.calls += 1
        return CallToolResult(content=[TextContent(type="text", text=json.dumps(params.arguments))])


@asynccontextmanager
async def schema_hub(schemas: _Schemas) -> AsyncIterator[httpx2.AsyncClient]:
    config = config_of({"servers": {"t": sample_server()}})  # the config only names the server; `connect` serves it

    @asynccontextmanager
    async def connect(name: str, cfg: ServerConfig, **_: Any) -> AsyncIterator[Client]:
        async with Client(schemas.server, cache=None) as client:
            yield client

    async with Supervisor(config, connect=connect) as supervisor:
        transport = httpx2.ASGITransport(app=make_app(supervisor, config))
        async with httpx2.AsyncClient(base_url=IN_PROCESS_BASE_URL, transport=transport) as client:
            yield client
        assert supervisor.servers["t"].restarts == 0


def _tree(depth: int) -> dict[str, Any]:
    node: dict[str, Any] = {}
    for _ in range(depth):
        node = {"children": [node]}
    return {"tree": node}


async def test_no_input_turns_a_tools_validation_off_for_anyone() -> None:
    schemas = _Schemas()
    async with schema_hub(schemas) as client:
        async def call(tool: str, arguments: Any) -> httpx2.Response:
            return await client.post(f"/t/{tool}", content=json.dumps(arguments),
                                     headers={"Content-Type": "application/json"})

        with anyio.fail_after(WAIT):
            for depth in (100, 200, 470):  # the trees: each level nests twice (object, array)
                error = assert_error(await call("tree", _tree(depth)), 422, "invalid_arguments")
                assert "nested too deeply" in error["message"], error
            looped = assert_error(await call("loop", {"x": 1}), 422, "invalid_arguments")
            nowhere = assert_error(await call("nowhere", {"y": 1}), 422, "invalid_arguments")
            # ... and each tool is still validated for the next caller
            bad_tree = assert_error(await call("tree", {"tree": {"children": [{"bogus": 1}]}}), 422,
                                    "invalid_arguments")
            bad_loop = assert_error(await call("loop", {"n": "not a number"}), 422, "invalid_arguments")
            bad_nowhere = assert_error(await call("nowhere", {"n": "not a number"}), 422, "invalid_arguments")
            assert_error(await call("loop", {"x": 2}), 422, "invalid_arguments")
            calls_refused = schemas.calls
            fine = [await call("tree", _tree(10)), await call("loop", {"n": 1}), await call("nowhere", {"n": 1})]
    assert looped["message"] == ("the input schema of tool 'loop' cannot be applied to these arguments (checking them "
                                 "recursed without end: the schema refers to itself); the hub does not pass unchecked "
                                 "arguments on")
    assert nowhere["message"].startswith("the input schema of tool 'nowhere' cannot be applied to these arguments "
                                         "(a $ref in the schema resolves nowhere: "), nowhere
    assert nowhere["message"].endswith("/$defs/missing'); the hub does not pass unchecked arguments on"), nowhere
    assert bad_tree["errors"][0]["loc"][:3] == ["body", "tree", "children"], bad_tree
    assert bad_loop["errors"][0]["loc"] == bad_nowhere["errors"][0]["loc"] == ["body", "n"], (bad_loop, bad_nowhere)
    assert calls_refused == 0  # none of those reached the server
    assert [r.status_code for r in fine] == [200, 200, 200], [r.text for r in fine]


async def test_a_ref_that_resolves_nowhere_is_open_as_the_document_says_and_never_fetched() -> None:
    # jsonschema would fetch `$ref: http://...` with a blocking urlopen (no timeout) on the event loop, for
    # any input that reaches it; here the URL is a listener in this event loop, which such a fetch blocks:
    # the whole hub would hang (measured: until pytest-timeout)
    connected = anyio.Event()

    async def silent(stream: anyio.abc.SocketStream) -> None:
        connected.set()
        await stream.aclose()

    async with await anyio.create_tcp_listener(local_host="127.0.0.1") as listener, \
            anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, silent)
        port = listener.extra(anyio.abc.SocketAttribute.local_port)
        dangling = {"type": "object", "properties": {
            "remote": {"$ref": f"http://127.0.0.1:{port}/thing.json"},
            "missing": {"$ref": "#/$defs/Missing"},
            "n": {"type": "integer"},
        }}
        schemas = _Schemas(extra=[Tool(name="dangling", input_schema=dangling)])
        async with schema_hub(schemas) as client:
            with anyio.fail_after(WAIT):
                fine = await client.post("/t/dangling", json={"remote": {"any": 1}, "missing": [2], "n": 3})
                bad = await client.post("/t/dangling", json={"remote": 1, "n": "three"})
            spec = (await client.get("/t/openapi.json")).json()
        tg.cancel_scope.cancel()
    assert fine.status_code == 200 and fine.json() == {"remote": {"any": 1}, "missing": [2], "n": 3}, fine.text
    assert assert_error(bad, 422, "invalid_arguments")["errors"][0]["loc"] == ["body", "n"]
    assert not connected.is_set()  # nothing was fetched
    documented = json.dumps(spec["paths"]["/dangling"])
    assert "mcphub dropped the unresolvable $ref" in documented  # what the document says: those parts are open


# ---------------------------------------------------------------------------------------------- the fuzz

EDGE_CHARACTERS = ["\ud800", "\udbff", "\udc00", "\udfff", "\x00", "\x7f", "\u2028", "\ufeff", "\uffff", "\ufffe",
                   "\U0010ffff", "\U0001f600", "\u0301", '"', "\\", "\n", "é"]
EDGE_STRINGS = ["", "e\u0301", "\ud83d\ude00", "\ude00\ud83d", "null", "[1]", '{"a": 1}', " ", "\r\n"]
CHARACTERS = st.one_of(st.characters(exclude_categories=()), st.sampled_from(EDGE_CHARACTERS))  # surrogates too
TEXT = st.one_of(
    st.text(CHARACTERS, max_size=40),
    st.sampled_from(EDGE_STRINGS),
    st.builds(lambda c, n: c * n, st.sampled_from(EDGE_CHARACTERS + ["x"]), st.integers(0, 200_000)),  # sizes
)
VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**40), 10**40) | st.floats() | TEXT,  # floats: NaN, ±inf too
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(CHARACTERS, max_size=8), inner, max_size=4),
    max_leaves=12,
)


@st.composite
def hostile_arguments(draw: st.DrawFn) -> tuple[str, int]:
    """A body for the sample server's `echo` (text: str; other arguments pass its schema), and the status
    it must get, decided without the hub's own code: 200 if it is plain JSON within the bounds, else 422."""
    kind = draw(st.sampled_from(["text", "extra", "deep", "wide"]))
    if kind == "deep":
        depth = draw(st.integers(1, 1500))
        return f'{{"text": "x", "deep": {nested(depth)}}}', 200 if depth + 1 <= MAX_DEPTH else 422
    if kind == "wide":
        items = draw(st.integers(0, MAX_VALUES + 10))
        return f'{{"text": "x", "wide": [{",".join(["0"] * items)}]}}', 200 if items + 2 <= MAX_VALUES else 422
    value = draw(TEXT if kind == "text" else VALUES)
    arguments = {"text": value} if kind == "text" else {"text": "x", "extra": value}
    body = json.dumps(arguments)  # ASCII: a lone surrogate as \\udXXX, NaN and Infinity as themselves
    sent = json.loads(body)  # what the text means: two escaped halves of a pair are one character again
    return body, 200 if _plain(sent) and isinstance(sent["text"], str) else 422


def _plain(value: Any) -> bool:
    try:
        json.dumps(value, ensure_ascii=False, allow_nan=False).encode("utf-8")
    except (ValueError, UnicodeEncodeError):
        return False
    return not any(isinstance(v, float) and not math.isfinite(v) for v in _leaves(value))


def _leaves(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return [leaf for v in value.values() for leaf in _leaves(v)]
    if isinstance(value, list):
        return [leaf for v in value for leaf in _leaves(v)]
    return [value]


async def test_fuzzed_argument_values_get_a_documented_status_and_cost_no_one_else(
    hub: RunningHub, caplog: pytest.LogCaptureFixture
) -> None:
    unharmed = await Unharmed.before(hub)
    caplog.set_level(logging.WARNING, logger="mcphub")
    seen: list[int] = []

    async def one(body: str, expected: int, n: int) -> None:
        answers: dict[str, httpx2.Response] = {}

        async def send(name: str, tool: str, raw: str) -> None:
            answers[name] = await post(hub, tool, raw)

        with anyio.fail_after(WAIT):
            async with anyio.create_task_group() as tg:  # an honest call at the same time, on the same child
                tg.start_soon(send, "honest", "add", json.dumps({"a": n, "b": 1}))
                tg.start_soon(send, "hostile", "echo", body)
        honest, hostile = answers["honest"], answers["hostile"]
        assert honest.status_code == 200 and honest.json()["total"] == n + 1, honest.text
        assert hostile.status_code in DOCUMENTED, hostile.text
        assert hostile.status_code == expected, (body[:300], hostile.text[:300])
        if expected == 200:
            assert hostile.json() == {"result": json.loads(body)["text"]}, body[:300]  # the text, round trip
        else:
            assert_error(hostile, expected, "invalid_arguments")
        seen.append(hostile.status_code)

    @settings(max_examples=FUZZ_EXAMPLES, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(case=hostile_arguments())
    @example(case=('{"timezone": "\\ud800", "text": "x"}', 422))  # the first request
    @example(case=(f'{{"text": "x", "extra": {nested(255)}}}', 422))  # and its second
    def fuzz(case: tuple[str, int]) -> None:
        anyio.from_thread.run(one, case[0], case[1], len(seen))

    await anyio.to_thread.run_sync(fuzz)
    assert 200 in seen and 422 in seen, seen
    # nothing hostile got as far as a transport: the hub refused it before anything was sent
    assert not [r.getMessage() for r in caplog.records if r.name == "mcphub.outbound"]
    await unharmed.check()


async def test_an_answer_that_cannot_be_sent_on_is_a_502_and_recorded_as_one(caplog: pytest.LogCaptureFixture):
    """A server answering text with a lone surrogate (in-process, so no JSON parser drops it on the way; a
    mounted hub's JSON can carry one too): the caller gets 502 in the one error shape, and the metrics and
    the audit line say 502, not the 200 the server's answer looked like."""
    caplog.set_level(logging.INFO, logger="mcphub.access")

    async def list_tools(ctx: ServerRequestContext[Any], params: Any) -> ListToolsResult:
        return ListToolsResult(tools=[Tool(name=n, input_schema={"type": "object"}) for n in ("odd", "fine")])

    async def call_tool(ctx: ServerRequestContext[Any], params: CallToolRequestParams) -> CallToolResult:
        return CallToolResult(content=[TextContent(type="text", text="a\ud800b" if params.name == "odd" else "ok")])

    server = Server("odd", version="0.0.1", on_list_tools=list_tools, on_call_tool=call_tool)

    @asynccontextmanager
    async def connect(name: str, cfg: ServerConfig, **_: Any) -> AsyncIterator[Client]:
        async with Client(server, cache=None) as client:
            yield client

    config = config_of({"servers": {"g": sample_server()}})
    async with Supervisor(config, connect=connect) as supervisor:
        transport = httpx2.ASGITransport(app=make_app(supervisor, config))
        async with httpx2.AsyncClient(base_url=IN_PROCESS_BASE_URL, transport=transport) as client:
            response = await client.post("/g/odd", json={})
            metrics = (await client.get("/metrics")).text
            fine = await client.post("/g/fine", json={})
    error = assert_error(response, 502, "bad_gateway")
    assert error["message"] == ("server 'g' answered tool 'odd' with something that cannot be sent on as JSON: a "
                                "string holds a lone surrogate, which is not Unicode text")
    assert 'mcphub_tool_calls_total{face="http",server="g",status="502",tool="odd"} 1.0' in metrics
    assert fine.status_code == 200 and fine.json() == "ok"
    assert any(r.getMessage().startswith("anonymous:anonymous g/odd 502") for r in caplog.records)
