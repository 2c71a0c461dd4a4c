"""The one call path: every face (HTTP, the runner, the CLI; next MCP and jobs) calls tools through it.

    who is calling → may they → rate limit → validate → call the server → map the result → metrics + audit

A face translates its protocol into a `Call` and the `Outcome` back: status, JSON body and headers (the
one error shape on failure), plus the server's own `CallToolResult` where a local server answered, for
faces that speak MCP. The invoker never raises for a call that failed; it answers it.

One `Invoker` per listener (an instance of a multi-instance config): its config and authenticator
(replaced on reload), the servers it serves (local handles and mounted ones, behind one `ToolServer`
protocol), its rate-limit buckets, metrics and validator cache. `shut_down()` answers every call in
flight 503 at once, and every call after it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

import anyio
from mcp import MCPError
from mcp.types import CallToolResult, Tool

from mcphub import resources, results, user_servers
from mcphub.auth import Authenticator, Principal
from mcphub.config import HubConfig
from mcphub.errors import BadUpstreamResponse, Forbidden, HubError, NotFound, ServerUnavailable, ToolCallFailed
from mcphub.logs import printable
from mcphub.metrics import HubMetrics
from mcphub.oauth import OAuth
from mcphub.ratelimit import ConcurrencyLimiter, Limiter, RateLimiter
from mcphub.state import SharedRateLimiter, StateStore
from mcphub.supervisor import ServerHandle
from mcphub.toolserver import BackChannel, CallContext, Json, ProgressFn, Relayed, State, ToolServer
from mcphub.validation import ArgumentValidator, parse_body, sendable, unsendable

logger = logging.getLogger(__name__)
# The audit trail: one line per tool call (who, server/tool, status, duration; arguments only with
# hub.log_arguments), also as `record.audit` (a dict) for structured handlers. Never a key or a token.
access_logger = logging.getLogger("mcphub.access")

MAX_LOGGED_ARGUMENTS = 2000  # characters of JSON, with hub.log_arguments
SHUTDOWN_RETRY_AFTER = 5  # seconds a client is told to wait when the hub stops under it (a restart)
CLIENT_CLOSED = 499  # nginx's status for "client closed request", used in logs and metrics only

Catalog = Callable[[], Mapping[str, ToolServer]]  # the servers a hub serves now (they come and go on reload)


@dataclass(frozen=True, slots=True)
class Call:
    """One tool call, as a face hands it over. `arguments` is the parsed object; or `body` is the raw
    request body, parsed here (so a bad body is a 422 like any other argument error). `authorization`
    is the caller's own header, forwarded only to a mounted sibling hub that shares this hub's auth."""

    principal: Principal
    server: str
    tool: str
    arguments: Json = None
    body: bytes | None = None
    authorization: str | None = None
    read_body: Callable[[], Awaitable[bytes]] | None = None  # the body, read once the call may go ahead
    face: str = "http"  # which face took the call: a metrics label
    progress: ProgressFn | None = None  # where the server's progress notifications go (the MCP face)
    timeout: float | None = None  # seconds, instead of the server's `timeout` (jobs: its `job_timeout`)
    on_call: Callable[[], None] | None = None  # told once the call goes to the server (jobs answer 202 then)
    back_channel: BackChannel | None = None  # where the server's elicitation/sampling requests go (MCP face)


@dataclass(frozen=True, slots=True)
class Ask:
    """A request for a server's resources or prompts (`Invoker.ask`): `uri` for resources/read, `name`
    and `arguments` for prompts/get."""

    principal: Principal
    server: str
    method: resources.Method
    uri: str | None = None
    name: str | None = None
    arguments: dict[str, str] | None = None
    authorization: str | None = None
    face: str = "http"
    back_channel: BackChannel | None = None


@dataclass(slots=True)
class Outcome:
    status: int
    body: Json
    headers: Mapping[str, str] = field(default_factory=dict)
    result: CallToolResult | None = None  # a local server's own result (its `isError` ones too)
    error_type: str | None = None
    mcp_error: MCPError | None = None  # the server's own JSON-RPC error answer (the MCP face passes it on)
    answer: resources.Answer | None = None  # a resources/prompts request's answer (`Invoker.ask`)

    @classmethod
    def failed(cls, error: HubError, result: CallToolResult | None = None,
               mcp_error: MCPError | None = None) -> Outcome:
        return cls(error.status_code, error.body(), error.headers(), result, error.type, mcp_error)


@dataclass(slots=True)
class _Arguments:
    """A call's arguments once parsed (None until then): what the audit line shows with hub.log_arguments."""

    value: Json


