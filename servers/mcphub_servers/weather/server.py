"""The weather server: Open-Meteo forecast and geocoding APIs, plus Amap's `maps_weather` when keyed.

Tools: `get_current_weather`, `get_forecast`, `search_location` (always) and `maps_weather` (only when
`AMAP_MAPS_API_KEY` is set, with the output shape of `@amap/amap-maps-mcp-server`).

Environment (read once at startup; nothing is fetched until a tool is called, so it starts offline):

* `OPEN_METEO_BASE_URL` (default `https://api.open-meteo.com`): serves `/v1/forecast`
* `OPEN_METEO_GEOCODING_URL` (default `https://geocoding-api.open-meteo.com`): serves `/v1/search`
* `OPEN_METEO_API_KEY` (optional, commercial plans): sent as `apikey=` to both
* `WEATHER_HTTP_TIMEOUT` (seconds, default 15)
* `AMAP_MAPS_API_KEY` (optional) and `AMAP_BASE_URL` (default `https://restapi.amap.com`)

A location is a place name ("Berlin"), a name with a qualifier ("Portland, Oregon", "Paris, FR": the part
after the first comma must equal the country, country code or first-level region of a match), or coordinates
("52.52,13.41").
"""

import importlib.metadata
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeVar

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations
from pydantic import BaseModel, Field

from mcphub_servers import _cli, _protocol, _upstream
from mcphub_servers.weather.amap import AmapWeather, amap_weather
from mcphub_servers.weather.wmo import describe

SERVER_NAME = "mcphub-weather"
MAX_FORECAST_DAYS = 16  # Open-Meteo's limit
GEOCODE_CANDIDATES = 10  # matches fetched when a qualifier ("Paris, TX") has to pick one

try:
    SERVER_VERSION = importlib.metadata.version("mcphub")
except importlib.metadata.PackageNotFoundError:  # running from a source tree that was never installed
    SERVER_VERSION = "0.0.0"

READ_ONLY = ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=True)
CURRENT_FIELDS = {  # Open-Meteo variable -> our field name
    "temperature_2m": "temperature",
    "apparent_temperature": "apparent_temperature",
    "relative_humidity_2m": "relative_humidity",
    "precipitation": "precipitation",
    "wind_speed_10m": "wind_speed",
    "weather_code": "weather_code",
}
DAILY_FIELDS = {
    "weather_code": "weather_code",
    "temperature_2m_max": "temperature_max",
    "temperature_2m_min": "temperature_min",
    "precipitation_sum": "precipitation_sum",
    "precipitation_probability_max": "precipitation_probability_max",
}
UNIT_PARAMS = {
    "metric": {"temperature_unit": "celsius", "wind_speed_unit": "kmh", "precipitation_unit": "mm"},
    "imperial": {"temperature_unit": "fahrenheit", "wind_speed_unit": "mph", "precipitation_unit": "inch"},
}
_COORDINATES = re.compile(r"^\s*(-?\d{1,3}(?:\.\d+)?)\s*,\s*(-?\d{1,3}(?:\.\d+)?)\s*$")

Location = Annotated[
    str,
    Field(
        min_length=1,
        description="Place name ('Berlin'), name with country or region ('Portland, Oregon', 'Paris, FR'), "
        "or 'latitude,longitude'",
    ),
]
Units = Annotated[
    Literal["metric", "imperial"],
    Field(description="metric: °C, km/h, mm; imperial: °F, mph, inch"),
]
Language = Annotated[
    str,
    Field(
        pattern=r"^[A-Za-z]{2}([-_][A-Za-z0-9]+)?$",
        description="ISO-639-1 language for place names, e.g. 'en', 'de', 'zh' (a region suffix is ignored)",
    ),
]


class Place(BaseModel):
    name: str
    country: str | None = None
    country_code: str | None = None
    admin1: str | None = Field(default=None, description="First-level region (state, province)")
    latitude: float
    longitude: float
    timezone: str | None = None
    elevation: float | None = None
    population: int | None = None


class CurrentWeather(BaseModel):
    place: Place
    time: str = Field(description="Observation time, local to the place (ISO-8601, no offset)")
    temperature: float | None
    apparent_temperature: float | None
    relative_humidity: float | None
    precipitation: float | None
    wind_speed: float | None
    weather_code: int | None
    conditions: str
    units: dict[str, str] = Field(description="Unit of each numeric field, e.g. {'temperature': '°C'}")


class ForecastDay(BaseModel):
    date: str
    weather_code: int | None
    conditions: str
    temperature_max: float | None
    temperature_min: float | None
    precipitation_sum: float | None
    precipitation_probability_max: float | None = None


