"""chain.py verbs with the fake delegate (duties 11-14, 19-22, 25, 35): order, prevResult, errors, cache.

The fake delegate creates nothing, so these run without namespaces; every call is logged to a temp file.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from metaplug.cni import cache, chain
from metaplug.cni.chain import RuntimeConf
from metaplug.cni.errors import DELEGATE_FAILED, DELEGATE_NOT_FOUND, INCOMPATIBLE_VERSION, CniError
from tests.helpers.fake_delegate import install, read_log
from tests.helpers.netns import REPO


class Env:
    """A bin dir with fake delegates `a`, `b`, `c`, a call log and a cache dir."""

    def __init__(self, tmp: Path) -> None:
        self.bin = tmp / "bin"
        self.log = tmp / "calls.jsonl"
        self.cache = str(tmp / "cache")
        for name in ("a", "b", "c"):
            install(self.bin, name)
        self.paths = [str(self.bin)]
        self.rt = RuntimeConf("ctr1", "/var/run/netns/pod1", "eth0", args=[("K8S_POD_NAME", "p")],
                              capability_args={"mac": "c2:00:00:00:00:01"})

    def conf(self, *plugins: dict[str, Any] | str, version: str = "1.0.0", **top: Any) -> dict[str, Any]:
        items = []
        for p in plugins:
            item: dict[str, Any] = {"type": p} if isinstance(p, str) else dict(p)
            fake = dict(item.get("fake", {}))
            fake.setdefault("log", str(self.log))
            item["fake"] = fake
            items.append(item)
        return chain.load_conflist({"cniVersion": version, "name": "testnet", "plugins": items, **top})

    def calls(self) -> list[tuple[str, str]]:
        return [(c["plugin"], c["command"]) for c in read_log(self.log)]

    def stdins(self) -> list[dict[str, Any]]:
        return [c["stdin"] for c in read_log(self.log)]


@pytest.fixture
def env(tmp_path: Path) -> Env:
    return Env(tmp_path)


def fails(mode: str, name: str, **fake: Any) -> dict[str, Any]:
    return {"type": name, "fake": {"mode": mode, **fake}}


# --- ADD (duties 19, 25, 35) -----------------------------------------------------------------------------------------


def test_duty19_add_runs_in_order_chaining_prev_result(env: Env) -> None:
    first = {"type": "a", "fake": {"result": {"ips": [{"address": "10.0.0.5/24"}], "interfaces": []}}}
    conf = env.conf(first, "b", "c")
    result = chain.add_network_list(conf, env.rt, env.paths)
    assert env.calls() == [("a", "ADD"), ("b", "ADD"), ("c", "ADD")]
    a, b, c = env.stdins()
    assert "prevResult" not in a
    assert b["prevResult"]["ips"] == [{"address": "10.0.0.5/24"}]
    assert c["prevResult"] == b["prevResult"]
    assert result["ips"] == [{"address": "10.0.0.5/24"}] and result["cniVersion"] == "1.0.0"
    call = read_log(env.log)[0]
    assert call["env"]["CNI_ARGS"] == "K8S_POD_NAME=p" and call["env"]["CNI_PATH"] == str(env.bin)


def test_duty19_add_stops_at_the_first_error_and_does_not_roll_back(env: Env) -> None:
    conf = env.conf("a", fails("error-json", "b", error={"code": 11, "msg": "try later"}), "c")
    with pytest.raises(CniError) as exc:
        chain.add_network_list(conf, env.rt, env.paths, cache_dir=env.cache)
    assert exc.value.code == 11 and exc.value.msg == "try later"
    assert env.calls() == [("a", "ADD"), ("b", "ADD")]  # c never runs, nothing is deleted (the caller's job)
    assert cache.read_cache(env.cache, "testnet", "ctr1", "eth0") is None


def test_duty19_rollback_on_error_deletes_in_reverse_with_last_result(env: Env) -> None:
    conf = env.conf("a", "b", fails("crash", "c"))
    with pytest.raises(CniError) as exc:
        chain.add_network_list(conf, env.rt, env.paths, rollback_on_error=True)
    assert exc.value.code == DELEGATE_FAILED
    assert env.calls() == [("a", "ADD"), ("b", "ADD"), ("c", "ADD"), ("c", "DEL"), ("b", "DEL"), ("a", "DEL")]
    stdins = env.stdins()
    assert stdins[3]["prevResult"] == stdins[2]["prevResult"]  # b's result: the last one that succeeded


def test_duty19_rollback_failure_is_reported_with_the_add_error(env: Env) -> None:
    conf = env.conf(fails("error-nojson", "a", on={"ADD": "ok"}), fails("error-json", "b"))
    with pytest.raises(CniError) as exc:
        chain.add_network_list(conf, env.rt, env.paths, rollback_on_error=True)
    assert exc.value.code == 117 and "rollback DEL also failed" in exc.value.details


def test_duty25_result_without_cniversion_takes_the_list_version(env: Env) -> None:
    conf = env.conf(fails("no-version", "a"), "b", version="0.4.0")
    result = chain.add_network_list(conf, env.rt, env.paths)
    assert env.stdins()[1]["prevResult"]["cniVersion"] == "0.4.0"
    assert result["cniVersion"] == "0.4.0"


def test_result_of_an_old_plugin_is_converted_to_the_list_version(env: Env) -> None:
    conf = env.conf(fails("old-version", "a"), "b", version="1.0.0")
    result = chain.add_network_list(conf, env.rt, env.paths)
    prev = env.stdins()[1]["prevResult"]
    assert prev["cniVersion"] == "1.0.0" and prev["ips"][0]["address"] == "10.99.0.2/24" and "ip4" not in prev
    assert result["cniVersion"] == "1.0.0"


def test_add_without_output_is_an_error(env: Env) -> None:
    with pytest.raises(CniError) as exc:
        chain.add_network_list(env.conf(fails("empty", "a")), env.rt, env.paths)
    assert exc.value.code == DELEGATE_FAILED and "no result" in exc.value.msg


def test_add_validates_container_id_and_ifname(env: Env) -> None:
    for rt in (RuntimeConf("bad id", "/n", "eth0"), RuntimeConf("c", "/n", "a/b"), RuntimeConf("", "/n", "eth0")):
        with pytest.raises(CniError):
            chain.add_network_list(env.conf("a"), rt, env.paths)
    assert env.calls() == []


def test_missing_delegate_is_not_found(env: Env) -> None:
    with pytest.raises(CniError) as exc:
        chain.add_network_list(env.conf("a", "nosuch"), env.rt, env.paths)
    assert exc.value.code == DELEGATE_NOT_FOUND and "nosuch" in str(exc.value)


def test_duty35_add_writes_a_libcni_cache_entry(env: Env) -> None:
    conf = env.conf("a", "b")
    result = chain.add_network_list(conf, env.rt, env.paths, cache_dir=env.cache)
    path = Path(env.cache) / "results" / "testnet-ctr1-eth0"
    entry = json.loads(path.read_text())
    assert entry["kind"] == "cniCacheV1"
    assert (entry["containerId"], entry["ifName"], entry["networkName"], entry["netns"]) == \
        ("ctr1", "eth0", "testnet", "/var/run/netns/pod1")
    assert entry["cniArgs"] == [["K8S_POD_NAME", "p"]]
    assert entry["capabilityArgs"] == {"mac": "c2:00:00:00:00:01"}
    assert entry["result"] == result
    assert json.loads(cache.entry_config(entry) or b"")["plugins"][0]["type"] == "a"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    for d in (Path(env.cache), Path(env.cache) / "results"):
        assert stat.S_IMODE(d.stat().st_mode) == 0o700
    assert [p.name for p in (Path(env.cache) / "results").iterdir()] == ["testnet-ctr1-eth0"]  # no temp file left


# --- DEL (duties 11, 20) ---------------------------------------------------------------------------------------------


def test_duty20_del_runs_in_reverse_with_the_cached_final_result(env: Env) -> None:
    conf = env.conf("a", {"type": "b", "capabilities": {"mac": True}}, "c")
    result = chain.add_network_list(conf, env.rt, env.paths, cache_dir=env.cache)
    env.log.unlink()
    chain.del_network_list(conf, env.rt, env.paths, cache_dir=env.cache)
    assert env.calls() == [("c", "DEL"), ("b", "DEL"), ("a", "DEL")]
    assert all(s["prevResult"] == result for s in env.stdins())
    assert [s.get("runtimeConfig") for s in env.stdins()] == [None, {"mac": "c2:00:00:00:00:01"}, None]
    assert cache.read_cache(env.cache, "testnet", "ctr1", "eth0") is None


def test_duty20_given_prev_result_wins_over_the_cache(env: Env) -> None:
    conf = env.conf("a")
    chain.add_network_list(conf, env.rt, env.paths, cache_dir=env.cache)
    mine = {"cniVersion": "1.0.0", "ips": [{"address": "10.9.9.9/32"}]}
    chain.del_network_list(conf, env.rt, env.paths, prev_result=mine, cache_dir=env.cache)
    assert env.stdins()[-1]["prevResult"] == mine


@pytest.mark.parametrize("content", [None, b"{corrupt", b'{"kind": "cniCacheV1"}', b"[]"])
def test_duty20_del_runs_every_plugin_without_or_with_a_corrupt_cache(env: Env, content: bytes | None) -> None:
    if content is not None:
        d = Path(env.cache) / "results"
        d.mkdir(parents=True)
        (d / "testnet-ctr1-eth0").write_bytes(content)
    chain.del_network_list(env.conf("a", "b"), env.rt, env.paths, cache_dir=env.cache)
    assert env.calls() == [("b", "DEL"), ("a", "DEL")]
    assert all("prevResult" not in s for s in env.stdins())


def test_duty20_no_prev_result_before_0_4_0(env: Env) -> None:
    conf = env.conf("a", version="0.3.1")
    chain.del_network_list(conf, env.rt, env.paths, prev_result={"cniVersion": "0.3.1", "ips": []})
    assert "prevResult" not in env.stdins()[0]


def test_duty11_del_is_best_effort_and_reports_every_failure(env: Env) -> None:
    conf = env.conf(fails("error-json", "a", error={"code": 7, "msg": "first"}), "b",
                    fails("error-nojson", "c"))
    chain.add_network_list(env.conf("a"), env.rt, env.paths, cache_dir=env.cache)
    with pytest.raises(CniError) as exc:
        chain.del_network_list(conf, env.rt, env.paths, cache_dir=env.cache)
    assert env.calls()[-3:] == [("c", "DEL"), ("b", "DEL"), ("a", "DEL")]
    err = exc.value
    assert err.code == DELEGATE_FAILED  # c failed first (reverse order)
    assert "2 DEL failures" in err.details and "a: [code 7] first" in err.details and "c: [code 101]" in err.details
    assert cache.read_cache(env.cache, "testnet", "ctr1", "eth0") is not None  # kept: DEL is not complete


def test_duty11_single_del_failure_is_raised_unchanged(env: Env) -> None:
    conf = env.conf("a", fails("error-json", "b", error={"code": 42, "msg": "m", "details": "d"}))
    with pytest.raises(CniError) as exc:
        chain.del_network_list(conf, env.rt, env.paths)
    assert (exc.value.code, exc.value.msg, exc.value.details) == (42, "m", "d")


def test_duty11_repeated_del_succeeds(env: Env) -> None:
    conf = env.conf("a")
    chain.add_network_list(conf, env.rt, env.paths, cache_dir=env.cache)
    chain.del_network_list(conf, env.rt, env.paths, cache_dir=env.cache)
    chain.del_network_list(conf, env.rt, env.paths, cache_dir=env.cache)
    assert env.calls() == [("a", "ADD"), ("a", "DEL"), ("a", "DEL")]


# --- CHECK (duties 12, 21) -------------------------------------------------------------------------------------------


def test_duty12_check_needs_0_4_0(env: Env) -> None:
    with pytest.raises(CniError) as exc:
        chain.check_network_list(env.conf("a", version="0.3.1"), env.rt, env.paths)
    assert exc.value.code == INCOMPATIBLE_VERSION and exc.value.msg == "config version does not allow CHECK"
    assert env.calls() == []


def test_duty21_check_in_order_with_cached_result(env: Env) -> None:
    conf = env.conf("a", "b")
    result = chain.add_network_list(conf, env.rt, env.paths, cache_dir=env.cache)
    chain.check_network_list(conf, env.rt, env.paths, cache_dir=env.cache)
    assert env.calls()[2:] == [("a", "CHECK"), ("b", "CHECK")]
    assert [s["prevResult"] for s in env.stdins()[2:]] == [result, result]


def test_duty21_check_stops_at_first_error(env: Env) -> None:
    conf = env.conf(fails("error-json", "a", on={"ADD": "ok"}), "b")
    with pytest.raises(CniError):
        chain.check_network_list(conf, env.rt, env.paths, prev_result={"cniVersion": "1.0.0"})
    assert env.calls() == [("a", "CHECK")]


@pytest.mark.parametrize("flag", [True, "true", "True"])
def test_duty21_disable_check_skips_every_plugin(env: Env, flag: Any) -> None:
    chain.check_network_list(env.conf("a", disableCheck=flag), env.rt, env.paths)
    assert env.calls() == []


# --- STATUS and GC (duties 13, 14, 22) -------------------------------------------------------------------------------


def test_duty22_status_in_order_stops_at_first_error(env: Env) -> None:
    chain.status_network_list(env.conf("a", "b", version="1.1.0"), env.paths)
    assert env.calls() == [("a", "STATUS"), ("b", "STATUS")]
    call = read_log(env.log)[0]
    assert call["env"]["CNI_CONTAINERID"] == "" and call["env"]["CNI_PATH"] == str(env.bin)
    env.log.unlink()
    conf = env.conf(fails("error-json", "a", error={"code": 50, "msg": "not ready"}), "b", version="1.1.0")
    with pytest.raises(CniError) as exc:
        chain.status_network_list(conf, env.paths)
    assert exc.value.code == 50 and env.calls() == [("a", "STATUS")]


def test_duty13_status_not_sent_to_lists_older_than_1_1_0(env: Env) -> None:
    chain.status_network_list(env.conf("a", version="1.0.0"), env.paths)
    assert env.calls() == []


def test_duty14_gc_sends_valid_attachments_and_continues_past_errors(env: Env) -> None:
    valid = [{"containerID": "ctr1", "ifname": "eth0"}]
    conf = env.conf(fails("error-json", "a", error={"code": 7, "msg": "x"}), "b", fails("crash", "c"),
                    version="1.1.0")
    with pytest.raises(CniError) as exc:
        chain.gc_network_list(conf, env.paths, valid)
    assert env.calls() == [("a", "GC"), ("b", "GC"), ("c", "GC")]
    assert all(s["cni.dev/valid-attachments"] == valid and s["cni.dev/attachments"] == valid
               for s in env.stdins())
    assert "2 GC failures" in exc.value.details and "a: " in exc.value.details and "c: " in exc.value.details


def test_duty14_gc_skipped_when_disabled_or_older_than_1_1_0(env: Env) -> None:
    chain.gc_network_list(env.conf("a", version="1.1.0", disableGC="true"), env.paths, [])
    chain.gc_network_list(env.conf("a", version="1.0.0"), env.paths, [])
    assert env.calls() == []


def test_duty14_gc_with_cache_deletes_only_stale_attachments(env: Env) -> None:
    conf = env.conf("a", version="1.1.0")
    keep = RuntimeConf("keep", "/n1", "eth0")
    stale = RuntimeConf("stale", "/n2", "net1", args=[("K", "V")], capability_args={"mac": "m"})
    for rt in (keep, stale):
        chain.add_network_list(conf, rt, env.paths, cache_dir=env.cache)
    env.log.unlink()
    chain.gc_network_list(conf, env.paths, [{"containerID": "keep", "ifname": "eth0"}], cache_dir=env.cache)
    calls = read_log(env.log)
    assert [(c["command"], c["env"]["CNI_CONTAINERID"]) for c in calls] == [("DEL", "stale"), ("GC", "")]
    assert calls[0]["env"]["CNI_NETNS"] == "/n2" and calls[0]["env"]["CNI_ARGS"] == "K=V"
    assert cache.read_cache(env.cache, "testnet", "stale", "net1") is None
    assert cache.read_cache(env.cache, "testnet", "keep", "eth0") is not None


# --- the cnitool-like driver -----------------------------------------------------------------------------------------


def tool(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "metaplug.cni.tool", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=60, env={**os.environ, "CNI_PATH": ""})


def test_tool_add_check_del_and_error_output(env: Env, tmp_path: Path) -> None:
    conf_file = tmp_path / "net.conflist"
    conf_file.write_text(json.dumps(env.conf("a", "b")))
    common = ["--path", str(env.bin), "--cache-dir", env.cache, "--args", "A=1;B=2",
              "--cap-args", '{"mac": "c2:00:00:00:00:09"}']
    add = tool("add", str(conf_file), "/var/run/netns/x", *common)
    assert add.returncode == 0, add.stdout + add.stderr
    assert json.loads(add.stdout)["cniVersion"] == "1.0.0"
    cid = read_log(env.log)[0]["env"]["CNI_CONTAINERID"]
    assert cid.startswith("cnitool-") and read_log(env.log)[0]["env"]["CNI_ARGS"] == "A=1;B=2"
    assert tool("check", str(conf_file), "/var/run/netns/x", *common).returncode == 0
    out = tool("del", str(conf_file), "/var/run/netns/x", *common)
    assert out.returncode == 0 and out.stdout == ""
    assert [c for _, c in env.calls()] == ["ADD", "ADD", "CHECK", "CHECK", "DEL", "DEL"]
    conf_file.write_text(json.dumps(env.conf("a", fails("error-json", "b", error={"code": 7, "msg": "boom"}))))
    bad = tool("add", str(conf_file), "/var/run/netns/x", "--path", str(env.bin))
    assert bad.returncode == 1 and json.loads(bad.stdout) == {"cniVersion": "1.0.0", "code": 7, "msg": "boom",
                                                               "details": "ADD refused"}


def test_tool_version_and_missing_file(env: Env, tmp_path: Path) -> None:
    install(env.bin, "old", {"mode": "old-version"})
    conf_file = tmp_path / "net.conflist"
    conf_file.write_text(json.dumps({"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "a"}, {"type": "old"}]}))
    out = tool("version", str(conf_file), "--path", str(env.bin))
    assert out.returncode == 0 and json.loads(out.stdout)["old"] == ["0.1.0", "0.2.0"]
    missing = tool("add", str(tmp_path / "nope"), "/x")
    assert missing.returncode == 1 and json.loads(missing.stdout)["code"] == 5
