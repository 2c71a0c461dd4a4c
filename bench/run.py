"""mcphub benchmark: the hub, and mcpo beside it, against a direct MCP session on the same stdio server.

    python bench/run.py [--quick] [--rounds N] [--cold-starts N] [--json out.json] [--log-level info|warning]
                        [--http-client lean|httpx2] [--mcpo PATH | --no-mcpo] [--with-no-auth] [--with-legacy]
                        [--with-mcp-sdk-client]

What it measures, for the trivial tool `add` of `bench/server.py` (an async MCPServer tool, no output
schema, so no output validation on any path), on this machine, in one run:

* requests/s and p50/p99 latency at concurrency 1, 10 and 50 of these targets:
  - direct: one SDK `Client` over stdio in this process, `call_tool` from C concurrent tasks (the ceiling:
    what a proxy itself does per call, minus HTTP);
  - hub: a real `mcphub serve` subprocess serving the same server, with an API key;
  - hub replicas=2: the same with a pool of two server processes;
  - hub mcp: the first hub's MCP face (`/bench/mcp`): the same calls as 2026-07-28 JSON-RPC `tools/call`
    POSTs from the same lean load generator as the HTTP face (each answer's id and text checked);
  - hub mcp sdk (--with-mcp-sdk-client): the same endpoint through the SDK's own client in this process, to
    show what that client costs (its CPU is the load generator's column);
  - mcpo: Open WebUI's MCP-to-OpenAPI proxy on the same server, with an API key, from its own venv
    (`bench/install-mcpo`; skipped with a note when not installed, or with --no-mcpo);
  - hub no auth (--with-no-auth): the hub without a key, to see what authentication costs;
  - hub legacy (--with-legacy): the hub with `mode: legacy`, the initialize handshake that mcpo's mcp 1.x
    client speaks (the hub's default, auto, speaks the 2026 protocol when the server does, as this one does).
  The HTTP targets are called over loopback by the lean load generator in bench/loadgen.py (one keep-alive
  connection per concurrent caller, ~0.1 ms CPU per call; --http-client httpx2 for the httpx2 client the
  earlier figures used, ~0.6 ms). Every call sends `{"a": i, "b": 1}` and must get `i + 1` back, so an
  answer given to the wrong request fails the run. Rounds are interleaved (every target per level, per
  round, starting one target later each round) so drift on a noisy machine hits all alike; the table
  shows the median over rounds, and the CPU time per call of each process: load generator, proxy, server.
* the same for `crunch` (the answer after ~5 ms of pure-Python CPU in the server) at concurrency 10, for
  direct, hub, hub replicas=2 and mcpo: what `replicas:` is for. One server process runs one such call at
  a time; on two cores a second one has CPU to use, where for `add` it only adds to the load.
* cold start: `mcphub serve` with the packaged default config (the five bundled servers), from spawn to
  the first `GET /readyz` = 200; median of N runs.
* the RSS (psutil) of the hub and of mcpo after the load, and of their children.

The load generator runs in this process; the proxies never share its event loop. On a 2-core machine the
generator, the proxy and the server compete for the CPU; the figures are for one machine, one run.
Every loop is bounded in count and time; all traffic is on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack, ExitStack, asynccontextmanager, contextmanager
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import anyio
import httpx2
import psutil
import yaml
from loadgen import MCP_HEADERS, JSONPoster, add_call, mcp_add_call
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SERVER = [sys.executable, str(HERE / "server.py")]
MCPO = Path(os.environ.get("MCPHUB_TP_DIR", REPO / ".tp")) / "venvs" / "mcpo" / "bin" / "mcpo"  # bench/install-mcpo
LEVELS = (1, 10, 50)
# The CPU-bound scenario: `crunch` with this much pure-Python work (~5 ms of CPU here) at this concurrency,
# for the targets where a second server process can matter.
CRUNCH_WORK = 150_000
CRUNCH_LEVEL = 10
CRUNCH_CALLS = (200, 600)
CRUNCH_TARGETS = ("direct", "hub", "hub replicas=2", "mcpo")
READY_TIMEOUT = 60.0  # seconds for a hub to answer /readyz 200 (five python servers on a busy 2-core box)
STOP_TIMEOUT = 20.0  # seconds for a hub or mcpo (and then their children) to exit after SIGTERM
RUN_TIMEOUT = 300.0  # seconds any single measured run may take before the benchmark gives up
POLL = 0.005  # seconds between readiness polls when timing a cold start

# calls per measured run at each concurrency, and rounds / cold starts: (quick, full)
CALLS = {1: (200, 1000), 10: (1000, 3000), 50: (1500, 5000)}
ROUNDS = (3, 5)
COLD_STARTS = (3, 7)
WARMUP = 200

Call = Callable[[int], Awaitable[None]]


@dataclass
class Run:
    target: str
    concurrency: int
    calls: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    cpu_ms_per_call: dict[str, float] = field(default_factory=dict)  # process role → CPU time / call


@dataclass
class Summary:
    target: str
    concurrency: int
    rounds: int
    rps: float  # median over rounds
    p50_ms: float
    p99_ms: float
    cpu_ms_per_call: dict[str, float] = field(default_factory=dict)  # medians over rounds
    runs: list[Run] = field(default_factory=list)


@dataclass
class Proxy:
    """An HTTP target: a hub or mcpo subprocess, the URL of `add` on it, and the key it wants."""

    name: str
    proc: subprocess.Popen[bytes]
    url: str
    add_url: str
    key: str | None
    servers: int = 1  # bench servers it runs

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"} if self.key else {}


# ------------------------------------------------------------------------------------------ load


def cpu_seconds(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return times.user + times.system


async def measure(
    target: str, call: Call, concurrency: int, calls: int, processes: dict[str, psutil.Process] | None = None
) -> Run:
    """`calls` calls from `concurrency` tasks; each call's latency, the wall time for all, and the CPU
    time each of `processes` (role → process) spent per call meanwhile."""
    processes = {"load generator": psutil.Process(), **(processes or {})}
    cpu_before = {role: cpu_seconds(p) for role, p in processes.items()}
    latencies: list[float] = []
    counter = iter(range(calls))

    async def worker() -> None:
        for i in counter:  # shared iterator: exactly `calls` calls in total
            started = time.perf_counter()
            await call(i)
            latencies.append(time.perf_counter() - started)

    with anyio.fail_after(RUN_TIMEOUT):
        started = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for _ in range(concurrency):
                tg.start_soon(worker)
        seconds = time.perf_counter() - started
    cpu = {role: round((cpu_seconds(p) - cpu_before[role]) / calls * 1000, 3) for role, p in processes.items()}
    assert len(latencies) == calls
    latencies.sort()
    return Run(
        target,
        concurrency,
        calls,
        seconds,
        calls / seconds,
        _quantile(latencies, 0.50) * 1000,
        _quantile(latencies, 0.99) * 1000,
        cpu,
    )


def _quantile(sorted_values: list[float], q: float) -> float:
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


def direct_call(client: Client, work: int | None = None) -> Call:
    tool, extra = ("add", {}) if work is None else ("crunch", {"work": work})

    async def call(i: int) -> None:
        result = await client.call_tool(tool, {"a": i, "b": 1, **extra})
        text = result.content[0].text  # type: ignore[union-attr]
        if result.is_error or text != str(i + 1):
            raise RuntimeError(f"direct call {i}: unexpected result {result!r}")

    return call


@asynccontextmanager
async def mcp_client(url: str, headers: dict[str, str]) -> AsyncIterator[Client]:
    """The SDK's client (auto: the 2026-07-28 protocol, a POST per call) at one of the hub's MCP endpoints."""
    limits = httpx2.Limits(max_connections=max(LEVELS), max_keepalive_connections=max(LEVELS))
    async with httpx2.AsyncClient(headers=headers, limits=limits, timeout=60) as http:
        async with Client(streamable_http_client(url, http_client=http), cache=None) as client:
            yield client


def httpx2_call(http: httpx2.AsyncClient, url: str, work: int | None = None) -> Call:
    """The same check as loadgen.add_call, through httpx2 (--http-client httpx2)."""
    extra = {} if work is None else {"work": work}

    async def call(i: int) -> None:
        response = await http.post(url, json={"a": i, "b": 1, **extra})
        if response.status_code != 200 or response.json() != i + 1:
            raise RuntimeError(f"call {i} to {url}: HTTP {response.status_code} {response.text[:200]}")

    return call


async def _nothing() -> int:
    return 0


@dataclass
class Target:
    call: Call
    refresh: Callable[[], Awaitable[int]] = _nothing  # before a measurement: reopen what the server closed


async def http_target(
    stack: AsyncExitStack, proxy: Proxy, concurrency: int, client: str, work: int | None = None
) -> Target:
    """`proxy`'s add (or crunch, given `work`), from a client with `concurrency` connections that `stack` closes."""
    url = proxy.add_url if work is None else proxy.add_url.rsplit("/", 1)[0] + "/crunch"
    if client == "httpx2":  # httpx2 reopens connections the server closed by itself, during the measurement
        limits = httpx2.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        http = await stack.enter_async_context(httpx2.AsyncClient(limits=limits, timeout=60, headers=proxy.headers))
        return Target(httpx2_call(http, url, work))
    poster = await stack.enter_async_context(JSONPoster(url, concurrency=concurrency, api_key=proxy.key))
    return Target(add_call(poster, work=work), poster.refresh)


