"""Kubeconfig and in-cluster credentials (metaplug/k8s/kubeconfig.py): every supported field and variant, and the
rule that secrets never show."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metaplug.cni.errors import INVALID_ENVIRONMENT, INVALID_NETWORK_CONFIG, IO_FAILURE, CniError
from metaplug.k8s.kubeconfig import Credentials, in_cluster_credentials, load_kubeconfig

TOKEN = "s3cr3t-token-value-0123456789"
KEY_PEM = b"-----BEGIN PRIVATE KEY-----\nTOPSECRETKEYMATERIAL\n-----END PRIVATE KEY-----\n"
CERT_PEM = b"-----BEGIN CERTIFICATE-----\nCERTBYTES\n-----END CERTIFICATE-----\n"
CA_PEM = b"-----BEGIN CERTIFICATE-----\nCABYTES\n-----END CERTIFICATE-----\n"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def kubeconfig(cluster: dict[str, Any], user: dict[str, Any], *, current: str | None = "main",
               extra_contexts: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "c1", "cluster": cluster}],
        "users": [{"name": "u1", "user": user}],
        "contexts": [{"name": "main", "context": {"cluster": "c1", "user": "u1", "namespace": "team-a"}},
                     *(extra_contexts or [])],
    }
    if current:
        doc["current-context"] = current
    return doc


def write_json(path: Path, doc: Any) -> str:
    path.write_text(json.dumps(doc))
    return str(path)


def write_yaml(path: Path, doc: Any) -> str:
    import yaml

    path.write_text(yaml.safe_dump(doc))
    return str(path)


@pytest.mark.parametrize("writer", [write_json, write_yaml], ids=["json", "yaml"])
def test_token_and_ca_data_in_json_and_yaml(tmp_path: Path, writer: Any) -> None:
    """Inline token + certificate-authority-data, in a JSON (what install writes) and a YAML kubeconfig."""
    path = writer(tmp_path / "kc", kubeconfig({"server": "https://10.0.0.1:6443/", "certificate-authority-data":
                                               b64(CA_PEM)}, {"token": TOKEN}))
    creds = load_kubeconfig(path)
    assert creds.server == "https://10.0.0.1:6443"
    assert creds.ca_data == CA_PEM and creds.ca_file is None and not creds.insecure
    assert creds.bearer_token() == TOKEN
    assert creds.namespace == "team-a" and creds.source == path


def test_relative_files_resolve_against_the_kubeconfig_dir(tmp_path: Path) -> None:
    """certificate-authority, tokenFile, client-certificate and client-key relative to the kubeconfig, as kubectl."""
    sub = tmp_path / "conf"
    sub.mkdir()
    (sub / "tok").write_text(TOKEN + "\n")
    path = write_yaml(sub / "kc", kubeconfig(
        {"server": "https://h:1", "certificate-authority": "ca.crt"},
        {"tokenFile": "tok", "client-certificate": "c.crt", "client-key": "/abs/c.key"}))
    creds = load_kubeconfig(path)
    assert creds.ca_file == str(sub / "ca.crt")
    assert creds.token_file == str(sub / "tok")
    assert creds.client_cert_file == str(sub / "c.crt")
    assert creds.client_key_file == "/abs/c.key"
    assert creds.bearer_token() == TOKEN  # whitespace stripped


def test_client_certificate_data_and_insecure(tmp_path: Path) -> None:
    path = write_json(tmp_path / "kc", kubeconfig(
        {"server": "https://h:1", "insecure-skip-tls-verify": True, "tls-server-name": "api.internal",
         "proxy-url": "http://proxy:3128"},
        {"client-certificate-data": b64(CERT_PEM), "client-key-data": b64(KEY_PEM)}))
    creds = load_kubeconfig(path)
    assert creds.insecure is True
    assert creds.client_cert_data == CERT_PEM and creds.client_key_data == KEY_PEM
    assert creds.tls_server_name == "api.internal" and creds.proxy_url == "http://proxy:3128"
    assert creds.bearer_token() is None
    assert creds.auth_kind() == "client certificate"


def test_context_selection(tmp_path: Path) -> None:
    """An explicit context wins over current-context; a lone context is used when current-context is unset."""
    doc = kubeconfig({"server": "https://one:1"}, {"token": TOKEN},
                     extra_contexts=[{"name": "other", "context": {"cluster": "c2", "user": "u1"}}])
    doc["clusters"].append({"name": "c2", "cluster": {"server": "https://two:2"}})
    path = write_json(tmp_path / "kc", doc)
    assert load_kubeconfig(path).server == "https://one:1"
    assert load_kubeconfig(path, context="other").server == "https://two:2"
    with pytest.raises(CniError) as e:
        load_kubeconfig(path, context="missing")
    assert e.value.code == INVALID_NETWORK_CONFIG and "missing" in e.value.details and path in e.value.details

    lone = write_json(tmp_path / "lone", kubeconfig({"server": "https://one:1"}, {"token": TOKEN}, current=None))
    assert load_kubeconfig(lone).server == "https://one:1"


@pytest.mark.parametrize(("cluster", "user", "expect"), [
    ({}, {"token": TOKEN}, "has no server"),
    ({"server": "h:1"}, {"token": TOKEN}, "not an http(s) URL"),
    ({"server": "https://h:1"}, {"client-certificate": "/c.crt"}, "needs a client key"),
    ({"server": "https://h:1"}, {"exec": {"command": "aws"}}, "exec and auth-provider"),
    ({"server": "https://h:1", "insecure-skip-tls-verify": "yes"}, {}, "insecure-skip-tls-verify"),
    ({"server": "https://h:1"}, {"client-key-data": "!!not base64!!" + TOKEN, "client-certificate-data": "QQ=="},
     "not valid base64"),
])
def test_invalid_kubeconfigs_name_the_problem(tmp_path: Path, cluster: dict[str, Any], user: dict[str, Any],
                                               expect: str) -> None:
    path = write_json(tmp_path / "kc", kubeconfig(cluster, user))
    with pytest.raises(CniError) as e:
        load_kubeconfig(path)
    assert e.value.code == INVALID_NETWORK_CONFIG
    assert expect in e.value.details and path in e.value.details
    assert TOKEN not in str(e.value)  # a bad -data value is never echoed


def test_unreadable_and_unparsable_files(tmp_path: Path) -> None:
    with pytest.raises(CniError) as e:
        load_kubeconfig(str(tmp_path / "absent"))
    assert e.value.code == IO_FAILURE and "absent" in e.value.details
    bad = tmp_path / "bad"
    bad.write_text("clusters: [\n  - {unclosed")
    with pytest.raises(CniError) as e:
        load_kubeconfig(str(bad))
    assert e.value.code == INVALID_NETWORK_CONFIG and "YAML" in e.value.details
    scalar = tmp_path / "scalar"
    scalar.write_text('"just a string"')
    with pytest.raises(CniError) as e:
        load_kubeconfig(str(scalar))
    assert "not a kubeconfig" in e.value.details


def test_repr_never_shows_secrets() -> None:
    creds = Credentials(server="https://h:1", ca_data=CA_PEM, token=TOKEN, client_cert_data=CERT_PEM,
                        client_key_data=KEY_PEM)
    for text in (repr(creds), str(creds), f"{creds}", creds.auth_kind()):
        assert TOKEN not in text
        assert "TOPSECRETKEYMATERIAL" not in text and b64(KEY_PEM) not in text
    assert "https://h:1" in repr(creds)


def test_json_kubeconfig_does_not_import_yaml(tmp_path: Path) -> None:
    """Start-up cost (DESIGN.md): a JSON kubeconfig is read without importing PyYAML, and importing the k8s modules
    imports neither httpx nor tenacity."""
    path = write_json(tmp_path / "kc", kubeconfig({"server": "https://h:1"}, {"token": TOKEN}))
    code = ("import sys; from metaplug.k8s.kubeconfig import load_kubeconfig; import metaplug.k8s.client; "
            f"load_kubeconfig({path!r}); print(sorted(m for m in ('yaml', 'httpx', 'tenacity') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.stdout.strip() == "[]"


def test_in_cluster_credentials(tmp_path: Path) -> None:
    """KUBERNETES_SERVICE_HOST/PORT + the service-account dir; the token file is re-read on every call (rotation)."""
    (tmp_path / "token").write_text("first")
    (tmp_path / "ca.crt").write_bytes(CA_PEM)
    creds = in_cluster_credentials({"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"},
                                   sa_dir=str(tmp_path))
    assert creds.server == "https://10.96.0.1:443"
    assert creds.ca_file == str(tmp_path / "ca.crt") and creds.source == "in-cluster"
    assert creds.bearer_token() == "first"
    (tmp_path / "token").write_text("second")
    assert creds.bearer_token() == "second"
    assert "first" not in repr(creds) and "second" not in repr(creds)

    v6 = in_cluster_credentials({"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "443"},
                                sa_dir=str(tmp_path))
    assert v6.server == "https://[fd00::1]:443"


def test_in_cluster_credentials_missing(tmp_path: Path) -> None:
    with pytest.raises(CniError) as e:
        in_cluster_credentials({}, sa_dir=str(tmp_path))
    assert e.value.code == INVALID_ENVIRONMENT and "KUBERNETES_SERVICE_HOST" in e.value.details
    with pytest.raises(CniError) as e:
        in_cluster_credentials({"KUBERNETES_SERVICE_HOST": "h", "KUBERNETES_SERVICE_PORT": "1"}, sa_dir=str(tmp_path))
    assert str(tmp_path / "token") in e.value.details


def test_token_file_errors_name_the_file_not_the_token(tmp_path: Path) -> None:
    creds = Credentials(server="https://h:1", token_file=str(tmp_path / "gone"))
    with pytest.raises(CniError) as e:
        creds.bearer_token()
    assert e.value.code == IO_FAILURE and "gone" in e.value.details
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(CniError, match="empty"):
        Credentials(server="https://h:1", token_file=str(tmp_path / "empty")).bearer_token()


@settings(max_examples=300)
@given(st.text())
def test_path_segment_is_urllib_quote(text: str) -> None:
    """The client's own percent-encoding (urllib.parse is not imported on the ADD path) matches urllib's."""
    from urllib.parse import quote

    from metaplug.k8s.client import path_segment

    try:
        expected = quote(text, safe="")
    except UnicodeEncodeError:  # lone surrogates: neither can encode them
        with pytest.raises(UnicodeEncodeError):
            path_segment(text)
        return
    assert path_segment(text) == expected


def test_jitter_and_http_date_retry_after() -> None:
    import email.utils
    import time

    from metaplug.k8s.client import _jitter, _retry_after

    draws = [_jitter(1.0) for _ in range(200)]
    assert all(0.0 <= d < 1.0 for d in draws) and len(set(draws)) > 150
    assert _retry_after(email.utils.formatdate(time.time() - 60, usegmt=True)) == 0.0
    odd = _retry_after("Tue, 01 Dec 2026 99:00:00 GMT")  # an impossible time never raises, stays capped
    assert odd is None or 0.0 <= odd <= 30.0
