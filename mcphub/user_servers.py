"""Servers that run once per user: per-user secrets (`${user.NAME}`) and per-user auth sources.

A server whose `env` (stdio) or `headers` (sse / streamable-http) use `${user.NAME}`, or to which a
registered `UserAuthSource` applies (OAuth to the upstream), is *per-user*. Its `ServerHandle` in the
supervisor is then the **listing instance**: started like any server but with every env entry or header
that names a `${user.…}` left out (never an empty value), it gives the server's tools to the specs,
`/mcp` tools/list, `/readyz` and `mcphub tools`, and is never used for a call. When it cannot start
without a user's credentials (a remote that wants a token), the tools of the first user instance that
lists them are adopted instead. Calls go to the calling user's own instance, held by the handle's
`UserPool`:

    started on the user's first call (a ServerHandle of its own, run by the same Supervisor: the same
      connect, restart with backoff, stdio launcher and shutdown as every server)
    stopped after the server's `idle_timeout` seconds without a call
    at most `max_users` at once: a new user's instance stops the least recently used idle one first;
      when every one is busy with a call, the new user gets 503 (server_unavailable, Retry-After)
    restarted with the new values when the user's secrets change (a reload), once it is idle

Who is a user: a forwarded user (`Principal.kind == "user"`, named by their front end; see auth.py).
Their secrets are `auth.users.<id>.secrets`, read at each call (so a reload applies). A caller who is no
forwarded user (a plain key, a JWT, anonymous), or a user without every secret the server names, gets 403
naming the missing secret and the server: a call is never made with an empty token. A secret goes only
into its own user's instance config (env of that process, headers of that connection); it is never
logged, and never shown in an error, a spec, `/readyz` or a metric label.

The interface for auth sources (OAuth, issue #16): register one with `Supervisor(user_auth=[source])`.

    class UserAuthSource(Protocol):
        def applies_to(self, server: str) -> bool
            # True: `server` is per-user because of this source (even without ${user.…})
        def auth_for(self, server: str, user: str) -> httpx2.Auth
            # the user's auth for their connection to an HTTP server; raises a HubError (401/403 with a
            # link to connect) when the user has none. Asked at each call, so a user who disconnected is
            # refused at once; the first answer's Auth serves the connection while it lives (it refreshes
            # its own tokens). `UserPool.forget(user)` stops a user's instance (e.g. after a revoke).

The first source that applies to a server is its source. Stdio servers take no `auth`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator, Callable, Coroutine, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import anyio
import httpx2
from mcp.types import GetPromptResult, Prompt, ReadResourceResult, Resource, ResourceTemplate, Tool

from mcphub.auth import Principal
from mcphub.config import USER_SECRET, HttpServer, HubConfig, ServerConfig, StdioServer, UserConfig
from mcphub.errors import Forbidden, ServerUnavailable
from mcphub.toolserver import Answer, CallContext, Json, State, ToolServer

logger = logging.getLogger(__name__)

FULL_RETRY_AFTER = 5  # seconds a user is told to wait when every one of max_users instances is busy


class UserAuthSource(Protocol):
    """Where a per-user HTTP connection's `httpx2.Auth` comes from (see the module docstring)."""

    def applies_to(self, server: str) -> bool: ...

    def auth_for(self, server: str, user: str) -> httpx2.Auth: ...


class Launch(Protocol):
    """What a pool needs of the supervisor: run an instance of a server (returns once it is ready or has
    failed once, like every server's start), and stop one (bounded, like every server's stop)."""

    async def start_instance(self, name: str, config: ServerConfig, auth: httpx2.Auth | None) -> ToolServer: ...

    async def stop_instance(self, server: ToolServer) -> None: ...


# start a background task in the supervisor's task group
Spawn = Callable[[Callable[[], Coroutine[Any, Any, None]]], object]


# ----------------------------------------------------------------------------------------- config


def secrets_used(config: ServerConfig) -> frozenset[str]:
    """The NAMEs of `${user.NAME}` in a server's env (stdio) or headers (HTTP)."""
    return frozenset(m.group(1) for value in _values(config) for m in USER_SECRET.finditer(value))


def _values(config: ServerConfig) -> list[str]:
    return list(config.env.values()) if isinstance(config, StdioServer) else list(config.headers.values())


def for_user(config: ServerConfig, secrets: Mapping[str, str]) -> ServerConfig:
    """`config` with each `${user.NAME}` replaced by `secrets[NAME]` (every one is there: `UserPool.for_caller`
    refuses a user without one)."""
    def fill(value: str) -> str:
        return USER_SECRET.sub(lambda m: secrets[m.group(1)], value)

    if isinstance(config, StdioServer):
        return config.model_copy(update={"env": {k: fill(v) for k, v in config.env.items()}})
    return config.model_copy(update={"headers": {k: fill(v) for k, v in config.headers.items()}})


