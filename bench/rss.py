"""Peak memory of one CNI call: max RSS of metaplug ADD, CHECK and DEL of one pod, without and with the API.

    sudo .venv/bin/python bench/rss.py [--runs 10] [--delegates reference|mp] [--no-api] [--baseline DIR] [--json]

The pod of bench/overhead.py (cluster network bridge + host-local, two macvlan NADs), in throw-away namespaces: each
run does ADD, CHECK and DEL through metaplug from local NAD files (annotation in runtimeConfig), then the same pod
with the Kubernetes API (the HTTPS simulator of tests/helpers/kube_sim.py on the node namespace's loopback: pod
annotation and NADs from the API, network-status patched). Budgets (issue 9, defect 8): peak RSS of one ADD at most
20 MiB without the API and 28 MiB with it.

Peak RSS is ru_maxrss from os.wait4, read by a minimal spawner (`python -I -S`, builtin modules only; the one of
bench/startup.py) because Linux folds the spawning process's high-water mark at exec time into the child's ru_maxrss;
the spawner's own high-water mark is printed as the floor no row can read below. Where the memory goes:
`python -X importtime` and tracemalloc (see bench/README.md).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import marshal
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import overhead
from _netns import Sandbox, need_root
from startup import SPAWNER

BUDGETS_MIB = {"ADD": 20.0, "ADD+api": 28.0}  # issue 9, defect 8
VERBS = ("ADD", "CHECK", "DEL")


def cases(plan: dict[str, Any], api: bool) -> list[dict[str, Any]]:
    """ADD, CHECK, DEL of one pod (same container ID every run: DEL ends each run), then the same with the API."""
    out = []
    variants = [("", plan["metaplug_stdin"])] + ([("+api", plan["api"]["stdin"])] if api else [])
    packages = [("", {})] + ([(" (baseline)", {"PYTHONPATH": plan["baseline"]})] if plan.get("baseline") else [])
    for package, extra_env in packages:
        for n, (suffix, stdin) in enumerate(variants):
            for verb in VERBS:
                env = {**overhead.cni_env(plan, verb, f"rss{n}{len(package)}", "eth0"), **extra_env}
                # the baseline through pip's console script: the installed launcher (-I) ignores PYTHONPATH
                executable = plan["console_script"] if extra_env else plan["metaplug"]
                out.append({"label": verb + suffix + package, "argv": [executable], "env": env,
                            "stdin": stdin.encode()})
    return out


def driver_main(plan_file: str) -> int:
    """Inside the node namespace: the simulator (for the API rows), then the spawner runs the cases round-robin."""
    plan = json.loads(Path(plan_file).read_text())
    sim = overhead.start_kube_sim(plan) if plan.get("api") else None
    try:
        todo = cases(plan, sim is not None)
        job = {"runs": plan["runs"], "cases": [{k: c[k] for k in ("argv", "env", "stdin")} for c in todo]}
        proc = subprocess.run([sys.executable, "-I", "-S", "-c", SPAWNER], input=marshal.dumps(job),
                              capture_output=True, timeout=120 + 30 * plan["runs"] * len(todo), check=False)
    finally:
        if sim is not None:
            sim.stop()
    if proc.returncode != 0:
        print(json.dumps({"error": f"spawner failed: {proc.stderr.decode(errors='replace')}"}))
        return 1
    data = marshal.loads(proc.stdout)
    rows = {}
    for case, samples in zip(todo, data["results"], strict=True):
        bad = [code for _, _, code in samples if code != 0]
        if bad:
            print(json.dumps({"error": f"{case['label']} failed (exit {bad[0]})"}))
            return 1
        rows[case["label"]] = [rss for _, rss, _ in samples]
    print(json.dumps({"rows": rows, "floor": data["floor"]}))
    return 0


def report(data: dict[str, Any], runs: int, delegates: str) -> dict[str, Any]:
    rows = {label: {"max_mib": round(max(v) / 1024, 1), "median_mib": round(sorted(v)[len(v) // 2] / 1024, 1)}
            for label, v in data["rows"].items()}
    checks = {label: {"peak_mib": rows[label]["max_mib"], "budget_mib": budget,
                      "ok": rows[label]["max_mib"] <= budget}
              for label, budget in BUDGETS_MIB.items() if label in rows}
    return {"runs": runs, "delegates": delegates, "python": platform.python_version(), "kernel": platform.release(),
            "floor_mib": round(data["floor"] / 1024, 1), "rows": rows, "budgets": checks,
            "ok": all(c["ok"] for c in checks.values())}


def markdown(rep: dict[str, Any]) -> str:
    lines = [f"Peak RSS of one metaplug call, {rep['runs']} runs each (delegates: {rep['delegates']}, "
             f"Python {rep['python']}, kernel {rep['kernel']})", "",
             "| call | max MiB | median MiB |", "|---|---:|---:|"]
    lines += [f"| {label} | {r['max_mib']:.1f} | {r['median_mib']:.1f} |" for label, r in rep["rows"].items()]
    lines += ["", f"RSS floor (the spawner's own peak; no row can read lower): {rep['floor_mib']:.1f} MiB"]
    lines += [f"- {label} peak {c['peak_mib']:.1f} MiB (budget <= {c['budget_mib']:g} MiB): "
              f"{'PASS' if c['ok'] else 'FAIL'}" for label, c in rep["budgets"].items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=10, help="runs of each call (default 10)")
    parser.add_argument("--delegates", choices=("reference", "mp"), default="reference")
    parser.add_argument("--plugin-dir", default="/usr/lib/cni", help="reference plugins (default /usr/lib/cni)")
    parser.add_argument("--no-api", action="store_true", help="leave out the calls with the Kubernetes API")
    parser.add_argument("--baseline", metavar="DIR",
                        help="also measure the metaplug package in DIR (as bench/overhead.py --baseline)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON instead of markdown")
    parser.add_argument("--driver", metavar="PLAN", help=argparse.SUPPRESS)  # internal: runs inside the node
    opts = parser.parse_args(argv)
    if opts.driver:
        return driver_main(opts.driver)
    if opts.runs < 1:
        parser.error("--runs must be at least 1")
    problem = need_root()
    if problem:
        print(f"rss.py {problem}", file=sys.stderr)
        return 2
    if not (Path(sys.executable).parent / "metaplug").exists():
        print("no metaplug console script next to this interpreter; run with the venv's python", file=sys.stderr)
        return 2
    if not opts.no_api and importlib.util.find_spec("cryptography") is None:
        print("the API rows need `cryptography` (the test extra) for the simulator; or pass --no-api", file=sys.stderr)
        return 2
    try:
        with Sandbox() as box:
            node, pod = box.netns("node"), box.netns("pod")
            box.veth(node, "uplink0")
            plan = overhead.make_plan(box.tmp, pod, opts.delegates, opts.plugin_dir, 0, 0, api=not opts.no_api)
            plan["runs"] = opts.runs
            if opts.baseline:
                plan["baseline"] = str(Path(opts.baseline).resolve())
            plan_file = box.tmp / "plan.json"
            plan_file.write_text(json.dumps(plan))
            argv_driver = ["ip", "netns", "exec", node, sys.executable, str(Path(__file__).resolve()),
                           "--driver", str(plan_file)]
            proc = subprocess.run(argv_driver, capture_output=True, timeout=600 + 60 * opts.runs, check=False)
    except KeyboardInterrupt:
        print("interrupted; namespaces and temp dir removed", file=sys.stderr)
        return 130
    try:
        data = json.loads(proc.stdout)
    except ValueError:
        print(f"driver failed ({proc.returncode}): {proc.stderr.decode(errors='replace')}", file=sys.stderr)
        return 2
    if "error" in data:
        print(f"driver failed: {data['error']}", file=sys.stderr)
        return 2
    rep = report(data, opts.runs, opts.delegates)
    print(json.dumps(rep, indent=2) if opts.json else markdown(rep))
    return 0 if rep["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
