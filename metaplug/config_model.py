"""The schema of metaplug's configuration, validated by pydantic-core (pydantic's validation engine).

Why not a pydantic BaseModel: building a BaseModel's schema costs ~65 ms at every process start, and a CNI plugin
starts a new process for every call (bench/overhead.py measured ADD+DEL at 3.2x the direct delegate calls that way, over
the 3.0x budget). The same validation written directly as a core schema costs ~0.2 ms after a ~24 ms import. Only ADD
and STATUS load this module; DEL, CHECK and GC run from the journal.

`FIELDS` is the single description of every key: attribute name, wire name, Multus aliases, schema, default.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from pydantic_core import SchemaValidator
from pydantic_core import core_schema as cs

from metaplug.config import DEFAULT_BIN_DIR, DEFAULT_CONF_DIR, DEFAULT_DELEGATE_TIMEOUT, DEFAULT_STATE_DIR

LOG_LEVELS = ("debug", "verbose", "info", "warning", "error", "panic")


def _split_commas(value: Any) -> Any:
    """Multus spells globalNamespaces as one comma-separated string."""
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return value


def _log_level(value: str) -> str:
    value = value.lower()
    if value not in LOG_LEVELS:
        raise ValueError(f"must be one of {', '.join(LOG_LEVELS)}")
    return value


class Field(NamedTuple):
    attr: str
    names: tuple[str, ...]  # the wire name first, then accepted aliases (Multus spellings)
    schema: cs.CoreSchema
    default: Any = None
    factory: Callable[[], Any] | None = None
    required: bool = False


_STR = cs.str_schema(min_length=1)
_OPT_STR = cs.nullable_schema(_STR)
_STR_LIST = cs.list_schema(_STR)

FIELDS: tuple[Field, ...] = (
    Field("cni_version", ("cniVersion",), _STR, "0.1.0"),
    Field("name", ("name",), _STR, required=True),
    Field("type", ("type",), _STR, "metaplug"),
    Field("cluster_network", ("clusterNetwork",), _OPT_STR),
    Field("delegates", ("delegates",), cs.list_schema(cs.dict_schema(cs.str_schema(), cs.any_schema())),
          factory=list),
    Field("default_networks", ("defaultNetworks",), _STR_LIST, factory=list),
    Field("conf_dir", ("confDir", "cniDir"), _STR, DEFAULT_CONF_DIR),
    Field("bin_dir", ("binDir",), _STR, DEFAULT_BIN_DIR),
    Field("state_dir", ("stateDir",), _STR, DEFAULT_STATE_DIR),
    Field("readiness_indicator_file", ("readinessIndicatorFile", "readinessindicatorfile"), _OPT_STR),
    Field("readiness_timeout", ("readinessTimeout",), cs.float_schema(gt=0), 30.0),
    Field("namespace_isolation", ("namespaceIsolation",), cs.bool_schema(), False),
    Field("global_namespaces", ("globalNamespaces",),
          cs.no_info_before_validator_function(_split_commas, _STR_LIST), factory=list),
    Field("system_namespaces", ("systemNamespaces",), _STR_LIST, factory=lambda: ["kube-system"]),
    Field("network_namespace", ("networkNamespace", "multusNamespace"), _STR, "kube-system"),
    Field("result", ("result",), cs.literal_schema(["merged", "primary"]), "merged"),
    Field("parallel", ("parallel",), cs.bool_schema(), False),
    Field("delegate_timeout", ("delegateTimeout",), cs.float_schema(gt=0), DEFAULT_DELEGATE_TIMEOUT),
    Field("log_level", ("logLevel", "loglevel"), cs.no_info_after_validator_function(_log_level, _STR), "warning"),
    Field("log_file", ("logFile",), _OPT_STR),
    Field("capabilities", ("capabilities",), cs.dict_schema(cs.str_schema(), cs.bool_schema()), factory=dict),
    Field("kubeconfig", ("kubeconfig",), _OPT_STR),
    Field("kube_deadline", ("kubeDeadline",), cs.float_schema(gt=0), 5.0),
)


def _field_schema(f: Field) -> cs.TypedDictField:
    inner = f.schema if f.required else cs.with_default_schema(
        f.schema, **({"default_factory": f.factory} if f.factory else {"default": f.default}))
    alias: list[list[str | int]] = [[n] for n in f.names]
    return cs.typed_dict_field(inner, required=f.required, validation_alias=alias)


VALIDATOR = SchemaValidator(cs.typed_dict_schema(
    {f.attr: _field_schema(f) for f in FIELDS}, extra_behavior="ignore"))


class MetaplugConfig:
    """metaplug's validated configuration (attributes as in FIELDS). Unknown keys are tolerated: a conflist entry may
    carry keys for other tools."""

    cni_version: str
    name: str
    type: str
    cluster_network: str | None
    delegates: list[dict[str, Any]]
    default_networks: list[str]
    conf_dir: str
    bin_dir: str
    state_dir: str
    readiness_indicator_file: str | None
    readiness_timeout: float
    namespace_isolation: bool
    global_namespaces: list[str]
    system_namespaces: list[str]
    network_namespace: str
    result: str
    parallel: bool
    delegate_timeout: float
    log_level: str
    log_file: str | None
    capabilities: dict[str, bool]
    kubeconfig: str | None
    kube_deadline: float

    def __init__(self, values: dict[str, Any]) -> None:
        self.__dict__.update(values)

    @classmethod
    def validate(cls, raw: dict[str, Any]) -> MetaplugConfig:
        """Raises pydantic_core.ValidationError; its locations are the keys as written in the config."""
        return cls(VALIDATOR.validate_python(raw))

    def __repr__(self) -> str:
        return f"MetaplugConfig({self.__dict__!r})"
