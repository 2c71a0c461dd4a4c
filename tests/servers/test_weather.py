"""The bundled weather server against fake Open-Meteo and Amap APIs on 127.0.0.1 (the outside world, uvicorn threads).

The server runs in-process (`Client(<its MCPServer>)`, the SDK's in-memory transport), built as
`python -m mcphub_servers.weather` builds it (`create_server(Settings.from_env())`), with os.environ set as
that stdio child would see it (`child_environment`). One test runs the real stdio child on purpose:
`test_real_process_current_weather_geocodes_then_asks_for_metric_current_values` checks that the `python -m`
entry point reads its upstream URLs from the environment the hub gives it and answers over the real wire;
starting a python process for every test would cost ~0.8 s of imports each.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import pytest
from mcp import Client, MCPError, StdioServerParameters
from mcp.types import INVALID_PARAMS
from mcphub_servers.weather.server import Settings, create_server

from tests import helpers
from tests.fakes import amap, open_meteo
from tests.fakes.amap import FakeAmap
from tests.fakes.open_meteo import FakeOpenMeteo
from tests.helpers import Front, free_port, serve_in_thread

pytestmark = pytest.mark.anyio

CALL_TIMEOUT = 30.0  # seconds: process start + handshake + a few calls
SERVER_ENV_PREFIXES = ("OPEN_METEO_", "WEATHER_", "AMAP_")  # every setting the server reads (Settings.from_env)


@pytest.fixture(scope="module")
def meteo_front() -> Iterator[tuple[Front, str]]:
    front = Front()
    with serve_in_thread(front) as url:
        yield front, url


@pytest.fixture
def fake(meteo_front: tuple[Front, str]) -> Iterator[tuple[FakeOpenMeteo, str]]:
    front, url = meteo_front
    upstream = FakeOpenMeteo()
    with front.behind(upstream.app):
        yield upstream, url


def server_env(base_url: str, env: dict[str, str]) -> dict[str, str]:
    return {"OPEN_METEO_BASE_URL": base_url, "OPEN_METEO_GEOCODING_URL": base_url, **env}


def _ours(name: str) -> bool:
    """A variable a stdio child of this server would not get from this process: weather's settings and proxies."""
    return name.startswith(SERVER_ENV_PREFIXES) or name.lower().endswith("_proxy")


def child_environment(env: dict[str, str]) -> contextlib.AbstractContextManager[None]:
    """os.environ as a stdio child given only `env` sees it (tests.helpers.child_environment)."""
    return helpers.child_environment(env, drop=_ours)


@contextlib.asynccontextmanager
async def weather_server(base_url: str, **env: str) -> AsyncIterator[Client]:
    """The server in-process, built from the environment like `python -m mcphub_servers.weather`."""
    with child_environment(server_env(base_url, env)):
        async with Client(create_server(Settings.from_env()), cache=None) as client:
            yield client


@contextlib.asynccontextmanager
async def weather_process(base_url: str, **env: str) -> AsyncIterator[Client]:
    """The server as the hub runs it: a stdio child given only `env`."""
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "mcphub_servers.weather"], env=server_env(base_url, env)
    )
    async with Client(params, cache=None) as client:
        yield client


async def call(base_url: str, tool: str, args: dict[str, Any], **env: str) -> Any:
    with anyio.fail_after(CALL_TIMEOUT):
        async with weather_server(base_url, **env) as c:
            return await c.call_tool(tool, args)


def error_text(result: Any) -> str:
    assert result.is_error, result
    return "\n".join(block.text for block in result.content)


async def test_lists_open_meteo_tools_and_hides_amap_without_a_key(fake: tuple[FakeOpenMeteo, str]) -> None:
    _, url = fake
    with anyio.fail_after(CALL_TIMEOUT):
        async with weather_server(url) as c:
            tools = {t.name: t for t in (await c.list_tools()).tools}
    assert set(tools) == {"get_current_weather", "get_forecast", "search_location"}
    days = tools["get_forecast"].input_schema["properties"]["days"]
    assert (days["minimum"], days["maximum"], days["default"]) == (1, 16, 3)
    assert tools["get_current_weather"].input_schema["required"] == ["location"]
    for tool in tools.values():
        assert tool.output_schema is not None
        assert tool.annotations is not None, tool.name
        assert tool.annotations.read_only_hint and tool.annotations.open_world_hint
        assert tool.annotations.destructive_hint is False


