"""cni.workers: reused daemon threads for ns.run_in and in-process delegates (no thread start per call)."""

from __future__ import annotations

import os
import threading

import pytest

from metaplug.cni import invoke, ns, workers
from metaplug.cni.errors import DELEGATE_TIMEOUT, CniError
from tests.helpers.netns import Netns


def _netns_inode() -> int:
    return os.stat("/proc/thread-self/ns/net").st_ino


def test_an_idle_thread_is_reused_and_errors_reach_the_caller() -> None:
    pool = workers.Pool("test")
    first = pool.run(threading.get_ident)
    assert pool.run(threading.get_ident) == first
    with pytest.raises(ValueError, match="boom"):
        pool.run(lambda: (_ for _ in ()).throw(ValueError("boom")))
    assert pool.run(threading.get_ident) == first  # a failing job does not cost the thread


def test_a_busy_thread_is_not_shared_and_a_late_job_frees_its_thread() -> None:
    pool = workers.Pool("test")
    release = threading.Event()
    slow = pool.submit(lambda: release.wait(10) and threading.get_ident())
    assert not slow.wait(0.05)  # the caller stopped waiting; the job runs on
    other = pool.run(threading.get_ident)
    release.set()
    assert slow.wait(5)
    assert slow.result() != other
    assert pool.run(threading.get_ident) in (other, slow.result())


def test_a_retired_thread_serves_no_other_job() -> None:
    pool = workers.Pool("test")

    def last() -> threading.Thread:
        workers.retire()
        return threading.current_thread()

    retired = pool.run(last)
    retired.join(5)
    assert not retired.is_alive()
    assert pool.run(threading.current_thread) is not retired


def test_run_in_enters_the_namespace_and_its_thread_comes_back(pod: Netns) -> None:
    """The reused thread is inside the pod's namespace only for the job: the next job (without setns) sees the
    process's own namespace again, and the caller never left it."""
    own = _netns_inode()
    with ns.opened(pod.path) as fd:
        inside = ns.run_in(fd, _netns_inode)
        assert inside == os.fstat(fd).st_ino != own
        with pytest.raises(KeyError):
            ns.run_in(fd, lambda: {}["missing"])  # an error inside still brings the thread back
    assert ns._pool is not None
    assert ns._pool.run(_netns_inode) == own
    assert _netns_inode() == own


def test_an_in_process_plugin_past_its_timeout_runs_on_and_the_caller_gets_code_100() -> None:
    release = threading.Event()

    def plugin(env: object, stdin: bytes) -> tuple[int, str, str]:
        release.wait(10)
        return 0, "", ""

    with pytest.raises(CniError) as err:
        invoke._serve(plugin, "mp-slow", "ADD", b"{}", {}, 0.05)
    assert err.value.code == DELEGATE_TIMEOUT
    release.set()
    assert invoke._serve(lambda env, stdin: (0, '{"ok":1}', ""), "mp-fast", "ADD", b"{}", {}, 5) == (0, '{"ok":1}', "")
