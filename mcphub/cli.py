"""`mcphub` command line: argv → config → logging → run. The only module that touches sys.argv,
sys.exit and log handlers.

Exit codes: 0 ok; 1 the command ran and found a problem (a server failed, a tool call failed);
2 bad config or arguments (one message, no traceback).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.util
import json
import os
import re
import secrets
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from mcphub import __version__, cli_users, schema, user_servers
from mcphub.auth import Principal, user_principal
from mcphub.config import (
    DEFAULT_CONFIG_NAME,
    HubConfig,
    default_config_path,
    instance_servers,
    key_hash,
    load_config,
    parse_config,
)
from mcphub.errors import ConfigError, HubError
from mcphub.federation import RemoteMount
from mcphub.invoker import Call
from mcphub.launcher import Launcher
from mcphub.logs import configure_logging, plural
from mcphub.oauth import OAuthServers
from mcphub.serve import ListenError, ServeOptions, plan, running, serve
from mcphub.supervisor import Supervisor
from mcphub.toolserver import State
from mcphub.transports import launchable

if TYPE_CHECKING:  # rich is for the commands that print (~2 MiB): `serve` never loads it (tests/test_cost_fences.py)
    from rich.console import Console

    from mcphub.runner.messages import ToolCall, ToolResult  # (the runner: `chat` alone, as rich)

API_KEY_ENV = "MCPHUB_API_KEY"
RUNNER_DOCS = 'README.md, section "runner" under "Config reference"'  # tests check that this section exists
CLI_PRINCIPAL = Principal(name="cli")  # `mcphub call` / `chat`: the config's owner, at the keyboard
_LAUNCHERS = {"uvx", "npx", "pipx", "bunx", "uv", "node", "deno", "docker", "python", "python3", "run"}
_PYTHON = re.compile(r"^python[0-9.]*$")  # python, python3, python3.11, as sys.executable often is
_UNWRAPPED = 10_000  # console width when stdout is not a terminal: wide enough that nothing wraps


def main(argv: Sequence[str] | None = None) -> None:
    # Everything imported so far lives as long as the process: out of every later collection (and, for
    # the launcher forked below, out of the pages a collection would copy). See __main__.py.
    gc.freeze()
    gc.enable()
    args = _parser().parse_args(argv)
    # `serve` forks its server launcher before anything else happens in this process: logging, the config
    # and its secrets, threads and the event loop all come later, so the launcher holds none of them.
    with Launcher.forked() if args.run is _serve else contextlib.nullcontext() as launcher:
        args.launcher = launcher
        configure_logging(_log_level(args))
        try:
            code = args.run(args)
        except ConfigError as exc:
            print(f"mcphub: {exc}", file=sys.stderr)
            code = 2
        except KeyboardInterrupt:
            code = 130
    sys.exit(code)


def _log_level(args: argparse.Namespace) -> str:
    """Commands that print results (`tools`, `check`, `call`, `keys`, `chat`) keep stdout for those and log
    only warnings to stderr unless -v; `serve` narrates its lifecycle."""
    if getattr(args, "log_level", None):
        return str(args.log_level)
    if getattr(args, "verbose", False) or args.run is _serve:
        return "info"
    return "warning"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mcphub", description="Serve MCP servers as authenticated OpenAPI tools.")
    parser.add_argument("--version", action="version", version=f"mcphub {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str, run: Any) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.set_defaults(run=run)
        p.add_argument("--log-level", choices=["debug", "info", "warning", "error"], default=None)
        if name != "serve":
            p.add_argument("-v", "--verbose", action="store_true",
                           help="log each server's start, stop and stderr to stderr (default: warnings only)")
        return p

    p = command("serve", "run the hub", _serve)
    _config_arg(p)
    p.add_argument("--instance", help="run one instance of an `instances:` config")
    p.add_argument("--host", help="bind address (default: hub.host, 127.0.0.1)")
    p.add_argument("--port", type=_port, help="port (default: hub.port, 8000)")
    p.add_argument("--api-key", action="append", default=[], metavar="KEY",
                   help=f"a key allowed to call everything (repeatable; also ${API_KEY_ENV})")
    p.add_argument("--allow-no-auth", action="store_true",
                   help="allow binding a non-loopback address with no credential configured")
    p.add_argument("--name", help="server name for the one-server form (default: from the command)")
    p.add_argument("stdio_command", nargs=argparse.REMAINDER, metavar="-- CMD ARG...",
                   help="serve this one stdio MCP server instead of a config file")

    p = command("check", "validate the config, start every server, lint tool schemas", _check)
    _config_arg(p)
    p.add_argument("--strict", action="store_true",
                   help="warnings (e.g. a tool description over OpenAI's 1024 characters) fail too")
    p = command("tools", "list servers, their state and tools", _tools)
    _config_arg(p)
    p = command("call", "call one tool and print the result", _call)
    _config_arg(p)
    p.add_argument("server")
    p.add_argument("tool")
    p.add_argument("--args", default="{}", metavar="JSON", help="the tool's arguments as a JSON object")
    p.add_argument("--user", metavar="ID", help="call as this user of auth.users (their scopes; a per-user server "
                                                "runs their own instance with their secrets)")

    p = command("chat", "tool-using chat through the runner (runner: in the config); a REPL without PROMPT", _chat)
    _config_arg(p)
    p.add_argument("--model", help="the backend's model (default: runner.model)")
    p.add_argument("prompt", nargs="?", metavar="PROMPT", help="one question; without it, read questions from stdin")

    p = command("users", "who is connected to which OAuth server, and whose per-user instances run (asks the hub)",
                _users)
    _config_arg(p)
    p.add_argument("--url", help="the running hub (default: hub.host, hub.port and hub.root_path of the config)")
    p.add_argument("--api-key", metavar="KEY", help=f"a key allowed every server (default: ${API_KEY_ENV})")
    p.add_argument("--connect", metavar="SERVER", help="print a connect link to this OAuth server for --user instead")
    p.add_argument("--user", help="the forwarded user (email, else id) the --connect link is for")

    keys_parser = sub.add_parser("keys", help="API keys", description="API keys: `mcphub keys new` makes one")
    keys_parser.set_defaults(run=lambda args: _usage(keys_parser))
    keys = keys_parser.add_subparsers(dest="keys_command", metavar="SUBCOMMAND")
    p = keys.add_parser("new", help="print a fresh key and the config line (hash only) to store")
    p.set_defaults(run=_keys_new)
    p.add_argument("-v", "--verbose", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--name", default="client")
    p.add_argument("--servers", default="*", help="comma-separated server names (default: all)")
    p.add_argument("--tools", default=None, help="comma-separated tool names (default: all)")
    return parser


def _usage(parser: argparse.ArgumentParser) -> int:
    """A command group without its subcommand (`mcphub keys`): its help, as a usage error."""
    parser.print_help(sys.stderr)
    return 2


def _console() -> Console:
    """Tables and marks on stdout. Piped (not a terminal) nothing is wrapped, so a long error stays on one
    line that grep and scripts can read."""
    from rich.console import Console

    return Console() if sys.stdout.isatty() else Console(width=_UNWRAPPED, soft_wrap=True)


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0-65535, got {port}")
    return port


def _config_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--config", type=Path, default=None,
                   help="config file (default: ./mcphub.yaml, else the packaged default)")


def _load(args: argparse.Namespace) -> tuple[HubConfig, Path]:
    path = args.config or default_config_path()
    return load_config(path), path


# ------------------------------------------------------------------------------------------- serve


def _serve(args: argparse.Namespace) -> int:
    command = [a for a in args.stdio_command if a != "--"] if args.stdio_command else []
    if command:
        if args.config is not None:
            raise ConfigError("give either -c FILE or -- CMD ARG..., not both")
        name = args.name or _name_from_command(command)
        config = parse_config(json.dumps({"servers": {name: {"transport": "stdio", "command": command[0],
                                                             "args": command[1:]}}}), source="command line")
        path = None
    else:
        config, path = _load(args)
        if args.instance is not None and args.instance not in config.instances:
            raise ConfigError(f"{path}: --instance {args.instance!r}: no such instance "
                              f"(instances: {', '.join(sorted(config.instances)) or 'none'})")
    if any(not key.strip() for key in args.api_key):
        # `--api-key "$UNSET"` must not count as a credential: it would open a non-loopback bind to all.
        raise ConfigError("--api-key: the key is empty (is the variable you passed set?)")
    env_key = os.environ.get(API_KEY_ENV, "").strip()
    keys = tuple(args.api_key) + ((env_key,) if env_key else ())
    options = ServeOptions(
        host=args.host,
        port=args.port,
        api_keys=keys,
        allow_no_auth=args.allow_no_auth,
        config_path=path,
        instance=args.instance,
    )
    if args.log_level is None:
        configure_logging(config.hub.log_level)
    launcher: Launcher | None = args.launcher
    if launcher is not None and not any(launchable(c) for c in config.servers.values()):
        launcher.close()  # nothing for it to fork (servers added by a reload then start by exec)
        launcher = None
    try:
        anyio.run(serve, config, options, launcher, backend_options=_loop_options())
    except* ListenError as group:  # a listener that failed once serving began; the servers are stopped
        raise group.exceptions[0] from None
    return 0


def _loop_options() -> dict[str, Any]:
    """uvloop where it is installed (Linux, macOS): less event-loop overhead per call."""
    return {"use_uvloop": True} if importlib.util.find_spec("uvloop") is not None else {}


def _name_from_command(command: list[str]) -> str:
    """`uvx mcp-server-time` → mcp-server-time; `python -m pkg.mod` → mod; `npx -y @scope/pkg` → pkg."""
    words = list(command)
    module = _python_module(words)
    if module is not None:
        candidate = module.rsplit(".", 1)[-1]
    else:
        rest = [w for w in words if not w.startswith("-")]
        candidate = next((w for w in rest if not _is_launcher(w)), rest[0] if rest else "server")
        candidate = Path(candidate.split("@", 1)[-1] if candidate.startswith("@") else candidate).name
        candidate = re.sub(r"\.(py|js|mjs|cjs|ts)$", "", candidate.split("@", 1)[0])
    name = re.sub(r"[^A-Za-z0-9_-]", "-", candidate).strip("-_")[:48]
    return name or "server"


def _is_launcher(word: str) -> bool:
    name = Path(word).name
    return name in _LAUNCHERS or bool(_PYTHON.match(name))


def _python_module(words: list[str]) -> str | None:
    """The module of `python [-u ...] -m pkg.mod ...`, else None."""
    if not _PYTHON.match(Path(words[0]).name):
        return None
    for i, word in enumerate(words[1:-1], start=1):
        if word == "-m":
            return words[i + 1]
        if not word.startswith("-"):
            return None
    return None


# ------------------------------------------------------------------------------ check, tools, call


def _check(args: argparse.Namespace) -> int:
    config, path = _load(args)
    console = _console()
    problems: list[str] = []
    warnings: list[str] = []
    notes: list[str] = []  # shown, never counted (not even by --strict)
    if not config.servers and not config.remotes:
        warnings.append(f"{path}: no servers configured; add one under servers:, e.g. "
                        "time: {transport: stdio, command: python, args: [-m, mcphub_servers.time]}")
    warnings.extend(user_servers.undefined_secrets(config, str(path)))

    async def run() -> None:
        async with Supervisor(config, user_auth=[OAuthServers(config)]) as supervisor:  # (oauth.py)
            _server_table(console, supervisor)
            names: dict[str, list[str]] = {}
            for handle in supervisor.servers.values():
                if handle.state is not State.READY:
                    problems.append(f"{handle.name}: {handle.state}: {handle.last_error}")
                for tool in handle.tools.values():
                    prefixed = schema.operation_id(f"{handle.name}_{tool.name}")
                    names.setdefault(prefixed, []).append(f"{handle.name}/{tool.name}")
                    # lint_tool's lines already start with "server/tool: "
                    problems.extend(schema.lint_tool(handle.name, tool, prefixed_name=prefixed, warnings=warnings,
                                                     notes=notes))
            problems.extend(schema.lint_collisions(names))

    anyio.run(run)
    remote_servers: set[str] | None = set()  # None: a mounted hub did not answer, its servers are unknown
    if config.instances or config.hub.mount:
        remote_problems, remote_servers = anyio.run(_instance_table, console, config)
        problems.extend(remote_problems)
    if remote_servers is not None:
        warnings.extend(_unknown_scopes(config, path, set(config.servers) | remote_servers))
    for each in notes:
        console.print(f"[dim]note:[/dim] {each}", highlight=False)
    for warning in warnings:
        console.print(f"[yellow]⚠[/yellow] {warning}", highlight=False)
    for problem in problems:
        console.print(f"[red]✗[/red] {problem}", highlight=False)
    if problems or (warnings and args.strict):
        hint = "; -v shows each server's stderr" if problems and not args.verbose else ""
        console.print(f"{path}: {plural(len(problems), 'problem')}, {plural(len(warnings), 'warning')}{hint}")
        return 1
    note = f", {plural(len(warnings), 'warning')}" if warnings else ""
    console.print(f"[green]✓[/green] {path}: {plural(len(config.servers), 'server')} ready, "
                  f"schemas lint clean{note}")
    return 0


def _unknown_scopes(config: HubConfig, path: Path, known: set[str]) -> list[str]:
    """Keys (and JWT scopes) naming servers that exist nowhere: a typo that silently opens nothing."""
    auths = [("auth", config.auth)] + [(f"instances.{n}.auth", i.auth) for n, i in config.instances.items() if i.auth]
    found: list[str] = []
    for where, auth in auths:
        scoped = [(f"{where}.api_keys[{i}] ({k.name!r})", k.servers) for i, k in enumerate(auth.api_keys)]
        scoped += [(f"{where}.jwt.scopes[{claim!r}]", servers)
                   for claim, servers in (auth.jwt.scopes if auth.jwt else {}).items()]
        for label, servers in scoped:
            for server in servers:
                if server != "*" and server not in known:
                    found.append(f"{path}: {label}: no server named {server!r}, so it opens nothing there "
                                 f"(servers: {', '.join(sorted(known)) or 'none'})")
    return found


async def _instance_table(console: Console, config: HubConfig) -> tuple[list[str], set[str] | None]:
    """Per instance: where it listens, what it runs, what it mounts from where (remotes probed once).
    Returns the problems and the remotes' server names (None if a remote did not answer)."""
    problems: list[str] = []
    probed: dict[str, RemoteMount] = {}
    for name, remote in config.remotes.items():
        mount = RemoteMount(name, remote.url, hub_id="mcphub-check", api_key=remote.api_key,
                            timeout=remote.timeout, proxy=remote.proxy)
        await mount.probe()
        probed[name] = mount
    from rich.table import Table

    table = Table("instance", "listens", "serves", "mounts")
    rows = [(n, i.host or config.hub.host, i.port or config.hub.port, i.servers, i.mount)
            for n, i in config.instances.items()] or [("(hub)", config.hub.host, config.hub.port,
                                                     list(config.servers), config.hub.mount)]
    for name, host, port, servers, targets in rows:
        mounts = []
        for target in targets:
            if target in config.instances:
                sibling = config.instances[target]
                where = sibling.url or "in-process only (no url)"
                mounts.append(f"{target}: {', '.join(instance_servers(config, target))} (instance, {where})")
            else:
                mount = probed[target]
                state = f"{', '.join(sorted(mount.servers)) or 'no servers'}" if mount.state != "failed" else \
                    f"[red]unreachable[/red]: {mount.last_error}"
                mounts.append(f"{target}: {state} (remote, {mount.url})")
                if mount.state == "failed" and config.remotes[target].required:
                    problems.append(f"remotes.{target}: {mount.last_error}")
        table.add_row(name, f"{host}:{port}", ", ".join(servers) or "-", "\n".join(mounts) or "-")
    console.print(table)
    if any(mount.state == "failed" for mount in probed.values()):
        return problems, None
    return problems, {server for mount in probed.values() for server in mount.servers}


