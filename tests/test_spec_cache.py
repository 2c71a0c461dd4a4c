"""mcphub.schema.OperationCache: documents built from cached operations are the documents built afresh.

The cache is what makes a document for a new scope cheap (bench/cost.py: a 1,000-tool document from
cached operations); it must never change a document. Pure: the schema_cases corpus and constructed
name clashes, each built with and without a cache, in several orders and subsets, compared whole.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest
from mcp.types import Tool

from mcphub.schema import Operation, OperationCache, build_spec, operation_id
from tests.test_schema import CASES, assert_sound_document, tool

JOBS = (None, "", "/under")  # no async answers; documented at the root; under a root path


def operations(servers: dict[str, list[Tool]]) -> list[Operation]:
    return [Operation(f"/{server}/{t.name}", operation_id(f"{server}_{t.name}"), server, t)
            for server, tools in servers.items() for t in tools]


def document(ops: list[Operation], jobs_root: str | None, cache: OperationCache | None) -> dict[str, Any]:
    return build_spec(ops, title="mcphub", version="1.0", jobs_root=jobs_root, cache=cache)


def same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return json.dumps(a, sort_keys=False) == json.dumps(b, sort_keys=False)  # key order too: the bytes served


@pytest.mark.parametrize("jobs_root", JOBS)
def test_the_corpus_builds_the_same_documents_from_the_cache(jobs_root: str | None) -> None:
    tools = [Tool.model_validate(case["tool"]) for case in CASES]
    cache = OperationCache()
    full = operations({"s": tools})
    fresh = document(full, jobs_root, None)
    assert same(document(full, jobs_root, cache), fresh)  # filling the cache
    assert same(document(full, jobs_root, cache), fresh)  # from it
    assert_sound_document(document(full, jobs_root, cache))
    for drop in range(len(full)):  # another scope: every tool but one
        some = full[:drop] + full[drop + 1:]
        assert same(document(some, jobs_root, cache), document(some, jobs_root, None)), full[drop].tool.name
    one = document(full[:1], jobs_root, cache)
    again = document(full, jobs_root, cache)
    assert one["paths"]["/s/" + full[0].tool.name]["post"] is again["paths"]["/s/" + full[0].tool.name]["post"]


def refers_to(name: str, kind: str) -> dict[str, Any]:
    return {"type": "object", "properties": {"x": {"$ref": f"#/$defs/{name}"}}, "$defs": {name: {"type": kind}}}


def test_component_names_that_clash_in_a_document_are_chosen_as_without_the_cache() -> None:
    # "a_t" + "__A__B" and "a_t__A" + "__B" make one component name: whichever comes second is renamed _2,
    # and a cached operation built alone chose the plain name for itself
    clashing = [tool("t", refers_to("A__B", "integer")), tool("t__A", refers_to("B", "null")),
                tool("t__A__B", refers_to("C", "string")), tool("u", {"type": "object"})]
    for jobs_root in JOBS:
        cache = OperationCache()
        for size in range(1, len(clashing) + 1):
            for chosen in itertools.permutations(clashing, size):
                ops = operations({"a": list(chosen)})
                expected = document(ops, jobs_root, None)
                assert same(document(ops, jobs_root, cache), expected), [t.name for t in chosen]
    names = document(operations({"a": clashing}), None, OperationCache())["components"]["schemas"]
    assert {"a_t__A__B", "a_t__A__B_2"} <= set(names)


def test_a_replaced_tool_object_is_built_again_and_the_cache_is_bounded() -> None:
    cache = OperationCache(limit=3)
    old = tool("t", description="old")
    assert document(operations({"s": [old]}), None, cache)["paths"]["/s/t"]["post"]["description"] == "old"
    new = tool("t", description="new")  # its server's tool list changed: a new object
    assert document(operations({"s": [new]}), None, cache)["paths"]["/s/t"]["post"]["description"] == "new"
    for i in range(10):
        document(operations({"s": [tool(f"x{i}")]}), None, cache)
    assert len(cache) <= 3


def test_a_server_whose_tools_keep_changing_keeps_one_entry_per_tool() -> None:
    # Each tool-list change brings new tool objects: each replaces its old entry (and lets the old tool
    # go), instead of piling up until the count bound clears everything.
    tools = [Tool.model_validate(case["tool"]) for case in CASES]
    cache = OperationCache()
    for _ in range(5):
        document(operations({"s": [t.model_copy(deep=True) for t in tools]}), None, cache)
    assert len(cache) == len(tools)
