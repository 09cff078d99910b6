"""The bundled mp-* executables as thin mode runs them (one process per call) against the reference plugins.

    .venv/bin/python bench/delegates.py [--pairs 15] [--before CHECKOUT] [--json]                           (root)

One attachment per plugin, ADD then DEL with the ADD's result as prevResult, every call a new process started the
way a runtime starts it (`ip netns exec NODE PLUGIN`, CNI_* env, config on stdin): bridge (bridge `br9`) and
macvlan (master `uplink0`), both with static IPAM, so two processes per verb (the main plugin and its IPAM plugin).
Sides: `mp` (this interpreter's bin dir: mp-bridge/mp-macvlan + mp-static), `reference` (the Go plugins in
--plugin-dir: bridge/macvlan + static) and, with `--before CHECKOUT`, the mp-* of another checkout's `.venv` (e.g. the
main branch unpacked with `git archive`, set up with its `.ci/setup`). Each pair runs every side once in rotating
order; medians of ADD+DEL per plugin and the ratios to the reference plugins are printed. Everything lives in
throw-away namespaces (node with the uplink, pod), removed at the end.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from _netns import BASE_PATH, Sandbox, links, median, need_root, netns_path, run

STATIC = {"type": "static", "addresses": [{"address": "10.66.0.5/24", "gateway": "10.66.0.1"}]}
PLUGINS = {"bridge": {"bridge": "br9"}, "macvlan": {"master": "uplink0"}}


def conf(plugin: str, prefix: str) -> dict[str, Any]:
    return {"cniVersion": "1.0.0", "name": "bench", "type": f"{prefix}{plugin}", **PLUGINS[plugin],
            "ipam": {**STATIC, "type": f"{prefix}static"}}


def call(node: str, bin_dir: str, plugin: str, verb: str, stdin: dict[str, Any], pod: str) -> bytes:
    env = {"PATH": BASE_PATH, "CNI_COMMAND": verb, "CNI_CONTAINERID": "bench1", "CNI_NETNS": netns_path(pod),
           "CNI_IFNAME": "eth0", "CNI_PATH": bin_dir}
    return run(["ip", "netns", "exec", node, f"{bin_dir}/{plugin}"], input=json.dumps(stdin).encode(), env=env).stdout


def add_del(node: str, pod: str, bin_dir: str, prefix: str, plugin: str) -> float:
    """ms for ADD + DEL of one attachment."""
    stdin = conf(plugin, prefix)
    t0 = time.perf_counter_ns()
    result = json.loads(call(node, bin_dir, f"{prefix}{plugin}", "ADD", stdin, pod))
    call(node, bin_dir, f"{prefix}{plugin}", "DEL", {**stdin, "prevResult": result}, pod)
    elapsed = (time.perf_counter_ns() - t0) / 1e6
    left = [name for name in links(pod) if name != "lo"]
    if left:
        raise RuntimeError(f"{bin_dir} {prefix}{plugin} DEL left {left}")
    return elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--pairs", type=int, default=15, help="rounds of every side (default 15)")
    parser.add_argument("--plugin-dir", default="/usr/lib/cni", help="reference plugins (default /usr/lib/cni)")
    parser.add_argument("--before", metavar="CHECKOUT", default=None, help="also the mp-* of CHECKOUT/.venv/bin")
    parser.add_argument("--json", action="store_true", help="print the report as JSON instead of markdown")
    opts = parser.parse_args(argv)
    problem = need_root()
    if problem:
        print(f"delegates.py {problem}", file=sys.stderr)
        return 2
    sides = {"mp": (str(Path(sys.executable).parent), "mp-"), "reference": (opts.plugin_dir, "")}
    if opts.before:
        sides["before"] = (str(Path(opts.before).resolve() / ".venv" / "bin"), "mp-")
    samples: dict[tuple[str, str], list[float]] = {(s, p): [] for s in sides for p in PLUGINS}
    with Sandbox() as box:
        node, pod = box.netns("node"), box.netns("pod")
        box.veth(node, "uplink0")
        names = list(sides)
        for i in range(opts.pairs + 1):  # the first round warms the page cache, not measured
            order = names[i % len(names):] + names[:i % len(names)]
            for side in (order if i % 2 == 0 else order[::-1]):
                for plugin in PLUGINS:
                    ms = add_del(node, pod, *sides[side], plugin)
                    if i:
                        samples[(side, plugin)].append(ms)
    rows = {plugin: {side: round(median(samples[(side, plugin)]), 1) for side in sides} for plugin in PLUGINS}
    if opts.json:
        print(json.dumps({"pairs": opts.pairs, "rows": rows}, indent=2))
        return 0
    others = [s for s in sides if s != "reference"]
    print(f"one attachment ADD+DEL, a process per plugin call (main + static IPAM), median of {opts.pairs} rounds\n")
    print("| plugin | reference ms |" + "".join(f" {s} ms | {s} / reference |" for s in others))
    print("|---|---:|" + "---:|---:|" * len(others))
    for plugin, row in rows.items():
        print(f"| {plugin} | {row['reference']:.1f} |"
              + "".join(f" {row[s]:.1f} | {row[s] / row['reference']:.2f} |" for s in others))
    return 0


if __name__ == "__main__":
    sys.exit(main())
