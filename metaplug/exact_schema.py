"""Validate exactly-typed JSON against a pydantic-core schema, without importing pydantic-core.

A thin-mode CNI call is a new process, and importing pydantic-core costs ~15-25 ms of it (its `core_schema` module
builds hundreds of TypedDicts at import). The schemas themselves are plain dicts (what `core_schema.*_schema()`
returns), so the common case, a configuration whose every value already has the schema's exact JSON type and meets
its constraints, can be checked here with the same result pydantic-core would give.

Anything else returns UNSURE, and the caller asks pydantic-core, which stays the authority: it coerces what lax mode
coerces ("true", "5"), and it words the errors. So this module never rejects anything and never produces a value
pydantic-core would not (tests/unit/test_exact_schema.py compares both on generated input). A schema type or
constraint it does not know also means UNSURE, so a stricter schema can never be bypassed.
"""

from __future__ import annotations

import math

from metaplug.cni.runtime_typing import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Any, TypeAlias


class _Unsure(Exception):
    """The input is not exactly typed, breaks a constraint, or the schema uses something not handled here."""


UNSURE = None  # what validate() returns when pydantic-core must decide


def validate(schema: dict[str, Any], value: Any) -> dict[str, Any] | None:
    """The validated typed-dict for `value`, or UNSURE (None)."""
    try:
        result = _check(schema, value)
    except _Unsure:
        return UNSURE
    return result if isinstance(result, dict) else UNSURE


def _only(schema: dict[str, Any], *known: str) -> None:
    if not set(schema) <= {"type", *known}:
        raise _Unsure  # a constraint or option this module does not implement


def _check(schema: dict[str, Any], value: Any) -> Any:
    kind = schema.get("type")
    checker = _CHECKERS.get(kind)  # type: ignore[arg-type]
    if checker is None:
        raise _Unsure
    return checker(schema, value)


def _str(schema: dict[str, Any], value: Any) -> str:
    _only(schema, "min_length", "max_length")
    if type(value) is not str:
        raise _Unsure
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise _Unsure from None  # a lone surrogate (JSON "\ud800"): pydantic-core refuses it
    if len(value) < schema.get("min_length", 0) or len(value) > schema.get("max_length", len(value)):
        raise _Unsure
    return value


def _float(schema: dict[str, Any], value: Any) -> float:
    _only(schema, "gt", "ge", "lt", "le")
    if type(value) not in (int, float) or not math.isfinite(value):
        raise _Unsure  # bool, strings, inf and nan: pydantic-core decides
    number = float(value)
    bounds_ok = ("gt" not in schema or number > schema["gt"]) and ("ge" not in schema or number >= schema["ge"]) \
        and ("lt" not in schema or number < schema["lt"]) and ("le" not in schema or number <= schema["le"])
    if not bounds_ok:
        raise _Unsure
    return number


def _bool(schema: dict[str, Any], value: Any) -> bool:
    _only(schema, "strict")  # strict or lax, pydantic-core accepts an exact bool as itself
    if type(value) is not bool:
        raise _Unsure
    return value


def _int(schema: dict[str, Any], value: Any) -> int:
    _only(schema, "strict", "gt", "ge", "lt", "le")  # strict or lax, an exact int is accepted as itself
    if type(value) is not int:
        raise _Unsure  # bool, float, strings: pydantic-core decides
    bounds_ok = ("gt" not in schema or value > schema["gt"]) and ("ge" not in schema or value >= schema["ge"]) \
        and ("lt" not in schema or value < schema["lt"]) and ("le" not in schema or value <= schema["le"])
    if not bounds_ok:
        raise _Unsure
    return value


def _any(schema: dict[str, Any], value: Any) -> Any:
    _only(schema)
    return value


def _literal(schema: dict[str, Any], value: Any) -> Any:
    _only(schema, "expected")
    if not any(type(value) is type(e) and value == e for e in schema["expected"]):
        raise _Unsure
    return value


def _nullable(schema: dict[str, Any], value: Any) -> Any:
    _only(schema, "schema")
    return None if value is None else _check(schema["schema"], value)


def _list(schema: dict[str, Any], value: Any) -> list[Any]:
    _only(schema, "items_schema")
    if type(value) is not list:
        raise _Unsure
    items = schema.get("items_schema", {"type": "any"})
    return [_check(items, item) for item in value]


def _dict(schema: dict[str, Any], value: Any) -> dict[Any, Any]:
    _only(schema, "keys_schema", "values_schema")
    if type(value) is not dict:
        raise _Unsure
    keys = schema.get("keys_schema", {"type": "any"})
    values = schema.get("values_schema", {"type": "any"})
    return {_check(keys, k): _check(values, v) for k, v in value.items()}


def _plain_function(schema: dict[str, Any]) -> Any:
    _only(schema, "function", "schema")
    function = schema["function"]
    if function.get("type") != "no-info":
        raise _Unsure
    return function["function"]


