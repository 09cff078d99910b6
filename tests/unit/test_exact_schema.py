"""metaplug.exact_schema: the pydantic-core-free path for exactly typed configurations gives pydantic-core's answer.

It may only ever say "unsure" or agree with pydantic-core: same values, same types, and never an acceptance of what
pydantic-core rejects. Its schema builders must produce the dicts of pydantic_core.core_schema's builders.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic_core import SchemaValidator, ValidationError
from pydantic_core import core_schema as pcs

from metaplug import exact_schema as xs
from metaplug.config import FIELDS, config_schema, validate_exact

EXAMPLES = Path(__file__).resolve().parents[2] / "configs" / "examples"
SCHEMA = config_schema()
PYDANTIC = SchemaValidator(SCHEMA)


def pydantic_answer(raw: dict[str, Any]) -> dict[str, Any] | None:
    try:
        return dict(PYDANTIC.validate_python(raw))
    except ValidationError:
        return None


def validated(cfg: Any) -> dict[str, Any]:
    """The validated values of a MetaplugConfig (without the raw config it keeps beside them)."""
    return {k: v for k, v in cfg.__dict__.items() if k != "_raw"}


def same(a: Any, b: Any) -> bool:
    """Equal values of the same types all the way down (5 and 5.0 differ)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    return bool(a == b)


def test_builders_match_pydantic_core() -> None:
    s = pcs.str_schema()
    pairs = [
        (xs.str_schema(min_length=1), pcs.str_schema(min_length=1)),
        (xs.nullable_schema(xs.str_schema()), pcs.nullable_schema(s)),
        (xs.list_schema(xs.str_schema()), pcs.list_schema(s)),
        (xs.dict_schema(xs.str_schema(), xs.any_schema()), pcs.dict_schema(s, pcs.any_schema())),
        (xs.float_schema(gt=0), pcs.float_schema(gt=0)),
        (xs.float_schema(gt=0, le=3600), pcs.float_schema(gt=0, le=3600)),
        (xs.float_schema(gt=0, le=3600, allow_inf_nan=False), pcs.float_schema(gt=0, le=3600, allow_inf_nan=False)),
        (xs.str_schema(min_length=1, pattern="^a"), pcs.str_schema(min_length=1, pattern="^a")),
        (xs.list_schema(xs.str_schema(), max_length=3), pcs.list_schema(s, max_length=3)),
        (xs.bool_schema(), pcs.bool_schema()),
        (xs.bool_schema(strict=True), pcs.bool_schema(strict=True)),
        (xs.int_schema(ge=0, strict=True), pcs.int_schema(ge=0, strict=True)),
        (xs.literal_schema(["a", "b"]), pcs.literal_schema(["a", "b"])),
        (xs.no_info_before_validator_function(len, xs.str_schema()), pcs.no_info_before_validator_function(len, s)),
        (xs.no_info_after_validator_function(len, xs.str_schema()), pcs.no_info_after_validator_function(len, s)),
        (xs.with_default_schema(xs.str_schema(), default=None), pcs.with_default_schema(s, default=None)),
        (xs.with_default_schema(xs.str_schema(), default="x"), pcs.with_default_schema(s, default="x")),
        (xs.with_default_schema(xs.str_schema(), default_factory=list),
         pcs.with_default_schema(s, default_factory=list)),
        (xs.typed_dict_field(xs.str_schema(), required=False, validation_alias=[["a"], ["b"]]),
         pcs.typed_dict_field(s, required=False, validation_alias=[["a"], ["b"]])),
        (xs.typed_dict_schema({"x": xs.typed_dict_field(xs.str_schema())}, extra_behavior="ignore"),
         pcs.typed_dict_schema({"x": pcs.typed_dict_field(s)}, extra_behavior="ignore")),
    ]
    for ours, theirs in pairs:
        assert ours == theirs


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.conflist")), ids=lambda p: p.name)
def test_example_configs_take_the_exact_path(path: Path) -> None:
    """The configurations operators write (and `metaplug install` generates) never need pydantic-core."""
    conflist = json.loads(path.read_text())
    for plugin in conflist["plugins"]:
        if plugin["type"] == "metaplug":
            raw = {**plugin, "cniVersion": conflist["cniVersion"], "name": conflist["name"]}
            exact = validate_exact(raw)
            assert exact is not None
            assert same(validated(exact), pydantic_answer(raw))


def test_coercions_and_errors_are_left_to_pydantic_core() -> None:
    for raw in ({"name": "mp", "parallel": "true"}, {"name": "mp", "delegateTimeout": "5"},
                {"name": "mp", "delegateTimeout": float("inf")}, {"name": "mp", "logLevel": "loud"},
                {"name": "mp", "readinessTimeout": 0}, {"name": "mp", "delegateTimeout": True},
                {"name": ""}, {}, {"name": "mp", "result": "both"}, {"name": "mp", "confDir": "/x\ud800"},
                {"name": "mp", "stateDir": "/x\x00y"}):
        assert validate_exact(raw) is None, raw


