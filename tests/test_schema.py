"""mcphub.schema: MCP tools → OpenAPI 3.1. Table tests of tricky schemas, then a live stdio corpus.

Every document must pass openapi-spec-validator, accept and reject the same arguments as the tool's own
schema ("faithful"), and survive a client that expands $ref / properties / items with no cycle check,
which is what Open WebUI's converters do.

Real processes, on purpose: the live corpus (`test_live_tools_make_sound_faithful_documents`) lists the
third-party servers' and the hard schema server's tools over stdio, so the schemas are the ones that
crossed the wire and the SDK's validation. Everything else is pure.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import anyio
import pytest
from jsonschema import Draft202012Validator
from jsonschema.validators import validator_for
from mcp import Client, StdioServerParameters
from mcp.types import Tool
from openapi_spec_validator import validate
from referencing import Registry, Resource

from mcphub.schema import UNROLL_DEPTH, Operation, build_spec, lint_collisions, lint_tool, operation_id
from tests.helpers import PYTHON, REPO, missing

pytestmark = pytest.mark.anyio

CASES_DIR = Path(__file__).with_name("schema_cases")
CASES = json.loads((CASES_DIR / "tools.json").read_text(encoding="utf-8"))
CASE = {case["tool"]["name"]: case for case in CASES}
TP = Path(os.environ.get("MCPHUB_TP_DIR", REPO / ".tp"))
LIST_TOOLS_TIMEOUT = 60.0  # seconds: process start (node for server-everything) + handshake + tools/list
LIVE_SERVERS = {
    "time": (TP / "venvs" / "mcp-server-time" / "bin" / "mcp-server-time", []),
    "fetch": (TP / "venvs" / "mcp-server-fetch" / "bin" / "mcp-server-fetch", []),
    "everything": (TP / "npm" / "node_modules" / ".bin" / "mcp-server-everything", ["stdio"]),
    "hard": (Path(PYTHON), [str(CASES_DIR / "hard_server.py")]),
}
DATA_KEYWORDS = {"const", "default", "enum", "examples", "example"}
NAME_MAPS = {"properties", "patternProperties", "dependentSchemas", "$defs", "definitions"}
EXPANSION_LIMIT = 60  # nesting depth at which a naive $ref expander is declared to be looping


# --------------------------------------------------------------------------------------------- helpers
def tool(name: str = "t", input_schema: dict[str, Any] | None = None, **fields: Any) -> Tool:
    return Tool.model_validate({"name": name, "inputSchema": input_schema or {"type": "object"}, **fields})


def case_tool(name: str) -> Tool:
    return Tool.model_validate(CASE[name]["tool"])


def per_server_spec(server: str, tools: list[Tool], **options: Any) -> dict[str, Any]:
    operations = [Operation(f"/{t.name}", operation_id(t.name), server, t) for t in tools]
    return build_spec(operations, title=server, version="1.0", **options)


def combined_spec(servers: dict[str, list[Tool]]) -> dict[str, Any]:
    operations = [
        Operation(f"/{server}/{t.name}", operation_id(f"{server}_{t.name}"), server, t)
        for server, tools in servers.items()
        for t in tools
    ]
    return build_spec(operations, title="mcphub", version="1.0")


def post(spec: dict[str, Any], path: str) -> dict[str, Any]:
    return spec["paths"][path]["post"]


def body(spec: dict[str, Any], path: str) -> dict[str, Any]:
    return post(spec, path)["requestBody"]["content"]["application/json"]["schema"]


def result(spec: dict[str, Any], path: str) -> dict[str, Any]:
    return post(spec, path)["responses"]["200"]["content"]["application/json"]["schema"]


def in_document(spec: dict[str, Any], schema: Any) -> Draft202012Validator:
    """A validator for a schema that lives in the document: its #/components/... refs resolve there."""
    return Draft202012Validator({"allOf": [schema], "components": spec["components"]})


def refuse(uri: str) -> Resource:
    raise LookupError(f"the test does not fetch {uri}")


def standalone(schema: dict[str, Any]) -> Any:
    """A validator for a tool's own schema, in the draft it declares; it never fetches a remote $ref."""
    return validator_for(schema, default=Draft202012Validator)(schema, registry=Registry(retrieve=refuse))


