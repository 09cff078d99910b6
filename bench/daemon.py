"""Daemon mode vs the same delegate calls made directly: one pod = cluster network + two macvlan NADs.

    .venv/bin/python bench/daemon.py [--pairs 10] [--rounds 3] [--thin] [--delegates reference|mp]
                                     [--direct reference|mp] [--before CHECKOUT] [--json]                 (root)

The pod is overhead.py's (bridge + host-local cluster network, macvlan + host-local, macvlan + static). Three loads,
each alternating daemon mode and direct (who goes first alternates too), medians and ratios to direct:
- paced: one pod ADD then DEL, a pause, the other side; `--pairs` pairs;
- back to back: 20 pods ADD+DEL one after another without pause (wall time of the 20); `--rounds` rounds per side;
- 10 at once: ADD of 10 pods concurrently, then DEL of all 10 concurrently (wall time); `--rounds` rounds per side.
Daemon mode is what a runtime execs: `metaplug-shim` (static) with CNI_* env + the conflist entry on stdin, served
by `metaplug daemon` (started once, warm). Direct is the runtime making the delegate calls itself, one process per
plugin. `--thin` adds thin mode (the metaplug executable per call) as a third side, rotating with the others.
`--before CHECKOUT` adds daemon mode of another checkout (its own `.venv`, made by its `.ci/setup`, e.g. the main
branch unpacked with `git archive`) as one more side: its daemon (metrics on 127.0.0.1:9092) and its shim, same pod.
Everything runs from one driver inside the node namespace, which also runs the daemon (ended by its PID).
Issue 11's targets: paced <= 1.10x (1.05x), back to back <= 1.10x, 10 at once <= 1.25x. Also printed: the daemon's
RSS idle and after the bursts, (from its /metrics) how much of its ADD/DEL time was spent in the delegates, and each
daemon's CPU time per pod over the loads (its own process, and with the delegate processes it exec'd and reaped).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from _netns import Sandbox, links, median, need_root, netns_path
from overhead import CallFailed, call, cni_env, direct_add, direct_verb, make_plan, run_driver

TARGETS = {"paced": 1.10, "back to back": 1.10, "10 at once": 1.25}
BURST = 10
BACK_TO_BACK = 20
PAUSE = 0.2  # seconds between paced pods


# ---------------------------------------------------------------- one pod, either way (inside the node namespace)


def runtime_call(plan: Mapping[str, Any], mode: str, verb: str, pod: Mapping[str, str], cid: str) -> bytes:
    """The runtime's one call: metaplug-shim (daemon mode, also the `before` checkout's) or metaplug (thin mode)."""
    exe, stdin = {"daemon": (plan["shim"], plan["shim_stdin"]), "thin": (plan["metaplug"], plan["metaplug_stdin"]),
                  "before": (plan["before"]["shim"], plan["before"]["shim_stdin"]) if plan.get("before") else ("", "")
                  }[mode]
    out = call([exe], {**cni_env(plan, verb, cid, "eth0"), "CNI_NETNS": pod["netns"]}, stdin.encode())
    if verb == "ADD" and len(json.loads(out).get("interfaces", [])) < 3:
        raise CallFailed(f"{mode} ADD result lacks interfaces: {out[:300]!r}")
    return out


def daemon_add(plan: Mapping[str, Any], pod: Mapping[str, str], cid: str) -> None:
    runtime_call(plan, "daemon", "ADD", pod, cid)


def daemon_del(plan: Mapping[str, Any], pod: Mapping[str, str], cid: str, _state: Any = None) -> None:
    runtime_call(plan, "daemon", "DEL", pod, cid)


def thin_add(plan: Mapping[str, Any], pod: Mapping[str, str], cid: str) -> None:
    runtime_call(plan, "thin", "ADD", pod, cid)


def thin_del(plan: Mapping[str, Any], pod: Mapping[str, str], cid: str, _state: Any = None) -> None:
    runtime_call(plan, "thin", "DEL", pod, cid)


def before_add(plan: Mapping[str, Any], pod: Mapping[str, str], cid: str) -> None:
    runtime_call(plan, "before", "ADD", pod, cid)


def before_del(plan: Mapping[str, Any], pod: Mapping[str, str], cid: str, _state: Any = None) -> None:
    runtime_call(plan, "before", "DEL", pod, cid)


def plain_add(plan: Mapping[str, Any], pod: Mapping[str, str], cid: str) -> Any:
    return direct_add({**plan, "netns": pod["netns"]}, cid)


def plain_del(plan: Mapping[str, Any], pod: Mapping[str, str], cid: str, results: Any) -> None:
    direct_verb({**plan, "netns": pod["netns"]}, cid, "DEL", results)


SIDES: dict[str, tuple[Callable[..., Any], Callable[..., None]]] = {
    "daemon": (daemon_add, daemon_del), "direct": (plain_add, plain_del), "thin": (thin_add, thin_del),
    "before": (before_add, before_del)}


def empty(pod: Mapping[str, str], side: str) -> None:
    left = [link for link in links(pod["name"]) if link != "lo"]
    if left:
        raise CallFailed(f"{side} DEL left {left} in {pod['name']}")


def paced(plan: Mapping[str, Any], side: str, i: int) -> dict[str, int]:
    add, delete = SIDES[side]
    pod, cid = plan["pods"][0], f"paced{i:03d}{side[:2]}"
    t0 = time.perf_counter_ns()
    state = add(plan, pod, cid)
    t1 = time.perf_counter_ns()
    delete(plan, pod, cid, state)
    t2 = time.perf_counter_ns()
    empty(pod, side)
    time.sleep(PAUSE)
    return {"ADD": t1 - t0, "DEL": t2 - t1}


def back_to_back(plan: Mapping[str, Any], side: str, r: int) -> int:
    add, delete = SIDES[side]
    pod = plan["pods"][0]
    t0 = time.perf_counter_ns()
    for i in range(BACK_TO_BACK):
        cid = f"b2b{r:02d}{i:02d}{side[:2]}"
        delete(plan, pod, cid, add(plan, pod, cid))
    elapsed = time.perf_counter_ns() - t0
    empty(pod, side)
    return elapsed


def burst(plan: Mapping[str, Any], side: str, r: int) -> int:
    add, delete = SIDES[side]
    pods = plan["pods"][:BURST]
    cids = [f"burst{r:02d}{i:02d}{side[:2]}" for i in range(len(pods))]
    with ThreadPoolExecutor(max_workers=len(pods)) as pool:
        t0 = time.perf_counter_ns()
        states = list(pool.map(lambda k: add(plan, pods[k], cids[k]), range(len(pods))))
        list(pool.map(lambda k: delete(plan, pods[k], cids[k], states[k]), range(len(pods))))
        elapsed = time.perf_counter_ns() - t0
    for pod in pods:
        empty(pod, side)
    return elapsed


def alternate(sides: list[str], pairs: int, measure: Callable[[str, int], Any]) -> dict[str, list[Any]]:
    """Each side once per round, the order rotating (and reversing) from round to round."""
    out: dict[str, list[Any]] = {side: [] for side in sides}
    for i in range(pairs):
        order = sides[i % len(sides):] + sides[:i % len(sides)]
        for side in (order if i % 2 == 0 else order[::-1]):
            out[side].append(measure(side, i))
    return out


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmRSS:")) / 1024


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(own, own + reaped children's) CPU seconds of a process: utime+stime and cutime+cstime of /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    own = (int(fields[11]) + int(fields[12])) / tick
    return own, own + (int(fields[13]) + int(fields[14])) / tick


def time_split() -> dict[str, float]:
    """From the daemon's /metrics: seconds spent answering ADD/DEL calls, and inside the delegates they made."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen("http://127.0.0.1:9091/metrics", timeout=10) as reply:
        text = reply.read().decode()
    out = {"calls": 0.0, "delegates": 0.0}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.labels.get("verb") not in ("ADD", "DEL"):
                continue
            if sample.name == "metaplug_call_duration_seconds_sum":
                out["calls"] += sample.value
            elif sample.name == "metaplug_delegate_call_duration_seconds_sum":
                out["delegates"] += sample.value
    return {k: round(v, 2) for k, v in out.items()}


