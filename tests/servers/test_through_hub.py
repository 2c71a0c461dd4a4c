"""The five bundled servers behind one real hub, configured like the packaged default, against fake upstreams.

The acceptance check of "bundled servers through the hub": every bundled tool is listed, its schema loads
the way Open WebUI loads it, and a call against a fake upstream returns the fake's data. The parity tests
run one body twice (STYLE habit 7): "direct" asks the server over its own stdio session, "hub" POSTs to
`/{server}/{tool}`; both must give the same value, and the same error classification and text.

One hub and one direct session per server serve the whole module (each is a python child process, and
starting fifteen of them per test would dominate the run); the fakes are reset before every test.

Real processes, on purpose (the bundled servers): the hub starts them over stdio from the packaged
default, as a user's hub does, and the direct sessions are stdio children too; only the hub's HTTP face
is in-process (ASGI, tests/hub.py). The direct sessions start and stop concurrently.
"""

from __future__ import annotations

import contextlib
import copy
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from importlib import resources
from typing import Any
from zoneinfo import ZoneInfo

import anyio
import pytest
import yaml
from anyio.abc import TaskStatus
from mcp import Client, StdioServerParameters
from mcp.types import TextContent
from openapi_spec_validator import validate

from mcphub.config import HubConfig, StdioServer, parse_config
from tests.fakes import amap, arxiv, github, open_meteo, searxng
from tests.fakes.amap import FakeAmap
from tests.fakes.arxiv import ArxivFake
from tests.fakes.github import GitHubFake
from tests.fakes.open_meteo import FakeOpenMeteo
from tests.fakes.searxng import FakeSearxng
from tests.helpers import serve_in_thread
from tests.hub import assert_error, running_hub

pytestmark = pytest.mark.anyio

CALL_TIMEOUT = 10.0  # seconds for one tool call, either way (the processes are already running)
SESSIONS_START_TIMEOUT = 60.0  # seconds for five python servers to start side by side on a busy machine
FAKE_NOW = "2026-01-15T09:00:00+00:00"  # the time server's frozen clock
BUNDLED = ("time", "weather", "arxiv", "github", "searxng")


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    """Module scope, so the hub and the direct sessions below can live for the whole module."""
    return "asyncio"


# ---------------------------------------------------------------------------------------- upstreams


@dataclass
class Fakes:
    open_meteo: FakeOpenMeteo
    amap: FakeAmap
    arxiv: ArxivFake
    github: GitHubFake
    searxng: FakeSearxng
    open_meteo_url: str
    amap_url: str
    arxiv_url: str
    github_url: str
    searxng_url: str

    def reset(self) -> None:
        self.open_meteo.requests.clear()
        self.amap.requests.clear()
        self.arxiv.reset()
        self.github.reset()
        self.searxng.requests.clear()
        self.searxng.authorizations.clear()
        self.searxng.json_enabled = True


@pytest.fixture(scope="module")
def served_fakes() -> Iterator[Fakes]:
    weather, maps, papers, hub, search = FakeOpenMeteo(), FakeAmap(), ArxivFake(), GitHubFake(), FakeSearxng()
    with contextlib.ExitStack() as stack:
        urls = [
            stack.enter_context(serve_in_thread(app))
            for app in (weather.app, maps.app, papers.app(), hub.app(), search.app)
        ]
        yield Fakes(weather, maps, papers, hub, search, urls[0], urls[1], urls[2] + "/api/query", urls[3], urls[4])


@pytest.fixture
def fakes(served_fakes: Fakes) -> Fakes:
    served_fakes.reset()
    return served_fakes


# ---------------------------------------------------------------------------------------- configuration


def bundled_config(f: Fakes) -> HubConfig:
    """The packaged default, its `${VAR}`s pointed at the fakes, plus the test hooks it does not name."""
    raw = yaml.safe_load(resources.files("mcphub").joinpath("default.yaml").read_text(encoding="utf-8"))
    extra = {
        "time": {"TIME_FAKE_NOW": FAKE_NOW},
        "weather": {"AMAP_BASE_URL": f.amap_url},  # with AMAP_MAPS_API_KEY: maps_weather is registered
        "arxiv": {"ARXIV_MIN_INTERVAL": "0"},  # the 3 s politeness interval would only slow the tests
    }
    for name, env in extra.items():
        raw["servers"][name]["env"].update(env)
    environ = {
        "TIME_LOCAL_TIMEZONE": "UTC",
        "OPEN_METEO_BASE_URL": f.open_meteo_url,
        "OPEN_METEO_GEOCODING_URL": f.open_meteo_url,
        "AMAP_MAPS_API_KEY": amap.KEY,
        "ARXIV_API_URL": f.arxiv_url,
        "GITHUB_API_URL": f.github_url,
        "GITHUB_PERSONAL_ACCESS_TOKEN": github.TOKEN,
        "SEARXNG_URL": f.searxng_url,
    }
    config = parse_config(yaml.safe_dump(raw), source="packaged default (test upstreams)", environ=environ)
    assert set(config.servers) == set(BUNDLED)
    for server in config.servers.values():  # a variable the default grows later must not reach the internet
        for key, value in server.env.items():
            assert not value.startswith("http") or value.startswith("http://127.0.0.1:"), (key, value)
    return config


