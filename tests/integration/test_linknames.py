"""metaplug.cni.linknames lists a pod namespace's interfaces from the node namespace over rtnetlink, without entering
it (the ADD hot path's cni.md 10 / R9 check, issue 10.7), and agrees with iproute2; when it cannot, the names are read
from inside the namespace as before."""

from __future__ import annotations

import json
import sys

import pytest

from metaplug import netns
from metaplug.cni import linknames
from metaplug.cni.errors import CniError
from tests.helpers.netns import REPO, Netns

LIST = ("import json, os, sys; sys.path.insert(0, sys.argv[1]); from metaplug.cni import linknames;"
        "fd = os.open(sys.argv[2], os.O_RDONLY); found = linknames.names(fd);"
        "print(json.dumps(sorted(found) if found is not None else None))")


def _listed_from(node: Netns, pod: Netns) -> list[str] | None:
    """linknames.names of `pod`, asked by a process in `node` (as thin metaplug runs there)."""
    return json.loads(node.exec([sys.executable, "-c", LIST, str(REPO), pod.path]).stdout)  # type: ignore[no-any-return]


def test_duty10_names_listed_from_outside_match_ip(node: Netns, pod: Netns) -> None:
    pod.ip("link", "add", "eth0", "type", "veth", "peer", "name", "net1")
    pod.ip("link", "add", "br-x", "type", "bridge")
    expected = sorted(link["ifname"] for link in pod.ip_json("link", "show"))
    assert expected == ["br-x", "eth0", "lo", "net1"]
    assert _listed_from(node, pod) == expected
    assert _listed_from(node, pod) == expected  # the namespace id is there now: asked again, the same answer


def test_names_of_a_dump_larger_than_one_message(node: Netns, pod: Netns) -> None:
    for i in range(60):
        pod.ip("link", "add", f"m{i}a", "type", "veth", "peer", "name", f"m{i}b")
    listed = _listed_from(node, pod)
    assert listed is not None and len(listed) == 121 and "m59b" in listed


def test_a_name_moved_in_from_the_node_is_seen(node: Netns, pod: Netns) -> None:
    """A veth whose peer the node holds (the kernel gave the pod namespace an id already): the same id is used."""
    node.ip("link", "add", "hostend", "type", "veth", "peer", "name", "podend")
    node.ip("link", "set", "podend", "netns", pod.name)
    assert _listed_from(node, pod) == ["lo", "podend"]


def test_fallback_reads_the_names_from_inside(pod: Netns, monkeypatch: pytest.MonkeyPatch) -> None:
    """A kernel that cannot list another namespace (None): interface_names enters it and reads /proc instead."""
    pod.ip("link", "add", "eth0", "type", "veth", "peer", "name", "eth1")
    monkeypatch.setattr(linknames, "names", lambda fd: None)
    assert netns.interface_names(pod.path) == {"lo", "eth0", "eth1"}


def test_not_a_namespace_is_code_4(tmp_path: object) -> None:
    with pytest.raises(CniError) as err:
        netns.interface_names("/dev/null")
    assert err.value.code == 4
