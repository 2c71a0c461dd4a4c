"""Running a hub: the plan, one lifetime (signals, sockets, servers, mounts, listeners), hot reload.

    servers, sites = plan(config, options)              # pure: which servers, which listeners
    bind every listener's socket                        # a busy port fails here, before any child
    signal receiver up                                  # SIGINT / SIGTERM honoured from here on
    async with running(servers, sites) as hub:          # supervisor + mounts; one Invoker per listener
        uvicorn on each socket, create_app(invoker)     # until a signal

`running` is also what `mcphub call` and `mcphub chat` use, so they reach mounted servers too. Leaving
any `async with` stops what it started, so a signal, at start-up or later, never leaves orphans.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import ipaddress
import logging
import os
import signal
import socket
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import uvicorn
from anyio.abc import TaskStatus
from starlette.types import ASGIApp

from mcphub import connection, oauth, state, transports
from mcphub.app import create_app
from mcphub.config import WILDCARD_ADDRESSES, HubConfig, ServerConfig, instance_servers, load_config
from mcphub.errors import ConfigError
from mcphub.federation import RemoteMount
from mcphub.guard import Hosts
from mcphub.invoker import Catalog, Invoker
from mcphub.jobs import JobRunner
from mcphub.launcher import Launcher
from mcphub.logs import plural
from mcphub.mcp_face import McpFace
from mcphub.memory import release_freed
from mcphub.supervisor import Connect, Supervisor
from mcphub.toolserver import ToolServer

logger = logging.getLogger(__name__)

RELOAD_POLL = 1.0  # seconds between looks at the config file
SHUTDOWN_GRACE = 5  # seconds uvicorn gives open connections after a signal (calls in flight answer 503 at once)


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

    def servers(self, supervisor: Supervisor) -> Catalog:
        def current() -> dict[str, ToolServer]:
            found: dict[str, ToolServer] = {n: supervisor.servers[n] for n in self.local if n in supervisor.servers}
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
        if host in WILDCARD_ADDRESSES and not config.hub.allowed_hosts:
            logger.warning("hub.allowed_hosts is empty, so a listener on %s answers to any Host name: list the "
                           "names clients use to refuse DNS rebinding", host)
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
    kill the process before the supervisor has stopped the children. `serve` handles signals.
    (Fenced: `capture_signals` is uvicorn's, tests/test_contracts.py checks it is still what `serve` calls.)"""

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@dataclass
class RunningHub:
    """A hub's servers running: the supervisor, mounts polled, one invoker per listener."""

    supervisor: Supervisor
    sites: list[Site]
    invokers: list[Invoker]

    def invoker_for(self, server: str) -> Invoker | None:
        """The invoker of the first listener that serves `server` (its own, or mounted)."""
        return next((inv for inv in self.invokers if server in inv.servers()), None)


@asynccontextmanager
async def running(servers: Mapping[str, ServerConfig], sites: list[Site], *, api_keys: tuple[str, ...] = (),
                  launcher: Launcher | None = None, connect: Connect | None = None,
                  user_oauth: oauth.OAuth | None = None) -> AsyncIterator[RunningHub]:
    """Start `servers` (see `plan`), then poll every site's mounts once, in parallel; stop it all on exit.
    A cancellation at any point (a signal during start-up) stops what has started, and leaves no child.
    `connect`: how a server is reached (default: `transports.connect`; tests connect in-process).
    `user_oauth`: users' own OAuth connections (servers with `oauth:`), shared by every listener."""
    connect = connect or functools.partial(transports.connect, launcher=launcher)
    sources = [user_oauth] if user_oauth is not None else []
    async with Supervisor(servers=servers, connect=connect, user_auth=sources) as supervisor, \
            anyio.create_task_group() as polling:
        async with anyio.create_task_group() as first_listings:  # each bounded by federation.LIST_TIMEOUT
            for mount in (m for site in sites for m in site.mounts):
                first_listings.start_soon(polling.start, mount.run)
        invokers = [Invoker(site.config, site.servers(supervisor), api_keys=api_keys, oauth=user_oauth)
                    for site in sites]
        if user_oauth is not None and invokers[0].state is not None:
            user_oauth.use_redis(invokers[0].state)  # hub.state: tokens shared by the replicas
        async with contextlib.AsyncExitStack() as stores:  # hub.state: each listener's Redis client and monitor
            for invoker in invokers:
                await stores.enter_async_context(state.kept(invoker.state))
            yield RunningHub(supervisor, sites, invokers)
        polling.cancel_scope.cancel()


