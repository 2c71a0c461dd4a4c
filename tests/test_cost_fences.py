"""Fences on the hub's memory at rest (issue #14: < 75 MiB with the default config; bench/cost.py measures it).

What a hub serving the default config does not need stays unimported until something needs it: redis
(only with hub.state), joserfc (only with auth.jwt or a forwarded-user JWT), rich (only the commands that
print), jsonschema and referencing (at a tool's first call), authlib.oauth2 (a user's first OAuth
sign-in), the model runner (a first chat), prometheus_client (the first count or scrape). Together ~15 MiB
of the hub's RSS. Each is imported inside the code that uses it (mcphub/state.py, auth.py, cli.py,
validation.py, oauth.py, app.py, metrics.py); a module-level import anywhere on `mcphub serve`'s path
would load it again, silently, and this test fails.

A real `mcphub serve` with the packaged default config (the five bundled servers), in a subprocess whose
main thread runs the CLI as `python -m mcphub serve` does; another thread waits for /readyz, fetches the
documents and Swagger UI (what an idle hub serves), records `sys.modules`, then calls one tool (which must
load jsonschema: the check can see a deferred import) and stops the hub with SIGINT.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.helpers import PYTHON, free_port

HUB_TIMEOUT = 90.0  # seconds for the whole subprocess: five servers start, a few requests, a shutdown
NOT_AT_REST = ("redis", "joserfc", "rich", "jsonschema", "referencing", "authlib.oauth2", "mcphub.runner",
               "prometheus_client")

DRIVER = r"""
import gc, json, os, signal, sys, threading, time
gc.disable()  # as mcphub/__main__.py
from mcphub.cli import main
import httpx2

PORT, OUT, DEADLINE = int(sys.argv[1]), sys.argv[2], time.monotonic() + float(sys.argv[3])

def watch():
    result = {}
    try:
        base = f"http://127.0.0.1:{PORT}"
        with httpx2.Client(timeout=10) as http:
            while True:  # bounded by DEADLINE
                try:
                    if http.get(f"{base}/readyz").status_code == 200:
                        break
                except httpx2.HTTPError:
                    pass
                if time.monotonic() > DEADLINE:
                    raise TimeoutError("the hub was not ready in time")
                time.sleep(0.05)
            for path in ("/healthz", "/openapi.json", "/time/openapi.json", "/docs", "/jobs/openapi.json", "/"):
                result[path] = http.get(f"{base}{path}").status_code
            result["at_rest"] = sorted(sys.modules)
            call = http.post(f"{base}/time/get_current_time", json={"timezone": "UTC"})
            result["call"] = call.status_code
            result["after_call"] = sorted(sys.modules)
    except BaseException as exc:
        result["error"] = repr(exc)
    finally:
        with open(OUT, "w") as f:
            json.dump(result, f)
        os.kill(os.getpid(), signal.SIGINT)

threading.Thread(target=watch, daemon=True).start()
main(["serve", "--port", str(PORT)])
"""


def loaded(modules: list[str], package: str) -> bool:
    return any(m == package or m.startswith(package + ".") for m in modules)


def test_a_hub_at_rest_with_the_default_config_has_not_imported_what_it_does_not_use(tmp_path: Path) -> None:
    out = tmp_path / "modules.json"
    empty = tmp_path / "cwd"  # no ./mcphub.yaml here: `mcphub serve` takes the packaged default
    empty.mkdir()
    proc = subprocess.run([PYTHON, "-c", DRIVER, str(free_port()), str(out), str(HUB_TIMEOUT - 15)], cwd=empty,
                          capture_output=True, text=True, timeout=HUB_TIMEOUT, env=dict(os.environ))
    assert out.exists(), proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert "error" not in result, (result.get("error"), proc.stderr[-3000:])
    assert {path: status for path, status in result.items() if path.startswith("/")} == {
        "/healthz": 200, "/openapi.json": 200, "/time/openapi.json": 200, "/docs": 200, "/jobs/openapi.json": 200,
        "/": 200}
    imported = [package for package in NOT_AT_REST if loaded(result["at_rest"], package)]
    assert imported == [], f"imported by a hub at rest with the default config: {imported} (see this file's docstring)"
    assert result["call"] == 200
    assert loaded(result["after_call"], "jsonschema"), "the first call compiles a validator: jsonschema is loaded"
    assert loaded(result["after_call"], "prometheus_client"), "the first call is counted: prometheus_client is loaded"
    assert not loaded(result["after_call"], "redis") and not loaded(result["after_call"], "joserfc")


def test_freed_heap_pages_can_be_handed_back_on_linux() -> None:
    from mcphub.memory import release_freed

    assert release_freed() is sys.platform.startswith("linux")  # glibc here: malloc_trim was found and called