async def test_an_unknown_tool_is_a_jsonrpc_invalid_params_error_as_from_the_reference_servers(
    fake: tuple[FakeOpenMeteo, str]
) -> None:
    upstream, url = fake
    with anyio.fail_after(CALL_TIMEOUT):
        async with weather_server(url) as c:
            with pytest.raises(MCPError) as caught:
                await c.call_tool("maps_weather", {"city": "北京"})  # only with an Amap key
    assert (caught.value.code, str(caught.value)) == (INVALID_PARAMS, "Unknown tool: maps_weather")
    assert upstream.requests == []


async def test_real_process_current_weather_geocodes_then_asks_for_metric_current_values(
    fake: tuple[FakeOpenMeteo, str],
) -> None:
    upstream, url = fake
    with anyio.fail_after(CALL_TIMEOUT):
        async with weather_process(url) as c:
            result = await c.call_tool("get_current_weather", {"location": "Berlin"})
    assert not result.is_error, result
    data = result.structured_content
    assert data["place"]["name"] == "Berlin"
    assert data["place"]["country"] == "Germany"
    assert data["place"]["timezone"] == "Europe/Berlin"
    assert (data["place"]["latitude"], data["place"]["longitude"]) == (
        open_meteo.BERLIN["latitude"],
        open_meteo.BERLIN["longitude"],
    )
    assert data["temperature"] == open_meteo.CURRENT["temperature_2m"]
    assert data["apparent_temperature"] == open_meteo.CURRENT["apparent_temperature"]
    assert data["relative_humidity"] == open_meteo.CURRENT["relative_humidity_2m"]
    assert data["wind_speed"] == open_meteo.CURRENT["wind_speed_10m"]
    assert data["precipitation"] == open_meteo.CURRENT["precipitation"]
    assert data["weather_code"] == 61
    assert data["conditions"] == "Slight rain"
    assert data["time"] == "2026-07-01T14:00"
    assert data["units"]["temperature"] == "°C"
    assert data["units"]["wind_speed"] == "km/h"

    [search] = upstream.queries("/v1/search")
    assert search == {"name": "Berlin", "count": "1", "language": "en", "format": "json"}
    [forecast] = upstream.queries("/v1/forecast")
    assert forecast["latitude"] == str(open_meteo.BERLIN["latitude"])
    assert forecast["longitude"] == str(open_meteo.BERLIN["longitude"])
    assert forecast["timezone"] == "auto"
    assert forecast["forecast_days"] == "1"
    assert set(forecast["current"].split(",")) == set(open_meteo.CURRENT)
    assert (forecast["temperature_unit"], forecast["wind_speed_unit"], forecast["precipitation_unit"]) == (
        "celsius",
        "kmh",
        "mm",
    )
    assert "apikey" not in forecast


async def test_imperial_units_map_to_fahrenheit_mph_and_inch(fake: tuple[FakeOpenMeteo, str]) -> None:
    upstream, url = fake
    result = await call(url, "get_current_weather", {"location": "Berlin", "units": "imperial"})
    [forecast] = upstream.queries("/v1/forecast")
    assert (forecast["temperature_unit"], forecast["wind_speed_unit"], forecast["precipitation_unit"]) == (
        "fahrenheit",
        "mph",
        "inch",
    )
    data = result.structured_content
    assert data["temperature"] == round(open_meteo.CURRENT["temperature_2m"] * 9 / 5 + 32, 1)
    assert data["wind_speed"] == round(open_meteo.CURRENT["wind_speed_10m"] / 1.609344, 1)
    assert data["units"] == {
        "temperature": "°F",
        "apparent_temperature": "°F",
        "relative_humidity": "%",
        "precipitation": "inch",
        "wind_speed": "mp/h",
        "weather_code": "wmo code",
    }


