"""The launcher: a preloaded interpreter that forks Python stdio servers, so none of them imports the SDK.

A Python MCP server spends most of its start importing (`import mcp` alone is ~0.7 s of CPU). The hub
has already imported all of that, so `mcphub serve` forks this launcher first thing: after its imports,
before it configures logging, reads its config (the launcher never holds the hub's secrets), or starts a
thread or an event loop. For a server run as `<the hub's python> -m MODULE ARGS`, the hub sends the
launcher the child's stdin, stdout and stderr (SCM_RIGHTS over a socketpair), its environment, cwd and
arguments; the launcher forks, and the child sets itself up as `python -m MODULE ARGS` would have been:

- a session of its own (pid = process group), so the hub stops it exactly as an exec'd server;
- fds 0/1/2 from the hub and nothing else open; fresh sys.stdin/stdout/stderr;
- exactly the environment the hub computed (the same allowlist as an exec'd child), TZ re-read,
  tempfile's cached directory dropped;
- sys.argv, sys.orig_argv, sys.path[0] (its cwd) and signal dispositions of a fresh interpreter;
- `runpy.run_module(MODULE, run_name="__main__", alter_sys=True)`, then what interpreter exit does
  (thread pools shut down, non-daemon threads joined, atexit handlers, streams flushed) and `os._exit`
  with its exit status.

The launcher reaps its children and reports each one's pid, then its exit status, on a socketpair of
that child's own. It dies with the hub (PR_SET_PDEATHSIG, and EOF on its control socket), and every
child dies with it (PR_SET_PDEATHSIG); the hub then starts servers by exec (`LauncherUnavailable`).

What cannot be redone after a fork is compared instead: a child whose interpreter start-up variables
(PYTHON*, LANG, LC_ALL, LC_CTYPE) differ from the hub's is exec'd, and so is everything when the hub's
interpreter ran with options (`python -X ... -m mcphub`). PYTHONUNBUFFERED and PYTHONDONTWRITEBYTECODE
are redone from the child's own environment. Still shared with the hub: the hash seed and the modules it
had imported. /proc/PID/cmdline (ps, `pkill -f`) shows the server's command line, space-separated as
setproctitle's; /proc/PID/environ shows nothing (os.environ is right; the hub's own environment block,
which the child's memory started as a copy of, is overwritten).

Linux only (prctl).
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import gc
import importlib
import importlib.util
import io
import json
import logging
import os
import runpy
import selectors
import signal
import socket
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from typing import Any, NoReturn

import anyio

logger = logging.getLogger(__name__)

# Imported by the launcher before its first fork, so no child imports them (the hub has imported the SDK,
# pydantic and httpx2 already; these are what the bundled servers import on top). Libraries only, never a
# server's module: a module's top level may read the environment, which is the child's, not the launcher's.
PRELOAD = ("mcp.server.mcpserver", "mcp.server.stdio", "anyio._backends._asyncio", "httpcore2", "h11",
           "truststore", "rich.logging", "xml.etree.ElementTree")
# Start-up environment a forked child re-applies from its own environment rather than the launcher's.
REDONE = ("PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE")
SPAWN_TIMEOUT = 5.0  # seconds for the launcher to answer a spawn with a pid (it forks at once; a hung one is dead)
EXIT_TIMEOUT = 2.0  # seconds for the launcher to exit once the hub closes its control socket, before SIGKILL
MAX_REQUEST = 1 << 20  # bytes: the largest spawn request (arguments and environment as JSON)

_PR_SET_PDEATHSIG = 1
_PR_SET_NAME = 15


class LauncherUnavailable(Exception):
    """The launcher has exited or does not answer: start the server by exec instead."""


class Launcher:
    """The hub's handle on its launcher process. `with Launcher.forked() as launcher:` (None where unsupported)."""

    def __init__(self, pid: int, control: socket.socket, startup: dict[str, str]) -> None:
        self.pid = pid
        self._control = control
        self._startup = startup  # the launcher's interpreter start-up variables
        self._lock: anyio.Lock | None = None
        self._closed = False

    @classmethod
    @contextlib.contextmanager
    def forked(cls) -> Iterator[Launcher | None]:
        """Fork the launcher now (call before threads, an event loop or secrets exist); close it on exit."""
        launcher = cls.fork()
        try:
            yield launcher
        finally:
            if launcher is not None:
                launcher.close()

    @classmethod
    def fork(cls) -> Launcher | None:
        if not sys.platform.startswith("linux") or threading.active_count() > 1 or _interpreter_options():
            return None
        hub = os.getpid()
        control, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        startup = _startup_vars(os.environ)
        for stream in (sys.stdout, sys.stderr):
            stream.flush()  # nothing buffered gets copied into the launcher
        try:
            pid = os.fork()
        except OSError as exc:
            logger.warning("cannot fork the server launcher (%s); Python servers start by exec", exc)
            control.close()
            theirs.close()
            return None
        if pid == 0:  # the launcher; never returns into the hub's code
            code = 1
            try:
                control.close()
                _Loop(theirs, hub).run()
                code = 0
            except BaseException:  # noqa: BLE001 - reported, then this process ends whatever happened
                traceback.print_exc()
            finally:
                os._exit(code)
        theirs.close()
        control.setblocking(False)
        return cls(pid, control, startup)

    def can_run(self, env: Mapping[str, str]) -> bool:
        """Whether a child with this environment would start the same forked as exec'd."""
        return not self._closed and _startup_vars(env) == self._startup

    async def spawn(self, module: str, args: list[str], *, env: dict[str, str], cwd: str | None,
                    stdin: int, stdout: int, stderr: int) -> Launched:
        """Fork a child running `python -m module args`; raises LauncherUnavailable if the launcher is gone."""
        if self._closed:
            raise LauncherUnavailable("the launcher has exited")
        if self._lock is None:
            self._lock = anyio.Lock()
        request = json.dumps({"module": module, "args": args, "env": env, "cwd": cwd}).encode()
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            mine.setblocking(False)
            try:
                async with self._lock:
                    await self._send(request, [stdin, stdout, stderr, theirs.fileno()])
            finally:
                theirs.close()
            with anyio.move_on_after(SPAWN_TIMEOUT):
                await anyio.wait_readable(mine)
            try:
                reply = mine.recv(MAX_REQUEST)
            except BlockingIOError:
                raise self._lost(f"no answer within {SPAWN_TIMEOUT:g}s") from None
            if not reply:
                raise self._lost("it exited")
            answer = json.loads(reply)
            if "error" in answer:
                raise OSError(answer["error"])
            if "exit" in answer:  # it died before it got as far as running the module
                raise OSError(f"the forked server exited at once (status {answer['exit']})")
            return Launched(answer["pid"], mine)
        except BaseException:
            mine.close()
            raise

    async def _send(self, request: bytes, fds: list[int]) -> None:
        while True:
            try:
                socket.send_fds(self._control, [request], fds)
                return
            except BlockingIOError:
                await anyio.wait_writable(self._control)
            except OSError as exc:  # EPIPE / ECONNRESET: the launcher has exited
                raise self._lost(str(exc)) from None

    def _lost(self, why: str) -> LauncherUnavailable:
        if not self._closed:
            logger.warning("the server launcher (pid %d) is gone (%s); Python servers start by exec from now on",
                           self.pid, why)
            self.close(wait=0.0)
        return LauncherUnavailable(why)

    def close(self, *, wait: float = EXIT_TIMEOUT) -> None:
        """EOF on the control socket ends the launcher (and any child still running); reap it. After `wait`
        seconds (blocking: this runs outside the event loop, or on a launcher already dead) SIGKILL."""
        if self._closed:
            return
        self._closed = True
        self._control.close()
        deadline = time.monotonic() + wait
        while os.waitpid(self.pid, os.WNOHANG) == (0, 0):
            if time.monotonic() > deadline:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
                return
            time.sleep(0.005)