def _tools(args: argparse.Namespace) -> int:
    config, _ = _load(args)
    console = _console()
    failed = False

    async def run() -> None:
        nonlocal failed
        async with Supervisor(config, user_auth=[OAuthServers(config)]) as supervisor:  # (oauth.py)
            _server_table(console, supervisor, with_tools=True)
            failed = any(h.state is not State.READY for h in supervisor.servers.values())

    anyio.run(run)
    return 1 if failed else 0


def _server_table(console: Console, supervisor: Supervisor, *, with_tools: bool = False) -> None:
    from rich.table import Table

    table = Table("server", "transport", "state", "tools", "detail")
    for handle in supervisor.servers.values():
        style = "green" if handle.state is State.READY else "red"
        detail = ", ".join(sorted(handle.tools)) if with_tools or handle.state is State.READY else ""
        error = " ".join(handle.last_error.split()) if handle.last_error else ""  # one line, however it came
        if handle.users is not None:  # a per-user server: this row is its listing instance
            detail = f"per user ({handle.users.running} running){': ' + detail if detail else ''}"
        table.add_row(handle.name, handle.config.transport, f"[{style}]{handle.state}[/{style}]",
                      str(len(handle.tools)), error or detail)
    console.print(table)


def _cli_principal(config: HubConfig, path: Path, user: str | None) -> Principal:
    """Who `mcphub call` calls as: the config's owner, or with --user one of its users (as a front end
    would name them: the user's scopes, and their own instance of a per-user server)."""
    if user is None:
        return CLI_PRINCIPAL
    found = config.auth.users.get(user)
    if found is None:
        listed = ", ".join(sorted(config.auth.users)) or "none"
        raise ConfigError(f"--user: {path} has no user {user!r} in auth.users (users: {listed})")
    return user_principal(CLI_PRINCIPAL, user, found)  # as a front end's key allowed everything names them