def for_listing(config: ServerConfig) -> ServerConfig:
    """`config` for the listing instance: every env entry or header that names a `${user.…}` left out."""
    if isinstance(config, StdioServer):
        return config.model_copy(update={"env": {k: v for k, v in config.env.items() if not USER_SECRET.search(v)}})
    return config.model_copy(update={"headers": {k: v for k, v in config.headers.items()
                                                 if not USER_SECRET.search(v)}})


def user_of(principal: Principal) -> str | None:
    """The user a caller is, for per-user servers: a forwarded user's id; None for anyone else."""
    return principal.name if principal.kind == "user" else None


def source_for(name: str, sources: Sequence[UserAuthSource]) -> UserAuthSource | None:
    return next((s for s in sources if s.applies_to(name)), None)


def is_per_user(name: str, config: ServerConfig, sources: Sequence[UserAuthSource]) -> bool:
    """Whether `name` runs per user: it names a `${user.…}`, or it is an HTTP server an auth source applies to."""
    return bool(secrets_used(config)) or (isinstance(config, HttpServer) and source_for(name, sources) is not None)


# ------------------------------------------------------------------------------------------- pool


@dataclass(eq=False)
class _Entry:
    user: str
    config: ServerConfig  # with the user's secrets filled in (never logged: its repr hides env/headers)
    server: ToolServer | None = None
    ready: anyio.Event = field(default_factory=anyio.Event)  # started (ready or failed once), or given up
    in_flight: int = 0  # calls holding it (from admission to their answer): never stopped while > 0
    last_used: float = field(default_factory=anyio.current_time)


