"""The bundled time server, and its parity with the reference mcp-server-time.

The server runs in-process (`Client(<its MCPServer>)`, the SDK's in-memory transport), built as
`python -m mcphub_servers.time` builds it (`create_server(resolve_local_timezone(flag), fake_clock_from_env())`),
with os.environ set as that stdio child would see it (`child_environment`); the bad-zone startup error is
`main()` raising SystemExit in-process. Real processes on purpose, two of them:
`test_real_process_same_tools_results_and_errors_as_reference_mcp_server_time` runs ours as a stdio child
beside the reference (also a stdio child), so the two are compared over the same wire as the hub sees them;
`test_real_process_streamable_http_transport_serves_the_same_tools` is the one test of the bundled servers'
`--transport streamable-http` flag (`_cli.run`), which only a process can show. Starting a python process
for every test would cost ~0.8 s of imports each.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import anyio
import pytest
from mcp import Client, MCPError, StdioServerParameters
from mcp.types import INVALID_PARAMS
from mcphub_servers.time.server import create_server, fake_clock_from_env, main, resolve_local_timezone

from tests import helpers
from tests.helpers import REPO, free_port, missing

pytestmark = pytest.mark.anyio

CALL_TIMEOUT = 30.0  # seconds: process start + handshake + a few calls
REFERENCE = REPO / ".tp" / "venvs" / "mcp-server-time" / "bin" / "mcp-server-time"
SERVER_ENV_PREFIX = "TIME_"  # every setting the server reads (TIME_LOCAL_TIMEZONE, TIME_FAKE_NOW)


def _ours(name: str) -> bool:
    """A variable a stdio child would not get from this process: the server's settings, and TZ (tzlocal's
    first source)."""
    return name.startswith(SERVER_ENV_PREFIX) or name == "TZ"


def child_environment(env: dict[str, str]) -> contextlib.AbstractContextManager[None]:
    """os.environ as a stdio child given only `env` sees it (tests.helpers.child_environment)."""
    return helpers.child_environment(env, drop=_ours)


@contextlib.asynccontextmanager
async def time_server(local_timezone: str | None = None, **env: str) -> AsyncIterator[Client]:
    """The server in-process, built like `python -m mcphub_servers.time [--local-timezone ZONE]` with `env`."""
    with child_environment(env):
        server = create_server(resolve_local_timezone(local_timezone), fake_clock_from_env())
        async with Client(server, cache=None) as client:
            yield client


def _text(result: Any) -> str:
    return "\n".join(block.text for block in result.content)


async def _error(client: Client, tool: str, args: dict[str, Any]) -> str:
    """The message of a tool error, without the SDK's `Error executing tool NAME: ` prefix."""
    result = await client.call_tool(tool, args)
    assert result.is_error, result
    prefix = f"Error executing tool {tool}: "
    text = _text(result)
    assert text.startswith(prefix), text
    return text.removeprefix(prefix)


async def test_lists_the_two_reference_tools_with_local_zone_in_descriptions() -> None:
    with anyio.fail_after(CALL_TIMEOUT):
        async with time_server(local_timezone="Asia/Tokyo") as c:
            tools = {t.name: t for t in (await c.list_tools()).tools}
    assert set(tools) == {"get_current_time", "convert_time"}
    assert tools["get_current_time"].input_schema["required"] == ["timezone"]
    assert tools["convert_time"].input_schema["required"] == ["source_timezone", "time", "target_timezone"]
    assert (
        "'Asia/Tokyo' as local timezone"
        in tools["get_current_time"].input_schema["properties"]["timezone"]["description"]
    )
    for tool in tools.values():
        assert tool.output_schema is not None
        assert tool.annotations is not None, tool.name
        assert tool.annotations.read_only_hint is True
        assert tool.annotations.destructive_hint is False
        assert tool.annotations.open_world_hint is False
    convert_output = tools["convert_time"].output_schema
    assert convert_output is not None
    assert set(convert_output["properties"]) == {"source", "target", "time_difference"}