def direct_parameters(server: StdioServer) -> StdioServerParameters:
    """What the hub runs for this server (`python` is the hub's own interpreter), with the same env."""
    assert server.command == "python"
    return StdioServerParameters(command=sys.executable, args=list(server.args), env=dict(server.env))


@pytest.fixture(scope="module")
def config(served_fakes: Fakes) -> HubConfig:
    return bundled_config(served_fakes)


@pytest.fixture(scope="module")
async def hub(config: HubConfig) -> AsyncIterator[Any]:
    async with running_hub(config) as running:
        yield running


@pytest.fixture(scope="module")
async def sessions(config: HubConfig) -> AsyncIterator[dict[str, Client]]:
    """One stdio session per bundled server, opened side by side, each owned by a task of its own."""
    clients: dict[str, Client] = {}
    done = anyio.Event()

    async def hold(name: str, server: StdioServer, *, task_status: TaskStatus[None]) -> None:
        async with Client(direct_parameters(server), cache=None) as client:
            clients[name] = client
            task_status.started()
            await done.wait()

    async with anyio.create_task_group() as tg:
        with anyio.fail_after(SESSIONS_START_TIMEOUT):
            async with anyio.create_task_group() as starting:
                for name, server in config.servers.items():
                    assert isinstance(server, StdioServer)
                    starting.start_soon(tg.start, hold, name, server)
        yield clients
        done.set()


# ---------------------------------------------------------------------------------------- the two ways in


@dataclass(frozen=True)
class Outcome:
    """A call's result as a client sees it: the value, or the tool's error message."""

    value: Any = None
    error: str | None = None

    def ok(self) -> Any:
        assert self.error is None, self.error
        return self.value

    def failed(self) -> str:
        assert self.error is not None, f"expected a tool error, got {self.value!r}"
        return self.error


Call = Callable[[str, str, dict[str, Any]], Awaitable[Outcome]]


async def call_direct(sessions: dict[str, Client], server: str, tool: str, args: dict[str, Any]) -> Outcome:
    with anyio.fail_after(CALL_TIMEOUT):
        result = await sessions[server].call_tool(tool, args)
    if result.is_error:
        return Outcome(error="\n".join(b.text for b in result.content if isinstance(b, TextContent)))
    assert result.structured_content is not None, result  # every bundled tool declares an output schema
    return Outcome(value=result.structured_content)


async def call_hub(hub: Any, server: str, tool: str, args: dict[str, Any]) -> Outcome:
    with anyio.fail_after(CALL_TIMEOUT):
        response = await hub.client.post(f"/{server}/{tool}", json=args)
    if response.status_code == 200:
        return Outcome(value=response.json())
    error = assert_error(response, 400, "tool_error")
    assert (error["server"], error["tool"]) == (server, tool), error
    return Outcome(error=error["message"])


@pytest.fixture(params=["direct", "hub"])
def call(request: pytest.FixtureRequest) -> Call:
    if request.param == "direct":
        sessions = request.getfixturevalue("sessions")
        return lambda server, tool, args: call_direct(sessions, server, tool, args)
    hub = request.getfixturevalue("hub")
    return lambda server, tool, args: call_hub(hub, server, tool, args)


# ---------------------------------------------------------------------------------------- listing and schemas


