"""A real Podman (4.x, `network_backend = "cni"`) runs a container through metaplug (R30, cni.md 33, 36).

`podman run --ip ... --mac-address ...` sends `CNI_ARGS=IgnoreUnknown=1;...;IP=...;MAC=...`: the cluster network
(bridge + host-local) must get that address and MAC, the secondary macvlan NAD (host-local in another subnet) must
not. Podman runs inside the test's node namespace and a private mount namespace (its storage, run dir, netns mounts
and cgroup mount never reach the machine), on a rootfs made of busybox-static.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import pytest

from tests.helpers.metaplug_env import MetaplugWorld
from tests.helpers.netns import VENV_BIN

POD_IP = "10.79.0.250"
POD_MAC = "02:42:0a:4f:00:fa"

pytestmark = pytest.mark.skipif(shutil.which("podman") is None or not os.path.exists("/bin/busybox"),
                                reason="needs podman and busybox-static (.ci/setup installs them)")


def _rootfs(tmp: Path) -> Path:
    root = tmp / "rootfs"
    for d in ("bin", "proc", "sys", "dev", "etc", "tmp"):
        (root / d).mkdir(parents=True, exist_ok=True)
    shutil.copy("/bin/busybox", root / "bin" / "busybox")
    for applet in ("sh", "ip", "cat"):
        (root / "bin" / applet).symlink_to("busybox")
    return root


def _podman(world: MetaplugWorld, *args: str) -> tuple[int, str]:
    tmp = world.tmp
    conf = tmp / "containers.conf"
    conf.write_text(
        "[containers]\n"
        # the default limits (nofile/nproc 1048576) are above what this machine lets a process set
        'default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]\n'
        "[network]\n"
        'network_backend = "cni"\n'
        f'cni_plugin_dirs = ["{VENV_BIN}", "/usr/lib/cni"]\n'
        f'network_config_dir = "{tmp / "podman-net.d"}"\n'
        "[engine]\n"
        'cgroup_manager = "cgroupfs"\n'
        'events_logger = "file"\n')
    run_root = tempfile.mkdtemp(prefix="mpt-pm-")  # Podman refuses a runroot longer than 50 characters
    try:
        podman = " ".join(["podman", "--root", str(tmp / "storage"), "--runroot", run_root,
                           "--tmpdir", str(tmp / "ptmp"), *args])
        # Podman, crun and libcni write /run (crun state, netns mounts), /dev/shm (locks), /var/lib/cni (libcni's
        # result cache) and /var/tmp: all on tmpfs here, in a private mount namespace that dies with the process.
        # `ip netns exec` mounts a fresh /sys without cgroups, and crun insists on a cgroup filesystem there even
        # with --cgroups=disabled.
        private = " && ".join(f"mount -t tmpfs none {d}" for d in ("/run", "/dev/shm", "/var/lib", "/var/tmp"))
        script = (f"mount --make-rprivate / && {private} && mkdir /run/netns "
                  f"&& mount -t cgroup2 none /sys/fs/cgroup && exec {podman}")
        proc = world.node.exec(["unshare", "-m", "sh", "-c", script], check=False, timeout=180,
                               env={"PATH": f"{VENV_BIN}:/usr/sbin:/usr/bin:/sbin:/bin",
                                    "CONTAINERS_CONF": str(conf)})
    finally:
        shutil.rmtree(run_root, ignore_errors=True)
    return proc.returncode, proc.stdout.decode() + proc.stderr.decode()


def test_podman_ip_and_mac_reach_only_the_cluster_network(world: MetaplugWorld) -> None:
    world.add_nad("blue", world.macvlan_hostlocal_net("blue", "10.80.0.0/24"))
    own = world.metaplug_conf(world.bridge_net("podnet", "10.79.0.0/24", "mppod0", default_gw=True))
    own["args"] = {"cni": {"networks": "blue"}}  # no Kubernetes: the request is in the config (source 3)
    net_dir = world.tmp / "podman-net.d"
    net_dir.mkdir()
    (net_dir / "podnet.conflist").write_text(json.dumps(
        {"cniVersion": "1.0.0", "name": "podnet", "plugins": [own]}))
    rootfs = _rootfs(world.tmp)
    show = "ip -o -4 addr show; cat /sys/class/net/eth0/address /sys/class/net/net1/address"
    code, out = _podman(world, "run", "--rm", "--cgroups=disabled", "--network", "podnet", "--ip", POD_IP,
                        "--mac-address", POD_MAC, "--rootfs", str(rootfs), "/bin/sh", "-c", f"'{show}'")
    assert code == 0, out
    addrs = dict(re.findall(r"^\d+: (\S+)\s+inet (\S+)", out, re.M))
    assert addrs["eth0"] == f"{POD_IP}/24"
    assert addrs["net1"].startswith("10.80.0.")  # the macvlan's host-local was not asked for POD_IP
    macs = re.findall(r"^([0-9a-f]{2}(?::[0-9a-f]{2}){5})$", out, re.M)
    assert macs[0] == POD_MAC and macs[1] != POD_MAC
    # `--rm`: Podman tore the network down (metaplug DEL): nothing recorded, no address reserved
    assert world.state_files() == [] and world.reservations() == []
