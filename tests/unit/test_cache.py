"""cache.py: libcni-compatible result cache (cni.md duty 35); reading never raises (duty 20)."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest

from metaplug.cni import cache
from metaplug.cni.chain import RuntimeConf
from metaplug.cni.errors import IO_FAILURE, CniError

RESULT = {"cniVersion": "1.0.0", "ips": [{"address": "10.1.1.2/24", "interface": 0}]}


def test_duty35_entry_layout_with_list_bytes(tmp_path: Path) -> None:
    raw = b'{"cniVersion":"1.0.0","name":"net","plugins":[{"type":"bridge"}]}'
    rt = RuntimeConf("c1", "", "net1")
    path = cache.write_cache(str(tmp_path), raw, rt, RESULT)
    assert path == str(tmp_path / "results" / "net-c1-net1")
    entry = json.loads(Path(path).read_bytes())
    assert entry == {"kind": "cniCacheV1", "containerId": "c1", "config": base64.b64encode(raw).decode(),
                     "ifName": "net1", "networkName": "net", "result": RESULT}  # empty netns/args/caps omitted
    assert cache.read_cache(str(tmp_path), "net", "c1", "net1") == RESULT
    assert cache.entry_config(cache.read_cache_entry(str(tmp_path), "net", "c1", "net1") or {}) == raw


def test_duty35_rewrite_replaces_atomically(tmp_path: Path) -> None:
    rt = RuntimeConf("c1", "/n", "eth0")
    conf = {"name": "net", "plugins": []}
    cache.write_cache(str(tmp_path), conf, rt, RESULT)
    cache.write_cache(str(tmp_path), conf, rt, {"cniVersion": "1.0.0"})
    assert cache.read_cache(str(tmp_path), "net", "c1", "eth0") == {"cniVersion": "1.0.0"}
    assert os.listdir(tmp_path / "results") == ["net-c1-eth0"]


@pytest.mark.parametrize("content", [b"", b"{", b"[]", b'{"kind": "other", "result": {}}',
                                     b'{"kind": "cniCacheV1", "result": "x"}', b"\xff\xfe"])
def test_duty20_corrupt_entry_reads_as_none(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "net-c1-eth0").write_bytes(content)
    assert cache.read_cache(str(tmp_path), "net", "c1", "eth0") is None
    assert cache.list_cache(str(tmp_path)) == []


def test_legacy_entry_is_the_bare_result(tmp_path: Path) -> None:
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "net-c1-eth0").write_text(json.dumps(RESULT))
    assert cache.read_cache(str(tmp_path), "net", "c1", "eth0") == RESULT


def test_read_and_delete_never_raise(tmp_path: Path) -> None:
    assert cache.read_cache(str(tmp_path / "absent"), "net", "c1", "eth0") is None
    assert cache.read_cache(str(tmp_path), "../x", "c1", "eth0") is None
    cache.delete_cache(str(tmp_path), "net", "c1", "eth0")
    cache.delete_cache(str(tmp_path), "a/b", "c1", "eth0")


def test_write_rejects_path_escapes_and_reports_io_errors(tmp_path: Path) -> None:
    with pytest.raises(CniError):
        cache.write_cache(str(tmp_path), {"name": "net"}, RuntimeConf("../c", "", "eth0"), RESULT)
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(CniError) as exc:
        cache.write_cache(str(blocker), {"name": "net"}, RuntimeConf("c", "", "eth0"), RESULT)
    assert exc.value.code == IO_FAILURE


def test_list_cache_filters_by_network(tmp_path: Path) -> None:
    for name, cid in (("a", "c1"), ("b", "c2"), ("a", "c3")):
        cache.write_cache(str(tmp_path), {"name": name}, RuntimeConf(cid, "", "eth0"), RESULT)
    assert [e["containerId"] for e in cache.list_cache(str(tmp_path), "a")] == ["c1", "c3"]
    assert len(cache.list_cache(str(tmp_path))) == 3
