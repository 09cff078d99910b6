"""metaplug ADD / CHECK / DEL against real namespaces and the reference plugins (attachments.md R rules, cni.md)."""

from __future__ import annotations

import json

import pytest

from tests.helpers.metaplug_env import MetaplugWorld
from tests.helpers.netns import VENV_BIN, Netns, NetnsFactory

MP_PLUGINS = {"bridge": "mp-bridge", "macvlan": "mp-macvlan", "host-local": "mp-host-local", "static": "mp-static"}


def three_networks(world: MetaplugWorld) -> dict:
    world.add_nad("blue", world.macvlan_static_net("blue"))
    world.add_nad("red", world.bridge_net("red", "10.99.0.0/24", "mpred0"))
    cluster = world.bridge_net("cluster", "10.88.0.0/24", "mpcl0", default_gw=True)
    return world.annotated(world.metaplug_conf(cluster),
                           [{"name": "blue", "interface": "blue0", "ips": ["192.168.77.10/24"]}, {"name": "red"}])


@pytest.mark.parametrize("delegates", ["reference", "bundled"])
def test_add_check_del_three_networks_merged_result(world: MetaplugWorld, pod: Netns, delegates: str,
                                                    mode: str) -> None:
    """R24 order, BEYOND merged result (re-indexed ips), CHECK, DEL twice (cni.md 11), nothing left behind; with the
    Debian reference plugins and with the project's own mp-* delegates; in thin and in daemon mode."""
    if delegates == "bundled":
        if not (VENV_BIN / "mp-bridge").exists():
            pytest.skip("bundled delegates not installed")
        world.plugins = dict(MP_PLUGINS)
    conf = three_networks(world)
    add = world.call("ADD", conf, pod=pod)
    assert add.code == 0, add.stdout + add.stderr
    result = add.json
    assert result["cniVersion"] == "1.1.0"
    assert pod.addresses("eth0") == ["10.88.0.2/24"]
    assert pod.addresses("blue0") == ["192.168.77.10/24"]
    assert pod.addresses("net2") == ["10.99.0.2/24"]
    names = [i["name"] for i in result["interfaces"]]
    by_addr = {ip["address"]: names[ip["interface"]] for ip in result["ips"]}
    assert by_addr == {"10.88.0.2/24": "eth0", "192.168.77.10/24": "blue0", "10.99.0.2/24": "net2"}
    sandboxed = [i["name"] for i in result["interfaces"] if i.get("sandbox")]
    assert sandboxed == ["eth0", "blue0", "net2"]  # attachment order, cluster first (R24)
    for iface in result["interfaces"]:
        if iface.get("sandbox"):
            assert iface["sandbox"] == pod.path and iface["mac"] == pod.links()[iface["name"]]["address"]
    assert [r for r in result.get("routes", []) if r["dst"] == "0.0.0.0/0"] == [{"dst": "0.0.0.0/0", "gw": "10.88.0.1"}]

    check = world.call("CHECK", conf, pod=pod)
    assert check.code == 0 and check.stdout == "", check.stdout + check.stderr

    delete = world.call("DEL", conf, pod=pod)
    assert delete.code == 0 and delete.stdout == "", delete.stdout
    for ifname in ("eth0", "blue0", "net2"):
        assert not pod.has_link(ifname)
    assert world.reservations() == []
    assert world.state_files() == []
    again = world.call("DEL", conf, pod=pod)
    assert again.code == 0 and again.stdout == ""


def test_network_status_recorded_in_journal(world: MetaplugWorld, pod: Netns, mode: str) -> None:
    """R17-R23: one entry per sandbox interface, exactly one default, ips of that interface."""
    conf = three_networks(world)
    assert world.call("ADD", conf, pod=pod).code == 0
    journal = json.loads((world.state_dir / "c1" / "mp-eth0.json").read_text())["body"]
    status = journal["status"]
    assert [(s["name"], s["interface"], s["ips"], s["default"]) for s in status] == [
        ("cluster", "eth0", ["10.88.0.2"], True),
        ("default/blue", "blue0", ["192.168.77.10"], False),
        ("default/red", "net2", ["10.99.0.2"], False),
    ]
    assert all(s["mac"] == pod.links()[s["interface"]]["address"] for s in status)
    assert world.call("DEL", conf, pod=pod).code == 0