def _call(args: argparse.Namespace) -> int:
    """Through the hub's one call path (scopes, validation, result mapping, error shape), in-process.
    A server of this config runs alone; a mounted one (`mount:`, `instances:`, `remotes:`) is reached
    through its hub, with the key in $MCPHUB_API_KEY where that hub shares this one's auth."""
    config, path = _load(args)
    try:
        arguments = json.loads(args.args)
    except ValueError as exc:
        raise ConfigError(f"--args: not valid JSON: {exc}") from None
    if not isinstance(arguments, dict):
        raise ConfigError(f"--args: must be a JSON object of the tool's arguments (got {args.args})")
    principal = _cli_principal(config, path, args.user)
    servers, sites = plan(config, ServeOptions())
    if args.server in servers:  # start only that server, mount nothing
        servers = {args.server: servers[args.server]}
        for site in sites:
            site.mounts.clear()
    elif not any(site.mounts for site in sites):
        raise ConfigError(f"{path}: no server named {args.server!r} (servers: {', '.join(sorted(servers))})")
    else:
        servers = {}  # the server may live on a mounted hub: list those only
    output: dict[str, Any] = {}

    async def run() -> None:
        from mcphub.cli_progress import progress_shown  # rich: see TYPE_CHECKING above

        async with running(servers, sites) as hub:
            invoker = hub.invoker_for(args.server)
            if invoker is None:
                mounted = sorted({n for inv in hub.invokers for n in inv.servers()})
                output["error"] = (f"{path}: no server named {args.server!r}, here or on a mounted hub "
                                   f"(servers: {', '.join(mounted) or 'none reachable'})")
                return
            with progress_shown(f"{args.server}/{args.tool}") as progress:  # on stderr (mcphub/cli_progress.py)
                outcome = await invoker.invoke(Call(principal, args.server, args.tool, arguments,
                                                    authorization=_cli_authorization(), progress=progress))
                await progress.settled()
            output["status"], output["body"] = outcome.status, outcome.body

    anyio.run(run)
    if "error" in output:
        raise ConfigError(output["error"])
    print(json.dumps(output["body"], indent=2, ensure_ascii=False))
    if output["status"] == 403 and args.user is None and config.auth.users:
        print(f"mcphub call: to call as one of the config's users, add --user ID (users: "
              f"{', '.join(sorted(config.auth.users))})", file=sys.stderr)
    return 0 if output["status"] == 200 else 1