class Forecast(BaseModel):
    place: Place
    days: list[ForecastDay]
    units: dict[str, str]


class Locations(BaseModel):
    results: list[Place] = Field(description="Best match first; empty when nothing matches")


@dataclass(frozen=True)
class Settings:
    forecast_url: str
    geocoding_url: str
    api_key: str | None
    timeout: float
    amap_key: str | None
    amap_url: str

    @classmethod
    def from_env(cls) -> "Settings":
        return cls(
            forecast_url=_base(_upstream.env_str("OPEN_METEO_BASE_URL", "https://api.open-meteo.com")),
            geocoding_url=_base(_upstream.env_str("OPEN_METEO_GEOCODING_URL", "https://geocoding-api.open-meteo.com")),
            api_key=_upstream.env_str("OPEN_METEO_API_KEY"),
            timeout=_upstream.env_float("WEATHER_HTTP_TIMEOUT", _upstream.DEFAULT_TIMEOUT),
            amap_key=_upstream.env_str("AMAP_MAPS_API_KEY"),
            amap_url=_base(_upstream.env_str("AMAP_BASE_URL", "https://restapi.amap.com")),
        )


def _base(url: str | None) -> str:
    return (url or "").rstrip("/")



class _Shape(Exception):
    """The upstream answered JSON of an unexpected shape."""


class OpenMeteo:
    def __init__(self, settings: Settings, connection: _upstream.Connection) -> None:
        self._settings = settings
        self._connection = connection

    async def _get(self, url: str, params: dict[str, Any]) -> dict[str, Any]:
        if self._settings.api_key:
            params = {**params, "apikey": self._settings.api_key}
        response = await _upstream.request(self._connection.get(), "GET", url, params=params)
        body = _upstream.json_body(response)
        if response.status_code >= 400 or (isinstance(body, dict) and body.get("error") is True):
            reason = body.get("reason") if isinstance(body, dict) else None
            raise ToolError(
                f"Open-Meteo rejected GET {_upstream.redact(url)} (HTTP {response.status_code}): "
                f"{reason or 'no reason given'}"
            )
        if not isinstance(body, dict):
            raise ToolError(f"GET {_upstream.redact(url)} answered JSON that is not an object")
        return body

    async def search(self, name: str, count: int, language: str) -> list[Place]:
        url = f"{self._settings.geocoding_url}/v1/search"
        body = await self._get(url, {"name": name, "count": count, "language": language[:2].lower(), "format": "json"})
        try:
            return [Place.model_validate(item) for item in body.get("results") or []]
        except ValueError as exc:
            raise ToolError(f"GET {_upstream.redact(url)} answered places of an unexpected shape: {exc}") from None

    async def resolve(self, location: str, language: str) -> Place:
        coordinates = _COORDINATES.match(location)
        if coordinates:
            latitude, longitude = float(coordinates[1]), float(coordinates[2])
            if not (-90 <= latitude <= 90 and -180 <= longitude <= 180):
                raise ToolError(f"coordinates out of range: {location!r} (latitude ±90, longitude ±180)")
            return Place(name=f"{latitude},{longitude}", latitude=latitude, longitude=longitude)
        name, _, qualifier = (part.strip() for part in location.partition(","))
        if not name:
            raise ToolError(f"location not found: {location!r} has no place name")
        candidates = await self.search(name, GEOCODE_CANDIDATES if qualifier else 1, language)
        if qualifier:
            wanted = qualifier.casefold()
            candidates = [p for p in candidates if wanted in _qualifiers(p)]
        if not candidates:
            raise ToolError(
                f"location not found: {location!r} (no match from "
                f"{_upstream.redact(self._settings.geocoding_url + '/v1/search')}); "
                "try search_location, a bigger nearby place, or 'latitude,longitude'"
            )
        return candidates[0]

    async def forecast(self, place: Place, params: dict[str, Any]) -> tuple[dict[str, Any], Place]:
        """The forecast body, and the place with its timezone filled in from the answer."""
        url = f"{self._settings.forecast_url}/v1/forecast"
        body = await self._get(
            url, {"latitude": place.latitude, "longitude": place.longitude, "timezone": "auto", **params}
        )
        if place.timezone is None and isinstance(body.get("timezone"), str):
            place = place.model_copy(update={"timezone": body["timezone"]})
        return body, place


def _qualifiers(place: Place) -> set[str]:
    return {v.casefold() for v in (place.country, place.country_code, place.admin1) if v}