def test_check_fails_after_address_removed(world: MetaplugWorld, pod: Netns, mode: str) -> None:
    """cni.md 12: CHECK verifies every attachment still matches the recorded result."""
    conf = three_networks(world)
    assert world.call("ADD", conf, pod=pod).code == 0
    pod.ip("addr", "del", "192.168.77.10/24", "dev", "blue0")
    check = world.call("CHECK", conf, pod=pod)
    assert check.code != 0
    assert "192.168.77.10" in check.json["msg"] + check.json.get("details", "")
    assert world.call("DEL", conf, pod=pod).code == 0


def test_result_converted_to_request_version(world: MetaplugWorld, pod: Netns, mode: str) -> None:
    """cni.md 10/30: the merged result comes back in the request's cniVersion (0.4.0 adds ips[].version)."""
    conf = three_networks(world)
    conf["cniVersion"] = "0.4.0"
    add = world.call("ADD", conf, pod=pod)
    assert add.code == 0, add.stdout
    assert add.json["cniVersion"] == "0.4.0"
    assert {ip["version"] for ip in add.json["ips"]} == {"4"}
    assert world.call("DEL", conf, pod=pod).code == 0


def test_result_primary_restores_multus_behaviour(world: MetaplugWorld, pod: Netns) -> None:
    """BEYOND: `result: primary` returns only the cluster network's result."""
    conf = three_networks(world)
    conf["result"] = "primary"
    add = world.call("ADD", conf, pod=pod)
    assert add.code == 0, add.stdout
    assert [ip["address"] for ip in add.json["ips"]] == ["10.88.0.2/24"]
    assert pod.has_link("blue0")  # the secondaries are attached all the same
    assert world.call("DEL", conf, pod=pod).code == 0


def test_comma_form_via_cni_args_for_runtimes_without_annotations(world: MetaplugWorld, pod: Netns) -> None:
    """Source 3: CNI_ARGS METAPLUG_NETWORKS (Nomad/Podman); comma form with @ifname (R4)."""
    world.add_nad("red", world.bridge_net("red", "10.99.0.0/24", "mpred0"))
    conf = world.metaplug_conf(world.bridge_net("cluster", "10.88.0.0/24", "mpcl0"))
    args = "IgnoreUnknown=1;K8S_POD_NAME=web;METAPLUG_NETWORKS=default/red@red0,red"
    add = world.call("ADD", conf, pod=pod, args=args)
    assert add.code == 0, add.stdout
    assert pod.addresses("red0") == ["10.99.0.2/24"]
    assert pod.addresses("net2") == ["10.99.0.3/24"]  # R16: the same NAD twice gives two attachments
    assert world.call("DEL", conf, pod=pod, args="").code == 0  # Nomad sends no CNI_ARGS on DEL (cni.md 33)
    assert world.reservations() == []


def test_args_cni_networks_in_config(world: MetaplugWorld, pod: Netns) -> None:
    """Source 3: `args.cni.networks` in metaplug's config."""
    world.add_nad("red", world.bridge_net("red", "10.99.0.0/24", "mpred0"))
    conf = world.metaplug_conf(world.bridge_net("cluster", "10.88.0.0/24", "mpcl0"),
                               args={"cni": {"networks": "red"}})
    assert world.call("ADD", conf, pod=pod).code == 0
    assert pod.addresses("net1") == ["10.99.0.2/24"]
    assert world.call("DEL", conf, pod=pod).code == 0


def test_static_delegates_multus_style(world: MetaplugWorld, pod: Netns) -> None:
    """Static `delegates`: the ones after the first are net1, net2 of every pod."""
    conf = world.metaplug_conf(world.bridge_net("cluster", "10.88.0.0/24", "mpcl0"))
    conf["delegates"].append(world.bridge_net("second", "10.77.0.0/24", "mpsec0"))
    assert world.call("ADD", conf, pod=pod).code == 0
    assert pod.addresses("net1") == ["10.77.0.2/24"]
    assert world.call("DEL", conf, pod=pod).code == 0
    assert not pod.has_link("net1")


