"""A fake Open-Meteo: `/v1/search` (geocoding) and `/v1/forecast`, with the real APIs' response shapes.

It records every query it receives, derives its answers from the data below (so tests can compute the
expected values), honours the unit parameters the way the real API does, and can be told to fail.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

BERLIN = {
    "id": 2950159,
    "name": "Berlin",
    "latitude": 52.52437,
    "longitude": 13.41053,
    "elevation": 74.0,
    "feature_code": "PPLC",
    "country_code": "DE",
    "admin1_id": 2950157,
    "timezone": "Europe/Berlin",
    "population": 3426354,
    "country_id": 2921044,
    "country": "Germany",
    "admin1": "Land Berlin",
}
PARIS_FR = {
    "id": 2988507,
    "name": "Paris",
    "latitude": 48.85341,
    "longitude": 2.3488,
    "elevation": 42.0,
    "country_code": "FR",
    "timezone": "Europe/Paris",
    "population": 2138551,
    "country": "France",
    "admin1": "Île-de-France",
    "admin2": "Paris",
}
PARIS_TX = {
    "id": 4717560,
    "name": "Paris",
    "latitude": 33.66094,
    "longitude": -95.55551,
    "elevation": 183.0,
    "country_code": "US",
    "timezone": "America/Chicago",
    "population": 24782,
    "country": "United States",
    "admin1": "Texas",
    "admin2": "Lamar",
}
PLACES: dict[str, list[dict[str, Any]]] = {"berlin": [BERLIN], "paris": [PARIS_FR, PARIS_TX]}

# Metric "truth" per place timezone; imperial answers are converted from it like Open-Meteo does.
CURRENT = {
    "temperature_2m": 21.4,
    "relative_humidity_2m": 55,
    "apparent_temperature": 20.1,
    "precipitation": 0.8,
    "weather_code": 61,
    "wind_speed_10m": 14.4,
}
FIRST_DAY = date(2026, 7, 1)
DAILY_CODES = [0, 3, 61, 95, 45, 2, 80, 71, 1, 63, 99, 55, 3, 0, 82, 51]


def daily_metric(i: int) -> dict[str, Any]:
    """Day i's metric values (a deterministic function, so tests can compute what they expect)."""
    return {
        "weather_code": DAILY_CODES[i],
        "temperature_2m_max": 20.0 + i,
        "temperature_2m_min": 10.0 + i / 2,
        "precipitation_sum": 1.5 * i,
        "precipitation_probability_max": 5 * i,
    }


def convert(variable: str, metric_value: float, query: dict[str, str]) -> float:
    """Convert a metric value into the unit the query asked for (Open-Meteo rounds to 0.1 / 0.01)."""
    if variable.startswith(("temperature", "apparent")) and query.get("temperature_unit") == "fahrenheit":
        return round(metric_value * 9 / 5 + 32, 1)
    if variable.startswith("wind") and query.get("wind_speed_unit") == "mph":
        return round(metric_value / 1.609344, 1)
    if variable.startswith("precipitation_") and variable.endswith("probability_max"):
        return metric_value
    if variable.startswith("precipitation") and query.get("precipitation_unit") == "inch":
        return round(metric_value / 25.4, 3)
    return metric_value


def unit_of(variable: str, query: dict[str, str]) -> str:
    if variable.startswith(("temperature", "apparent")):
        return "°F" if query.get("temperature_unit") == "fahrenheit" else "°C"
    if variable.startswith("wind"):
        return "mp/h" if query.get("wind_speed_unit") == "mph" else "km/h"
    if variable == "precipitation_probability_max" or variable.startswith("relative_humidity"):
        return "%"
    if variable.startswith("precipitation"):
        return "inch" if query.get("precipitation_unit") == "inch" else "mm"
    if variable == "weather_code":
        return "wmo code"
    return ""


@dataclass
class FakeOpenMeteo:
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    delay: float = 0.0  # seconds every answer waits (for timeout tests)
    reject_reason: str | None = None  # answer /v1/forecast with HTTP 400 and this reason
    forecast_raw: str | None = None  # answer /v1/forecast with this body verbatim (malformed-body tests)

    def queries(self, path: str) -> list[dict[str, str]]:
        return [query for seen, query in self.requests if seen == path]

    async def _search(self, request: Request) -> Response:
        query = await self._record(request)
        count = int(query.get("count", "10"))
        results = PLACES.get(query.get("name", "").casefold(), [])[:count]
        body: dict[str, Any] = {"generationtime_ms": 0.7}
        if results:  # the real API omits the key when nothing matches
            body["results"] = results
        return JSONResponse(body)

    async def _forecast(self, request: Request) -> Response:
        query = await self._record(request)
        if self.reject_reason is not None:
            return JSONResponse({"error": True, "reason": self.reject_reason}, status_code=400)
        if self.forecast_raw is not None:
            return PlainTextResponse(self.forecast_raw)
        latitude, longitude = float(query["latitude"]), float(query["longitude"])
        zone = next(
            (
                p["timezone"]
                for ps in PLACES.values()
                for p in ps
                if (p["latitude"], p["longitude"]) == (latitude, longitude)
            ),
            "GMT",
        )
        body: dict[str, Any] = {
            "latitude": latitude,
            "longitude": longitude,
            "generationtime_ms": 0.1,
            "utc_offset_seconds": 7200 if zone == "Europe/Berlin" else 0,
            "timezone": zone,
            "timezone_abbreviation": "GMT+2" if zone == "Europe/Berlin" else "GMT",
            "elevation": 38.0,
        }
        if "current" in query:
            variables = query["current"].split(",")
            body["current_units"] = {"time": "iso8601", "interval": "seconds"} | {
                v: unit_of(v, query) for v in variables
            }
            body["current"] = {"time": "2026-07-01T14:00", "interval": 900} | {
                v: convert(v, CURRENT[v], query) for v in variables
            }
        if "daily" in query:
            variables = query["daily"].split(",")
            days = int(query.get("forecast_days", "7"))
            body["daily_units"] = {"time": "iso8601"} | {v: unit_of(v, query) for v in variables}
            body["daily"] = {"time": [(FIRST_DAY + timedelta(days=i)).isoformat() for i in range(days)]} | {
                v: [convert(v, daily_metric(i)[v], query) for i in range(days)] for v in variables
            }
        return JSONResponse(body)

    async def _record(self, request: Request) -> dict[str, str]:
        query = dict(request.query_params)
        self.requests.append((request.url.path, query))
        if self.delay:
            await asyncio.sleep(self.delay)
        return query

    @property
    def app(self) -> Starlette:
        return Starlette(routes=[Route("/v1/search", self._search), Route("/v1/forecast", self._forecast)])
