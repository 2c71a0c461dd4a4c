"""The HTTP surface of the hub: the app through an ASGI transport, the sample MCP server in-process
(tests/hub.py `running_hub`).

Real processes, on purpose: `test_a_real_stdio_server_behind_uvicorn_answers_end_to_end` (a stdio child
and uvicorn on 127.0.0.1: the whole path once), and the `hard` schema server, a standalone script.
"""

from __future__ import annotations

import base64
import sys

import anyio
import pytest
from openapi_spec_validator import validate

from tests.helpers import REPO
from tests.hub import assert_error, running_hub, sample_server

pytestmark = pytest.mark.anyio

KEY = "test-key-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture
async def hub():
    async with running_hub({"servers": {"sample": sample_server()}}) as running:
        yield running


async def test_tool_call_returns_structured_content(hub):
    response = await hub.client.post("/sample/add", json={"a": 2, "b": 40})
    assert response.status_code == 200, response.text
    assert response.json() == {"total": 42, "operands": [2, 40]}


async def test_text_result_is_returned_as_text_and_json_text_is_parsed(hub):
    response = await hub.client.post("/sample/echo", json={"text": "hello"})
    assert response.status_code == 200, response.text
    # MCPServer wraps a str return as structured {"result": ...}
    assert response.json() == {"result": "hello"}


async def test_every_content_kind_is_mapped_without_loss(hub):
    response = await hub.client.post("/sample/mixed", json={})
    assert response.status_code == 200, response.text
    text, parsed, image, audio, link, embedded = response.json()
    assert text == "plain words"
    assert parsed == {"k": [1, 2]}
    assert image["type"] == "image" and image["mimeType"] == "image/png"
    assert base64.b64decode(image["data"]).startswith(b"\x89PNG")
    assert audio == {"type": "audio", "mimeType": "audio/wav", "data": base64.b64encode(b"RIFF0000WAVE").decode()}
    assert link == {"type": "resource_link", "uri": "file:///tmp/a.txt", "name": "a.txt", "mimeType": "text/plain"}
    assert embedded == {"type": "resource", "uri": "memo://one", "mimeType": "text/plain", "text": "embedded text"}


async def test_tool_error_is_400_with_the_tools_own_message(hub):
    response = await hub.client.post("/sample/fail", json={"message": "the disk is full"})
    error = assert_error(response, 400, "tool_error")
    assert "the disk is full" in error["message"]
    assert error["server"] == "sample" and error["tool"] == "fail"


async def test_mcp_error_answer_is_400_tool_error(hub):
    response = await hub.client.post("/sample/rpc_error", json={"message": "bad widget id"})
    error = assert_error(response, 400, "tool_error")
    assert error["message"] == "bad widget id"


async def test_arguments_breaking_the_schema_are_422_with_field_paths(hub):
    response = await hub.client.post("/sample/order", json={"color": "purple", "count": 11})
    error = assert_error(response, 422, "invalid_arguments")
    locs = {tuple(e["loc"]) for e in error["errors"]}
    assert locs == {("body", "color"), ("body", "count")}
    assert any("purple" in e["msg"] for e in error["errors"])


async def test_missing_required_argument_is_422(hub):
    response = await hub.client.post("/sample/add", json={"a": 1})
    error = assert_error(response, 422, "invalid_arguments")
    assert "'b' is a required property" in error["message"]


@pytest.mark.parametrize("body", [b"[1, 2]", b"{not json", b'"text"'])
async def test_a_body_that_is_not_a_json_object_is_422(hub, body):
    response = await hub.client.post("/sample/echo", content=body, headers={"content-type": "application/json"})
    assert_error(response, 422, "invalid_arguments")


async def test_defaults_are_not_injected_into_the_call(hub):
    response = await hub.client.post("/sample/order", json={"color": "red"})
    assert response.status_code == 200, response.text
    assert response.json() == {"color": "red", "count": 1, "note": None}  # the server's own defaults


async def test_explicit_null_is_accepted_where_the_schema_allows_it(hub):
    response = await hub.client.post("/sample/order", json={"color": "red", "note": None})
    assert response.status_code == 200, response.text