def test_r2_empty_nad_config_falls_back_to_conf_in_confdir(world: MetaplugWorld, pod: Netns) -> None:
    """R2: an empty spec.config uses the conf in confDir whose name is the NAD's name."""
    world.add_nad("red", None)
    (world.conf_dir / "20-red.conflist").write_text(json.dumps(world.bridge_net("red", "10.99.0.0/24", "mpred0")))
    conf = world.annotated(world.metaplug_conf(world.bridge_net("cluster", "10.88.0.0/24", "mpcl0")), "red")
    add = world.call("ADD", conf, pod=pod)
    assert add.code == 0, add.stdout
    assert pod.addresses("net1") == ["10.99.0.2/24"]
    assert world.call("DEL", conf, pod=pod).code == 0


def test_r3_nad_config_without_name_gets_nad_name(world: MetaplugWorld, pod: Netns) -> None:
    """R3: a spec.config without `name` gets the NAD's name (visible in the host-local data dir)."""
    net = world.bridge_net("ignored", "10.99.0.0/24", "mpred0")
    del net["name"]
    world.add_nad("nameless", net)
    conf = world.annotated(world.metaplug_conf(world.bridge_net("cluster", "10.88.0.0/24", "mpcl0")), "nameless")
    add = world.call("ADD", conf, pod=pod)
    assert add.code == 0, add.stdout
    assert "nameless/10.99.0.2" in world.reservations()
    assert world.call("DEL", conf, pod=pod).code == 0


def test_r13_default_route_moves_to_secondary(world: MetaplugWorld, pod: Netns) -> None:
    """R13: default-route moves the pod's default route to that attachment's gateway; status default flags follow."""
    world.add_nad("red", world.bridge_net("red", "10.99.0.0/24", "mpred0"))
    cluster = world.bridge_net("cluster", "10.88.0.0/24", "mpcl0", default_gw=True)
    conf = world.annotated(world.metaplug_conf(cluster), [{"name": "red", "default-route": ["10.99.0.1"]}])
    add = world.call("ADD", conf, pod=pod)
    assert add.code == 0, add.stdout + add.stderr
    defaults = [r for r in pod.routes() if r["dst"] == "default"]
    assert [(r["gateway"], r["dev"]) for r in defaults] == [("10.99.0.1", "net1")]
    result = add.json
    names = [i["name"] for i in result["interfaces"]]
    assert [r for r in result["routes"] if r["dst"] == "0.0.0.0/0"] == [{"dst": "0.0.0.0/0", "gw": "10.99.0.1"}]
    assert names  # merged result still lists all interfaces
    status = json.loads((world.state_dir / "c1" / "mp-eth0.json").read_text())["body"]["status"]
    assert [(s["interface"], s["default"]) for s in status] == [("eth0", False), ("net1", True)]
    assert world.call("DEL", conf, pod=pod).code == 0


def test_r24_default_networks_come_before_the_pods_networks(world: MetaplugWorld,
                                                            netns_factory: NetnsFactory) -> None:
    """R24: cluster network, then defaultNetworks (bare names resolve in networkNamespace), then the annotation's
    networks; pods in systemNamespaces get no defaultNetworks."""
    world.add_nad("mgmt", world.bridge_net("mgmt", "10.50.0.0/24", "mpmg0"), namespace="kube-system")
    world.add_nad("red", world.bridge_net("red", "10.99.0.0/24", "mpred0"))
    world.add_nad("red", world.bridge_net("red", "10.98.0.0/24", "mpred1"), namespace="kube-system")
    conf = world.annotated(world.metaplug_conf(world.bridge_net("cluster", "10.88.0.0/24", "mpcl0"),
                                               defaultNetworks=["mgmt"]), "red")
    pod = netns_factory.new("pod")
    add = world.call("ADD", conf, pod=pod)
    assert add.code == 0, add.stdout
    assert [i["name"] for i in add.json["interfaces"] if i.get("sandbox")] == ["eth0", "net1", "net2"]
    assert pod.addresses("net1") == ["10.50.0.2/24"] and pod.addresses("net2") == ["10.99.0.2/24"]
    assert world.call("DEL", conf, pod=pod).code == 0

    system_pod = netns_factory.new("pod")
    args = "IgnoreUnknown=1;K8S_POD_NAMESPACE=kube-system;K8S_POD_NAME=dns"
    add = world.call("ADD", conf, pod=system_pod, args=args, container_id="sys")
    assert add.code == 0, add.stdout
    assert [i["name"] for i in add.json["interfaces"] if i.get("sandbox")] == ["eth0", "net1"]
    assert system_pod.addresses("net1") == ["10.98.0.2/24"]  # the pod's own namespace's "red"
    assert world.call("DEL", conf, pod=system_pod, args=args, container_id="sys").code == 0


