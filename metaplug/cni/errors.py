"""CNI errors (cni.md section 6, duty 32).

A CniError is what every failure becomes before it reaches stdout: `{"cniVersion", "code", "msg", "details"}`.
"""

from __future__ import annotations

from metaplug.cni.runtime_typing import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Any


# Codes reserved by the specification.
INCOMPATIBLE_VERSION = 1
UNSUPPORTED_FIELD = 2
UNKNOWN_CONTAINER = 3
INVALID_ENVIRONMENT = 4
IO_FAILURE = 5
DECODE_FAILURE = 6
INVALID_NETWORK_CONFIG = 7
TRY_AGAIN_LATER = 11
NOT_AVAILABLE = 50
NOT_AVAILABLE_DEGRADED = 51

# metaplug's own codes (100+ is plugin specific); documented in the README.
DELEGATE_TIMEOUT = 100  # a delegate did not answer within its timeout
DELEGATE_FAILED = 101  # a delegate failed without a usable JSON error (crash, garbage on stdout)
DELEGATE_NOT_FOUND = 102  # the delegate binary is not in binDir/CNI_PATH or is not a regular executable file
ATTACHMENT_FAILED = 103  # an attachment of the pod failed (details name the attachment and the delegate error)
DEL_INCOMPLETE = 104  # DEL could not remove every attachment (details list each failure)
CHECK_MISMATCH = 105  # CHECK found the container's interfaces or addresses differ from the recorded result
KUBERNETES_API = 110  # the Kubernetes API answered with a permanent error (401, 403, 404, ...)
POD_UID_MISMATCH = 111  # the pod found in the API is not the pod the runtime asked for


class CniError(Exception):
    """A failure reported as a CNI error object.

    `code` follows the spec's table; `msg` is short, `details` names what to fix.
    """

    def __init__(self, code: int, msg: str, details: str = "", *, plugin: str | None = None) -> None:
        super().__init__(f"{msg}: {details}" if details else msg)
        self.code = code
        self.msg = msg
        self.details = details
        self.plugin = plugin  # the delegate's `type` when the error came from running one (not on the wire)

    def to_dict(self, cni_version: str) -> dict[str, Any]:
        """The wire form of this error, for the given cniVersion."""
        out: dict[str, Any] = {"cniVersion": cni_version, "code": self.code, "msg": self.msg}
        if self.details:
            out["details"] = self.details
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CniError:
        """Build from a delegate's JSON error; a missing or non-integer code becomes DELEGATE_FAILED."""
        code = data.get("code")
        if not isinstance(code, int) or isinstance(code, bool):
            code = DELEGATE_FAILED
        msg = data.get("msg")
        details = data.get("details")
        return cls(code, str(msg) if msg is not None else "", str(details) if details is not None else "")

    def __repr__(self) -> str:
        return f"CniError(code={self.code}, msg={self.msg!r}, details={self.details!r})"
