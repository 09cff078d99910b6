#!/usr/bin/env python3
"""A fault-injecting fake CNI delegate (standard library only).

Tests copy this file into a temp bin dir under any name, chmod +x, and steer it through its config:

    {"type": "<name>", "fake": {
        "mode": "ok",                   # default behaviour for every command (see MODES)
        "on": {"DEL": "error-json"},    # per-command override of mode
        "result": {...},                # ADD result (cniVersion = the config's, unless mode no-version)
        "error": {"code": 117, "msg": "...", "details": "..."},   # for error-json
        "exit": 1,                      # exit status of the failing modes
        "stderr": "text",               # written to stderr on every call
        "sleep": 0.5,                   # seconds to wait before answering
        "versions": ["1.0.0"],          # supportedVersions of the VERSION reply
        "log": "/path/calls.jsonl",     # every call appended: command, CNI_* and trace env, stdin, pid, plugin,
                                        # time
        "fill": "/path/filler",         # on ADD, before answering: write zeros there until its filesystem is full
        "stamp": "bandwidth"}}          # on ADD (mode ok), the result passed on gets dns.options ["<key>=<JSON of
                                        # runtimeConfig[key]>"]: a plugin whose result depends on its runtimeConfig

VERSION probes carry no config, so defaults may also come from a sidecar file `<this executable>.json` holding the
same object as "fake" (the config's "fake" overrides it key by key).

Imported as a module (tests.helpers.fake_delegate), `install(bin_dir, name, defaults)` does the copying.

MODES:
  ok              ADD prints `result` (else prevResult passed through, else a made-up result); VERSION replies with
                  all versions; other commands print nothing
  crash           text on stderr, nothing on stdout, exit 2 (or "exit")
  signal          killed by SIGKILL
  hang            spawns a sleeping child (same process group) and sleeps forever; the child's pid is logged
  garbage         prints non-JSON on stdout and exits 0
  garbage-error   prints non-JSON on stdout and exits 1
  error-json      prints the JSON error on stdout, exits 1
  error-nojson    message on stderr only, exits 1
  old-version     speaks 0.2.0 only: VERSION says {"cniVersion": "0.2.0"}; ADD answers in 0.2.0 format
  unknown-version a pre-VERSION plugin: VERSION fails with `unknown CNI_COMMAND: VERSION`; the rest as ok
  no-version      ADD result without cniVersion
  empty           exit 0 without output, ADD included
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from typing import Any

TRACE_VARS = ("TRACEPARENT", "TRACESTATE", "BAGGAGE")  # the trace context a runtime passes on (cni #1173)
ALL_VERSIONS = ["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]


def main() -> None:
    raw = sys.stdin.buffer.read()
    try:
        conf = json.loads(raw) if raw.strip() else {}
    except ValueError:
        conf = {}
    if not isinstance(conf, dict):
        conf = {}
    fake: dict[str, Any] = load_sidecar()
    own = conf.get("fake")
    if isinstance(own, dict):
        fake.update(own)
    command = os.environ.get("CNI_COMMAND", "")
    mode = (fake.get("on") or {}).get(command, fake.get("mode", "ok"))
    version = conf.get("cniVersion") or "0.1.0"

    entry: dict[str, Any] = {
        "plugin": os.path.basename(sys.argv[0]),
        "command": command,
        "mode": mode,
        "env": {k: v for k, v in os.environ.items() if k.startswith("CNI_") or k in TRACE_VARS},
        "stdin": conf if conf or not raw.strip() else raw.decode(errors="replace"),
        "pid": os.getpid(),
        "pgid": os.getpgid(0),
        "time": time.time(),
    }
    if fake.get("stderr"):
        sys.stderr.write(str(fake["stderr"]) + "\n")
        sys.stderr.flush()
    if mode == "hang":
        child = subprocess.Popen([sys.executable, "-c", "import time\nwhile True: time.sleep(60)"])
        entry["child_pid"] = child.pid
        write_log(fake, entry)
        while True:
            time.sleep(60)
    write_log(fake, entry)
    if fake.get("fill") and command == "ADD":
        fill(str(fake["fill"]))
    if fake.get("sleep"):
        time.sleep(float(fake["sleep"]))
    status = int(fake.get("exit", 1))

    if mode == "crash":
        sys.stderr.write("fake delegate: simulated crash\nTraceback (most recent call last): ...\n")
        sys.exit(int(fake.get("exit", 2)))
    if mode == "signal":
        os.kill(os.getpid(), signal.SIGKILL)
    if mode == "garbage":
        print("this is not JSON {")
        sys.exit(0)
    if mode == "garbage-error":
        print("this is not JSON either {")
        sys.exit(status)
    if mode == "error-json":
        err = {"cniVersion": version, "code": 117, "msg": "fake delegate failure", "details": f"{command} refused"}
        err.update(fake.get("error") or {})
        print(json.dumps(err))
        sys.exit(status)
    if mode == "error-nojson":
        sys.stderr.write(f"fake delegate: {command} failed without a JSON error\n")
        sys.exit(status)
    if mode == "empty":
        sys.exit(0)

    if command == "VERSION":
        if mode == "old-version":
            reply: dict[str, Any] = {"cniVersion": "0.2.0"}
        elif mode == "unknown-version":
            print(json.dumps({"code": 4, "msg": "unknown CNI_COMMAND: VERSION"}))
            sys.exit(1)
        else:
            reply = {"cniVersion": version, "supportedVersions": fake.get("versions", ALL_VERSIONS)}
        print(json.dumps(reply))
        return
    if command == "ADD":
        print(json.dumps(add_result(conf, fake, mode, version)))


def add_result(conf: dict[str, Any], fake: dict[str, Any], mode: str, version: str) -> dict[str, Any]:
    if mode == "old-version":
        return {"cniVersion": "0.2.0", "ip4": {"ip": "10.99.0.2/24", "gateway": "10.99.0.1"}, "dns": {}}
    if fake.get("result") is not None:
        result = dict(fake["result"])
    elif fake.get("stamp") and isinstance(conf.get("prevResult"), dict):
        key = str(fake["stamp"])
        value = (conf.get("runtimeConfig") or {}).get(key)
        result = {**conf["prevResult"], "dns": {"options": [f"{key}={json.dumps(value, sort_keys=True)}"]}}
    elif isinstance(conf.get("prevResult"), dict):
        result = dict(conf["prevResult"])
    elif version in ("0.1.0", "0.2.0"):
        result = {"ip4": {"ip": "10.99.0.2/24"}}
    else:
        ip: dict[str, Any] = {"address": "10.99.0.2/24", "interface": 0}
        if version.startswith("0."):
            ip["version"] = "4"
        result = {
            "interfaces": [{"name": os.environ.get("CNI_IFNAME", ""), "sandbox": os.environ.get("CNI_NETNS", "")}],
            "ips": [ip],
        }
    if mode == "no-version":
        result.pop("cniVersion", None)
    else:
        result["cniVersion"] = version
    return result


def fill(path: str) -> None:
    """Make the filesystem holding `path` full (ENOSPC), as a disk that fills up while metaplug runs."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        while True:
            try:
                os.write(fd, b"\0" * 4096)
            except OSError:
                return
    finally:
        os.close(fd)


def load_sidecar() -> dict[str, Any]:
    try:
        with open(sys.argv[0] + ".json") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_log(fake: dict[str, Any], entry: dict[str, Any]) -> None:
    path = fake.get("log")
    if not path:
        return
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, (json.dumps(entry) + "\n").encode())
    finally:
        os.close(fd)


def install(bin_dir: str | os.PathLike[str], name: str = "fake", defaults: dict[str, Any] | None = None) -> str:
    """Copy this script into `bin_dir` as an executable `name` (with a sidecar of `defaults`); returns its path."""
    os.makedirs(bin_dir, exist_ok=True)
    path = os.path.join(os.fspath(bin_dir), name)
    shutil.copyfile(os.path.abspath(__file__), path)
    os.chmod(path, 0o755)
    if defaults is not None:
        with open(path + ".json", "w") as f:
            json.dump(defaults, f)
    return path


def read_log(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The calls logged so far (an absent log: no calls)."""
    try:
        with open(path) as f:
            return [json.loads(line) for line in f if line.strip()]
    except FileNotFoundError:
        return []


if __name__ == "__main__":
    main()
