"""Arguments: what may go on the wire at all, then against each tool's JSON Schema, errors FastAPI-style.

First the hub's own bounds, for every server (mounted ones too), before anything is sent: a body is
JSON of at most MAX_DEPTH levels and MAX_VALUES values, refused from a scan of its bytes before it is
parsed; arguments are an object of strings that are valid Unicode (no lone surrogates) and finite
numbers. What breaks a bound is a 422 naming it, so it never reaches a transport that cannot encode it.

Then the tool's own schema, compiled once per tool version: any draft the schema names (2020-12 when it
names none), `$ref`/`$defs`, recursion. A `$ref` that resolves nowhere (another document, a missing
definition) is open there, as schema.py writes it into the OpenAPI document; nothing is ever fetched. A
schema that is invalid as a schema leaves that tool's arguments to its server (`mcphub check` reports
such schemas); both are properties of the schema, known before any call. A schema that cannot be applied
to one input (it recurses without end) makes that call a 422; the next call is checked again, so no
input can switch validation off for anyone.
"""

from __future__ import annotations

import array
import copy
import functools
import itertools
import json
import logging
import math
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from mcp.types import Tool

from mcphub.errors import ArgumentError, InvalidArguments, exception_line
from mcphub.toolserver import Json

# jsonschema (with referencing, rpds and attrs: ~2.6 MiB) is imported when the first validator is compiled,
# at a tool's first call: a hub at rest has not loaded it (tests/test_cost_fences.py).
if TYPE_CHECKING:
    import jsonschema
    from jsonschema.protocols import Validator
    from referencing import Registry

logger = logging.getLogger(__name__)

MAX_CACHED_VALIDATORS = 4096  # compiled argument validators kept (one per tool and tool-list version)
MAX_VALIDATION_ERRORS = 20  # a body can break a schema in many places; the first few are enough to fix it
# Documented bounds (README, "Limits"). Depth: the arguments object is level 1; tool arguments rarely pass
# 10, and the wire has a ceiling (the SDK serialises ~250 levels, its servers parse ~200); the schema
# validator recurses per level on the hub's own stack. Values: object members and array items at any
# depth; each costs ~100-350 bytes once parsed, so 100k is tens of MB however small the body.
MAX_DEPTH = 64
MAX_VALUES = 100_000

_Key = tuple[str, str, int]  # server, tool, tool-list version