def _before(schema: dict[str, Any], value: Any) -> Any:
    function = _plain_function(schema)
    try:
        value = function(value)
    except (ValueError, AssertionError):
        raise _Unsure from None  # pydantic-core turns these into the error message
    return _check(schema["schema"], value)


def _after(schema: dict[str, Any], value: Any) -> Any:
    function = _plain_function(schema)
    value = _check(schema["schema"], value)
    try:
        return function(value)
    except (ValueError, AssertionError):
        raise _Unsure from None


def _typed_dict(schema: dict[str, Any], value: Any) -> dict[str, Any]:
    _only(schema, "fields", "extra_behavior", "total")
    if type(value) is not dict or schema.get("extra_behavior", "ignore") != "ignore":
        raise _Unsure
    out: dict[str, Any] = {}
    for attr, field in schema["fields"].items():
        if field.get("type") != "typed-dict-field" or not set(field) <= {"type", "schema", "required",
                                                                          "validation_alias"}:
            raise _Unsure
        paths = field.get("validation_alias", [[attr]])
        if isinstance(paths, str):
            paths = [[paths]]
        if not all(isinstance(p, list) and len(p) == 1 and isinstance(p[0], str) for p in paths):
            raise _Unsure  # nested alias paths: not handled here
        key = next((p[0] for p in paths if p[0] in value), None)
        inner = field["schema"]
        if key is not None:
            out[attr] = _check(inner["schema"] if inner.get("type") == "default" else inner, value[key])
        elif inner.get("type") == "default":
            out[attr] = _default(inner)
        elif field.get("required", schema.get("total", True)):
            raise _Unsure  # missing: pydantic-core reports it
    return out


def _default(schema: dict[str, Any]) -> Any:
    _only(schema, "schema", "default", "default_factory")
    if "default_factory" in schema:
        return schema["default_factory"]()
    return schema["default"]


_CHECKERS = {
    "str": _str, "float": _float, "bool": _bool, "int": _int, "any": _any, "literal": _literal, "nullable": _nullable,
    "list": _list, "dict": _dict, "function-before": _before, "function-after": _after, "typed-dict": _typed_dict,
}


# ---------------------------------------------------------------- building schemas
# The builders of pydantic_core.core_schema that metaplug's schemas use, returning the same dicts (tested against
# pydantic-core's own builders), so that defining a schema does not import pydantic-core either. Any other option
# (`strict`, `allow_inf_nan`, `pattern`, ...) is passed through into the dict as pydantic-core would store it; the
# checker above does not know it, so a schema using it is always left to pydantic-core.

CoreSchema: TypeAlias = "dict[str, Any]"
TypedDictField: TypeAlias = "dict[str, Any]"


def _schema(kind: str, **options: Any) -> CoreSchema:
    return {"type": kind, **{k: v for k, v in options.items() if v is not None}}


def str_schema(**options: Any) -> CoreSchema:
    return _schema("str", **options)


def float_schema(**options: Any) -> CoreSchema:
    return _schema("float", **options)


def int_schema(**options: Any) -> CoreSchema:
    return _schema("int", **options)


def bool_schema(**options: Any) -> CoreSchema:
    return _schema("bool", **options)


def any_schema(**options: Any) -> CoreSchema:
    return _schema("any", **options)


def literal_schema(expected: list[Any], **options: Any) -> CoreSchema:
    return _schema("literal", expected=expected, **options)


def nullable_schema(schema: CoreSchema, **options: Any) -> CoreSchema:
    return _schema("nullable", schema=schema, **options)


def list_schema(items_schema: CoreSchema | None = None, **options: Any) -> CoreSchema:
    return _schema("list", items_schema=items_schema, **options)


def dict_schema(keys_schema: CoreSchema | None = None, values_schema: CoreSchema | None = None,
                **options: Any) -> CoreSchema:
    return _schema("dict", keys_schema=keys_schema, values_schema=values_schema, **options)


def no_info_before_validator_function(function: Any, schema: CoreSchema, **options: Any) -> CoreSchema:
    return _schema("function-before", function={"type": "no-info", "function": function}, schema=schema, **options)


def no_info_after_validator_function(function: Any, schema: CoreSchema, **options: Any) -> CoreSchema:
    return _schema("function-after", function={"type": "no-info", "function": function}, schema=schema, **options)


def with_default_schema(schema: CoreSchema, *, default: Any = None, default_factory: Any = None,
                        **options: Any) -> CoreSchema:
    if default_factory is not None:
        return _schema("default", schema=schema, default_factory=default_factory, **options)
    return {**_schema("default", schema=schema, **options), "default": default}  # a None default is kept


def typed_dict_field(schema: CoreSchema, **options: Any) -> TypedDictField:
    return _schema("typed-dict-field", schema=schema, **options)


def typed_dict_schema(fields: dict[str, TypedDictField], **options: Any) -> CoreSchema:
    return _schema("typed-dict", fields=fields, **options)
