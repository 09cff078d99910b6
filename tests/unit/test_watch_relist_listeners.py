"""A relist (after a 410) tells the reflector's listeners of the objects that changed meanwhile, as MODIFIED: the
daemon's hot-plug reconciler (issue 12.1) must not miss an annotation change that arrived in a list, not an event."""

from __future__ import annotations

from typing import Any

from metaplug.k8s.kubeconfig import Credentials
from metaplug.k8s.watch import Reflector, pods_on_node


class _Answer:
    status_code = 200
    text = ""

    def __init__(self, items: list[dict[str, Any]], rv: str) -> None:
        self.body = {"items": items, "metadata": {"resourceVersion": rv}}

    def json(self) -> dict[str, Any]:
        return self.body


class _Http:
    def __init__(self) -> None:
        self.answers: list[_Answer] = []

    def get(self, *args: Any, **kwargs: Any) -> _Answer:
        return self.answers.pop(0)


class _Observer:
    def watch_event(self, resource: str, type: str) -> None: ...

    def watch_restart(self, resource: str, reason: str) -> None: ...


def pod(name: str, networks: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "default", "uid": "u-" + name, "resourceVersion": "1",
                         "annotations": {"k8s.v1.cni.cncf.io/networks": networks}}}


def test_relist_reports_changed_objects_only() -> None:
    http = _Http()
    creds = Credentials(server="https://127.0.0.1:1", token="t")
    reflector = Reflector(http, creds, pods_on_node("n1"), _Observer())  # type: ignore[arg-type]
    heard: list[tuple[str, str, str]] = []
    reflector.listeners.append(lambda kind, old, new: heard.append(
        (kind, old["metadata"]["annotations"]["k8s.v1.cni.cncf.io/networks"] if old else "",
         new["metadata"]["annotations"]["k8s.v1.cni.cncf.io/networks"])))
    http.answers = [_Answer([pod("a", "red"), pod("b", "red")], "5")]
    reflector._list()
    assert heard == []  # the first list is no change
    http.answers = [_Answer([pod("a", "red,blue"), pod("b", "red"), pod("c", "green")], "9")]
    reflector._list()
    assert heard == [("MODIFIED", "red", "red,blue")]  # b unchanged, c new (ADD's business)
