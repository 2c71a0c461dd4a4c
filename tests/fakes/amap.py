"""A fake Amap web service: `/v3/weather/weatherInfo` with the real response shape (all values strings)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

KEY = "amap-test-key"
BEIJING_CASTS = [
    {
        "date": "2026-07-01",
        "week": "3",
        "dayweather": "晴",
        "nightweather": "多云",
        "daytemp": "33",
        "nighttemp": "22",
        "daywind": "南",
        "nightwind": "南",
        "daypower": "1-3",
        "nightpower": "1-3",
        "daytemp_float": "33.0",
        "nighttemp_float": "22.0",
    },
    {
        "date": "2026-07-02",
        "week": "4",
        "dayweather": "雷阵雨",
        "nightweather": "小雨",
        "daytemp": "29",
        "nighttemp": "21",
        "daywind": "东北",
        "nightwind": "东北",
        "daypower": "4",
        "nightpower": "1-3",
        "daytemp_float": "29.0",
        "nighttemp_float": "21.0",
    },
]
CITIES = {"110000": "北京市", "北京": "北京市"}


@dataclass
class FakeAmap:
    requests: list[dict[str, str]] = field(default_factory=list)

    async def _weather(self, request: Request) -> Response:
        query = dict(request.query_params)
        self.requests.append(query)
        if query.get("key") != KEY:
            return JSONResponse({"status": "0", "info": "INVALID_USER_KEY", "infocode": "10001"})
        city = CITIES.get(query.get("city", ""))
        body: dict[str, Any] = {
            "status": "1",
            "count": "0",
            "info": "OK",
            "infocode": "10000",
            "forecasts": [],
        }
        if city:
            body["count"] = "1"
            body["forecasts"] = [
                {
                    "city": city,
                    "adcode": "110000",
                    "province": "北京",
                    "reporttime": "2026-07-01 11:02:03",
                    "casts": BEIJING_CASTS,
                }
            ]
        return JSONResponse(body)

    @property
    def app(self) -> Starlette:
        return Starlette(routes=[Route("/v3/weather/weatherInfo", self._weather)])