@dataclass
class _View:
    """What a call needs from config: replaced as a whole on reload."""

    config: HubConfig
    auth: Authenticator


class Invoker:
    def __init__(self, config: HubConfig, servers: Catalog, *, api_keys: tuple[str, ...] = (),
                 oauth: OAuth | None = None) -> None:
        self._api_keys = api_keys
        self._view = _View(config, Authenticator(config.auth, extra_keys=api_keys))
        self.servers = servers
        self.metrics = HubMetrics(servers)
        # hub.state: buckets in Redis, shared with other replicas (chosen at start; a reload keeps it)
        self.state = None if config.hub.state is None else StateStore(
            config.hub.state, config.hub.state_failure, on_error=self.metrics.state_error)
        # outlives reloads: a limit that stays the same keeps its bucket
        self.limiter: Limiter = RateLimiter() if self.state is None else SharedRateLimiter(self.state)
        self.concurrency = ConcurrencyLimiter()
        self.oauth = oauth  # users' own OAuth connections, shared by the process's listeners (None: no oauth:)
        self._validator = ArgumentValidator()
        self._closing = False
        self._in_flight: set[anyio.CancelScope] = set()

    @property
    def config(self) -> HubConfig:
        return self._view.config

    @property
    def auth(self) -> Authenticator:
        return self._view.auth

    def reconfigure(self, config: HubConfig) -> None:
        if (config.hub.state, config.hub.state_failure) != (self.config.hub.state, self.config.hub.state_failure):
            logger.warning("hub.state and hub.state_failure take effect at the next start, not on reload")
        self._view = _View(config, Authenticator(config.auth, extra_keys=self._api_keys))

    def shut_down(self) -> None:
        """The process is stopping: answer every call in flight, and every new one, 503 at once."""
        self._closing = True
        for scope in list(self._in_flight):
            scope.cancel()

    # ---------------------------------------------------------------------------------- the path

    async def authenticate(self, authorization: str | None, *, server: str, tool: str,
                           headers: Mapping[str, str] | None = None) -> Principal:
        """Who is calling `server`/`tool` (`headers`: the request's, where a key's front end may name
        its user). A refusal (401, or 503 when the identity provider cannot be reached) is audited here,
        then raised for the face to answer."""
        try:
            return await self.auth.require_async(authorization, headers)
        except HubError as exc:
            access_logger.info("- %s/%s %d", printable(server), printable(tool), exc.status_code,
                               extra={"audit": {"principal": None, "server": server, "tool": tool,
                                                "status": exc.status_code}})
            raise

    def server(self, name: str, servers: Mapping[str, ToolServer] | None = None,
               principal: Principal | None = None) -> ToolServer:
        """The server called `name` (of `servers`, default: what the hub serves now); else NotFound,
        listing the servers `principal` may use (all when None)."""
        servers = self.servers() if servers is None else servers
        found = servers.get(name)
        if found is None:
            names = sorted(n for n in servers if principal is None or principal.may_use_server(n))
            raise NotFound(f"no server named '{name}' (servers: {', '.join(names) or 'none'})", server=name)
        return found

    async def invoke(self, call: Call) -> Outcome:
        """Run `call` as its principal and answer it. A cancellation from outside (the client hung up)
        is audited as 499 and propagates; `shut_down()` ends the call with a 503 answer."""
        started = time.perf_counter()
        servers = self.servers()  # one look for the whole call: the catalog is built anew each time
        arguments = _Arguments(call.arguments)  # as far as the call got to parse them, for the audit line
        outcome: Outcome | None = None
        if not self._closing:
            try:
                with anyio.CancelScope() as scope:
                    self._in_flight.add(scope)
                    try:
                        outcome = await self._held(call, servers, arguments)
                    finally:
                        self._in_flight.discard(scope)
            except anyio.get_cancelled_exc_class():
                self._record(call, servers, arguments.value, CLIENT_CLOSED, None, started, "client closed")
                raise
        if outcome is None:  # the hub is stopping (our own scope was cancelled, or it had stopped already)
            error = ServerUnavailable("the hub is shutting down; retry shortly", retry_after=SHUTDOWN_RETRY_AFTER,
                                      server=call.server, tool=call.tool)
            outcome = Outcome.failed(error)
            self._record(call, servers, arguments.value, outcome.status, outcome.error_type, started, "hub stopping")
            return outcome
        self._record(call, servers, arguments.value, outcome.status, outcome.error_type, started)
        return outcome

    async def _held(self, call: Call, servers: Mapping[str, ToolServer], parsed: _Arguments) -> Outcome:
        """`_run` within the caller's share of calls in flight (hub.limits.max_concurrent_calls), else 429."""
        principal = call.principal
        try:
            slot = self.concurrency.hold(principal.audit_name, self.config.hub.limits.max_concurrent_calls,
                                         label=f"credential '{principal.name}'", server=call.server, tool=call.tool)
            with slot:
                return await self._run(call, servers, parsed)
        except HubError as exc:  # only the slot's own refusal: _run answers its errors
            return Outcome.failed(exc)

    async def _run(self, call: Call, servers: Mapping[str, ToolServer], parsed: _Arguments) -> Outcome:
        arguments = call.arguments
        try:
            server = self.server(call.server, servers, call.principal)
            call.principal.check(call.server)
            server = await self._own(server, call.principal)
            tool = _tool(server, call.tool, call.principal)
            call.principal.check(call.server, call.tool)
            await self.limiter.take(self.auth.limits_for(call.principal, call.server), server=call.server,
                                    tool=call.tool)
            if call.read_body is not None:  # read only now: a refused call costs no body (hub.limits)
                call = dataclasses.replace(call, body=await call.read_body())
            if call.body is not None:
                arguments = parsed.value = _parse_body(call.body, call.server, call.tool)
            if server.hub is None:  # the hub that runs a mounted server validates its arguments
                arguments = self._validator.check(call.server, server.version, tool, arguments)
            else:  # but what this hub cannot send is refused here, for every server
                arguments = sendable(arguments, server=call.server, tool=call.tool)
            context = CallContext(caller=call.principal.audit_name, authorization=call.authorization,
                                  progress=call.progress, timeout=call.timeout, back_channel=call.back_channel,
                                  user_headers=call.principal.vouchers)
            if call.on_call is not None:
                call.on_call()
            try:
                answer = await server.call(call.tool, arguments, context)
            except MCPError as exc:
                return Outcome.failed(results.from_mcp_error(exc, server=call.server, tool=call.tool), mcp_error=exc)
        except HubError as exc:
            if exc.server is None:
                exc.server = call.server
            return Outcome.failed(exc)
        if isinstance(answer, Relayed):  # another hub's answer passes through unchanged
            error_type = _error_type(answer.body) if answer.status >= 400 else None
            outcome = Outcome(answer.status, answer.body, answer.headers, error_type=error_type)
        else:
            try:
                outcome = Outcome(200, results.to_body(answer, server=call.server, tool=call.tool), result=answer)
            except ToolCallFailed as exc:
                outcome = Outcome.failed(exc, answer)
        fault = unsendable(outcome.body)  # found here, so that metrics and audit say what the caller gets
        if fault is not None:
            return Outcome.failed(BadUpstreamResponse(
                f"server '{call.server}' answered tool '{call.tool}' with something that cannot be sent on as "
                f"JSON: {fault}", server=call.server, tool=call.tool))
        return outcome

    async def _own(self, server: ToolServer, principal: Principal) -> ToolServer:
        """A server that runs per user (user_servers.py): the caller's own instance of it; 403 for a
        caller without the secrets it needs."""
        if isinstance(server, ServerHandle) and server.users is not None:
            user = user_servers.user_of(principal)
            if self.oauth is not None and user is not None and self.oauth.applies_to(server.name):
                await self.oauth.require(server.name, user)  # not connected: 403 with a link (oauth.py)
            return await server.users.for_caller(principal, self.config.auth.users)
        return server

    # ------------------------------------------------------------------------ resources and prompts

    async def ask(self, ask: Ask) -> Outcome:
        """A resources/prompts request, on the same path as a call: scope (see resources.py for who may),
        rate limit (reads and gets; lists are free, like tools/list), metrics and the audit line (the
        method where a tool name would be; the URI or prompt only with hub.log_arguments)."""
        started = time.perf_counter()
        servers = self.servers()
        call = Call(ask.principal, ask.server, ask.method, face=ask.face)  # what _record reads
        shown: Json = {k: v for k, v in (("uri", ask.uri), ("name", ask.name), ("arguments", ask.arguments))
                       if v is not None}
        try:
            outcome = await self._ask(ask, servers)
        except anyio.get_cancelled_exc_class():
            self._record(call, servers, shown, CLIENT_CLOSED, None, started, "client closed")
            raise
        self._record(call, servers, shown, outcome.status, outcome.error_type, started)
        return outcome

    async def _ask(self, ask: Ask, servers: Mapping[str, ToolServer]) -> Outcome:
        target = ask.uri or ask.name or ""
        answer: resources.Answer
        try:
            if self._closing:
                raise ServerUnavailable("the hub is shutting down; retry shortly", retry_after=SHUTDOWN_RETRY_AFTER)
            server = self.server(ask.server, servers)
            ask.principal.check(ask.server)
            server = await self._own(server, ask.principal)
            if ask.principal.tools is not None:
                raise Forbidden(f"credential '{ask.principal.name}' is limited to some tools: it may not use "
                                f"resources or prompts of server '{ask.server}'", server=ask.server)
            context = CallContext(caller=ask.principal.audit_name, authorization=ask.authorization,
                                  back_channel=ask.back_channel, user_headers=ask.principal.vouchers)
            if ask.method in ("resources/read", "prompts/get"):
                await self.limiter.take(self.auth.limits_for(ask.principal, ask.server), server=ask.server,
                                        tool=ask.method)
            try:
                if ask.method == "resources/list":
                    answer = await server.list_resources(context)
                elif ask.method == "resources/templates/list":
                    answer = await server.list_resource_templates(context)
                elif ask.method == "prompts/list":
                    answer = await server.list_prompts(context)
                elif ask.method == "resources/read":
                    answer = await server.read_resource(target, context)
                else:
                    prompts = {p.name: p for p in await server.list_prompts(context)}
                    if target not in prompts:
                        raise NotFound(f"server '{ask.server}' has no prompt '{target}' "
                                       f"(prompts: {', '.join(sorted(prompts)) or 'none'})", server=ask.server)
                    resources.check_prompt_arguments(prompts[target], ask.arguments or {}, server=ask.server)
                    answer = await server.get_prompt(target, ask.arguments, context)
            except MCPError as exc:
                error = resources.from_mcp_error(exc, ask.method, server=ask.server, target=target)
                return Outcome.failed(error, mcp_error=exc)
        except HubError as exc:
            if exc.server is None:
                exc.server = ask.server
            return Outcome.failed(exc)
        return Outcome(200, resources.to_body(ask.method, answer), answer=answer)

    # ------------------------------------------------------------------------------ metrics, audit

    def _record(self, call: Call, servers: Mapping[str, ToolServer], arguments: Json, status: int,
                error_type: str | None, started: float, note: str = "") -> None:
        elapsed = time.perf_counter() - started
        server = servers.get(call.server)
        if server is not None:  # bounded label values: configured servers and their tools only
            label = call.tool if call.tool in server.tools or call.tool in resources.METHODS else "(unknown)"
            self.metrics.observe(call.server, label, status,
                                 elapsed, error_type, face=call.face)
        who = call.principal.audit_name
        shown_server, shown_tool = printable(call.server), printable(call.tool)  # one line, whatever the path held
        record: dict[str, Json] = {"principal": who, "server": call.server, "tool": call.tool, "status": status,
                                   "duration_ms": round(elapsed * 1000, 1)}
        suffix = f" ({note})" if note else ""
        if not self.config.hub.log_arguments:
            access_logger.info("%s %s/%s %d %.1fms%s", who, shown_server, shown_tool, status, elapsed * 1000, suffix,
                               extra={"audit": record})
            return
        shown = printable(json.dumps(arguments, ensure_ascii=False, default=str))
        if len(shown) > MAX_LOGGED_ARGUMENTS:
            shown = shown[:MAX_LOGGED_ARGUMENTS] + "..."
        record["arguments"] = arguments
        access_logger.info("%s %s/%s %d %.1fms %s%s", who, shown_server, shown_tool, status, elapsed * 1000, shown,
                           suffix, extra={"audit": record})


def _tool(server: ToolServer, name: str, principal: Principal) -> Tool:
    found = server.tools.get(name)
    if found is not None:
        return found
    if server.state is not State.READY and not server.tools:
        raise server.unavailable(name)  # never listed yet: cannot tell a typo from a tool
    callable_tools = sorted(t for t in server.tools if principal.may_call(server.name, t))  # only what it may call
    raise NotFound(f"server '{server.name}' has no tool '{name}' (tools: {', '.join(callable_tools) or 'none'})",
                   server=server.name, tool=name)


def _parse_body(raw: bytes, server: str, tool: str) -> Json:
    return parse_body(raw, server=server, tool=tool)  # bounded depth and size, before it is built


def _error_type(body: Json) -> str:
    try:
        return str(body["error"]["type"])
    except (KeyError, TypeError):
        return "unknown"
