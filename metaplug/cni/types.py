"""Pydantic models of CNI configurations, results of every version, errors and VERSION replies (duties 16, 17, 27-29).

Off the hot path: the per-call code works on dicts (convert.py); these models validate and document the wire formats.
Python names are snake_case, wire names are aliases (`cniVersion`, `socketPath`, `pciID`); models accept both.
Addresses stay strings exactly as written (host bits kept: "10.1.2.3/24"), checked to be CIDR / IP addresses.
Unknown fields are kept (extra="allow"): a meta-plugin passes what it does not understand through unchanged (duty 17).

Dump results with `dump_result` (aliases, None left out, index 0 kept); dump configs with
`model.model_dump(by_alias=True, exclude_unset=True)` so that only what was given comes back out.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    ValidationError,
    field_validator,
    model_validator,
)

from metaplug.cni import version as cniversion
from metaplug.cni.convert import address_family
from metaplug.cni.env import validate_network_name
from metaplug.cni.errors import DECODE_FAILURE, INCOMPATIBLE_VERSION, INVALID_NETWORK_CONFIG, CniError


def _cidr(value: str) -> str:
    try:
        address_family(value)
    except CniError as err:
        raise ValueError(err.details) from None
    return value


def _ip(value: str) -> str:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise ValueError(f"{value!r} is not an IP address") from None
    return value


def _version_string(value: str) -> str:
    try:
        cniversion.parse(value)
    except CniError as err:
        raise ValueError(err.details) from None
    return value


_TRUE = ("1", "t", "T", "true", "True", "TRUE")
_FALSE = ("0", "f", "F", "false", "False", "FALSE")


def _flag(value: Any) -> Any:
    """Duty 16: list flags are booleans or the strings "true"/"false" (and the other spellings of Go's ParseBool)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value in _TRUE:
        return True
    if isinstance(value, str) and value in _FALSE:
        return False
    raise ValueError(f"{value!r} is not a boolean")


Cidr = Annotated[str, AfterValidator(_cidr)]
IPAddr = Annotated[str, AfterValidator(_ip)]
CniVersion = Annotated[str, AfterValidator(_version_string)]
Flag = Annotated[bool, BeforeValidator(_flag)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class DNS(_Model):
    """The dns object of configs and results (duty 31: `"dns": {}` is as good as no dns)."""

    nameservers: list[str] | None = None
    domain: str | None = None
    search: list[str] | None = None
    options: list[str] | None = None


# ---- configuration (duties 16, 17) ----


class PluginConfig(_Model):
    """One plugin object of a list (or a single-plugin .conf). Unknown fields pass through (duty 17)."""

    type: str = Field(min_length=1)
    cni_version: CniVersion | None = Field(default=None, alias="cniVersion")
    name: str | None = None
    capabilities: dict[str, StrictBool] | None = None
    ipam: dict[str, Any] | None = None
    dns: DNS | None = None
    args: dict[str, Any] | None = None
    runtime_config: dict[str, Any] | None = Field(default=None, alias="runtimeConfig")
    prev_result: dict[str, Any] | None = Field(default=None, alias="prevResult")


class NetworkConfigList(_Model):
    """A network configuration list (duty 16)."""

    cni_version: CniVersion | None = Field(default=None, alias="cniVersion")
    cni_versions: list[CniVersion] | None = Field(default=None, alias="cniVersions")
    name: str
    disable_check: Flag = Field(default=False, alias="disableCheck")
    disable_gc: Flag = Field(default=False, alias="disableGC")
    load_only_inlined_plugins: Flag = Field(default=False, alias="loadOnlyInlinedPlugins")
    plugins: list[PluginConfig] = Field(min_length=1)

    @field_validator("name")
    @classmethod
    def _name_charset(cls, value: str) -> str:
        try:
            validate_network_name(value)  # duty 5
        except CniError as err:
            raise ValueError(err.details) from None
        return value

    def effective_version(self, supported: tuple[str, ...] = cniversion.SUPPORTED_VERSIONS) -> str:
        """The highest supported version of cniVersion and cniVersions (duty 16); 0.1.0 when neither is given (duty 9).

        None of them supported: code 1 naming them and the supported list.
        """
        candidates = [v for v in [self.cni_version, *(self.cni_versions or [])] if v]
        if not candidates:
            return cniversion.DEFAULT_CONFIG_VERSION
        best = cniversion.highest_supported(candidates, supported)
        if best is None:
            raise CniError(
                INCOMPATIBLE_VERSION,
                "incompatible CNI versions",
                f"config is {candidates}, plugin supports {list(supported)}",
            )
        return best


# ---- results (duties 27-29, 31) ----


class Interface(_Model):
    name: str
    mac: str | None = None
    sandbox: str | None = None


class InterfaceV1(Interface):
    """1.0.0/1.1.0; mtu, socketPath and pciID are 1.1.0 only (duty 27)."""

    mtu: int | None = Field(default=None, ge=0, strict=True)
    socket_path: str | None = Field(default=None, alias="socketPath")
    pci_id: str | None = Field(default=None, alias="pciID")


class Route(_Model):
    dst: Cidr
    gw: IPAddr | None = None


class RouteV1(Route):
    """1.0.0/1.1.0; mtu, advmss, priority, table and scope are 1.1.0 only (duty 27)."""

    mtu: int | None = Field(default=None, ge=0, strict=True)
    advmss: int | None = Field(default=None, ge=0, strict=True)
    priority: int | None = Field(default=None, ge=0, strict=True)
    table: int | None = Field(default=None, ge=0, strict=True)
    scope: int | None = Field(default=None, ge=0, strict=True)


class IPConfigV1(_Model):
    address: Cidr
    gateway: IPAddr | None = None
    interface: int | None = Field(default=None, ge=0, strict=True)  # index into interfaces; 0 is real (duty 27)


class IPConfigV04(IPConfigV1):
    version: Literal["4", "6"] | None = None

    @model_validator(mode="after")
    def _version_matches(self) -> IPConfigV04:
        if self.version is not None and self.version != address_family(self.address):
            raise ValueError(f"version {self.version!r} does not match address {self.address!r}")
        return self


class ResultV1(_Model):
    """A 1.0.0 or 1.1.0 result (duty 27)."""

    cni_version: Literal["1.0.0", "1.1.0"] = Field(alias="cniVersion")
    interfaces: list[InterfaceV1] | None = None
    ips: list[IPConfigV1] | None = None
    routes: list[RouteV1] | None = None
    dns: DNS | None = None


class ResultV04(_Model):
    """A 0.3.0, 0.3.1 or 0.4.0 result (duty 28)."""

    cni_version: Literal["0.3.0", "0.3.1", "0.4.0"] = Field(alias="cniVersion")
    interfaces: list[Interface] | None = None
    ips: list[IPConfigV04] | None = None
    routes: list[Route] | None = None
    dns: DNS | None = None


class IPConfigV02(_Model):
    ip: Cidr
    gateway: IPAddr | None = None
    routes: list[Route] | None = None


class ResultV02(_Model):
    """A 0.1.0 or 0.2.0 result (duty 29)."""

    cni_version: Literal["0.1.0", "0.2.0"] = Field(alias="cniVersion")
    ip4: IPConfigV02 | None = None
    ip6: IPConfigV02 | None = None
    dns: DNS | None = None

    @model_validator(mode="after")
    def _families(self) -> ResultV02:
        for key, fam in (("ip4", "4"), ("ip6", "6")):
            conf: IPConfigV02 | None = getattr(self, key)
            if conf is not None and address_family(conf.ip) != fam:
                raise ValueError(f"{key} holds {conf.ip!r}, not an IPv{fam} address")
        return self


class ErrorResult(_Model):
    """A CNI error object (duty 32)."""

    cni_version: str | None = Field(default=None, alias="cniVersion")
    code: int = Field(strict=True)
    msg: str = ""
    details: str | None = None


class VersionResult(_Model):
    """A VERSION reply (duty 15). Old plugins omit supportedVersions (duty 26 says what that means)."""

    cni_version: str = Field(alias="cniVersion")
    supported_versions: list[str] | None = Field(default=None, alias="supportedVersions")


Result = ResultV1 | ResultV04 | ResultV02
_RESULT_MODELS: dict[str, type[BaseModel]] = {
    **dict.fromkeys(("1.0.0", "1.1.0"), ResultV1),
    **dict.fromkeys(("0.3.0", "0.3.1", "0.4.0"), ResultV04),
    **dict.fromkeys(("0.1.0", "0.2.0"), ResultV02),
}


def _explain(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        parts.append(f"{loc}: {err['msg'].removeprefix('Value error, ')}")
    return "; ".join(parts)


def parse_result(data: dict[str, Any], version: str | None = None) -> BaseModel:
    """Validate what a plugin printed: a result of its cniVersion, an error object (has "code") or a VERSION reply
    (has "supportedVersions").

    `version` is used when the data has no cniVersion (duty 25). Invalid input: code 6; unknown version: code 1.
    """
    if not isinstance(data, dict):
        raise CniError(DECODE_FAILURE, "invalid CNI result", f"expected a JSON object, got {type(data).__name__}")
    if "code" in data:
        model: type[BaseModel] = ErrorResult
    elif "supportedVersions" in data:
        model = VersionResult
    else:
        ver = data.get("cniVersion") or version
        if ver is None:
            raise CniError(DECODE_FAILURE, "invalid CNI result", "the result has no cniVersion")
        cniversion.parse(ver)
        found = _RESULT_MODELS.get(ver)
        if found is None:
            raise CniError(
                INCOMPATIBLE_VERSION,
                "unsupported result version",
                f"{ver!r} is not one of {list(cniversion.SUPPORTED_VERSIONS)}",
            )
        model = found
        data = {**data, "cniVersion": ver}
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise CniError(DECODE_FAILURE, f"invalid CNI result ({model.__name__})", _explain(exc)) from None


def dump_result(model: BaseModel) -> dict[str, Any]:
    """The wire form: aliases, None fields left out; zero values (interface index 0) are written (duty 27)."""
    return model.model_dump(mode="json", by_alias=True, exclude_none=True)


def parse_config_list(data: dict[str, Any]) -> NetworkConfigList:
    """Validate a network configuration list (duty 16); invalid: code 7 naming every problem."""
    try:
        return NetworkConfigList.model_validate(data)
    except ValidationError as exc:
        raise CniError(INVALID_NETWORK_CONFIG, "invalid network configuration list", _explain(exc)) from None
