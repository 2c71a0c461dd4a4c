"""`mcphub serve` as a real process: hot reload of the config file, and no orphans on shutdown.

Real processes, on purpose (the whole module): signals, the process tree and the watched config file
are the point. Waits are on what the hub shows: its /readyz, its log lines, a marker a server drops.
One exception, no process: which names each planned listener answers to (`listener_hosts`)."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx2
import psutil
import pytest
import yaml

from mcphub.config import parse_config
from mcphub.serve import ServeOptions, listener_hosts, plan
from tests.helpers import alive, free_port, mcphub_process, wait_until
from tests.hub import sample_server

STARTUP = 30.0  # seconds for the hub process to answer /readyz
EXIT = 20.0  # seconds for the hub process to stop after a signal


@contextmanager
def hub_process(config_path: Path, port: int) -> Iterator[subprocess.Popen[str]]:
    with mcphub_process("serve", "-c", str(config_path), "--port", str(port)) as proc:
        yield proc


class Output:
    """Every line a process writes to its stdout, read by a thread as it comes, so a test can wait
    for a line to appear without ending the process first."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        self._stream = proc.stdout
        self._lines: list[str] = []
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._read, name="hub-output", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        for line in self._stream:
            with self._lock:
                self._lines.append(line)

    def text(self) -> str:
        with self._lock:
            return "".join(self._lines)

    def wait_for(self, fragment: str, *, timeout: float) -> None:
        wait_until(lambda: fragment in self.text(), timeout=timeout, what=f"{fragment!r} in the hub's output")

    def close(self, timeout: float) -> str:
        """The whole output, once the process has closed its end."""
        self._thread.join(timeout=timeout)
        return self.text()


def ready_servers(url: str) -> dict:
    response = httpx2.get(f"{url}/readyz", timeout=5)
    return response.json()["servers"]