class ArgumentValidator:
    def __init__(self) -> None:
        self._validators: dict[_Key, Validator | None] = {}
        self._inapplicable: set[_Key] = set()  # tools whose schema could not be applied to some call (logged)
        self._cannot_apply: tuple[type[Exception], ...] = (RecursionError,)  # and Unresolvable, once loaded

    def check(self, server: str, version: int, tool: Tool, arguments: Json) -> dict[str, Json]:
        """`arguments` as the call's arguments; raises InvalidArguments (422) where they break the schema,
        or where the schema cannot be applied to them."""
        checked = sendable(arguments, server=server, tool=tool.name)
        key = (server, tool.name, version)
        validator = self._validator(key, tool)
        if validator is None:
            return checked
        try:
            if validator.is_valid(checked):  # the common case costs one pass
                return checked
            errors = sorted(validator.iter_errors(checked), key=lambda e: list(map(str, e.absolute_path)))
        except self._cannot_apply as exc:
            # A property of this input with this schema (a loop, a $ref that resolves nowhere, reached only
            # by some inputs): this call is refused, and the next one is checked again.
            if isinstance(exc, RecursionError):
                why = "checking them recursed without end: the schema refers to itself"
            else:
                why = f"a $ref in the schema resolves nowhere: {str(getattr(exc, 'ref', '?'))[:200]!r}"
            if key not in self._inapplicable:  # once per tool version: every such call is audited anyway
                self._inapplicable.add(key)
                logger.warning("'%s' tool '%s': input schema could not be applied to a call's arguments (%s); "
                               "that call refused, validation stays on", server, tool.name, exception_line(exc))
            raise InvalidArguments(
                f"the input schema of tool '{tool.name}' cannot be applied to these arguments ({why}); "
                "the hub does not pass unchecked arguments on",
                [{"loc": ["body"], "msg": f"input schema cannot be applied: {why}"}],
                server=server, tool=tool.name,
            ) from None
        if not errors:
            return checked
        details: list[ArgumentError] = [{"loc": _loc(e), "msg": e.message} for e in errors[:MAX_VALIDATION_ERRORS]]
        where = ".".join(map(str, errors[0].absolute_path)) or "body"
        raise InvalidArguments(
            f"arguments do not match the input schema of tool '{tool.name}': {where}: {errors[0].message}",
            details, server=server, tool=tool.name,
        )

    def _validator(self, key: _Key, tool: Tool) -> Validator | None:
        if key in self._validators:
            return self._validators[key]
        if len(self._validators) > MAX_CACHED_VALIDATORS:  # old tool versions pile up over restarts
            self._validators.clear()
            self._inapplicable.clear()
        import jsonschema  # see TYPE_CHECKING above
        from referencing.exceptions import Unresolvable

        self._cannot_apply = (RecursionError, Unresolvable)
        validator: Validator | None
        try:
            cls = jsonschema.validators.validator_for(tool.input_schema, default=jsonschema.Draft202012Validator)
            cls.check_schema(tool.input_schema)
            schema, dangling = _open_dangling_refs(tool.input_schema)
            if dangling:
                logger.warning("'%s' tool '%s': $ref %s in its input schema resolve nowhere; those parts are "
                               "checked as open, as its OpenAPI document shows them", key[0], tool.name,
                               ", ".join(map(repr, dangling)))
            validator = cls(schema, registry=_no_retrieval())
        except jsonschema.SchemaError as exc:
            logger.warning("'%s' tool '%s' has an invalid input schema (%s); arguments are passed unchecked",
                           key[0], tool.name, exc.message)
            validator = None
        self._validators[key] = validator
        return validator




@functools.cache
def _no_retrieval() -> Registry[Any]:
    """Never fetch a $ref over the network (jsonschema would, with a blocking urlopen on the event loop, for
    any input that reaches one): a reference outside the tool's own schema resolves nowhere."""
    from referencing import Registry

    return Registry()

# Keywords whose values are subschemas (one, a list, a map of them): where a $ref can sit.
_ONE_SCHEMA = frozenset({"additionalProperties", "items", "contains", "propertyNames", "not", "if", "then", "else",
                         "unevaluatedItems", "unevaluatedProperties", "additionalItems"})
_SCHEMA_LIST = frozenset({"allOf", "anyOf", "oneOf", "prefixItems", "items"})
_SCHEMA_MAP = frozenset({"properties", "patternProperties", "$defs", "definitions", "dependentSchemas",
                         "dependencies"})


