"""Start-up cost of metaplug: median/p90 wall time and peak RSS of one CNI call, against bare Python.

    .venv/bin/python bench/startup.py [--runs 30] [--json]

A runtime starts one process per CNI call, so what VERSION or a rejected ADD costs is metaplug's floor. Measured:
`python3 -c pass` (this interpreter), `metaplug` VERSION, `metaplug` ADD with missing CNI_* variables (fails in env
parsing, cni.md 2), the bundled `mp-bridge` VERSION when installed, and daemon mode's static `metaplug-shim` VERSION
beside `/bin/true`. Budget: metaplug VERSION within 60 ms of bare Python start-up, and every metaplug call under
40 MiB peak RSS. (The shim's own peak RSS is below the spawner's floor here; `/usr/bin/time -v` reads it.)

How: a minimal interpreter (`python -I -S`, builtin modules only) spawns the commands round-robin with posix_spawn
and reaps each with os.wait4, whose ru_maxrss (KiB) is the child's peak RSS. Linux counts the parent's peak at exec
time into the child's ru_maxrss (exec_mmap keeps the old mm's high-water mark), so the spawner is kept small; its
own memory high-water mark (VmHWM) is printed as the floor below which no row can read. No root needed; nothing but
processes is created.
"""

from __future__ import annotations

import argparse
import json
import marshal
import platform
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _netns import BASE_PATH, median, ms, p90

VERSION_BUDGET_MS = 60.0
RSS_BUDGET_MIB = 40.0

# Runs inside `python -I -S`: reads marshal {"runs", "cases"} on stdin, writes marshal {"results", "floor"} on stdout.
# Only builtin modules, so its own peak RSS (the floor of every measurement) stays near bare interpreter size.
SPAWNER = r"""
import marshal, os, sys, time
job = marshal.loads(sys.stdin.buffer.read())
null = os.open(os.devnull, os.O_RDWR)
def once(case):
    r, w = os.pipe()
    t0 = time.perf_counter_ns()
    pid = os.posix_spawn(case["argv"][0], case["argv"], case["env"],
                         file_actions=[(os.POSIX_SPAWN_DUP2, r, 0), (os.POSIX_SPAWN_DUP2, null, 1),
                                       (os.POSIX_SPAWN_DUP2, null, 2)])
    os.close(r)
    try:
        os.write(w, case["stdin"])
    except BrokenPipeError:
        pass
    os.close(w)
    _, status, usage = os.wait4(pid, 0)
    return time.perf_counter_ns() - t0, usage.ru_maxrss, os.waitstatus_to_exitcode(status)
results = [[] for _ in job["cases"]]
for i, case in enumerate(job["cases"]):
    once(case)  # warm-up: page cache, bytecode caches
for _ in range(job["runs"]):
    for i, case in enumerate(job["cases"]):
        results[i].append(once(case))
# The floor is this process's own memory high-water mark (VmHWM); getrusage(RUSAGE_SELF) would also count the
# parent's peak inherited at exec, which the children do not see.
with open("/proc/self/status") as fh:
    floor = next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:"))
sys.stdout.buffer.write(marshal.dumps({"results": results, "floor": floor}))
"""


@dataclass
class Case:
    label: str
    argv: list[str]
    env: dict[str, str]
    stdin: bytes
    expect_ok: bool  # exit 0 expected (else a CNI error, non-zero exit with a JSON error on stdout)
    metaplug: bool = False
    times_ms: list[float] = field(default_factory=list)
    rss_kib: list[int] = field(default_factory=list)
    bad_exits: int = 0