def _unit_map(units: Any, fields: dict[str, str]) -> dict[str, str]:
    if not isinstance(units, dict):
        return {}
    return {ours: str(units[theirs]) for theirs, ours in fields.items() if theirs in units}


def _current(body: dict[str, Any], place: Place) -> CurrentWeather:
    current = body["current"]
    values = {ours: current.get(theirs) for theirs, ours in CURRENT_FIELDS.items()}
    return CurrentWeather(
        place=place,
        time=current["time"],
        **values,
        conditions=describe(values["weather_code"]),
        units=_unit_map(body.get("current_units"), CURRENT_FIELDS),
    )


def _days(body: dict[str, Any], place: Place) -> Forecast:
    daily = body["daily"]
    dates = daily["time"]
    columns = {ours: daily.get(theirs) or [None] * len(dates) for theirs, ours in DAILY_FIELDS.items()}
    days = []
    for i, date in enumerate(dates):
        row = {field: column[i] for field, column in columns.items()}
        days.append(ForecastDay(date=date, conditions=describe(row["weather_code"]), **row))
    units = _unit_map(body.get("daily_units"), DAILY_FIELDS)
    units.pop("weather_code", None)
    return Forecast(place=place, days=days, units=units)


T = TypeVar("T")


def _parse(url: str, parse: Callable[[dict[str, Any], Place], T], body: dict[str, Any], place: Place) -> T:
    try:
        return parse(body, place)
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise ToolError(
            f"GET {_upstream.redact(url)} answered a forecast of an unexpected shape ({type(exc).__name__}: {exc})"
        ) from None


def create_server(settings: Settings) -> MCPServer:
    connection = _upstream.Connection("weather", timeout=settings.timeout)
    server = MCPServer(SERVER_NAME, version=SERVER_VERSION, subscriptions=False, lifespan=connection.lifespan)
    _protocol.reject_unknown_tools(server)
    meteo = OpenMeteo(settings, connection)
    forecast_url = f"{settings.forecast_url}/v1/forecast"

    @server.tool(
        title="Current weather",
        description="Current weather at a place (Open-Meteo): temperature, feels-like, humidity, "
        "precipitation, wind and conditions.",
        annotations=READ_ONLY,
    )
    async def get_current_weather(
        location: Location, units: Units = "metric", language: Language = "en"
    ) -> CurrentWeather:
        place = await meteo.resolve(location, language)
        body, place = await meteo.forecast(
            place, {"current": ",".join(CURRENT_FIELDS), "forecast_days": 1, **UNIT_PARAMS[units]}
        )
        return _parse(forecast_url, _current, body, place)

    @server.tool(
        title="Daily forecast",
        description=f"Daily forecast for 1-{MAX_FORECAST_DAYS} days starting today (Open-Meteo): "
        "conditions, min/max temperature, precipitation.",
        annotations=READ_ONLY,
    )
    async def get_forecast(
        location: Location,
        days: Annotated[int, Field(ge=1, le=MAX_FORECAST_DAYS, description="Number of days, today first")] = 3,
        units: Units = "metric",
        language: Language = "en",
    ) -> Forecast:
        place = await meteo.resolve(location, language)
        body, place = await meteo.forecast(
            place, {"daily": ",".join(DAILY_FIELDS), "forecast_days": days, **UNIT_PARAMS[units]}
        )
        return _parse(forecast_url, _days, body, place)

    @server.tool(
        title="Find places",
        description="Places matching a name (Open-Meteo geocoding), best match first, to pick the "
        "right one before asking for weather (pass 'name, country' or 'lat,lon' on).",
        annotations=READ_ONLY,
    )
    async def search_location(
        name: Annotated[str, Field(min_length=1, description="Place name, e.g. 'Springfield'")],
        count: Annotated[int, Field(ge=1, le=10, description="How many matches to return")] = 5,
        language: Language = "en",
    ) -> Locations:
        return Locations(results=await meteo.search(name, count, language))

    if settings.amap_key:

        @server.tool(
            description="根据城市名称或者标准adcode查询指定城市的天气",
            annotations=READ_ONLY,
        )
        async def maps_weather(
            city: Annotated[str, Field(description="城市名称或者adcode")],
        ) -> AmapWeather:
            return await amap_weather(settings.amap_url, settings.amap_key or "", connection.get(), city)

    return server


def main(argv: list[str] | None = None) -> None:
    parser = _cli.parser("weather", "MCP server: weather from Open-Meteo (and Amap)")
    args = parser.parse_args(argv)
    _cli.run(create_server(Settings.from_env()), args)