def test_duty10_prev_result_is_carried_forward(world: MetaplugWorld, pod: Netns) -> None:
    """cni.md 10: when metaplug runs inside a chain, its output carries the prevResult (in front, re-indexed)."""
    conf = world.metaplug_conf(world.bridge_net("cluster", "10.88.0.0/24", "mpcl0"))
    conf["prevResult"] = {"cniVersion": "1.1.0",
                          "interfaces": [{"name": "earlier0", "mac": "02:00:00:00:00:aa", "sandbox": pod.path}],
                          "ips": [{"address": "192.0.2.9/24", "interface": 0}],
                          "routes": [{"dst": "198.51.100.0/24", "gw": "192.0.2.1"}]}
    add = world.call("ADD", conf, pod=pod)
    assert add.code == 0, add.stdout
    result = add.json
    names = [i["name"] for i in result["interfaces"]]
    assert names[0] == "earlier0" and "eth0" in names
    assert {(names[ip["interface"]], ip["address"]) for ip in result["ips"]} == {
        ("earlier0", "192.0.2.9/24"), ("eth0", "10.88.0.2/24")}
    assert {"dst": "198.51.100.0/24", "gw": "192.0.2.1"} in result["routes"]
    assert world.call("DEL", conf, pod=pod).code == 0


def _imported(stderr: str) -> set[str]:
    """Module names from `-X importtime` lines (PYTHONPROFILEIMPORTTIME) on stderr."""
    return {line.rsplit("|", 1)[1].strip() for line in stderr.splitlines() if line.startswith("import time:")}


def test_thin_calls_import_budget(world: MetaplugWorld, pod: Netns) -> None:
    """Start-up budget (issue 10.7), measured on a real ADD, CHECK and DEL with delegates: no subprocess (delegates run
    through os.posix_spawn), no socket on ADD and DEL, no threading or logging on DEL (at the default log level), no
    httpx, pydantic or dataclasses; on ADD and DEL none of the modules that cost ~1-6 ms each (json, re, typing...)."""
    # the defaults (no logFile, level warning): a call that goes well emits no record, so never imports `logging`
    conf = {k: v for k, v in three_networks(world).items() if k not in ("logFile", "logLevel")}
    profile = {"PYTHONPROFILEIMPORTTIME": "1"}
    seen = {}
    for verb in ("ADD", "CHECK", "DEL"):
        call = world.call(verb, conf, pod=pod, mode="thin", extra_env=profile)
        assert call.code == 0, call.stdout + call.stderr
        seen[verb] = _imported(call.stderr)
        assert "metaplug.cni.invoke" in seen[verb], verb  # the profile was taken (delegates ran)
    never = {"subprocess", "httpx", "pydantic", "pydantic_core", "pyroute2", "dataclasses", "urllib.parse", "random"}
    for verb, modules in seen.items():
        assert not modules & never, (verb, sorted(modules & never))
    assert "socket" not in seen["ADD"] | seen["DEL"]
    assert not {"threading", "logging"} & seen["DEL"], sorted(seen["DEL"])
    # The third round (jsontext, lexical, runtime_typing, linknames): neither the json package nor re, typing or enum,
    # no ctypes or thread to look into the pod's namespace, no ipaddress or copy for results.
    heavy = {"json", "re", "typing", "enum", "ctypes", "threading", "queue", "ipaddress", "copy", "weakref"}
    for verb in ("ADD", "DEL"):
        assert not seen[verb] & heavy, (verb, sorted(seen[verb] & heavy))