def write_config(path: Path, servers: dict) -> None:
    path.write_text(yaml.safe_dump({"servers": servers}), encoding="utf-8")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_stopping_the_hub_stops_every_child_process_even_mid_call(tmp_path: Path, signum: int):
    config = tmp_path / "hub.yaml"
    markers = tmp_path / "markers"
    markers.mkdir()
    write_config(config, {"one": sample_server(env={"SAMPLE_MARKERS": str(markers)}), "two": sample_server(replicas=2)})
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with hub_process(config, port) as proc:
        wait_until(lambda: all(s["state"] == "ready" for s in ready_servers(url).values()),
                   timeout=STARTUP, what="all servers ready")
        children = [p.pid for p in psutil.Process(proc.pid).children(recursive=True)]
        assert len(children) >= 3, children
        # a call in flight while the signal arrives
        call = ("import httpx2,sys; "
                "httpx2.post(sys.argv[1] + '/one/sleep', json={'seconds': 20, 'tag': 'held'}, timeout=30)")
        pending = subprocess.Popen([sys.executable, "-c", call, url], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        wait_until(lambda: (markers / "started-held").exists(), timeout=STARTUP, what="the call to reach the child")
        proc.send_signal(signum)
        assert proc.wait(timeout=EXIT) == 0
        pending.wait(timeout=EXIT)
        assert alive(children) == [], f"orphans after {signal.Signals(signum).name}: {alive(children)}"


def test_config_changes_are_applied_without_a_restart(tmp_path: Path):
    config = tmp_path / "hub.yaml"
    write_config(config, {"a": sample_server()})
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with hub_process(config, port) as proc, httpx2.Client(base_url=url, timeout=10) as client:
        output = Output(proc)
        wait_until(lambda: ready_servers(url).get("a", {}).get("state") == "ready", timeout=STARTUP, what="a ready")
        old_a = client.post("/a/pid", json={}).json()["result"]

        # added server starts and is served
        write_config(config, {"a": sample_server(), "b": sample_server()})
        wait_until(lambda: ready_servers(url).get("b", {}).get("state") == "ready", timeout=STARTUP, what="b added")
        assert client.post("/b/add", json={"a": 1, "b": 2}).json()["total"] == 3
        b_pid = client.post("/b/pid", json={}).json()["result"]
        assert client.post("/a/pid", json={}).json()["result"] == old_a  # unchanged server untouched

        # changed server restarts: new process, old one gone, new tool list served
        write_config(config, {"a": sample_server(env={"SAMPLE_TOOLS": "extra"}), "b": sample_server()})
        wait_until(lambda: client.post("/a/extra", json={}).status_code == 200, timeout=STARTUP, what="a changed")
        assert client.post("/a/pid", json={}).json()["result"] != old_a
        assert alive([old_a]) == []
        assert "/a/extra" in client.get("/openapi.json").json()["paths"]

        # removed server stops and is unmounted
        write_config(config, {"a": sample_server(env={"SAMPLE_TOOLS": "extra"})})
        wait_until(lambda: client.post("/b/add", json={"a": 1, "b": 2}).status_code == 404,
                   timeout=STARTUP, what="b removed")
        assert "b" not in ready_servers(url)
        wait_until(lambda: alive([b_pid]) == [], timeout=10, what="b's process to exit")

        # a broken edit is refused and the running config keeps serving
        config.write_text("servers: {a: {transport: nope}}", encoding="utf-8")
        output.wait_for("cannot be used; keeping the running config", timeout=STARTUP)
        assert client.post("/a/add", json={"a": 2, "b": 2}).json()["total"] == 4
        assert "/a/extra" in client.get("/openapi.json").json()["paths"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=EXIT) == 0
        text = output.close(EXIT)
    assert "servers.a.transport" in text or "servers.a" in text


def test_a_reload_applies_allowed_hosts_and_connection_limits_to_the_next_request(tmp_path: Path):
    """hub.allowed_hosts and hub.limits are read per request / per connection, so a reload needs no restart."""
    config = tmp_path / "hub.yaml"
    servers = {"a": sample_server()}
    config.write_text(yaml.safe_dump({"servers": servers}), encoding="utf-8")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with hub_process(config, port), httpx2.Client(base_url=url, timeout=10) as client:
        wait_until(lambda: ready_servers(url).get("a", {}).get("state") == "ready", timeout=STARTUP, what="a ready")
        response = client.post("/a/add", json={"a": 1, "b": 2}, headers={"Host": "tools.example.com"})
        assert response.status_code == 421, response.text
        config.write_text(yaml.safe_dump({"hub": {"allowed_hosts": ["tools.example.com"],
                                                  "limits": {"max_headers": 10}},
                                          "servers": servers}), encoding="utf-8")
        wait_until(lambda: client.post("/a/add", json={"a": 1, "b": 2},
                                       headers={"Host": "tools.example.com"}).status_code == 200,
                   timeout=STARTUP, what="the reload to allow the name")
        with httpx2.Client(base_url=url, timeout=10) as fresh:  # a new connection gets the new limits
            response = fresh.get("/healthz", headers={f"X-{i}": "1" for i in range(12)})
        assert response.status_code == 431, response.text
        assert response.json()["error"]["message"] == "more than 10 request headers (hub.limits.max_headers)"


def test_each_listener_answers_to_its_bound_host_and_its_instance_url():
    """No process: which names `plan`'s listeners answer to (mcphub/guard.py has the rule)."""
    config = parse_config(yaml.safe_dump({
        "servers": {"a": sample_server(), "b": sample_server()},
        "instances": {"vps": {"host": "0.0.0.0", "port": 8001, "servers": ["a"], "mount": ["nas"]},
                      "nas": {"host": "192.168.1.5", "port": 8002, "servers": ["b"], "url": "http://nas.lan:8002"}},
    }), source="t")
    hosts = {site.name: listener_hosts(site) for site in plan(config, ServeOptions(api_keys=("k" * 20,)))[1]}
    assert hosts["nas"].accepts("nas.lan:8002", []) and not hosts["nas"].accepts("evil.example", [])
    assert hosts["vps"].accepts("anything.example", [])  # bound to every address, no allowed_hosts
    assert not hosts["vps"].accepts("anything.example", ["tools.example.com"])
