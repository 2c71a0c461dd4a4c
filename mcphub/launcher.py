"""The launcher: a preloaded interpreter that forks Python stdio servers, so none of them imports the SDK.

A Python MCP server spends most of its start importing (`import mcp` alone is ~0.7 s of CPU). The hub
has already imported all of that, so `mcphub serve` forks this launcher first thing: after its imports,
before it configures logging, reads its config (the launcher never holds the hub's secrets), or starts a
thread or an event loop. For a server run as `<the hub's python> -m MODULE ARGS`, the hub sends the
launcher the module, arguments, environment and cwd, with one end of a socketpair of the child's own;
the launcher forks, the child sends its pid on that socketpair, and the hub answers with the child's
stdin, stdout and stderr (SCM_RIGHTS). The child then sets itself up as `python -m MODULE ARGS` would
have been:

- a session of its own (pid = process group), so the hub stops it exactly as an exec'd server;
- fds 0/1/2 from the hub and nothing else open; fresh sys.stdin/stdout/stderr;
- exactly the environment the hub computed (the same allowlist as an exec'd child), TZ re-read,
  tempfile's cached directory dropped;
- sys.argv, sys.orig_argv, sys.path[0] (its cwd) and signal dispositions of a fresh interpreter;
- `runpy.run_module(MODULE, run_name="__main__", alter_sys=True)`, then what interpreter exit does
  (thread pools shut down, non-daemon threads joined, atexit handlers, streams flushed) and `os._exit`
  with its exit status.

The launcher reaps its children and reports each one's exit status on that child's socketpair. It dies
with the hub (PR_SET_PDEATHSIG, and EOF on its control socket), and every child dies with it
(PR_SET_PDEATHSIG); the hub then starts servers by exec (`LauncherUnavailable`).

A launcher that does not answer a spawn within SPAWN_TIMEOUT costs that one server a fork, nothing more:
it starts by exec (`SpawnTimeout`), and so does every server after it until the launcher has answered;
the launcher and the servers it forked keep running. A child forked for a spawn the hub gave up on never
gets its stdio (its stdin and stdout went to the exec'd server instead): it reads EOF where the hub's
answer would be, and exits.

What cannot be redone after a fork is compared instead: a child whose interpreter start-up variables
(PYTHON*, LANG, LC_ALL, LC_CTYPE) differ from the hub's is exec'd, and so is everything when the hub's
interpreter ran with options (`python -X ... -m mcphub`). PYTHONUNBUFFERED and PYTHONDONTWRITEBYTECODE
are redone from the child's own environment. Still shared with the hub: the hash seed, the modules it
had imported, and sys.executable (however the server's `command` spelled the same interpreter: see
`Launcher.is_hub_interpreter`).

What ps shows of a forked server is what it shows of the same server exec'd: its command line (ps, `pkill
-f`: /proc/PID/cmdline, space-separated as setproctitle sets it, NUL-padded to the length of the hub's)
and the interpreter's file name (`pkill`, `ps -o comm`: /proc/PID/comm). /proc/PID/environ shows nothing:
os.environ is right, but the environment block the child's memory started with is the hub's, which
setproctitle overwrites in the launcher (the launcher checks it did, and will not run otherwise).

Internals relied on: CPython's, used only where there is no public way to do the same. A contract test
for each is in tests/test_launcher.py (section "contract tests"); they pass on CPython 3.10.13, 3.11.7,
3.12.1 and 3.13.0, and the launcher as a whole is tested on 3.11.7.

- `threading._shutdown()` (in `_run`): what interpreter exit does first: threading's exit hooks (they
  shut concurrent.futures' thread pools down), then a join of every non-daemon thread. Public code can
  join threads but cannot run those hooks, and an idle pool worker would keep the server from ending.
- `atexit._run_exitfuncs()` (in `_run`): the atexit handlers, run as interpreter exit runs them. No
  public equivalent short of ending the interpreter, which a forked child cannot do by unwinding: its
  stack is the launcher's, and below that the hub's. It ends with `os._exit` instead.

Libraries: setproctitle (>=1.3,<1.4 in pyproject.toml; tested with 1.3.8) sets the titles. It sets
itself up on first use from the environment as it is then, so the launcher sets its title before it
clears os.environ (contract test: `test_contract_setproctitle_...`). Linux only (prctl, /proc).
"""

from __future__ import annotations

import asyncio
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
import shutil
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
import setproctitle

logger = logging.getLogger(__name__)

# Imported by the launcher before its first fork, so no child imports them (the hub has imported the SDK,
# pydantic and httpx2 already; these are what the bundled servers import on top). Libraries only, never a
# server's module: a module's top level may read the environment, which is the child's, not the launcher's.
PRELOAD = ("mcp.server.mcpserver", "mcp.server.stdio", "anyio._backends._asyncio", "httpcore2", "h11",
           "truststore", "rich.logging", "xml.etree.ElementTree")
