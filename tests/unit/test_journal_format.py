"""The journal's on-disk shape is a contract (DESIGN.md: change it only with a version field and a reader for the old
shape): a version 1 journal written by metaplug 0.1.0 before the records were typed still reads, drives DEL/CHECK the
same way, and is written back byte for byte."""

from __future__ import annotations

from pathlib import Path

from metaplug import journal

# Written by `journal.write` of commit 8120e5e (before the records were TypedDicts), unchanged.
V1_JOURNAL = (
    '{"checksum":"97dcfe426ef38ccd603f2af7a5a914880ca043a529cab706314e9ae31492daed","body":{"containerId":"c1",'
    '"ifname":"eth0","network":"meta","netns":"/var/run/netns/p1",'
    '"cniArgs":"IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web","paths":["/opt/cni/bin"],"timeout":60.0,'
    '"requestVersion":"1.0.0","pod":{"namespace":"default","name":"web","uid":null},"attachments":[{"ifname":"eth0",'
    '"network":"cluster","cluster":true,"defaultRoute":[],'
    '"conflist":"{\\"cniVersion\\":\\"1.0.0\\",\\"name\\":\\"cluster\\",\\"plugins\\":[{\\"type\\":\\"bridge\\"}]}",'
    '"capabilityArgs":{"mac":"aa:bb:cc:dd:ee:ff"},"state":"added","result":{"cniVersion":"1.0.0",'
    '"interfaces":[{"name":"eth0","sandbox":"/var/run/netns/p1"}],"ips":[{"address":"10.1.0.2/24","interface":0}]}},'
    '{"ifname":"net1","network":"default/blue","cluster":false,"defaultRoute":["10.2.0.1"],'
    '"conflist":"{\\"cniVersion\\":\\"1.0.0\\",\\"name\\":\\"blue\\",\\"plugins\\":[{\\"type\\":\\"macvlan\\"}]}",'
    '"capabilityArgs":{},"state":"adding","result":null}],"version":1}}'
)


def test_a_version_1_journal_reads_and_is_written_back_unchanged(tmp_path: Path) -> None:
    key = journal.JournalKey(str(tmp_path), "c1", "meta", "eth0")
    Path(key.container_dir).mkdir()
    Path(key.path).write_text(V1_JOURNAL)
    body = journal.read(key)
    assert body is not None
    assert body["network"] == "meta" and [a["state"] for a in body["attachments"]] == ["added", "adding"]
    journal.write(key, body)
    assert Path(key.path).read_text() == V1_JOURNAL


def test_the_runtime_view_of_a_recorded_attachment() -> None:
    body = journal.decode("v1.json", V1_JOURNAL.encode())
    rt = journal.runtime_conf(body, body["attachments"][0], "/var/run/netns/p1")
    assert (rt.container_id, rt.netns, rt.ifname) == ("c1", "/var/run/netns/p1", "eth0")
    assert rt.args == [("IgnoreUnknown", "1"), ("K8S_POD_NAMESPACE", "default"), ("K8S_POD_NAME", "web")]
    assert rt.capability_args == {"mac": "aa:bb:cc:dd:ee:ff"}
    assert journal.runtime_conf(body, body["attachments"][1], "").capability_args == {}
