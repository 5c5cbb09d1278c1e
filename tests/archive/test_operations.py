"""Running it for real: TLS (DCMTK storescu +tls, an HTTPS client), OIDC tokens from a local JWKS, hashed API keys,
health, readiness, Prometheus metrics, JSON logs and one-line failures. The CA, certificates and signing keys are
made here with the ``cryptography`` package."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from tests.archive.conftest import (
    KEYS,
    Server,
    dcmtk,
    free_port,
    serve_jwks,
    start_server,
    stop_server,
    wait_until,
    write_config,
)
from tests.conftest import SINGLES

CT = next(s for s in SINGLES if s.name == "ct_ge_small_signed.dcm")


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(subject: str, issuer_key: Any, issuer: str, key: Any, ca: bool = False) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    builder = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name(issuer))
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if not ca:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(
            "127.0.0.1")), x509.DNSName("localhost")]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _write(path: Path, cert: x509.Certificate, key: Any) -> tuple[str, str]:
    path.with_suffix(".pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    path.with_suffix(".key").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                           serialization.PrivateFormat.TraditionalOpenSSL,
                                                           serialization.NoEncryption()))
    return str(path.with_suffix(".pem")), str(path.with_suffix(".key"))


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("pki")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("cubepacs test CA", ca_key, "cubepacs test CA", ca_key, ca=True)
    ca_pem, _ = _write(root / "ca", ca, ca_key)
    server_key = ec.generate_private_key(ec.SECP256R1())
    cert, key = _write(root / "server", _cert("127.0.0.1", ca_key, "cubepacs test CA", server_key), server_key)
    client_key = ec.generate_private_key(ec.SECP256R1())
    ccert, ckey = _write(root / "modality", _cert("CT-SCANNER-1", ca_key, "cubepacs test CA", client_key),
                         client_key)
    return {"ca": ca_pem, "cert": cert, "key": key, "client_cert": ccert, "client_key": ckey}


@pytest.fixture(scope="module")
def idp() -> Iterator[dict[str, Any]]:
    """A local JWKS endpoint (127.0.0.1) and the RSA key whose public half it serves."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    jwk.update(kid="test-key-1", use="sig", alg="RS256")
    server = serve_jwks({"keys": [jwk]})
    yield {"url": f"http://127.0.0.1:{server.server_address[1]}/jwks.json", "key": key}
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory, pki: dict[str, str], idp: dict[str, Any]) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("secure")
    dimse, http_port = free_port(), free_port()
    tls_port, https_port = free_port(), free_port()
    cfg = write_config(root / "s.toml", root / "data", dimse, http_port, dimse_tls_port=tls_port,
                       https_port=https_port, tls_cert=pki["cert"], tls_key=pki["key"], tls_ca=pki["ca"],
                       tls_client_tenants={"CT-SCANNER-1": "alpha"}, log_format="json",
                       oidc_jwks_url=idp["url"], oidc_issuer="https://idp.test", oidc_audience="cubepacs",
                       oidc_tenant_claim="org")
    srv = start_server(root / "data", cfg, dimse, http_port)
    srv.tls_port, srv.https_port = tls_port, https_port  # type: ignore[attr-defined]
    yield srv
    stop_server(srv)


def test_dicom_tls_with_dcmtk_and_client_certificates(secure: Server, pki: dict[str, str]) -> None:
    tls_port = str(secure.tls_port)  # type: ignore[attr-defined]
    ok = dcmtk("storescu", "+tls", pki["client_key"], pki["client_cert"], "+cf", pki["ca"], "-aec", "CUBEPACS",
               "127.0.0.1", tls_port, str(CT))
    assert ok.returncode == 0, ok.stderr
    # the certificate of CT-SCANNER-1 may only call tenant alpha's AE
    other = dcmtk("echoscu", "+tls", pki["client_key"], pki["client_cert"], "+cf", pki["ca"], "-aec", "BETAPACS",
                  "127.0.0.1", tls_port)
    assert other.returncode != 0
    # no client certificate: the TLS handshake is refused (tls_ca is set)
    anonymous = dcmtk("echoscu", "+tls", "-ic", "+cf", pki["ca"], "-aec", "CUBEPACS", "127.0.0.1", tls_port)
    assert anonymous.returncode != 0
    # the plain listener runs beside it
    assert dcmtk("echoscu", "-aec", "CUBEPACS", "127.0.0.1", str(secure.dimse_port)).returncode == 0
    wait_until(lambda: httpx.get(f"{secure.url}/instances", headers=secure.headers()).status_code == 200)