# Start-up environment a forked child re-applies from its own environment rather than the launcher's.
REDONE = ("PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE")
SPAWN_TIMEOUT = 5.0  # seconds for the launcher to answer a spawn with a pid (it forks at once); then exec that one
MAX_REQUEST = 1 << 20  # bytes: the largest spawn request (arguments and environment as JSON)
MAX_REPLY = 4096  # bytes: the largest answer on a child's socketpair (a small JSON object)
GO = b"go"  # the hub's answer to a forked child's pid, sent with the child's stdin, stdout and stderr
LAUNCHER_TITLE = "mcphub-launcher"  # what ps shows for the launcher (with its hub's pid); 15 bytes fit in comm

_PR_SET_PDEATHSIG = 1


class LauncherUnavailable(Exception):
    """The launcher has exited or does not answer: start the server by exec instead."""


class SpawnTimeout(LauncherUnavailable):
    """The launcher is alive but behind (it has not answered this spawn, or an earlier one): exec this
    server. The launcher and the servers it forked are left alone; later spawns fork again once it answers."""


class Launcher:
    """The hub's handle on its launcher process. `with Launcher.forked() as launcher:` (None where unsupported)."""

    def __init__(self, pid: int, control: socket.socket, startup: dict[str, str]) -> None:
        self.pid = pid
        self._control = control
        self._startup = startup  # the launcher's interpreter start-up variables
        self._lock: anyio.Lock | None = None
        self._closed = False  # no more spawns: the launcher is gone, or being closed
        self._reaped = False
        # spawns the launcher did not answer in time (each socket shut for writing, so a child forked for
        # one reads EOF and exits), with when each was sent; forking resumes once it has answered them all
        self._late: list[tuple[socket.socket, float]] = []

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
            except _CannotRun as exc:
                print(f"mcphub: the server launcher cannot run: {exc}; Python servers start by exec",
                      file=sys.stderr)
            except BaseException:  # noqa: BLE001 - reported, then this process ends whatever happened
                traceback.print_exc()
            finally:
                os._exit(code)
        theirs.close()
        control.setblocking(False)
        return cls(pid, control, startup)

    @staticmethod
    def is_hub_interpreter(command: str, *, cwd: str | None, search_path: str | None) -> bool:
        """Whether exec'ing `command` (in `cwd`, looked up on `search_path` if a bare name) starts the hub's own
        interpreter, which is what the launcher forks: the same file once `..` and symlinks are resolved, in
        the same virtual environment (a venv's `bin/python` is a symlink to the base interpreter but starts
        another sys.prefix: Python looks for pyvenv.cfg beside the path it was started as, or one level up)."""
        if os.sep not in command:
            found = shutil.which(command, path=search_path)
            if found is None:
                return False
            command = found
        path = os.path.join(cwd or os.getcwd(), command)  # exec resolves a relative path from the child's cwd
        try:
            same = os.path.samefile(path, sys.executable)
        except OSError:  # no such file, or not ours to look at: exec will say so
            return False
        return same and _venv_config(path) == _venv_config(sys.executable)

    def can_run(self, env: Mapping[str, str]) -> bool:
        """Whether a child with this environment would start the same forked as exec'd."""
        return not self._closed and _startup_vars(env) == self._startup

    async def spawn(self, module: str, args: list[str], *, env: dict[str, str], cwd: str | None,
                    stdin: int, stdout: int, stderr: int) -> Launched:
        """Fork a child running `python -m module args`. Raises LauncherUnavailable if the launcher is gone,
        SpawnTimeout if it is behind: either way, start this server by exec."""
        if self._closed:
            raise LauncherUnavailable("the launcher has exited")
        behind = self._behind()
        if behind is not None:
            raise SpawnTimeout(f"the launcher has not yet answered a spawn sent {behind:.1f}s ago")
        if self._lock is None:
            self._lock = anyio.Lock()
        request = json.dumps({"module": module, "args": args, "env": env, "cwd": cwd}).encode()
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        keep = False
        try:
            mine.setblocking(False)
            sent = False
            try:
                with anyio.move_on_after(SPAWN_TIMEOUT):
                    async with self._lock:
                        await self._send(request, [theirs.fileno()])
                    sent = True
                    await anyio.wait_readable(mine)
            finally:
                theirs.close()
            try:
                reply = mine.recv(MAX_REPLY)
            except BlockingIOError:
                if sent:  # it will answer some time: keep our end to see when, but let the child see EOF
                    mine.shutdown(socket.SHUT_WR)
                    self._late.append((mine, time.monotonic()))
                    keep = True
                logger.warning("the server launcher (pid %d) did not answer within %gs; %s starts by exec, as do "
                               "Python servers until it answers", self.pid, SPAWN_TIMEOUT, module)
                raise SpawnTimeout(f"no answer within {SPAWN_TIMEOUT:g}s") from None
            if not reply:
                raise self._lost("it exited")
            answer = json.loads(reply)
            if "error" in answer:
                raise OSError(answer["error"])
            if "exit" in answer:  # it died before it got as far as running the module
                raise OSError(f"the forked server exited at once (status {answer['exit']})")
            try:
                socket.send_fds(mine, [GO], [stdin, stdout, stderr])  # an empty socket buffer: never blocks
            except OSError as exc:  # EPIPE: it died, and the launcher has reaped it
                raise OSError(f"the forked server (pid {answer['pid']}) exited before it started ({exc})") from None
            keep = True
            return Launched(answer["pid"], mine)
        finally:
            if not keep:
                mine.close()

    def _behind(self) -> float | None:
        """How long ago the oldest spawn the launcher has not answered yet was sent (None: it is not behind).
        Forgets the late spawns it has answered since (a pid, an error, an exit status, or EOF)."""
        if not self._late:
            return None
        waiting = []
        for sock, sent in self._late:
            try:
                sock.recv(1, socket.MSG_PEEK)
            except BlockingIOError:
                waiting.append((sock, sent))
                continue
            except OSError:
                pass  # an error is an answer too: the launcher is done with this one
            sock.close()
        self._late = waiting
        if not waiting:
            logger.info("the server launcher (pid %d) has caught up; Python servers are forked again", self.pid)
            return None
        return time.monotonic() - waiting[0][1]

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
        """The launcher has exited: stop using it without waiting for it (this runs on the event loop;
        `close()` reaps it later)."""
        if not self._closed:
            logger.warning("the server launcher (pid %d) is gone (%s); Python servers start by exec from now on",
                           self.pid, why)
            self._stop()
        return LauncherUnavailable(why)

    def _stop(self) -> None:
        self._closed = True
        self._control.close()  # EOF: the launcher exits
        for sock, _sent in self._late:
            sock.close()
        self._late.clear()
        with contextlib.suppress(ProcessLookupError):  # it keeps nothing that needs a graceful exit
            os.kill(self.pid, signal.SIGKILL)

    def close(self) -> None:
        """End the launcher (every child still running dies with it) and reap it. Blocking: call it outside
        the event loop (the hub does, after `anyio.run` has returned or before it starts)."""
        _not_on_event_loop("Launcher.close()")
        if self._reaped:
            return
        if not self._closed:
            self._stop()
        self._reaped = True
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self.pid, 0)  # SIGKILLed: returns as soon as the kernel has torn it down


