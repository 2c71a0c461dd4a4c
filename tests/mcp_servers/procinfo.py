"""A test MCP server that describes its own process: `python -m tests.mcp_servers.procinfo [ARGS]`.

`describe` answers what a server could notice about how it was started (argv, cwd, sys.path,
environment, open fds, signal dispositions, stdio objects, session, ...), so a test can compare a server
forked by the hub's launcher with the same server exec'd. `pool` leaves an idle non-daemon worker thread
behind (a ThreadPoolExecutor's). Env: PROCINFO_EXIT_MARKERS=<dir>: an atexit handler drops `exit-<pid>`
there, so a test can see the process ended the way an interpreter does.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import logging
import os
import signal
import sys
import tempfile
import time

from mcp.server.mcpserver import MCPServer

mcp = MCPServer("procinfo", version="1.0.0")
MAIN_NAME = __name__  # "__main__" when run with -m
SIGNALS = ("SIGINT", "SIGTERM", "SIGCHLD", "SIGPIPE", "SIGHUP", "SIGUSR1", "SIGXFSZ")
POOL = concurrent.futures.ThreadPoolExecutor(max_workers=1)


def _handler(value: object) -> str:
    if value is signal.default_int_handler:
        return "default_int_handler"
    if isinstance(value, signal.Handlers):
        return value.name
    return "python handler" if callable(value) else repr(value)


def _stream(stream: object) -> dict[str, object]:
    return {
        "fileno": stream.fileno(),  # type: ignore[attr-defined]
        "encoding": stream.encoding,  # type: ignore[attr-defined]
        "errors": stream.errors,  # type: ignore[attr-defined]
        "line_buffering": stream.line_buffering,  # type: ignore[attr-defined]
        "write_through": stream.write_through,  # type: ignore[attr-defined]
        "buffer": type(stream.buffer).__name__,  # type: ignore[attr-defined]
    }


@mcp.tool(description="What this process looks like from inside.")
def describe() -> dict:
    fds = sorted(int(fd) for fd in os.listdir("/proc/self/fd"))
    with open("/proc/self/environ", "rb") as f:
        proc_environ = f.read()
    with open("/proc/self/cmdline", "rb") as f:
        cmdline = f.read()
    return {
        "pid": os.getpid(),
        "ppid": os.getppid(),
        "leads_session": os.getsid(0) == os.getpid() and os.getpgid(0) == os.getpid(),
        "argv": sys.argv,
        "orig_argv": sys.orig_argv,
        "executable": sys.executable,
        "main_name": MAIN_NAME,
        "main_file": getattr(sys.modules["__main__"], "__file__", None),
        "cwd": os.getcwd(),
        "path": sys.path,
        "environ": dict(os.environ),
        "proc_environ": proc_environ.decode("utf-8", "replace"),
        "cmdline": cmdline.decode("utf-8", "replace"),
        "fds_at_start": FDS_AT_START,
        "fds_now_count": len(fds),
        "signals": {name: _handler(signal.getsignal(getattr(signal, name))) for name in SIGNALS},
        "blocked_signals": sorted(s.name for s in signal.pthread_sigmask(signal.SIG_BLOCK, [])),
        "stdin": _stream(sys.stdin),
        "stdout": _stream(sys.stdout),
        "stderr": _stream(sys.stderr),
        "dont_write_bytecode": sys.dont_write_bytecode,
        "tempdir": tempfile.gettempdir(),
        "tzname": list(time.tzname),
        "root_handlers": len(logging.getLogger().handlers),
    }


@mcp.tool(description="Run a job on a thread pool, whose worker then waits for more (a non-daemon thread).")
def pool() -> int:
    return POOL.submit(os.getpid).result()


def _mark_exit() -> None:
    markers = os.environ.get("PROCINFO_EXIT_MARKERS")
    if markers:
        with open(os.path.join(markers, f"exit-{os.getpid()}"), "w", encoding="utf-8") as f:
            f.write("clean")


atexit.register(_mark_exit)
FDS_AT_START = sorted(int(fd) for fd in os.listdir("/proc/self/fd"))

if __name__ == "__main__":
    mcp.run()
