"""KubeClient against the HTTPS Kubernetes API simulator (tests/helpers/kube_sim.py), over loopback only.

Proves the client's contract: every kubeconfig variant authenticates; permanent errors (401/403/404/422, TLS) are
never retried and are code 110; transient ones (503, 429 + Retry-After, dropped connections, dead server, latency)
are retried until one overall deadline and then code 11; network-status is published (R17..R23) by merge patch or
GET + PUT with 409 retries; the token never leaks. Every test runs with both transports under the client: the standard
library's HTTP/1.1 one that thin mode uses, and httpx (the daemon's).
"""

from __future__ import annotations

import json
import logging
import re
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from metaplug.cni.errors import KUBERNETES_API, TRY_AGAIN_LATER, CniError
from metaplug.k8s import client as client_module
from metaplug.k8s.client import API_CALLS, NETWORK_STATUS_ANNOTATION, KubeClient, new_http_client
from metaplug.k8s.kubeconfig import Credentials, in_cluster_credentials, load_kubeconfig
from tests.helpers.kube_sim import KubeSim, make_ca

NS, POD = "default", "web"
STATUS = [{"name": "cluster", "interface": "eth0", "ips": ["10.0.0.5"], "mac": "0a:58:0a:00:00:05", "default": True},
          {"name": "default/bridge-net", "interface": "net1", "ips": ["10.77.0.3"], "mac": "0a:58:0a:4d:00:03",
           "default": False}]


@pytest.fixture(autouse=True, params=["http11", "httpx"])
def transport(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The transport every KubeClient of the test opens: thin mode's own (http11) or httpx."""
    if request.param == "httpx":
        from metaplug.k8s.transport import HttpxTransport

        monkeypatch.setattr(client_module, "open_transport", lambda creds, user_agent="metaplug": HttpxTransport(
            new_http_client(creds, user_agent=user_agent), creds.tls_server_name, owned=True))
    return str(request.param)


@pytest.fixture
def sim() -> Iterator[KubeSim]:
    with KubeSim() as s:
        s.add_pod(NS, POD, annotations={"keep": "me"}, uid="uid-1")
        yield s


def client_for(sim: KubeSim, tmp_path: Path, mode: str = "token", *, deadline: float = 3.0,
               **kw: str) -> KubeClient:
    return KubeClient(load_kubeconfig(sim.kubeconfig(tmp_path / mode / "kubeconfig", mode, **kw)), deadline=deadline)


def statuses(sim: KubeSim) -> list[int]:
    return [r.status for r in sim.requests]


# -- credentials -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("mode", "fmt", "auth"), [
    ("token", "yaml", "token#1"), ("token", "json", "token#1"), ("tokenFile", "yaml", "token#1"),
    ("cert", "yaml", "cert:metaplug-node"), ("cert-data", "json", "cert:metaplug-node"),
    ("ca-file", "yaml", "token#1"), ("ca-data", "yaml", "token#1"), ("insecure", "yaml", "token#1"),
])
def test_every_kubeconfig_variant_authenticates(sim: KubeSim, tmp_path: Path, mode: str, fmt: str, auth: str) -> None:
    """token, tokenFile, client certificate (files and data), CA file vs data, insecure: a real TLS handshake and the
    simulator sees the expected identity."""
    creds = load_kubeconfig(sim.kubeconfig(tmp_path / "kubeconfig", mode, fmt=fmt))
    with KubeClient(creds) as kube:
        pod = kube.get_pod(NS, POD)
    assert pod["metadata"]["uid"] == "uid-1"
    assert [(r.method, r.path, r.auth) for r in sim.requests] == [("GET", f"/api/v1/namespaces/{NS}/pods/{POD}", auth)]
    assert "authorization" not in {k.lower() for k in sim.requests[0].headers}  # the log keeps no secret


