"""What metaplug adds on top of its delegates: one pod with three attachments, through metaplug vs direct.

    .venv/bin/python bench/overhead.py [--pairs 10] [--delegates reference|mp] [--no-api] [--json]      (root)

The pod gets the cluster network (bridge + host-local, eth0) and two macvlan NetworkAttachmentDefinitions on a veth
uplink of the node (net1: host-local, net2: static IPAM; three different subnets). Each iteration does ADD, CHECK and
DEL of the whole pod once per variant, the variants in rotating order:
- metaplug: the runtime's call, `metaplug` with CNI_* env + stdin config (delegates, confDir with the two NAD files,
  stateDir, binDir, the pod annotation as containerd hands it over in runtimeConfig);
- metaplug+api: the same pod with the Kubernetes API (the HTTPS simulator of tests/helpers/kube_sim.py, listening on
  the node namespace's loopback): the pod's annotation and both NADs come from the API, network-status is patched onto
  the pod and an event posted, with a kubeconfig as `metaplug install` writes it (JSON, token and CA inline);
- direct: the same delegate calls without metaplug, one process per plugin with the env and stdin a runtime would
  send: the three networks ADD in order, CHECK, then DEL in reverse order with the ADD result as prevResult.
All run from one driver process that is already inside the node namespace (`ip netns exec <node> python overhead.py
--driver PLAN`), so none pays for entering the namespace. Budgets (issue 10.7): median ADD+DEL at most 1.6 x direct
without the API and at most 2.0 x direct with it. `--no-api` leaves the API variant out (it needs the test extra:
`cryptography`, to make the simulator's certificates).

Everything lives in throw-away namespaces (node, pod) and a temp dir (IPAM dataDir, stateDir, confDir), removed at
the end, also after Ctrl-C or SIGTERM. `--delegates mp` uses the bundled mp-bridge/mp-host-local/mp-macvlan/mp-static
(from this interpreter's bin dir) instead of the reference plugins.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from _netns import BASE_PATH, Sandbox, links, median, need_root, netns_path, p90

BUDGETS = {"metaplug": 1.6, "metaplug+api": 2.0}  # median ADD+DEL over direct (issue 10.7)
VERBS = ("ADD", "CHECK", "DEL")
CNI_VERSION = "1.0.0"
CNI_ARGS = "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=bench-pod;K8S_POD_UID=bench-uid"
ANNOTATION = "io.kubernetes.cri.pod-annotations"  # how containerd passes pod annotations (runtimeConfig)
NETWORKS_KEY = "k8s.v1.cni.cncf.io/networks"
PLUGIN_NAMES = {
    "reference": {"bridge": "bridge", "macvlan": "macvlan", "host-local": "host-local", "static": "static"},
    "mp": {"bridge": "mp-bridge", "macvlan": "mp-macvlan", "host-local": "mp-host-local", "static": "mp-static"},
}


# ---------------------------------------------------------------- the plan (made in the root namespace)


def networks(names: Mapping[str, str], data_dir: str, uplink: str) -> list[tuple[str, dict[str, Any]]]:
    """(ifname, conflist) of the three attachments, in attachment order."""
    cluster = {"cniVersion": CNI_VERSION, "name": "bench-cluster", "plugins": [
        {"type": names["bridge"], "bridge": "mpbench0", "isGateway": True, "isDefaultGateway": True,
         "ipam": {"type": names["host-local"], "dataDir": data_dir, "ranges": [[{"subnet": "10.88.0.0/24"}]]}}]}
    mvlan_a = {"cniVersion": CNI_VERSION, "name": "mvlan-a", "plugins": [
        {"type": names["macvlan"], "master": uplink, "mode": "bridge",
         "ipam": {"type": names["host-local"], "dataDir": data_dir, "ranges": [[{"subnet": "192.168.77.0/24"}]]}}]}
    mvlan_b = {"cniVersion": CNI_VERSION, "name": "mvlan-b", "plugins": [
        {"type": names["macvlan"], "master": uplink, "mode": "bridge",
         "ipam": {"type": names["static"], "addresses": [{"address": "192.168.88.10/24"}]}}]}
    return [("eth0", cluster), ("net1", mvlan_a), ("net2", mvlan_b)]


def find_binary(plugin_type: str, paths: list[str]) -> str:
    for directory in paths:
        candidate = Path(directory) / plugin_type
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    raise SystemExit(f"plugin {plugin_type!r} not found in {':'.join(paths)}")


def thin_executable(work: Path, console_script: Path) -> str:
    """What `metaplug install --mode thin` puts on the host for this console script: the -I -S launcher
    (metaplug/launcher.py), or the console script itself when install would copy it unchanged."""
    from metaplug.launcher import write_launcher

    path = work / "bin" / "metaplug"
    path.parent.mkdir()
    return str(path) if write_launcher(str(console_script), str(path)) else str(console_script)


def make_plan(work: Path, pod: str, delegates: str, plugin_dir: str, pairs: int, warmup: int,
              api: bool = True) -> dict[str, Any]:
    """Write the NAD files and return everything the driver needs (JSON-serialisable)."""
    venv_bin = Path(sys.executable).parent
    bin_dir = str(venv_bin) if delegates == "mp" else plugin_dir
    cni_path = [bin_dir, plugin_dir] if delegates == "mp" else [plugin_dir]
    nets = networks(PLUGIN_NAMES[delegates], str(work / "ipam"), "uplink0")
    conf_dir = work / "net.d"
    (conf_dir / "default").mkdir(parents=True)
    nads = {}
    for _ifname, conflist in nets[1:]:
        nads[conflist["name"]] = json.dumps(conflist)
        nad = {"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
               "metadata": {"name": conflist["name"], "namespace": "default"},
               "spec": {"config": nads[conflist["name"]]}}
        (conf_dir / "default" / f"{conflist['name']}.json").write_text(json.dumps(nad))
    annotation = json.dumps([{"name": conflist["name"], "interface": ifname} for ifname, conflist in nets[1:]])
    metaplug_conf = {
        "cniVersion": CNI_VERSION, "name": "bench-metaplug", "type": "metaplug",
        "confDir": str(conf_dir), "stateDir": str(work / "state"), "binDir": bin_dir,
        "delegates": [nets[0][1]],
        "runtimeConfig": {ANNOTATION: {NETWORKS_KEY: annotation}},
    }
    # With the API: no pod annotations from the runtime (source 2: the pod from the API), NADs from the API too;
    # its own stateDir so that the variants never see each other's journals.
    api_conf = {key: value for key, value in metaplug_conf.items() if key != "runtimeConfig"}
    api_conf.update(stateDir=str(work / "state-api"), kubeconfig=str(work / "kube" / "config"))
    search = [bin_dir, *[p for p in cni_path if p != bin_dir]]
    direct = [{"ifname": ifname, "name": conflist["name"],
               "plugins": [{"path": find_binary(p["type"], search), "conf": p} for p in conflist["plugins"]]}
              for ifname, conflist in nets]
    return {
        "metaplug": thin_executable(work, venv_bin / "metaplug"), "console_script": str(venv_bin / "metaplug"),
        "metaplug_stdin": json.dumps(metaplug_conf),
        "api": {"stdin": json.dumps(api_conf), "kubeconfig": api_conf["kubeconfig"], "annotation": annotation,
                "nads": nads} if api else None,
        "direct": direct, "netns": netns_path(pod), "pod": pod, "cni_path": ":".join(cni_path),
        "base_env": {"PATH": f"{venv_bin}:{BASE_PATH}"}, "pairs": pairs, "warmup": warmup,
    }


# ---------------------------------------------------------------- the driver (inside the node namespace)


class CallFailed(RuntimeError):
    pass


def children_cpu_ns() -> int:
    """User + system CPU time of every finished descendant (a process's waited-for children count into its own)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return int((usage.ru_utime + usage.ru_stime) * 1e9)


def call(argv: list[str], env: Mapping[str, str], stdin: bytes) -> bytes:
    proc = subprocess.run(argv, input=stdin, env=dict(env), capture_output=True, timeout=120, check=False)
    if proc.returncode != 0:
        raise CallFailed(f"{argv[0]} {env.get('CNI_COMMAND')} {env.get('CNI_IFNAME')} exited {proc.returncode}: "
                         f"{proc.stdout.decode(errors='replace')} {proc.stderr.decode(errors='replace')}".strip())
    return proc.stdout


def cni_env(plan: Mapping[str, Any], verb: str, cid: str, ifname: str) -> dict[str, str]:
    return {**plan["base_env"], "CNI_COMMAND": verb, "CNI_CONTAINERID": cid, "CNI_NETNS": plan["netns"],
            "CNI_IFNAME": ifname, "CNI_ARGS": CNI_ARGS, "CNI_PATH": plan["cni_path"]}


def via_metaplug(plan: Mapping[str, Any], cid: str, stdin_text: str | None = None,
                 extra_env: Mapping[str, str] | None = None, executable: str | None = None) -> dict[str, int]:
    """One pod through metaplug: ADD, CHECK, DEL; nanoseconds per verb."""
    stdin = (stdin_text or plan["metaplug_stdin"]).encode()
    times: dict[str, int] = {}
    for verb in VERBS:
        t0, c0 = time.perf_counter_ns(), children_cpu_ns()
        out = call([executable or plan["metaplug"]], {**cni_env(plan, verb, cid, "eth0"), **(extra_env or {})}, stdin)
        times[verb] = time.perf_counter_ns() - t0
        times[f"{verb} cpu"] = children_cpu_ns() - c0
        if verb == "ADD" and len(json.loads(out).get("interfaces", [])) < 3:
            raise CallFailed(f"metaplug ADD result lacks interfaces: {out[:300]!r}")
    return times


def _delegate_stdin(network: Mapping[str, Any], conf: Mapping[str, Any], prev: Any) -> bytes:
    body = {**conf, "cniVersion": CNI_VERSION, "name": network["name"]}
    if prev is not None:
        body["prevResult"] = prev
    return json.dumps(body, separators=(",", ":")).encode()


def direct_add(plan: Mapping[str, Any], cid: str) -> dict[str, Any]:
    """ADD of the three lists as a runtime would make it itself: list after list, plugin after plugin, each getting
    the previous result. Returns each list's final result by ifname."""
    results: dict[str, Any] = {}
    for net in plan["direct"]:
        prev = None
        for plugin in net["plugins"]:
            prev = json.loads(call([plugin["path"]], cni_env(plan, "ADD", cid, net["ifname"]),
                                   _delegate_stdin(net, plugin["conf"], prev)))
        results[net["ifname"]] = prev
    return results


def direct_verb(plan: Mapping[str, Any], cid: str, verb: str, results: Mapping[str, Any]) -> None:
    """CHECK in order, or DEL with lists and plugins in reverse (cni.md 20), each with the final ADD result."""
    nets = plan["direct"] if verb == "CHECK" else list(reversed(plan["direct"]))
    for net in nets:
        plugins = net["plugins"] if verb == "CHECK" else list(reversed(net["plugins"]))
        for plugin in plugins:
            call([plugin["path"]], cni_env(plan, verb, cid, net["ifname"]),
                 _delegate_stdin(net, plugin["conf"], results[net["ifname"]]))


def direct(plan: Mapping[str, Any], cid: str) -> dict[str, int]:
    """The same delegate calls a runtime would make for the three lists itself; nanoseconds per verb."""
    times: dict[str, int] = {}
    t0, c0 = time.perf_counter_ns(), children_cpu_ns()
    results = direct_add(plan, cid)
    times["ADD"], times["ADD cpu"] = time.perf_counter_ns() - t0, children_cpu_ns() - c0
    for verb in ("CHECK", "DEL"):
        t0, c0 = time.perf_counter_ns(), children_cpu_ns()
        direct_verb(plan, cid, verb, results)
        times[verb], times[f"{verb} cpu"] = time.perf_counter_ns() - t0, children_cpu_ns() - c0
    return times


def start_kube_sim(plan: Mapping[str, Any]) -> Any:
    """The API simulator with the pod and both NADs, listening here (the node namespace's loopback); the kubeconfig
    written as `metaplug install` writes it (JSON, token and CA data inline)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository: tests/helpers
    from tests.helpers.kube_sim import KubeSim

    api = plan["api"]
    sim = KubeSim().start()
    sim.add_pod("default", "bench-pod", uid="bench-uid", annotations={NETWORKS_KEY: api["annotation"]})
    for name, config in api["nads"].items():
        sim.add_nad("default", name, config)
    sim.kubeconfig(api["kubeconfig"], mode="token", fmt="json")
    return sim


def drive(plan: Mapping[str, Any], sim: Any = None) -> dict[str, Any]:
    """Rotate the variants; after every pod the pod namespace must be empty again (lo only)."""
    variants: dict[str, Any] = {"direct": direct}

    def metaplug_variant(api: bool, extra_env: Mapping[str, str] | None) -> Any:
        stdin_text = plan["api"]["stdin"] if api else plan["metaplug_stdin"]
        executable = plan["console_script"] if extra_env else plan["metaplug"]

        def run(plan: Mapping[str, Any], cid: str) -> dict[str, int]:
            before = len(sim.requests) if api else 0
            times = via_metaplug(plan, cid, stdin_text, extra_env, executable)
            if api and len(sim.requests) == before:
                raise CallFailed("metaplug with a kubeconfig made no API request")
            return times

        return run

    # `metaplug`: what `metaplug install --mode thin` installs (the -I -S launcher). --baseline DIR: pip's console
    # script (what install copied before the launcher) importing the metaplug package found in DIR (PYTHONPATH comes
    # before site-packages), e.g. `git archive main | tar -x -C DIR`: before and after in one run, under the same load.
    flavours = [("metaplug", None)]
    if plan.get("baseline"):
        flavours.append(("baseline", {"PYTHONPATH": plan["baseline"]}))
    for label, extra_env in flavours:
        variants[label] = metaplug_variant(False, extra_env)
        if sim is not None:
            variants[f"{label}+api"] = metaplug_variant(True, extra_env)
    names = list(variants)
    samples: dict[str, list[dict[str, int]]] = {name: [] for name in names}
    for i in range(plan["warmup"] + plan["pairs"]):
        order = names[i % len(names):] + names[:i % len(names)]  # who goes first rotates
        for name in order:
            times = variants[name](plan, f"bench{i:04d}{names.index(name)}")  # a fresh container ID per pod
            left = [link for link in links(plan["pod"]) if link != "lo"]
            if left:
                raise CallFailed(f"{name} DEL left {left} in the pod")
            if i >= plan["warmup"]:
                samples[name].append(times)
    return samples


def driver_main(plan_file: str) -> int:
    plan = json.loads(Path(plan_file).read_text())
    sim = start_kube_sim(plan) if plan.get("api") else None
    try:
        samples = drive(plan, sim)
    except CallFailed as err:
        print(json.dumps({"error": str(err)}))
        return 1
    finally:
        if sim is not None:
            sim.stop()
    print(json.dumps({"samples": samples}))
    return 0


# ---------------------------------------------------------------- the report


def report(samples: Mapping[str, list[dict[str, int]]], delegates: str, pairs: int) -> dict[str, Any]:
    def stats(name: str, verbs: tuple[str, ...]) -> dict[str, float]:
        values = [sum(s[v] for v in verbs) / 1e6 for s in samples[name]]
        return {"median_ms": round(median(values), 1), "p90_ms": round(p90(values), 1)}

    variants = [name for name in samples if name != "direct"]
    rows: dict[str, Any] = {}
    for label, verbs in (("ADD", ("ADD",)), ("CHECK", ("CHECK",)), ("DEL", ("DEL",)), ("ADD+DEL", ("ADD", "DEL"))):
        dr = stats("direct", verbs)
        rows[label] = {"direct": dr}
        for name in variants:
            mp = stats(name, verbs)
            rows[label][name] = {**mp, "ratio": round(mp["median_ms"] / dr["median_ms"], 2)}
    ratios = {name: rows["ADD+DEL"][name]["ratio"] for name in variants}
    # CPU time (user + system of metaplug and every delegate): what the calls cost the node, much less sensitive to
    # the load of a shared machine than wall time. Informational; the budgets are on wall time.
    cpu = {"direct": stats("direct", ("ADD cpu", "DEL cpu"))["median_ms"]}
    cpu.update({name: stats(name, ("ADD cpu", "DEL cpu"))["median_ms"] for name in variants})
    cpu_ratios = {name: round(cpu[name] / cpu["direct"], 2) for name in variants}
    return {"delegates": delegates, "pairs": pairs, "python": platform.python_version(), "kernel": platform.release(),
            "cpus": os.cpu_count(), "rows": rows, "ratios": ratios,
            "cpu_add_del_ms": cpu, "cpu_ratios": cpu_ratios,
            "budgets": {n: BUDGETS[n] for n in variants if n in BUDGETS},
            "ok": all(ratios[n] <= BUDGETS[n] for n in variants if n in BUDGETS), "samples_ms": {
                name: [{v: round(s[v] / 1e6, 2) for v in VERBS} for s in runs] for name, runs in samples.items()}}


def markdown(rep: Mapping[str, Any]) -> str:
    variants = list(rep["ratios"])
    lines = [
        f"metaplug vs direct delegate calls: 1 pod, 3 attachments (bridge+host-local, macvlan+host-local, "
        f"macvlan+static), delegates: {rep['delegates']}, {rep['pairs']} rounds "
        f"(Python {rep['python']}, kernel {rep['kernel']}, {rep['cpus']} CPUs); medians (p90) in ms",
        "",
        "| verb | direct | " + " | ".join(f"{name} | ratio" for name in variants) + " |",
        "|---|---:|" + "---:|---:|" * len(variants),
    ]
    for label, row in rep["rows"].items():
        dr = row["direct"]
        cells = [f"{dr['median_ms']:.1f} ({dr['p90_ms']:.1f})"]
        for name in variants:
            mp = row[name]
            cells += [f"{mp['median_ms']:.1f} ({mp['p90_ms']:.1f})", f"{mp['ratio']:.2f}"]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    note = "" if rep["pairs"] >= 8 else " (fewer than 8 rounds: indicative only)"
    lines.append("")
    for name in variants:
        ratio, budget = rep["ratios"][name], rep["budgets"].get(name)
        verdict = f" (budget <= {budget:g}): {'PASS' if ratio <= budget else 'FAIL'}{note}" if budget else ""
        lines.append(f"- {name} ADD+DEL ratio {ratio:.2f}{verdict}; CPU time {rep['cpu_add_del_ms'][name]:.1f} ms vs "
                     f"{rep['cpu_add_del_ms']['direct']:.1f} ms direct: {rep['cpu_ratios'][name]:.2f}")
    return "\n".join(lines)


def run_driver(node: str, plan_file: Path, script: Path | None = None) -> dict[str, Any]:
    """Start the driver (`script --driver PLAN`, default this file) inside the node namespace, in its own session so
    that it can be stopped as a whole."""
    argv = ["ip", "netns", "exec", node, sys.executable, str(script or Path(__file__).resolve()), "--driver",
            str(plan_file)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        out, err = proc.communicate()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # our own driver's process group only
            proc.wait()
    try:
        data: dict[str, Any] = json.loads(out)
    except ValueError:
        raise SystemExit(f"driver failed ({proc.returncode}): {err.decode(errors='replace')}") from None
    if "error" in data:
        raise SystemExit(f"driver failed: {data['error']}")
    return data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--pairs", type=int, default=10, help="measured metaplug/direct pairs (default 10, use >= 8)")
    parser.add_argument("--warmup", type=int, default=1, help="unmeasured pairs first (default 1)")
    parser.add_argument("--delegates", choices=("reference", "mp"), default="reference",
                        help="reference plugins (default) or the bundled mp-* delegates")
    parser.add_argument("--plugin-dir", default="/usr/lib/cni", help="reference plugins (default /usr/lib/cni)")
    parser.add_argument("--no-api", action="store_true", help="leave out the variant with the Kubernetes API")
    parser.add_argument("--baseline", metavar="DIR",
                        help="also measure the metaplug package in DIR (e.g. `git archive main | tar -x -C DIR`)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON instead of markdown")
    parser.add_argument("--driver", metavar="PLAN", help=argparse.SUPPRESS)  # internal: runs inside the node
    opts = parser.parse_args(argv)
    if opts.driver:
        return driver_main(opts.driver)
    if opts.pairs < 1 or opts.warmup < 0:
        parser.error("--pairs must be >= 1 and --warmup >= 0")
    problem = need_root()
    if problem:
        print(f"overhead.py {problem}", file=sys.stderr)
        return 2
    if not (Path(sys.executable).parent / "metaplug").exists():
        print("no metaplug console script next to this interpreter; run with the venv's python", file=sys.stderr)
        return 2
    if opts.baseline and not (Path(opts.baseline) / "metaplug" / "__init__.py").is_file():
        print(f"--baseline {opts.baseline}: no metaplug package in it", file=sys.stderr)
        return 2
    if not opts.no_api and importlib.util.find_spec("cryptography") is None:
        print("the API variant needs `cryptography` (the test extra) for the simulator; or pass --no-api",
              file=sys.stderr)
        return 2
    try:
        with Sandbox() as box:
            node, pod = box.netns("node"), box.netns("pod")
            box.veth(node, "uplink0")
            plan = make_plan(box.tmp, pod, opts.delegates, opts.plugin_dir, opts.pairs, opts.warmup,
                             api=not opts.no_api)
            if opts.baseline:
                plan["baseline"] = str(Path(opts.baseline).resolve())
            plan_file = box.tmp / "plan.json"
            plan_file.write_text(json.dumps(plan))
            data = run_driver(node, plan_file)
    except KeyboardInterrupt:
        print("interrupted; namespaces and temp dir removed", file=sys.stderr)
        return 130
    rep = report(data["samples"], opts.delegates, opts.pairs)
    print(json.dumps(rep, indent=2) if opts.json else markdown(rep))
    return 0 if rep["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
