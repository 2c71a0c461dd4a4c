"""MCP tools → one OpenAPI 3.1 document. Pure functions: no I/O, no sessions, no web framework.

OpenAPI 3.1 speaks JSON Schema 2020-12, so tool schemas mostly pass through unchanged. The work is
``$ref``: in a tool schema ``#/...`` is relative to that schema, in the document it would resolve against
the document root. So every reference target is hoisted into ``components/schemas`` under a name
prefixed with the operationId (``$defs``/``definitions`` entries → ``<opid>__<Name>``; the root, as in
``"$ref": "#"`` → ``<opid>__Input`` or ``<opid>__Output``; any other pointer → a copy of its target,
``<opid>__properties_a``) and every ``$ref`` points there. An unresolvable reference (external URL,
missing definition, anchor) becomes an open schema whose description names it; ``lint_tool`` reports it.
The request body itself stays inline with its ``properties``: that is what Open WebUI reads.

Open WebUI's converters expand ``$ref``, ``properties`` and ``items`` with no working cycle check: the
backend's ``resolve_schema`` carries its visited set only along ``$ref`` and ``allOf``/``anyOf``/``oneOf``,
and the browser's ``resolveSchema`` (user-level "direct" tool servers) starts a fresh one for every
property and ``items``, so any cycle a converter can reach overflows its stack and the whole tool server is
dropped. A recursive definition (a component in a strongly connected group of components) is therefore
unrolled: written out ``UNROLL_DEPTH`` times (``<opid>__Node``, ``<opid>__Node__2``, ...), each level's
recursive references pointing to the next level, and the last level's recursive references cut to an open
schema whose description says so. The served document has no cycle, a client sees the structure
``UNROLL_DEPTH`` levels deep, and is faithful to the tool's schema to that depth; deeper levels are open in
the document, and the hub still validates every call against the tool's own schema (mcphub.validation).
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, overload
from urllib.parse import unquote

from mcp.types import Tool

MAX_NAME_LENGTH = 64  # OpenAI function names: ^[a-zA-Z0-9_-]{1,64}$
MAX_DESCRIPTION_LENGTH = 1024  # OpenAI's API rejects a longer function description (string_above_max_length)
# A note only (not a warning: --strict passes): the length PRODUCT.md's lint names for tool-search clients;
# no threshold of it was found in Open WebUI's source, and the reference time server is over it itself.
NOTE_DEFINITION_LENGTH = 400
# Levels of a recursive definition written out in a served document: the schema_cases nest three levels,
# and every level multiplies what a converter expands into the model's tool definition.
UNROLL_DEPTH = 3
_HASH_LENGTH = 8
_BAD_NAME = re.compile(r"[^a-zA-Z0-9_-]")
_BAD_COMPONENT = re.compile(r"[^a-zA-Z0-9._-]")  # OpenAPI component names
_COMPONENTS = "#/components/schemas/"
_RESPONSES = "#/components/responses/"
ERROR_COMPONENT = "Error"
RESULT_COMPONENT = "ToolResult"  # the result of a tool without an outputSchema
MAX_CACHED_OPERATIONS = 20_000  # operation objects kept by an OperationCache (one per tool, path and version)

# JSON Schema keywords whose values are subschemas (one, a list, or a name → schema map).
_ONE = frozenset(
    "additionalProperties additionalItems items contains propertyNames not if then else "
    "unevaluatedItems unevaluatedProperties contentSchema".split()
)
_LIST = frozenset("allOf anyOf oneOf prefixItems items".split())
_MAP = frozenset("properties patternProperties dependentSchemas dependencies $defs definitions".split())
_DEFS = ("$defs", "definitions")
# Keywords that only make sense at the top of a standalone schema; in the document they confuse validators.
_DROPPED = frozenset({"$schema", "$id", "$anchor", "$dynamicAnchor", "$recursiveAnchor"})
_DYNAMIC = ("$dynamicRef", "$recursiveRef")
_SCALARS = frozenset({str, int, float, bool, type(None)})  # immutable: shared with the tool's schema, not copied

RESULT_DESCRIPTION = (
    "The tool result: its structuredContent when present, else its text content parsed as "
    "JSON, else the content list (text, image, audio, resource links, embedded resources)."
)
ERROR_RESPONSES = {
    400: "The tool reported an error (isError or an MCP error answer); type tool_error, message = its text.",
    401: "No credentials, or bad ones.",
    403: "The credential may not call this server or tool.",
    404: "Unknown server or tool.",
    422: "The arguments do not match the tool's input schema; see errors.",
    502: "The MCP server answered garbage.",
    503: "The MCP server is down or restarting; retry after Retry-After seconds.",
    504: "The tool call timed out.",
}
# Every tool operation answers these the same way: each is written once, in components/responses, and every
# operation refers to it (inline, they were three quarters of each operation's bytes).
ERROR_RESPONSE_NAMES = {400: "ToolError", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound",
                        422: "InvalidArguments", 502: "BadGateway", 503: "Unavailable", 504: "Timeout"}
_STRING = {"type": "string"}


def _object(required: list[str], **properties: object) -> dict[str, object]:
    return {"type": "object", "required": required, "properties": properties}


ERROR_SCHEMA = _object(
    ["error"],
    error=_object(
        ["type", "message"],
        type=_STRING,
        message=_STRING,
        server=_STRING,
        tool=_STRING,
        errors={
            "type": "array",
            "items": _object(
                ["loc", "msg"], loc={"type": "array", "items": {"type": ["string", "integer"]}}, msg=_STRING
            ),
        },
    ),
)

Pointer = tuple[str, ...]


def operation_id(name: str) -> str:
    """A function name OpenAI and Open WebUI accept: only ``[a-zA-Z0-9_-]``, at most 64 characters.

    Other characters become ``_``; a longer name is cut and gets ``_`` + 8 hex digits of sha256(name),
    so distinct long names stay distinct.
    """
    clean = _BAD_NAME.sub("_", name) or "_"
    if len(clean) <= MAX_NAME_LENGTH:
        return clean
    return f"{clean[: MAX_NAME_LENGTH - _HASH_LENGTH - 1]}_{_digest(name)}"


@dataclass(frozen=True)
class Operation:
    path: str  # "/get_current_time" per server, "/time/get_current_time" combined
    operation_id: str  # bare tool name (sanitised) per server; f"{server}_{tool}" (sanitised) combined
    server: str
    tool: Tool


def build_spec(
    operations: list[Operation],
    *,
    title: str,
    version: str,
    description: str = "",
    server_url: str = "/",
    secured: bool = True,
    jobs_root: str | None = None,
    cache: OperationCache | None = None,
) -> dict[str, Any]:
    """A complete OpenAPI 3.1.0 document: a fresh dict every call, whose operation objects may be shared
    with other documents through `cache` (never modify them). `jobs_root` (the root path; None: not
    documented): every tool operation also documents its job (202, `Prefer: respond-async`) and its
    event stream (`Accept: text/event-stream`) answers."""
    schemas: dict[str, Any] = {ERROR_COMPONENT: copy.deepcopy(ERROR_SCHEMA),
                               RESULT_COMPONENT: {"description": RESULT_DESCRIPTION}}
    responses = _error_responses()
    if jobs_root is not None:
        schemas[JOB_COMPONENT] = job_schema()
        schemas[EVENT_STREAM_COMPONENT] = {"type": "string", "description": EVENT_STREAM_DESCRIPTION}
        responses[JOB_ACCEPTED_COMPONENT] = _job_accepted(jobs_root)
    taken = set(schemas)
    paths: dict[str, Any] = {}
    ids: set[str] = set()
    for op in operations:
        if op.path in paths:
            raise ValueError(f"two operations share the path {op.path!r} ({op.server}/{op.tool.name})")
        opid = op.operation_id
        if opid in ids:  # lint_collisions reports it; the document must stay valid meanwhile
            opid = f"{opid[: MAX_NAME_LENGTH - _HASH_LENGTH - 1]}_{_digest(op.path)}"
        ids.add(opid)
        if cache is None:
            operation, components = _operation(op, opid, taken, jobs=jobs_root is not None)
        else:
            operation, components = cache.operation(op, opid, taken, jobs=jobs_root is not None)
        schemas.update(components)
        paths[op.path] = {"post": operation}
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version, "description": description},
        "servers": [{"url": server_url}],
        "tags": [{"name": server} for server in dict.fromkeys(op.server for op in operations)],
        "paths": paths,
        "components": {"schemas": schemas, "responses": responses},
    }
    if secured:
        doc["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        doc["security"] = [{"bearer": []}]
    return doc


def lint_tool(server: str, tool: Tool, *, prefixed_name: str, warnings: list[str] | None = None,
              notes: list[str] | None = None) -> list[str]:
    """Human-readable problems that break clients (for ``mcphub check``); empty list = fine.

    With `warnings` given, what breaks only some clients or degrades one (a description over OpenAI's 1024
    characters, which Open WebUI passes on as the function's description; a recursive schema the document
    cuts at UNROLL_DEPTH) goes there instead of into the returned problems. With `notes` given, what only
    may matter goes there: a definition over NOTE_DEFINITION_LENGTH characters."""
    problems: list[str] = []

    def say(problem: str, into: list[str] | None = None) -> None:
        (problems if into is None else into).append(f"{server}/{tool.name}: {problem}")

    for name in dict.fromkeys([prefixed_name, tool.name]):
        fixed = f"(the hub uses {operation_id(name)!r})"
        if len(name) > MAX_NAME_LENGTH:
            say(f"function name {name!r} is {len(name)} characters, over OpenAI's 64 {fixed}")
        if _BAD_NAME.search(name):
            say(f"function name {name!r} has characters OpenAI rejects (not [a-zA-Z0-9_-]) {fixed}")
    definition = {"name": prefixed_name, "description": tool.description, "parameters": tool.input_schema}
    if notes is not None and (size := len(json.dumps(definition))) > NOTE_DEFINITION_LENGTH:
        say(f"tool definition is {size} characters, over 400: a client that searches its tools (Open WebUI's "
            "tool search) may offer it only after a search step", notes)
    if (size := len(tool.description or "")) > MAX_DESCRIPTION_LENGTH:
        say(f"description is {size} characters; OpenAI's API rejects a function description over 1024, and a "
            "chat through a backend that enforces it fails whole", warnings)
    for label, schema in (("input", tool.input_schema), ("output", tool.output_schema)):
        hoisted = _Hoisted(schema, "t", "t__Root", set()) if schema is not None else None
        for ref, at in hoisted.unresolved if hoisted else ():
            say(f"{label} schema has an unresolvable $ref {ref!r} at {_format(at)}; it becomes open")
        if hoisted and hoisted.recursive:
            targets = ", ".join(_format(ptr) for ptr in hoisted.recursive)
            say(f"{label} schema is recursive ({targets}); the served document writes it out {UNROLL_DEPTH} levels "
                "deep, deeper levels are open there (the hub still validates them)", warnings)
    if shape := _flatness_problem(tool.input_schema):
        say(f"input schema is not one flat object ({shape}); Open WebUI reads only its properties")
    return problems


def lint_collisions(names: dict[str, list[str]]) -> list[str]:
    """names: prefixed operation id → the "server/tool" pairs producing it; one message per collision."""
    return [
        f"operation id {name!r} is produced by {len(set(sources))} tools: "
        f"{', '.join(dict.fromkeys(sources))}; rename or deny all but one"
        for name, sources in names.items()
        if len(set(sources)) > 1
    ]


class OperationCache:
    """Tool operations built once and shared by every document that shows them: a document for another
    caller's scope, root path or server set is then mostly lookups (the hoisting of each tool's schemas is
    the cost of building one). An entry is the operation for one tool object (the supervisor replaces a
    tool's object when its server's tool list changes), path, operationId and answers, kept per path,
    operationId, server and answers: a tool whose object changed replaces its entry, so a server whose
    tools change keeps no old ones. Bounded: cleared past MAX_CACHED_OPERATIONS entries.

    Component names: an entry's are chosen as if its tool were alone in a document. A document whose other
    tools already hold one of those names builds that operation afresh with its own names, exactly as
    without a cache; when none clash, the names are the ones a fresh build would have chosen."""

    def __init__(self, limit: int = MAX_CACHED_OPERATIONS) -> None:
        self._limit = limit
        self._built: dict[tuple[str, str, str, bool], tuple[Tool, dict[str, Any], dict[str, Any]]] = {}

    def __len__(self) -> int:
        return len(self._built)

    def clear(self) -> None:
        self._built.clear()

    def operation(self, op: Operation, opid: str, taken: set[str], *, jobs: bool
                  ) -> tuple[dict[str, Any], dict[str, Any]]:
        """`_operation(op, opid, taken, jobs=jobs)`, from the cache where its component names are free."""
        key = (op.path, opid, op.server, jobs)  # one entry per place: a changed tool replaces its old entry
        entry = self._built.get(key)
        if entry is None or entry[0] is not op.tool:
            alone = {ERROR_COMPONENT, RESULT_COMPONENT, JOB_COMPONENT, EVENT_STREAM_COMPONENT}
            operation, components = _operation(op, opid, alone, jobs=jobs)
            if len(self._built) >= self._limit:
                self._built.clear()
            entry = self._built[key] = (op.tool, operation, components)
        _, operation, components = entry
        if not taken.isdisjoint(components):  # another tool of this document has one of its names
            return _operation(op, opid, taken, jobs=jobs)
        taken.update(components)
        return operation, components


def _error_responses() -> dict[str, Any]:
    """components/responses: one per error status of a tool call (ERROR_RESPONSE_NAMES)."""
    error = {"application/json": {"schema": {"$ref": _COMPONENTS + ERROR_COMPONENT}}}
    found: dict[str, Any] = {}
    for status, text in ERROR_RESPONSES.items():
        found[ERROR_RESPONSE_NAMES[status]] = {"description": text, "content": error}
        if status == 503:
            retry = {"description": "Seconds to wait before retrying.", "schema": {"type": "integer"}}
            found[ERROR_RESPONSE_NAMES[status]]["headers"] = {"Retry-After": retry}
    return found


def _operation(op: Operation, opid: str, taken: set[str], *, jobs: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """The operation object of one tool, and the components (hoisted definitions) it refers to."""
    tool = op.tool
    annotations = tool.annotations
    request = _Hoisted(tool.input_schema, opid, f"{opid}__Input", taken)
    components = dict(request.components)
    body = request.body
    body.setdefault("type", "object")
    if body["type"] == "object":
        body.setdefault("properties", {})
    if tool.output_schema is None:
        result: dict[str, Any] = {"$ref": _COMPONENTS + RESULT_COMPONENT}
    else:
        response = _Hoisted(tool.output_schema, f"{opid}__Output", f"{opid}__Output", taken)
        components.update(response.components)
        result = response.body
    operation: dict[str, Any] = {
        "operationId": opid,
        "summary": tool.title or (annotations.title if annotations else None) or tool.name,
    }
    if tool.description:
        operation["description"] = tool.description
    operation["tags"] = [op.server]
    operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    ok: dict[str, Any] = {"description": "The tool result.", "content": {"application/json": {"schema": result}}}
    responses: dict[str, Any] = {"200": ok}
    if jobs:  # Prefer: respond-async, Accept: text/event-stream
        ok["description"] = RESULT_OR_STREAM
        ok["content"]["text/event-stream"] = {"schema": {"$ref": _COMPONENTS + EVENT_STREAM_COMPONENT}}
        responses["202"] = {"$ref": _RESPONSES + JOB_ACCEPTED_COMPONENT}
    for status, name in ERROR_RESPONSE_NAMES.items():
        responses[str(status)] = {"$ref": _RESPONSES + name}
    operation["responses"] = responses
    if annotations is not None:
        operation["x-mcp-annotations"] = annotations.model_dump(by_alias=True, exclude_none=True, mode="json")
    return operation, components


class _Hoisted:
    """One tool schema rewritten for a document: ``body`` (inline) plus the ``components`` it references."""

    def __init__(self, schema: dict[str, Any], prefix: str, root_name: str, taken: set[str]) -> None:
        base = schema.get("$id") if isinstance(schema, dict) else None
        self.base = base.rstrip("#") if isinstance(base, str) else None  # refs may spell it out
        self.names: dict[Pointer, str] = {}  # reference target in the tool schema → component name
        self.unresolved: list[tuple[str, Pointer]] = []
        refs: list[tuple[object, Pointer]] = []
        for ptr, node in _walk(schema):
            for key in _DEFS:
                definitions = node.get(key)
                for name in definitions if isinstance(definitions, dict) else ():
                    self._register((*ptr, key, name), f"{prefix}__{name}", taken)
            if "$ref" in node:
                refs.append((node["$ref"], ptr))
            # Dynamic references need the document they came from; they are dropped, not guessed at.
            self.unresolved.extend((str(node[key]), ptr) for key in _DYNAMIC if key in node)
        for ref, ptr in refs:
            target = self._target(ref)
            if target is None or _lookup(schema, target) is None:
                self.unresolved.append((str(ref), ptr))
            elif target not in self.names:
                name = root_name if not target else f"{prefix}__{'_'.join(target)}"
                self._register(target, name, taken)
        # Pass 1 finds which component references which; pass 2 writes, unrolling the components in a cycle.
        self.edges: set[tuple[str, str]] = set()
        self.cyclic: set[tuple[str, str]] = set()
        self.back: set[tuple[str, str]] = set()
        for ptr, name in self.names.items():
            self._rewrite(_lookup(schema, ptr), name)
        self.cyclic = {(a, b) for a, b in self.edges if _reaches(self.edges, b, a)}
        self.back = _back_edges(list(self.names.values()), self.edges)  # every cycle has one: they step a level
        cycle_members = {b for _, b in self.cyclic}
        self.recursive = [ptr for ptr, name in self.names.items() if name in cycle_members]
        self.levels: dict[tuple[str, int], str] = {}  # (level-1 name, level ≥ 2) → that level's component
        for name in self.names.values():
            for level in range(2, UNROLL_DEPTH + 1) if name in cycle_members else ():
                self.levels[(name, level)] = _unique(f"{name}__{level}", taken)
        self.components: dict[str, Any] = {}
        for ptr, name in self.names.items():
            for level in range(1, UNROLL_DEPTH + 1) if name in cycle_members else (1,):
                written = self._rewrite(_lookup(schema, ptr), name, level)
                self.components[self.levels.get((name, level), name)] = written
        self.body = self._rewrite(schema, None)

    def _register(self, ptr: Pointer, name: str, taken: set[str]) -> None:
        if ptr in self.names:
            return
        self.names[ptr] = _unique(name, taken)

    def _target(self, ref: object) -> Pointer | None:
        if not isinstance(ref, str):
            return None
        uri, _, fragment = ref.partition("#")
        if uri and uri != self.base:
            return None
        fragment = unquote(fragment)
        if fragment and not fragment.startswith("/"):
            return None  # a plain-name anchor
        return tuple(s.replace("~1", "/").replace("~0", "~") for s in fragment.split("/")[1:])

    @overload
    def _rewrite(self, node: dict[str, Any], owner: str | None, level: int = 1) -> dict[str, Any]: ...
    @overload
    def _rewrite(self, node: object, owner: str | None, level: int = 1) -> object: ...

    def _rewrite(self, node: object, owner: str | None, level: int = 1) -> object:
        """The subschema as written into the document; anything but an object form is returned as is.
        `owner` is the component being written (None: the request or response body), at `level`."""
        if not isinstance(node, dict):
            return node
        out: dict[str, Any] = {}
        ref: str | None = None
        dropped = [str(node[key]) for key in _DYNAMIC if key in node]
        for key, value in node.items():
            if key in _DEFS or key in _DROPPED or key in _DYNAMIC:
                continue
            if key == "$ref":
                target = self._target(value)
                ref = None if target is None else self.names.get(target)
                if ref is None:
                    dropped.append(str(value))
                elif owner is not None:
                    self.edges.add((owner, ref))
            elif key == "items" and isinstance(value, list):  # draft-07 tuple form → 2020-12
                out["prefixItems"] = [self._rewrite(v, owner, level) for v in value]
                if "additionalItems" in node:
                    out["items"] = self._rewrite(node["additionalItems"], owner, level)
            elif key == "additionalItems" and isinstance(node.get("items"), list):
                continue
            elif key == "dependencies" and isinstance(value, dict):  # draft-07 → 2020-12
                for name, dep in value.items():
                    if isinstance(dep, list):
                        out.setdefault("dependentRequired", {})[name] = list(dep)
                    else:
                        out.setdefault("dependentSchemas", {})[name] = self._rewrite(dep, owner, level)
            elif key in _ONE and isinstance(value, dict | bool):
                out[key] = self._rewrite(value, owner, level)
            elif key in _LIST and isinstance(value, list):
                out[key] = [self._rewrite(v, owner, level) for v in value]
            elif key in _MAP and isinstance(value, dict):
                out.setdefault(key, {}).update((k, self._rewrite(v, owner, level)) for k, v in value.items())
            else:
                out[key] = value if type(value) in _SCALARS else copy.deepcopy(value)  # most are strings
        # Open WebUI's backend crashes on a `true` subschema under items or properties; {} means the same.
        if out.get("items") is True:
            out["items"] = {}
        if isinstance(out.get("properties"), dict):
            out["properties"] = {k: {} if v is True else v for k, v in out["properties"].items()}
        cut = False
        if ref is not None and (owner, ref) in self.back:
            cut = level == UNROLL_DEPTH
            ref = None if cut else self.levels[(ref, level + 1)]
        elif ref is not None and (owner, ref) in self.cyclic:  # within the group, the same level
            ref = self.levels.get((ref, level), ref)
        if ref is not None:
            out = {"$ref": _COMPONENTS + ref, **out}
        if cut:
            note = f"(the same shape again; mcphub writes recursive schemas out {UNROLL_DEPTH} levels deep)"
            out["description"] = f"{out['description']} {note}" if out.get("description") else note
        if dropped:
            note = f"(mcphub dropped the unresolvable $ref {', '.join(map(repr, dropped))})"
            out["description"] = f"{out['description']} {note}" if out.get("description") else note
        return out


def _unique(name: str, taken: set[str]) -> str:
    """`name` as a component name, suffixed `_2`, `_3`, ... if the document already has it."""
    name = _BAD_COMPONENT.sub("_", name)
    unique = next(c for c in (name, *(f"{name}_{n}" for n in range(2, len(taken) + 3))) if c not in taken)
    taken.add(unique)
    return unique


def _walk(node: object, ptr: Pointer = ()) -> Iterator[tuple[Pointer, dict[str, Any]]]:
    """Every subschema (object form) of a schema with its pointer, following only schema keywords."""
    if not isinstance(node, dict):
        return
    yield ptr, node
    for key, value in node.items():
        if key in _ONE and isinstance(value, dict):
            yield from _walk(value, (*ptr, key))
        elif key in _LIST and isinstance(value, list):
            for i, item in enumerate(value):
                yield from _walk(item, (*ptr, key, str(i)))
        elif key in _MAP and isinstance(value, dict):
            for name, item in value.items():
                yield from _walk(item, (*ptr, key, name))


def _lookup(root: object, ptr: Pointer) -> dict[str, Any] | bool | None:
    """The schema (dict or bool) at a JSON pointer, or None."""
    node = root
    for segment in ptr:
        if isinstance(node, dict) and segment in node:
            node = node[segment]
        elif isinstance(node, list) and segment.isdigit() and int(segment) < len(node):
            node = node[int(segment)]
        else:
            return None
    return node if isinstance(node, dict | bool) else None


def _reaches(edges: set[tuple[str, str]], start: str, goal: str) -> bool:
    seen: set[str] = set()
    todo = [start]
    while todo:
        here = todo.pop()
        if here == goal:
            return True
        if here not in seen:
            seen.add(here)
            todo.extend(b for a, b in edges if a == here)
    return False


def _back_edges(nodes: list[str], edges: set[tuple[str, str]]) -> set[tuple[str, str]]:
    """The back edges of a depth-first search over `nodes` in order: edges to a node still on the search
    path. Every cycle contains one, so without them the graph has none."""
    successors: dict[str, list[str]] = {node: [] for node in nodes}
    for a, b in sorted(edges):
        successors.setdefault(a, []).append(b)
    back: set[tuple[str, str]] = set()
    done: set[str] = set()
    for start in nodes:
        if start in done:
            continue
        path, stack = {start}, [(start, iter(successors.get(start, [])))]
        while stack:
            node, pending = stack[-1]
            child = next(pending, None)
            if child is None:
                stack.pop()
                path.discard(node)
                done.add(node)
            elif child in path:
                back.add((node, child))
            elif child not in done:
                path.add(child)
                stack.append((child, iter(successors.get(child, []))))
    return back


def _flatness_problem(schema: dict[str, Any]) -> str | None:
    if schema.get("type", "object") != "object":
        return f"type {schema['type']!r}"
    combined = [key for key in ("$ref", "oneOf", "anyOf", "allOf", "not", "if") if key in schema]
    if combined:
        return "top-level " + ", ".join(repr(key) for key in combined)
    if "properties" not in schema and ("patternProperties" in schema or schema.get("additionalProperties")):
        return "arguments only through additionalProperties/patternProperties"
    return None


def _format(ptr: Pointer) -> str:
    return "#" + "".join("/" + s.replace("~", "~0").replace("/", "~1") for s in ptr)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:_HASH_LENGTH]


# ------------------------------------------------------------------------------- jobs and streams (#13)
# Documented as responses only: a converter (Open WebUI, LangChain) turns every parameter, headers
# included, into an argument the model fills in, and every operation into a tool; so `Prefer` is named
# in the 202's description, not declared as a parameter, and the /jobs paths have a document of their own.

JOB_COMPONENT = "Job"
JOB_ACCEPTED_COMPONENT = "JobAccepted"  # in components/responses
EVENT_STREAM_COMPONENT = "EventStream"
RESULT_OR_STREAM = ("The tool result; with the header `Accept: text/event-stream`, its progress and result as "
                    "server-sent events.")
JOB_ACCEPTED = (
    "Sent with the header `Prefer: respond-async`: the call runs as a job (under the server's job_timeout). "
    "Location is the job's URL: GET it for its status, progress and result; DELETE it to cancel. "
    "See {root}/jobs/docs."
)
FOLLOW_DESCRIPTION = (
    "Sent with the header `Accept: text/event-stream`: the job followed, from any replica, as server-sent "
    "events: `progress` (the latest, then each change), then one `result`, `error` or `cancelled`.")
EVENT_STREAM_DESCRIPTION = (
    "Sent with the header `Accept: text/event-stream`: server-sent events, `progress` "
    '({"progress", "total", "message"}) as the server reports it, then one `result` (the body above) or '
    '`error` ({"status_code", "error"}). Hanging up cancels the call.'
)


def job_schema() -> dict[str, Any]:
    """A job as GET /jobs/{id} answers it."""
    progress = _object(["progress"], progress={"type": "number"}, total={"type": ["number", "null"]},
                       message={"type": ["string", "null"]})
    progress["type"] = ["object", "null"]
    return _object(
        ["id", "server", "tool", "status", "progress", "created", "updated"],
        id={"type": "string", "pattern": "^[0-9a-f]{32}$"},
        server=_STRING,
        tool=_STRING,
        status={"type": "string", "enum": ["running", "succeeded", "failed", "cancelled"]},
        progress=progress,
        created={"type": "string", "format": "date-time"},
        updated={"type": "string", "format": "date-time"},
        status_code={"type": "integer", "description": "Once ended: the status the synchronous call would have had."},
        result={"description": "Once succeeded: the body the synchronous call would have answered."},
        error={**ERROR_SCHEMA["properties"]["error"],  # type: ignore[index]
               "description": "Once failed: the error the synchronous call would have answered."},
    )


def _job_accepted(root: str) -> dict[str, Any]:
    """components/responses/JobAccepted: the 202 of a call sent with `Prefer: respond-async`."""
    return {
        "description": JOB_ACCEPTED.format(root=root),
        "headers": {
            "Location": {"description": "The job's URL.", "schema": _STRING},
            "Preference-Applied": {"description": "respond-async", "schema": _STRING},
        },
        "content": {"application/json": {"schema": {"$ref": _COMPONENTS + JOB_COMPONENT}}},
    }


def jobs_spec(*, version: str, server_url: str, secured: bool) -> dict[str, Any]:
    """The OpenAPI document of /jobs: a caller's jobs, one job, cancelling one."""
    job_ref = {"$ref": _COMPONENTS + JOB_COMPONENT}
    error_ref = {"content": {"application/json": {"schema": {"$ref": _COMPONENTS + ERROR_COMPONENT}}}}
    job_id = {"name": "job", "in": "path", "required": True,
              "schema": {"type": "string", "pattern": "^[0-9a-f]{32}$"}, "description": "The job's id."}

    def answers(ok: str, **errors: str) -> dict[str, Any]:
        found: dict[str, Any] = {"200": {"description": ok, "content": {"application/json": {"schema": job_ref}}}}
        found["401"] = {"description": "No credential, or a bad one.", **error_ref}
        for status, text in errors.items():
            found[status.lstrip("_")] = {"description": text, **error_ref}
        return found

    listed = _object(["jobs"], jobs={"type": "array", "items": job_ref})
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "mcphub: jobs", "version": version, "description": (
            "Tool calls run as jobs: POST /{server}/{tool} with `Prefer: respond-async` answers 202 with the "
            "job and its Location. A job is seen only by the credential that started it, and is kept "
            "jobs.ttl seconds after it ends.")},
        "servers": [{"url": server_url}],
        "paths": {
            "/jobs": {"get": {
                "operationId": "jobs_list", "summary": "The caller's jobs",
                "responses": {"200": {"description": "Running jobs and those ended within jobs.ttl, oldest first.",
                                      "content": {"application/json": {"schema": listed}}},
                              "401": {"description": "No credential, or a bad one.", **error_ref}}}},
            "/jobs/{job}": {
                "parameters": [job_id],
                "get": {"operationId": "jobs_get", "summary": "One job: status, progress, result or error",
                        "responses": answers("The job.", _400="Not a job id.",
                                             _404="No such job for this credential (or it expired).")},
                "delete": {"operationId": "jobs_cancel",
                           "summary": "Cancel a running job (the server is sent notifications/cancelled)",
                           "responses": answers("The job, cancelled.", _400="Not a job id.",
                                                _404="No such job for this credential (or it expired).",
                                                _409="The job has already ended.")},
            },
        },
        "components": {"schemas": {JOB_COMPONENT: job_schema(), ERROR_COMPONENT: copy.deepcopy(ERROR_SCHEMA)}},
    }
    followed = doc["paths"]["/jobs/{job}"]["get"]["responses"]["200"]  # Accept: text/event-stream follows it
    followed["content"]["text/event-stream"] = {"schema": {"type": "string", "description": FOLLOW_DESCRIPTION}}
    followed["description"] += " " + FOLLOW_DESCRIPTION
    if secured:
        doc["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        doc["security"] = [{"bearer": []}]
    return doc


# ------------------------------------------------------------------ resources and prompts (HTTP face)

_MCP_OBJECT = {"type": "object", "description": "MCP's own wire form (camelCase), as the server gave it."}
RESOURCE_ERRORS = {
    401: "No credentials, or bad ones.",
    403: "The credential may not use this server, or is limited to some tools (those see no resources or prompts).",
    404: "Unknown server, resource or prompt.",
    422: "A required query parameter or prompt argument is missing.",
    503: "The MCP server is down or restarting; retry after Retry-After seconds.",
    504: "The server did not answer in time.",
}


def add_resource_operations(doc: dict[str, Any], *, resources: bool, prompts: bool) -> None:
    """Add a server's resource and prompt routes (`GET /resources`, `/resources/read?uri=`, `/prompts`,
    `/prompts/{name}?arg=value`) to its document `doc`, for the kinds the server declares. Their
    operationIds get a `_mcp` suffix where a tool already has the name."""
    taken = {op.get("operationId") for item in doc["paths"].values() for op in item.values()}

    def add(path: str, opid: str, summary: str, description: str, parameters: list[dict[str, Any]],
            response: dict[str, Any]) -> None:
        errors = {str(status): {"description": text, "content": {"application/json": {
            "schema": {"$ref": f"{_COMPONENTS}{ERROR_COMPONENT}"}}}} for status, text in RESOURCE_ERRORS.items()}
        operation = {
            "operationId": f"{opid}_mcp" if opid in taken else opid,
            "summary": summary,
            "description": description,
            "parameters": parameters,
            "responses": {"200": {"description": summary, "content": {"application/json": {"schema": response}}},
                          **errors},
        }
        doc["paths"].setdefault(path, {})["get"] = operation

    def listing(key: str) -> dict[str, Any]:
        return _object([key], **{key: {"type": "array", "items": _MCP_OBJECT}})

    if resources:
        add("/resources", "list_resources", "List the server's resources and resource templates",
            "Every resource and resource template the MCP server lists (all pages).", [],
            _object(["resources", "resourceTemplates"], resources={"type": "array", "items": _MCP_OBJECT},
                    resourceTemplates={"type": "array", "items": _MCP_OBJECT}))
        add("/resources/read", "read_resource", "Read a resource",
            "The contents of the resource at `uri` (a listed URI, or one a template expands to).",
            [{"name": "uri", "in": "query", "required": True, "schema": _STRING,
              "description": "The resource's URI, as the server lists it."}],
            _object(["contents"], contents={"type": "array", "items": _MCP_OBJECT}))
    if prompts:
        add("/prompts", "list_prompts", "List the server's prompts",
            "Every prompt the MCP server lists (all pages), with its arguments.", [], listing("prompts"))
        add("/prompts/{name}", "get_prompt", "Get a prompt's messages",
            "The prompt's messages, its arguments given as query parameters (`?who=Ann&style=formal`).",
            [{"name": "name", "in": "path", "required": True, "schema": _STRING, "description": "The prompt's name."}],
            _object(["messages"], description=_STRING, messages={"type": "array", "items": _MCP_OBJECT}))
