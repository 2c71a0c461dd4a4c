"""Running a hub: supervisor, then app, then uvicorn, plus signals and hot reload.

    async with Supervisor(config) as supervisor:       # spawns and initialises every server
        app = create_app(supervisor, config)            # a view over supervisor.servers
        await server.serve()                            # until SIGINT / SIGTERM

Leaving the `async with` stops every child the supervisor started, so a signal never leaves orphans.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import signal
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import uvicorn

from mcphub.app import create_app
from mcphub.config import HubConfig, load_config
from mcphub.errors import ConfigError
from mcphub.supervisor import Supervisor

logger = logging.getLogger(__name__)

RELOAD_POLL = 1.0  # seconds between looks at the config file


@dataclass(frozen=True)
class ServeOptions:
    host: str
    port: int
    api_keys: tuple[str, ...] = ()
    allow_no_auth: bool = False
    config_path: Path | None = None  # watched for changes when set and hub.reload is on


def check_exposure(config: HubConfig, options: ServeOptions) -> None:
    """Refuse a non-loopback bind with no credential configured, unless explicitly allowed."""
    has_credential = bool(config.auth.api_keys or config.auth.jwt or options.api_keys)
    if has_credential:
        return
    if _is_loopback(options.host):
        logger.warning(
            "no API key configured: serving on %s only (loopback). Add auth.api_keys, --api-key or "
            "MCPHUB_API_KEY before exposing the hub.", options.host)
        return
    if options.allow_no_auth:
        logger.warning("serving on %s WITHOUT any credential (--allow-no-auth): anyone who can reach it can "
                       "call every tool", options.host)
        return
    raise ConfigError(
        f"refusing to serve on {options.host} without a credential: every tool would be open to the network. "
        "Configure auth.api_keys, pass --api-key or set MCPHUB_API_KEY; or bind 127.0.0.1; "
        "or pass --allow-no-auth if something in front of the hub authenticates callers."
    )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: it re-raises the signal after serving, which would
    kill the process before the supervisor has stopped the children. We handle signals in `serve`."""

    @contextmanager
    def capture_signals(self) -> Any:
        yield


async def serve(config: HubConfig, options: ServeOptions) -> None:
    check_exposure(config, options)
    async with Supervisor(config) as supervisor:
        app = create_app(supervisor, config, api_keys=options.api_keys)
        server = _Server(uvicorn.Config(
            app, host=options.host, port=options.port, root_path=config.hub.root_path,
            lifespan="off", access_log=False, log_config=None, timeout_graceful_shutdown=5,
        ))
        async with anyio.create_task_group() as tg:
            tg.start_soon(_on_signals, server, tg.cancel_scope)
            if options.config_path is not None and config.hub.reload:
                tg.start_soon(_watch_config, options.config_path, supervisor, app)
            logger.info("serving %d servers on http://%s:%d%s/ (docs: /docs)", len(config.servers),
                        options.host, options.port, config.hub.root_path)
            await server.serve()
            tg.cancel_scope.cancel()
    logger.info("stopped")


async def _on_signals(server: uvicorn.Server, scope: anyio.CancelScope) -> None:
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            if server.should_exit:
                logger.warning("second %s: forcing exit", signal.Signals(signum).name)
                server.force_exit = True
            else:
                logger.info("%s: shutting down", signal.Signals(signum).name)
                server.should_exit = True


async def _watch_config(path: Path, supervisor: Supervisor, app: Any) -> None:
    """Poll the config file; apply a valid change, keep running on an invalid one."""
    seen = _fingerprint(path)
    while True:
        await anyio.sleep(RELOAD_POLL)
        now = _fingerprint(path)
        if now == seen:
            continue
        seen = now
        try:
            config = await anyio.to_thread.run_sync(load_config, path)
        except ConfigError as exc:
            logger.error("config changed but cannot be used; keeping the running config:\n%s", exc)
            continue
        logger.info("config changed: applying")
        app.state.hub.reconfigure(config)
        await supervisor.apply(config.servers)


def _fingerprint(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None