def _cli_authorization() -> str | None:
    """What the CLI sends a mounted hub that shares this config's auth: the key in $MCPHUB_API_KEY."""
    key = os.environ.get(API_KEY_ENV, "").strip()
    return f"Bearer {key}" if key else None


def _chat(args: argparse.Namespace) -> int:
    """The hub's servers (and mounted ones) in-process; the runner calls tools through the hub's one call
    path (scope checks, validation, metrics) as the CLI's own all-access caller. Prints each tool call
    and a short form of its result as it happens, then streams the answer."""
    config, path = _load(args)
    runner_config = config.runner
    if runner_config is None:
        where = f"{path} has no runner: section" if path.name == DEFAULT_CONFIG_NAME or args.config else \
            f"the packaged default config has no runner: section (make ./{DEFAULT_CONFIG_NAME}, or pass -c FILE)"
        raise ConfigError(f"{where}. `runner: {{}}` alone chats through Ollama at http://127.0.0.1:11434 with "
                          f"qwen3:14b; set backend, base_url and model for another: see {RUNNER_DOCS}")
    servers, sites = plan(config, ServeOptions())
    if "*" not in runner_config.servers:
        servers = {n: c for n, c in servers.items() if n in runner_config.servers}
    if args.log_level is None:
        configure_logging("warning")  # server lifecycle lines would bury the conversation
    out = _ChatPrinter()
    failed = False

    async def run() -> None:
        from mcphub.runner.api import backend_client, make_runner  # see TYPE_CHECKING above
        from mcphub.runner.tools import HubTools

        nonlocal failed
        async with running(servers, sites) as hub:
            wanted = set(runner_config.servers)  # the listener that serves most of them (instances: one each)
            invoker = max(hub.invokers, key=lambda inv: len(wanted & set(inv.servers())) if "*" not in wanted else 0)
            tools = HubTools(invoker, CLI_PRINCIPAL, runner_config.servers, authorization=_cli_authorization(),
                             on_progress=out.progress)
            async with backend_client(runner_config) as client:
                runner = make_runner(runner_config, tools, client, model=args.model)
                messages: list[dict[str, Any]] = []
                while True:
                    prompt = args.prompt if args.prompt is not None else await anyio.to_thread.run_sync(_read_prompt)
                    if prompt is None:
                        return
                    try:
                        result = await runner.chat([*messages, {"role": "user", "content": prompt}],
                                                   on_text=out.text, on_tool_call=out.call, on_tool_result=out.result)
                    except HubError as exc:
                        out.end()
                        print(f"mcphub: {exc.message}", file=sys.stderr)
                        failed = True
                    else:
                        out.end()
                        messages = result.messages
                    if args.prompt is not None:
                        return

    anyio.run(run)
    return 1 if failed else 0


