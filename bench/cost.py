"""The cost curve of one box: how the hub's time and memory grow with servers, tools, payloads and callers.

    python bench/cost.py [--quick] [--runs N] [--json out.json] [--only NAME ...]

Each measurement starts its own `mcphub serve` subprocess on 127.0.0.1 (bench/run.py's spawn, readiness
polling and stop), with a fresh config in a temporary directory, and stops it afterwards:

* ready: spawn → first `GET /readyz` 200 with 1, 10 and 50 stdio servers (`python -m bench.server`, forked
  by the hub's launcher: `launch: auto`), and the memory then: the hub's RSS, and the children's (launcher +
  servers) as an RSS sum and as a PSS sum (forked children share their pages with the launcher: the RSS sum
  counts shared pages once per process, PSS divides them among the processes that share them);
* rest: the hub's RSS at rest with the packaged default config (the five bundled servers), 2 s after ready;
* spec: `GET /openapi.json` (the combined spec) with 10, 100 and 1,000 tools (`bench/many_tools.py`): the
  very first fetch (every operation built), then first fetches by other API keys, each allowed every tool
  but one (a scope of its own: documents are cached per scope, so each one's document is built afresh from
  the operations the first fetch built: uncached), then the first key again (cached: the rendered
  document); and the size of the document;
* payload: p50/p99 of `blob` answering 1 kB, 100 kB and 1 MB at c=1 and c=10, with the lean load generator
  (bench/loadgen.py), and the hub's CPU per call;
* slow: 1,000 concurrent calls to `hold` (5 s), one connection each, with hub.limits.max_concurrent_calls
  raised to 2,000 for the bench key: all answered? wall time, the hub's RSS at peak (sampled every 0.2 s)
  and after; then the same again in the same hub (memory kept for reuse, or growing?);
* jwt: `auth.jwt` with an HS256 secret; 10,000 tokens with distinct subjects (--quick: 300) each call once
  in turn, then each fetch the combined spec (100 tools) once in turn; one subject fetches it repeatedly;
  then 200 and 300 fresh subjects each fetch it twice round: below and above MAX_CACHED_SPECS (256) in
  mcphub/app.py, so the second round shows whether the spec cache thrashes (documents are cached per
  scope, and these subjects all have one: it should not); the hub's RSS after each part.

Before measuring, the bytecode of mcphub and the bundled servers is written (`compileall`), as `pip install`
does: otherwise, with PYTHONDONTWRITEBYTECODE set, every hub would compile mcphub in memory at start.
Every loop is bounded in count and time; all traffic is on 127.0.0.1. The machine this was written on has
2 cores shared with other work: each configuration is run --runs times (3; --quick: 1) and the median
shown, with the load average at the start and end. The table goes to stdout, the details to --json.
"""

from __future__ import annotations

import argparse
import compileall
import importlib.util
import json
import os
import resource
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # run.py imports its sibling `loadgen` by that name
    sys.path.insert(0, str(HERE))

import anyio  # noqa: E402
import httpx2  # noqa: E402
import psutil  # noqa: E402
import yaml  # noqa: E402
from joserfc import jwt  # noqa: E402
from joserfc.jwk import OctKey  # noqa: E402
from loadgen import JSONPoster, LoadError  # noqa: E402
from run import _quantile, cpu_seconds, hub_command, hub_ready, spawn, wait_ready  # noqa: E402

REPO = HERE.parent
PYTHON = sys.executable  # the hub's own interpreter: servers run as `PYTHON -m ...` are forked by its launcher
SERVER = ["-m", "bench.server"]
MANY_TOOLS = ["-m", "bench.many_tools"]
READY_TIMEOUT = 120.0  # seconds for a hub to answer /readyz 200 (50 servers on a busy 2-core box)
CALL_TIMEOUT = 60.0  # seconds for one call or one spec fetch
SETTLE = 2.0  # seconds after ready before "at rest" memory is read (the hub finishes its start-up work)
RSS_SAMPLE = 0.2  # seconds between RSS samples during the slow calls
FD_HEADROOM = 200  # file descriptors beyond one per concurrent connection (the hub's own, the test runner's)
JWT_SECRET = "bench-jwt-secret-" + "x" * 32  # HS256 wants at least 32 bytes

