"""metaplug's own plugin configuration (the entry for `"type": "metaplug"` in the runtime's conflist).

One module, one entry point per need:
- `Settings.from_raw(raw)` (DEL, CHECK, GC): the few paths and knobs a journal-driven verb needs (the meta network's
  name, stateDir, binDir, logging, delegateTimeout), read by hand. Those verbs never pay for pydantic.
- `load_config(raw)` (ADD, STATUS): every key validated by pydantic-core (pydantic's validation engine), Multus
  spellings accepted as aliases (`readinessindicatorfile`, `multusNamespace`, `loglevel`); the result is a
  `MetaplugConfig`, whose `.settings` is the lean view of the same values, so ADD parses its configuration once.
A bad value is CNI error 7 naming the key as written.

Why pydantic-core and not a pydantic BaseModel: building a BaseModel's schema costs ~65 ms at every process start, and
a CNI plugin starts a new process for every call (bench/overhead.py measured ADD+DEL at 3.2x the direct delegate calls
that way, over the 3.0x budget). The same validation written directly as a core schema costs ~0.2 ms after a ~24 ms
import. And that import is paid only when needed: the schema is made of plain dicts (metaplug.exact_schema builds
exactly what pydantic_core.core_schema's builders return), a configuration whose values all have their exact types is
validated by metaplug.exact_schema, and pydantic-core decides everything else (coercions, errors and their wording).

`FIELDS` is the single description of every key: attribute name, wire name, Multus aliases, kind, default.
"""

from __future__ import annotations

from metaplug.cni.env import text_problem, validate_network_name
from metaplug.cni.errors import INVALID_NETWORK_CONFIG, CniError
from metaplug.cni.runtime_typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from pydantic_core import SchemaValidator

    from metaplug.exact_schema import CoreSchema

DEFAULT_CONF_DIR = "/etc/cni/metaplug/net.d"
DEFAULT_BIN_DIR = "/opt/cni/bin"
DEFAULT_STATE_DIR = "/var/lib/cni/metaplug"
MULTUS_CACHE_DIR = "/var/lib/cni/multus"  # Multus's `cniDir`: its own cache; metaplug's record is in stateDir
DEFAULT_DELEGATE_TIMEOUT = 60.0
# Every timeout and deadline is finite and at most an hour: 1e999, Infinity or 2**70 seconds passed validation once and
# then made the delegate call raise OverflowError, in ADD and in every later DEL (issue 9, defect 3).
MAX_SECONDS = 3600.0
LOG_LEVELS = ("debug", "verbose", "info", "warning", "error", "panic")

# Capabilities metaplug declares for itself (cni.md 34): every well-known one, so the runtime hands them all over and
# metaplug passes each to the cluster network's plugins that declare it (R30).
OWN_CAPABILITIES = (
    "portMappings", "ipRanges", "bandwidth", "dns", "ips", "mac", "infinibandGUID", "deviceID", "aliases",
    "cgroupPath", "io.kubernetes.cri.pod-annotations",
)


# ---------------------------------------------------------------- the lean view (DEL, CHECK, GC)


def _number(raw: dict[str, Any], key: str, default: float) -> float:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= MAX_SECONDS:  # NaN too
        raise CniError(INVALID_NETWORK_CONFIG, "invalid metaplug configuration",
                       f"{key}: must be a positive number of seconds, at most {MAX_SECONDS:g}")
    return float(value)


def _string(raw: dict[str, Any], keys: tuple[str, ...], default: str) -> str:
    for key in keys:
        if key in raw:
            value = raw[key]
            if not isinstance(value, str) or not value:
                raise CniError(INVALID_NETWORK_CONFIG, "invalid metaplug configuration",
                               f"{key}: must be a non-empty string")
            problem = text_problem(value)  # these name files: a NUL byte or lone surrogate fails every os call
            if problem:
                raise CniError(INVALID_NETWORK_CONFIG, "invalid metaplug configuration", f"{key}: {value!r} {problem}")
            return value
    return default


def _multus_cache_dir(raw: dict[str, Any]) -> str:
    """Multus's cniDir for DEL, CHECK and GC; "" (no Multus cache looked at) for a value ADD would refuse: a DEL must
    not fail over a key it only reads to find what Multus attached."""
    value = raw.get("cniDir", MULTUS_CACHE_DIR)
    return value if isinstance(value, str) and value and not text_problem(value) else ""