def build_cases(bin_dir: Path, launcher: Path | None = None) -> tuple[list[Case], list[str]]:
    """The commands to measure, and notes about the ones left out. `launcher`: what `metaplug install --mode thin`
    writes for the console script (metaplug/launcher.py), measured beside it."""
    base = {"PATH": f"{bin_dir}:{BASE_PATH}"}
    version_in = b'{"cniVersion":"1.1.0"}'
    metaplug = str(bin_dir / "metaplug")
    cases = [
        Case("python3 -c pass", [sys.executable, "-c", "pass"], dict(base), b"", True),
        Case("python3 -I -S -c pass", [sys.executable, "-I", "-S", "-c", "pass"], dict(base), b"", True),
        Case("metaplug VERSION", [metaplug], {**base, "CNI_COMMAND": "VERSION"}, version_in, True, metaplug=True),
        # cni.md 2: ADD without CNI_CONTAINERID/NETNS/IFNAME/PATH is rejected before the config is looked at.
        Case("metaplug ADD, missing CNI_* vars", [metaplug], {**base, "CNI_COMMAND": "ADD"},
             b'{"cniVersion":"1.1.0","name":"bench","type":"metaplug"}', False, metaplug=True),
    ]
    notes: list[str] = []
    if launcher is not None:
        cases.append(Case("metaplug VERSION, installed launcher", [str(launcher)], {**base, "CNI_COMMAND": "VERSION"},
                          version_in, True))
    else:
        notes.append("the installed launcher left out: install would copy the console script unchanged")
    shim = bin_dir / "metaplug-shim"
    if shim.exists():  # daemon mode's static shim answers VERSION itself; /bin/true is the floor of any exec
        cases.append(Case("/bin/true", ["/bin/true"], dict(base), b"", True))
        cases.append(Case("metaplug-shim VERSION", [str(shim)], {**base, "CNI_COMMAND": "VERSION"}, version_in, True))
    else:
        notes.append(f"metaplug-shim VERSION left out: {shim} is not built (bash .ci/setup)")
    bridge = bin_dir / "mp-bridge"
    if bridge.exists():
        case = Case("mp-bridge VERSION", [str(bridge)], {**base, "CNI_COMMAND": "VERSION"}, version_in, True)
        problem = sanity(case)
        if problem is None:
            cases.append(case)
        else:
            notes.append(f"mp-bridge VERSION left out: {problem}")
    else:
        notes.append(f"mp-bridge VERSION left out: {bridge} is not installed")
    return cases, notes


def sanity(case: Case) -> str | None:
    """Run `case` once and check its answer; None when it behaves as expected, else what is wrong."""
    proc = subprocess.run(case.argv, input=case.stdin, env=case.env, capture_output=True, timeout=60, check=False)
    out = proc.stdout.decode(errors="replace").strip()
    if case.expect_ok:
        if proc.returncode != 0:
            return f"exit {proc.returncode}: {(out + ' ' + proc.stderr.decode(errors='replace')).strip()[:300]}"
        if "VERSION" in case.label and "supportedVersions" not in out:
            return f"no supportedVersions in the answer: {out[:200]}"
        return None
    if proc.returncode == 0:
        return "exited 0, a CNI error was expected"
    try:
        code = json.loads(out).get("code")
    except ValueError:
        return f"no JSON error on stdout: {out[:200]}"
    return None if code == 4 else f"error code {code}, expected 4 (cni.md 2)"


def measure(cases: list[Case], runs: int) -> int:
    """Fill in each case's samples; returns the spawner's own peak RSS (KiB), the floor of every RSS reading."""
    job = {"runs": runs, "cases": [{"argv": c.argv, "env": c.env, "stdin": c.stdin} for c in cases]}
    proc = subprocess.run([sys.executable, "-I", "-S", "-c", SPAWNER], input=marshal.dumps(job),
                          capture_output=True, timeout=60 + runs * len(cases) * 10, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"spawner failed ({proc.returncode}): {proc.stderr.decode(errors='replace')}")
    data = marshal.loads(proc.stdout)
    for case, samples in zip(cases, data["results"], strict=True):
        for elapsed_ns, rss, code in samples:
            case.times_ms.append(ms([elapsed_ns])[0])
            case.rss_kib.append(rss)
            if (code == 0) != case.expect_ok:
                case.bad_exits += 1
    return int(data["floor"])