# (quick, full) sizes of each measurement
SERVER_COUNTS = ((1, 10, 50), (1, 10, 50))
TOOL_COUNTS = ((10, 100, 1000), (10, 100, 1000))
SPEC_KEYS = (4, 8)  # keys whose first fetch is timed as "uncached" (after the very first fetch, by another key)
SPEC_CACHED = (20, 50)  # cached fetches timed
PAYLOADS = (1_000, 100_000, 1_000_000)
PAYLOAD_LEVELS = (1, 10)
PAYLOAD_CALLS = {1_000: (200, 1000), 100_000: (100, 500), 1_000_000: (30, 150)}  # calls per run per level
SLOW_CALLS = (1000, 1000)
SLOW_SECONDS = 5.0
JWT_SUBJECTS = (300, 10_000)
JWT_CYCLES = (200, 300)  # subjects that fetch the spec twice round: below and above MAX_CACHED_SPECS (256)
JWT_TOOLS = 100  # tools of the JWT hub's server (the spec each subject fetches)
RUNS = (1, 3)
REST_RUNS = (2, 3)

# the targets (#14)
TARGET_READY_50_S = 5.0
TARGET_SPEC_1000_MS = 100.0
TARGET_SLOW_RSS_MIB = 200.0
TARGET_REST_RSS_MIB = 75.0

MIB = 2**20
BYTECODE_PACKAGES = ("mcphub", "mcphub_servers")  # compiled before measuring: see compile_bytecode()


