"""Running a hub: supervisor, then app, then uvicorn, plus signals and hot reload.

    async with Supervisor(config) as supervisor:       # spawns and initialises every server
        app = create_app(supervisor, config)            # a view over supervisor.servers
        await server.serve()                            # until SIGINT / SIGTERM

Leaving the `async with` stops every child the supervisor started, so a signal never leaves orphans.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import logging
import signal
import uuid
from collections.abc import Callable, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import uvicorn

from mcphub import transports
from mcphub.app import create_app
from mcphub.config import HubConfig, ServerConfig, instance_servers, load_config
from mcphub.errors import ConfigError
from mcphub.federation import RemoteMount
from mcphub.launcher import Launcher
from mcphub.supervisor import Supervisor
from mcphub.wire import http_protocol

logger = logging.getLogger(__name__)

RELOAD_POLL = 1.0  # seconds between looks at the config file


@dataclass(frozen=True)
class ServeOptions:
    host: str | None = None  # overrides hub.host / the instance's host (one listener only)
    port: int | None = None
    api_keys: tuple[str, ...] = ()
    allow_no_auth: bool = False
    config_path: Path | None = None  # watched for changes when set and hub.reload is on
    instance: str | None = None  # run this instance only; None: every instance in one process


@dataclass
class Site:
    """One listener: an instance (or the whole hub when the config has no `instances:`)."""

    name: str
    config: HubConfig  # hub settings and auth of this instance; servers = the ones it runs itself
    host: str
    port: int
    local: list[str]  # servers from this process's supervisor (its own, and in-process siblings')
    mounts: list[RemoteMount] = field(default_factory=list)
    hub_id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def servers(self, supervisor: Supervisor) -> Callable[[], Mapping[str, Any]]:
        def current() -> dict[str, Any]:
            found: dict[str, Any] = {n: supervisor.servers[n] for n in self.local if n in supervisor.servers}
            for mount in self.mounts:
                for name, server in mount.servers.items():
                    found.setdefault(name, server)
            return found

        return current


def plan(config: HubConfig, options: ServeOptions) -> tuple[dict[str, ServerConfig], list[Site]]:
    """Which servers this process runs, and which listeners serve them (pure)."""
    if not config.instances:
        if options.instance is not None:
            raise ConfigError(f"--instance {options.instance!r}: this config defines no instances")
        site = _site(config, "hub", config.hub.host, config.hub.port, list(config.servers), config.hub.mount,
                     options, siblings_in_process=False)
        return dict(config.servers), [site]
    if options.instance is not None:
        if options.instance not in config.instances:
            raise ConfigError(f"--instance {options.instance!r}: no such instance "
                              f"(instances: {', '.join(sorted(config.instances))})")
        names = [options.instance]
    else:
        names = list(config.instances)
        if len(names) > 1 and (options.port is not None or options.host is not None):
            raise ConfigError("--host/--port set one listener, but this config runs "
                              f"{len(names)} instances ({', '.join(names)}); add --instance NAME")
    sites = []
    running: set[str] = set()
    together = options.instance is None
    for name in names:
        inst = config.instances[name]
        local = list(instance_servers(config, name)) if together else list(inst.servers)
        running.update(local)
        host = inst.host or config.hub.host
        port = inst.port if inst.port is not None else config.hub.port
        sites.append(_site(config, name, host, port, local, inst.mount, options, siblings_in_process=together))
    ports = [(s.host, s.port) for s in sites]
    if len(set(ports)) != len(ports):
        raise ConfigError("instances: two instances listen on the same host and port; give each its own port")
    return {n: config.servers[n] for n in config.servers if n in running}, sites


def _site(config: HubConfig, name: str, host: str, port: int, local: list[str], mount: list[str],
          options: ServeOptions, *, siblings_in_process: bool) -> Site:
    inst = config.instances.get(name)
    auth = inst.auth if inst is not None and inst.auth is not None else config.auth
    narrowed = config.model_copy(update={
        "auth": auth,
        "servers": {n: config.servers[n] for n in local},
        "hub": config.hub.model_copy(update={"host": host, "port": port}),
    })
    site = Site(name=name, config=narrowed, host=options.host or host,
                port=options.port if options.port is not None else port, local=local)
    for target in _remote_targets(config, name, mount, siblings_in_process):
        site.mounts.append(_mount(config, name, target, site.hub_id, frozenset(local)))
    return site


def _remote_targets(config: HubConfig, name: str, mount: list[str], siblings_in_process: bool) -> list[str]:
    """Mount targets reached over HTTP: remotes, and siblings when they run in another process. When
    siblings run here, their own remote mounts come along (their servers are served from here)."""
    targets: list[str] = []
    for target in mount:
        if target in config.instances and siblings_in_process:
            targets += [t for t in _remote_targets(config, target, config.instances[target].mount, True)
                        if t not in targets]
        elif target not in targets:
            targets.append(target)
    return targets


def _mount(config: HubConfig, site: str, target: str, hub_id: str, reserved: frozenset[str]) -> RemoteMount:
    remote = config.remotes.get(target)
    if remote is not None:
        return RemoteMount(target, remote.url, hub_id=hub_id, api_key=remote.api_key, timeout=remote.timeout,
                           required=remote.required, proxy=remote.proxy, reserved=reserved)
    sibling = config.instances[target]
    if not sibling.url:
        raise ConfigError(f"instances.{target}.url: needed to mount '{target}' in '{site}' when '{site}' runs "
                          f"on its own (--instance {site}); it is the URL other hubs reach '{target}' at")
    # a sibling sharing this instance's auth is called with each caller's own credential
    key = sibling.api_key if sibling.auth is not None else None
    if sibling.auth is not None and not key:
        raise ConfigError(f"instances.{target}.api_key: '{target}' has an auth of its own, so '{site}' needs a key "
                          f"for it to mount it")
    return RemoteMount(target, sibling.url, hub_id=hub_id, api_key=key, timeout=60.0, reserved=reserved)


def check_exposure(config: HubConfig, options: ServeOptions, host: str) -> None:
    """Refuse a non-loopback bind with no credential configured, unless explicitly allowed."""
    has_credential = bool(config.auth.api_keys or config.auth.jwt or options.api_keys)
    if has_credential:
        return
    if _is_loopback(host):
        logger.warning(
            "no API key configured: serving on %s only (loopback). Add auth.api_keys, --api-key or "
            "MCPHUB_API_KEY before exposing the hub.", host)
        return
    if options.allow_no_auth:
        logger.warning("serving on %s WITHOUT any credential (--allow-no-auth): anyone who can reach it can "
                       "call every tool", host)
        return
    raise ConfigError(
        f"refusing to serve on {host} without a credential: every tool would be open to the network. "
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


async def serve(config: HubConfig, options: ServeOptions, launcher: Launcher | None = None) -> None:
    """Run until a signal. `launcher`: where Python stdio servers are forked from (see launcher.py)."""
    servers, sites = plan(config, options)
    for site in sites:
        check_exposure(site.config, options, site.host)
    connect = functools.partial(transports.connect, launcher=launcher)
    async with Supervisor(servers=servers, connect=connect) as supervisor, anyio.create_task_group() as tg:
        listeners = []
        for site in sites:
            for mount in site.mounts:
                await tg.start(mount.run)
            app = create_app(supervisor, site.config, api_keys=options.api_keys,
                             servers=site.servers(supervisor), hub_id=site.hub_id, mounts=site.mounts)
            listeners.append((site, app, _Server(uvicorn.Config(
                app, host=site.host, port=site.port, root_path=site.config.hub.root_path,
                lifespan="off", access_log=False, log_config=None, timeout_graceful_shutdown=5,
                http=http_protocol(),
            ))))
        if options.config_path is not None and config.hub.reload:
            tg.start_soon(_watch_config, options.config_path, options, supervisor, listeners)
        async with anyio.create_task_group() as serving:
            serving.start_soon(_on_signals, listeners)
            for site, _, server in listeners:
                serving.start_soon(_serve_until_done, server, serving.cancel_scope)
                logger.info("%s: %d servers (%d mounted hubs) on http://%s:%d%s/ (docs: /docs)", site.name,
                            len(site.local), len(site.mounts), site.host, site.port, site.config.hub.root_path)
        tg.cancel_scope.cancel()
    logger.info("stopped")


class ListenError(Exception):
    """A listener could not bind its address (uvicorn has logged the OS error)."""


async def _serve_until_done(server: uvicorn.Server, scope: anyio.CancelScope) -> None:
    """Serve; when one listener stops (a signal, or its port is taken), stop them all."""
    try:
        await server.serve()
    except SystemExit:  # uvicorn's answer to a failed bind: sys.exit(3), after logging the reason
        raise ListenError(f"could not serve on {server.config.host}:{server.config.port} "
                          "(see the error above)") from None
    scope.cancel()


async def _on_signals(listeners: list[tuple[Site, Any, uvicorn.Server]]) -> None:
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            for _, app, server in listeners:
                app.state.hub.shut_down()  # calls in flight answer 503 now, not after uvicorn's grace period
                if server.should_exit:
                    server.force_exit = True
                else:
                    server.should_exit = True
            logger.info("%s: shutting down", signal.Signals(signum).name)


async def _watch_config(path: Path, options: ServeOptions, supervisor: Supervisor,
                        listeners: list[tuple[Site, Any, Any]]) -> None:
    """Poll the config file; apply a valid change, keep running on an invalid one.

    Servers, auth and hub settings that need no new socket are applied. A change to instances,
    mounts, hosts or ports needs a restart, and is logged as such."""
    seen = _fingerprint(path)
    while True:
        await anyio.sleep(RELOAD_POLL)
        now = _fingerprint(path)
        if now == seen:
            continue
        seen = now
        try:
            config = await anyio.to_thread.run_sync(load_config, path)
            servers, sites = plan(config, options)
        except ConfigError as exc:
            logger.error("config changed but cannot be used; keeping the running config:\n%s", exc)
            continue
        old = [(s.name, s.host, s.port, [m.name for m in s.mounts]) for s, _, _ in listeners]
        new = [(s.name, s.host, s.port, [m.name for m in s.mounts]) for s in sites]
        if old != new:
            logger.warning("config changed instances, mounts, hosts or ports: restart the hub to apply those")
            continue
        logger.info("config changed: applying")
        for (site, app, _), fresh in zip(listeners, sites, strict=True):
            site.local[:] = fresh.local
            site.config = fresh.config
            app.state.hub.reconfigure(fresh.config)
        await supervisor.apply(servers)


def _fingerprint(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None
