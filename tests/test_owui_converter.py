"""Open WebUI's converters load every spec the hub serves, recursive schemas included.

The converter (`convertOpenApiToToolPayload` and its `resolveSchema`, src/lib/utils/index.ts) is the one
shipped in Open WebUI's release: `.ci/install-thirdparty` downloads the open-webui wheel from PyPI (no
dependencies, nothing installed) into `$MCPHUB_TP_DIR/open-webui/`, and tests/owui_converter.mjs loads the
frontend chunk that holds it with node. The backend's converter (`convert_openapi_to_tool_payload` and
`resolve_schema`, open_webui/utils/tools.py) is compiled from the same wheel's source, those definitions
only (the module itself imports the whole of Open WebUI). Nothing of Open WebUI is copied into this
repository.

Why: its browser-side resolveSchema (user-level "direct" tool servers) passes its visited set only through
`$ref` and oneOf/anyOf/allOf and starts a fresh one for every property and `items`, so a cycle a document
reaches through them overflows its stack and Open WebUI drops the whole tool server (mcphub.schema unrolls
recursive definitions for it).
"""

from __future__ import annotations

import ast
import copy
import json
import os
import re
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mcphub import schema
from mcphub.schema import UNROLL_DEPTH
from tests.helpers import REPO, missing
from tests.hub import assert_error, running_hub, sample_server
from tests.test_schema import CASE, CASES_DIR, combined_spec, tool

pytestmark = pytest.mark.anyio

TP_DIR = Path(os.environ.get("MCPHUB_TP_DIR") or REPO / ".tp")
OPEN_WEBUI_RELEASE = "0.12.4"  # the release whose converter is tested; .ci/install-thirdparty fetches it
DRIVER = Path(__file__).with_name("owui_converter.mjs")
CHUNKS = "open_webui/frontend/_app/immutable/chunks/"
CONVERTER_MARK = b"No description available."  # a string of convertOpenApiToToolPayload's, kept by the minifier
NODE_TIMEOUT = 60.0  # seconds: node loads a 330 kB chunk and converts a few documents


BACKEND_SOURCE = "open_webui/utils/tools.py"
BACKEND_DEFINITIONS = {"OPENAPI_HTTP_METHODS", "resolve_schema", "convert_openapi_to_tool_payload"}


@pytest.fixture(scope="module")
def release_wheel() -> Path:
    wheels = sorted((TP_DIR / "open-webui").glob(f"open_webui-{OPEN_WEBUI_RELEASE}-*.whl"))
    if not wheels:
        missing(f"no open-webui {OPEN_WEBUI_RELEASE} wheel in {TP_DIR / 'open-webui'}: run .ci/install-thirdparty")
    return wheels[0]


@pytest.fixture(scope="module")
def backend_converter(release_wheel: Path) -> Callable[[dict[str, Any]], list[dict[str, Any]]]:
    """convert_openapi_to_tool_payload from the release's source, with what it uses of its module."""
    with zipfile.ZipFile(release_wheel) as wheel:
        tree = ast.parse(wheel.read(BACKEND_SOURCE).decode())
    picked = [node for node in tree.body
              if (isinstance(node, ast.FunctionDef) and node.name in BACKEND_DEFINITIONS)
              or (isinstance(node, ast.Assign) and any(getattr(t, "id", None) in BACKEND_DEFINITIONS
                                                      for t in node.targets))]
    assert len(picked) == len(BACKEND_DEFINITIONS), [getattr(n, "name", "=") for n in picked]
    namespace: dict[str, Any] = {"copy": copy}
    exec(compile(ast.Module(body=picked, type_ignores=[]), BACKEND_SOURCE, "exec"), namespace)
    converter: Callable[[dict[str, Any]], list[dict[str, Any]]] = namespace["convert_openapi_to_tool_payload"]
    return converter


