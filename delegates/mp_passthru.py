"""mp-passthru: the first plugin of Multus's auxiliary chain (`auxiliaryCNIChainName`).

An auxiliary chain runs chained-only plugins (tuning, sbr, ...) that refuse to run without a prevResult; this plugin
opens the chain with an empty result (or the prevResult it was given, unchanged), so they get one. It creates nothing:
DEL, CHECK, STATUS and GC have nothing to do. Multus calls its own binary `passthru`; a node without Multus's gets the
same behaviour by installing this one under that name (`ln -s mp-passthru passthru` in the CNI bin dir).
"""

from __future__ import annotations

from typing import Any

from metaplug_delegates._common import finish, prev_result, require_version, serve, version_only

from metaplug.cni.env import CniEnv

NAME = "mp-passthru"


def cmd_add(env: CniEnv, conf: dict[str, Any], raw: bytes) -> dict[str, Any]:
    if isinstance(conf.get("prevResult"), dict):  # cni.md 10: carried forward unchanged
        return finish(prev_result(conf, "ADD"), conf)
    return finish({"interfaces": [], "ips": [], "routes": [], "dns": {}}, conf)


def cmd_del(env: CniEnv, conf: dict[str, Any], raw: bytes) -> None:
    return None  # cni.md 11: nothing was made


def cmd_check(env: CniEnv, conf: dict[str, Any], raw: bytes) -> None:
    require_version(conf, "0.4.0", "CHECK")  # cni.md 12; nothing of its own to verify
    return None


def main() -> None:
    serve(NAME, {"ADD": cmd_add, "DEL": cmd_del, "CHECK": cmd_check,
                 "STATUS": version_only("STATUS"), "GC": version_only("GC")})


if __name__ == "__main__":
    main()