def assert_faithful(original: dict[str, Any] | None, ours: Draft202012Validator, valid: list, invalid: list) -> None:
    """The document and (unless None: it cannot be evaluated) the tool's own schema agree on each instance."""
    theirs = standalone(original) if original is not None else None
    for instance in valid:
        assert theirs is None or theirs.is_valid(instance), f"fixture: the tool's schema rejects {instance!r}"
        assert ours.is_valid(instance), f"the document rejects {instance!r}"
    for instance in invalid:
        assert theirs is None or not theirs.is_valid(instance), f"fixture: the tool's schema accepts {instance!r}"
        assert not ours.is_valid(instance), f"the document accepts {instance!r}"


def expand_naively(schema: Any, components: dict[str, Any], depth: int = 0) -> Any:
    """Expand a schema as Open WebUI's converters do: follow $ref, properties, items; no cycle check."""
    assert depth < EXPANSION_LIMIT, "the $ref expansion does not terminate"
    if not schema:
        return {}
    assert isinstance(schema, dict), f"a client doing `'$ref' in schema` crashes on {schema!r}"
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        assert schema["$ref"] == f"#/components/schemas/{name}", schema["$ref"]
        return expand_naively(components["schemas"][name], components, depth + 1)
    expanded = dict(schema)
    if "properties" in schema:
        expanded["properties"] = {k: expand_naively(v, components, depth + 1) for k, v in schema["properties"].items()}
    if isinstance(schema.get("items"), dict | bool):
        expanded["items"] = expand_naively(schema["items"], components, depth + 1)
    return expanded


def assert_sound_document(spec: dict[str, Any]) -> None:
    """Valid OpenAPI 3.1, every $ref resolves, and a naive client can turn each operation into a tool."""
    validate(spec)
    for name in spec["components"]["schemas"]:
        assert name.replace(".", "").replace("-", "").replace("_", "").isalnum(), name
    for ref in walk_refs(spec):  # schemas, and the responses every operation shares (components/responses)
        kind, _, name = ref.removeprefix("#/components/").partition("/")
        assert ref.startswith("#/components/") and name in spec["components"].get(kind, {}), f"dangling {ref}"
    for item in spec["paths"].values():
        operation = item["post"]
        assert len(operation["operationId"]) <= 64
        request = operation["requestBody"]["content"]["application/json"]["schema"]
        parameters = expand_naively(request, spec["components"])
        assert parameters["type"] == "object" and isinstance(parameters["properties"], dict)


def walk_refs(node: Any, names: bool = False) -> list[str]:
    """Every $ref in a document or schema, skipping data (const, default, ...) and property names."""
    if isinstance(node, list):
        return [r for v in node for r in walk_refs(v)]
    if not isinstance(node, dict):
        return []
    refs = []
    for key, value in node.items():
        if key == "$ref" and not names:
            refs.append(value)
        elif names or key not in DATA_KEYWORDS:
            refs += walk_refs(value, names=not names and key in NAME_MAPS)
    return refs


# ---------------------------------------------------------------------------------------- operation_id
@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("get_current_time", "get_current_time"),
        ("get-sum", "get-sum"),
        ("dotted.name-with/slash", "dotted_name-with_slash"),
        ("tools:search übersicht", "tools_search__bersicht"),
        ("", "_"),
        ("x" * 64, "x" * 64),
    ],
)
def test_operation_id_replaces_characters_outside_the_openai_alphabet(name: str, expected: str) -> None:
    assert operation_id(name) == expected


def test_operation_id_cuts_long_names_and_keeps_them_distinct() -> None:
    a, b = "github_" + "a" * 70 + "_one", "github_" + "a" * 70 + "_two"
    assert len(operation_id(a)) == len(operation_id(b)) == 64
    assert operation_id(a) != operation_id(b)
    assert operation_id(a) == operation_id(a)
    assert operation_id(a).startswith("github_aaa")
    assert all(c.isalnum() or c in "_-" for c in operation_id(a + "/ä"))