def test_an_unknown_constraint_means_unsure() -> None:
    """A stricter schema (a constraint this module does not implement) can never be bypassed."""
    schema = xs.typed_dict_schema({"x": xs.typed_dict_field({"type": "str", "pattern": "^a$"}, required=True)})
    assert xs.validate(schema, {"x": "b"}) is None
    assert xs.validate({"type": "typed-dict", "fields": {}, "extra_behavior": "forbid"}, {}) is None
    finite = xs.typed_dict_schema({"t": xs.typed_dict_field(xs.float_schema(gt=0, allow_inf_nan=False))})
    assert xs.validate(finite, {"t": 5}) is None  # a stricter float: pydantic-core decides, even for a plain 5


# Per kind of key: valid values, values lax mode coerces, invalid ones and wrong types.
JUNK = [None, True, 0, -1, 2.5, float("inf"), float("nan"), "", "x", "5", "true", [], {}, ["a"], {"a": 1},
        "\ud800", "a\x00b", "\u00e9t\u00e9"]
CANDIDATES: dict[str, list[Any]] = {
    "str": ["mp", "/tmp/x", "kube-system", "a b"],
    "float": [1, 30, 2.5, 1e-3, 2**70, 1e300, "5", "1.5"],
    "bool": [True, False, "true", "false", 1, 0, "yes"],
    "list": [[], ["a"], ["a", "b"], ["a", ""], [1], "a,b", " a , ,b", ",", [{"type": "x"}], [{}], [[]]],
    "dict": [{}, {"portMappings": True}, {"a": "yes"}, {"a": 1}, {1: True}],
    "typed-dict": [{}, {"maxSize": 10}, {"maxSize": 0, "compress": True}, {"maxAge": -1}, {"maxBackups": True},
                   {"compress": "true"}, {"compress": 1}, {"maxSize": 1.5}, {"maxSize": "5"}, {"other": 1}],
    "literal": ["merged", "primary", "Merged"],
    "function-after": ["debug", "DEBUG", "Info", "loud"],
    "function-before": [[], ["a"], "a,b", " a , ,b", [""], [1]],
}


def candidates(schema: dict[str, Any]) -> list[Any]:
    while schema["type"] in ("default", "nullable"):
        schema = schema["schema"]
    return CANDIDATES[schema["type"]]


FIELD_VALUES = {name: candidates(SCHEMA["fields"][f.attr]["schema"]) for f in FIELDS for name in f.names}


@st.composite
def configs(draw: st.DrawFn) -> dict[str, Any]:
    keys = draw(st.lists(st.sampled_from(sorted(FIELD_VALUES)), max_size=6, unique=True))
    raw = {key: draw(st.sampled_from(FIELD_VALUES[key] if draw(st.integers(0, 9)) else JUNK)) for key in keys}
    if draw(st.booleans()):
        raw["name"] = "mp"
    if draw(st.booleans()):
        raw["runtimeConfig"] = {"anything": [1, "x"]}  # unknown keys are ignored
    return raw


@settings(max_examples=800, deadline=None)
@given(configs())
def test_exact_path_agrees_with_pydantic_core(raw: dict[str, Any]) -> None:
    exact = validate_exact(raw)
    expected = pydantic_answer(raw)
    if exact is not None:
        assert expected is not None, f"pydantic-core rejects {raw!r}"
        assert same(validated(exact), expected), (validated(exact), expected)


def test_the_generated_configs_exercise_both_paths() -> None:
    """The property above means something only if many generated configs take the exact path."""
    outcomes: list[bool] = []

    @settings(max_examples=300, deadline=None, database=None)
    @given(configs())
    def record(raw: dict[str, Any]) -> None:
        outcomes.append(validate_exact(raw) is not None)

    record()
    share = sum(outcomes) / len(outcomes)
    assert 0.05 < share < 0.95, share


def test_add_of_an_exact_config_does_not_import_pydantic_core() -> None:
    code = (
        "import sys\n"
        "from metaplug.config import load_config\n"
        "cfg = load_config({'cniVersion': '1.0.0', 'name': 'n', 'delegateTimeout': 30, 'globalNamespaces': 'a,b'})\n"
        "assert cfg.delegate_timeout == 30.0 and cfg.global_namespaces == ['a', 'b'], cfg\n"
        "print([m for m in ('pydantic', 'pydantic_core', 'typing_extensions') if m in sys.modules])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