async def test_forecast_asks_for_the_requested_days_and_names_each_days_conditions(
    fake: tuple[FakeOpenMeteo, str],
) -> None:
    upstream, url = fake
    result = await call(url, "get_forecast", {"location": "Berlin", "days": 5, "language": "de"})
    assert not result.is_error, result
    [forecast] = upstream.queries("/v1/forecast")
    assert forecast["forecast_days"] == "5"
    assert forecast["timezone"] == "auto"
    assert upstream.queries("/v1/search")[0]["language"] == "de"
    days = result.structured_content["days"]
    assert [d["date"] for d in days] == ["2026-07-01", "2026-07-02", "2026-07-03", "2026-07-04", "2026-07-05"]
    expected = [open_meteo.daily_metric(i) for i in range(5)]
    assert [d["weather_code"] for d in days] == [e["weather_code"] for e in expected]
    assert [d["conditions"] for d in days] == ["Clear sky", "Overcast", "Slight rain", "Thunderstorm", "Fog"]
    assert [d["temperature_max"] for d in days] == [e["temperature_2m_max"] for e in expected]
    assert [d["temperature_min"] for d in days] == [e["temperature_2m_min"] for e in expected]
    assert [d["precipitation_sum"] for d in days] == [e["precipitation_sum"] for e in expected]
    assert result.structured_content["units"]["temperature_max"] == "°C"


async def test_forty_days_is_rejected_by_the_input_schema_before_any_request(
    fake: tuple[FakeOpenMeteo, str],
) -> None:
    upstream, url = fake
    result = await call(url, "get_forecast", {"location": "Berlin", "days": 40})
    text = error_text(result)
    assert "days" in text and "less than or equal to 16" in text
    assert upstream.requests == []


async def test_unknown_place_is_location_not_found_without_a_forecast_request(
    fake: tuple[FakeOpenMeteo, str],
) -> None:
    upstream, url = fake
    result = await call(url, "get_forecast", {"location": "Atlantis"})
    text = error_text(result)
    assert "location not found: 'Atlantis'" in text
    assert f"{url}/v1/search" in text
    assert upstream.queries("/v1/forecast") == []


async def test_qualifier_after_comma_picks_the_matching_region(fake: tuple[FakeOpenMeteo, str]) -> None:
    upstream, url = fake
    result = await call(url, "get_current_weather", {"location": "Paris, Texas"})
    assert result.structured_content["place"]["country_code"] == "US"
    [search] = upstream.queries("/v1/search")
    assert (search["name"], search["count"]) == ("Paris", "10")
    [forecast] = upstream.queries("/v1/forecast")
    assert forecast["latitude"] == str(open_meteo.PARIS_TX["latitude"])


async def test_coordinates_skip_geocoding_and_take_the_timezone_from_the_forecast(
    fake: tuple[FakeOpenMeteo, str],
) -> None:
    upstream, url = fake
    location = f"{open_meteo.BERLIN['latitude']}, {open_meteo.BERLIN['longitude']}"
    result = await call(url, "get_current_weather", {"location": location})
    assert upstream.queries("/v1/search") == []
    place = result.structured_content["place"]
    assert place["timezone"] == "Europe/Berlin"
    assert place["latitude"] == open_meteo.BERLIN["latitude"]


async def test_search_location_returns_matches_and_an_empty_list_for_none(
    fake: tuple[FakeOpenMeteo, str],
) -> None:
    upstream, url = fake
    with anyio.fail_after(CALL_TIMEOUT):
        async with weather_server(url) as c:
            paris = await c.call_tool("search_location", {"name": "Paris", "count": 2, "language": "fr"})
            nowhere = await c.call_tool("search_location", {"name": "Atlantis"})
    assert [(p["country_code"], p["admin1"]) for p in paris.structured_content["results"]] == [
        ("FR", "Île-de-France"),
        ("US", "Texas"),
    ]
    assert paris.structured_content["results"][1]["population"] == open_meteo.PARIS_TX["population"]
    assert nowhere.structured_content == {"results": []}
    first, second = upstream.queries("/v1/search")
    assert (first["count"], first["language"]) == ("2", "fr")
    assert second["count"] == "5"


async def test_open_meteo_400_reason_is_surfaced(fake: tuple[FakeOpenMeteo, str]) -> None:
    upstream, url = fake
    upstream.reject_reason = "Parameter 'current' is invalid. Unknown variable 'bogus'."
    result = await call(url, "get_current_weather", {"location": "Berlin"})
    text = error_text(result)
    assert "HTTP 400" in text
    assert upstream.reject_reason in text
    assert f"{url}/v1/forecast" in text


async def test_malformed_forecast_body_is_a_tool_error_naming_the_url(
    fake: tuple[FakeOpenMeteo, str],
) -> None:
    upstream, url = fake
    upstream.forecast_raw = "<html>502 Bad Gateway</html>"
    text = error_text(await call(url, "get_current_weather", {"location": "Berlin"}))
    assert f"{url}/v1/forecast" in text
    assert "not JSON" in text