def test_client_key_data_temp_file_is_removed(sim: KubeSim, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """client-certificate-data / client-key-data go through a 0600 temp file that is deleted at once."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    with client_for(sim, tmp_path, "cert-data") as kube:
        assert list(scratch.iterdir()) == []
        kube.get_pod(NS, POD)
    assert sim.requests[0].auth == "cert:metaplug-node"


def test_in_cluster_credentials_against_the_simulator(sim: KubeSim, tmp_path: Path) -> None:
    env = sim.service_account(tmp_path / "sa")
    with KubeClient(in_cluster_credentials(env, sa_dir=str(tmp_path / "sa"))) as kube:
        assert kube.get_pod(NS, POD)["metadata"]["name"] == POD


def test_token_file_reread_on_every_call(sim: KubeSim, tmp_path: Path) -> None:
    """The token rotates between two calls of the same client: the second call uses the new token."""
    with client_for(sim, tmp_path, "tokenFile") as kube:
        kube.get_pod(NS, POD)
        sim.rotate_token()  # the old token stops working; the file is rewritten
        kube.get_pod(NS, POD)
    assert [(r.auth, r.status) for r in sim.requests] == [("token#1", 200), ("token#2", 200)]


@pytest.mark.parametrize(("name", "ok"), [("kubernetes.default.svc", True), ("wrong.example", False)])
def test_tls_server_name(sim: KubeSim, tmp_path: Path, name: str, ok: bool) -> None:
    """tls-server-name is the name verified in the server's certificate; a mismatch is permanent (not retried)."""
    with client_for(sim, tmp_path, tls_server_name=name) as kube:
        if ok:
            kube.get_pod(NS, POD)
            return
        started = time.monotonic()
        with pytest.raises(CniError) as e:
            kube.get_pod(NS, POD)
    assert e.value.code == KUBERNETES_API and "TLS" in e.value.msg
    assert time.monotonic() - started < 1.0 and sim.requests == []


def test_unknown_certificate_authority_is_permanent(sim: KubeSim, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.serialization import Encoding

    other_ca, _ = make_ca()
    creds = Credentials(server=sim.server, ca_data=other_ca.public_bytes(Encoding.PEM), token=sim.token, source="x")
    with KubeClient(creds, deadline=3) as kube, pytest.raises(CniError) as e:
        kube.get_pod(NS, POD)
    assert e.value.code == KUBERNETES_API and "certificate" in e.value.details
    assert sim.requests == []


# -- permanent errors: never retried -----------------------------------------------------------------------------------
def test_401_not_retried_and_token_not_shown(sim: KubeSim, tmp_path: Path) -> None:
    kube = client_for(sim, tmp_path)
    old = sim.token
    sim.rotate_token()  # the kubeconfig's inline token is now invalid
    with kube, pytest.raises(CniError) as e:
        kube.get_pod(NS, POD)
    assert e.value.code == KUBERNETES_API and "401" in e.value.details and "credentials" in e.value.details
    assert statuses(sim) == [401]
    assert old not in str(e.value) and old not in repr(e.value)


@pytest.mark.parametrize("code", [400, 403, 422])
def test_other_permanent_statuses_not_retried(sim: KubeSim, tmp_path: Path, code: int) -> None:
    sim.fail_next(1, status=code)
    with client_for(sim, tmp_path) as kube, pytest.raises(CniError) as e:
        kube.get_pod(NS, POD)
    assert e.value.code == KUBERNETES_API and str(code) in e.value.details
    assert statuses(sim) == [code]


def test_missing_pod_and_missing_nad(sim: KubeSim, tmp_path: Path) -> None:
    """404: a NAD is None (the caller reports which network is missing); a pod is a distinct "pod not found" error."""
    sim.add_nad(NS, "bridge-net", json.dumps({"cniVersion": "1.0.0", "type": "bridge"}))
    with client_for(sim, tmp_path) as kube:
        assert kube.get_nad(NS, "absent") is None
        nad = kube.get_nad(NS, "bridge-net")
        assert nad is not None and json.loads(nad["spec"]["config"])["type"] == "bridge"
        with pytest.raises(CniError) as e:
            kube.get_pod(NS, "ghost")
    assert e.value.code == KUBERNETES_API and e.value.msg == "pod default/ghost not found"
    assert statuses(sim) == [404, 200, 404]
    assert sim.requests[1].path == f"/apis/k8s.cni.cncf.io/v1/namespaces/{NS}/network-attachment-definitions/bridge-net"


def test_nad_crd_not_installed_is_an_error_not_none(sim: KubeSim, tmp_path: Path) -> None:
    sim.crd_installed = False
    with client_for(sim, tmp_path) as kube, pytest.raises(CniError) as e:
        kube.get_nad(NS, "bridge-net")
    assert e.value.code == KUBERNETES_API and "CRD" in e.value.msg


# -- transient errors: retried within the deadline ---------------------------------------------------------------------
def test_two_503s_survived(sim: KubeSim, tmp_path: Path) -> None:
    sim.fail_next(2, status=503)
    with client_for(sim, tmp_path) as kube:
        assert kube.get_pod(NS, POD)["metadata"]["name"] == POD
    assert statuses(sim) == [503, 503, 200]


@pytest.mark.parametrize("code", [500, 502, 504])
def test_5xx_retried(sim: KubeSim, tmp_path: Path, code: int) -> None:
    sim.fail_next(1, status=code)
    with client_for(sim, tmp_path) as kube:
        kube.get_pod(NS, POD)
    assert statuses(sim) == [code, 200]


def test_429_retry_after_honoured(sim: KubeSim, tmp_path: Path) -> None:
    sim.fail_next(1, status=429, retry_after=1)
    with client_for(sim, tmp_path, deadline=4) as kube:
        assert kube.get_nad(NS, "absent") is None
    assert statuses(sim) == [429, 404]
    # The wait between the two attempts is the server's Retry-After, not the (sub-second) backoff.
    first, second = sim.requests
    assert 1.0 <= second.at - first.at < 2.0


def test_retry_after_beyond_the_deadline_fails_fast(sim: KubeSim, tmp_path: Path) -> None:
    """A Retry-After the deadline cannot honour: give up now with code 11 instead of sleeping past the deadline."""
    sim.fail_next(1, status=429, retry_after=20)
    started = time.monotonic()
    with client_for(sim, tmp_path, deadline=2) as kube, pytest.raises(CniError) as e:
        kube.get_pod(NS, POD)
    assert e.value.code == TRY_AGAIN_LATER and "429" in e.value.details
    assert time.monotonic() - started < 1.0 and statuses(sim) == [429]


def test_dropped_connections_retried(sim: KubeSim, tmp_path: Path) -> None:
    sim.drop_next(2)
    with client_for(sim, tmp_path) as kube:
        kube.get_pod(NS, POD)
    assert statuses(sim) == [0, 0, 200]


def test_dead_server_is_try_again_later_within_the_deadline(sim: KubeSim, tmp_path: Path) -> None:
    kube = client_for(sim, tmp_path, deadline=1.5)
    sim.stop()
    started = time.monotonic()
    with kube, pytest.raises(CniError) as e:
        kube.get_pod(NS, POD)
    elapsed = time.monotonic() - started
    assert e.value.code == TRY_AGAIN_LATER and "try again later" in e.value.msg
    assert sim.server in e.value.msg and "refused" in e.value.details.lower()
    assert elapsed < 1.5 + 1.0
    attempts = int(re.search(r"(\d+) attempt", e.value.details)[1])  # type: ignore[index]
    assert attempts > 1  # it did retry


def test_server_that_never_answers_is_bounded_by_the_deadline(sim: KubeSim, tmp_path: Path) -> None:
    sim.latency = 10
    started = time.monotonic()
    with client_for(sim, tmp_path, deadline=1.0) as kube, pytest.raises(CniError) as e:
        kube.get_pod(NS, POD)
    assert e.value.code == TRY_AGAIN_LATER and "Timeout" in e.value.details
    assert time.monotonic() - started < 2.0


def test_persistent_503_reports_the_last_status(sim: KubeSim, tmp_path: Path) -> None:
    sim.fail_next(1000, status=503)
    started = time.monotonic()
    with client_for(sim, tmp_path, deadline=1.0) as kube, pytest.raises(CniError) as e:
        kube.get_nad(NS, "bridge-net")
    assert e.value.code == TRY_AGAIN_LATER and "503" in e.value.details and "NetworkAttachmentDefinition" in \
        e.value.details
    assert time.monotonic() - started < 2.0 and len(sim.requests) > 2


def test_deadline_is_overall_and_can_be_restarted(sim: KubeSim, tmp_path: Path) -> None:
    """One deadline for the client (one CNI call), not per request; reset_deadline starts a new one."""
    kube = client_for(sim, tmp_path, deadline=1.0)
    time.sleep(1.05)
    with kube:
        with pytest.raises(CniError) as e:
            kube.get_pod(NS, POD)
        assert e.value.code == TRY_AGAIN_LATER and sim.requests == []
        kube.reset_deadline()
        kube.get_pod(NS, POD)
    assert statuses(sim) == [200]


# -- network-status ----------------------------------------------------------------------------------------------------
def test_publish_network_status_by_merge_patch(sim: KubeSim, tmp_path: Path) -> None:
    """R17..R23: the annotation is set through pods/status with a JSON merge patch; other annotations stay."""
    rv_before = sim.pods[(NS, POD)]["metadata"]["resourceVersion"]
    with client_for(sim, tmp_path) as kube:
        kube.publish_network_status(NS, POD, STATUS)
    (req,) = sim.requests
    assert (req.method, req.path, req.status) == ("PATCH", f"/api/v1/namespaces/{NS}/pods/{POD}/status", 200)
    assert req.headers["Content-Type"] == "application/merge-patch+json"
    annotations = sim.annotations(NS, POD)
    assert json.loads(annotations[NETWORK_STATUS_ANNOTATION]) == STATUS and annotations["keep"] == "me"
    assert int(sim.pods[(NS, POD)]["metadata"]["resourceVersion"]) > int(rv_before)


def test_publish_falls_back_to_put_and_retries_409(sim: KubeSim, tmp_path: Path) -> None:
    """Merge patch refused (415): GET + PUT with the resourceVersion; two concurrent writers in a row cause 409s,
    each followed by a fresh GET."""
    sim.merge_patch_supported = False
    sim.conflict_next(2)
    with client_for(sim, tmp_path) as kube:
        kube.publish_network_status(NS, POD, STATUS)
    assert [(r.method, r.status) for r in sim.requests] == [
        ("PATCH", 415), ("GET", 200), ("PUT", 409), ("GET", 200), ("PUT", 409), ("GET", 200), ("PUT", 200)]
    annotations = sim.annotations(NS, POD)
    assert json.loads(annotations[NETWORK_STATUS_ANNOTATION]) == STATUS and annotations["keep"] == "me"


def test_publish_to_a_missing_pod(sim: KubeSim, tmp_path: Path) -> None:
    with client_for(sim, tmp_path) as kube, pytest.raises(CniError) as e:
        kube.publish_network_status(NS, "ghost", STATUS)
    assert e.value.code == KUBERNETES_API and e.value.msg == "pod default/ghost not found"


def test_publish_survives_a_503(sim: KubeSim, tmp_path: Path) -> None:
    sim.fail_next(1, status=503, match="/status")
    with client_for(sim, tmp_path) as kube:
        kube.publish_network_status(NS, POD, STATUS)
    assert statuses(sim) == [503, 200]


# -- events ------------------------------------------------------------------------------------------------------------
def test_post_event(sim: KubeSim, tmp_path: Path) -> None:
    with client_for(sim, tmp_path) as kube:
        kube.post_event(NS, POD, "AddedInterface", "Add net1 [10.77.0.3/24] from default/bridge-net", uid="uid-1")
    (event,) = sim.events
    assert event["reason"] == "AddedInterface" and event["type"] == "Normal"
    assert event["involvedObject"] == {"apiVersion": "v1", "kind": "Pod", "namespace": NS, "name": POD, "uid": "uid-1"}
    assert event["source"]["component"] == "metaplug"


def test_post_event_is_best_effort(sim: KubeSim, tmp_path: Path) -> None:
    """Never raises, never retries, never outlives a short budget: a dead server, a 500, a spent deadline."""
    kube = client_for(sim, tmp_path, deadline=3.0)
    sim.fail_next(1, status=500)
    kube.post_event(NS, POD, "NoNetworkFound", "cannot find NAD x", type="Warning")
    assert statuses(sim) == [500] and sim.events == []
    sim.latency = 5
    started = time.monotonic()
    kube.post_event(NS, POD, "NoNetworkFound", "cannot find NAD x", type="Warning")
    assert time.monotonic() - started < 1.5
    sim.latency = 0
    sim.stop()
    kube.post_event(NS, POD, "NoNetworkFound", "cannot find NAD x", type="Warning")
    kube.close()


# -- secrets and RBAC --------------------------------------------------------------------------------------------------
def test_token_never_in_errors_or_logs(sim: KubeSim, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    token = sim.token
    errors: list[str] = []
    with client_for(sim, tmp_path, deadline=1.0) as kube:
        sim.fail_next(1, status=503)
        kube.get_pod(NS, POD)  # retried: logs a retry line
        sim.fail_next(1, status=403)
        with pytest.raises(CniError) as e:
            kube.get_pod(NS, POD)
        errors += [str(e.value), repr(e.value), json.dumps(e.value.to_dict("1.0.0"))]
        kube.post_event(NS, POD, "AddedInterface", "x")
        sim.stop()
        with pytest.raises(CniError) as e:
            kube.get_pod(NS, POD)
        errors += [str(e.value), repr(e.value)]
    assert sim.requests[0].auth == "token#1"  # the token WAS sent, so its absence below means something
    assert "retry" in caplog.text.lower()  # logging was captured
    assert token not in caplog.text
    for text in errors:
        assert token not in text
    for req in sim.requests:
        assert token not in json.dumps(req.headers)


def _rbac_key(method: str, path: str) -> tuple[str, str, str]:
    """(apiGroup, resource, verb) of a request, as the API server's authorizer sees it."""
    path = path.split("?")[0]
    verb = {"GET": "get", "PATCH": "patch", "PUT": "update", "POST": "create", "DELETE": "delete"}[method]
    m = re.match(r"^/api/v1/namespaces/[^/]+/(\w+)(?:/[^/]+(/status)?)?$", path)
    if m:
        return "", m[1] + ("/status" if m[2] else ""), verb
    m = re.match(r"^/apis/([^/]+)/v1/namespaces/[^/]+/([\w-]+)(?:/([^/]+))?$", path)
    assert m, path
    return m[1], m[2], verb if m[3] or method != "GET" else "list"


def test_every_request_is_declared_in_api_calls(sim: KubeSim, tmp_path: Path) -> None:
    """The client only makes the calls API_CALLS declares (which tests/unit/test_k8s_manifests.py checks against
    the RBAC rules)."""
    sim.add_nad(NS, "n", "{}")
    sim.merge_patch_supported = False
    with client_for(sim, tmp_path) as kube:
        kube.get_pod(NS, POD)
        kube.get_nad(NS, "n")
        kube.publish_network_status(NS, POD, STATUS)
        sim.merge_patch_supported = True
        kube.publish_network_status(NS, POD, STATUS)
        kube.post_event(NS, POD, "AddedInterface", "x")
    used = {_rbac_key(r.method, r.path) for r in sim.requests}
    assert used == set(API_CALLS)


def test_retry_after_forms() -> None:
    """Retry-After as delta-seconds or HTTP date; capped; garbage ignored (then the jittered backoff applies)."""
    import email.utils

    from metaplug.k8s.client import MAX_RETRY_AFTER, _retry_after

    assert _retry_after("2") == 2.0 and _retry_after(None) is None and _retry_after("soon") is None
    assert _retry_after("100000") == MAX_RETRY_AFTER
    when = _retry_after(email.utils.formatdate(time.time() + 3, usegmt=True))
    assert when is not None and 1.5 < when <= 3.0
