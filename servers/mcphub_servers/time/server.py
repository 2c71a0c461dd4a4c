"""The time server: `get_current_time` and `convert_time` over exact IANA timezone keys.

A drop-in for the reference `mcp-server-time`: same tool names, argument names, output shapes and error
texts, so prompts written for it keep working. Differences are configuration only:

* local timezone (named in the argument descriptions): `--local-timezone`, else `TIME_LOCAL_TIMEZONE`,
  else the host's zone from `tzlocal` when installed, else UTC;
* `TIME_FAKE_NOW` (an ISO-8601 datetime; naive means UTC) freezes the clock. It is a **test hook** for
  deterministic DST cases, not a user setting.

No upstream, no network, no secret.
"""

import importlib.metadata
import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Annotated
from zoneinfo import ZoneInfo, available_timezones

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations
from pydantic import BaseModel, Field

from mcphub_servers import _cli, _protocol

_localzone_name: Callable[[], str] | None
try:  # optional: without it the local zone defaults to UTC
    from tzlocal import get_localzone_name as _localzone_name
except ImportError:  # pragma: no cover - tzlocal is a declared dependency
    _localzone_name = None

SERVER_NAME = "mcphub-time"
FAKE_NOW_ENV = "TIME_FAKE_NOW"
LOCAL_TZ_ENV = "TIME_LOCAL_TIMEZONE"

try:
    SERVER_VERSION = importlib.metadata.version("mcphub")
except importlib.metadata.PackageNotFoundError:  # running from a source tree that was never installed
    SERVER_VERSION = "0.0.0"

READ_ONLY = ToolAnnotations(
    read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=False
)

Clock = Callable[[], datetime]  # returns an aware datetime (any zone)


class TimeResult(BaseModel):
    timezone: str
    datetime: str
    day_of_week: str
    is_dst: bool


class TimeConversionResult(BaseModel):
    source: TimeResult
    target: TimeResult
    time_difference: str


@cache
def _iana_keys() -> frozenset[str]:
    return frozenset(available_timezones())


def _zone_or_error(name: str) -> ZoneInfo:
    """The zone for an exact, case-sensitive IANA key; anything else is ValueError/KeyError.

    zoneinfo resolves keys as file paths, so on a case-insensitive filesystem `europe/berlin` would load;
    checking the database's own key list rejects it everywhere. A malformed key keeps zoneinfo's own
    message (`ZoneInfo keys must be normalized relative paths, got: Europe/`), as the reference server's
    does; but a key that names a directory or a file that is no zone (`Europe`, `zone.tab`) is simply not
    found: zoneinfo's message for it would show the host's filesystem paths.
    """
    if name in _iana_keys():
        return ZoneInfo(name)
    try:
        ZoneInfo(name)
    except ValueError as exc:
        if "TZif" not in str(exc):  # `Invalid TZif file`: a file under the tz path that is not a zone
            raise
    except OSError:  # a directory, a name too long, a file it may not read: the message holds a path
        pass
    raise KeyError(f"No time zone found with key {name}")


def _zone(name: str) -> ZoneInfo:
    try:
        return _zone_or_error(name)
    except Exception as exc:  # zoneinfo raises several types; all mean "not a zone"
        raise ToolError(f"Invalid timezone: {exc}") from None


def _require(argument: str, value: str) -> None:
    if not value:
        raise ToolError(f"Missing required argument: {argument}")


def _describe(moment: datetime, zone_name: str) -> TimeResult:
    return TimeResult(
        timezone=zone_name,
        datetime=moment.isoformat(timespec="seconds"),
        day_of_week=moment.strftime("%A"),
        is_dst=bool(moment.dst()),
    )


def _format_hours(delta: timedelta) -> str:
    """`+7.0h` for whole hours, `+5.75h` / `-3.5h` for fractional ones (as mcp-server-time prints)."""
    hours = delta.total_seconds() / 3600
    if hours.is_integer():
        return f"{hours:+.1f}h"
    return f"{hours:+.2f}".rstrip("0").rstrip(".") + "h"


def current_time(zone_name: str, clock: Clock) -> TimeResult:
    zone = _zone(zone_name)
    return _describe(clock().astimezone(zone), zone_name)