class Launched:
    """A child the launcher forked (a grandchild of the hub). Its exit status arrives on `channel`."""

    def __init__(self, pid: int, channel: socket.socket) -> None:
        self.pid = pid
        self._channel: socket.socket | None = channel
        self._code: int | None = None

    @property
    def returncode(self) -> int | None:
        if self._channel is not None:
            try:
                report = self._channel.recv(256)
            except BlockingIOError:
                return None
            except OSError:
                report = b""
            self._channel.close()
            self._channel = None
            if report:
                self._code = json.loads(report)["exit"]
            else:  # the launcher died without a report: PR_SET_PDEATHSIG has killed the child
                self._code = -signal.SIGKILL
        return self._code


# ------------------------------------------------------------------------------- the launcher process


class _Loop:
    """The launcher's main loop: spawn requests on the control socket, SIGCHLD through a wakeup pipe."""

    def __init__(self, control: socket.socket, hub: int) -> None:
        self.control = control
        self.hub = hub
        self.channels: dict[int, socket.socket] = {}  # child pid → where its exit status goes

    def run(self) -> None:
        _die_with_parent(self.hub)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's ^C is for the hub, which then closes us
        os.environ.clear()  # each child gets exactly the environment the hub sends for it
        _set_title(f"mcphub-launcher (hub {self.hub})", comm="mcphub-launcher")
        for name in PRELOAD:
            with contextlib.suppress(ImportError):  # an optional one that is not installed
                importlib.import_module(name)
        gc.freeze()  # everything so far is shared with every child: keep their collector off those pages
        wake_read, self.wake_write = os.pipe()
        self.wake_read = wake_read
        os.set_blocking(wake_read, False)
        os.set_blocking(self.wake_write, False)
        signal.set_wakeup_fd(self.wake_write)
        signal.signal(signal.SIGCHLD, lambda *_: None)  # only to wake the selector
        with selectors.DefaultSelector() as self.selector:
            self.selector.register(self.control, selectors.EVENT_READ)
            self.selector.register(wake_read, selectors.EVENT_READ)
            while True:
                for key, _ in self.selector.select():
                    if key.fileobj is self.control:
                        message, fds, _flags, _ = socket.recv_fds(self.control, MAX_REQUEST, 4)
                        if not message and not fds:
                            return  # the hub closed its end; children die with us
                        self._spawn(message, fds)
                    else:
                        with contextlib.suppress(BlockingIOError):
                            while os.read(wake_read, 512):
                                pass
                self._reap()

    def _spawn(self, message: bytes, fds: list[int]) -> None:
        if len(fds) != 4:
            for fd in fds:
                os.close(fd)
            return
        stdin, stdout, stderr, status = fds
        channel = socket.socket(fileno=status)
        me = os.getpid()
        try:
            request = json.loads(message)
            pid = os.fork()
        except (OSError, ValueError) as exc:
            with contextlib.suppress(OSError):
                channel.send(json.dumps({"error": f"the launcher cannot start it: {exc}"}).encode())
            pid = -1
        if pid == 0:
            _child(request, stdin, stdout, stderr, channel=channel, launcher=me, release=self.release)
        for fd in (stdin, stdout, stderr):
            os.close(fd)
        if pid > 0:
            self.channels[pid] = channel  # the child itself sends its pid, once it leads its own session
        else:
            channel.close()

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            channel = self.channels.pop(pid, None)
            if channel is not None:
                with contextlib.suppress(OSError):
                    channel.send(json.dumps({"exit": os.waitstatus_to_exitcode(status)}).encode())
                channel.close()

    def release(self) -> None:
        """In a child (which never returns to this loop): close everything of the launcher's."""
        signal.set_wakeup_fd(-1)
        self.selector.close()
        self.control.close()
        for channel in self.channels.values():
            channel.close()
        os.close(self.wake_read)
        os.close(self.wake_write)


