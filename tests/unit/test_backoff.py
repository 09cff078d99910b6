"""backoff.py: when the hot-plug reconciler tries a failed live change again (issue 12.1), with a given clock."""

from __future__ import annotations

from metaplug.daemon.backoff import CEILING, Backoff, Verdict, wait_after

POD = ("default", "web", "c1")


def test_waits_double_from_one_second_to_five_minutes() -> None:
    assert [wait_after(n) for n in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 8.0]
    assert wait_after(9) == 256.0 and wait_after(10) == CEILING and wait_after(60) == CEILING


def test_a_change_that_never_failed_runs_on_any_reconcile() -> None:
    backoff = Backoff()
    assert backoff.decide(POD, "attach x", 0.0, triggered=True) == Verdict(True)
    assert backoff.decide(POD, "attach x", 0.0, triggered=False) == Verdict(True)


def test_a_failed_change_runs_again_only_on_a_trigger_after_its_wait() -> None:
    backoff = Backoff()
    backoff.failed(POD, "attach x", 10.0)
    assert backoff.decide(POD, "attach x", 20.0, triggered=False) == Verdict(False)  # no trigger: never
    assert backoff.decide(POD, "attach x", 20.0, triggered=True) == Verdict(True)
    backoff.failed(POD, "attach x", 20.0)  # second failure: 2 s
    assert backoff.decide(POD, "attach x", 21.0, triggered=True) == Verdict(False, come_back_at=22.0)  # owed
    assert backoff.decide(POD, "attach x", 21.5, triggered=False) == Verdict(False, come_back_at=22.0)
    assert backoff.decide(POD, "attach x", 22.0, triggered=False) == Verdict(True)  # the owed attempt
    backoff.failed(POD, "attach x", 22.0)
    assert backoff.decide(POD, "attach x", 99.0, triggered=False) == Verdict(False)  # owed no more
    assert backoff.failures(POD)["attach x"].failures == 3


def test_success_and_a_changed_request_forget_the_failures() -> None:
    backoff = Backoff()
    backoff.failed(POD, "attach x", 0.0)
    backoff.failed(POD, "attach y", 0.0)
    backoff.succeeded(POD, "attach x")
    assert backoff.decide(POD, "attach x", 0.0, triggered=True).run
    backoff.keep(POD, {"attach z"})  # y left the request (removed, or changed into z)
    assert backoff.failures(POD) == {}
    backoff.failed(POD, "attach z", 0.0)
    backoff.forget_pods({("default", "other")})
    assert backoff.failures(POD) == {}
