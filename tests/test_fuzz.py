"""Property-based fuzzing of a real `mcphub serve` process.

- schemathesis over every operation of the combined spec `/openapi.json` (sample + bundled time server):
  no 5xx apart from the documented 502/503/504, every response conforms to the spec (status, content
  type, headers, body schema), and every error is the one error shape;
- the Authorization header on a hub with an API key: nothing but the exact key gets a call through.

Real processes, on purpose (the whole module): the fuzz drives `mcphub serve` as deployed (its CLI
options, uvicorn, the bundled time server), over HTTP; hypothesis' tests are synchronous, so an
in-process hub would have to run in a thread of its own anyway, for little gain over the two start-ups.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
import schemathesis
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from schemathesis.checks import (  # the public home of the built-in checks in schemathesis 4
    CheckContext,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.helpers import REPO, free_port
from tests.hub import sample_server

# hypothesis imports libcst to print a failing example as a patch; libcst warns on import, and the
# suite's filterwarnings=error would turn a readable failure into an INTERNALERROR
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:mypy_extensions")

STARTUP = 30.0  # seconds for the hub process to answer /readyz 200
EXIT = 20.0  # seconds for it to stop after SIGTERM
EXAMPLES = 12  # per operation: ~15 operations, a few seconds in all
DOCUMENTED_5XX = {502, 503, 504}
KEY = "fuzz-key-0123456789abcdef"
TIME_SERVER = {"transport": "stdio", "command": "python", "args": ["-m", "mcphub_servers.time"]}
QUICK = {
    "timeout": 2,
    "tool_timeouts": {"sleep": 0.5, "slow_pid": 0.5},
    "restart": {"initial_delay": 0.1, "max_delay": 0.5},
}


def _wait_ready(url: str, proc: subprocess.Popen[bytes]) -> None:
    """Poll the hub process's /readyz (another process: nothing to await), bounded."""
    deadline = time.monotonic() + STARTUP
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"hub exited with {proc.returncode}"
        try:
            if httpx2.get(f"{url}/readyz", timeout=5).status_code == 200:
                return
        except httpx2.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"hub at {url} not ready within {STARTUP}s")


def _hub(tmp: Path, servers: dict[str, Any], *args: str) -> Iterator[str]:
    config = tmp / "hub.yaml"
    config.write_text(yaml.safe_dump({"hub": {"reload": False}, "servers": servers}), encoding="utf-8")
    port = free_port()
    with open(tmp / "hub.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mcphub", "serve", "-c", str(config), "--port", str(port), *args],
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_ready(url, proc)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=EXIT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=EXIT)


@pytest.fixture(scope="module")
def hub_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    servers = {"sample": sample_server(**QUICK), "time": TIME_SERVER}
    yield from _hub(tmp_path_factory.mktemp("fuzz-hub"), servers)


@pytest.fixture(scope="module")
def keyed_hub_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from _hub(tmp_path_factory.mktemp("auth-hub"), {"sample": sample_server(**QUICK)}, "--api-key", KEY)


@pytest.fixture(scope="module")
def combined_spec(hub_url: str) -> Any:
    return schemathesis.openapi.from_url(f"{hub_url}/openapi.json")


# ------------------------------------------------------------------------------------ the spec


def no_undocumented_server_error(ctx: CheckContext, response: Any, case: Any) -> bool | None:
    """5xx only as documented: 502 garbage, 503 server down, 504 timeout. Never 500."""
    assert response.status_code < 500 or response.status_code in DOCUMENTED_5XX, (
        f"{case.operation.label}: undocumented {response.status_code}: {response.text[:300]}"
    )
    return None


def one_error_shape(ctx: CheckContext, response: Any, case: Any) -> bool | None:
    """Every non-2xx body is {"error": {"type", "message", ...}} with no Python internals in it."""
    if response.status_code < 300:
        return None
    body = response.json()
    assert set(body) == {"error"}, body
    assert isinstance(body["error"]["type"], str) and isinstance(body["error"]["message"], str), body
    assert "Traceback" not in response.text and "object at 0x" not in response.text, body
    if response.status_code == 503:
        assert int(response.headers["retry-after"][0]) >= 1  # schemathesis: name → list of values
    return None