@pytest.fixture(scope="module")
def converter_chunk(release_wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The release's frontend chunks, unpacked; the path of the one that holds the converter."""
    target = tmp_path_factory.mktemp("open-webui")
    holders = []
    with zipfile.ZipFile(release_wheel) as wheel:
        metadata = wheel.read(f"open_webui-{OPEN_WEBUI_RELEASE}.dist-info/METADATA").decode()
        assert f"\nVersion: {OPEN_WEBUI_RELEASE}\n" in metadata
        for name in wheel.namelist():
            if name.startswith(CHUNKS) and name.endswith(".js"):
                data = wheel.read(name)
                (target / Path(name).name).write_bytes(data)
                if CONVERTER_MARK in data:
                    holders.append(target / Path(name).name)
    assert len(holders) == 1, f"the converter is in {len(holders)} chunks of the wheel, expected one"
    return holders[0]


def convert(chunk: Path, specs: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    """label → {"tools": [...]} or {"error": "..."}: what Open WebUI's converter made of each document."""
    specs_file = tmp_path / "specs.json"
    specs_file.write_text(json.dumps(specs), encoding="utf-8")
    done = subprocess.run(["node", str(DRIVER), str(chunk), str(specs_file)], capture_output=True, text=True,
                          timeout=NODE_TIMEOUT, check=False)
    assert done.returncode == 0, done.stderr
    results: dict[str, Any] = json.loads(done.stdout)
    return results


def tool_named(result: dict[str, Any], name: str) -> dict[str, Any]:
    assert "tools" in result, result
    found: dict[str, Any] = next(t for t in result["tools"] if t["name"] == name)
    return found


def depth_of(parameters: dict[str, Any], path: list[str]) -> int:
    """How many times `path` (property names, "items" for an array's items) repeats in a converted schema."""
    depth, node = 0, parameters
    while True:
        for step in path:
            node = node.get("items", {}) if step == "items" else node.get("properties", {}).get(step, {})
        if not node:
            return depth
        depth += 1


async def hub_specs() -> dict[str, dict[str, Any]]:
    """The combined and per-server specs of a hub serving the schema cases (hard_server) and sample."""
    hard = {"transport": "stdio", "command": sys.executable, "args": [str(CASES_DIR / "hard_server.py")]}
    async with running_hub({"servers": {"hard": hard, "sample": sample_server()}}) as hub:
        specs = {}
        for path in ("/openapi.json", "/hard/openapi.json", "/sample/openapi.json"):
            response = await hub.client.get(path)
            assert response.status_code == 200, response.text
            specs[path] = response.json()
    return specs


async def test_every_spec_the_hub_serves_loads_in_open_webuis_backend_converter(
        backend_converter: Callable[[dict[str, Any]], list[dict[str, Any]]]) -> None:
    for path, spec in (await hub_specs()).items():
        tools = backend_converter(spec)
        assert len(tools) == len(spec["paths"]), path
        # It resolves $ref only along properties, items and allOf/anyOf/oneOf; what it copies verbatim
        # (e.g. under additionalProperties or prefixItems) keeps its ref. None of the unrolled levels may.
        for tool_ in tools:
            if tool_["name"].endswith(("tree", "root_ref")):
                assert "#/components/" not in json.dumps(tool_), tool_
        if path == "/hard/openapi.json":
            node = next(t for t in tools if t["name"] == "tree")["parameters"]["properties"]["root"]
            for _ in range(UNROLL_DEPTH):
                assert node["properties"]["value"] == {"type": "integer"}, node
                node = node["properties"]["children"]["items"]
            assert node.keys() == {"description"} and "levels deep" in node["description"], node


async def test_every_spec_the_hub_serves_loads_in_open_webuis_browser_converter(
        converter_chunk: Path, tmp_path: Path) -> None:
    specs = await hub_specs()
    results = convert(converter_chunk, specs, tmp_path)
    for path, spec in specs.items():
        assert "tools" in results[path], f"Open WebUI's converter failed on {path}: {results[path]}"
        assert len(results[path]["tools"]) == len(spec["paths"]), path
    tree = tool_named(results["/hard/openapi.json"], "tree")["parameters"]
    assert tree["required"] == ["root"]
    assert tree["properties"]["root"]["properties"]["value"] == {"type": "integer"}
    assert depth_of(tree["properties"]["root"], ["children", "items"]) == UNROLL_DEPTH - 1
    root_ref = tool_named(results["/openapi.json"], "hard_root_ref")["parameters"]
    assert depth_of(root_ref, ["child"]) == UNROLL_DEPTH
    wire_tools = [name for name, case in CASE.items() if case["tool"]["inputSchema"].get("type") == "object"]
    assert {t["name"] for t in results["/hard/openapi.json"]["tools"]} == {schema.operation_id(n) for n in wire_tools}


async def test_the_allof_guard_alone_overflowed_the_converter_that_the_unrolled_document_passes(
        converter_chunk: Path, tmp_path: Path) -> None:
    """The document as the hub served it before (the recursive reference wrapped in allOf, no unrolling)
    still overflows the shipped converter: the test can fail, and unrolling is what fixes it."""
    document = combined_spec({"hard": [tool(name, CASE[name]["tool"]["inputSchema"]) for name in ("tree", "root_ref")]})
    guarded = json.loads(re.sub(r'\{"\$ref": "#/components/schemas/(hard_\w+?)__(\d)"\}',
                                r'{"allOf": [{"$ref": "#/components/schemas/\1"}]}', json.dumps(document)))
    assert guarded != document
    results = convert(converter_chunk, {"unrolled": document, "allOf guard": guarded}, tmp_path)
    assert results["allOf guard"] == {"error": "RangeError: Maximum call stack size exceeded"}
    assert "tools" in results["unrolled"]


async def test_below_the_cut_the_hub_still_validates_against_the_tools_own_schema() -> None:
    """The served document is open below UNROLL_DEPTH levels; a call is still judged by the tool's schema."""
    hard = {"transport": "stdio", "command": sys.executable, "args": [str(CASES_DIR / "hard_server.py")]}
    deep: dict[str, Any] = {"name": 7}  # a number where the schema wants a string, below the cut
    for level in range(UNROLL_DEPTH + 1):
        deep = {"name": f"level {level}", "child": deep}
    async with running_hub({"servers": {"hard": hard}}) as hub:
        spec = (await hub.client.get("/hard/openapi.json")).json()
        schemas = spec["components"]["schemas"]
        assert f"root_ref__Input__{UNROLL_DEPTH}" in schemas and f"root_ref__Input__{UNROLL_DEPTH + 1}" not in schemas
        refused = assert_error(await hub.client.post("/hard/root_ref", json=deep), 422, "invalid_arguments")
        assert refused["errors"][0]["loc"] == ["body", *["child"] * (UNROLL_DEPTH + 1), "name"], refused
        shallow = {"name": "a", "child": {"name": "b"}}
        assert (await hub.client.post("/hard/root_ref", json=shallow)).json() == shallow