# --------------------------------------------------------------------------------------- the operation
def test_operation_carries_id_summary_description_tags_and_annotations() -> None:
    spec = per_server_spec("weather", [case_tool("constraints")])
    operation = post(spec, "/constraints")
    assert operation["operationId"] == "constraints"
    assert operation["summary"] == "Every constraint keyword"
    assert operation["description"].startswith("enum, const, bounds")
    assert operation["tags"] == ["weather"]
    assert operation["requestBody"]["required"] is True
    assert operation["x-mcp-annotations"] == {
        "title": "Annotated title",
        "readOnlyHint": True,
        "destructiveHint": False,
    }


def test_summary_falls_back_to_annotation_title_then_name_and_missing_description_is_omitted() -> None:
    annotated = tool("a", annotations={"title": "From annotations"})
    bare = tool("b")
    spec = per_server_spec("s", [annotated, bare])
    assert post(spec, "/a")["summary"] == "From annotations"
    assert post(spec, "/b")["summary"] == "b"
    assert "description" not in post(spec, "/b")
    assert "x-mcp-annotations" not in post(spec, "/b")


def test_error_statuses_share_one_error_schema_that_fits_the_hub_error_body() -> None:
    spec = per_server_spec("s", [tool(), tool("u")])
    responses = post(spec, "/t")["responses"]
    assert sorted(responses) == ["200", "400", "401", "403", "404", "422", "502", "503", "504"]
    assert post(spec, "/u")["responses"] == responses  # written once, in components/responses
    shared = spec["components"]["responses"]
    for status in ("400", "401", "403", "404", "422", "502", "503", "504"):
        name = responses[status]["$ref"].removeprefix("#/components/responses/")
        assert shared[name]["description"]
        assert shared[name]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}
    assert "Retry-After" in shared["Unavailable"]["headers"]
    error = in_document(spec, {"$ref": "#/components/schemas/Error"})
    assert error.is_valid({"error": {"type": "tool_error", "message": "boom", "server": "s", "tool": "t"}})
    assert error.is_valid(
        {
            "error": {
                "type": "invalid_arguments",
                "message": "bad",
                "errors": [{"loc": ["body", 0], "msg": "x"}],
            }
        }
    )
    assert not error.is_valid({"error": {"type": "tool_error"}})
    assert not error.is_valid({"detail": "Not Found"})


def test_result_schema_is_the_output_schema_or_a_described_anything() -> None:
    spec = per_server_spec("s", [case_tool("structured"), tool("plain")])
    assert result(spec, "/plain") == {"$ref": "#/components/schemas/ToolResult"}
    assert "structuredContent" in spec["components"]["schemas"]["ToolResult"]["description"]
    assert result(spec, "/structured")["properties"]["days"]["items"] == {
        "$ref": "#/components/schemas/structured__Output__Day"
    }
    assert {"structured__Output__Day", "structured__Output__Units"} <= spec["components"]["schemas"].keys()
    case = CASE["structured"]
    assert_faithful(
        case["tool"]["outputSchema"],
        in_document(spec, result(spec, "/structured")),
        case["output_valid"],
        case["output_invalid"],
    )


def test_document_metadata_servers_and_security() -> None:
    spec = per_server_spec("s", [tool()], description="Tools of s", server_url="/s")
    assert spec["openapi"] == "3.1.0"
    assert spec["info"] == {"title": "s", "version": "1.0", "description": "Tools of s"}
    assert spec["servers"] == [{"url": "/s"}]
    assert spec["components"]["securitySchemes"] == {"bearer": {"type": "http", "scheme": "bearer"}}
    assert spec["security"] == [{"bearer": []}]
    open_spec = per_server_spec("s", [tool()], secured=False)
    assert "security" not in open_spec and "securitySchemes" not in open_spec["components"]
    validate(open_spec)


def test_every_call_returns_a_fresh_document_and_leaves_the_tool_untouched() -> None:
    original = case_tool("tree")
    before = original.model_dump(by_alias=True, mode="json")
    first = per_server_spec("s", [original])
    body(first, "/tree")["properties"].clear()
    first["components"]["schemas"]["tree__Node"]["properties"].clear()
    first["components"]["schemas"]["Error"]["properties"].clear()
    second = per_server_spec("s", [original])
    assert body(second, "/tree")["properties"] and second["components"]["schemas"]["tree__Node"]["properties"]
    assert second["components"]["schemas"]["Error"]["properties"]
    assert original.model_dump(by_alias=True, mode="json") == before