async def test_local_timezone_comes_from_env_when_no_flag_is_given() -> None:
    with anyio.fail_after(CALL_TIMEOUT):
        async with time_server(TIME_LOCAL_TIMEZONE="America/Sao_Paulo") as c:
            tools = {t.name: t for t in (await c.list_tools()).tools}
    description = tools["convert_time"].input_schema["properties"]["source_timezone"]["description"]
    assert "'America/Sao_Paulo' as local timezone" in description


async def test_unknown_local_timezone_stops_the_server_with_a_one_line_message() -> None:
    # `python -m mcphub_servers.time` is `main()`: a SystemExit with a text code is Python printing that text
    # alone to stderr (no traceback) and exiting with status 1; any other exception would be a traceback.
    with child_environment({}), pytest.raises(SystemExit) as stopped:
        main(["--local-timezone", "Mars/Olympus"])
    message = stopped.value.code
    assert isinstance(message, str), message  # a text code: exit status 1, not 0
    assert "invalid --local-timezone 'Mars/Olympus'" in message
    assert "Traceback" not in message and "\n" not in message


async def test_current_time_reports_the_zone_offset_weekday_and_dst_of_the_fake_clock() -> None:
    with anyio.fail_after(CALL_TIMEOUT):
        async with time_server(TIME_FAKE_NOW="2026-07-01T12:00:00+00:00") as c:
            berlin = await c.call_tool("get_current_time", {"timezone": "Europe/Berlin"})
            sydney = await c.call_tool("get_current_time", {"timezone": "Australia/Sydney"})
    assert not berlin.is_error, berlin
    assert berlin.structured_content == {
        "timezone": "Europe/Berlin",
        "datetime": "2026-07-01T14:00:00+02:00",
        "day_of_week": "Wednesday",
        "is_dst": True,
    }
    assert sydney.structured_content == {
        "timezone": "Australia/Sydney",
        "datetime": "2026-07-01T22:00:00+10:00",
        "day_of_week": "Wednesday",
        "is_dst": False,
    }


async def test_convert_time_gives_fractional_hour_difference_for_kathmandu() -> None:
    with anyio.fail_after(CALL_TIMEOUT):
        async with time_server(TIME_FAKE_NOW="2026-01-15T09:00:00Z") as c:
            result = await c.call_tool(
                "convert_time",
                {"source_timezone": "Europe/London", "time": "12:00", "target_timezone": "Asia/Kathmandu"},
            )
    assert not result.is_error, result
    assert result.structured_content == {
        "source": {
            "timezone": "Europe/London",
            "datetime": "2026-01-15T12:00:00+00:00",
            "day_of_week": "Thursday",
            "is_dst": False,
        },
        "target": {
            "timezone": "Asia/Kathmandu",
            "datetime": "2026-01-15T17:45:00+05:45",
            "day_of_week": "Thursday",
            "is_dst": False,
        },
        "time_difference": "+5.75h",
    }


async def test_convert_time_crosses_the_date_line_and_prints_whole_hours_with_one_decimal() -> None:
    with anyio.fail_after(CALL_TIMEOUT):
        async with time_server(TIME_FAKE_NOW="2026-07-01T00:00:00Z") as c:
            result = await c.call_tool(
                "convert_time",
                {"source_timezone": "America/New_York", "time": "22:30", "target_timezone": "Asia/Tokyo"},
            )
    # Fake now is 20:00 on June 30 in New York, so the source date is June 30 (EDT, -4h).
    source = datetime(2026, 6, 30, 22, 30, tzinfo=ZoneInfo("America/New_York"))
    target = source.astimezone(ZoneInfo("Asia/Tokyo"))
    assert result.structured_content["source"]["datetime"] == "2026-06-30T22:30:00-04:00"
    assert result.structured_content["target"]["datetime"] == target.isoformat(timespec="seconds")
    assert result.structured_content["target"]["day_of_week"] == "Wednesday"
    assert result.structured_content["time_difference"] == "+13.0h"