@dataclass
class _Listener:
    site: Site
    invoker: Invoker
    server: _Server
    sock: socket.socket
    mcp: McpFace
    jobs: JobRunner


class _Lifetime:
    """What a signal must reach: nothing yet (start-up: cancel it), or the listeners (stop serving)."""

    def __init__(self, scope: anyio.CancelScope) -> None:
        self.scope = scope
        self.listeners: list[_Listener] | None = None

    def stop(self, signame: str) -> None:
        if self.listeners is None:
            if not self.scope.cancel_called:
                logger.info("%s during start-up: stopping", signame)
            self.scope.cancel()  # the supervisor stops every server it started, each within STOP_GRACE
            return
        for listener in self.listeners:
            listener.invoker.shut_down()  # calls in flight answer 503 now, not after uvicorn's grace period
            listener.mcp.shut_down()  # MCP sessions and their open streams end now too
            if listener.server.should_exit:
                listener.server.force_exit = True
            else:
                listener.server.should_exit = True
        logger.info("%s: shutting down", signame)


async def serve(config: HubConfig, options: ServeOptions, launcher: Launcher | None = None) -> None:
    """Run until a signal. `launcher`: where Python stdio servers are forked from (see launcher.py).

    One structured lifetime: the signal receiver is up before anything starts; every listening socket
    is bound before any server starts (a busy port is a ListenError, nothing spawned); then the
    servers, the mounts and the listeners, each stopped by leaving its `async with`."""
    servers, sites = plan(config, options)
    user_oauth = oauth.oauth_for(config)  # an oauth: server needs MCPHUB_SECRET_KEY: refuse to start without
    for site in sites:
        check_exposure(site.config, options, site.host)
    with contextlib.ExitStack() as sockets:
        bound = [sockets.enter_context(_bind(site.host, site.port)) for site in sites]
        async with anyio.create_task_group() as signals:
            with anyio.CancelScope() as scope:
                lifetime = _Lifetime(scope)
                await signals.start(_on_signals, lifetime)
                async with running(servers, sites, api_keys=options.api_keys, launcher=launcher,
                                   user_oauth=user_oauth) as hub:
                    listeners = [_listener(site, invoker, sock)
                                 for site, invoker, sock in zip(sites, hub.invokers, bound, strict=True)]
                    async with contextlib.AsyncExitStack() as faces:
                        for listener in listeners:
                            await faces.enter_async_context(listener.mcp.running())
                            await faces.enter_async_context(listener.jobs.running())
                        release_freed()  # what start-up freed goes back to the system (mcphub/memory.py)
                        await _serve(listeners, lifetime, options, config, hub.supervisor)
            signals.cancel_scope.cancel()
    logger.info("stopped")


async def _serve(listeners: list[_Listener], lifetime: _Lifetime, options: ServeOptions, config: HubConfig,
                 supervisor: Supervisor) -> None:
    async with anyio.create_task_group() as serving:
        lifetime.listeners = listeners
        if options.config_path is not None and config.hub.reload:
            serving.start_soon(_watch_config, options.config_path, options, supervisor, listeners)
        for listener in listeners:
            serving.start_soon(_serve_until_done, listener, serving.cancel_scope)
            site = listener.site
            base = f"http://{site.host}:{listener.sock.getsockname()[1]}{site.config.hub.root_path}"
            logger.info("%s: %s (%s) on %s/ (OpenAPI: %s/openapi.json, docs: %s/docs; MCP: %s/mcp, one server: "
                        "%s/{server}/mcp)", site.name, plural(len(site.local), "server"),
                        plural(len(site.mounts), "mounted hub"), base, base, base, base, base)


