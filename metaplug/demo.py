"""`metaplug demo`: the main job, end to end, on this machine (root needed).

It builds a throw-away "node" network namespace with a veth uplink and a "pod" namespace, then acts as the container
runtime: it calls metaplug (inside the node namespace, exactly as a runtime would: env + stdin) to attach
- the cluster network: a bridge with host-local IPAM, as eth0,
- "blue": a macvlan on the node's uplink with a static address requested by the pod annotation,
- "red": a second bridge network with host-local IPAM,
prints the merged CNI result, the network-status it recorded (which network each interface came from) and the pod's
addresses, runs CHECK and DEL, shows the pod is empty again, and removes everything it made, also when interrupted.
With `show_calls`, every CNI call to metaplug is printed with its exact environment and stdin, as a command line that
replays it by hand (with `keep`, the namespaces and files stay so the replay works). The project's own delegates
(mp-*) are used when installed next to metaplug, else the reference plugins in /usr/lib/cni or /opt/cni/bin.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

REFERENCE_DIRS = ("/usr/lib/cni", "/opt/cni/bin")


def _plugin_names(bin_dir: Path, reference: bool) -> dict[str, str]:
    own = {"bridge": "mp-bridge", "macvlan": "mp-macvlan", "host-local": "mp-host-local", "static": "mp-static"}
    if not reference and all((bin_dir / exe).exists() for exe in own.values()):
        return own
    return {k: k for k in own}


def _sh(*cmd: str, check: bool = True, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(cmd), check=check, text=True, capture_output=True, **kw)


def _networks(work: Path, names: dict[str, str], uplink: str) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    data_dir = str(work / "ipam")
    cluster = {
        "cniVersion": "1.0.0", "name": "demo-cluster",
        "plugins": [{"type": names["bridge"], "bridge": "mpdemo0", "isGateway": True, "isDefaultGateway": True,
                     "ipam": {"type": names["host-local"], "dataDir": data_dir,
                              "ranges": [[{"subnet": "10.88.0.0/24"}]]}}],
    }
    blue = {
        "cniVersion": "1.0.0", "name": "blue",
        "plugins": [{"type": names["macvlan"], "master": uplink, "mode": "bridge", "capabilities": {"ips": True},
                     "ipam": {"type": names["static"]}}],
    }
    red = {
        "cniVersion": "1.0.0", "name": "red",
        "plugins": [{"type": names["bridge"], "bridge": "mpdemo1", "isGateway": True,
                     "ipam": {"type": names["host-local"], "dataDir": data_dir,
                              "ranges": [[{"subnet": "10.99.0.0/24"}]]}}],
    }
    nads = {
        name: {"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
               "metadata": {"name": name, "namespace": "default"}, "spec": {"config": json.dumps(conf)}}
        for name, conf in (("blue", blue), ("red", red))
    }
    return cluster, nads


def _status_table(status: list[dict[str, Any]]) -> str:
    """The network-status entries (R17-R23): which network each interface of the pod came from."""
    lines = [f"{'INTERFACE':<10} {'NETWORK':<16} {'DEFAULT':<8} {'MAC':<18} IPS"]
    for entry in status:
        lines.append(f"{entry.get('interface', '?'):<10} {entry.get('name', '?'):<16} "
                     f"{str(entry.get('default', False)).lower():<8} {entry.get('mac', ''):<18} "
                     f"{', '.join(entry.get('ips', []))}")
    return "\n".join(lines)


def _replay(node: str, exe: str, env: dict[str, str], stdin_file: Path, stdin: str) -> str:
    """The exact call, as text a user can paste: its stdin, then `ip netns exec` with exactly its environment."""
    assignments = " \\\n    ".join(shlex.quote(f"{k}={v}") for k, v in env.items())
    return (f"# stdin ({stdin_file}):\n{stdin}\n"
            f"ip netns exec {shlex.quote(node)} env -i \\\n    {assignments} \\\n"
            f"    {shlex.quote(exe)} < {shlex.quote(str(stdin_file))}")


def run_demo(*, keep: bool = False, reference: bool = False, show_calls: bool = False) -> int:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        print("metaplug demo needs root and iproute2 (ip)", file=sys.stderr)
        return 2
    # The delegates installed beside metaplug (console scripts of the same environment).
    bin_dir = Path(sys.executable).parent
    metaplug_exe = shutil.which("metaplug", path=str(bin_dir)) or shutil.which("metaplug")
    if metaplug_exe is None:
        print("cannot find the metaplug executable", file=sys.stderr)
        return 2
    names = _plugin_names(bin_dir, reference)
    cni_path = ":".join([str(bin_dir), *REFERENCE_DIRS])
    tag = uuid.uuid4().hex[:6]
    node, pod = f"mpdemo-node-{tag}", f"mpdemo-pod-{tag}"
    work = Path(tempfile.mkdtemp(prefix="metaplug-demo-"))
    made: list[str] = []

    def cleanup() -> None:
        for ns in reversed(made):
            _sh("ip", "netns", "delete", ns, check=False)
        shutil.rmtree(work, ignore_errors=True)

    def interrupted(signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    old_term = signal.signal(signal.SIGTERM, interrupted)
    try:
        for ns in (node, pod):
            _sh("ip", "netns", "add", ns)
            made.append(ns)
            _sh("ip", "-n", ns, "link", "set", "lo", "up")
        _sh("ip", "-n", node, "link", "add", "uplink0", "type", "veth", "peer", "name", "uplink0p")
        _sh("ip", "-n", node, "link", "set", "uplink0", "up")
        _sh("ip", "-n", node, "link", "set", "uplink0p", "up")

        cluster, nads = _networks(work, names, "uplink0")
        conf_dir = work / "net.d"
        (conf_dir / "default").mkdir(parents=True)
        for name, nad in nads.items():
            (conf_dir / "default" / f"{name}.json").write_text(json.dumps(nad, indent=2))
        annotation = json.dumps([{"name": "blue", "interface": "blue0", "ips": ["192.168.77.10/24"]},
                                 {"name": "red"}])
        stdin = {
            "cniVersion": "1.0.0", "name": "metaplug-demo", "type": "metaplug",
            "confDir": str(conf_dir), "stateDir": str(work / "state"), "binDir": str(bin_dir),
            "delegates": [cluster], "logFile": str(work / "metaplug.log"), "logLevel": "debug",
            # What containerd sends for the io.kubernetes.cri.pod-annotations capability:
            "runtimeConfig": {"io.kubernetes.cri.pod-annotations": {"k8s.v1.cni.cncf.io/networks": annotation}},
        }
        print(f"# node namespace {node} (uplink0), pod namespace {pod}; delegates: {', '.join(names.values())}")
        print(f"# pod annotation k8s.v1.cni.cncf.io/networks: {annotation}\n")
        env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "CNI_CONTAINERID": f"demo{tag}",
               "CNI_NETNS": f"/var/run/netns/{pod}", "CNI_IFNAME": "eth0", "CNI_PATH": cni_path,
               "CNI_ARGS": f"IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=demo-{tag}"}

        calls_dir = work / "calls"
        calls_dir.mkdir()

        def call(verb: str) -> subprocess.CompletedProcess[str]:
            data, call_env = json.dumps(stdin), {**env, "CNI_COMMAND": verb}
            if show_calls:
                stdin_file = calls_dir / f"{verb.lower()}.json"
                stdin_file.write_text(data)
                print(f"== CNI call {verb}: exact environment and stdin (replay by hand; --keep keeps the files)")
                print(_replay(node, metaplug_exe, call_env, stdin_file, data) + "\n")
            return _sh("ip", "netns", "exec", node, metaplug_exe, check=False, input=data, env=call_env)

        add = call("ADD")
        if add.returncode != 0:
            print(f"ADD failed (exit {add.returncode}):\n{add.stdout}{add.stderr}", file=sys.stderr)
            call("DEL")
            return 1
        print("== ADD: the merged CNI result metaplug returned ==")
        print(json.dumps(json.loads(add.stdout), indent=2))
        journal_file = work / "state" / env["CNI_CONTAINERID"] / f"{stdin['name']}-{env['CNI_IFNAME']}.json"
        status = json.loads(journal_file.read_text())["body"].get("status", [])
        print("\n== network-status metaplug recorded (k8s.v1.cni.cncf.io/network-status: where each interface came "
              "from) ==")
        print(_status_table(status))
        print(f"\n== ip -br addr in the pod ({pod}) ==")
        print(_sh("ip", "-n", pod, "-br", "addr").stdout)
        print("== ip route in the pod ==")
        print(_sh("ip", "-n", pod, "route").stdout)
        check = call("CHECK")
        print(f"== CHECK: exit {check.returncode} {check.stdout.strip()}")
        delete = call("DEL")
        print(f"== DEL: exit {delete.returncode} {delete.stdout.strip()}")
        print(f"\n== ip -br addr in the pod after DEL ==\n{_sh('ip', '-n', pod, '-br', 'addr').stdout}")
        state_left = list((work / "state").rglob("*")) if (work / "state").exists() else []
        print(f"== state files left after DEL: {len(state_left)}")
        ok = check.returncode == 0 and delete.returncode == 0 and not state_left
        if keep:
            made.clear()
            print(f"kept: ip netns delete {node}; ip netns delete {pod}; rm -r {work}")
        return 0 if ok else 1
    except KeyboardInterrupt:
        print("interrupted; cleaning up", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, old_term)
        if not keep:
            cleanup()