class Launched:
    """A child the launcher forked (a grandchild of the hub). Its exit status arrives on `channel`."""

    def __init__(self, pid: int, channel: socket.socket) -> None:
        self.pid = pid
        self._channel: socket.socket | None = channel
        self._code: int | None = None

    @property
    def returncode(self) -> int | None:
        """Its exit status once the launcher has reported it, else None. Never blocks: `channel` is non-blocking."""
        if self._channel is not None:
            try:
                report = self._channel.recv(MAX_REPLY)
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


def _venv_config(executable: str) -> str | None:
    """The pyvenv.cfg an interpreter started as `executable` reads, if any (as Python's getpath finds it)."""
    directory = os.path.dirname(executable)
    for candidate in (directory, os.path.dirname(directory)):
        config = os.path.join(candidate, "pyvenv.cfg")
        if os.path.isfile(config):
            return os.path.realpath(config)
    return None


def _not_on_event_loop(what: str) -> None:
    """Refuse a blocking call made from a running event loop (it would stall every task on it)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    raise RuntimeError(f"{what} blocks: call it outside the event loop")


# ------------------------------------------------------------------------------- the launcher process


class _CannotRun(Exception):
    """The launcher cannot keep the hub's command line and environment out of what its children show."""


class _Loop:
    """The launcher's main loop: spawn requests on the control socket, SIGCHLD through a wakeup pipe."""

    def __init__(self, control: socket.socket, hub: int) -> None:
        self.control = control
        self.hub = hub
        self.channels: dict[int, socket.socket] = {}  # child pid → where its exit status goes

    def run(self) -> None:
        _die_with_parent(self.hub)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's ^C is for the hub, which then closes us
        title = f"{LAUNCHER_TITLE} (hub {self.hub})"
        _set_title(title, comm=LAUNCHER_TITLE)  # first: setproctitle sets itself up from the environment
        os.environ.clear()  # each child gets exactly the environment the hub sends for it
        _check_hidden(title)
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
                        message, fds, _flags, _ = socket.recv_fds(self.control, MAX_REQUEST, 1)
                        if not message and not fds:
                            return  # the hub closed its end; children die with us
                        self._spawn(message, fds)
                    else:
                        with contextlib.suppress(BlockingIOError):
                            while os.read(wake_read, 512):
                                pass
                self._reap()

    def _spawn(self, message: bytes, fds: list[int]) -> None:
        if len(fds) != 1:  # not a request of the hub's: nobody to answer
            for fd in fds:
                os.close(fd)
            return
        channel = socket.socket(fileno=fds[0])
        me = os.getpid()
        try:
            request = json.loads(message)
            pid = os.fork()
        except (OSError, ValueError) as exc:
            with contextlib.suppress(OSError):  # the hub has given up on this spawn
                channel.send(json.dumps({"error": f"the launcher cannot start it: {exc}"}).encode())
            pid = -1
        if pid == 0:
            _child(request, channel=channel, launcher=me, release=self.release)
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
                with contextlib.suppress(OSError):  # the hub no longer listens (it gave up on this one)
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


