"""metaplug.cni.lazylog: `logging` is imported only for a record that is emitted (thin-mode start-up, issue 10.7)."""

from __future__ import annotations

import json
import subprocess
import sys


def run_isolated(code: str) -> str:
    """`code` in a fresh interpreter (this one has logging loaded by pytest); returns its stdout."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def test_records_below_the_threshold_import_nothing_and_the_first_one_above_sets_up_logging() -> None:
    code = (
        "import sys\n"
        "from metaplug.cni import lazylog\n"
        "seen = []\n"
        "def activate():\n"
        "    import logging\n"
        "    class Keep(logging.Handler):\n"
        "        def emit(self, record): seen.append((record.levelname, record.getMessage(), record.funcName))\n"
        "    logging.getLogger('t').addHandler(Keep()); logging.getLogger('t').setLevel(logging.INFO)\n"
        "    seen.append('activated')\n"
        "log = lazylog.LazyLogger('t')\n"
        "lazylog.defer(lazylog.INFO, activate)\n"
        "log.debug('dropped %s', 1)\n"
        "before = 'logging' in sys.modules\n"
        "def caller():\n"
        "    log.info('kept %s', 2)\n"
        "    log.debug('below the level of the real logger')\n"
        "    log.warning('also kept')\n"
        "caller()\n"
        "import json; print(json.dumps([before, seen]))\n"
    )
    before, seen = json.loads(run_isolated(code))
    assert before is False
    assert seen == ["activated", ["INFO", "kept 2", "caller"], ["WARNING", "also kept", "caller"]]


def test_with_logging_already_loaded_defer_sets_it_up_at_once() -> None:
    code = (
        "import logging\n"
        "from metaplug.cni import lazylog\n"
        "calls = []\n"
        "lazylog.defer(lazylog.ERROR, lambda: calls.append(1))\n"
        "print(calls)\n"
    )
    assert run_isolated(code) == "[1]"


def test_a_quiet_del_never_imports_logging() -> None:
    code = (
        "import sys, json\n"
        "from metaplug.plugin import run\n"
        "env = {'CNI_COMMAND': 'DEL', 'CNI_CONTAINERID': 'c', 'CNI_IFNAME': 'eth0'}\n"
        "st = run(env, json.dumps({'cniVersion': '1.0.0', 'name': 'n', 'stateDir': '/nonexistent/x'}).encode())\n"
        "assert st[0] == 0, st\n"
        "print('logging' in sys.modules)\n"
    )
    assert run_isolated(code) == "False"


def test_a_warning_is_still_a_json_line_on_stderr() -> None:
    """Deferred set-up changes nothing in what is logged: metaplug's JSON lines, with the call's context."""
    code = (
        "import json\n"
        "from metaplug.plugin import run\n"
        "env = {'CNI_COMMAND': 'GC', 'CNI_PATH': '/nonexistent'}\n"
        "st = run(env, json.dumps({'cniVersion': '1.1.0', 'name': 'n', 'stateDir': '/nonexistent/x'}).encode())\n"
        "assert st[0] == 0, st\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    line = json.loads(proc.stderr.strip().splitlines()[-1])
    assert line["level"] == "warning" and "valid-attachments" in line["msg"] and line["verb"] == "GC"
