"""A real redis-server for the tests (Debian's package, which .ci/run installs): started on a free loopback
port with a password and no persistence, stopped and started at will. The `redis_server` fixture is in
tests/conftest.py."""

from __future__ import annotations

import shutil
import socket
import subprocess
from pathlib import Path

import anyio

from tests.helpers import free_port, missing

PASSWORD = "redis-pass-7f3c9a1e5d"
START_TIMEOUT = 10.0  # seconds for redis-server to answer a connection


def _redis_server() -> str:
    found = shutil.which("redis-server")
    if found is None:
        missing("redis-server is not installed: apt-get install -y redis-server (as .ci/run does)")
    return found


class RedisServer:
    """A real redis-server on 127.0.0.1:`port` with a password, no persistence; stop and start it at will."""

    def __init__(self, tls: Path | None = None) -> None:
        self.binary = _redis_server()
        self.port = free_port()
        self.tls = tls  # a directory with ca.pem, server.pem, server.key: TLS only (rediss://)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        if self.tls is not None:
            return f"rediss://:{PASSWORD}@127.0.0.1:{self.port}/0?ssl_ca_certs={self.tls / 'ca.pem'}"
        return f"redis://:{PASSWORD}@127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        listen = ["--port", str(self.port)]
        if self.tls is not None:
            listen = ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", str(self.tls / "server.pem"),
                      "--tls-key-file", str(self.tls / "server.key"), "--tls-ca-cert-file", str(self.tls / "ca.pem"),
                      "--tls-auth-clients", "no"]
        self.process = subprocess.Popen(
            [self.binary, *listen, "--bind", "127.0.0.1", "--requirepass", PASSWORD,
             "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        with anyio.fail_after(START_TIMEOUT):
            while not _accepts(self.port):
                assert self.process.poll() is None, "redis-server exited at start"
                await anyio.sleep(0.02)  # polling the condition: it accepts connections

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=START_TIMEOUT)
            self.process = None


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except OSError:
        return False
    return True
