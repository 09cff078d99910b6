"""metaplug.rtnl (the stdlib rtnetlink reader used by CHECK) agrees with iproute2 on links, MACs and addresses."""

from __future__ import annotations

from metaplug import rtnl
from metaplug.netns import inspect_interfaces, run_in_netns
from tests.helpers.netns import Netns


def test_rtnl_matches_ip_command(pod: Netns) -> None:
    pod.ip("link", "add", "va", "type", "veth", "peer", "name", "vb")
    pod.ip("link", "set", "va", "address", "02:aa:bb:cc:dd:01")
    pod.ip("addr", "add", "10.7.7.7/24", "dev", "va")
    pod.ip("addr", "add", "10.7.8.7/16", "dev", "va")
    pod.ip("addr", "add", "fd00:7::7/64", "dev", "va", "nodad")
    pod.ip("addr", "add", "10.9.9.1", "peer", "10.9.9.2", "dev", "vb")  # point-to-point: IFA_LOCAL is ours
    seen = inspect_interfaces(pod.path)
    expected = {link["ifname"]: link for link in pod.ip_json("addr", "show")}
    assert set(seen) == set(expected) == {"lo", "va", "vb"}
    for name, link in expected.items():
        assert seen[name]["mac"] == link["address"]
        assert seen[name]["index"] == link["ifindex"]
        assert seen[name]["addresses"] == {f"{a['local']}/{a['prefixlen']}" for a in link.get("addr_info", [])}
    assert "10.9.9.1/32" in seen["vb"]["addresses"]
    assert {"10.7.7.7/24", "10.7.8.7/16", "fd00:7::7/64"} <= seen["va"]["addresses"]


def test_rtnl_lists_many_links_across_several_messages(pod: Netns) -> None:
    """A dump larger than one recv() buffer is read to NLMSG_DONE."""
    for i in range(60):
        pod.ip("link", "add", f"m{i}a", "type", "veth", "peer", "name", f"m{i}b")
    names = run_in_netns(pod.path, lambda: {name for name, _ in rtnl.links().values()})
    assert len(names) == 121
