"""metaplug's bundled delegates: small, readable, spec-compliant CNI plugins in Python (netlink: metaplug.cni.rtnl).

Installed as console scripts with an `mp-` prefix so they never clash with the reference plugins:

  mp-bridge      Linux bridge + veth pair, IPAM delegated to `ipam.type`
  mp-macvlan     macvlan on `master`, IPAM delegated to `ipam.type`
  mp-loopback    brings `lo` up in the container's namespace
  mp-host-local  IPAM: allocations from ranges, kept in a file-locked store on disk
  mp-static      IPAM: the addresses of the config or of the `ips` capability

All spec handling (env, stdin, errors, versions, result conversion, executing IPAM) comes from `metaplug.cni`.
Every plugin builds 1.1.0-shaped results and converts them to the request's cniVersion at the end.

Error codes: the spec's codes come from `metaplug.cni.errors`; the delegates' own codes are the constants below
(100+ is plugin specific, cni.md 32; 130-139 is the delegates' block, apart from metaplug's 100-111 and skel's 199).
"""

from __future__ import annotations

SUPPORTED_VERSIONS: tuple[str, ...] = ("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")

IFNAME_EXISTS = 130  # ADD: CNI_IFNAME already exists in the container's namespace (the reference plugins use 999)
NETLINK_FAILED = 131  # a netlink operation failed (details name the operation and the kernel's reason)
RANGE_EXHAUSTED = 132  # mp-host-local: no free address left in a range set
ADDRESS_UNAVAILABLE = 133  # mp-host-local: a requested address is outside the ranges, a gateway, or taken by another
CHECK_FAILED = 134  # CHECK: what ADD created is missing or differs from prevResult (details say what)