def summary(cases: list[Case], floor_kib: int, runs: int, notes: list[str]) -> dict[str, Any]:
    rows = [{"command": c.label, "median_ms": round(median(c.times_ms), 2), "p90_ms": round(p90(c.times_ms), 2),
             "peak_rss_mib": round(max(c.rss_kib) / 1024, 1), "unexpected_exits": c.bad_exits} for c in cases]
    by_label = {c.label: c for c in cases}
    bare = median(by_label["python3 -c pass"].times_ms)
    version = median(by_label["metaplug VERSION"].times_ms)
    peak = max(max(c.rss_kib) for c in cases if c.metaplug) / 1024
    checks = {
        "version_overhead_ms": round(version - bare, 2),
        "version_ok": version - bare <= VERSION_BUDGET_MS,
        "metaplug_peak_rss_mib": round(peak, 1),
        "rss_ok": peak < RSS_BUDGET_MIB,
        "no_unexpected_exits": all(c.bad_exits == 0 for c in cases),
    }
    return {"runs": runs, "python": platform.python_version(), "kernel": platform.release(),
            "rss_floor_mib": round(floor_kib / 1024, 1), "rows": rows, "budget": checks, "notes": notes}


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def markdown(report: dict[str, Any]) -> str:
    b = report["budget"]
    lines = [
        f"Start-up, {report['runs']} runs each (Python {report['python']}, kernel {report['kernel']})",
        "",
        "| command | median ms | p90 ms | peak RSS MiB |",
        "|---|---:|---:|---:|",
        *(f"| {r['command']} | {r['median_ms']:.1f} | {r['p90_ms']:.1f} | {r['peak_rss_mib']:.1f} |"
          for r in report["rows"]),
        "",
        f"RSS floor (the spawner's own peak; no row can read lower): {report['rss_floor_mib']:.1f} MiB",
        f"- VERSION start-up over bare Python: {b['version_overhead_ms']:.1f} ms (budget {VERSION_BUDGET_MS:g} ms): "
        f"{verdict(b['version_ok'])}",
        f"- metaplug peak RSS: {b['metaplug_peak_rss_mib']:.1f} MiB (budget < {RSS_BUDGET_MIB:g} MiB): "
        f"{verdict(b['rss_ok'])}",
    ]
    if not b["no_unexpected_exits"]:
        lines.append("- WARNING: some runs exited unexpectedly (see unexpected_exits in --json)")
    lines.extend(f"- note: {n}" for n in report["notes"])
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=30, help="measured runs per command (default 30)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON instead of markdown")
    opts = parser.parse_args(argv)
    if opts.runs < 1:
        parser.error("--runs must be at least 1")
    bin_dir = Path(sys.executable).parent
    if not (bin_dir / "metaplug").exists():
        print(f"no metaplug console script in {bin_dir}; run with the venv's python", file=sys.stderr)
        return 2
    from metaplug.launcher import write_launcher

    with tempfile.TemporaryDirectory(prefix="mp-startup-") as tmp:
        launcher: Path | None = Path(tmp) / "metaplug"
        if not write_launcher(str(bin_dir / "metaplug"), str(launcher)):
            launcher = None
        cases, notes = build_cases(bin_dir, launcher)
        for case in cases:
            problem = sanity(case)
            if problem is not None:
                print(f"{case.label}: {problem}", file=sys.stderr)
                return 2
        floor = measure(cases, opts.runs)
    report = summary(cases, floor, opts.runs, notes)
    print(json.dumps(report, indent=2) if opts.json else markdown(report))
    b = report["budget"]
    return 0 if b["version_ok"] and b["rss_ok"] and b["no_unexpected_exits"] else 1


if __name__ == "__main__":
    sys.exit(main())