def _reject_conflist(raw: dict[str, Any]) -> None:
    """metaplug gets ONE plugin's configuration on stdin (the runtime injects `name` and `cniVersion` into it); a
    whole network configuration list there means metaplug was run by hand, or wrapped in something that passes
    lists on."""
    if "plugins" in raw and "type" not in raw:
        raise CniError(INVALID_NETWORK_CONFIG, "a network configuration list was given where metaplug expects its "
                       "plugin configuration",
                       "stdin has 'plugins': a runtime passes each plugin its own entry of the list, with the list's "
                       "name and cniVersion; run the list through a runtime (python -m metaplug.cni.tool add LIST "
                       "NETNS) or pass the metaplug entry itself")


class LogRotation(NamedTuple):
    """Multus's `logOptions`, with its defaults. 0 means: no limit (maxSize 0: Multus's 100 MB). Defined here, not in
    metaplug.log, so that reading the settings does not import `logging` (metaplug.cni.lazylog)."""

    max_size_mb: int = 100
    max_backups: int = 5
    max_age_days: int = 5
    compress: bool = True


def _log_rotation(raw: dict[str, Any]) -> LogRotation:
    """`logOptions` read by hand (DEL, CHECK, GC): what ADD validated, with Multus's defaults for what is unset."""
    options = raw.get("logOptions")
    if not isinstance(options, dict):
        return LogRotation()
    defaults = LogRotation()
    values: dict[str, Any] = {}
    for key, attr in LOG_OPTION_KEYS.items():
        value = options.get(key)
        if attr == "compress":
            values[attr] = value if isinstance(value, bool) else defaults.compress
        else:
            ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
            values[attr] = value if ok else getattr(defaults, attr)
    return LogRotation(**values)


# Multus's logOptions keys -> LogRotation fields.
LOG_OPTION_KEYS = {"maxSize": "max_size_mb", "maxBackups": "max_backups", "maxAge": "max_age_days",
                   "compress": "compress"}


def multus_differences(raw: dict[str, Any]) -> tuple[str, ...]:
    """Multus keys metaplug accepts but does not act on as Multus does: named in ONE warning line per call
    (plugin._setup), never ignored silently."""
    notes = []
    if raw.get("retryDeleteOnError") is False:
        notes.append("retryDeleteOnError=false (an attachment whose DEL failed is always kept for the runtime's "
                     "next DEL)")
    return tuple(notes)


class Settings(NamedTuple):
    """What every verb needs, read without pydantic. `meta_network` is metaplug's own network name (the `name` of the
    runtime's conflist): it names the journal files and tells apart several meta networks sharing a stateDir."""

    meta_network: str
    state_dir: str
    bin_dir: str
    log_level: str
    log_file: str | None
    delegate_timeout: float
    log_to_stderr: bool = True
    log_rotation: LogRotation | None = None
    multus_differences: tuple[str, ...] = ()
    multus_cache_dir: str = MULTUS_CACHE_DIR  # Multus's cniDir ("" when unusable): pods Multus attached (issue 10.4)

    @classmethod
    def from_raw(cls, raw: dict[str, Any]) -> Settings:
        _reject_conflist(raw)
        # cni.md 5: the name also names the journal files, so it must never carry a path separator.
        validate_network_name(raw.get("name"))
        log_file = raw.get("logFile")
        if not isinstance(log_file, str) or text_problem(log_file):
            log_file = None  # ADD refuses such a value (code 7); DEL, CHECK and GC must not fail over a log file
        return cls(
            meta_network=raw["name"],
            state_dir=_string(raw, ("stateDir",), DEFAULT_STATE_DIR),
            bin_dir=_string(raw, ("binDir",), DEFAULT_BIN_DIR),
            log_level=_string(raw, ("logLevel", "loglevel"), "warning").lower(),
            log_file=log_file or None,
            delegate_timeout=_number(raw, "delegateTimeout", DEFAULT_DELEGATE_TIMEOUT),
            log_to_stderr=raw.get("logToStderr") is not False,
            log_rotation=_log_rotation(raw),
            multus_differences=multus_differences(raw),
            multus_cache_dir=_multus_cache_dir(raw),
        )


# ---------------------------------------------------------------- the full validation (ADD, STATUS)