# -------------------------------------------------------------------------------------- $ref rewriting
def test_defs_are_hoisted_under_the_operation_id_and_refs_point_there() -> None:
    spec = per_server_spec("s", [case_tool("defs_ref")])
    request = body(spec, "/defs_ref")
    assert "$defs" not in request
    assert request["properties"]["home"] == {"$ref": "#/components/schemas/defs_ref__Address"}
    assert request["properties"]["work"]["anyOf"][0] == {"$ref": "#/components/schemas/defs_ref__Address"}
    assert (
        spec["components"]["schemas"]["defs_ref__Address"]
        == CASE["defs_ref"]["tool"]["inputSchema"]["$defs"]["Address"]
    )


def test_draft07_definitions_tuple_items_and_dependencies_become_2020_12() -> None:
    spec = per_server_spec("s", [case_tool("draft07_definitions")])
    request = body(spec, "/draft07_definitions")
    assert "$schema" not in request
    assert request["properties"]["point"] == {
        "type": "array",
        "prefixItems": [
            {"$ref": "#/components/schemas/draft07_definitions__coord"},
            {"$ref": "#/components/schemas/draft07_definitions__coord"},
        ],
        "items": False,
    }
    assert request["dependentRequired"] == {"card": ["billing"]}
    assert request["dependentSchemas"] == {"color": {"required": ["point"]}}


def test_a_self_referencing_node_is_unrolled_to_the_bounded_depth_and_then_cut_open() -> None:
    spec = per_server_spec("s", [case_tool("tree")])
    schemas = spec["components"]["schemas"]
    assert body(spec, "/tree")["properties"]["root"] == {"$ref": "#/components/schemas/tree__Node"}
    levels = ["tree__Node", *(f"tree__Node__{n}" for n in range(2, UNROLL_DEPTH + 1))]
    for here, deeper in zip(levels, levels[1:], strict=False):
        assert schemas[here] == {
            "type": "object",
            "properties": {
                "value": {"type": "integer"},
                "children": {"type": "array", "items": {"$ref": f"#/components/schemas/{deeper}"}},
            },
            "required": ["value"],
        }
    cut = schemas[levels[-1]]["properties"]["children"]["items"]
    note = f"(the same shape again; mcphub writes recursive schemas out {UNROLL_DEPTH} levels deep)"
    assert cut == {"description": note}
    assert f"tree__Node__{UNROLL_DEPTH + 1}" not in schemas
    assert f"tree__Output__Node__{UNROLL_DEPTH}" in schemas
    assert "allOf" not in json.dumps(spec["components"]["schemas"])


def test_a_ref_to_the_root_points_to_the_whole_input_schema() -> None:
    spec = per_server_spec("s", [case_tool("root_ref")])
    assert body(spec, "/root_ref")["properties"]["child"] == {"$ref": "#/components/schemas/root_ref__Input"}
    stored = spec["components"]["schemas"]["root_ref__Input"]
    assert stored["properties"]["child"] == {"$ref": "#/components/schemas/root_ref__Input__2"}
    assert stored["required"] == ["name"]


def test_mutual_recursion_is_unrolled_level_by_level_across_the_group() -> None:
    schema = {
        "type": "object",
        "properties": {"expr": {"$ref": "#/$defs/Expr"}, "label": {"$ref": "#/$defs/Label"}},
        "$defs": {
            "Expr": {"anyOf": [{"type": "integer"}, {"$ref": "#/$defs/Sum"}]},
            "Sum": {
                "type": "object",
                "properties": {
                    "terms": {"type": "array", "items": {"$ref": "#/$defs/Expr"}},
                    "label": {"$ref": "#/$defs/Label"},
                },
            },
            "Label": {"type": "string", "maxLength": 3},
        },
    }
    spec = per_server_spec("s", [tool("calc", schema)])
    schemas = spec["components"]["schemas"]
    # the search from Expr meets Sum → Expr as the edge that closes the cycle: that one steps a level
    assert schemas["calc__Expr"]["anyOf"][1] == {"$ref": "#/components/schemas/calc__Sum"}
    assert schemas["calc__Sum"]["properties"]["terms"]["items"] == {"$ref": "#/components/schemas/calc__Expr__2"}
    assert schemas["calc__Expr__2"]["anyOf"][1] == {"$ref": "#/components/schemas/calc__Sum__2"}
    assert schemas["calc__Sum__2"]["properties"]["label"] == {"$ref": "#/components/schemas/calc__Label"}
    assert "$ref" not in schemas[f"calc__Sum__{UNROLL_DEPTH}"]["properties"]["terms"]["items"]
    assert "calc__Label__2" not in schemas  # not recursive: written once
    assert_sound_document(spec)
    nested = {"expr": {"terms": [1, {"terms": [2], "label": "ok"}]}}
    wrong = [{"expr": {"terms": ["x"]}}, {"label": "long"}, {"expr": {"terms": [{"terms": [], "label": 4}]}}]
    assert_faithful(schema, in_document(spec, body(spec, "/calc")), [nested, {"expr": 1}], wrong)