# ------------------------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tail(log: Path, lines: int = 15) -> str:
    try:
        return "\n".join(log.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def wait_ready(
    proc: subprocess.Popen[bytes],
    probe: Callable[[httpx2.Client], bool],
    *,
    what: str,
    log: Path,
    timeout: float = READY_TIMEOUT,
) -> float:
    """Call `probe` until it says ready; returns the monotonic time it first did."""
    deadline = time.monotonic() + timeout
    with httpx2.Client(timeout=5) as http:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{what} exited with {proc.returncode} before it was ready; log:\n{_tail(log)}")
            try:
                if probe(http):
                    return time.monotonic()
            except httpx2.TransportError:
                pass
            time.sleep(POLL)
    raise RuntimeError(f"{what} not ready within {timeout:g}s; log:\n{_tail(log)}")


def hub_ready(url: str) -> Callable[[httpx2.Client], bool]:
    return lambda http: http.get(f"{url}/readyz").status_code == 200


def add_answers(proxy: Proxy) -> Callable[[httpx2.Client], bool]:
    """mcpo has no readiness endpoint: it is ready when `add` answers."""
    return lambda http: http.post(proxy.add_url, json={"a": 1, "b": 1}, headers=proxy.headers).status_code == 200


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after STOP_TIMEOUT; then the same for any child it left behind."""
    try:
        children = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        children = []
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=STOP_TIMEOUT)
    _, alive = psutil.wait_procs(children, timeout=STOP_TIMEOUT)
    for child in alive:
        print(f"  {child.pid} outlived its parent {proc.pid}; killing it", file=sys.stderr)
        child.kill()


@contextmanager
def spawn(
    command: Callable[[int], list[str]], *, cwd: Path, log: Path, env: dict[str, str] | None = None
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """`command(port)` as a subprocess; yields it and its base URL, and stops it on exit."""
    port = free_port()
    with open(log, "ab") as out:
        proc = subprocess.Popen(command(port), cwd=cwd, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        yield proc, f"http://127.0.0.1:{port}"
    finally:
        stop(proc)


def hub_command(*args: str) -> Callable[[int], list[str]]:
    return lambda port: [sys.executable, "-m", "mcphub", "serve", "--port", str(port), *args]


def mcpo_command(mcpo: Path, key: str, log_level: str) -> Callable[[int], list[str]]:
    return lambda port: [
        str(mcpo), "--host", "127.0.0.1", "--port", str(port), "--api-key", key,
        "--log-level", log_level.upper(), "--", *SERVER,
    ]  # fmt: skip


def bench_config(path: Path, *, replicas: int, log_level: str, key: str | None, mode: str = "auto") -> Path:
    server = {"transport": "stdio", "command": SERVER[0], "args": SERVER[1:], "replicas": replicas, "mode": mode}
    config: dict[str, Any] = {"hub": {"log_level": log_level, "reload": False}, "servers": {"bench": server}}
    if key:
        config["auth"] = {"api_keys": [{"name": "bench", "key": key}]}
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def bench_servers(parent: psutil.Process, count: int, *, recursive: bool = True) -> list[psutil.Process]:
    """The `bench/server.py` processes under `parent`; exactly `count` of them."""
    found = []
    for child in parent.children(recursive=recursive):
        try:
            if child.cmdline()[1:] == SERVER[1:]:  # not mcpo, whose own command line ends with it
                found.append(child)
        except psutil.Error:
            pass
    if len(found) != count:
        raise RuntimeError(f"expected {count} bench server(s) under pid {parent.pid}, found {len(found)}")
    return found


def rss_mib(pid: int) -> tuple[float, float]:
    """(the process's RSS, the sum of its children's), MiB."""
    proc = psutil.Process(pid)
    own = proc.memory_info().rss
    children = 0
    for child in proc.children(recursive=True):
        try:
            children += child.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return own / 2**20, children / 2**20


def mcpo_versions(mcpo: Path) -> dict[str, str]:
    """mcpo's version and those of what it runs on, from the interpreter beside it (its venv)."""
    python = mcpo.parent / "python"
    code = "from importlib.metadata import version as v; print(*(v(p) for p in ('mcpo', 'mcp', 'fastapi', 'uvicorn')))"
    try:
        out = subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=30, check=True)
    except (OSError, subprocess.SubprocessError):
        return {"mcpo": "unknown"}
    return dict(zip(("mcpo", "mcp", "fastapi", "uvicorn"), out.stdout.split(), strict=True))