class Field:
    """One key of the configuration. A plain class: a NamedTuple's class creation alone costs ~0.14 ms, paid by every
    verb since this module is imported on every call."""

    __slots__ = ("attr", "default", "factory", "kind", "names", "required")

    def __init__(self, attr: str, names: tuple[str, ...], kind: str, default: Any = None,
                 factory: Callable[[], Any] | None = None, required: bool = False) -> None:
        self.attr = attr
        self.names = names  # the wire name first, then accepted aliases (Multus spellings)
        self.kind = kind  # a key of _schemas(): how the value is validated
        self.default = default
        self.factory = factory
        self.required = required


FIELDS: tuple[Field, ...] = (
    Field("cni_version", ("cniVersion",), "str", "0.1.0"),
    Field("meta_network", ("name",), "str", required=True),
    Field("type", ("type",), "str", "metaplug"),
    Field("cluster_network", ("clusterNetwork",), "optional str"),
    Field("delegates", ("delegates",), "objects", factory=list),
    Field("default_networks", ("defaultNetworks",), "str list", factory=list),
    Field("conf_dir", ("confDir",), "str", DEFAULT_CONF_DIR),
    # Multus's data directory (its scratch copies of the delegates, libcni's result cache), not a confDir: read only
    # to DEL, CHECK and GC the pods Multus attached before the node switched (metaplug.multus_cache), never written.
    Field("multus_cache_dir", ("cniDir",), "str", MULTUS_CACHE_DIR),
    Field("bin_dir", ("binDir",), "str", DEFAULT_BIN_DIR),
    Field("state_dir", ("stateDir",), "str", DEFAULT_STATE_DIR),
    Field("readiness_indicator_file", ("readinessIndicatorFile", "readinessindicatorfile"), "optional str"),
    Field("readiness_timeout", ("readinessTimeout",), "positive number", 30.0),
    Field("namespace_isolation", ("namespaceIsolation",), "bool", False),
    # R29 as Multus: unset (or empty), the `default` namespace is usable from every namespace; a list replaces it.
    Field("global_namespaces", ("globalNamespaces",), "global namespaces", factory=lambda: ["default"]),
    Field("system_namespaces", ("systemNamespaces",), "str list", factory=lambda: ["kube-system"]),
    Field("network_namespace", ("networkNamespace", "multusNamespace"), "str", "kube-system"),
    Field("result", ("result",), "result", "merged"),
    Field("parallel", ("parallel",), "bool", False),
    Field("delegate_timeout", ("delegateTimeout",), "positive number", DEFAULT_DELEGATE_TIMEOUT),
    Field("log_level", ("logLevel", "loglevel"), "log level", "warning"),
    Field("log_file", ("logFile",), "optional str"),
    Field("log_to_stderr", ("logToStderr",), "bool", True),
    Field("log_options", ("logOptions",), "log options", factory=dict),
    Field("auxiliary_chain", ("auxiliaryCNIChainName",), "optional str"),
    Field("retry_delete_on_error", ("retryDeleteOnError",), "bool", False),
    Field("capabilities", ("capabilities",), "capabilities", factory=dict),
    Field("kubeconfig", ("kubeconfig",), "optional str"),
    Field("kube_deadline", ("kubeDeadline",), "positive number", 5.0),
)


def _split_commas(value: Any) -> Any:
    """Multus spells globalNamespaces as one comma-separated string."""
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return value


def _or_default_namespace(value: list[str]) -> list[str]:
    """Multus: with no globalNamespaces the `default` namespace is global (k8sclient's non-isolated namespaces)."""
    return value or ["default"]


def _log_level(value: str) -> str:
    value = value.lower()
    if value not in LOG_LEVELS:
        raise ValueError(f"must be one of {', '.join(LOG_LEVELS)}")
    return value


def _no_nul(value: str) -> str:
    if "\0" in value:  # a path or name with a NUL byte fails every os call later (issue 9)
        raise ValueError("must not contain a NUL byte")
    return value


