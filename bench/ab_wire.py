"""A/B of two uvicorn HTTP protocols under the hub: hub CPU per call and req/s, interleaved rounds.

    python bench/ab_wire.py [--rounds 12] [--a HTTP] [--b HTTP] [--levels 50,1] [--calls 50=3000,1=1000]
                            [--log-level info] [--json out.json]

Two `mcphub serve` processes with the same config (one stdio `bench/server.py`, an API key) differ only
in the `http=` their uvicorn.Config gets: A and B, each a uvicorn name (`httptools`, `h11`, `auto`), an
import string `module:Class`, or `git:REV:PATH:Class` (that file as it was at commit REV, imported by the
hub from a temporary directory). Written for issue 11's question about mcphub/wire.py, the combined-write
protocol (A, by default from the last commit that had it; it was deleted after this A/B), against
uvicorn's own httptools (B); usable for any two protocols.

Each hub runs through a shim (`python -c SHIM serve ...`) that makes every `uvicorn.Config` use the
given `http=` whatever serve.py passes, then runs `python -m mcphub` as usual; it writes the protocol
class uvicorn actually loaded to the hub's log, and this script refuses to measure until it has read
that line for both hubs.

Per concurrency level, per round: A and B each take `calls` calls from bench/loadgen.py (the lean client,
one keep-alive connection per concurrent caller), with the order alternating (A,B then B,A) so neither
always runs first; the CPU time of each hub process (user + system, psutil) over its run ÷ calls is its
CPU per call. The report gives, per level and target, the median, min-max and IQR over rounds, and the
ratio A ÷ B of the medians; and the per-round paired ratio A ÷ B (same round, adjacent in time) with its
median and min-max, which is the figure to judge against the noise. Load average at start and end.

On a shared 2-core machine keep rounds short (a few seconds each) and many (>= 10). Every wait is bounded.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import AsyncExitStack, ExitStack
from pathlib import Path
from typing import Any

import anyio
import psutil
from run import (
    READY_TIMEOUT,
    Proxy,
    Run,
    bench_config,
    bench_servers,
    http_target,
    hub_ready,
    measure,
    spawn,
    wait_ready,
)

HERE = Path(__file__).resolve().parent
WIRE = "git:9f4e367:mcphub/wire.py:CombiningHttpToolsProtocol"  # the last commit with mcphub/wire.py
WARMUP = 300  # calls per hub per level before the first round: connections, caches, the server's JIT-less warm state
PROTOCOL_LINE = "ab_wire: uvicorn http protocol "

# Runs in each hub process: force uvicorn.Config(http=...), report the class uvicorn loads, then run
# `python -m mcphub` (its __main__ turns the collector off for the imports, as the console script does).
SHIM = f"""
import gc, runpy, sys
gc.disable()
import uvicorn
_http, _path = sys.argv.pop(1), sys.argv.pop(1)
if _path:
    sys.path.insert(0, _path)
_init, _load = uvicorn.Config.__init__, uvicorn.Config.load
def __init__(self, *args, **kwargs):
    kwargs["http"] = _http
    _init(self, *args, **kwargs)
def load(self):
    _load(self)
    cls = self.http_protocol_class
    print("{PROTOCOL_LINE}" + cls.__module__ + ":" + cls.__qualname__, file=sys.stderr, flush=True)