class UserPool:
    """The per-user instances of one server (see the module docstring)."""

    def __init__(self, listing: ToolServer, config: ServerConfig, *, launch: Launch, spawn: Spawn,
                 source: UserAuthSource | None, adopt_tools: Callable[[Mapping[str, Tool]], None]) -> None:
        self.listing = listing
        self.config = config
        self.secrets = secrets_used(config)
        self.source = source if isinstance(config, HttpServer) else None
        self._launch = launch
        self._background = spawn
        self._adopt_tools = adopt_tools
        self._entries: dict[str, _Entry] = {}
        self._lock = anyio.Lock()  # admissions and evictions, one at a time
        self._changed = anyio.Event()  # wakes the reaper: a call ended, an instance started
        self._reaper = anyio.CancelScope()
        self._closed = False
        spawn(self._reap)

    @property
    def name(self) -> str:
        return self.listing.name

    @property
    def running(self) -> int:
        """User instances running now (starting ones included)."""
        return len(self._entries)

    def users(self) -> list[str]:
        """Who has an instance now (starting ones included): for `mcphub users`, never in a metric."""
        return sorted(self._entries)

    # ------------------------------------------------------------------------------ the caller's view

    async def for_caller(self, principal: Principal, users: Mapping[str, UserConfig]) -> ToolServer:
        """The server as `principal` calls it: their own instance. Forbidden (403) for a caller who is no
        user with every secret it names, or whom its auth source refuses."""
        user = user_of(principal)
        names = ", ".join(sorted(self.secrets))
        if user is None:
            what = f"the secret {names}" if self.secrets else "a connection of their own"
            raise Forbidden(f"server '{self.name}' runs with each user's own credentials and needs {what}: "
                            f"credential '{principal.name}' is not a forwarded user (call through a front end "
                            "that names its users, with a key that has forwarded_user)", server=self.name)
        secrets = users[user].secrets if user in users else {}
        missing = sorted(n for n in self.secrets if not secrets.get(n))
        if missing:
            listed = "is listed without it" if user in users else "is not listed under auth.users"
            raise Forbidden(f"server '{self.name}' needs the user's own secret {', '.join(missing)}, and user "
                            f"'{user}' {listed} (set auth.users.<user>.secrets.{missing[0]} in the hub's config)",
                            server=self.name)
        auth = self.source.auth_for(self.name, user) if self.source is not None else None
        view = _UserView(self, user, for_user(self.config, secrets) if self.secrets else self.config, auth)
        if not self.listing.tools:  # nothing listed yet (the listing instance cannot start alone): theirs will
            async with self._use(view.user, view.config, auth):
                pass
        return view

    def forget(self, user: str) -> None:
        """Stop `user`'s instance now (their credentials were revoked); calls in flight on it end with it."""
        entry = self._entries.pop(user, None)
        if entry is not None and entry.server is not None:
            self._stop_later(entry.server)

    # ---------------------------------------------------------------------------------- admission

    @asynccontextmanager
    async def _use(self, user: str, config: ServerConfig, auth: httpx2.Auth | None) -> AsyncIterator[ToolServer]:
        """Hold `user`'s instance (started if need be) for one call."""
        entry = await self._admit(user, config, auth)
        try:
            await entry.ready.wait()  # bounded: a start ends ready or failed within its connect_timeout
            if entry.server is None:
                raise self.listing.unavailable(None, "the user's instance could not be started")
            yield entry.server
        finally:
            entry.in_flight -= 1
            entry.last_used = anyio.current_time()
            self._changed.set()

    async def _admit(self, user: str, config: ServerConfig, auth: httpx2.Auth | None) -> _Entry:
        """`user`'s entry, held for one call. Stopping an instance (secrets changed, or the least recently
        used one making room) is left to the new instance's start task: never awaited under the lock, where
        it would hold up every other user's call for its stop grace."""
        async with self._lock:
            if self._closed:
                raise self.listing.unavailable(None, "the server is stopping")
            replaced: ToolServer | None = None
            entry = self._entries.get(user)
            if entry is not None and entry.config != config:
                if entry.in_flight or not entry.ready.is_set():
                    # never a call on an instance holding other secrets (a reload changed them, or two
                    # instances of the hub name this user with different ones): wait for it to be idle
                    raise ServerUnavailable(
                        f"server '{self.name}': user {user}'s instance is busy with calls made with other "
                        "secrets (changed by a reload, or set differently by another instance); retry shortly",
                        retry_after=FULL_RETRY_AFTER, server=self.name)
                logger.info("'%s': user %s's secrets changed; restarting their instance", self.name, user)
                replaced = self._detach(entry)
                entry = None
            if entry is None:
                if len(self._entries) >= self.config.max_users:
                    idle = [e for e in self._entries.values() if e.in_flight == 0 and e.ready.is_set()]
                    if not idle:
                        raise ServerUnavailable(
                            f"server '{self.name}' runs one instance per user and all {self.config.max_users} "
                            f"(its max_users) are busy with calls; retry shortly",
                            retry_after=FULL_RETRY_AFTER, server=self.name)
                    lru = min(idle, key=lambda e: e.last_used)
                    logger.info("'%s': stopping the least recently used user instance to make room (max_users %d)",
                                self.name, self.config.max_users)
                    replaced = self._detach(lru)
                entry = _Entry(user, config)
                self._entries[user] = entry
                self._start(entry, auth, replaced)
            entry.in_flight += 1
            return entry

    def _start(self, entry: _Entry, auth: httpx2.Auth | None, replaced: ToolServer | None) -> None:
        """Start `entry`'s instance in the background, once `replaced` (the instance it takes the place of,
        if any) has stopped: at most max_users instances run at once."""
        async def start() -> None:
            try:
                if replaced is not None:
                    await self._launch.stop_instance(replaced)
                server = await self._launch.start_instance(self.name, entry.config, auth)
                if self._closed or self._entries.get(entry.user) is not entry:  # closed or forgotten meanwhile
                    await self._launch.stop_instance(server)
                    return
                entry.server = server
                logger.info("'%s': started an instance for user %s (%d running)", self.name, entry.user,
                            len(self._entries))
                if entry.server.tools and not self.listing.tools:
                    self._adopt_tools(entry.server.tools)
            finally:
                if entry.server is None and self._entries.get(entry.user) is entry:
                    del self._entries[entry.user]
                entry.ready.set()
                self._changed.set()

        self._background(start)

    def _detach(self, entry: _Entry) -> ToolServer | None:
        """Take `entry` out of the pool (under the lock); its instance, for the caller to stop."""
        if self._entries.get(entry.user) is entry:
            del self._entries[entry.user]
        return entry.server

    def _stop_later(self, server: ToolServer) -> None:
        async def stop() -> None:
            await self._launch.stop_instance(server)

        self._background(stop)

    # ------------------------------------------------------------------------------- idle, close

    async def _reap(self) -> None:
        """Stop each instance that has had no call for idle_timeout seconds."""
        idle_timeout = self.config.idle_timeout
        with self._reaper:
            while True:
                self._changed = anyio.Event()
                now = anyio.current_time()
                idle = [e for e in self._entries.values() if e.in_flight == 0 and e.ready.is_set()]
                for entry in [e for e in idle if now - e.last_used >= idle_timeout]:
                    async with self._lock:
                        if entry.in_flight == 0 and self._entries.get(entry.user) is entry:
                            logger.info("'%s': stopping user %s's instance (no call for %gs)", self.name,
                                        entry.user, idle_timeout)
                            server = self._detach(entry)
                            if server is not None:
                                self._stop_later(server)
                deadlines = [e.last_used + idle_timeout for e in self._entries.values()
                             if e.in_flight == 0 and e.ready.is_set()]
                wait = max(0.0, min(deadlines) - anyio.current_time()) if deadlines else math.inf
                with anyio.move_on_after(wait):
                    await self._changed.wait()

    async def close(self) -> None:
        """Stop every user instance (the server is being stopped), in parallel, each bounded."""
        async with self._lock:
            self._closed = True
            self._reaper.cancel()
            entries, self._entries = list(self._entries.values()), {}
        async with anyio.create_task_group() as stoppers:
            for entry in entries:
                if entry.server is not None:
                    stoppers.start_soon(self._launch.stop_instance, entry.server)