async def test_time_skipped_by_spring_forward_is_rejected() -> None:
    # 2026-03-29 is the EU spring-forward day: Berlin jumps from 02:00 to 03:00.
    with anyio.fail_after(CALL_TIMEOUT):
        async with time_server(TIME_FAKE_NOW="2026-03-29T08:00:00Z") as c:
            text = await _error(
                c,
                "convert_time",
                {"source_timezone": "Europe/Berlin", "time": "02:30", "target_timezone": "UTC"},
            )
            after = await c.call_tool(
                "convert_time",
                {"source_timezone": "Europe/Berlin", "time": "03:30", "target_timezone": "UTC"},
            )
    assert (
        text
        == "Invalid time: 02:30 does not exist in Europe/Berlin on 2026-03-29 (skipped by a clock change)"
    )
    assert after.structured_content["target"]["datetime"] == "2026-03-29T01:30:00+00:00"


async def test_bad_arguments_get_the_reference_error_texts() -> None:
    with anyio.fail_after(CALL_TIMEOUT):
        async with time_server(TIME_FAKE_NOW="2026-07-01T12:00:00Z") as c:
            lower = await _error(c, "get_current_time", {"timezone": "europe/berlin"})
            unknown = await _error(c, "get_current_time", {"timezone": "Mars/Olympus"})
            empty = await _error(c, "get_current_time", {"timezone": ""})
            bad_hhmm = await _error(
                c, "convert_time", {"source_timezone": "UTC", "time": "25:00", "target_timezone": "UTC"}
            )
            words = await _error(
                c, "convert_time", {"source_timezone": "UTC", "time": "noon", "target_timezone": "UTC"}
            )
            no_target = await _error(
                c, "convert_time", {"source_timezone": "UTC", "time": "10:00", "target_timezone": ""}
            )
            missing = await _error(c, "convert_time", {"source_timezone": "UTC", "time": "10:00"})
    assert lower == "Invalid timezone: 'No time zone found with key europe/berlin'"
    assert unknown == "Invalid timezone: 'No time zone found with key Mars/Olympus'"
    assert empty == "Missing required argument: timezone"
    assert bad_hhmm == words == "Invalid time format. Expected HH:MM [24-hour format]"
    assert no_target == "Missing required argument: target_timezone"
    assert "target_timezone" in missing


async def test_a_key_naming_a_directory_or_a_file_that_is_no_zone_is_unknown_without_a_path() -> None:
    with anyio.fail_after(CALL_TIMEOUT):
        async with time_server() as c:
            directory = await _error(c, "get_current_time", {"timezone": "Europe"})
            not_a_zone = await _error(
                c, "convert_time", {"source_timezone": "UTC", "time": "10:00", "target_timezone": "zone.tab"}
            )
            too_long = await _error(c, "get_current_time", {"timezone": "x" * 300})
            malformed = await _error(c, "get_current_time", {"timezone": "Europe/"})
    assert directory == "Invalid timezone: 'No time zone found with key Europe'"
    assert not_a_zone == "Invalid timezone: 'No time zone found with key zone.tab'"
    assert too_long == f"Invalid timezone: 'No time zone found with key {'x' * 300}'"
    assert malformed == "Invalid timezone: ZoneInfo keys must be normalized relative paths, got: Europe/"  # as the reference


async def test_unknown_tool_is_a_jsonrpc_invalid_params_error() -> None:
    with anyio.fail_after(CALL_TIMEOUT):
        async with time_server() as c:
            with pytest.raises(MCPError) as caught:
                await c.call_tool("get_time", {"timezone": "UTC"})
    assert caught.value.code == INVALID_PARAMS