def test_below_the_bounded_depth_the_document_is_open_where_the_tool_schema_is_not() -> None:
    """The price of a document without cycles; the hub validates with the tool's own schema (test_invoker)."""
    spec = per_server_spec("s", [case_tool("root_ref")])
    ours, theirs = in_document(spec, body(spec, "/root_ref")), standalone(CASE["root_ref"]["tool"]["inputSchema"])
    deep: dict[str, Any] = {"name": 7}
    for level in range(UNROLL_DEPTH + 1):
        deep = {"name": f"level {level}", "child": deep}
    assert not theirs.is_valid(deep) and ours.is_valid(deep)
    shallow = {"name": "a", "child": {"name": "b", "child": {"name": 7}}}
    assert not theirs.is_valid(shallow) and not ours.is_valid(shallow)


def test_other_pointers_get_a_copy_of_their_target() -> None:
    spec = per_server_spec("s", [case_tool("pointer_ref")])
    properties = body(spec, "/pointer_ref")["properties"]
    assert properties["end"] == {"$ref": "#/components/schemas/pointer_ref__properties_start"}
    assert spec["components"]["schemas"]["pointer_ref__properties_start"] == properties["start"]
    assert properties["zone"] == {"$ref": "#/components/schemas/pointer_ref___defs_Place_properties_zone"}


def test_refs_under_every_applicator_and_nested_defs_are_rewritten() -> None:
    spec = per_server_spec("s", [case_tool("ref_everywhere")])
    refs = walk_refs(body(spec, "/ref_everywhere")) + walk_refs(spec["components"]["schemas"])
    assert len(refs) >= 9
    assert all(ref.startswith("#/components/schemas/ref_everywhere__") or ref.endswith("/Error") for ref in refs)
    properties = body(spec, "/ref_everywhere")["properties"]
    assert properties["labels"]["additionalProperties"] == {"$ref": "#/components/schemas/ref_everywhere__Short"}
    assert properties["cond"]["else"] == {"$ref": "#/components/schemas/ref_everywhere__Inner"}
    assert spec["components"]["schemas"]["ref_everywhere__Inner"] == {"type": "integer", "minimum": 10}
    assert "$defs" not in spec["components"]["schemas"]["ref_everywhere__Nested"]


def test_unresolvable_refs_become_open_schemas_that_say_so() -> None:
    spec = per_server_spec("s", [case_tool("unresolvable")])
    properties = body(spec, "/unresolvable")["properties"]
    assert properties["remote"] == {
        "description": "(mcphub dropped the unresolvable $ref 'https://example.com/schemas/thing.json')"
    }
    assert properties["missing"] == {
        "description": "was a ref (mcphub dropped the unresolvable $ref '#/$defs/Missing')"
    }
    assert "'#somewhere'" in properties["anchor"]["description"]
    assert properties["fine"] == {"type": "integer"}
    assert_sound_document(spec)