class _UserView:
    """A per-user server as one user calls it: the listing instance's face, the user's instance's calls."""

    def __init__(self, pool: UserPool, user: str, config: ServerConfig, auth: httpx2.Auth | None) -> None:
        self._pool = pool
        self._listing = pool.listing
        self.user = user
        self.config = config
        self._auth = auth

    # what the call path reads: the listing instance's (its tools are every user's tools)
    @property
    def name(self) -> str:
        return self._listing.name

    @property
    def state(self) -> State:
        return self._listing.state if self._listing.tools or self._own() is None else self._own_state()

    @property
    def tools(self) -> Mapping[str, Tool]:
        own = self._own()
        return self._listing.tools or (own.tools if own is not None else {})

    @property
    def version(self) -> int:
        return self._listing.version

    @property
    def last_error(self) -> str | None:
        return self._listing.last_error

    @property
    def restarts(self) -> int:
        return self._listing.restarts

    @property
    def description(self) -> str | None:
        return self._listing.description

    @property
    def region(self) -> str | None:
        return self._listing.region

    @property
    def transport(self) -> str:
        return self._listing.transport

    @property
    def required(self) -> bool:
        return self._listing.required

    @property
    def hub(self) -> str | None:
        return None

    @property
    def via(self) -> Sequence[str]:
        return ()

    def _own(self) -> ToolServer | None:
        entry = self._pool._entries.get(self.user)
        return entry.server if entry is not None else None

    def _own_state(self) -> State:
        own = self._own()
        return own.state if own is not None else State.STARTING

    def unavailable(self, tool: str | None, reason: str | None = None) -> ServerUnavailable:
        return self._listing.unavailable(tool, reason)

    def declares(self) -> frozenset[str]:
        return self._listing.declares()

    # what goes to the user's own instance
    async def call(self, tool: str, arguments: dict[str, Json], context: CallContext) -> Answer:
        async with self._pool._use(self.user, self.config, self._auth) as server:
            return await server.call(tool, arguments, context)

    async def list_resources(self, context: CallContext) -> list[Resource]:
        async with self._pool._use(self.user, self.config, self._auth) as server:
            return await server.list_resources(context)

    async def list_resource_templates(self, context: CallContext) -> list[ResourceTemplate]:
        async with self._pool._use(self.user, self.config, self._auth) as server:
            return await server.list_resource_templates(context)

    async def read_resource(self, uri: str, context: CallContext) -> ReadResourceResult:
        async with self._pool._use(self.user, self.config, self._auth) as server:
            return await server.read_resource(uri, context)

    async def list_prompts(self, context: CallContext) -> list[Prompt]:
        async with self._pool._use(self.user, self.config, self._auth) as server:
            return await server.list_prompts(context)

    async def get_prompt(self, name: str, arguments: dict[str, str] | None, context: CallContext) -> GetPromptResult:
        async with self._pool._use(self.user, self.config, self._auth) as server:
            return await server.get_prompt(name, arguments, context)



def undefined_secrets(config: HubConfig, source: str) -> list[str]:
    """`mcphub check` warnings: a `${user.NAME}` that no user of any auth (top level or an instance's) has."""
    auths = [config.auth, *(inst.auth for inst in config.instances.values() if inst.auth is not None)]
    defined = {name for auth in auths for user in auth.users.values() for name in user.secrets}
    warnings = []
    for server, cfg in config.servers.items():
        for name in sorted(secrets_used(cfg) - defined):
            warnings.append(f"{source}: servers.{server}: ${{user.{name}}} is a secret no user has (add it as "
                            f"auth.users.<id>.secrets.{name}); until then every call to '{server}' is refused 403")
    return warnings