class DaemonProcess:
    def __init__(self, plan: Mapping[str, Any], side: Mapping[str, Any] | None = None) -> None:
        """This checkout's daemon, or with `side` the `before` checkout's (its metaplug, config, log and socket)."""
        own = side or plan
        env = {**plan["base_env"], "CNI_PATH": plan["cni_path"]}
        self.log = open(own["daemon_log"], "ab")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen([own["metaplug"], "daemon", "--config", own["daemon_config"]],
                                     stdout=self.log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise CallFailed(f"daemon exited {self.proc.returncode}; see {own['daemon_log']}")
            with socket.socket(socket.AF_UNIX) as probe:
                try:
                    probe.connect(own["socket"])
                    return
                except OSError:
                    time.sleep(0.05)
        raise CallFailed("daemon did not start listening")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(40)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()


def drive(plan: Mapping[str, Any]) -> dict[str, Any]:
    daemon = DaemonProcess(plan)
    before = DaemonProcess(plan, plan["before"]) if plan.get("before") else None
    try:
        sides = plan["sides"]
        for side in sides:  # warm-up: bridge created, caches and the daemon's imports warm
            paced(plan, side, 999)
        rss_idle = rss_mib(daemon.proc.pid)
        daemons = {"daemon": daemon, **({"before": before} if before is not None else {})}
        cpu_start = {side: cpu_seconds(d.proc.pid) for side, d in daemons.items()}
        data: dict[str, Any] = {
            "paced": alternate(sides, plan["pairs"], lambda side, i: paced(plan, side, i)),
            "back to back": alternate(sides, plan["rounds"], lambda side, r: back_to_back(plan, side, r)),
            "10 at once": alternate(sides, plan["rounds"], lambda side, r: burst(plan, side, r)),
        }
        data["rss_mib"] = {"idle": round(rss_idle, 1), "after": round(rss_mib(daemon.proc.pid), 1)}
        data["seconds"] = time_split()
        pods = plan["pairs"] + plan["rounds"] * (BACK_TO_BACK + BURST)  # pods each side served in the loads
        data["cpu_ms_per_pod"] = {}
        for side, d in daemons.items():
            (own0, all0), (own1, all1) = cpu_start[side], cpu_seconds(d.proc.pid)
            data["cpu_ms_per_pod"][side] = {"own": round(1000 * (own1 - own0) / pods, 1),
                                            "with_children": round(1000 * (all1 - all0) / pods, 1)}
        return data
    finally:
        daemon.stop()
        if before is not None:
            before.stop()


def driver_main(plan_file: str) -> int:
    plan = json.loads(Path(plan_file).read_text())
    try:
        samples = drive(plan)
    except CallFailed as err:
        print(json.dumps({"error": str(err)}))
        return 1
    print(json.dumps({"samples": samples}))
    return 0


# ---------------------------------------------------------------- the report


def report(samples: Mapping[str, Any], opts: argparse.Namespace) -> dict[str, Any]:
    sides = ["daemon", "direct", *(["thin"] if opts.thin else []), *(["before"] if opts.before else [])]
    rows: dict[str, Any] = {}
    for label, verbs in (("ADD", ("ADD",)), ("DEL", ("DEL",)), ("paced", ("ADD", "DEL"))):
        rows[label] = {side: round(median([sum(s[v] for v in verbs) / 1e6 for s in samples["paced"][side]]), 1)
                       for side in sides}
    for label in ("back to back", "10 at once"):
        rows[label] = {side: round(median([v / 1e6 for v in samples[label][side]]), 1) for side in sides}
    for row in rows.values():
        row["ratio"] = round(row["daemon"] / row["direct"], 2)
        for other in sides[2:]:
            row[f"{other}_ratio"] = round(row[other] / row["direct"], 2)
    checks = {label: rows[label]["ratio"] <= target for label, target in TARGETS.items()}
    return {"delegates": opts.delegates, "direct_delegates": opts.direct, "pairs": opts.pairs, "rounds": opts.rounds,
            "thin": opts.thin, "before": opts.before,
            "python": platform.python_version(), "kernel": platform.release(), "cpus": os.cpu_count(),
            "rows": rows, "targets": TARGETS, "ok": checks, "daemon_rss_mib": samples["rss_mib"],
            "daemon_seconds": samples["seconds"], "daemon_cpu_ms_per_pod": samples["cpu_ms_per_pod"]}


def markdown(rep: Mapping[str, Any]) -> str:
    others = [side for side in ("thin", "before") if rep[side]]
    lines = [
        f"daemon mode (metaplug-shim -> metaplug daemon) vs direct delegate calls: 1 pod = cluster network + 2 "
        f"macvlan NADs, delegates: {rep['delegates']} (direct: {rep['direct_delegates']}); paced {rep['pairs']} pairs, "
        f"{BACK_TO_BACK} back to back and "
        f"{BURST} at once {rep['rounds']} rounds each (Python {rep['python']}, kernel {rep['kernel']}, "
        f"{rep['cpus']} CPUs)",
        "",
        "| load | daemon median ms | direct median ms | ratio | target |"
        + "".join(f" {side} median ms | {side} ratio |" for side in others),
        "|---|---:|---:|---:|---:|" + "---:|---:|" * len(others),
    ]
    for label, row in rep["rows"].items():
        target = TARGETS.get(label)
        mark = "" if target is None else f"<= {target:.2f} {'PASS' if rep['ok'][label] else 'FAIL'}"
        name = {"paced": "paced ADD+DEL", "ADD": "paced ADD", "DEL": "paced DEL"}.get(label, f"{label} (wall)")
        extra = "".join(f" {row[side]:.1f} | {row[f'{side}_ratio']:.2f} |" for side in others)
        lines.append(f"| {name} | {row['daemon']:.1f} | {row['direct']:.1f} | {row['ratio']:.2f} | {mark} |{extra}")
    rss = rep["daemon_rss_mib"]
    lines += ["", f"- daemon RSS: {rss['idle']:.1f} MiB idle (after one warm-up pod), {rss['after']:.1f} MiB after "
                  "all the loads"]
    for side, cpu in rep["daemon_cpu_ms_per_pod"].items():
        who = "this" if side == "daemon" else "the before"
        lines.append(f"- {who} daemon's CPU per pod ADD+DEL: {cpu['own']:.1f} ms in its own process, "
                     f"{cpu['with_children']:.1f} ms with the delegates it exec'd")
    split = rep["daemon_seconds"]
    if split["calls"]:
        lines.append(f"- of the daemon's {split['calls']:.1f} s answering ADD/DEL, {split['delegates']:.1f} s "
                     f"({100 * split['delegates'] / split['calls']:.0f}%) were spent in the delegates it called")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--pairs", type=int, default=10, help="paced daemon/direct pairs (default 10)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per side of the two bulk loads (default 3)")
    parser.add_argument("--delegates", choices=("reference", "mp"), default="reference",
                        help="reference plugins (default) or the bundled mp-* delegates")
    parser.add_argument("--direct", choices=("reference", "mp"), default=None,
                        help="the delegates of the direct side (default: the same as --delegates); `--delegates mp "
                             "--direct reference` compares the in-process mp-* with the Go plugins called directly")
    parser.add_argument("--plugin-dir", default="/usr/lib/cni", help="reference plugins (default /usr/lib/cni)")
    parser.add_argument("--thin", action="store_true", help="also measure thin mode (metaplug per call) alongside")
    parser.add_argument("--before", metavar="CHECKOUT", default=None,
                        help="also measure daemon mode of this checkout (its .venv from its .ci/setup) alongside")
    parser.add_argument("--json", action="store_true", help="print the report as JSON instead of markdown")
    parser.add_argument("--driver", metavar="PLAN", help=argparse.SUPPRESS)  # internal: runs inside the node
    opts = parser.parse_args(argv)
    if opts.driver:
        return driver_main(opts.driver)
    if opts.pairs < 1 or opts.rounds < 1:
        parser.error("--pairs and --rounds must be >= 1")
    problem = need_root()
    if problem:
        print(f"daemon.py {problem}", file=sys.stderr)
        return 2
    shim = Path(sys.executable).parent / "metaplug-shim"
    before_bin = Path(opts.before).resolve() / ".venv" / "bin" if opts.before else None
    for needed in [shim, *([before_bin / "metaplug-shim"] if before_bin else [])]:
        if not needed.exists():
            print(f"{needed} is not built (bash .ci/setup)", file=sys.stderr)
            return 2
    try:
        with Sandbox() as box:
            node = box.netns("node")
            pods = [box.netns(f"pod{i}") for i in range(BURST)]
            box.veth(node, "uplink0")
            plan = make_plan(box.tmp, pods[0], opts.delegates, opts.plugin_dir, opts.pairs, 0)
            opts.direct = opts.direct or opts.delegates
            if opts.direct != opts.delegates:
                (box.tmp / "direct").mkdir()
                plan["direct"] = make_plan(box.tmp / "direct", pods[0], opts.direct, opts.plugin_dir, 1, 0)["direct"]
            sock = box.tmp / "run" / "mp.sock"
            entry = {**json.loads(plan["metaplug_stdin"]), "type": "metaplug-shim", "socketPath": str(sock)}
            (box.tmp / "daemon.json").write_text(json.dumps({"socketPath": str(sock), "logLevel": "warning"}))
            plan.update(shim=str(shim), shim_stdin=json.dumps(entry), socket=str(sock), rounds=opts.rounds,
                        sides=["daemon", "direct", *(["thin"] if opts.thin else []),
                               *(["before"] if before_bin else [])],
                        daemon_config=str(box.tmp / "daemon.json"), daemon_log=str(box.tmp / "daemon.log"),
                        pods=[{"name": p, "netns": netns_path(p)} for p in pods])
            if before_bin:
                before_sock = box.tmp / "run-before" / "mp.sock"
                (box.tmp / "before.json").write_text(json.dumps({"socketPath": str(before_sock), "logLevel": "warning",
                                                                 "metricsAddress": "127.0.0.1:9092"}))
                plan["before"] = {"metaplug": str(before_bin / "metaplug"), "shim": str(before_bin / "metaplug-shim"),
                                  "shim_stdin": json.dumps({**entry, "socketPath": str(before_sock)}),
                                  "socket": str(before_sock), "daemon_config": str(box.tmp / "before.json"),
                                  "daemon_log": str(box.tmp / "before.log")}
            plan_file = box.tmp / "plan.json"
            plan_file.write_text(json.dumps(plan))
            data = run_driver(node, plan_file, script=Path(__file__).resolve())
    except KeyboardInterrupt:
        print("interrupted; namespaces and temp dir removed", file=sys.stderr)
        return 130
    rep = report(data["samples"], opts)
    print(json.dumps(rep, indent=2) if opts.json else markdown(rep))
    return 0 if all(rep["ok"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