uvicorn.Config.__init__, uvicorn.Config.load = __init__, load
sys.argv[0] = "mcphub"
runpy.run_module("mcphub", run_name="__main__", alter_sys=True)
"""


def shim_command(http: str, path: str, config: Path) -> Any:
    return lambda port: [sys.executable, "-c", SHIM, http, path, "serve", "--port", str(port), "-c", str(config)]


def resolve(http: str, name: str, workdir: Path) -> tuple[str, str]:
    """(uvicorn's http=, a directory the hub must import it from, or ""). `git:REV:PATH:Class` is written
    out from the repository into `workdir` as module `candidate_<name>`."""
    if not http.startswith("git:"):
        return http, ""
    try:
        _, rev, path, cls = http.split(":")
    except ValueError:
        raise SystemExit(f"--{name.lower()} {http!r}: expected git:REV:PATH:Class") from None
    shown = subprocess.run(["git", "-C", str(HERE.parent), "show", f"{rev}:{path}"], capture_output=True, text=True)
    if shown.returncode != 0:
        raise SystemExit(f"--{name.lower()} {http!r}: git show {rev}:{path} failed: {shown.stderr.strip()}")
    module = f"candidate_{name.lower()}"
    (workdir / f"{module}.py").write_text(shown.stdout, encoding="utf-8")
    return f"{module}:{cls}", str(workdir)


def loaded_protocol(log: Path) -> str | None:
    for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
        if PROTOCOL_LINE in line:
            return line.split(PROTOCOL_LINE, 1)[1].strip()
    return None


def _spread(values: list[float]) -> dict[str, float]:
    q = statistics.quantiles(values, n=4) if len(values) >= 2 else [values[0]] * 3
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "q1": q[0],
        "q3": q[2],
    }


async def rounds(
    proxies: dict[str, Proxy], levels: list[int], calls: dict[int, int], count: int
) -> dict[int, list[tuple[Run, Run]]]:
    """Per level: `count` rounds of (A's run, B's run), A and B alternating which goes first."""
    roles = {name: {"proxy": psutil.Process(p.proc.pid)} for name, p in proxies.items()}
    results: dict[int, list[tuple[Run, Run]]] = {}
    for level in levels:
        async with AsyncExitStack() as stack:
            targets = {name: await http_target(stack, p, level, "lean") for name, p in proxies.items()}
            for name, target in targets.items():
                await target.refresh()
                await measure(name, target.call, level, WARMUP)
            pairs = []
            for r in range(count):
                order = ["A", "B"] if r % 2 == 0 else ["B", "A"]
                got: dict[str, Run] = {}
                for name in order:
                    await targets[name].refresh()
                    got[name] = await measure(name, targets[name].call, level, calls[level], roles[name])
                a, b = got["A"], got["B"]
                pairs.append((a, b))
                print(
                    f"  c={level:<3} round {r + 1:>2}/{count} ({''.join(order)})  "
                    f"A {a.rps:7.0f} req/s {a.cpu_ms_per_call['proxy']:.3f} ms CPU/call   "
                    f"B {b.rps:7.0f} req/s {b.cpu_ms_per_call['proxy']:.3f} ms CPU/call   "
                    f"A÷B cpu {a.cpu_ms_per_call['proxy'] / b.cpu_ms_per_call['proxy']:.3f} rps {a.rps / b.rps:.3f}",
                    file=sys.stderr,
                )
            results[level] = pairs
    return results


def summarise(results: dict[int, list[tuple[Run, Run]]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for level, pairs in results.items():
        entry: dict[str, Any] = {"rounds": len(pairs)}
        for metric, get in (
            ("hub_cpu_ms_per_call", lambda r: r.cpu_ms_per_call["proxy"]),
            ("loadgen_cpu_ms_per_call", lambda r: r.cpu_ms_per_call["load generator"]),
            ("rps", lambda r: r.rps),
            ("p50_ms", lambda r: r.p50_ms),
        ):
            a = [get(p[0]) for p in pairs]
            b = [get(p[1]) for p in pairs]
            sa, sb = _spread(a), _spread(b)
            entry[metric] = {
                "A": sa,
                "B": sb,
                "ratio_of_medians": sa["median"] / sb["median"],
                "paired_ratio": _spread([x / y for x, y in zip(a, b, strict=True)]),
                "A_runs": a,
                "B_runs": b,
            }
        out[f"c{level}"] = entry
    return out


def report(summary: dict[str, Any], env: dict[str, Any]) -> str:
    lines = [
        f"A = {env['A']} (loaded: {env['A_loaded']})",
        f"B = {env['B']} (loaded: {env['B_loaded']})",
        f"load average (1, 5, 15 min): start {env['loadavg_start']}, end {env['loadavg_end']}; "
        f"{env['cpus']} CPUs; log level {env['log_level']}",
        "",
        f"{'level':<6}{'metric':<24}{'A median [min-max] (IQR)':<44}{'B median [min-max] (IQR)':<44}"
        f"{'A÷B medians':>12}   paired A÷B median [min-max]",
    ]
    for level, entry in summary.items():
        for metric in ("hub_cpu_ms_per_call", "rps", "loadgen_cpu_ms_per_call", "p50_ms"):
            m = entry[metric]

            def cell(s: dict[str, float]) -> str:
                return f"{s['median']:.3f} [{s['min']:.3f}-{s['max']:.3f}] ({s['q1']:.3f}-{s['q3']:.3f})"

            p = m["paired_ratio"]
            lines.append(
                f"{level:<6}{metric:<24}{cell(m['A']):<44}{cell(m['B']):<44}{m['ratio_of_medians']:>12.3f}   "
                f"{p['median']:.3f} [{p['min']:.3f}-{p['max']:.3f}]"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--a", default=WIRE, help="hub A's uvicorn http= (default: %(default)s)")
    parser.add_argument("--b", default="httptools", help="hub B's uvicorn http= (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=12, help="rounds per level (default %(default)s)")
    parser.add_argument("--levels", default="50,1", help="concurrency levels, in order (default %(default)s)")
    parser.add_argument("--calls", default="50=3000,1=1000", help="calls per run per level (default %(default)s)")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    levels = [int(x) for x in args.levels.split(",")]
    calls = {int(k): int(v) for k, v in (item.split("=") for item in args.calls.split(","))}
    if missing := [n for n in levels if n not in calls]:
        parser.error(f"--calls has no count for level(s) {missing}; add e.g. {missing[0]}=1000")
    env: dict[str, Any] = {
        "A": args.a,
        "B": args.b,
        "cpus": os.cpu_count(),
        "log_level": args.log_level,
        "loadavg_start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    key = secrets.token_urlsafe(24)
    with tempfile.TemporaryDirectory(prefix="mcphub-ab-") as tmp, ExitStack() as processes:
        workdir = Path(tmp)
        config = bench_config(workdir / "hub.yaml", replicas=1, log_level=args.log_level, key=key)
        proxies: dict[str, Proxy] = {}
        for name, given in (("A", args.a), ("B", args.b)):
            log = workdir / f"{name}.log"
            http, path = resolve(given, name, workdir)
            proc, url = processes.enter_context(spawn(shim_command(http, path, config), cwd=workdir, log=log))
            proxies[name] = Proxy(name, proc, url, f"{url}/bench/add", key)
        for name, proxy in proxies.items():
            log = workdir / f"{name}.log"
            wait_ready(proxy.proc, hub_ready(proxy.url), what=f"hub {name}", log=log, timeout=READY_TIMEOUT)
            bench_servers(psutil.Process(proxy.proc.pid), 1)  # exactly one bench server each
            env[f"{name}_loaded"] = loaded_protocol(log)
            if env[f"{name}_loaded"] is None:
                print(f"hub {name}: no '{PROTOCOL_LINE}' line in {log}; the shim did not run", file=sys.stderr)
                return 1
        print(f"A loads {env['A_loaded']}, B loads {env['B_loaded']}", file=sys.stderr)
        results = anyio.run(rounds, proxies, levels, calls, args.rounds)
    env["loadavg_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    summary = summarise(results)
    print(report(summary, env))
    if args.json:
        args.json.write_text(json.dumps({"environment": env, "results": summary}, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
