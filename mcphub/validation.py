"""Arguments against a tool's own JSON Schema: compiled once per tool version, errors FastAPI-style.

Any draft the schema names (2020-12 when it names none), `$ref`/`$defs`, recursion. A schema that
cannot be applied at all (invalid, or pointing nowhere) leaves that tool's arguments to its server
(`mcphub check` reports such schemas); that is a property of the schema, so it is remembered. An
argument that is too deeply nested to check is a property of one call: that call gets a 422, and the
tool's validator stays on for everyone else.
"""

from __future__ import annotations

import logging

import jsonschema
import referencing.exceptions
from jsonschema.protocols import Validator
from mcp.types import Tool

from mcphub.errors import ArgumentError, InvalidArguments, exception_line
from mcphub.toolserver import Json

logger = logging.getLogger(__name__)

MAX_CACHED_VALIDATORS = 4096  # compiled argument validators kept (one per tool and tool-list version)
SCHEMA_LOOP_DEPTH = 64  # arguments nested deeper than this that exhaust the stack are the caller's doing
MAX_VALIDATION_ERRORS = 20  # a body can break a schema in many places; the first few are enough to fix it

_Key = tuple[str, str, int]  # server, tool, tool-list version


class ArgumentValidator:
    def __init__(self) -> None:
        self._validators: dict[_Key, Validator | None] = {}

    def check(self, server: str, version: int, tool: Tool, arguments: Json) -> dict[str, Json]:
        """`arguments` as the call's arguments; raises InvalidArguments (422) where they break the schema."""
        if not isinstance(arguments, dict):
            raise InvalidArguments(
                "request body must be a JSON object of the tool's arguments",
                [{"loc": ["body"], "msg": f"expected an object, got {type(arguments).__name__}"}],
                server=server, tool=tool.name,
            )
        key = (server, tool.name, version)
        validator = self._validator(key, tool)
        if validator is None:
            return arguments
        try:
            if validator.is_valid(arguments):  # the common case costs one pass
                return arguments
            errors = sorted(validator.iter_errors(arguments), key=lambda e: list(map(str, e.absolute_path)))
        except RecursionError as exc:
            if _depth(arguments) > SCHEMA_LOOP_DEPTH:  # this call's doing: refuse it, keep checking the others
                raise InvalidArguments(
                    f"arguments of tool '{tool.name}' are nested too deeply to check",
                    [{"loc": ["body"], "msg": f"nested more than {SCHEMA_LOOP_DEPTH} levels deep"}],
                    server=server, tool=tool.name,
                ) from None
            self._unusable(key, exc)  # shallow arguments, endless recursion: the schema loops on itself
            return arguments
        except referencing.exceptions.Unresolvable as exc:
            self._unusable(key, exc)
            return arguments
        if not errors:
            return arguments
        details: list[ArgumentError] = [{"loc": _loc(e), "msg": e.message} for e in errors[:MAX_VALIDATION_ERRORS]]
        where = ".".join(map(str, errors[0].absolute_path)) or "body"
        raise InvalidArguments(
            f"arguments do not match the input schema of tool '{tool.name}': {where}: {errors[0].message}",
            details, server=server, tool=tool.name,
        )

    def _unusable(self, key: _Key, exc: Exception) -> None:
        logger.warning("'%s' tool '%s': input schema cannot be applied (%s); arguments passed unchecked",
                       key[0], key[1], exception_line(exc))
        self._validators[key] = None

    def _validator(self, key: _Key, tool: Tool) -> Validator | None:
        if key in self._validators:
            return self._validators[key]
        if len(self._validators) > MAX_CACHED_VALIDATORS:  # old tool versions pile up over restarts
            self._validators.clear()
        validator: Validator | None
        try:
            cls = jsonschema.validators.validator_for(tool.input_schema, default=jsonschema.Draft202012Validator)
            cls.check_schema(tool.input_schema)
            validator = cls(tool.input_schema)
        except jsonschema.SchemaError as exc:
            logger.warning("'%s' tool '%s' has an invalid input schema (%s); arguments are passed unchecked",
                           key[0], tool.name, exc.message)
            validator = None
        self._validators[key] = validator
        return validator


def _depth(value: Json) -> int:
    """How deeply `value` nests lists and objects (iteratively: the value may be deeper than the stack)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def _loc(error: jsonschema.ValidationError) -> list[str | int]:
    """Where an argument error is, FastAPI-style: a missing property points at the property itself."""
    loc: list[str | int] = ["body", *error.absolute_path]
    if error.validator == "required" and isinstance(error.instance, dict) and isinstance(error.validator_value, list):
        missing = [p for p in error.validator_value if p not in error.instance]
        named = [p for p in missing if error.message.startswith(repr(p))]
        if named:
            loc.append(named[0])
    return loc