def raise_fd_limit(needed: int) -> int:
    """Raise this process's soft limit on open files to `needed` (within the hard limit); the limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        new = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))  # the hub (a child) inherits it
        soft = new
    return soft


def compile_bytecode() -> list[str]:
    """Write the bytecode of the hub's own packages (mcphub, the bundled servers) as `pip install` does, so
    each hub measured loads it rather than compiling every module in memory at start (with
    PYTHONDONTWRITEBYTECODE set, as on the machine this was written on, nothing else would write it, and
    compiling costs the hub ~2 MiB at start and time). The directories compiled."""
    done = []
    for package in BYTECODE_PACKAGES:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            continue
        for directory in spec.submodule_search_locations:
            compileall.compile_dir(directory, quiet=1)
            done.append(directory)
    return done


# ------------------------------------------------------------------------------------------ a hub


@dataclass
class Hub:
    proc: subprocess.Popen[bytes]
    url: str
    key: str
    started: float  # monotonic, at spawn
    ready: float  # monotonic, at the first /readyz 200

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


def write_config(path: Path, servers: dict[str, list[str]], *, keys: list[str], limits: dict[str, Any] | None = None,
                 auth: dict[str, Any] | None = None, scopes: dict[str, dict[str, Any]] | None = None) -> Path:
    """A hub config: stdio `servers` (name → args of PYTHON, run from the repository root), API `keys`
    (`scopes`: a key's `servers`/`tools`, where it is not every tool)."""
    hub: dict[str, Any] = {"log_level": "warning", "reload": False}
    if limits:
        hub["limits"] = limits
    config: dict[str, Any] = {
        "hub": hub,
        "servers": {
            name: {"transport": "stdio", "command": PYTHON, "args": args, "cwd": str(REPO)}
            for name, args in servers.items()
        },
        "auth": {"api_keys": [{"name": f"bench{i}", "key": k, **(scopes or {}).get(k, {})} for i, k in enumerate(keys)],
                 **(auth or {})},
    }
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


@contextmanager
def hub(workdir: Path, config: Path | None, key: str) -> Iterator[Hub]:
    """`mcphub serve` with `config` (None: the packaged default, from an empty directory), ready."""
    log = workdir / "hub.log"
    cwd = workdir / "empty"
    cwd.mkdir(exist_ok=True)
    args = ("-c", str(config)) if config else ()
    started = time.monotonic()
    with spawn(hub_command(*args), cwd=cwd, log=log) as (proc, url):
        ready = wait_ready(proc, hub_ready(url), what="hub", log=log, timeout=READY_TIMEOUT)
        yield Hub(proc, url, key, started, ready)


def memory(pid: int) -> dict[str, float]:
    """MiB: the hub's RSS, and its children's as an RSS sum and a PSS sum."""
    proc = psutil.Process(pid)
    children_rss = children_pss = 0
    count = 0
    for child in proc.children(recursive=True):
        try:
            info = child.memory_full_info()
        except psutil.Error:
            continue
        children_rss += info.rss
        children_pss += info.pss
        count += 1
    return {
        "hub_rss_mib": round(proc.memory_info().rss / MIB, 1),
        "children": count,
        "children_rss_mib": round(children_rss / MIB, 1),
        "children_pss_mib": round(children_pss / MIB, 1),
    }


def _median(values: list[float]) -> float:
    return round(statistics.median(values), 3)


# ------------------------------------------------------------------------------------- measurements


def measure_ready(workdir: Path, counts: tuple[int, ...], runs: int) -> list[dict[str, Any]]:
    """Spawn → /readyz 200 and memory at that moment, for each server count; medians of `runs`."""
    results = []
    key = secrets.token_urlsafe(24)
    for n in counts:
        config = write_config(workdir / f"ready{n}.yaml", {f"s{i:02d}": SERVER for i in range(n)}, keys=[key])
        samples = []
        for r in range(runs):
            with hub(workdir, config, key) as h:
                mem = memory(h.proc.pid)
                body = httpx2.get(f"{h.url}/readyz", headers=h.headers, timeout=CALL_TIMEOUT).json()
                if len(body["servers"]) != n:
                    raise RuntimeError(f"{n} servers configured, /readyz shows {len(body['servers'])}")
                samples.append({"ready_s": round(h.ready - h.started, 3), **mem})
            print(f"  ready {n:>3} servers, run {r + 1}/{runs}: {samples[-1]}", file=sys.stderr)
        results.append({"servers": n, "runs": samples, **{k: _median([s[k] for s in samples]) for k in samples[0]}})
    return results


def measure_rest(workdir: Path, runs: int) -> dict[str, Any]:
    """The hub's memory at rest (SETTLE after ready) with the packaged default config."""
    samples = []
    for r in range(runs):
        with hub(workdir, None, "") as h:
            time.sleep(SETTLE)  # at rest: nothing to wait for but time
            samples.append({"ready_s": round(h.ready - h.started, 3), **memory(h.proc.pid)})
        print(f"  rest, default config, run {r + 1}/{runs}: {samples[-1]}", file=sys.stderr)
    return {"runs": samples, **{k: _median([s[k] for s in samples]) for k in samples[0]}}


def _timed_get(http: httpx2.Client, url: str, headers: dict[str, str]) -> tuple[float, int]:
    started = time.perf_counter()
    response = http.get(url, headers=headers)
    seconds = time.perf_counter() - started
    if response.status_code != 200:
        raise RuntimeError(f"GET {url}: HTTP {response.status_code} {response.text[:200]}")
    return seconds, len(response.content)


def measure_spec(workdir: Path, counts: tuple[int, ...], keys: int, cached: int, runs: int) -> list[dict[str, Any]]:
    """GET /openapi.json with `count` tools: first ever, first per other key (uncached), repeated (cached)."""
    results = []
    for n in counts:
        samples = []
        for r in range(runs):
            names = [secrets.token_urlsafe(24) for _ in range(keys + 1)]
            # names[0] may call every tool; each other key every tool but one: a scope of its own, so its
            # first fetch builds its document (the documents are cached per scope, not per caller)
            tools = [f"tool_{t:04d}" for t in range(n)]
            scopes = {k: {"tools": tools[:i] + tools[i + 1:]} for i, k in enumerate(names[1:])}
            config = write_config(workdir / f"spec{n}.yaml", {"many": [*MANY_TOOLS, str(n)]}, keys=names,
                                  scopes=scopes)
            with hub(workdir, config, names[0]) as h, httpx2.Client(timeout=CALL_TIMEOUT) as http:
                url = f"{h.url}/openapi.json"
                first, size = _timed_get(http, url, h.headers)
                document = http.get(url, headers=h.headers).json()
                if len(document["paths"]) < n:
                    raise RuntimeError(f"{n} tools served, the spec has {len(document['paths'])} paths")
                uncached = [_timed_get(http, url, {"Authorization": f"Bearer {k}"})[0] for k in names[1:]]
                repeated = [_timed_get(http, url, h.headers)[0] for _ in range(cached)]
                samples.append({
                    "ready_s": round(h.ready - h.started, 3),
                    "first_ms": round(first * 1000, 2),
                    "uncached_ms": round(statistics.median(uncached) * 1000, 2),
                    "cached_ms": round(statistics.median(repeated) * 1000, 2),
                    "bytes": size,
                    "hub_rss_mib": memory(h.proc.pid)["hub_rss_mib"],
                })
            print(f"  spec {n:>4} tools, run {r + 1}/{runs}: {samples[-1]}", file=sys.stderr)
        results.append({"tools": n, "runs": samples, **{k: _median([s[k] for s in samples]) for k in samples[0]}})
    return results


async def _drive(call: Callable[[int], Any], concurrency: int, calls: int) -> list[float]:
    """`calls` calls of `call(i)` from `concurrency` tasks; the latency of each, seconds."""
    latencies: list[float] = []
    counter = iter(range(calls))

    async def worker() -> None:
        for i in counter:
            started = time.perf_counter()
            await call(i)
            latencies.append(time.perf_counter() - started)

    with anyio.fail_after(CALL_TIMEOUT * 5):
        async with anyio.create_task_group() as tg:
            for _ in range(concurrency):
                tg.start_soon(worker)
    assert len(latencies) == calls
    return sorted(latencies)


def blob_call(poster: JSONPoster, size: int) -> Callable[[int], Any]:
    body = b'{"size": %d}' % size

    async def call(i: int) -> None:
        response = await poster.post(body)
        if response.status != 200:
            raise LoadError(f"blob call {i}: HTTP {response.status} {response.body[:200]!r}")
        if len(response.body) != size + 2 or not response.body.startswith(b'"xxx'):  # a JSON string of `size` x
            raise LoadError(f"blob call {i}: expected a JSON string of {size} bytes, got {len(response.body)} bytes")

    return call


async def _payload_runs(h: Hub, sizes: tuple[int, ...], levels: tuple[int, ...], calls: dict[int, int]
                        ) -> list[dict[str, Any]]:
    proc = psutil.Process(h.proc.pid)
    out = []
    for size in sizes:
        for level in levels:
            async with JSONPoster(f"{h.url}/many/blob", concurrency=level, api_key=h.key) as poster:
                call = blob_call(poster, size)
                await _drive(call, level, min(level * 5, calls[size]))  # warm-up: connections, buffers
                cpu = cpu_seconds(proc)
                started = time.perf_counter()
                latencies = await _drive(call, level, calls[size])
                seconds = time.perf_counter() - started
                out.append({
                    "bytes": size, "concurrency": level, "calls": calls[size],
                    "rps": round(calls[size] / seconds, 1),
                    "p50_ms": round(_quantile(latencies, 0.5) * 1000, 2),
                    "p99_ms": round(_quantile(latencies, 0.99) * 1000, 2),
                    "hub_cpu_ms_per_call": round((cpu_seconds(proc) - cpu) / calls[size] * 1000, 3),
                })
    out_mem = memory(h.proc.pid)["hub_rss_mib"]
    for row in out:
        row["hub_rss_after_mib"] = out_mem
    return out


def measure_payload(workdir: Path, sizes: tuple[int, ...], levels: tuple[int, ...], calls: dict[int, int],
                    runs: int) -> list[dict[str, Any]]:
    key = secrets.token_urlsafe(24)
    config = write_config(workdir / "payload.yaml", {"many": [*MANY_TOOLS, "0", "--payload"]}, keys=[key])
    all_runs = []
    for r in range(runs):
        with hub(workdir, config, key) as h:
            rows = anyio.run(_payload_runs, h, sizes, levels, calls)
        for row in rows:
            print(f"  payload run {r + 1}/{runs}: {row}", file=sys.stderr)
        all_runs.append(rows)
    results = []
    for i, row in enumerate(all_runs[0]):
        mine = [rows[i] for rows in all_runs]
        merged = {k: _median([m[k] for m in mine]) for k in ("rps", "p50_ms", "p99_ms", "hub_cpu_ms_per_call")}
        results.append({**row, **merged, "runs": mine})
    return results


async def _slow_run(h: Hub, calls: int, seconds: float) -> dict[str, Any]:
    proc = psutil.Process(h.proc.pid)
    before = memory(h.proc.pid)["hub_rss_mib"]
    peak = before
    answered = 0
    failures: list[str] = []
    body = json.dumps({"seconds": seconds}).encode()
    async with JSONPoster(f"{h.url}/many/hold", concurrency=calls, api_key=h.key,
                          timeout=CALL_TIMEOUT + seconds) as poster:
        done = anyio.Event()

        async def one(i: int) -> None:
            nonlocal answered
            try:
                response = await poster.post(body)
            except LoadError as e:
                failures.append(f"call {i}: {e}")
                return
            if response.status == 200 and response.body == b'"held"':
                answered += 1
            else:
                failures.append(f"call {i}: HTTP {response.status} {response.body[:120]!r}")

        async def sample() -> None:
            nonlocal peak
            while not done.is_set():
                peak = max(peak, proc.memory_info().rss / MIB)
                with anyio.move_on_after(RSS_SAMPLE):
                    await done.wait()

        started = time.perf_counter()
        with anyio.fail_after(CALL_TIMEOUT + seconds * 3):
            async with anyio.create_task_group() as outer:
                outer.start_soon(sample)
                async with anyio.create_task_group() as tg:
                    for i in range(calls):
                        tg.start_soon(one, i)
                done.set()
        wall = time.perf_counter() - started
    after = memory(h.proc.pid)["hub_rss_mib"]
    return {
        "calls": calls, "hold_s": seconds, "answered": answered, "failed": len(failures),
        "failures": failures[:5], "wall_s": round(wall, 2),
        "hub_rss_before_mib": before, "hub_rss_peak_mib": round(peak, 1), "hub_rss_after_mib": after,
    }


def measure_slow(workdir: Path, calls: int, seconds: float, runs: int) -> dict[str, Any]:
    raise_fd_limit(calls + FD_HEADROOM)
    key = secrets.token_urlsafe(24)
    config = write_config(workdir / "slow.yaml", {"many": [*MANY_TOOLS, "0", "--payload"]}, keys=[key],
                          limits={"max_concurrent_calls": calls * 2})
    samples = []
    for r in range(runs):
        with hub(workdir, config, key) as h:
            first = anyio.run(_slow_run, h, calls, seconds)
            again = anyio.run(_slow_run, h, calls, seconds)  # the same again: is what stayed reused, or leaked?
        samples.append(first | {"again_answered": again["answered"], "again_rss_peak_mib": again["hub_rss_peak_mib"],
                                "again_rss_after_mib": again["hub_rss_after_mib"]})
        print(f"  slow run {r + 1}/{runs}: {samples[-1]}", file=sys.stderr)
    keys = ("answered", "failed", "wall_s", "hub_rss_before_mib", "hub_rss_peak_mib", "hub_rss_after_mib",
            "again_answered", "again_rss_peak_mib", "again_rss_after_mib")
    return {"calls": calls, "hold_s": seconds, "runs": samples, **{k: _median([s[k] for s in samples]) for k in keys}}


def hs256(subject: str) -> str:
    claims = {"sub": subject, "exp": int(time.time()) + 3600}
    return jwt.encode({"alg": "HS256"}, claims, OctKey.import_key(JWT_SECRET), algorithms=["HS256"])


def measure_jwt(workdir: Path, subjects: int, cycles: tuple[int, ...], tools: int) -> dict[str, Any]:
    """JWT callers with distinct subjects: `subjects` of them call once each, in turn, then fetch the
    combined spec once each, in turn; then, for each size in `cycles`, that many fresh subjects fetch it
    twice round (does the second round hit the per-caller cache?); and one subject fetches it repeatedly.
    Milliseconds per call / fetch, and the hub's RSS after each part."""
    config = write_config(workdir / "jwt.yaml", {"many": [*MANY_TOOLS, str(tools)]}, keys=[],
                          auth={"jwt": {"secret": JWT_SECRET}})
    body = {"name": "a", "limit": 1, "order": "asc"}
    with hub(workdir, config, "") as h, httpx2.Client(timeout=CALL_TIMEOUT) as http:
        proc = psutil.Process(h.proc.pid)
        call_url, spec_url = f"{h.url}/many/tool_0000", f"{h.url}/openapi.json"

        def timed(method: str, url: str, token: str) -> float:
            started = time.perf_counter()
            response = http.request(method, url, headers={"Authorization": f"Bearer {token}"},
                                    json=body if method == "POST" else None)
            if response.status_code != 200:
                raise RuntimeError(f"{method} {url}: HTTP {response.status_code} {response.text[:200]}")
            return time.perf_counter() - started

        def rss() -> float:
            return round(proc.memory_info().rss / MIB, 1)

        def ms(values: list[float], q: float) -> float:
            return round(_quantile(sorted(values), q) * 1000, 2)

        tokens = [hs256(f"user-{i:05d}") for i in range(subjects)]
        result: dict[str, Any] = {"subjects": subjects, "tools": tools, "hub_rss_start_mib": rss()}
        calls = [timed("POST", call_url, t) for t in tokens]
        result |= {"call_p50_ms": ms(calls, 0.5), "call_p99_ms": ms(calls, 0.99), "hub_rss_after_calls_mib": rss()}
        specs = [timed("GET", spec_url, t) for t in tokens]
        result |= {"spec_p50_ms": ms(specs, 0.5), "spec_p99_ms": ms(specs, 0.99), "hub_rss_after_specs_mib": rss()}
        one = [timed("GET", spec_url, tokens[0]) for _ in range(50)]
        result["spec_one_subject_p50_ms"] = ms(one, 0.5)
        result["cycles"] = []
        for size in cycles:
            fresh = [hs256(f"cycle{size}-{i:05d}") for i in range(size)]
            rounds = [[timed("GET", spec_url, t) for t in fresh] for _ in range(2)]
            result["cycles"].append({"subjects": size, "first_round_p50_ms": ms(rounds[0], 0.5),
                                     "second_round_p50_ms": ms(rounds[1], 0.5), "hub_rss_mib": rss()})
    print(f"  jwt: {result}", file=sys.stderr)
    return result


# ----------------------------------------------------------------------------------------- report


def report(results: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    lines: list[str] = []
    targets: list[dict[str, Any]] = []

    def target(text: str, ok: bool, value: str) -> None:
        targets.append({"target": text, "met": ok, "value": value})

    if "ready" in results:
        lines += ["servers | ready s | hub RSS MiB | children | children RSS MiB | children PSS MiB",
                  "---|---|---|---|---|---"]
        for row in results["ready"]:
            lines.append(f"{row['servers']} | {row['ready_s']:.2f} | {row['hub_rss_mib']:.1f} | "
                         f"{row['children']:.0f} | {row['children_rss_mib']:.1f} | {row['children_pss_mib']:.1f}")
        fifty = [r for r in results["ready"] if r["servers"] == 50]
        if fifty:
            target("50 servers ready < 5 s", fifty[0]["ready_s"] < TARGET_READY_50_S, f"{fifty[0]['ready_s']:.2f} s")
        lines.append("")
    if "rest" in results:
        rest = results["rest"]
        lines.append(f"default config at rest: hub RSS {rest['hub_rss_mib']:.1f} MiB, children "
                     f"{rest['children']:.0f} (RSS {rest['children_rss_mib']:.1f}, PSS {rest['children_pss_mib']:.1f} "
                     f"MiB), ready {rest['ready_s']:.2f} s")
        target("hub RSS at rest, default config < 75 MiB", rest["hub_rss_mib"] < TARGET_REST_RSS_MIB,
               f"{rest['hub_rss_mib']:.1f} MiB")
        lines.append("")
    if "spec" in results:
        lines += ["tools | spec bytes | first fetch ms | uncached ms | cached ms | ready s | hub RSS MiB",
                  "---|---|---|---|---|---|---"]
        for row in results["spec"]:
            lines.append(f"{row['tools']} | {row['bytes']:,.0f} | {row['first_ms']:.1f} | {row['uncached_ms']:.1f} | "
                         f"{row['cached_ms']:.1f} | {row['ready_s']:.2f} | {row['hub_rss_mib']:.1f}")
        big = [r for r in results["spec"] if r["tools"] == 1000]
        if big:
            target("1,000-tool combined spec < 100 ms (uncached)", big[0]["uncached_ms"] < TARGET_SPEC_1000_MS,
                   f"{big[0]['uncached_ms']:.1f} ms (first ever {big[0]['first_ms']:.1f} ms, "
                   f"cached {big[0]['cached_ms']:.1f} ms)")
        lines.append("")
    if "payload" in results:
        lines += ["result | conc | req/s | p50 ms | p99 ms | hub CPU ms/call", "---|---|---|---|---|---"]
        for row in results["payload"]:
            lines.append(f"{row['bytes']:,} B | {row['concurrency']} | {row['rps']:.0f} | {row['p50_ms']:.2f} | "
                         f"{row['p99_ms']:.2f} | {row['hub_cpu_ms_per_call']:.2f}")
        lines.append(f"hub RSS after the payload runs: {results['payload'][-1]['hub_rss_after_mib']:.1f} MiB")
        lines.append("")
    if "slow" in results:
        s = results["slow"]
        lines.append(f"{s['calls']} concurrent calls holding {s['hold_s']:g} s: {s['answered']:.0f} answered, "
                     f"{s['failed']:.0f} failed, all done in {s['wall_s']:.2f} s; hub RSS before "
                     f"{s['hub_rss_before_mib']:.1f}, peak {s['hub_rss_peak_mib']:.1f}, after "
                     f"{s['hub_rss_after_mib']:.1f} MiB; the same again in that hub: {s['again_answered']:.0f} "
                     f"answered, RSS peak {s['again_rss_peak_mib']:.1f}, after {s['again_rss_after_mib']:.1f} MiB")
        target(f"{s['calls']} slow calls all answered, hub RSS < 200 MiB",
               s["answered"] == s["calls"] and s["hub_rss_peak_mib"] < TARGET_SLOW_RSS_MIB,
               f"{s['answered']:.0f}/{s['calls']}, peak {s['hub_rss_peak_mib']:.1f} MiB")
        lines.append("")
    if "jwt" in results:
        j = results["jwt"]
        lines.append(f"JWT, {j['subjects']:,} subjects calling in turn: p50 {j['call_p50_ms']:.2f} ms, "
                     f"p99 {j['call_p99_ms']:.2f} ms; hub RSS {j['hub_rss_start_mib']:.1f} → "
                     f"{j['hub_rss_after_calls_mib']:.1f} MiB")
        lines.append(f"JWT, the same subjects fetching the combined spec ({j['tools']} tools) in turn: p50 "
                     f"{j['spec_p50_ms']:.2f} ms, p99 {j['spec_p99_ms']:.2f} ms (one subject again and again: "
                     f"{j['spec_one_subject_p50_ms']:.2f} ms); hub RSS after {j['hub_rss_after_specs_mib']:.1f} MiB")
        for c in j["cycles"]:
            lines.append(f"JWT, {c['subjects']} subjects fetching the spec twice round: second round p50 "
                         f"{c['second_round_p50_ms']:.2f} ms (first {c['first_round_p50_ms']:.2f}); "
                         f"hub RSS {c['hub_rss_mib']:.1f} MiB")
        lines.append("")
    for t in targets:
        lines.append(f"[{'met' if t['met'] else 'MISSED':>6}] {t['target']}: {t['value']}")
    return "\n".join(lines), targets


MEASUREMENTS = ("ready", "rest", "spec", "payload", "slow", "jwt")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one run each, fewer calls and subjects (< 2 min)")
    parser.add_argument("--runs", type=int, help="runs of each configuration (default 1 quick, 3 full)")
    parser.add_argument("--json", type=Path, default=HERE / "results-cost.json",
                        help="where to write the results (default: %(default)s)")
    parser.add_argument("--only", nargs="+", choices=MEASUREMENTS, help="only these measurements")
    args = parser.parse_args(argv)
    pick = 0 if args.quick else 1
    runs = args.runs or RUNS[pick]
    chosen = args.only or MEASUREMENTS
    compiled = compile_bytecode()
    load_start = os.getloadavg()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="mcphub-cost-") as tmp:
        workdir = Path(tmp)
        if "ready" in chosen:
            results["ready"] = measure_ready(workdir, SERVER_COUNTS[pick], runs)
        if "rest" in chosen:
            results["rest"] = measure_rest(workdir, args.runs or REST_RUNS[pick])
        if "spec" in chosen:
            results["spec"] = measure_spec(workdir, TOOL_COUNTS[pick], SPEC_KEYS[pick], SPEC_CACHED[pick], runs)
        if "payload" in chosen:
            calls = {size: c[pick] for size, c in PAYLOAD_CALLS.items()}
            results["payload"] = measure_payload(workdir, PAYLOADS, PAYLOAD_LEVELS, calls, runs)
        if "slow" in chosen:
            results["slow"] = measure_slow(workdir, SLOW_CALLS[pick], SLOW_SECONDS, runs)
        if "jwt" in chosen:
            results["jwt"] = measure_jwt(workdir, JWT_SUBJECTS[pick], JWT_CYCLES, JWT_TOOLS)
    load_end = os.getloadavg()
    table, targets = report(results)
    print(table)
    print(f"load average (1, 5, 15 min): at start {' '.join(f'{x:.2f}' for x in load_start)}, "
          f"at end {' '.join(f'{x:.2f}' for x in load_end)}")
    document = {
        "environment": {"python": sys.version.split()[0], "cpus": os.cpu_count(), "loadavg_at_start": load_start,
                        "loadavg_at_end": load_end, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")},
        "settings": {"quick": args.quick, "runs": runs, "bytecode_compiled": compiled},
        **results,
        "targets": targets,
        "table": table,
    }
    args.json.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    print(f"\nwritten: {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
