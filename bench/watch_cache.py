"""What the daemon's Kubernetes watch caches save: daemon-mode ADD from the caches vs daemon-mode ADD with a GET of
the pod and its NADs (and a new HTTP client) per call, against the HTTPS API simulator.

    .venv/bin/python bench/watch_cache.py [--pairs 15] [--json]                                            (root)

One node namespace runs the simulator and two warm daemons: `cached` has the kubeconfig (and nodeName) in its own
config, so it watches the node's pods and the NADs; `direct` gets the same kubeconfig only in the shim's conflist
entry, so each ADD builds its own client and GETs the pod and its NADs, as thin mode does. The pod: a bridge cluster
network plus two bridge NADs named in its annotation. Pairs alternate (who goes first alternates too); each side does
ADD then DEL of the pod through metaplug-shim. Printed: median ADD and DEL per side, the ratio, and the API requests
one ADD made (the cached side must make no GET).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from statistics import median
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from metaplug.netns import run_in_netns
from tests.helpers.kube_sim import KubeSim
from tests.helpers.metaplug_env import Daemon, MetaplugWorld
from tests.helpers.netns import NetnsFactory

UID = "5e1f0c7a-0000-4000-8000-00000000b0b0"
ARGS = f"IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=bench;K8S_POD_INFRA_CONTAINER_ID=c1;K8S_POD_UID={UID}"


def measure(pairs: int) -> dict[str, Any]:
    factory = NetnsFactory()
    sim = KubeSim()
    daemons: list[Daemon] = []
    try:
        with tempfile.TemporaryDirectory(prefix="mp-bench-watch-") as tmp:
            world = MetaplugWorld(factory, factory.new("node"), Path(tmp)).setup()
            pod = factory.new("pod")
            run_in_netns(world.node.path, sim.start)
            for name, subnet, bridge in (("red", "10.99.0.0/24", "mpred0"), ("blue", "10.98.0.0/24", "mpbl0")):
                sim.add_nad("default", name, json.dumps(world.bridge_net(name, subnet, bridge)))
            sim.add_pod("default", "bench", uid=UID, annotations={"k8s.v1.cni.cncf.io/networks": "red,blue"})
            kubeconfig = sim.kubeconfig(Path(tmp) / "kube" / "config")
            conf = world.metaplug_conf(world.bridge_net("cluster", "10.88.0.0/24", "mpcl0", default_gw=True),
                                       kubeconfig=kubeconfig, logLevel="warning")
            base = {"stateDir": str(world.state_dir), "logLevel": "warning"}
            env = {"CNI_PATH": world.cni_path}
            sides = {
                "cached": Daemon(world.node, Path(tmp) / "cached",
                                 {**base, "kubeconfig": kubeconfig, "nodeName": "node-1"}, env),
                "direct": Daemon(world.node, Path(tmp) / "direct", {**base, "metricsAddress": "127.0.0.1:9092"}, env),
            }
            for daemon in sides.values():
                daemons.append(daemon.start())
                daemon.wait_ready()
            times: dict[str, dict[str, list[float]]] = {s: {"ADD": [], "DEL": []} for s in sides}
            requests: dict[str, list[str]] = {}
            for i in range(pairs + 1):  # the first pair warms up and is not counted
                order = list(sides) if i % 2 == 0 else list(reversed(sides))
                for side in order:
                    world.daemon, world.mode = sides[side], "daemon"
                    mark = len(sim.requests)
                    for verb in ("ADD", "DEL"):
                        began = time.perf_counter()
                        done = world.call(verb, conf, pod=pod, args=ARGS)
                        elapsed = time.perf_counter() - began
                        if done.code != 0:
                            raise SystemExit(f"{side} {verb} failed: {done.stdout}{done.stderr}")
                        if i:
                            times[side][verb].append(elapsed * 1000)
                    requests[side] = [f"{r.method} {r.path.split('?')[0]}" for r in sim.requests[mark:]]
                    time.sleep(0.1)
            report: dict[str, Any] = {"pairs": pairs, "sides": {}}
            for side, by_verb in times.items():
                report["sides"][side] = {
                    "ADD ms": round(median(by_verb["ADD"]), 1), "DEL ms": round(median(by_verb["DEL"]), 1),
                    "API requests per ADD": requests[side],
                    "GETs per ADD": sum(1 for r in requests[side] if r.startswith("GET ")),
                }
            report["ADD ratio cached/direct"] = round(
                report["sides"]["cached"]["ADD ms"] / report["sides"]["direct"]["ADD ms"], 3)
            return report
    finally:
        for daemon in daemons:
            daemon.stop()
        sim.stop()
        factory.cleanup()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--pairs", type=int, default=15)
    parser.add_argument("--json", action="store_true")
    opts = parser.parse_args()
    report = measure(opts.pairs)
    if opts.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"daemon-mode ADD+DEL of one pod (cluster + 2 NADs from the API simulator), {opts.pairs} alternating pairs")
    print("| side | ADD median ms | DEL median ms | GETs per ADD | API requests of one ADD |")
    print("| --- | --- | --- | --- | --- |")
    for side, row in report["sides"].items():
        print(f"| {side} | {row['ADD ms']} | {row['DEL ms']} | {row['GETs per ADD']} | "
              f"{', '.join(row['API requests per ADD'])} |")
    print(f"ADD ratio cached/direct: {report['ADD ratio cached/direct']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