def _open_dangling_refs(schema: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """`schema` with every `$ref` that resolves nowhere (another document, a missing definition) removed,
    so that part is open, as schema.py writes it into the OpenAPI document; and those refs. A schema
    with an `$id` below its root is returned as it is (its refs have other bases; not guessed at)."""
    nodes = list(_subschemas(schema))
    if any("$id" in node for node in nodes[1:]):
        return schema, []
    from referencing import Resource
    from referencing.exceptions import Unresolvable
    from referencing.jsonschema import DRAFT202012

    root_id = schema.get("$id")
    base = root_id if isinstance(root_id, str) else ""
    resource: Resource[Any] = Resource.from_contents(schema, default_specification=DRAFT202012)
    resolver = _no_retrieval().with_resource(base, resource).resolver(base_uri=base)
    dangling: list[str] = []
    for node in nodes:
        ref = node.get("$ref")
        if isinstance(ref, str):
            try:
                resolver.lookup(ref)
            except Unresolvable:
                dangling.append(ref)
    if not dangling:
        return schema, []
    opened = copy.deepcopy(schema)
    for node in _subschemas(opened):
        if node.get("$ref") in dangling:
            del node["$ref"]
    return opened, dangling


def _subschemas(node: object) -> Iterator[dict[str, Any]]:
    """Every subschema (object form) of a schema, following schema keywords only (not `const`, `default`)."""
    if not isinstance(node, dict):
        return
    yield node
    for key, value in node.items():
        if key in _ONE_SCHEMA and isinstance(value, dict):
            yield from _subschemas(value)
        elif key in _SCHEMA_LIST and isinstance(value, list):
            for item in value:
                yield from _subschemas(item)
        elif key in _SCHEMA_MAP and isinstance(value, dict):
            for item in value.values():
                yield from _subschemas(item)


_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')  # a JSON string literal (an unterminated one: no match)
_NOT_STRUCTURE = b" \t\r\n"  # what a scan of a body's structure skips besides strings
_NOT_BRACKETS = bytes(sorted(set(range(256)) - set(b"[]{}")))
_STEPS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")  # as signed bytes: +1, +1, -1, -1


def parse_body(raw: bytes, *, server: str, tool: str) -> dict[str, Json]:
    """A request body as a tool's arguments: `sendable` JSON (empty: no arguments). Depth and size are
    checked on the bytes first, so a hostile body is refused before it is built."""
    if not raw.strip():
        return {}
    _check_structure(raw, server=server, tool=tool)
    try:
        value = _DECODER.decode(raw.decode(json.detect_encoding(raw), "surrogatepass"))  # as json.loads does
    except RecursionError:  # not well-formed JSON the scan could not count (never deeper than the stack allows)
        raise _too_deep(server, tool) from None
    except ValueError as exc:
        raise InvalidArguments(
            f"request body is not valid JSON: {exc}", [{"loc": ["body"], "msg": f"invalid JSON: {exc}"}],
            server=server, tool=tool,
        ) from None
    return sendable(value, server=server, tool=tool)


def sendable(arguments: Json, *, server: str, tool: str) -> dict[str, Json]:
    """`arguments` (None: none) if they can go to any server: an object within MAX_DEPTH and MAX_VALUES,
    whose strings (keys too) are valid Unicode and whose numbers are finite; else InvalidArguments."""
    if arguments is None:
        return {}
    if not isinstance(arguments, dict):
        raise InvalidArguments(
            "request body must be a JSON object of the tool's arguments",
            [{"loc": ["body"], "msg": f"expected an object, got {type(arguments).__name__}"}],
            server=server, tool=tool,
        )
    values = 0
    stack: list[tuple[Json, int]] = [(arguments, 1)]  # a value and its level; paths only to name a fault
    while stack:
        value, level = stack.pop()
        if isinstance(value, dict | list):
            if level > MAX_DEPTH:
                raise _too_deep(server, tool)
            values += len(value)
            if values > MAX_VALUES:
                raise _too_many(server, tool)
            if isinstance(value, dict):
                for key in value:
                    if isinstance(key, str) and not _is_text(key):
                        raise _refused(arguments, key, server, tool)
                stack.extend((item, level + 1) for item in value.values())
            else:
                stack.extend((item, level + 1) for item in value)
        elif isinstance(value, str) and not _is_text(value):
            raise _refused(arguments, value, server, tool)
        elif isinstance(value, float) and not math.isfinite(value):
            raise _refused(arguments, value, server, tool)
    return arguments


def unsendable(value: Json) -> str | None:
    """Why `value` (a server's answer, any size or depth) cannot be sent on as JSON, or None: a string or
    key holding a lone surrogate, or a number that is not finite. Answers are not bounded like arguments."""
    stack: list[Json] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key in item:
                if isinstance(key, str) and not _is_text(key):
                    return "a key holds a lone surrogate, which is not Unicode text"
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str) and not _is_text(item):
            return "a string holds a lone surrogate, which is not Unicode text"
        elif isinstance(item, float) and not math.isfinite(item):
            return f"a number is not finite ({item})"
    return None


