"""The DaemonSet image for real (issue 14): built by scripts/build-image from the Containerfile, its containers run
exactly as configs/kubernetes says (commands, env, mounts, security contexts, host network and PID namespaces: all
read from the YAML, so the manifests cannot drift from what ran here), by two engines: Podman, and a private
containerd that imports the OCI archive with `ctr image import` and runs the containers with `ctr run`
(tests/helpers/containerd.py).

The "node" (tests/helpers/image_node.py) is a private mount namespace holding a temp host tree at the DaemonSet's
hostPath paths; every engine and container runs in it and in the test's node network namespace (hostNetwork), never
the machine's. The Kubernetes API is the simulator, listening in that node namespace. The install container puts the
static shim and the conflist into the host tree; a libcni-style runtime on the host (metaplug.cni.tool, outside
every container) drives ADD, CHECK and DEL of a pod with three attachments through the installed shim to the daemon
container; the uninstall DaemonSet's container leaves the host tree as it was before install. Containers, the image
stores, containerd, the mounts and the namespaces are removed even when the test fails (by container ID and process
ID). The registry path of the build script (FROM docker.io's bases, which cannot be pulled here) runs with stand-ins
under the public names that, like python:3.11-slim-bookworm, lack iptables.
"""

from __future__ import annotations

import json
import shutil
import stat
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import yaml

from metaplug import __version__
from metaplug import install as inst
from metaplug.executable import host_problem
from metaplug.netns import run_in_netns
from tests.helpers.containerd import ContainerdEngine
from tests.helpers.image_node import (
    NETNS_DIRS,
    BuiltImage,
    ContainerEngine,
    NodeHost,
    PodmanEngine,
    container,
    host_paths,
    http_get,
    kubelet_container,
    manifests,
    pod_spec,
    wait_for,
)
from tests.helpers.kube_sim import KubeSim
from tests.helpers.netns import REPO, VENV_BIN, Netns, NetnsFactory, is_root

BUILD_SCRIPT = REPO / "scripts" / "build-image"
REFERENCE = Path("/usr/lib/cni")
NEEDED = ("podman", "runc", "mmdebstrap", "unshare", "nsenter")
CONTAINERD = ("containerd", "ctr", "containerd-shim-runc-v2")

pytestmark = pytest.mark.skipif(
    not is_root() or any(shutil.which(t) is None for t in NEEDED) or not (REFERENCE / "bridge").exists(),
    reason=f"needs root, {', '.join(NEEDED)} and the reference CNI plugins (bash .ci/setup installs them)")
needs_containerd = pytest.mark.skipif(any(shutil.which(t) is None for t in CONTAINERD),
                                      reason=f"needs {', '.join(CONTAINERD)} (bash .ci/setup installs containerd)")


# ---------------------------------------------------------------- the image


def build_image(out: Path, *args: str) -> tuple[BuiltImage, str]:
    """scripts/build-image --output `out` `args`; the image and the script's log."""
    started = time.monotonic()
    proc = subprocess.run([str(BUILD_SCRIPT), "--output", str(out), "--python", str(VENV_BIN / "python"), *args],
                          capture_output=True, timeout=1200, cwd=REPO)
    assert proc.returncode == 0, proc.stderr.decode()[-6000:]
    info = dict(line.split("=", 1) for line in proc.stdout.decode().split())
    built = BuiltImage(info["image"], int(info["size"]), Path(info["archive"]), time.monotonic() - started)
    return built, proc.stderr.decode()


@pytest.fixture(scope="session")
def image(tmp_path_factory: pytest.TempPathFactory) -> BuiltImage:
    """scripts/build-image, once per test session (about 1-2 minutes here: two mmdebstrap bases, a vfs build)."""
    return build_image(tmp_path_factory.mktemp("image") / "metaplug.oci.tar")[0]