# ------------------------------------------------------------------------------------- scenarios


async def throughput(
    *, quick: bool, rounds: int, log_level: str, client: str, mcpo: Path | None, extra: list[str], workdir: Path,
    baseline: Path | None = None, mcp_sdk_client: bool = False,
) -> tuple[list[Summary], list[Summary], dict[str, Any]]:
    pick = 0 if quick else 1
    key = secrets.token_urlsafe(24)
    log = workdir / "hub.log"
    configs = {  # target → (replicas, key, MCP handshake mode)
        "hub": (1, key, "auto"),
        "hub replicas=2": (2, key, "auto"),
        "hub no auth": (1, None, "auto"),
        "hub legacy": (1, key, "legacy"),
    }
    configs = {name: c for name, c in configs.items() if name in ("hub", "hub replicas=2", *extra)}
    if baseline is not None:  # the same hub from another checkout, in the same rounds (before/after a change)
        configs["hub baseline"] = (1, key, "auto")
    runs: list[Run] = []
    memory: dict[str, Any] = {}
    with ExitStack() as processes:
        proxies: list[Proxy] = []
        for name, (replicas, k, mode) in configs.items():
            path = workdir / f"{len(proxies)}.yaml"
            bench_config(path, replicas=replicas, log_level=log_level, key=k, mode=mode)
            env = {**os.environ, "PYTHONPATH": str(baseline)} if name == "hub baseline" and baseline else None
            proc, url = processes.enter_context(spawn(hub_command("-c", str(path)), cwd=workdir, log=log, env=env))
            proxies.append(Proxy(name, proc, url, f"{url}/bench/add", k, replicas))
        if mcpo is not None:
            proc, url = processes.enter_context(
                spawn(mcpo_command(mcpo, key, log_level), cwd=workdir, log=workdir / "mcpo.log")
            )
            proxies.append(Proxy("mcpo", proc, url, f"{url}/add", key))
        for proxy in proxies:
            if proxy.name == "mcpo":
                wait_ready(proxy.proc, add_answers(proxy), what="mcpo", log=workdir / "mcpo.log")
            else:
                wait_ready(proxy.proc, hub_ready(proxy.url), what=proxy.name, log=log)
        memory["hub_idle_rss_mib"] = round(rss_mib(proxies[0].proc.pid)[0], 1)
        if mcpo is not None:
            memory["mcpo_idle_rss_mib"] = round(rss_mib(proxies[-1].proc.pid)[0], 1)
        params = StdioServerParameters(command=SERVER[0], args=SERVER[1:])
        async with Client(params, cache=None) as direct, AsyncExitStack() as faces:
            roles: dict[str, dict[str, psutil.Process]] = {
                "direct": {"server": bench_servers(psutil.Process(), 1, recursive=False)[0]}
            }
            for proxy in proxies:
                parent = psutil.Process(proxy.proc.pid)
                servers = bench_servers(parent, proxy.servers)
                roles[proxy.name] = {"proxy": parent} | {
                    "server" if n == 0 else f"server {n + 1}": p for n, p in enumerate(servers)
                }
            hub = proxies[0]
            roles["hub mcp"] = roles[hub.name]  # the same hub process, through its MCP face
            sdk_face = None
            if mcp_sdk_client:
                roles["hub mcp sdk"] = roles[hub.name]
                sdk_face = await faces.enter_async_context(mcp_client(f"{hub.url}/bench/mcp", hub.headers))
            for level in LEVELS:
                async with AsyncExitStack() as stack:
                    targets = {"direct": Target(direct_call(direct))}
                    for proxy in proxies:
                        targets[proxy.name] = await http_target(stack, proxy, level, client)
                    poster = await stack.enter_async_context(JSONPoster(
                        f"{hub.url}/bench/mcp", concurrency=level, api_key=hub.key, headers=MCP_HEADERS))
                    targets["hub mcp"] = Target(mcp_add_call(poster), poster.refresh)
                    if sdk_face is not None:
                        targets["hub mcp sdk"] = Target(direct_call(sdk_face))
                    runs += await interleaved(targets, roles, level, CALLS[level][pick], rounds, WARMUP, "add")
            async with AsyncExitStack() as stack:
                targets = {"direct": Target(direct_call(direct, CRUNCH_WORK))}
                for proxy in proxies:
                    if proxy.name in CRUNCH_TARGETS:
                        targets[proxy.name] = await http_target(stack, proxy, CRUNCH_LEVEL, client, CRUNCH_WORK)
                crunch_runs = await interleaved(
                    targets, roles, CRUNCH_LEVEL, CRUNCH_CALLS[pick], rounds, CRUNCH_LEVEL * 2, "crunch"
                )
        for proxy in proxies:
            own, children = rss_mib(proxy.proc.pid)
            prefix = {"hub": "hub", "hub replicas=2": "hub_replicas2", "mcpo": "mcpo"}.get(proxy.name)
            if prefix:
                memory.update({f"{prefix}_rss_mib": round(own, 1), f"{prefix}_children_rss_mib": round(children, 1)})
    return summarise(runs), summarise(crunch_runs), memory