def _check_structure(raw: bytes, *, server: str, tool: str) -> None:
    """Depth and value count of a JSON text, from its bytes alone (exact for well-formed JSON; a
    malformed text is left to the parser to name)."""
    structure = _STRING.sub(b"0", raw).translate(None, _NOT_STRUCTURE)  # strings may hold brackets and commas
    empty = structure.count(b"[]") + structure.count(b"{}")
    containers = structure.count(b"[") + structure.count(b"{")
    if structure.count(b",") + containers - empty > MAX_VALUES:  # each container: its members minus one commas
        raise _too_many(server, tool)
    if containers <= MAX_DEPTH:
        return
    steps = array.array("b", structure.translate(_STEPS, _NOT_BRACKETS))  # +1 per opener, -1 per closer
    if max(itertools.accumulate(steps)) > MAX_DEPTH:
        raise _too_deep(server, tool)


def _is_text(text: str) -> bool:
    """Whether `text` is Unicode text that UTF-8 can carry (a lone surrogate is not)."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _no_constant(name: str) -> Json:
    raise ValueError(f"{name} is not JSON (JSON numbers must be finite)")


# One decoder for every body: json.loads with a keyword argument builds a new one per call (2.5 µs against
# 0.8 µs for a small body, measured), on every tool call's path.
_DECODER = json.JSONDecoder(parse_constant=_no_constant)


def _refused(arguments: dict[str, Json], fault: Json, server: str, tool: str) -> InvalidArguments:
    """The 422 for a key or value (`fault`, found in `arguments`) that cannot be sent, naming where it is."""
    path, is_key = _where(arguments, fault)
    if isinstance(fault, str):
        char = next(c for c in fault if 0xD800 <= ord(c) <= 0xDFFF)
        why = (f"{'a key' if is_key else 'a string'} holds a lone surrogate (\\u{ord(char):04x}), which is not "
               "Unicode text and cannot be sent as UTF-8; send the whole surrogate pair or the character itself")
    else:
        why = f"the number is not finite ({fault}); JSON numbers must be finite (within ±1.8e308)"
    shown = [_printable(p) for p in path]
    where = ".".join(map(str, shown)) or "body"
    return InvalidArguments(f"arguments of tool '{tool}' cannot be sent: {where}: {why}",
                            [{"loc": ["body", *shown], "msg": why}], server=server, tool=tool)


def _where(arguments: dict[str, Json], fault: Json) -> tuple[list[str | int], bool]:
    """The path to `fault` (the object itself) in `arguments`, and whether it is a key there."""
    stack: list[tuple[Json, list[str | int]]] = [(arguments, [])]
    while stack:
        value, path = stack.pop()
        if isinstance(value, dict):
            for key, item in value.items():
                if key is fault:
                    return [*path, key], True
                stack.append((item, [*path, key]))
        elif isinstance(value, list):
            stack.extend((item, [*path, index]) for index, item in enumerate(value))
        elif value is fault:
            return path, False
    return [], False


def _printable(step: str | int) -> str | int:
    """A path step as it can be shown and sent back (a lone surrogate escaped as \\udXXX)."""
    return step.encode("utf-8", "backslashreplace").decode("utf-8") if isinstance(step, str) else step


def _too_deep(server: str, tool: str) -> InvalidArguments:
    why = f"nested more than {MAX_DEPTH} levels deep (the hub's limit)"
    return InvalidArguments(f"arguments of tool '{tool}' are nested too deeply: {why}",
                            [{"loc": ["body"], "msg": why}], server=server, tool=tool)


def _too_many(server: str, tool: str) -> InvalidArguments:
    why = f"more than {MAX_VALUES} values (object members and array items; the hub's limit)"
    return InvalidArguments(f"arguments of tool '{tool}' are too large: {why}",
                            [{"loc": ["body"], "msg": why}], server=server, tool=tool)


def _loc(error: jsonschema.ValidationError) -> list[str | int]:
    """Where an argument error is, FastAPI-style: a missing property points at the property itself."""
    loc: list[str | int] = ["body", *error.absolute_path]
    if error.validator == "required" and isinstance(error.instance, dict) and isinstance(error.validator_value, list):
        missing = [p for p in error.validator_value if p not in error.instance]
        named = [p for p in missing if error.message.startswith(repr(p))]
        if named:
            loc.append(named[0])
    return loc