# The registry path (--base registry) FROM stand-ins for docker.io's bases, made here like the local ones but named
# as the public images, and like python:3.11-slim-bookworm without iptables: the script must fetch iptables and what
# it needs outside the build, and the Containerfile install them with dpkg (README "The image").
REGISTRY_BASES = {"docker.io/library/python:3.11-slim-bookworm": "usr-is-merged,python3-minimal,libpython3-stdlib",
                  "docker.io/library/gcc:12-bookworm": "usr-is-merged,gcc,libc6-dev"}


class RegistryPathImage(NamedTuple):
    image: BuiltImage
    log: str


@pytest.fixture(scope="session")
def registry_path_image(tmp_path_factory: pytest.TempPathFactory) -> RegistryPathImage:
    """scripts/build-image --base registry with the stand-in bases as --base-rootfs (about 1-2 minutes here)."""
    if Path("/etc/os-release").read_text().find("VERSION_CODENAME=bookworm") < 0:
        pytest.skip("the stand-ins for docker.io's bookworm bases are made from this machine's Debian: needs bookworm")
    tmp = tmp_path_factory.mktemp("registry-path")
    trim = [f"--dpkgopt=path-exclude=/usr/share/{d}/*" for d in ("doc", "man", "locale", "info")]
    procs = {name: subprocess.Popen(
        ["mmdebstrap", "--quiet", "--variant=essential", f"--include={packages}",
         "--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr", *trim, "bookworm", str(tmp / f"{i}.tar")],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for i, (name, packages) in enumerate(REGISTRY_BASES.items())}
    for name, proc in procs.items():
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, f"mmdebstrap of the stand-in for {name}: {err.decode()[-3000:]}"
    rootfs = [a for i, name in enumerate(REGISTRY_BASES) for a in ("--base-rootfs", f"{name}={tmp / f'{i}.tar'}")]
    built, log = build_image(tmp / "metaplug.oci.tar", "--base", "registry", *rootfs)
    for i in range(len(REGISTRY_BASES)):
        (tmp / f"{i}.tar").unlink()
    return RegistryPathImage(built, log)


@pytest.fixture
def node_host(tmp_path: Path, node: Netns) -> Iterator[NodeHost]:
    m = manifests()
    paths = sorted({p for ds in (m.daemonset, m.uninstall) for p in host_paths(pod_spec(ds))} - set(NETNS_DIRS))
    h = NodeHost(tmp_path, node, paths)
    try:
        yield h.start()
    finally:
        h.close()
    assert not h.cgroups_left, f"cgroups left behind: {h.cgroups_left}"


@pytest.fixture
def podman(node_host: NodeHost, image: BuiltImage) -> Iterator[PodmanEngine]:
    engine = PodmanEngine(node_host)
    try:
        engine.load(image.archive)
        yield engine
    finally:
        engine.close()


@pytest.fixture
def containerd(node_host: NodeHost, image: BuiltImage) -> Iterator[ContainerdEngine]:
    engine = ContainerdEngine(node_host)
    try:
        engine.start_daemon()
        yield engine
    finally:
        engine.close()


@pytest.fixture(params=["podman", pytest.param("containerd", marks=needs_containerd)])
def engine(request: pytest.FixtureRequest, image: BuiltImage) -> ContainerEngine:
    """Each engine with the image loaded (`podman load`, `ctr image import`)."""
    if request.param == "podman":
        return request.getfixturevalue("podman")  # type: ignore[no-any-return]
    ctr: ContainerdEngine = request.getfixturevalue("containerd")
    ctr.load(image.archive)
    return ctr


# ---------------------------------------------------------------- the tests


def test_the_image_is_small_labelled_and_named_as_the_manifests_say(image: BuiltImage, podman: PodmanEngine) -> None:
    print(f"\nimage {image.tag}: {image.size / 1e6:.1f} MB, built in {image.seconds:.0f} s")
    assert image.size < 150e6, f"{image.size / 1e6:.1f} MB"
    m = manifests()
    for ds in (m.daemonset, m.uninstall):
        for c in pod_spec(ds)["containers"] + pod_spec(ds).get("initContainers", []):
            if c["image"].startswith("registry.k8s.io/pause:"):
                continue  # the uninstall DaemonSet's idle container
            assert c["image"] == image.tag == f"ghcr.io/metaplug/metaplug:{__version__}"
    info = json.loads(podman.podman("image", "inspect", image.tag))[0]
    labels = info["Config"]["Labels"]
    assert labels["org.opencontainers.image.version"] == __version__
    assert labels["org.opencontainers.image.source"].startswith("https://")
    assert info["Config"]["User"] == "65532:65532"  # root only where a manifest asks for it
    # no compiler, pip, wheels or package caches in the final image; the shim where install looks for it
    probe = ("for x in gcc cc pip pip3 apt-get; do command -v $x; done; "
             "ls /wheels /root/.cache /var/cache/apt/archives/*.deb 2>/dev/null; "
             "ls /opt/metaplug/lib/python3*/site-packages | grep -i '^pip' ; id -u; "
             f"test -x {inst.IMAGE_SHIM} && echo shim; "
             # ipMasq / portmap delegates run in the daemon's container
             "command -v iptables >/dev/null && echo iptables")
    out = podman.podman("run", "--rm", *podman.runtime, "--network", "none", image.tag, "sh", "-c", probe)
    assert out.split() == ["65532", "shim", "iptables"], out


@needs_containerd
def test_ctr_imports_the_archive_under_the_manifests_name(image: BuiltImage, containerd: ContainerdEngine) -> None:
    """`ctr -n k8s.io image import` (README "The image") names the image exactly as the DaemonSet does, so the
    kubelet finds it without a pull (imagePullPolicy IfNotPresent, the default for a tag that is not :latest)."""
    daemon_c = container(pod_spec(manifests().daemonset), "daemon")
    assert daemon_c.get("imagePullPolicy", "IfNotPresent") == "IfNotPresent"
    assert containerd.load(image.archive) == [image.tag] == [daemon_c["image"]]
    config = containerd.image_config(image.tag)
    assert config["config"]["Labels"]["org.opencontainers.image.version"] == __version__
    assert config["config"]["User"] == "65532:65532"


def test_the_registry_path_installs_iptables_into_a_base_that_lacks_it(registry_path_image: RegistryPathImage,
                                                                       node_host: NodeHost, node: Netns) -> None:
    """--base registry FROM a slim-like base without iptables (a stand-in under the public name, see
    REGISTRY_BASES): the script fetched iptables and its libraries (only what the base lacks) outside the build,
    dpkg installed them in the build, and the image has a working iptables and nothing of the .deb files."""
    built, log = registry_path_image
    fetched = log.split("lacks iptables: ", 1)[1].split(" fetched", 1)[0].split()
    assert "iptables" in fetched and "libxtables12" in fetched, log
    assert "libc6" not in fetched and "python3-minimal" not in fetched  # the base has them
    print(f"\nregistry path (stand-in bases): {built.size / 1e6:.1f} MB, built in {built.seconds:.0f} s")
    podman = PodmanEngine(node_host)
    try:
        assert podman.load(built.archive) == [built.tag]
        probe = ("ls /debs /var/cache/apt/archives/*.deb 2>/dev/null; command -v apt-get; id -u; "
                 "dpkg-query -W -f '${db:Status-Status}\\n' " + " ".join(fetched) + " | sort -u; "
                 "metaplug version >/dev/null && echo metaplug; "
                 f"test -x {inst.IMAGE_SHIM} && echo shim")
        out = podman.podman("run", "--rm", *podman.runtime, "--network", "none", built.tag, "sh", "-c", probe)
        assert out.split() == ["65532", "installed", "metaplug", "shim"], out
        # iptables reads the node's (the test's namespace's) tables through the kernel: the binary and its
        # libraries work, as the daemon's delegates (bandwidth, portmap, ipMasq) need them
        out = podman.podman("run", "--rm", *podman.runtime, "--network", f"ns:{node.path}", "--privileged",
                            "--user", "0", built.tag, "sh", "-c", "iptables --version && iptables -w 5 -S")
        assert "iptables v" in out and "-P INPUT ACCEPT" in out, out
    finally:
        podman.close()


def test_install_daemon_and_uninstall_containers_on_a_node(engine: ContainerEngine, node_host: NodeHost, node: Netns,
                                                           netns_factory: NetnsFactory, tmp_path: Path) -> None:
    m = manifests()
    spec, un_spec = pod_spec(m.daemonset), pod_spec(m.uninstall)
    daemon_c, install_c = container(spec, "daemon"), container(spec, "install")
    h = node_host
    netns_factory.veth_uplink(node, "uplink0")

    # the node before metaplug: the cluster network's plugins and conflist (host-local keeps its reservations in
    # /var/lib/cni/networks, its default), the kubelet's hostPath directories
    bin_dir, conf_dir = h.host("/opt/cni/bin"), h.host("/etc/cni/net.d")
    for plugin in ("bridge", "host-local", "macvlan"):
        shutil.copy2(REFERENCE / plugin, bin_dir / plugin)  # copies: a link to /usr/lib/cni is not in the container
    cluster = {"cniVersion": "1.0.0", "name": "podnet", "plugins": [
        {"type": "bridge", "bridge": "mpimg0", "isGateway": True, "isDefaultGateway": True,
         "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.61.0.0/24"}]]}}]}
    (conf_dir / "10-podnet.conflist").write_text(json.dumps(cluster))
    configmaps = {}
    for cm_name, data in m.configmaps.items():
        d = tmp_path / "configmaps" / cm_name
        d.mkdir(parents=True)
        for key, value in data.items():
            (d / key).write_text(value)
        configmaps[cm_name] = d
    ipam_dir = "/var/lib/cni/networks"
    before = h.listing(skip=[ipam_dir])

    sim = KubeSim()
    run_in_netns(node.path, sim.start)  # the API server, reachable from the node's network namespace
    try:
        nad = {"blue": {"cniVersion": "1.0.0", "name": "blue", "type": "macvlan", "master": "uplink0",
                        "mode": "bridge", "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.62.0.0/24"}]]}},
               "red": {"cniVersion": "1.0.0", "name": "red", "type": "bridge", "bridge": "mpimg1",
                       "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.63.0.0/24"}]]}}}
        for name, conf in nad.items():
            sim.add_nad("default", name, json.dumps(conf))
        web = sim.add_pod("default", "web", {"k8s.v1.cni.cncf.io/networks": "blue,red"})
        service_account = (tmp_path / "sa", sim.service_account(tmp_path / "sa"))

        # the DaemonSet's pod: the daemon, then install (which waits for the daemon's /readyz itself)
        def start(pod: dict[str, Any], c: dict[str, Any], sa: tuple[Path, dict[str, str]] | None) -> str:
            kc = kubelet_container(pod, c, configmaps=configmaps, service_account=sa)
            return engine.start(f"mpt-{c['name']}-{uuid.uuid4().hex[:8]}", kc)

        daemon_id = start(spec, daemon_c, service_account)

        def daemon_log() -> str:
            return engine.logs(daemon_id)

        ready = daemon_c["readinessProbe"]["httpGet"]
        wait_for("the daemon's readiness probe", lambda: http_get(node, ready["host"], ready["port"],
                                                                  ready["path"]) == 200, 60, daemon_log)
        live = daemon_c["livenessProbe"]["httpGet"]
        assert http_get(node, live["host"], live["port"], live["path"]) == 200
        install_id = start(spec, install_c, service_account)
        conflist_path = conf_dir / inst.CONFLIST_NAME
        wait_for("the install container's conflist", conflist_path.exists, 60,
                 lambda: engine.logs(install_id))

        # the host holds the static shim (from the image) and a conflist naming it
        shim = bin_dir / inst.SHIM_NAME
        assert host_problem(str(shim), static_only=True) is None
        assert stat.S_IMODE(shim.stat().st_mode) == 0o755
        conflist = json.loads(conflist_path.read_text())
        (entry,) = conflist["plugins"]
        cfg = json.loads(next(iter(m.configmaps.values()))["daemon.json"])
        assert entry["type"] == inst.SHIM_NAME and entry["socketPath"] == cfg["socketPath"]
        assert entry["clusterNetwork"] == "/etc/cni/net.d/10-podnet.conflist"
        kubeconfig = yaml.safe_load(h.host(entry["kubeconfig"]).read_text())
        assert kubeconfig["clusters"][0]["cluster"]["server"] == sim.server

        # a libcni runtime on the node (outside every container) runs the pod's networks through the shim
        pod = netns_factory.new("pod")  # made after the daemon started: seen through HostToContainer
        cid = uuid.uuid4().hex
        runtime_env = {"PATH": f"{VENV_BIN}:/usr/sbin:/usr/bin:/sbin:/bin"}

        def cni(verb: str) -> subprocess.CompletedProcess[bytes]:
            return h.run([str(VENV_BIN / "python"), "-m", "metaplug.cni.tool", verb, "/etc/cni/net.d/" +
                          inst.CONFLIST_NAME, pod.path, "--container-id", cid, "--path", "/opt/cni/bin",
                          "--cache-dir", str(tmp_path / "libcni-cache"), "--args",
                          f"IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web;"
                          f"K8S_POD_INFRA_CONTAINER_ID={cid};K8S_POD_UID={web['metadata']['uid']}"],
                         env=runtime_env)

        add = cni("add")
        assert add.returncode == 0, add.stdout.decode() + add.stderr.decode() + daemon_log()
        result = json.loads(add.stdout)
        assert [i["name"] for i in result["interfaces"] if i.get("sandbox")] == ["eth0", "net1", "net2"]
        assert pod.addresses("eth0") == ["10.61.0.2/24"]
        assert pod.addresses("net1") == ["10.62.0.2/24"] and pod.addresses("net2") == ["10.63.0.2/24"]
        status = json.loads(sim.annotations("default", "web")["k8s.v1.cni.cncf.io/network-status"])
        assert [s["name"] for s in status] == ["podnet", "default/blue", "default/red"]
        check = cni("check")
        assert check.returncode == 0, check.stdout.decode() + check.stderr.decode()
        delete = cni("del")
        assert delete.returncode == 0, delete.stdout.decode() + delete.stderr.decode()
        assert set(pod.links()) == {"lo"}
        reservations = [p for p in h.host(ipam_dir).rglob("*") if p.name[0].isdigit() and p.name != "lock"]
        assert reservations == [] and [p for p in h.host(cfg["stateDir"]).rglob("*") if not p.is_dir()] == []
    finally:
        sim.stop()

    # kubectl delete ds metaplug: both containers get SIGTERM and terminationGracePeriodSeconds
    grace = int(spec["terminationGracePeriodSeconds"])
    codes = [engine.stop(cid_, grace) for cid_ in (install_id, daemon_id)]
    assert codes[1] == 0, daemon_log()
    assert '"exception"' not in daemon_log() and "Traceback" not in daemon_log(), daemon_log()

    # configs/kubernetes/uninstall/: its init container puts the node back as it was
    uninstall_id = start(un_spec, container(un_spec, "uninstall"), None)
    code = engine.wait(uninstall_id, timeout=120)
    logs = engine.logs(uninstall_id)
    assert code == 0, logs
    assert "removed /etc/cni/net.d/00-metaplug.conflist" in logs, logs
    assert h.listing(skip=[ipam_dir]) == before, logs