def test_refs_qualified_with_the_schema_id_resolve_and_id_and_schema_are_dropped() -> None:
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://example.com/tool#",
        "type": "object",
        "properties": {"a": {"$ref": "https://example.com/tool#/$defs/A"}, "b": {"$ref": "#/$defs/A"}},
        "$defs": {"A": {"type": "string", "$anchor": "a"}},
    }
    spec = per_server_spec("s", [tool("ids", schema)])
    request = body(spec, "/ids")
    assert request["properties"]["a"] == request["properties"]["b"] == {"$ref": "#/components/schemas/ids__A"}
    assert "$schema" not in request and "$id" not in request
    assert spec["components"]["schemas"]["ids__A"] == {"type": "string"}


def test_unions_nullable_types_and_constraints_survive_byte_for_byte() -> None:
    spec = per_server_spec("s", [case_tool("unions"), case_tool("constraints")])
    for name in ("unions", "constraints"):
        original = CASE[name]["tool"]["inputSchema"]["properties"]
        assert json.dumps(body(spec, f"/{name}")["properties"]) == json.dumps(original)


def test_data_that_looks_like_a_ref_is_left_alone() -> None:
    spec = per_server_spec("s", [case_tool("constraints")])
    properties = body(spec, "/constraints")["properties"]
    assert properties["filter"]["default"] == {"$ref": "#/not/a/ref"}
    assert properties["filter"]["examples"] == [{"$ref": "#"}]
    assert properties["filter"]["properties"] == {"$ref": {"type": "string"}}
    assert properties["literal"] == {"const": {"$ref": "#/$defs/Missing"}}


def test_leading_underscores_odd_names_and_boolean_subschemas() -> None:
    spec = per_server_spec("s", [case_tool("underscores")])
    properties = body(spec, "/underscores")["properties"]
    assert list(properties) == ["_private", "__dunder__", "$ref", "with space", "anything"]
    assert properties["anything"] == {}  # `true`, spelled so a client may do `"$ref" in schema`
    assert body(spec, "/underscores")["additionalProperties"] is False


@pytest.mark.parametrize(
    "schema",
    [{"type": "object"}, {}, {"properties": {"a": {"type": "string"}}}],
    ids=["no-properties", "empty", "no-type"],
)
def test_request_body_is_always_an_inline_object_with_properties(schema: dict[str, Any]) -> None:
    spec = per_server_spec("s", [Tool(name="t", input_schema=schema)])
    request = body(spec, "/t")
    assert request["type"] == "object"
    assert request["properties"] == schema.get("properties", {})
    assert_sound_document(spec)


def test_same_definition_names_in_one_document_stay_apart() -> None:
    def refers_to(name: str, kind: str) -> dict[str, Any]:
        return {
            "type": "object",
            "properties": {"x": {"$ref": f"#/$defs/{name}"}},
            "$defs": {name: {"type": kind}},
        }

    spec = combined_spec(
        {
            "a": [tool("t", refers_to("A", "integer")), tool("t__A", refers_to("B", "string"))],
            "b": [tool("t", refers_to("A", "boolean")), tool("t__A", refers_to("B", "null"))],
        }
    )
    spec_twin = combined_spec({"a": [tool("t", refers_to("A__B", "integer")), tool("t__A", refers_to("B", "null"))]})
    schemas = spec["components"]["schemas"]
    assert schemas["a_t__A"] == {"type": "integer"} and schemas["b_t__A"] == {"type": "boolean"}
    assert schemas["a_t__A__B"] == {"type": "string"} and schemas["b_t__A__B"] == {"type": "null"}
    # "a_t" + "__A__B" and "a_t__A" + "__B" make one name; the second comer is renamed
    assert spec_twin["components"]["schemas"]["a_t__A__B_2"] == {"type": "null"}
    assert body(spec_twin, "/a/t__A")["properties"]["x"] == {"$ref": "#/components/schemas/a_t__A__B_2"}
    assert_sound_document(spec)
    assert_sound_document(spec_twin)


def test_colliding_operation_ids_still_make_a_valid_document() -> None:
    spec = per_server_spec("s", [tool("a.b"), tool("a_b")])
    ids = [post(spec, path)["operationId"] for path in ("/a.b", "/a_b")]
    assert ids[0] == "a_b" and ids[1].startswith("a_b_") and len(set(ids)) == 2
    validate(spec)