CHECKS = [
    no_undocumented_server_error,
    one_error_shape,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]

schema = schemathesis.pytest.from_fixture("combined_spec")


def test_the_combined_spec_covers_both_servers(combined_spec: Any, hub_url: str):
    """The fuzz below runs over every operation: the sample server's and the time server's."""
    operations = [result.ok() for result in combined_spec.get_all_operations()]
    paths = {operation.path for operation in operations}
    assert {"/sample/add", "/sample/echo", "/time/get_current_time", "/time/convert_time"} <= paths
    spec = httpx2.get(f"{hub_url}/openapi.json", timeout=10).json()
    assert len(operations) == sum(len(methods) for methods in spec["paths"].values())


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
def test_every_operation_answers_within_its_spec_and_never_with_an_undocumented_5xx(case: Any):
    case.call_and_validate(checks=CHECKS, timeout=30)


# ------------------------------------------------------------------------------------------ auth


def _grants(value: str) -> bool:
    """Whether an Authorization value carries exactly the configured key (scheme case-insensitive)."""
    scheme, _, token = value.strip().partition(" ")
    return scheme.lower() == "bearer" and token.strip() == KEY


_header_chars = st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f")
_near_keys = st.one_of(
    st.just(KEY[:-1]),
    st.just(KEY + "0"),
    st.just(KEY.upper()),
    st.just(KEY[1:]),
    st.integers(0, len(KEY) - 1).flatmap(lambda i: st.sampled_from("0aZ-_ ").map(lambda c: KEY[:i] + c + KEY[i + 1 :])),
    st.text(_header_chars, max_size=40),
    st.just(KEY),
)
_schemes = st.sampled_from(["Bearer", "bearer", "BEARER", "Basic", "Token", "Bearer:", "", "Bearer\t"])
_authorization = st.one_of(
    st.text(_header_chars, max_size=60),
    st.builds(
        lambda scheme, sep, key: f"{scheme}{sep}{key}", _schemes, st.sampled_from([" ", "  ", "", "\t"]), _near_keys
    ),
)
_names = st.from_regex(r"[A-Za-z0-9_-]{1,12}", fullmatch=True)


@pytest.fixture(scope="module")
def keyed_client(keyed_hub_url: str) -> Iterator[httpx2.Client]:
    with httpx2.Client(base_url=keyed_hub_url, timeout=10) as client:
        yield client


@settings(max_examples=200, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(
    authorization=st.one_of(st.none(), _authorization),
    path=st.one_of(
        st.sampled_from(["/sample/add", "/sample/pid", "/sample/crash"]),
        st.builds(lambda s, t: f"/{s}/{t}", _names, _names),
    ),
)
@example(authorization=f"Bearer {KEY}", path="/sample/add")  # both branches always run
@example(authorization=f"bearer  {KEY}", path="/sample/add")
@example(authorization=f"Bearer {KEY[:-1]}", path="/sample/add")
@example(authorization=None, path="/nope/nothing")
def test_no_call_gets_through_without_the_exact_api_key(
    keyed_client: httpx2.Client, authorization: str | None, path: str
):
    if authorization is not None:
        authorization = authorization.strip(" \t")  # HTTP carries no surrounding whitespace in a header value
    # latin-1 bytes: what HTTP carries; httpx2 would refuse a non-ASCII str
    headers = {} if authorization is None else {"Authorization": authorization.encode("latin-1")}
    granted = authorization is not None and _grants(authorization)
    if granted and path == "/sample/crash":
        return  # the key works; crashing the server proves nothing about auth
    response = keyed_client.post(path, json={"a": 1, "b": 2}, headers=headers)
    if not granted:
        assert response.status_code == 401, (authorization, path, response.status_code, response.text)
        body = response.json()
        assert set(body) == {"error"} and body["error"]["type"] == "unauthorized", body
        assert response.headers["www-authenticate"].lower().startswith("bearer")
    else:
        assert response.status_code != 401, (authorization, response.text)