def _child(request: dict[str, Any], stdin: int, stdout: int, stderr: int, *, channel: socket.socket,
           launcher: int, release: Callable[[], None]) -> NoReturn:
    """In the forked child: become `python -m MODULE ARGS`, run it, and exit with its status."""
    code = 1
    try:
        os.setsid()  # before the hub learns the pid: its process group must exist when the hub signals it
        _die_with_parent(launcher)
        channel.send(json.dumps({"pid": os.getpid()}).encode())
        channel.close()
        release()
        for stream in (sys.stdout, sys.stderr):
            stream.flush()  # still the launcher's: nothing of it may reach the server's pipes
        for fd, target in ((stdin, 0), (stdout, 1), (stderr, 2)):
            os.dup2(fd, target)
        _close_other_fds()
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.pthread_sigmask(signal.SIG_SETMASK, set())
        code = _run(request["module"], request["args"], request["env"], request["cwd"])
    except BaseException:  # noqa: BLE001 - whatever happens, this process must not return to the launcher
        with contextlib.suppress(BaseException):
            traceback.print_exc()
    finally:
        os._exit(code)


def _run(module: str, args: list[str], env: dict[str, str], cwd: str | None) -> int:
    if cwd:
        os.chdir(cwd)
    os.environ.update(env)
    time.tzset()
    tempfile.tempdir = None
    sys.dont_write_bytecode = bool(env.get("PYTHONDONTWRITEBYTECODE"))
    _fresh_stdio(unbuffered=bool(env.get("PYTHONUNBUFFERED")))
    sys.argv = ["-m", *args]  # runpy puts the module's file in argv[0], as `python -m` does
    sys.orig_argv = [sys.executable, "-m", module, *args]
    _set_title(" ".join(sys.orig_argv), comm=os.path.basename(sys.executable))
    sys.path[0] = os.getcwd()
    importlib.invalidate_caches()
    try:
        if importlib.util.find_spec(module) is None:
            print(f"{sys.executable}: No module named {module}", file=sys.stderr)
            return 1
        runpy.run_module(module, run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as exc:
        code = _exit_code(exc.code)
    except KeyboardInterrupt:
        traceback.print_exc()
        code = 128 + signal.SIGINT
    except BaseException:  # noqa: BLE001 - an uncaught exception: traceback and status 1, as the interpreter
        sys.excepthook(*sys.exc_info())
        code = 1
    # What interpreter exit (Py_FinalizeEx) does before the process ends: threading's own exit hooks
    # (thread pools shut down) and a join of every non-daemon thread, then the atexit handlers.
    threading._shutdown()  # type: ignore[attr-defined]
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    return code


def _exit_code(code: Any) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def _fresh_stdio(*, unbuffered: bool) -> None:
    """New sys.stdin/stdout/stderr over fds 0/1/2, made as interpreter start-up makes them."""
    for fd, name in ((0, "stdin"), (1, "stdout"), (2, "stderr")):
        old = getattr(sys, f"__{name}__", None)
        encoding = getattr(old, "encoding", None) or "utf-8"
        errors = getattr(old, "errors", None) or ("backslashreplace" if fd == 2 else "strict")
        writing = fd != 0
        raw = io.FileIO(fd, "wb" if writing else "rb", closefd=False)
        buffer: Any = raw if writing and unbuffered else (io.BufferedWriter(raw) if writing else io.BufferedReader(raw))
        stream = io.TextIOWrapper(buffer, encoding=encoding, errors=errors, newline="\n",
                                  line_buffering=writing and (fd == 2 or raw.isatty()), write_through=unbuffered)
        setattr(sys, name, stream)
        setattr(sys, f"__{name}__", stream)


def _close_other_fds() -> None:
    """Every fd but 0, 1 and 2, as `subprocess.Popen(close_fds=True)` leaves an exec'd child."""
    for entry in os.listdir("/proc/self/fd"):
        fd = int(entry)
        if fd > 2:
            with contextlib.suppress(OSError):
                os.close(fd)


def _set_title(title: str, *, comm: str) -> None:
    """What ps, `pkill -f` and psutil show for this process, which otherwise shows the hub's command line.

    As setproctitle does on Linux: /proc/PID/cmdline is this process's argv memory (copied from the hub),
    so overwrite it, running on into the environment block after it (unused once os.environ has been
    cleared: the environment then lives on the heap), NUL-terminated, with argv's last byte not NUL so the
    kernel reads up to the terminator. Space-separated, as setproctitle's. Best effort: on any surprise,
    the title stays as it was.
    """
    with contextlib.suppress(OSError, ValueError, IndexError):
        with open("/proc/self/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
        arg_start, arg_end, env_start, env_end = (int(f) for f in fields[45:49])  # fields 48-51 in proc(5)
        end = env_end if env_start == arg_end else arg_end
        size = end - arg_start
        if size <= 1:
            return
        data = os.fsencode(title)[: size - 1] + b"\0"
        data += b" " * (arg_end - arg_start - len(data))
        ctypes.memmove(arg_start, data.ljust(size, b"\0"), size)
        _prctl(_PR_SET_NAME, os.fsencode(comm)[:15])


def _die_with_parent(parent: int) -> None:
    _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before the prctl took effect
        os._exit(1)


def _prctl(option: int, value: int | bytes) -> None:
    if ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), f"prctl({option}) failed")


def _startup_vars(env: Mapping[str, str]) -> dict[str, str]:
    """The environment an interpreter reads once, at start-up (less what a forked child redoes)."""
    return {k: v for k, v in env.items()
            if (k.startswith("PYTHON") or k in ("LANG", "LC_ALL", "LC_CTYPE")) and k not in REDONE}


def _interpreter_options() -> bool:
    """Whether this interpreter ran with options (`python -X dev -m mcphub`) a forked child would inherit."""
    argv = sys.orig_argv
    return len(argv) > 1 and argv[1].startswith("-") and argv[1] != "-m"