async def interleaved(
    targets: dict[str, Target],
    roles: dict[str, dict[str, psutil.Process]],
    level: int,
    calls: int,
    rounds: int,
    warmup: int,
    tool: str,
) -> list[Run]:
    """`rounds` measurements of every target at one concurrency, each round starting one target later."""
    runs = []
    names = list(targets)
    for name in names:  # warm-up: connections, imports, caches
        await targets[name].refresh()
        await measure(name, targets[name].call, level, warmup)
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            await targets[name].refresh()
            run = await measure(name, targets[name].call, level, calls, roles[name])
            runs.append(run)
            print(
                f"  round {r + 1}/{rounds} {tool:<6} c={level:<3} {name:<15} {run.rps:8.0f} req/s "
                f"p50 {run.p50_ms:6.2f} ms  p99 {run.p99_ms:6.2f} ms",
                file=sys.stderr,
            )
    return runs


def summarise(runs: list[Run]) -> list[Summary]:
    """Medians over rounds, per (target, concurrency), in the order the runs first met them."""
    summaries = []
    for name, level in dict.fromkeys((r.target, r.concurrency) for r in runs):
        mine = [r for r in runs if r.target == name and r.concurrency == level]
        cpu = {
            role: round(statistics.median(r.cpu_ms_per_call[role] for r in mine), 3) for role in mine[0].cpu_ms_per_call
        }
        summaries.append(
            Summary(
                name,
                level,
                len(mine),
                statistics.median(r.rps for r in mine),
                statistics.median(r.p50_ms for r in mine),
                statistics.median(r.p99_ms for r in mine),
                cpu,
                mine,
            )
        )
    return summaries