async def test_forecast_without_the_expected_fields_is_a_tool_error(fake: tuple[FakeOpenMeteo, str]) -> None:
    upstream, url = fake
    upstream.forecast_raw = '{"latitude": 52.5, "longitude": 13.4}'
    text = error_text(await call(url, "get_current_weather", {"location": "Berlin"}))
    assert "unexpected shape" in text
    assert f"{url}/v1/forecast" in text


async def test_slow_upstream_times_out_with_the_configured_timeout(fake: tuple[FakeOpenMeteo, str]) -> None:
    upstream, url = fake
    upstream.delay = 1.0  # well past the 0.3 s timeout; the fake's thread waits this out before it can stop
    text = error_text(await call(url, "search_location", {"name": "Berlin"}, WEATHER_HTTP_TIMEOUT="0.3"))
    assert f"GET {url}/v1/search failed: timed out after 0.3s" in text


async def test_starts_offline_and_names_the_unreachable_url() -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    with anyio.fail_after(CALL_TIMEOUT):
        async with weather_server(dead) as c:
            listed = await c.list_tools()
            result = await c.call_tool("get_current_weather", {"location": "Berlin"})
    assert len(listed.tools) == 3
    text = error_text(result)
    assert f"GET {dead}/v1/search failed: cannot reach upstream" in text


async def test_api_key_is_sent_to_both_apis_and_kept_out_of_errors(fake: tuple[FakeOpenMeteo, str]) -> None:
    upstream, url = fake
    upstream.reject_reason = "Invalid API key"
    result = await call(url, "get_forecast", {"location": "Berlin"}, OPEN_METEO_API_KEY="s3cret-key")
    assert [q["apikey"] for _, q in upstream.requests] == ["s3cret-key", "s3cret-key"]
    assert "s3cret-key" not in error_text(result)


# --- Amap ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def amap_front() -> Iterator[tuple[Front, str]]:
    front = Front()
    with serve_in_thread(front) as url:
        yield front, url


@pytest.fixture
def fake_amap(amap_front: tuple[Front, str]) -> Iterator[tuple[FakeAmap, str]]:
    front, url = amap_front
    upstream = FakeAmap()
    with front.behind(upstream.app):
        yield upstream, url


async def test_maps_weather_appears_with_a_key_and_returns_amaps_shape(
    fake: tuple[FakeOpenMeteo, str], fake_amap: tuple[FakeAmap, str]
) -> None:
    _, url = fake
    amap_fake, amap_url = fake_amap
    with anyio.fail_after(CALL_TIMEOUT):
        async with weather_server(url, AMAP_MAPS_API_KEY=amap.KEY, AMAP_BASE_URL=amap_url) as c:
            names = {t.name for t in (await c.list_tools()).tools}
            result = await c.call_tool("maps_weather", {"city": "110000"})
    assert "maps_weather" in names
    assert not result.is_error, result
    assert result.structured_content["city"] == "北京市"
    fields = ["date", "week", "dayweather", "nightweather", "daytemp", "nighttemp", "daywind", "nightwind"]
    fields += ["daypower", "nightpower"]
    assert result.structured_content["forecasts"] == [
        {f: cast[f] for f in fields} for cast in amap.BEIJING_CASTS
    ]
    assert amap_fake.requests == [{"city": "110000", "key": amap.KEY, "extensions": "all"}]


async def test_maps_weather_reports_amaps_info_on_failure(
    fake: tuple[FakeOpenMeteo, str], fake_amap: tuple[FakeAmap, str]
) -> None:
    _, url = fake
    _, amap_url = fake_amap
    with anyio.fail_after(CALL_TIMEOUT):
        async with weather_server(url, AMAP_MAPS_API_KEY="wrong-key", AMAP_BASE_URL=amap_url) as c:
            bad_key = await c.call_tool("maps_weather", {"city": "110000"})
    text = error_text(bad_key)
    assert "Get weather failed: INVALID_USER_KEY" in text
    assert "wrong-key" not in text

    with anyio.fail_after(CALL_TIMEOUT):
        async with weather_server(url, AMAP_MAPS_API_KEY=amap.KEY, AMAP_BASE_URL=amap_url) as c:
            unknown = await c.call_tool("maps_weather", {"city": "不存在"})
    assert "Get weather failed: no forecast for city '不存在'" in error_text(unknown)
