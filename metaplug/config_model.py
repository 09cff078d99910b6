"""The pydantic model of metaplug's configuration. Imported only by ADD and STATUS (see config.py)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator

from metaplug.config import DEFAULT_BIN_DIR, DEFAULT_CONF_DIR, DEFAULT_DELEGATE_TIMEOUT, DEFAULT_STATE_DIR


class MetaplugConfig(BaseModel):
    """Every key of metaplug's plugin config. Unknown keys are kept (a conflist may carry keys for other tools)."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    cni_version: str = Field("0.1.0", alias="cniVersion")
    name: str
    type: str = "metaplug"
    cluster_network: str | None = Field(None, alias="clusterNetwork")
    delegates: list[dict[str, Any]] = Field(default_factory=list)
    default_networks: list[str] = Field(default_factory=list, alias="defaultNetworks")
    conf_dir: str = Field(DEFAULT_CONF_DIR, validation_alias=AliasChoices("confDir", "cniDir"))
    bin_dir: str = Field(DEFAULT_BIN_DIR, alias="binDir")
    state_dir: str = Field(DEFAULT_STATE_DIR, alias="stateDir")
    readiness_indicator_file: str | None = Field(
        None, validation_alias=AliasChoices("readinessIndicatorFile", "readinessindicatorfile"))
    readiness_timeout: float = Field(30.0, alias="readinessTimeout", gt=0)
    namespace_isolation: bool = Field(False, alias="namespaceIsolation")
    global_namespaces: list[str] = Field(default_factory=list, alias="globalNamespaces")
    system_namespaces: list[str] = Field(default_factory=lambda: ["kube-system"], alias="systemNamespaces")
    network_namespace: str = Field("kube-system", validation_alias=AliasChoices("networkNamespace", "multusNamespace"))
    result: Literal["merged", "primary"] = "merged"
    parallel: bool = False
    delegate_timeout: float = Field(DEFAULT_DELEGATE_TIMEOUT, alias="delegateTimeout", gt=0)
    log_level: str = Field("warning", validation_alias=AliasChoices("logLevel", "loglevel"))
    log_file: str | None = Field(None, alias="logFile")
    capabilities: dict[str, bool] = Field(default_factory=dict)
    kubeconfig: str | None = None
    kube_deadline: float = Field(5.0, alias="kubeDeadline", gt=0)

    @field_validator("global_namespaces", mode="before")
    @classmethod
    def _split_globals(cls, value: Any) -> Any:
        # Multus spells globalNamespaces as one comma-separated string.
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        return value

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        value = value.lower()
        if value not in ("debug", "verbose", "info", "warning", "error", "panic"):
            raise ValueError("must be one of debug, verbose, info, warning, error, panic")
        return value