def cold_start(runs: int, workdir: Path) -> dict[str, Any]:
    """`mcphub serve` with the packaged default config: spawn → first /readyz 200, `runs` times."""
    empty = workdir / "cold"  # no ./mcphub.yaml here, so serve uses the packaged default
    empty.mkdir(exist_ok=True)
    seconds = []
    for i in range(runs):
        started = time.monotonic()
        with spawn(hub_command(), cwd=empty, log=workdir / "cold.log") as (proc, url):
            ready_at = wait_ready(proc, hub_ready(url), what="hub", log=workdir / "cold.log")
            seconds.append(ready_at - started)
            body = httpx2.get(f"{url}/readyz", timeout=5).json()
            servers = sorted(body["servers"])
        print(f"  cold start {i + 1}/{runs}: {seconds[-1]:.2f}s ({len(servers)} servers)", file=sys.stderr)
    return {
        "runs": [round(s, 3) for s in seconds],
        "median_s": round(statistics.median(seconds), 3),
        "servers": servers,
    }


# ----------------------------------------------------------------------------------------- report


def _row(s: Summary, direct: Summary, hub: Summary) -> str:
    over_direct = "" if s.target == "direct" else f"{s.rps / direct.rps:.2f}"
    over_hub = "" if s.target in ("direct", "hub") else f"{s.rps / hub.rps:.2f}"
    cpu = s.cpu_ms_per_call
    servers = sum(v for k, v in cpu.items() if k.startswith("server"))
    proxy = f"{cpu['proxy']:.2f}" if "proxy" in cpu else "-"
    return (
        f"{s.target:<16}{s.concurrency:>5}{s.rps:>9.0f}{s.p50_ms:>9.2f}{s.p99_ms:>9.2f}{over_direct:>10}{over_hub:>7}"
        f"{cpu['load generator']:>23.2f}{proxy:>7}{servers:>10.2f}"
    )