def open_webui_tools(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """What Open WebUI's backend makes of a tool server's spec (utils/tools.py,
    `convert_openapi_to_tool_payload` with `resolve_schema`): per operationId, a function whose
    parameters are the request body's resolved `properties` and `required`."""
    components = spec.get("components", {})

    def resolve(schema: Any) -> Any:
        if not schema:
            return {}
        if "$ref" in schema:
            target: Any = components
            for part in schema["$ref"].strip("#/").split("/")[1:]:
                target = target.get(part, {})
            return resolve(target)
        schema = copy.deepcopy(schema)
        for name, sub in schema.get("properties", {}).items():
            schema["properties"][name] = resolve(sub)
        if "items" in schema:
            schema["items"] = resolve(schema["items"])
        return schema

    tools = {}
    for path, methods in spec["paths"].items():
        for method, operation in methods.items():
            if not operation.get("operationId"):
                continue
            parameters: dict[str, Any] = {"type": "object", "properties": {}, "required": []}
            body = operation.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
            resolved = resolve(body)
            if resolved.get("properties"):
                parameters["properties"].update(resolved["properties"])
                parameters["required"] = sorted(set(resolved.get("required", [])))
            tools[operation["operationId"]] = {"path": path, "method": method, "parameters": parameters}
    return tools


async def test_every_bundled_tool_is_listed_in_the_combined_spec_as_server_underscore_tool(
    hub: Any, sessions: dict[str, Client]
) -> None:
    with anyio.fail_after(CALL_TIMEOUT):
        ready = await hub.client.get("/readyz")
        listed = {name: [t.name for t in (await s.list_tools()).tools] for name, s in sessions.items()}
        response = await hub.client.get("/openapi.json")
    assert ready.status_code == 200, ready.text
    assert response.status_code == 200, response.text
    spec = response.json()
    validate(spec)
    assert "maps_weather" in listed["weather"]  # the Amap key in the config registered it
    assert all(listed.values()), listed
    expected = {f"{server}_{tool}": f"/{server}/{tool}" for server, tools in listed.items() for tool in tools}
    operations = {op["operationId"]: path for path, methods in spec["paths"].items() for op in methods.values()}
    assert operations == expected
    assert all(set(methods) == {"post"} for methods in spec["paths"].values())


@pytest.mark.parametrize("server", BUNDLED)
async def test_each_servers_spec_is_valid_and_open_webui_reads_every_tools_arguments(
    hub: Any, sessions: dict[str, Client], server: str
) -> None:
    with anyio.fail_after(CALL_TIMEOUT):
        tools = {t.name: t for t in (await sessions[server].list_tools()).tools}
        response = await hub.client.get(f"/{server}/openapi.json")
    assert response.status_code == 200, response.text
    spec = response.json()
    validate(spec)
    assert spec["servers"][0]["url"] == f"/{server}"
    loaded = open_webui_tools(spec)
    assert set(loaded) == set(tools)
    for name, tool in tools.items():
        function = loaded[name]
        assert (function["path"], function["method"]) == (f"/{name}", "post")
        assert set(function["parameters"]["properties"]) == set(tool.input_schema.get("properties", {})), name
        assert function["parameters"]["required"] == sorted(tool.input_schema.get("required", [])), name


# ---------------------------------------------------------------------------------------- time


async def test_convert_time_answers_what_zoneinfo_says_for_the_frozen_clock(call: Call) -> None:
    args = {"source_timezone": "Europe/London", "time": "12:00", "target_timezone": "Asia/Kathmandu"}
    out = (await call("time", "convert_time", args)).ok()
    today = datetime.fromisoformat(FAKE_NOW).astimezone(ZoneInfo("Europe/London")).date()
    source = datetime(today.year, today.month, today.day, 12, 0, tzinfo=ZoneInfo("Europe/London"))
    target = source.astimezone(ZoneInfo("Asia/Kathmandu"))
    hours = ((target.utcoffset() or timedelta()) - (source.utcoffset() or timedelta())).total_seconds() / 3600

    def described(moment: datetime, zone: str) -> dict[str, Any]:
        return {"timezone": zone, "datetime": moment.isoformat(timespec="seconds"),
                "day_of_week": moment.strftime("%A"), "is_dst": bool(moment.dst())}

    assert out == {
        "source": described(source, "Europe/London"),
        "target": described(target, "Asia/Kathmandu"),
        "time_difference": f"{hours:+}h",
    }


async def test_unknown_timezone_is_a_tool_error_naming_the_zone(call: Call) -> None:
    message = (await call("time", "get_current_time", {"timezone": "Mars/Olympus"})).failed()
    assert "Invalid timezone: 'No time zone found with key Mars/Olympus'" in message


# ---------------------------------------------------------------------------------------- weather


async def test_forecast_returns_the_fake_open_meteo_days_for_the_geocoded_place(call: Call, fakes: Fakes) -> None:
    out = (await call("weather", "get_forecast", {"location": "Berlin", "days": 4})).ok()
    place = open_meteo.BERLIN
    assert {k: out["place"][k] for k in ("name", "country", "latitude", "longitude", "timezone")} == {
        k: place[k] for k in ("name", "country", "latitude", "longitude", "timezone")
    }
    expected = [open_meteo.daily_metric(i) for i in range(4)]
    assert [d["date"] for d in out["days"]] == [
        (open_meteo.FIRST_DAY + timedelta(days=i)).isoformat() for i in range(4)
    ]
    got = [(d["weather_code"], d["temperature_max"], d["temperature_min"], d["precipitation_sum"]) for d in out["days"]]
    assert got == [
        (e["weather_code"], e["temperature_2m_max"], e["temperature_2m_min"], e["precipitation_sum"]) for e in expected
    ]
    [forecast] = fakes.open_meteo.queries("/v1/forecast")
    assert forecast["forecast_days"] == "4"


async def test_unknown_place_is_location_not_found_naming_the_geocoding_url(call: Call, fakes: Fakes) -> None:
    assert "atlantis" not in open_meteo.PLACES
    message = (await call("weather", "get_forecast", {"location": "Atlantis"})).failed()
    assert "location not found: 'Atlantis'" in message
    assert f"{fakes.open_meteo_url}/v1/search" in message
    assert fakes.open_meteo.queries("/v1/forecast") == []


async def test_maps_weather_returns_the_fake_amap_casts(call: Call, fakes: Fakes) -> None:
    out = (await call("weather", "maps_weather", {"city": "110000"})).ok()
    fields = ["date", "week", "dayweather", "nightweather", "daytemp", "nighttemp", "daywind", "nightwind",
              "daypower", "nightpower"]
    assert out["city"] == amap.CITIES["110000"]
    assert out["forecasts"] == [{f: cast[f] for f in fields} for cast in amap.BEIJING_CASTS]
    assert fakes.amap.requests == [{"city": "110000", "key": amap.KEY, "extensions": "all"}]


async def test_maps_weather_for_a_city_amap_does_not_know_is_a_tool_error(call: Call, fakes: Fakes) -> None:
    assert "不存在" not in amap.CITIES
    message = (await call("weather", "maps_weather", {"city": "不存在"})).failed()
    assert "Get weather failed: no forecast for city '不存在'" in message


# ---------------------------------------------------------------------------------------- arxiv


async def test_search_papers_returns_the_fake_arxiv_papers_in_order(call: Call, fakes: Fakes) -> None:
    out = (await call("arxiv", "search_papers", {"query": "attention", "max_results": 2})).ok()
    first_two = arxiv.PAPERS[:2]
    assert (out["total_results"], out["returned"], out["next_start"]) == (len(arxiv.PAPERS), 2, 2)
    assert [p["id"] for p in out["papers"]] == [p["id"] for p in first_two]
    assert [p["versioned_id"] for p in out["papers"]] == [f"{p['id']}v{p['version']}" for p in first_two]
    assert [p["authors"] for p in out["papers"]] == [p["authors"] for p in first_two]
    assert out["papers"][0]["title"] == first_two[0]["title"]
    [sent] = fakes.arxiv.requests
    assert sent.params["max_results"] == "2"


async def test_unknown_paper_is_a_not_found_tool_error(call: Call, fakes: Fakes) -> None:
    assert "2501.00001" not in {p["id"] for p in arxiv.PAPERS}
    message = (await call("arxiv", "get_abstract", {"paper_id": "2501.00001"})).failed()
    assert "arXiv paper 2501.00001 not found" in message


# ---------------------------------------------------------------------------------------- github


async def test_search_repositories_returns_the_fake_repositories_page_by_page(call: Call, fakes: Fakes) -> None:
    out = (await call("github", "search_repositories", {"query": "mcp", "perPage": 2})).ok()
    assert (out["total_count"], out["page"], out["next_page"]) == (len(github.REPOS), 1, 2)
    assert [(r["full_name"], r["stargazers_count"], r["html_url"]) for r in out["items"]] == [
        (r["full_name"], r["stargazers_count"], r["html_url"]) for r in github.REPOS[:2]
    ]
    [sent] = fakes.github.requests
    assert sent.headers["authorization"] == f"Bearer {github.TOKEN}"


async def test_github_404_is_a_tool_error_naming_the_url(call: Call, fakes: Fakes) -> None:
    assert 999 not in {i["number"] for i in github.ISSUES}
    args = {"method": "get", "owner": github.OWNER, "repo": github.REPO, "issue_number": 999}
    message = (await call("github", "issue_read", args)).failed()
    assert f"GET {fakes.github_url}/repos/{github.OWNER}/{github.REPO}/issues/999: not found (HTTP 404)" in message


# ---------------------------------------------------------------------------------------- searxng


async def test_web_search_returns_the_fake_instances_hits(call: Call, fakes: Fakes) -> None:
    out = (await call("searxng", "searxng_web_search", {"query": "mcp", "num_results": 3})).ok()
    hits = [searxng.hit("mcp", n) for n in range(3)]
    assert [(r["title"], r["url"], r["score"], r["engines"]) for r in out["results"]] == [
        (h["title"], h["url"], h["score"], h["engines"]) for h in hits
    ]
    assert fakes.searxng.requests == [{"q": "mcp", "format": "json", "pageno": "1", "language": "all"}]


async def test_searxng_without_the_json_format_is_a_tool_error_with_the_settings_hint(
    call: Call, fakes: Fakes
) -> None:
    fakes.searxng.json_enabled = False  # a default settings.yml: 403 for format=json
    message = (await call("searxng", "searxng_web_search", {"query": "mcp"})).failed()
    assert f"GET {fakes.searxng_url}/search answered HTTP 403" in message
    assert "search.formats" in message


# ---------------------------------------------------------------------------------------- both at once


PARITY_CALLS: list[tuple[str, str, dict[str, Any], bool]] = [  # server, tool, arguments, is a tool error
    ("time", "convert_time", {"source_timezone": "Europe/London", "time": "12:00", "target_timezone": "Asia/Kathmandu"},
     False),
    ("time", "get_current_time", {"timezone": "Europe/Berlin"}, False),
    ("time", "get_current_time", {"timezone": "Mars/Olympus"}, True),
    ("weather", "get_forecast", {"location": "Berlin", "days": 4}, False),
    ("weather", "get_current_weather", {"location": "Paris, Texas", "units": "imperial"}, False),
    ("weather", "search_location", {"name": "Paris", "count": 2}, False),
    ("weather", "get_forecast", {"location": "Atlantis"}, True),
    ("weather", "maps_weather", {"city": "110000"}, False),
    ("weather", "maps_weather", {"city": "不存在"}, True),
    ("arxiv", "search_papers", {"query": "attention", "max_results": 2}, False),
    ("arxiv", "get_papers", {"paper_ids": ["hep-th/9711200", "2501.99999"]}, False),
    ("arxiv", "get_abstract", {"paper_id": "2501.00001"}, True),
    ("github", "search_repositories", {"query": "mcp", "perPage": 2}, False),
    ("github", "list_issues", {"owner": github.OWNER, "repo": github.REPO}, False),
    ("github", "get_file_contents", {"owner": github.OWNER, "repo": github.REPO, "path": "README.md"}, False),
    ("github", "issue_read", {"method": "get", "owner": github.OWNER, "repo": github.REPO, "issue_number": 999},
     True),
    ("searxng", "searxng_web_search", {"query": "mcp", "num_results": 3}, False),
]


@pytest.mark.parametrize(("server", "tool", "args", "fails"), PARITY_CALLS,
                         ids=[f"{s}-{t}-{'error' if e else 'ok'}" for s, t, _, e in PARITY_CALLS])
async def test_direct_and_hub_give_identical_values_and_error_texts(
    hub: Any, sessions: dict[str, Client], fakes: Fakes, server: str, tool: str, args: dict[str, Any], fails: bool
) -> None:
    """Field by field, not only the fields the tests above compute: any mapping drift shows here."""
    direct = await call_direct(sessions, server, tool, args)
    through_hub = await call_hub(hub, server, tool, args)
    assert (direct.error is not None) is fails, direct
    assert through_hub == direct


async def test_out_of_range_days_is_422_from_the_hub_and_the_servers_own_error_directly(
    hub: Any, sessions: dict[str, Client], fakes: Fakes
) -> None:
    args = {"location": "Berlin", "days": 40}
    with anyio.fail_after(CALL_TIMEOUT):
        response = await hub.client.post("/weather/get_forecast", json=args)
    error = assert_error(response, 422, "invalid_arguments")
    assert [e["loc"] for e in error["errors"]] == [["body", "days"]]
    assert "16" in error["errors"][0]["msg"]
    direct = (await call_direct(sessions, "weather", "get_forecast", args)).failed()
    assert "days" in direct and "less than or equal to 16" in direct
    assert fakes.open_meteo.requests == []  # neither reached the upstream