def test_silent_connections_do_not_block_the_tls_listener(secure: Server, pki: dict[str, str]) -> None:
    """Connections that never start their TLS handshake (a port scanner, a stuck peer) must not hold up the
    others: the handshake runs in the association's own thread, bounded by the ACSE timeout, not in the accept
    loop."""
    tls_port = secure.tls_port  # type: ignore[attr-defined]
    silent = [socket.create_connection(("127.0.0.1", tls_port)) for _ in range(6)]
    try:
        started = time.monotonic()
        ok = dcmtk("echoscu", "+tls", pki["client_key"], pki["client_cert"], "+cf", pki["ca"], "-to", "10",
                   "-aec", "CUBEPACS", "127.0.0.1", str(tls_port))
        assert ok.returncode == 0, ok.stderr
        assert time.monotonic() - started < 8
    finally:
        for s in silent:
            s.close()


def test_https_beside_http(secure: Server, pki: dict[str, str]) -> None:
    url = f"https://127.0.0.1:{secure.https_port}/dicom-web/studies"  # type: ignore[attr-defined]
    import ssl

    with_cert = ssl.create_default_context(cafile=pki["ca"])
    with_cert.load_cert_chain(pki["client_cert"], pki["client_key"])
    with httpx.Client(verify=with_cert) as client:
        assert client.get(url, headers=secure.headers()).status_code in (200, 204)
    with pytest.raises(httpx.HTTPError):  # no client certificate
        httpx.get(url, headers=secure.headers(), verify=ssl.create_default_context(cafile=pki["ca"]))
    assert httpx.get(f"{secure.url}/studies", headers=secure.headers()).status_code in (200, 204)


def _token(idp: dict[str, Any], **claims: Any) -> str:
    now = int(time.time())
    body = {"iss": "https://idp.test", "aud": "cubepacs", "org": "alpha", "iat": now, "exp": now + 300, **claims}
    return jwt.encode(body, idp["key"], algorithm="RS256", headers={"kid": "test-key-1"})


def test_oidc_tokens(secure: Server, idp: dict[str, Any]) -> None:
    url = f"{secure.url}/studies"
    assert httpx.get(url, headers={"Authorization": f"Bearer {_token(idp)}"}).status_code in (200, 204)
    now = int(time.time())
    hs256 = jwt.encode({"org": "alpha", "exp": now + 60}, "hs-secret-0123456789abcdef0123456789", algorithm="HS256")
    for bad in (_token(idp, exp=now - 600), _token(idp, aud="other"), _token(idp, iss="https://evil"),
                _token(idp, org=None), hs256):
        r = httpx.get(url, headers={"Authorization": f"Bearer {bad}"})
        assert r.status_code == 401, r.text
    # within the allowed clock skew (60 s)
    assert httpx.get(url, headers={"Authorization": f"Bearer {_token(idp, exp=now - 20)}"}).status_code in (200, 204)
    beta = _token(idp, org="beta")
    assert httpx.get(f"{secure.url}/instances", headers={"Authorization": f"Bearer {beta}"}).status_code == 204