def listener_hosts(site: Site) -> Hosts:
    """The names `site`'s listener answers to besides hub.allowed_hosts: its bound host, and the host of
    its instance's `url` (how sibling hubs reach it). See mcphub/guard.py for the whole rule."""
    instance = site.config.instances.get(site.name)
    return Hosts.of_listener(site.host, instance.url if instance is not None else None)


def _listener(site: Site, invoker: Invoker, sock: socket.socket) -> _Listener:
    app = create_app(invoker, hub_id=site.hub_id, mounts=site.mounts, hosts=listener_hosts(site))
    server = _Server(uvicorn_config(app, invoker, host=site.host, port=site.port, root_path=site.config.hub.root_path))
    return _Listener(site, invoker, server, sock, app.state.mcp, app.state.jobs)


def uvicorn_config(app: ASGIApp, invoker: Invoker, *, host: str, port: int, root_path: str = "") -> uvicorn.Config:
    """How every listener runs on uvicorn: the hub's connection limits (mcphub/connection.py, read from
    `invoker`'s config for each new connection), no access log of uvicorn's (the invoker audits calls),
    no lifespan (the supervisor is the one owner of what runs)."""
    return uvicorn.Config(
        app, host=host, port=port, root_path=root_path, lifespan="off", access_log=False, log_config=None,
        timeout_graceful_shutdown=SHUTDOWN_GRACE, http=connection.protocol(lambda: invoker.config.hub.limits),
    )


class ListenError(ConfigError):
    """A listener cannot have its address (in use, not ours, not a local address). Exit 2, like bad config."""


@contextmanager
def _bind(host: str, port: int) -> Iterator[socket.socket]:
    """The listening socket for `host:port`, bound now (uvicorn listens on it once the servers are up)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        reason = "address already in use" if exc.errno == errno.EADDRINUSE else (exc.strerror or str(exc)).lower()
        raise ListenError(f"cannot listen on {host}:{port}: {reason}"
                          + (" (another program, or another mcphub, has it; pick another --port)"
                             if exc.errno == errno.EADDRINUSE else "")) from None
    with sock:
        yield sock


async def _serve_until_done(listener: _Listener, scope: anyio.CancelScope) -> None:
    """Serve; when one listener stops (a signal, or it failed to start), stop them all."""
    server = listener.server
    try:
        await server.serve(sockets=[listener.sock])
    except SystemExit:  # uvicorn's answer to a failed start-up, after logging the reason
        raise ListenError(f"could not serve on {server.config.host}:{server.config.port} "
                          "(see the error above)") from None
    scope.cancel()


async def _on_signals(lifetime: _Lifetime, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        task_status.started()
        async for signum in signals:
            lifetime.stop(signal.Signals(signum).name)


async def _watch_config(path: Path, options: ServeOptions, supervisor: Supervisor,
                        listeners: list[_Listener]) -> None:
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
            oauth.sealer_from_env(os.environ, config, str(path))
        except ConfigError as exc:
            logger.error("config changed but cannot be used; keeping the running config:\n%s", exc)
            continue
        old = [(s.name, s.host, s.port, [m.name for m in s.mounts]) for s in (li.site for li in listeners)]
        new = [(s.name, s.host, s.port, [m.name for m in s.mounts]) for s in sites]
        if old != new:
            logger.warning("config changed instances, mounts, hosts or ports: restart the hub to apply those")
            continue
        logger.info("config changed: applying")
        for listener, fresh in zip(listeners, sites, strict=True):
            listener.site.local[:] = fresh.local
            listener.site.config = fresh.config
            listener.invoker.reconfigure(fresh.config)
        if listeners[0].invoker.oauth is not None:
            listeners[0].invoker.oauth.reconfigure(config)  # (one for the process; a new oauth: server needs a restart)
        await supervisor.apply(servers)


def _fingerprint(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None