def report(
    summaries: list[Summary], crunch: list[Summary], cold: dict[str, Any], memory: dict[str, Any]
) -> dict[str, Any]:
    by = {(s.target, s.concurrency): s for s in summaries}
    names = list(dict.fromkeys(s.target for s in summaries))
    lines = [
        f"{'target':<16}{'conc':>5}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'÷ direct':>10}{'÷ hub':>7}"
        f"{'CPU ms/call: load gen':>23}{'proxy':>7}{'server(s)':>10}"
    ]
    for level in LEVELS:
        for name in names:
            lines.append(_row(by[(name, level)], by[("direct", level)], by[("hub", level)]))
    crunched = {s.target: s for s in crunch}
    work_ms = crunched["direct"].cpu_ms_per_call["server"]
    lines.append(f"crunch: the same, CPU-bound ({CRUNCH_WORK} rounds of Python, {work_ms:.2f} ms of server CPU "
                 f"per direct call), c={CRUNCH_LEVEL}")
    for s in crunch:
        lines.append(_row(s, crunched["direct"], crunched["hub"]))
    added_p50 = by[("hub", 1)].p50_ms - by[("direct", 1)].p50_ms
    ratios: dict[str, float] = {
        "hub_over_direct_rps_c50": by[("hub", 50)].rps / by[("direct", 50)].rps,
        "hub_replicas2_over_direct_rps_c50": by[("hub replicas=2", 50)].rps / by[("direct", 50)].rps,
        "added_p50_ms_c1": added_p50,
        f"hub_over_direct_rps_crunch_c{CRUNCH_LEVEL}": crunched["hub"].rps / crunched["direct"].rps,
        f"hub_replicas2_over_direct_rps_crunch_c{CRUNCH_LEVEL}": crunched["hub replicas=2"].rps
        / crunched["direct"].rps,
    }
    for level in LEVELS:
        ratios[f"hub_mcp_over_direct_rps_c{level}"] = by[("hub mcp", level)].rps / by[("direct", level)].rps
        ratios[f"hub_mcp_over_hub_rps_c{level}"] = by[("hub mcp", level)].rps / by[("hub", level)].rps
    if "mcpo" in names:
        for level in LEVELS:
            ratios[f"mcpo_over_direct_rps_c{level}"] = by[("mcpo", level)].rps / by[("direct", level)].rps
            ratios[f"hub_over_mcpo_rps_c{level}"] = by[("hub", level)].rps / by[("mcpo", level)].rps
        ratios["mcpo_added_p50_ms_c1"] = by[("mcpo", 1)].p50_ms - by[("direct", 1)].p50_ms
    for other in ("hub no auth", "hub legacy"):
        if other in names:
            for level in LEVELS:
                key = f"hub_over_{other[4:].replace(' ', '_')}_rps_c{level}"
                ratios[key] = by[("hub", level)].rps / by[(other, level)].rps
    targets = [
        (
            "hub throughput at c=50 ≥ 0.9 × direct",
            ratios["hub_over_direct_rps_c50"] >= 0.9,
            f"{ratios['hub_over_direct_rps_c50']:.2f}×",
        ),
        ("p50 added latency at c=1 < 1 ms", added_p50 < 1.0, f"{added_p50:.2f} ms"),
        (
            "MCP face throughput at c=50 ≥ 0.9 × direct",
            ratios["hub_mcp_over_direct_rps_c50"] >= 0.9,
            f"{ratios['hub_mcp_over_direct_rps_c50']:.2f}×",
        ),
        (
            "replicas: 2 at c=50 > direct single session",
            ratios["hub_replicas2_over_direct_rps_c50"] > 1.0,
            f"{ratios['hub_replicas2_over_direct_rps_c50']:.2f}×",
        ),
        (
            f"replicas: 2 > direct single session, CPU-bound tool at c={CRUNCH_LEVEL}",
            ratios[f"hub_replicas2_over_direct_rps_crunch_c{CRUNCH_LEVEL}"] > 1.0,
            f"{ratios[f'hub_replicas2_over_direct_rps_crunch_c{CRUNCH_LEVEL}']:.2f}×",
        ),
        ("ready with five servers < 2 s", cold["median_s"] < 2.0, f"{cold['median_s']:.2f} s"),
        ("hub RSS after load < 100 MiB", memory["hub_rss_mib"] < 100, f"{memory['hub_rss_mib']:.1f} MiB"),
    ]
    lines.append("")
    if "mcpo" in names:
        lines.append(
            "hub ÷ mcpo, req/s: "
            + ", ".join(f"c={level} {ratios[f'hub_over_mcpo_rps_c{level}']:.2f}×" for level in LEVELS)
            + f"; p50 added at c=1: hub {added_p50:.2f} ms, mcpo {ratios['mcpo_added_p50_ms_c1']:.2f} ms"
        )
    lines.append("MCP face ÷ direct session, req/s: "
                 + ", ".join(f"c={n} {ratios[f'hub_mcp_over_direct_rps_c{n}']:.2f}×" for n in LEVELS)
                 + "; ÷ the HTTP face: "
                 + ", ".join(f"c={n} {ratios[f'hub_mcp_over_hub_rps_c{n}']:.2f}×" for n in LEVELS))
    for other, label in (("hub no auth", "hub with a key ÷ without"), ("hub legacy", "hub (auto) ÷ mode: legacy")):
        if other in names:
            key = f"hub_over_{other[4:].replace(' ', '_')}_rps_c"
            lines.append(f"{label}, req/s: " + ", ".join(f"c={n} {ratios[f'{key}{n}']:.2f}×" for n in LEVELS))
    lines.append(
        f"cold start to /readyz 200, {len(cold['servers'])} bundled servers: median "
        f"{cold['median_s']:.2f} s over {len(cold['runs'])} runs ({', '.join(f'{s:.2f}' for s in cold['runs'])})"
    )
    lines.append(
        f"hub RSS: idle {memory['hub_idle_rss_mib']} MiB, after load {memory['hub_rss_mib']} MiB "
        f"(its server: {memory['hub_children_rss_mib']} MiB); replicas=2 hub {memory['hub_replicas2_rss_mib']} "
        f"MiB (servers: {memory['hub_replicas2_children_rss_mib']} MiB)"
    )
    if "mcpo_rss_mib" in memory:
        lines.append(
            f"mcpo RSS: idle {memory['mcpo_idle_rss_mib']} MiB, after load {memory['mcpo_rss_mib']} MiB "
            f"(its server: {memory['mcpo_children_rss_mib']} MiB)"
        )
    lines.append("")
    for text, ok, value in targets:
        lines.append(f"[{'met' if ok else 'MISSED':>6}] {text}: {value}")
    print("\n".join(lines))
    return {
        "ratios": ratios,
        "targets": [{"target": t, "met": ok, "value": v} for t, ok, v in targets],
        "table": "\n".join(lines),
    }