def _schemas() -> dict[str, CoreSchema]:
    """Every field kind as a pydantic-core schema (plain dicts: no pydantic-core import)."""
    from metaplug import exact_schema as cs

    text = cs.no_info_after_validator_function(_no_nul, cs.str_schema(min_length=1))  # lone surrogates: refused
    texts = cs.list_schema(text)
    flag, count = cs.bool_schema(strict=True), cs.int_schema(ge=0, strict=True)
    return {
        "str": text,
        "optional str": cs.nullable_schema(text),
        "str list": texts,
        "global namespaces": cs.no_info_after_validator_function(
            _or_default_namespace, cs.no_info_before_validator_function(_split_commas, texts)),
        "log options": cs.typed_dict_schema({
            key: cs.typed_dict_field(flag if key == "compress" else count, required=False)
            for key in LOG_OPTION_KEYS}, extra_behavior="ignore"),
        "objects": cs.list_schema(cs.dict_schema(cs.str_schema(), cs.any_schema())),
        "positive number": cs.float_schema(gt=0, le=MAX_SECONDS),  # finite: `_number` before, as in the lean view
        "bool": cs.bool_schema(),
        "result": cs.literal_schema(["merged", "primary"]),
        "log level": cs.no_info_after_validator_function(_log_level, text),
        "capabilities": cs.dict_schema(cs.str_schema(), cs.bool_schema()),
    }


_schema: CoreSchema | None = None
_validator: SchemaValidator | None = None


def config_schema() -> CoreSchema:
    """The typed-dict core schema of the whole configuration (plain dicts), built on first use."""
    global _schema
    if _schema is None:
        from metaplug import exact_schema as cs

        schemas = _schemas()

        def field_schema(f: Field) -> CoreSchema:
            inner = schemas[f.kind] if f.required else cs.with_default_schema(
                schemas[f.kind], **({"default_factory": f.factory} if f.factory else {"default": f.default}))
            alias: list[list[str | int]] = [[n] for n in f.names]
            return cs.typed_dict_field(inner, required=f.required, validation_alias=alias)

        _schema = cs.typed_dict_schema({f.attr: field_schema(f) for f in FIELDS}, extra_behavior="ignore")
    return _schema


def _build_validator() -> SchemaValidator:
    from pydantic_core import SchemaValidator

    return SchemaValidator(config_schema())


class MetaplugConfig:
    """metaplug's validated configuration (attributes as in FIELDS). Unknown keys are tolerated: a conflist entry may
    carry keys for other tools."""

    cni_version: str
    meta_network: str
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
    log_to_stderr: bool
    log_options: dict[str, Any]
    auxiliary_chain: str | None
    retry_delete_on_error: bool
    multus_cache_dir: str
    capabilities: dict[str, bool]
    kubeconfig: str | None
    kube_deadline: float

    def __init__(self, values: dict[str, Any], raw: dict[str, Any] | None = None) -> None:
        self.__dict__.update(values)
        self._raw = raw if raw is not None else {}

    @property
    def settings(self) -> Settings:
        """The lean view of the same values (what DEL, CHECK and GC read)."""
        return Settings(self.meta_network, self.state_dir, self.bin_dir, self.log_level, self.log_file,
                        self.delegate_timeout, self.log_to_stderr, _log_rotation({"logOptions": self.log_options}),
                        multus_differences(self._raw), self.multus_cache_dir)

    def __repr__(self) -> str:
        return f"MetaplugConfig({self.__dict__!r})"


def validate_exact(raw: dict[str, Any]) -> MetaplugConfig | None:
    """The configuration when every value already has its exact type and is valid (pydantic-core's answer, without
    importing it), else None: then pydantic-core must decide."""
    from metaplug import exact_schema

    values = exact_schema.validate(config_schema(), raw)
    return None if values is None else MetaplugConfig(values, raw)


def load_config(raw: dict[str, Any]) -> MetaplugConfig:
    """Validate the whole configuration (ADD, STATUS). Errors name the key as written (code 7)."""
    global _validator
    _reject_conflist(raw)
    if "name" in raw:  # cni.md 5 first: the name also names the journal files (a missing one: "name: Field required")
        validate_network_name(raw["name"])
    # The lean view's rule, which pydantic's lax floats would loosen (true or "3" are no timeout): DEL must accept
    # whatever ADD accepted. The other durations follow the same rule (finite, bounded).
    for f in FIELDS:
        if f.kind == "positive number":
            _number(raw, f.names[0], f.default)
    exact = validate_exact(raw)  # the common case, without importing pydantic-core (~15-25 ms)
    if exact is not None:
        return exact
    from pydantic_core import ValidationError

    if _validator is None:
        _validator = _build_validator()
    try:
        return MetaplugConfig(_validator.validate_python(raw), raw)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"]) or "(config)"
            problems.append(f"{key}: {err['msg']}")
        raise CniError(INVALID_NETWORK_CONFIG, "invalid metaplug configuration", "; ".join(problems)) from None
