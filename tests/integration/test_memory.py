"""Issue 9, defect 8: the peak memory of one thin-mode call stays within its budget (20 MiB for an ADD without the
Kubernetes API; it was 24.5 MiB before the lazy-import work).

Peak RSS is ru_maxrss from wait4 of the metaplug process, read by a minimal spawner (`python -I -S`, builtin modules
only), because Linux folds the spawning process's own high-water mark into the child's ru_maxrss at exec: a spawner
as big as pytest would hide what metaplug uses. Unlike times, RSS hardly depends on the machine's load, so this is a
test and not only a benchmark (bench/rss.py reports the figures, with the API too).
"""

from __future__ import annotations

import json
import marshal
import sys

from tests.helpers.metaplug_env import MetaplugWorld
from tests.helpers.netns import Netns

ADD_BUDGET_KIB = 20 * 1024

SPAWNER = r"""
import marshal, os, sys
job = marshal.loads(sys.stdin.buffer.read())
out = []
for case in job:
    r, w = os.pipe()
    null = os.open(os.devnull, os.O_RDWR)
    pid = os.posix_spawn(case["argv"][0], case["argv"], case["env"],
                         file_actions=[(os.POSIX_SPAWN_DUP2, r, 0), (os.POSIX_SPAWN_DUP2, null, 1),
                                       (os.POSIX_SPAWN_DUP2, null, 2)])
    os.close(r)
    os.write(w, case["stdin"])
    os.close(w)
    _, status, usage = os.wait4(pid, 0)
    out.append((os.waitstatus_to_exitcode(status), usage.ru_maxrss))
sys.stdout.buffer.write(marshal.dumps(out))
"""


def _peak_kib(world: MetaplugWorld, calls: list[tuple[str, dict]], pod: Netns) -> list[tuple[int, int]]:
    job = []
    for verb, conf in calls:
        argv, stdio = world.command(verb, conf, pod=pod)
        job.append({"argv": argv, "env": stdio["env"], "stdin": stdio["input"]})
    proc = world.node.exec([sys.executable, "-I", "-S", "-c", SPAWNER], input=marshal.dumps(job), timeout=120)
    result: list[tuple[int, int]] = marshal.loads(proc.stdout)
    return result


def test_issue9_defect8_peak_rss_of_one_add_is_within_budget(world: MetaplugWorld, pod: Netns) -> None:
    world.add_nad("blue", world.macvlan_static_net("blue"))
    world.add_nad("red", world.macvlan_hostlocal_net("red", "10.97.0.0/24"))
    cluster = world.bridge_net("cluster", "10.88.0.0/24", "mpcl0")
    conf = world.annotated(world.metaplug_conf(cluster),
                           [{"name": "blue", "ips": ["192.168.77.10/24"]}, {"name": "red"}])
    (add_code, add_kib), (del_code, del_kib) = _peak_kib(world, [("ADD", conf), ("DEL", conf)], pod)
    assert (add_code, del_code) == (0, 0), json.dumps(world.state_files())
    assert add_kib <= ADD_BUDGET_KIB, f"ADD peaked at {add_kib / 1024:.1f} MiB (budget 20 MiB)"
    assert del_kib <= ADD_BUDGET_KIB, f"DEL peaked at {del_kib / 1024:.1f} MiB"
    assert not pod.has_link("eth0") and world.reservations() == [] and world.state_files() == []
