"""Region instances and federation: separate `mcphub serve` processes on 127.0.0.1 mounting each other."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx2
import yaml
from openapi_spec_validator import validate

from mcphub.config import load_config
from tests.helpers import REPO, free_port, mcphub_process, wait_until
from tests.hub import sample_server

STARTUP = 30.0
EXIT = 20.0
CN_KEY = "cn-only-key-0123456789"
GLOBAL_KEY = "global-only-key-0123456789"


@contextmanager
def hub(config_path: Path, *args: str) -> Iterator[subprocess.Popen[str]]:
    with mcphub_process("serve", "-c", str(config_path), *args) as proc:
        yield proc


def two_regions(tmp_path: Path, *, cn_auth: bool = False) -> tuple[Path, int, int]:
    cn_port, global_port = free_port(), free_port()
    cn: dict = {"port": cn_port, "servers": ["clock"], "url": f"http://127.0.0.1:{cn_port}"}
    if cn_auth:
        cn["auth"] = {"api_keys": [{"name": "cn", "key": CN_KEY}]}
        cn["api_key"] = CN_KEY
    config = {
        "auth": {"api_keys": [{"name": "owui", "key": GLOBAL_KEY}]},
        "servers": {"clock": sample_server(restart={"initial_delay": 0.2}), "local": sample_server()},
        "instances": {"global": {"port": global_port, "servers": ["local"], "mount": ["cn"]}, "cn": cn},
    }
    path = tmp_path / "regions.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path, cn_port, global_port


def ready(url: str, key: str | None = None) -> dict:
    return httpx2.get(f"{url}/readyz", timeout=5).json()


def mounted(url: str, server: str) -> bool:
    return ready(url)["servers"].get(server, {}).get("state") == "ready"


def test_a_mounted_region_serves_its_tools_through_the_other_hub(tmp_path: Path):
    path, cn_port, global_port = two_regions(tmp_path)
    g = f"http://127.0.0.1:{global_port}"
    auth = {"Authorization": f"Bearer {GLOBAL_KEY}"}
    with hub(path, "--instance", "cn"), hub(path, "--instance", "global"):
        wait_until(lambda: mounted(g, "clock") and mounted(g, "local"), timeout=STARTUP, what="clock mounted")
        with httpx2.Client(base_url=g, headers=auth, timeout=30) as client:
            assert client.post("/clock/add", json={"a": 20, "b": 22}).json()["total"] == 42
            assert client.post("/local/add", json={"a": 1, "b": 1}).json()["total"] == 2
            spec = client.get("/openapi.json").json()
            validate(spec)
            assert spec["paths"]["/clock/add"]["post"]["operationId"] == "clock_add"
            one = client.get("/clock/openapi.json").json()
            validate(one)
            assert one["servers"] == [{"url": "/clock"}]
            body = ready(g)
            assert body["hubs"]["cn"]["state"] == "ready" and body["hubs"]["cn"]["servers"] == ["clock"]
            assert body["servers"]["clock"]["hub"] == "cn"
            # the remote's errors keep their status and shape
            failed = client.post("/clock/fail", json={"message": "from the NAS"})
            assert failed.status_code == 400
            assert failed.json()["error"]["type"] == "tool_error"
            assert "from the NAS" in failed.json()["error"]["message"]
            invalid = client.post("/clock/add", json={"a": "x"})
            assert invalid.status_code == 422
            assert {tuple(e["loc"]) for e in invalid.json()["error"]["errors"]} == {("body", "a"), ("body", "b")}
            # the caller's credential is checked here first
            assert client.post("/clock/add", json={"a": 1, "b": 2}, headers={"Authorization": "Bearer x"}
                               ).status_code == 401


def test_a_region_that_goes_down_only_takes_its_own_tools_and_comes_back(tmp_path: Path):
    path, cn_port, global_port = two_regions(tmp_path)
    g = f"http://127.0.0.1:{global_port}"
    auth = {"Authorization": f"Bearer {GLOBAL_KEY}"}
    with hub(path, "--instance", "global"), httpx2.Client(base_url=g, headers=auth, timeout=30) as client:
        with hub(path, "--instance", "cn") as cn:
            wait_until(lambda: mounted(g, "clock"), timeout=STARTUP, what="clock mounted")
            cn.send_signal(signal.SIGKILL)
            cn.wait(timeout=EXIT)
        started = time.monotonic()
        down = client.post("/clock/add", json={"a": 1, "b": 2})
        assert time.monotonic() - started < 5
        assert down.status_code == 503, down.text
        assert down.json()["error"]["type"] == "server_unavailable" and "Retry-After" in down.headers
        assert "cn" in down.json()["error"]["message"]
        assert client.post("/local/add", json={"a": 1, "b": 2}).status_code == 200
        wait_until(lambda: ready(g)["hubs"]["cn"]["state"] == "failed", timeout=15, what="cn marked unreachable")
        with hub(path, "--instance", "cn"):
            wait_until(lambda: client.post("/clock/add", json={"a": 2, "b": 3}).status_code == 200,
                     timeout=STARTUP, what="clock back through global")
            wait_until(lambda: ready(g)["hubs"]["cn"]["state"] == "ready", timeout=10, what="cn reachable again")


def test_keys_of_one_instance_do_not_open_another(tmp_path: Path):
    path, cn_port, global_port = two_regions(tmp_path, cn_auth=True)
    g, c = f"http://127.0.0.1:{global_port}", f"http://127.0.0.1:{cn_port}"
    with hub(path, "--instance", "cn"), hub(path, "--instance", "global"):
        wait_until(lambda: mounted(g, "clock"), timeout=STARTUP, what="clock mounted")
        # each hub accepts only its own key
        assert httpx2.post(f"{c}/clock/add", json={"a": 1, "b": 2},
                           headers={"Authorization": f"Bearer {GLOBAL_KEY}"}).status_code == 401
        assert httpx2.post(f"{g}/local/add", json={"a": 1, "b": 2},
                           headers={"Authorization": f"Bearer {CN_KEY}"}).status_code == 401
        assert httpx2.post(f"{c}/clock/add", json={"a": 1, "b": 2},
                           headers={"Authorization": f"Bearer {CN_KEY}"}).status_code == 200
        # global reaches cn with instances.cn.api_key, never with the caller's key
        through = httpx2.post(f"{g}/clock/add", json={"a": 1, "b": 2},
                              headers={"Authorization": f"Bearer {GLOBAL_KEY}"}, timeout=30)
        assert through.status_code == 200, through.text


def test_every_instance_runs_in_one_process_without_instance(tmp_path: Path):
    path, cn_port, global_port = two_regions(tmp_path)
    g, c = f"http://127.0.0.1:{global_port}", f"http://127.0.0.1:{cn_port}"
    auth = {"Authorization": f"Bearer {GLOBAL_KEY}"}
    with hub(path):
        wait_until(lambda: mounted(g, "clock") and mounted(c, "clock"), timeout=STARTUP, what="both instances")
        assert httpx2.post(f"{g}/clock/add", json={"a": 1, "b": 2}, headers=auth).json()["total"] == 3
        assert httpx2.post(f"{c}/clock/add", json={"a": 1, "b": 2}, headers=auth).json()["total"] == 3
        # cn does not serve global's local server
        assert httpx2.post(f"{c}/local/add", json={"a": 1, "b": 2}, headers=auth).status_code == 404
        assert "hubs" not in ready(g)  # siblings are served in-process, not over HTTP


def test_remote_hubs_that_mount_each_other_detect_the_loop(tmp_path: Path):
    a_port, b_port = free_port(), free_port()
    a_cfg, b_cfg = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a_cfg.write_text(yaml.safe_dump({
        "hub": {"port": a_port, "mount": ["b"]}, "servers": {"alpha": sample_server()},
        "remotes": {"b": {"url": f"http://127.0.0.1:{b_port}"}}}), encoding="utf-8")
    b_cfg.write_text(yaml.safe_dump({
        "hub": {"port": b_port, "mount": ["a"]}, "servers": {"beta": sample_server()},
        "remotes": {"a": {"url": f"http://127.0.0.1:{a_port}"}}}), encoding="utf-8")
    a, b = f"http://127.0.0.1:{a_port}", f"http://127.0.0.1:{b_port}"
    with hub(a_cfg), hub(b_cfg):
        wait_until(lambda: mounted(a, "beta") and mounted(b, "alpha"), timeout=STARTUP, what="each mounts the other")
        error = wait_until(lambda: ready(a)["hubs"]["b"]["last_error"], timeout=30, what="loop reported")
        assert "mount loop" in error and "alpha" in error
        # each serves its own server and the other's, and nothing twice
        assert set(ready(a)["servers"]) == {"alpha", "beta"}
        assert httpx2.post(f"{a}/beta/add", json={"a": 1, "b": 2}, timeout=30).json()["total"] == 3


def test_the_region_example_config_loads():
    config = load_config(REPO / "config" / "regions.yaml")
    assert config.instances["global"].mount == ["cn"]
    assert set(config.instances["cn"].servers) == {"time", "weather"}
