"""mcphub benchmark: the hub against a direct MCP session on the same stdio server, on this machine.

    python bench/run.py [--quick] [--json out.json] [--rounds N] [--log-level info|warning]

What it measures, for the trivial tool `add` of `bench/server.py` (an async MCPServer tool, no output
schema, so no output validation on either path):

* requests/s and p50/p99 latency at concurrency 1, 10 and 50
  - direct: one SDK `Client` over stdio in this process, `call_tool` from C concurrent tasks (the ceiling:
    what the hub itself does per call, minus HTTP);
  - hub: a real `mcphub serve` subprocess serving the same server, called over loopback HTTP with an
    httpx2 client whose pool holds C connections;
  - hub, replicas: 2: the same with a pool of two server processes;
  Rounds are interleaved (direct, hub, hub×2 per level, per round) so drift on a noisy machine hits all
  three alike; the table shows the median over rounds.
* cold start: `mcphub serve` with the packaged default config (the five bundled servers), from spawn to
  the first `GET /readyz` = 200; median of N runs.
* the hub process's RSS (psutil) after the load, and its children's.

The load generator runs in this process: the hub never shares its event loop. On a 2-core machine the
generator, the hub and the server compete for the CPU; the figures are for one machine, one run.
Every loop is bounded in count and time; all traffic is on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import anyio
import httpx2
import psutil
import yaml
from mcp import Client, StdioServerParameters

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SERVER = [sys.executable, str(HERE / "server.py")]
LEVELS = (1, 10, 50)
READY_TIMEOUT = 60.0  # seconds for a hub to answer /readyz 200 (five python servers on a busy 2-core box)
STOP_TIMEOUT = 20.0  # seconds for a hub to exit after SIGTERM
RUN_TIMEOUT = 300.0  # seconds any single measured run may take before the benchmark gives up
POLL = 0.005  # seconds between /readyz polls when timing a cold start

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


def direct_call(client: Client) -> Call:
    async def call(i: int) -> None:
        result = await client.call_tool("add", {"a": i, "b": 1})
        text = result.content[0].text  # type: ignore[union-attr]
        if result.is_error or text != str(i + 1):
            raise RuntimeError(f"direct call {i}: unexpected result {result!r}")

    return call


def hub_call(http: httpx2.AsyncClient) -> Call:
    async def call(i: int) -> None:
        response = await http.post("/bench/add", json={"a": i, "b": 1})
        if response.status_code != 200 or response.json() != i + 1:
            raise RuntimeError(f"hub call {i}: HTTP {response.status_code} {response.text[:200]}")

    return call


# ------------------------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = READY_TIMEOUT) -> float:
    """Poll GET /readyz until 200; returns the monotonic time it first answered 200."""
    deadline = time.monotonic() + timeout
    with httpx2.Client(timeout=5) as http:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"hub exited with {proc.returncode} before it was ready")
            try:
                if http.get(f"{url}/readyz").status_code == 200:
                    return time.monotonic()
            except httpx2.TransportError:
                pass
            time.sleep(POLL)
    raise RuntimeError(f"hub at {url} not ready within {timeout:g}s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=STOP_TIMEOUT)


@contextmanager
def hub_process(args: list[str], *, cwd: Path, log: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    port = free_port()
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mcphub", "serve", "--port", str(port), *args],
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield proc, f"http://127.0.0.1:{port}"
    finally:
        stop(proc)


def bench_config(path: Path, *, replicas: int, log_level: str) -> Path:
    server = {"transport": "stdio", "command": SERVER[0], "args": SERVER[1:], "replicas": replicas}
    path.write_text(
        yaml.safe_dump({"hub": {"log_level": log_level, "reload": False}, "servers": {"bench": server}}),
        encoding="utf-8",
    )
    return path


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


# ------------------------------------------------------------------------------------- scenarios


async def throughput(quick: bool, rounds: int, log_level: str, workdir: Path) -> tuple[list[Summary], dict[str, Any]]:
    pick = 0 if quick else 1
    log = workdir / "hub.log"
    one = bench_config(workdir / "one.yaml", replicas=1, log_level=log_level)
    two = bench_config(workdir / "two.yaml", replicas=2, log_level=log_level)
    runs: list[Run] = []
    memory: dict[str, Any] = {}
    params = StdioServerParameters(command=SERVER[0], args=SERVER[1:])
    with (
        hub_process(["-c", str(one)], cwd=workdir, log=log) as (proc1, url1),
        hub_process(["-c", str(two)], cwd=workdir, log=log) as (proc2, url2),
    ):
        wait_ready(url1, proc1)
        wait_ready(url2, proc2)
        memory["hub_idle_rss_mib"] = round(rss_mib(proc1.pid)[0], 1)
        async with Client(params, cache=None) as client:
            me = psutil.Process()
            direct_server = next(p for p in me.children() if p.pid not in (proc1.pid, proc2.pid))
            hub1, hub2 = psutil.Process(proc1.pid), psutil.Process(proc2.pid)
            processes = {
                "direct": {"server": direct_server},
                "hub": {"hub": hub1, "server": hub1.children()[0]},
                "hub replicas=2": {"hub": hub2, "server": hub2.children()[0], "server 2": hub2.children()[1]},
            }
            for level in LEVELS:
                limits = httpx2.Limits(max_connections=level, max_keepalive_connections=level)
                async with (
                    httpx2.AsyncClient(base_url=url1, limits=limits, timeout=60) as http1,
                    httpx2.AsyncClient(base_url=url2, limits=limits, timeout=60) as http2,
                ):
                    targets = {"direct": direct_call(client), "hub": hub_call(http1), "hub replicas=2": hub_call(http2)}
                    for name, call in targets.items():  # warm-up: connections, imports, caches
                        await measure(name, call, level, WARMUP)
                    for r in range(rounds):
                        for name, call in targets.items():
                            run = await measure(name, call, level, CALLS[level][pick], processes[name])
                            runs.append(run)
                            print(
                                f"  round {r + 1}/{rounds} c={level:<3} {name:<15} {run.rps:8.0f} req/s "
                                f"p50 {run.p50_ms:6.2f} ms  p99 {run.p99_ms:6.2f} ms",
                                file=sys.stderr,
                            )
        own1, children1 = rss_mib(proc1.pid)
        own2, children2 = rss_mib(proc2.pid)
        memory.update(
            hub_rss_mib=round(own1, 1),
            hub_children_rss_mib=round(children1, 1),
            hub_replicas2_rss_mib=round(own2, 1),
            hub_replicas2_children_rss_mib=round(children2, 1),
        )
    summaries = []
    for level in LEVELS:
        for name in ("direct", "hub", "hub replicas=2"):
            mine = [r for r in runs if r.target == name and r.concurrency == level]
            cpu = {
                role: round(statistics.median(r.cpu_ms_per_call[role] for r in mine), 3)
                for role in mine[0].cpu_ms_per_call
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
    return summaries, memory


def cold_start(runs: int, workdir: Path) -> dict[str, Any]:
    """`mcphub serve` with the packaged default config: spawn → first /readyz 200, `runs` times."""
    empty = workdir / "cold"  # no ./mcphub.yaml here, so serve uses the packaged default
    empty.mkdir(exist_ok=True)
    seconds = []
    for i in range(runs):
        started = time.monotonic()
        with hub_process([], cwd=empty, log=workdir / "cold.log") as (proc, url):
            ready_at = wait_ready(url, proc)
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


def report(summaries: list[Summary], cold: dict[str, Any], memory: dict[str, Any]) -> dict[str, Any]:
    by = {(s.target, s.concurrency): s for s in summaries}
    lines = [
        f"{'target':<16}{'conc':>5}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'÷ direct':>10}"
        f"{'CPU ms/call: client':>21}{'hub':>7}{'server(s)':>10}"
    ]
    for level in LEVELS:
        direct = by[("direct", level)]
        for name in ("direct", "hub", "hub replicas=2"):
            s = by[(name, level)]
            ratio = "" if name == "direct" else f"{s.rps / direct.rps:.2f}"
            cpu = s.cpu_ms_per_call
            servers = sum(v for k, v in cpu.items() if k.startswith("server"))
            hub = f"{cpu['hub']:.2f}" if "hub" in cpu else "-"
            lines.append(
                f"{name:<16}{level:>5}{s.rps:>9.0f}{s.p50_ms:>9.2f}{s.p99_ms:>9.2f}{ratio:>10}"
                f"{cpu['load generator']:>21.2f}{hub:>7}{servers:>10.2f}"
            )
    added_p50 = by[("hub", 1)].p50_ms - by[("direct", 1)].p50_ms
    ratios = {
        "hub_over_direct_rps_c50": by[("hub", 50)].rps / by[("direct", 50)].rps,
        "hub_replicas2_over_direct_rps_c50": by[("hub replicas=2", 50)].rps / by[("direct", 50)].rps,
        "added_p50_ms_c1": added_p50,
    }
    targets = [
        (
            "hub throughput at c=50 ≥ 0.9 × direct",
            ratios["hub_over_direct_rps_c50"] >= 0.9,
            f"{ratios['hub_over_direct_rps_c50']:.2f}×",
        ),
        ("p50 added latency at c=1 < 1 ms", added_p50 < 1.0, f"{added_p50:.2f} ms"),
        (
            "replicas: 2 at c=50 > direct single session",
            ratios["hub_replicas2_over_direct_rps_c50"] > 1.0,
            f"{ratios['hub_replicas2_over_direct_rps_c50']:.2f}×",
        ),
        ("ready with five servers < 2 s", cold["median_s"] < 2.0, f"{cold['median_s']:.2f} s"),
        ("hub RSS after load < 100 MiB", memory["hub_rss_mib"] < 100, f"{memory['hub_rss_mib']:.1f} MiB"),
    ]
    lines.append("")
    lines.append(
        f"cold start to /readyz 200, {len(cold['servers'])} bundled servers: median "
        f"{cold['median_s']:.2f} s over {len(cold['runs'])} runs ({', '.join(f'{s:.2f}' for s in cold['runs'])})"
    )
    lines.append(
        f"hub RSS: idle {memory['hub_idle_rss_mib']} MiB, after load {memory['hub_rss_mib']} MiB "
        f"(its server: {memory['hub_children_rss_mib']} MiB); replicas=2 hub {memory['hub_replicas2_rss_mib']} "
        f"MiB (servers: {memory['hub_replicas2_children_rss_mib']} MiB)"
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


def environment() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "loadavg_at_start": os.getloadavg(),
        "mcp": metadata.version("mcp"),
        "mcphub": metadata.version("mcphub"),
        "httpx2": metadata.version("httpx2"),
        "uvicorn": metadata.version("uvicorn"),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls, rounds and cold starts (~1 min)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--rounds", type=int, help="rounds per concurrency level (default 3 quick, 5 full)")
    parser.add_argument("--cold-starts", type=int, help="cold starts to time (default 3 quick, 7 full)")
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="the hub's log level (info, the default, writes an access line per call)",
    )
    args = parser.parse_args(argv)
    pick = 0 if args.quick else 1
    rounds = args.rounds or ROUNDS[pick]
    env = environment()
    with tempfile.TemporaryDirectory(prefix="mcphub-bench-") as tmp:
        workdir = Path(tmp)
        print(f"throughput: {rounds} rounds per level, hub log level {args.log_level}", file=sys.stderr)
        summaries, memory = anyio.run(throughput, args.quick, rounds, args.log_level, workdir)
        print("cold start:", file=sys.stderr)
        cold = cold_start(args.cold_starts or COLD_STARTS[pick], workdir)
    result = report(summaries, cold, memory)
    if args.json:
        document = {
            "environment": env,
            "settings": {
                "quick": args.quick,
                "rounds": rounds,
                "hub_log_level": args.log_level,
                "calls_per_run": {str(k): v[pick] for k, v in CALLS.items()},
                "warmup": WARMUP,
            },
            "throughput": [
                {k: v for k, v in asdict(s).items() if k != "runs"} | {"runs": [asdict(r) for r in s.runs]}
                for s in summaries
            ],
            "cold_start": cold,
            "memory": memory,
            **result,
        }
        args.json.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
        print(f"\nwritten: {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