def _child(request: dict[str, Any], *, channel: socket.socket, launcher: int,
           release: Callable[[], None]) -> NoReturn:
    """In the forked child: become `python -m MODULE ARGS`, run it, and exit with its status."""
    code = 1
    try:
        os.setsid()  # before the hub learns the pid: its process group must exist when the hub signals it
        _die_with_parent(launcher)
        try:
            channel.send(json.dumps({"pid": os.getpid()}).encode())
        except OSError:  # EPIPE: the hub gave up on this spawn and closed its end
            os._exit(1)
        release()
        go, fds, _flags, _ = socket.recv_fds(channel, len(GO), 3)  # blocks until the hub answers
        if go != GO or len(fds) != 3:  # EOF: the hub gave up on this spawn; its stdio went elsewhere
            os._exit(1)
        channel.close()
        for stream in (sys.stdout, sys.stderr):
            stream.flush()  # still the launcher's: nothing of it may reach the server's pipes
        for fd, target in zip(fds, (0, 1, 2), strict=True):
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
    # (thread pools shut down) and a join of every non-daemon thread, then the atexit handlers (CPython
    # internals: see "Internals relied on" above), then the standard streams flushed.
    threading._shutdown()  # type: ignore[attr-defined]
    atexit._run_exitfuncs()
    return _flush_std_streams(code)


def _flush_std_streams(code: int) -> int:
    """Flush sys.stdout and sys.stderr as interpreter exit does: a failure is reported on stderr (if it
    can be) and makes the exit status 120."""
    for name in ("stdout", "stderr"):
        try:
            getattr(sys, name).flush()
        except Exception:  # noqa: BLE001 - e.g. BrokenPipeError: the hub stopped reading
            code = 120
            with contextlib.suppress(Exception):
                print(f"Exception ignored on flushing sys.{name}:", file=sys.stderr)
                traceback.print_exc()
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
            with contextlib.suppress(OSError):  # EBADF: the listing's own fd, closed by now
                os.close(fd)


def _set_title(title: str, *, comm: str) -> None:
    """What ps and `pkill -f` show for this process (/proc/PID/cmdline: `title`), and ps and `pkill`
    without -f (/proc/PID/comm: `comm`, at most 15 bytes); otherwise both show the hub's."""
    setproctitle.setproctitle(title)
    setproctitle.setthreadtitle(comm)  # this is the main thread: its name is the process's


def _check_hidden(title: str) -> None:
    """After `_set_title` and os.environ.clear(): make sure /proc/PID/cmdline shows `title` and
    /proc/PID/environ none of the hub's environment (a secret in it would show in every forked child's)."""
    with open("/proc/self/cmdline", "rb") as f:
        shown = f.read()
    if not shown.startswith(os.fsencode(title) + b"\0"):
        raise _CannotRun(f"setproctitle {setproctitle.__version__} did not set its process title "
                         f"(/proc/self/cmdline shows {shown[:60]!r})")
    with open("/proc/self/environ", "rb") as f:
        if f.read().strip(b"\0"):
            raise _CannotRun(f"setproctitle {setproctitle.__version__} left the hub's environment block in place "
                             "(/proc/self/environ), which every forked server would show")


def _die_with_parent(parent: int) -> None:
    if ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent:  # the parent died before the prctl took effect
        os._exit(1)


def _startup_vars(env: Mapping[str, str]) -> dict[str, str]:
    """The environment an interpreter reads once, at start-up (less what a forked child redoes)."""
    return {k: v for k, v in env.items()
            if (k.startswith("PYTHON") or k in ("LANG", "LC_ALL", "LC_CTYPE")) and k not in REDONE}


def _interpreter_options() -> bool:
    """Whether this interpreter ran with options (`python -X dev -m mcphub`) a forked child would inherit."""
    argv = sys.orig_argv
    return len(argv) > 1 and argv[1].startswith("-") and argv[1] != "-m"