async def test_unknown_server_and_unknown_tool_are_404(hub):
    error = assert_error(await hub.client.post("/nope/echo", json={}), 404, "not_found")
    assert "sample" in error["message"]
    error = assert_error(await hub.client.post("/sample/nope", json={}), 404, "not_found")
    assert "echo" in error["message"]


async def test_specs_are_valid_openapi_and_list_every_tool(hub):
    combined = (await hub.client.get("/openapi.json")).json()
    validate(combined)
    assert "/sample/add" in combined["paths"]
    assert combined["paths"]["/sample/add"]["post"]["operationId"] == "sample_add"
    one = (await hub.client.get("/sample/openapi.json")).json()
    validate(one)
    assert one["paths"]["/add"]["post"]["operationId"] == "add"
    assert one["servers"] == [{"url": "/sample"}]
    enum = one["paths"]["/order"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert enum["properties"]["color"]["enum"] == ["red", "green", "blue"]
    assert enum["properties"]["count"]["maximum"] == 10


async def test_swagger_ui_pages_point_at_their_spec(hub):
    page = await hub.client.get("/sample/docs")
    assert page.status_code == 200 and "/sample/openapi.json" in page.text
    page = await hub.client.get("/docs")
    assert page.status_code == 200 and "/openapi.json" in page.text
    assert_error(await hub.client.get("/nope/docs"), 404, "not_found")


async def test_healthz_readyz_and_metrics(hub):
    assert (await hub.client.get("/healthz")).json() == {"status": "ok"}
    ready = await hub.client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["servers"]["sample"]["state"] == "ready"
    assert ready.json()["servers"]["sample"]["tools"] == len(hub.supervisor.servers["sample"].tools)
    await hub.client.post("/sample/add", json={"a": 1, "b": 1})
    await hub.client.post("/sample/fail", json={"message": "x"})
    text = (await hub.client.get("/metrics")).text
    assert 'mcphub_tool_calls_total{face="http",server="sample",status="200",tool="add"} 1.0' in text
    assert 'mcphub_tool_errors_total{server="sample",tool="fail",type="tool_error"} 1.0' in text
    assert 'mcphub_tool_call_duration_seconds_count{server="sample",tool="add"} 1.0' in text
    assert 'mcphub_server_up{server="sample",state="ready"} 1.0' in text


async def test_unknown_routes_and_methods_use_the_error_shape(hub):
    assert_error(await hub.client.get("/a/b/c"), 404, "not_found")
    assert_error(await hub.client.get("/sample/add"), 405, "method_not_allowed")


async def test_concurrent_calls_share_the_session_and_each_gets_its_own_answer(hub):
    results: dict[int, int] = {}

    async def one(i: int) -> None:
        response = await hub.client.post("/sample/add", json={"a": i, "b": 1000})
        results[i] = response.json()["total"]

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            for i in range(50):
                tg.start_soon(one, i)
    assert results == {i: i + 1000 for i in range(50)}


async def test_a_real_stdio_server_behind_uvicorn_answers_end_to_end():
    async with running_hub({"servers": {"sample": sample_server()}}, in_process=False) as hub:
        assert hub.url.startswith("http://127.0.0.1:")
        response = await hub.client.post("/sample/add", json={"a": 2, "b": 40})
        assert response.status_code == 200, response.text
        assert response.json() == {"total": 42, "operands": [2, 40]}
        assert_error(await hub.client.post("/sample/fail", json={"message": "over the wire"}), 400, "tool_error")
        ready = (await hub.client.get("/readyz")).json()
        assert ready["servers"]["sample"]["state"] == "ready"
        assert (await hub.client.get("/sample/openapi.json")).json()["paths"]["/add"]["post"]["operationId"] == "add"


async def test_calls_need_a_key_once_one_is_configured():
    config = {"auth": {"api_keys": [{"name": "ci", "key": KEY}]}, "servers": {"sample": sample_server()}}
    async with running_hub(config) as hub:
        assert_error(await hub.client.post("/sample/add", json={"a": 1, "b": 2}), 401, "unauthorized")
        bad = await hub.client.post("/sample/add", json={"a": 1, "b": 2}, headers={"Authorization": "Bearer nope"})
        assert_error(bad, 401, "unauthorized")
        malformed = await hub.client.post("/sample/add", json={}, headers={"Authorization": KEY})
        assert_error(malformed, 401, "unauthorized")
        ok = await hub.client.post("/sample/add", json={"a": 1, "b": 2}, headers=AUTH)
        assert ok.status_code == 200, ok.text
        # health, readiness, metrics and (public_docs) specs need no credential
        for path in ("/healthz", "/readyz", "/metrics", "/openapi.json", "/sample/openapi.json"):
            assert (await hub.client.get(path)).status_code == 200, path
        assert KEY not in (await hub.client.get("/readyz")).text


async def test_scoped_key_is_403_outside_its_scope_and_its_spec_lists_only_its_tools():
    config = {
        "auth": {"api_keys": [{"name": "narrow", "key": KEY, "servers": ["sample"], "tools": ["add"]}]},
        "servers": {"sample": sample_server(), "other": sample_server()},
    }
    async with running_hub(config) as hub:
        assert (await hub.client.post("/sample/add", json={"a": 1, "b": 2}, headers=AUTH)).status_code == 200
        assert_error(await hub.client.post("/sample/echo", json={"text": "x"}, headers=AUTH), 403, "forbidden")
        assert_error(await hub.client.post("/other/add", json={"a": 1, "b": 2}, headers=AUTH), 403, "forbidden")
        spec = (await hub.client.get("/openapi.json", headers=AUTH)).json()
        assert list(spec["paths"]) == ["/sample/add"]
        public = (await hub.client.get("/openapi.json")).json()
        assert "/other/echo" in public["paths"]


async def test_private_docs_need_a_credential():
    config = {"hub": {"public_docs": False}, "auth": {"api_keys": [{"name": "k", "key": KEY}]},
              "servers": {"sample": sample_server()}}
    async with running_hub(config) as hub:
        assert_error(await hub.client.get("/openapi.json"), 401, "unauthorized")
        assert_error(await hub.client.get("/sample/docs"), 401, "unauthorized")
        assert (await hub.client.get("/sample/openapi.json", headers=AUTH)).status_code == 200


async def test_denied_tools_are_not_served():
    config = {"servers": {"sample": sample_server(tools={"deny": ["crash", "fail"]})}}
    async with running_hub(config) as hub:
        assert_error(await hub.client.post("/sample/crash", json={}), 404, "not_found")
        spec = (await hub.client.get("/sample/openapi.json")).json()
        assert "/crash" not in spec["paths"] and "/echo" in spec["paths"]


async def test_a_tool_whose_schema_points_nowhere_is_still_callable_and_judged_by_its_server():
    hard = {"transport": "stdio", "command": sys.executable, "args": [str(REPO / "tests/schema_cases/hard_server.py")]}
    async with running_hub({"servers": {"hard": hard}}) as hub:
        response = await hub.client.post("/hard/unresolvable", json={"missing": 1, "fine": 2})
        assert response.status_code == 200, response.text
        assert response.json() == {"missing": 1, "fine": 2}  # the server echoes what it was sent
        # the parts of the schema that resolve are still checked (the dangling ones are open, as documented)
        assert_error(await hub.client.post("/hard/unresolvable", json={"missing": 1, "fine": "x"}), 422,
                     "invalid_arguments")
        validate((await hub.client.get("/hard/openapi.json")).json())


async def test_behind_a_proxy_sub_path_the_specs_and_docs_point_under_root_path():
    async with running_hub({"hub": {"root_path": "/tools"}, "servers": {"sample": sample_server()}}) as hub:
        one = (await hub.client.get("/sample/openapi.json")).json()
        assert one["servers"] == [{"url": "/tools/sample"}]
        combined = (await hub.client.get("/openapi.json")).json()
        assert combined["servers"] == [{"url": "/tools"}]
        assert "/tools/sample/openapi.json" in (await hub.client.get("/sample/docs")).text
        # the proxy strips the prefix (nginx: `location /tools/ { proxy_pass http://hub:8000/; }`)
        assert (await hub.client.post("/sample/add", json={"a": 1, "b": 2})).json()["total"] == 3
