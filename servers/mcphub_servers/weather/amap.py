"""Amap's weather service, shaped like `@amap/amap-maps-mcp-server`'s `maps_weather` answer."""

import httpx2
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import BaseModel

from mcphub_servers import _upstream


class AmapCast(BaseModel):
    date: str
    week: str
    dayweather: str
    nightweather: str
    daytemp: str
    nighttemp: str
    daywind: str
    nightwind: str
    daypower: str
    nightpower: str


class AmapWeather(BaseModel):
    city: str
    forecasts: list[AmapCast]


async def amap_weather(base_url: str, key: str, client: httpx2.AsyncClient, city: str) -> AmapWeather:
    """One `weatherInfo` call; failures read like the Amap server's ("Get weather failed: <info>")."""
    url = f"{base_url}/v3/weather/weatherInfo"
    params = {"city": city, "key": key, "extensions": "all"}
    response = await _upstream.request(client, "GET", url, params=params)
    body = _upstream.json_body(response)
    where = _upstream.redact(url)
    if response.status_code >= 400 or not isinstance(body, dict):
        raise ToolError(f"Get weather failed: GET {where} answered HTTP {response.status_code}")
    if str(body.get("status")) != "1":
        raise ToolError(f"Get weather failed: {body.get('info') or body.get('infocode') or 'unknown error'} ({where})")
    forecasts = body.get("forecasts") or []
    if not forecasts:
        raise ToolError(f"Get weather failed: no forecast for city {city!r} ({where})")
    try:
        return AmapWeather(city=forecasts[0]["city"], forecasts=forecasts[0]["casts"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ToolError(f"Get weather failed: GET {where} answered an unexpected shape ({exc})") from None