def convert(source_name: str, hhmm: str, target_name: str, clock: Clock) -> TimeConversionResult:
    source_zone = _zone(source_name)
    target_zone = _zone(target_name)
    try:
        wall = datetime.strptime(hhmm, "%H:%M").time()
    except ValueError:
        raise ToolError("Invalid time format. Expected HH:MM [24-hour format]") from None

    today = clock().astimezone(source_zone).date()
    source_time = datetime.combine(today, wall, tzinfo=source_zone)
    # A wall time inside a spring-forward gap does not survive a round trip through UTC.
    back = source_time.astimezone(UTC).astimezone(source_zone)
    if back.replace(tzinfo=None) != source_time.replace(tzinfo=None):
        raise ToolError(
            f"Invalid time: {hhmm} does not exist in {source_name} on {today.isoformat()} "
            "(skipped by a clock change)"
        )
    target_time = source_time.astimezone(target_zone)
    difference = (target_time.utcoffset() or timedelta()) - (source_time.utcoffset() or timedelta())
    return TimeConversionResult(
        source=_describe(source_time, source_name),
        target=_describe(target_time, target_name),
        time_difference=_format_hours(difference),
    )


def create_server(local_tz: str, clock: Clock | None = None) -> MCPServer:
    """The server, with `local_tz` named in the argument descriptions and `clock` as the source of now."""
    now: Clock = clock or (lambda: datetime.now(UTC))
    server = MCPServer(SERVER_NAME, version=SERVER_VERSION, subscriptions=False)
    _protocol.reject_unknown_tools(server)

    @server.tool(
        name="get_current_time",
        description="Get current time in a specific timezone",
        annotations=READ_ONLY,
    )
    def get_current_time(
        timezone: Annotated[
            str,
            Field(
                description="IANA timezone name (e.g., 'America/New_York', 'Europe/London'). "
                f"Use '{local_tz}' as local timezone if no timezone provided by the user."
            ),
        ],
    ) -> TimeResult:
        _require("timezone", timezone)
        return current_time(timezone, now)

    @server.tool(
        name="convert_time",
        description="Convert time between timezones",
        annotations=READ_ONLY,
    )
    def convert_time(
        source_timezone: Annotated[
            str,
            Field(
                description="Source IANA timezone name (e.g., 'America/New_York', 'Europe/London'). "
                f"Use '{local_tz}' as local timezone if no source timezone provided by the user."
            ),
        ],
        time: Annotated[str, Field(description="Time to convert in 24-hour format (HH:MM)")],
        target_timezone: Annotated[
            str,
            Field(
                description="Target IANA timezone name (e.g., 'Asia/Tokyo', 'America/San_Francisco'). "
                f"Use '{local_tz}' as local timezone if no target timezone provided by the user."
            ),
        ],
    ) -> TimeConversionResult:
        _require("source_timezone", source_timezone)
        _require("target_timezone", target_timezone)
        return convert(source_timezone, time, target_timezone, now)

    return server


def resolve_local_timezone(cli_value: str | None) -> str:
    """`--local-timezone`, else `TIME_LOCAL_TIMEZONE`, else tzlocal's answer, else UTC.

    An explicit but unknown zone is a startup error (SystemExit naming the value and where it came from).
    """
    for source, value in (("--local-timezone", cli_value), (LOCAL_TZ_ENV, os.environ.get(LOCAL_TZ_ENV))):
        if value and value.strip():
            value = value.strip()
            try:
                _zone_or_error(value)
            except Exception:
                raise SystemExit(
                    f"Error: invalid {source} {value!r}: not a known IANA timezone name"
                ) from None
            return value
    if _localzone_name is not None:
        try:
            detected = _localzone_name()
            if detected:
                _zone_or_error(detected)
                return detected
        except Exception:  # tzlocal raises on odd host setups; the documented fallback is UTC
            pass
    return "UTC"


def fake_clock_from_env() -> Clock | None:
    """`TIME_FAKE_NOW` as a frozen clock (test hook); None when unset. A bad value stops startup."""
    raw = os.environ.get(FAKE_NOW_ENV, "").strip()
    if not raw:
        return None
    try:
        frozen = datetime.fromisoformat(raw)
    except ValueError:
        raise SystemExit(f"Error: {FAKE_NOW_ENV}={raw!r} is not an ISO-8601 datetime") from None
    if frozen.tzinfo is None:
        frozen = frozen.replace(tzinfo=UTC)
    return lambda: frozen


def main(argv: list[str] | None = None) -> None:
    parser = _cli.parser("time", "MCP server: current time and timezone conversion")
    parser.add_argument(
        "--local-timezone",
        help=f"IANA zone used as 'local' (default: ${LOCAL_TZ_ENV}, else the host's zone, else UTC)",
    )
    args = parser.parse_args(argv)
    _cli.run(create_server(resolve_local_timezone(args.local_timezone), fake_clock_from_env()), args)
