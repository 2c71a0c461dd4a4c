"""Start a real hub for a test: supervisor + app + uvicorn on 127.0.0.1 (random port), in the test's loop."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import httpx2
import uvicorn
import yaml

from mcphub.app import create_app
from mcphub.config import HubConfig, parse_config
from mcphub.serve import _Server
from mcphub.supervisor import Supervisor
from mcphub.wire import http_protocol
from tests.helpers import REPO, free_port

HUB_START_TIMEOUT = 30.0  # seconds: servers start in parallel; python ones take ~0.5 s each


def module_server(module: str, **overrides: Any) -> dict[str, Any]:
    """Config of a test MCP server `tests/mcp_servers/<module>.py` over stdio."""
    server: dict[str, Any] = {
        "transport": "stdio",
        "command": sys.executable,
        "args": ["-m", f"tests.mcp_servers.{module}"],
        "cwd": str(REPO),
    }
    server.update(overrides)
    return server


def sample_server(**overrides: Any) -> dict[str, Any]:
    """Config of the test MCP server `tests/mcp_servers/sample.py` over stdio."""
    return module_server("sample", **overrides)


def config_of(raw: dict[str, Any] | str) -> HubConfig:
    return parse_config(raw if isinstance(raw, str) else yaml.safe_dump(raw), source="test config")


@dataclass
class RunningHub:
    url: str
    client: httpx2.AsyncClient
    supervisor: Supervisor
    app: Any


@asynccontextmanager
async def running_hub(raw: dict[str, Any] | str | HubConfig, *, api_keys: tuple[str, ...] = (),
                      headers: dict[str, str] | None = None) -> AsyncIterator[RunningHub]:
    config = raw if isinstance(raw, HubConfig) else config_of(raw)
    async with Supervisor(config) as supervisor:  # bounded by each server's connect_timeout
        app = create_app(supervisor, config, api_keys=api_keys)
        port = free_port()
        server = _Server(uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off", log_config=None,
                                        access_log=False, root_path=config.hub.root_path,
                                        http=http_protocol()))
        async with anyio.create_task_group() as tg:
            tg.start_soon(server.serve)
            with anyio.fail_after(HUB_START_TIMEOUT):
                while not server.started:
                    await anyio.sleep(0.01)
            url = f"http://127.0.0.1:{port}"
            async with httpx2.AsyncClient(base_url=url, headers=headers, timeout=30) as client:
                yield RunningHub(url, client, supervisor, app)
            server.should_exit = True


def assert_error(response: httpx2.Response, status: int, type_: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert error["type"] == type_, body
    assert isinstance(error["message"], str) and error["message"], body
    assert "Traceback" not in error["message"] and "object at 0x" not in error["message"], body
    return error