def _read_prompt() -> str | None:
    while True:
        try:
            line = input("you> ").strip()
        except EOFError:
            print()
            return None
        if line in ("exit", "quit", "/bye"):
            return None
        if line:
            return line


class _ChatPrinter:
    """`[tool] {arguments}` when a call starts, `[tool] ... 2/3 message` as it reports progress, `[tool] ->
    short result` when it ends, then the answer."""

    RESULT_CHARS = 200

    def __init__(self) -> None:
        self._mid_line = False

    def _line(self, text: str) -> None:
        if self._mid_line:
            print()
            self._mid_line = False
        print(text, flush=True)

    async def call(self, call: ToolCall) -> None:
        self._line(f"[{call.name}] {json.dumps(call.arguments, ensure_ascii=False)}")

    async def progress(self, name: str, progress: float, total: float | None, message: str | None) -> None:
        done = f"{progress:g}" + (f"/{total:g}" if total is not None else "")
        self._line(f"[{name}] ... {done} {message or ''}".rstrip())

    async def result(self, result: ToolResult) -> None:
        short = " ".join(result.text.split())
        if len(short) > self.RESULT_CHARS:
            short = short[: self.RESULT_CHARS - 3] + "..."
        self._line(f"[{result.call.name}] {'->' if result.ok else 'failed:'} {short}")

    async def text(self, text: str) -> None:
        if not self._mid_line:
            text = text.lstrip("\n")  # the runner's blank line between turns: tool lines separate them here
        sys.stdout.write(text)
        sys.stdout.flush()
        self._mid_line = not text.endswith("\n")

    def end(self) -> None:
        if self._mid_line:
            print(flush=True)
            self._mid_line = False


def _users(args: argparse.Namespace) -> int:
    if args.connect is not None:
        if not args.user:
            raise ConfigError("--connect SERVER needs --user USER (the forwarded user the link is for)")
        print(cli_users.connect_link(_load(args)[0], args.connect, args.user))
        return 0
    url = args.url or _load(args)[0].hub.local_url
    return cli_users.run(url, args.api_key or os.environ.get(API_KEY_ENV, "").strip() or None, print)


def _keys_new(args: argparse.Namespace) -> int:
    key = "mh_" + secrets.token_urlsafe(32)
    entry: dict[str, Any] = {"name": args.name, "hash": key_hash(key), "servers": _names("--servers", args.servers)}
    if args.tools is not None:
        entry["tools"] = _names("--tools", args.tools)
    print(f"key (shown once, give it to the client): {key}")
    print("config line for auth.api_keys:")
    print("  - " + json.dumps(entry))
    return 0


def _names(option: str, text: str) -> list[str]:
    """`a,b` → [a, b]; an empty list would silently mean something else (all servers), so it is refused."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise ConfigError(f"{option} {text!r}: no names in it; give them separated by commas "
                          f"({option} a,b), or leave {option} out for all")
    return names