# ------------------------------------------------------------------------------------------ every case
@pytest.mark.parametrize("name", list(CASE))
def test_case_makes_a_sound_document_per_server_and_combined(name: str) -> None:
    assert_sound_document(per_server_spec("hard", [case_tool(name)]))
    assert_sound_document(combined_spec({"hard": [case_tool(name)], "other": [case_tool(name)]}))


@pytest.mark.parametrize("name", list(CASE))
def test_case_request_body_accepts_and_rejects_what_the_tool_schema_does(name: str) -> None:
    case = CASE[name]
    spec = combined_spec({"hard": [case_tool(name)]})
    validator = in_document(spec, body(spec, f"/hard/{name}"))
    original = None if case.get("unresolvable") else case["tool"]["inputSchema"]
    assert_faithful(original, validator, case["valid"], case["invalid"])
    if "outputSchema" in case["tool"]:
        output = in_document(spec, result(spec, f"/hard/{name}"))
        assert_faithful(case["tool"]["outputSchema"], output, case["output_valid"], case["output_invalid"])


def test_the_cut_is_what_keeps_a_naive_client_finite() -> None:
    spec = per_server_spec("s", [case_tool("tree")])
    deepest = spec["components"]["schemas"][f"tree__Node__{UNROLL_DEPTH}"]
    deepest["properties"]["children"]["items"] = {"$ref": "#/components/schemas/tree__Node"}  # a cycle again
    with pytest.raises(AssertionError, match="does not terminate"):
        expand_naively(body(spec, "/tree"), spec["components"])


# ----------------------------------------------------------------------------------------------- lints
def test_lint_reports_long_and_invalid_function_names() -> None:
    long_tool = case_tool(next(name for name in CASE if len(name) == 70))
    problems = lint_tool("hard", long_tool, prefixed_name=f"hard_{long_tool.name}")
    assert any("is 75 characters" in p for p in problems)
    assert any("is 70 characters" in p for p in problems)
    dotted = case_tool("dotted.name-with/slash")
    problems = lint_tool("s", dotted, prefixed_name="s_dotted.name-with/slash")
    assert sum("not [a-zA-Z0-9_-]" in p for p in problems) == 2
    assert all(p.startswith("s/dotted.name-with/slash: ") for p in problems)


def test_lint_reports_recursion_unresolvable_refs_and_non_flat_bodies() -> None:
    assert any("recursive (#/$defs/Node)" in p for p in lint_tool("s", case_tool("tree"), prefixed_name="s_tree"))
    assert any("recursive (#)" in p for p in lint_tool("s", case_tool("root_ref"), prefixed_name="s_root_ref"))
    warnings: list[str] = []  # the document cuts it: a degradation, not a break
    assert not lint_tool("s", case_tool("root_ref"), prefixed_name="s_root_ref", warnings=warnings)
    assert warnings == [f"s/root_ref: input schema is recursive (#); the served document writes it out {UNROLL_DEPTH} "
                        "levels deep, deeper levels are open there (the hub still validates them)"]
    unresolved = lint_tool("s", case_tool("unresolvable"), prefixed_name="s_unresolvable")
    assert len([p for p in unresolved if "unresolvable $ref" in p]) == 3
    union = tool("u", {"type": "object", "anyOf": [{"required": ["a"]}, {"required": ["b"]}]})
    assert any("not one flat object (top-level 'anyOf')" in p for p in lint_tool("s", union, prefixed_name="s_u"))
    free = tool("f", {"type": "object", "additionalProperties": {"type": "string"}})
    assert any("not one flat object" in p for p in lint_tool("s", free, prefixed_name="s_f"))


def test_lint_passes_an_ordinary_tool() -> None:
    ordinary = tool("get_sum", {"type": "object", "properties": {"a": {"type": "number"}}}, description="Add.")
    assert lint_tool("calc", ordinary, prefixed_name="calc_get_sum") == []


def test_lint_collisions_names_every_source() -> None:
    problems = lint_collisions({"a_b_c": ["a/b_c", "a_b/c"], "time_now": ["time/now"], "x_y": ["x/y", "x/y.", "x/y"]})
    assert problems == [
        "operation id 'a_b_c' is produced by 2 tools: a/b_c, a_b/c; rename or deny all but one",
        "operation id 'x_y' is produced by 2 tools: x/y, x/y.; rename or deny all but one",
    ]