def environment(client: str, mcpo: Path | None) -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "loadavg_at_start": os.getloadavg(),
        "mcp": metadata.version("mcp"),
        "mcphub": metadata.version("mcphub"),
        "httpx2": metadata.version("httpx2"),
        "uvicorn": metadata.version("uvicorn"),
        "load_generator": "bench/loadgen.py" if client == "lean" else f"httpx2 {metadata.version('httpx2')}",
        "mcpo": mcpo_versions(mcpo) | {"path": str(mcpo)} if mcpo else None,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls, rounds and cold starts (~1 min)")
    parser.add_argument(
        "--json", type=Path, default=HERE / "results.json", help="where to write the results (default: %(default)s)"
    )
    parser.add_argument("--rounds", type=int, help="rounds per concurrency level (default 3 quick, 5 full)")
    parser.add_argument("--cold-starts", type=int, help="cold starts to time (default 3 quick, 7 full)")
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="the hub's and mcpo's log level (info, the default of both, writes a line or two per call)",
    )
    parser.add_argument(
        "--http-client",
        default="lean",
        choices=["lean", "httpx2"],
        help="what drives the HTTP targets: bench/loadgen.py (default) or httpx2, as the earlier figures did",
    )
    mcpo_group = parser.add_mutually_exclusive_group()
    mcpo_group.add_argument("--mcpo", type=Path, help=f"mcpo executable (default: {MCPO}, from bench/install-mcpo)")
    mcpo_group.add_argument("--no-mcpo", action="store_true", help="leave mcpo out")
    parser.add_argument("--with-no-auth", action="store_true", help="add a hub without an API key, to price auth")
    parser.add_argument(
        "--baseline",
        type=Path,
        metavar="DIR",
        help="add 'hub baseline': the hub from the checkout in DIR (e.g. `git worktree add DIR COMMIT`), "
        "in the same rounds, for a before/after comparison",
    )
    parser.add_argument(
        "--with-mcp-sdk-client",
        action="store_true",
        help="add 'hub mcp sdk': the MCP face through the SDK's own client (its cost shows as the load generator's)",
    )
    parser.add_argument(
        "--with-legacy",
        action="store_true",
        help="add a hub with `mode: legacy` (the initialize handshake mcpo's mcp 1.x client uses; default: auto)",
    )
    args = parser.parse_args(argv)
    pick = 0 if args.quick else 1
    rounds = args.rounds or ROUNDS[pick]
    mcpo: Path | None = None
    if args.mcpo:
        if not os.access(args.mcpo, os.X_OK):
            parser.error(f"--mcpo {args.mcpo}: not an executable file")
        mcpo = args.mcpo.resolve()
    elif not args.no_mcpo:
        if os.access(MCPO, os.X_OK):
            mcpo = MCPO
        else:
            print(f"mcpo: not installed at {MCPO}; run bench/install-mcpo to compare with it", file=sys.stderr)
    env = environment(args.http_client, mcpo)
    with tempfile.TemporaryDirectory(prefix="mcphub-bench-") as tmp:
        workdir = Path(tmp)
        print(
            f"throughput: {rounds} rounds per level, log level {args.log_level}, "
            f"HTTP load from {env['load_generator']}, mcpo {env['mcpo']['mcpo'] if mcpo else 'left out'}",
            file=sys.stderr,
        )
        summaries, crunch, memory = anyio.run(
            lambda: throughput(
                quick=args.quick,
                rounds=rounds,
                log_level=args.log_level,
                client=args.http_client,
                mcpo=mcpo,
                extra=[
                    name for name, on in (("hub no auth", args.with_no_auth), ("hub legacy", args.with_legacy)) if on
                ],
                workdir=workdir,
                baseline=args.baseline,
                mcp_sdk_client=args.with_mcp_sdk_client,
            )
        )
        print("cold start:", file=sys.stderr)
        cold = cold_start(args.cold_starts or COLD_STARTS[pick], workdir)
    env["loadavg_at_end"] = os.getloadavg()
    result = report(summaries, crunch, cold, memory)
    print(
        f"load average (1, 5, 15 min): at start {' '.join(f'{x:.2f}' for x in env['loadavg_at_start'])}, "
        f"at end {' '.join(f'{x:.2f}' for x in env['loadavg_at_end'])}"
    )
    document = {
        "environment": env,
        "settings": {
            "quick": args.quick,
            "rounds": rounds,
            "log_level": args.log_level,
            "http_client": args.http_client,
            "calls_per_run": {str(k): v[pick] for k, v in CALLS.items()},
            "warmup": WARMUP,
        },
        "throughput": [
            {k: v for k, v in asdict(s).items() if k != "runs"} | {"runs": [asdict(r) for r in s.runs]}
            for s in summaries
        ],
        "crunch": {
            "work": CRUNCH_WORK,
            "concurrency": CRUNCH_LEVEL,
            "calls_per_run": CRUNCH_CALLS[pick],
            "throughput": [
                {k: v for k, v in asdict(s).items() if k != "runs"} | {"runs": [asdict(r) for r in s.runs]}
                for s in crunch
            ],
        },
        "cold_start": cold,
        "memory": memory,
        **result,
    }
    args.json.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    print(f"\nwritten: {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