def test_health_readiness_and_metrics(secure: Server) -> None:
    base = secure.url.replace("/dicom-web", "")
    assert httpx.get(f"{base}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{base}/readyz")
    assert ready.status_code == 200 and ready.json()["index"] == "ok" and ready.json()["queue"] == "ok"
    text = httpx.get(f"{base}/metrics").text
    for name in ("cubepacs_cstore_total", "cubepacs_cstore_seconds_bucket", "cubepacs_cstore_bytes_total",
                 "cubepacs_associations_open", "cubepacs_associations_refused_total", "cubepacs_queue_waiting",
                 "cubepacs_queue_oldest_seconds", "cubepacs_indexed_instances_total", "cubepacs_http_requests_total",
                 "cubepacs_cache_lookups_total"):
        assert name in text, name
    assert 'cubepacs_cstore_total{status="0x0000",tenant="alpha"}' in text
    assert 'route="/dicom-web/studies"' in text


def test_json_logs_and_request_ids(secure: Server) -> None:
    r = httpx.get(f"{secure.url}/studies", headers=secure.headers())
    request_id = r.headers["x-request-id"]
    dcmtk("echoscu", "-aec", "STRANGER", "127.0.0.1", str(secure.dimse_port))
    log = (secure.data_dir.parent / "data.log").read_text()
    docs = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    assert docs and all({"time", "level", "service", "message"} <= d.keys() for d in docs)
    rejected = [d for d in docs if "STRANGER" in d["message"]]
    assert rejected and rejected[-1]["association_id"].startswith("ECHOSCU-")
    assert KEYS["alpha"] not in log
    from deltalake import DeltaTable

    wait_until((secure.data_dir / "logs" / "access" / "_delta_log").exists, timeout=20)
    wait_until(lambda: request_id in DeltaTable(str(secure.data_dir / "logs" / "access")).to_pyarrow_table()
               .column("request_id").to_pylist(), timeout=20)


def test_keys_are_hashed_and_revocable(tmp_path: Path) -> None:
    data = tmp_path / "data"
    created = subprocess.run([sys.executable, "-m", "cubepacs", "keys", "create", "--tenant", "lab",
                              "--data-dir", str(data)], check=False, capture_output=True, text=True)
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip().splitlines()[-1]
    stored = (data / "api-keys.json").read_text()
    assert key not in stored and "sha256:" in stored
    assert oct((data / "api-keys.json").stat().st_mode)[-3:] == "600"
    listed = subprocess.run([sys.executable, "-m", "cubepacs", "keys", "list", "--data-dir", str(data)],
                            check=False, capture_output=True, text=True)
    key_id = listed.stdout.split()[0]
    dimse, http_port = free_port(), free_port()
    cfg = tmp_path / "k.toml"
    cfg.write_text(f'[cubepacs]\ndata_dir = "{data}"\ndimse_port = {dimse}\nhttp_port = {http_port}\n')
    srv = start_server(data, cfg, dimse, http_port)
    try:
        url = f"http://127.0.0.1:{http_port}/dicom-web/studies"
        assert httpx.get(url, headers={"Authorization": f"Bearer {key}"}).status_code == 204
        revoked = subprocess.run([sys.executable, "-m", "cubepacs", "keys", "revoke", key_id, "--data-dir",
                                  str(data)], check=False, capture_output=True, text=True)
        assert revoked.returncode == 0
        assert httpx.get(url, headers={"Authorization": f"Bearer {key}"}).status_code == 401  # at once
    finally:
        stop_server(srv)