# ----------------------------------------------------------------------------------------- live corpus
def sample(schema: Any, root: dict[str, Any], depth: int = 0) -> Any:
    """A plausible value for a schema (defaults, enums and examples first); not necessarily valid."""
    if not isinstance(schema, dict) or depth > 5:
        return None
    if isinstance(schema.get("$ref"), str) and schema["$ref"].startswith("#"):
        target: Any = root
        for segment in schema["$ref"][2:].split("/") if schema["$ref"] != "#" else []:
            target = target.get(segment, {}) if isinstance(target, dict) else {}
        return sample(target, root, depth + 1)
    for key in ("default", "const"):
        if key in schema:
            return schema[key]
    for key in ("enum", "examples", "anyOf", "oneOf"):
        if schema.get(key):
            first = schema[key][0]
            return sample(first, root, depth + 1) if key in ("anyOf", "oneOf") else first
    kind = schema.get("type", "object")
    kind = next((k for k in kind if k != "null"), "null") if isinstance(kind, list) else kind
    if kind == "object":
        return {k: sample(v, root, depth + 1) for k, v in schema.get("properties", {}).items()}
    formats = {"uri": "https://example.com/", "date-time": "2024-01-01T00:00:00Z", "date": "2024-01-01"}
    scalars = {"string": formats.get(schema.get("format"), "x"), "boolean": True, "array": [], "null": None}
    return scalars.get(kind, schema.get("minimum", 1))


def argument_guesses(schema: dict[str, Any]) -> list[Any]:
    """Instances for a live tool: a filled-in guess, only the required part, each field of a wrong type,
    each required field missing, an empty object and non-objects."""
    full = sample(schema, schema)
    if not isinstance(full, dict):
        return [full, {}, [], "text"]
    required = [k for k in schema.get("required", []) if k in full]
    guesses: list[Any] = [full, {k: full[k] for k in required}, {}, [], "text", {**full, "unexpected!": 1}]
    guesses += [{**full, k: {"wrong": ["type"]}} for k in full]
    guesses += [{k: v for k, v in full.items() if k != gone} for gone in required]
    return guesses


async def list_live_tools(server: str) -> list[Tool]:
    command, args = LIVE_SERVERS[server]
    if not command.exists():
        missing(f"{command} is missing; install the third-party servers with .ci/install-thirdparty")
    params = StdioServerParameters(command=str(command), args=args)
    with anyio.fail_after(LIST_TOOLS_TIMEOUT):
        async with Client(params, cache=None) as client:
            tools: list[Tool] = []
            cursor = None
            while True:
                page = await client.list_tools(cursor=cursor)
                tools += page.tools
                if (cursor := page.next_cursor) is None:
                    return tools


@pytest.mark.parametrize("server", list(LIVE_SERVERS))
async def test_live_tools_make_sound_faithful_documents(server: str) -> None:
    tools = await list_live_tools(server)
    assert tools, f"{server} listed no tools"
    if server == "hard":
        assert [t.name for t in tools] == list(CASE)
        for t in tools:  # the schemas crossed stdio and the SDK's validation unchanged
            assert t.model_dump(by_alias=True, mode="json", exclude_none=True) == CASE[t.name]["tool"]
    own = per_server_spec(server, tools)
    assert_sound_document(own)
    together = combined_spec({server: tools, "hard": [case_tool(name) for name in CASE]})
    assert_sound_document(together)
    accepted = rejected = 0
    for t in tools:
        if any("unresolvable $ref" in p for p in lint_tool(server, t, prefixed_name=t.name)):
            continue  # its own schema cannot be evaluated; test_unresolvable_refs_... covers it
        pairs = [(t.input_schema, body(together, f"/{server}/{t.name}"))]
        if t.output_schema is not None:
            pairs.append((t.output_schema, result(together, f"/{server}/{t.name}")))
        for original, ours in pairs:
            theirs, mine = standalone(original), in_document(together, ours)
            for instance in argument_guesses(original):
                verdict = theirs.is_valid(instance)
                assert mine.is_valid(instance) == verdict, (t.name, instance)
                accepted, rejected = accepted + verdict, rejected + (not verdict)
    assert accepted and rejected, "the guesses did not exercise both outcomes"