async def test_real_process_streamable_http_transport_serves_the_same_tools() -> None:
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "mcphub_servers.time",
        "--transport",
        "streamable-http",
        "--port",
        str(port),
    ]
    ours = {name: value for name, value in os.environ.items() if not name.startswith(SERVER_ENV_PREFIX)}
    env = {**ours, "TIME_FAKE_NOW": "2026-01-15T09:00:00Z"}
    with anyio.fail_after(CALL_TIMEOUT):
        async with await anyio.open_process(command, env=env) as process, anyio.create_task_group() as tg:
            stderr = process.stderr
            assert stderr is not None
            seen = b""
            while b"Uvicorn running on" not in seen:  # readiness: uvicorn's own startup line
                seen += await stderr.receive()

            async def drain() -> None:  # keep the pipe from filling while we talk to the server
                async for _ in stderr:
                    pass

            tg.start_soon(drain)
            try:
                async with Client(f"http://127.0.0.1:{port}/mcp", cache=None) as c:
                    names = {t.name for t in (await c.list_tools()).tools}
                    result = await c.call_tool(
                        "convert_time",
                        {"source_timezone": "UTC", "time": "10:00", "target_timezone": "Asia/Kolkata"},
                    )
            finally:
                process.terminate()
    assert names == {"get_current_time", "convert_time"}
    assert result.structured_content["target"]["datetime"] == "2026-01-15T15:30:00+05:30"
    assert result.structured_content["time_difference"] == "+5.5h"


# --- parity with the reference server --------------------------------------------------------------

PARITY_CALLS: list[tuple[str, dict[str, Any]]] = [
    # No DST on either side, so the answer is the same whichever day the two servers see.
    ("convert_time", {"source_timezone": "Asia/Tokyo", "time": "09:15", "target_timezone": "Asia/Kathmandu"}),
    ("convert_time", {"source_timezone": "Asia/Kolkata", "time": "23:59", "target_timezone": "UTC"}),
    ("get_current_time", {"timezone": "europe/berlin"}),
    ("get_current_time", {"timezone": "Not/AZone"}),
    ("get_current_time", {"timezone": ""}),
    ("convert_time", {"source_timezone": "UTC", "time": "7pm", "target_timezone": "Asia/Tokyo"}),
    ("convert_time", {"source_timezone": "Nope/Nope", "time": "10:00", "target_timezone": "UTC"}),
    ("convert_time", {"source_timezone": "UTC", "time": "10:00", "target_timezone": ""}),
]


def _reference_or_skip() -> Path:
    if REFERENCE.exists():
        return REFERENCE
    missing(f"reference mcp-server-time not installed at {REFERENCE} (install it with .ci/install-thirdparty)")


async def _observe(params: StdioServerParameters) -> tuple[dict[str, Any], list[Any], int | None]:
    async with Client(params, cache=None) as c:
        tools = {
            t.name: (sorted(t.input_schema["properties"]), sorted(t.input_schema.get("required", [])))
            for t in (await c.list_tools()).tools
        }
        outcomes = []
        for name, args in PARITY_CALLS:
            result = await c.call_tool(name, args)
            outcomes.append(
                (result.is_error, _text(result) if result.is_error else result.structured_content)
            )
        try:
            await c.call_tool("no_such_tool", {})
            unknown_code = None
        except MCPError as exc:
            unknown_code = exc.code
    return tools, outcomes, unknown_code


async def test_real_process_same_tools_results_and_errors_as_reference_mcp_server_time() -> None:
    reference = _reference_or_skip()
    with anyio.fail_after(2 * CALL_TIMEOUT):
        ours = await _observe(
            StdioServerParameters(
                command=sys.executable, args=["-m", "mcphub_servers.time", "--local-timezone", "UTC"]
            )
        )
        theirs = await _observe(
            StdioServerParameters(command=str(reference), args=["--local-timezone", "UTC"])
        )
    our_tools, our_outcomes, our_unknown = ours
    their_tools, their_outcomes, their_unknown = theirs
    assert our_tools == their_tools
    for call, mine, reference_outcome in zip(PARITY_CALLS, our_outcomes, their_outcomes, strict=True):
        assert mine == reference_outcome, call
    assert our_unknown == their_unknown == INVALID_PARAMS
    assert our_outcomes[0][1]["time_difference"] == "-3.25h"