def test_one_line_failures(tmp_path: Path) -> None:
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    try:
        run = subprocess.run([sys.executable, "-m", "cubepacs", "serve", "--data-dir", str(tmp_path / "d"),
                              "--http-port", str(port), "--dimse-port", str(free_port())],
                             check=False, capture_output=True, text=True, timeout=60)
    finally:
        busy.close()
    assert run.returncode == 3 and f"127.0.0.1:{port}" in run.stderr and "Traceback" not in run.stderr
    bad = subprocess.run([sys.executable, "-m", "cubepacs", "serve", "--data-dir", str(tmp_path / "d"), "--index",
                          "postgresql://nobody@127.0.0.1:1/x", "--check"], check=False, capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode == 4 and "127.0.0.1:1" in bad.stderr and "Traceback" not in bad.stderr
    ok = subprocess.run([sys.executable, "-m", "cubepacs", "serve", "--data-dir", str(tmp_path / "d"), "--check"],
                        check=False, capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and "index    ok" in ok.stdout
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[cubepacs]\nhttp_port = 'eighty'\n")
    setting = subprocess.run([sys.executable, "-m", "cubepacs", "serve", "--config", str(cfg), "--check"],
                             check=False, capture_output=True, text=True, timeout=60)
    assert setting.returncode == 2 and "http_port" in setting.stderr and "Traceback" not in setting.stderr


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.kafka
@pytest.mark.s3
def test_check_reaches_the_scale_out_backends(tmp_path: Path, seaweedfs: str, kafka_url: str) -> None:
    import os

    env = {**os.environ, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}
    args = [sys.executable, "-m", "cubepacs", "serve", "--data-dir", str(tmp_path / "d"), "--storage", seaweedfs,
            "--queue", kafka_url, "--index", "postgresql://postgres@127.0.0.1:5432/postgres",
            "--cache", "redis://127.0.0.1:6379/12", "--check"]
    ok = subprocess.run(args, check=False, capture_output=True, text=True, timeout=120, env=env)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert all(f"{name:8} ok" in ok.stdout for name in ("index", "queue", "storage", "cache"))
    i = args.index("--queue") + 1
    for bad in ("redis://127.0.0.1:1/0", "kafka://127.0.0.1:1"):
        broken = [*args[:i], bad, *args[i + 1:]]
        run = subprocess.run(broken, check=False, capture_output=True, text=True, timeout=120, env=env)
        assert run.returncode == 4 and "127.0.0.1:1" in run.stdout + run.stderr, run.stdout + run.stderr
        assert "Traceback" not in run.stderr


def test_services_alone_serve_metrics_and_users_sign_in(tmp_path: Path) -> None:
    port, dimse, http_port = free_port(), free_port(), free_port()
    cfg = write_config(tmp_path / "m.toml", tmp_path / "data", dimse, http_port, metrics_port=port)
    proc = subprocess.Popen([sys.executable, "-m", "cubepacs", "indexer", "--config", str(cfg)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: _get(f"http://127.0.0.1:{port}/metrics") is not None, timeout=30)
        assert "cubepacs_indexed_instances_total" in str(_get(f"http://127.0.0.1:{port}/metrics"))
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    # a browser user: password stored as an Argon2id hash, signs in for its tenant
    add = subprocess.run([sys.executable, "-m", "cubepacs", "users", "add", "alice", "--tenant", "alpha",
                          "--data-dir", str(tmp_path / "data"), "--password-stdin"], input="correct horse battery\n",
                         check=False, capture_output=True, text=True)
    assert add.returncode == 0, add.stderr
    stored = (tmp_path / "data" / "users.json").read_text()
    assert "$argon2id$" in stored and "correct horse" not in stored
    srv = start_server(tmp_path / "data", cfg, dimse, http_port)
    try:
        base = f"http://127.0.0.1:{srv.http_port}"
        bad = httpx.post(f"{base}/login", data={"user": "alice", "password": "wrong"})
        assert bad.status_code == 401 and "cubepacs_session" not in bad.cookies
        good = httpx.post(f"{base}/login", data={"user": "alice", "password": "correct horse battery"})
        assert good.status_code == 303 and "cubepacs_session" in good.cookies
        cookie = {"cubepacs_session": good.cookies["cubepacs_session"]}
        assert httpx.get(f"{base}/dicom-web/studies", cookies=cookie).status_code in (200, 204)
        out = httpx.post(f"{base}/logout", cookies=cookie)
        assert out.status_code == 303 and 'cubepacs_session=""' in out.headers["set-cookie"]
    finally:
        stop_server(srv)



def _get(url: str) -> str | None:
    try:
        return httpx.get(url, timeout=2).text
    except httpx.HTTPError:
        return None
