"""Accounts for real: ``cubepacs serve`` and a second ``cubepacs web`` process on the same data folder, changed by
the command line (a third process) while they run — users and keys take effect at once, sessions end on the
server everywhere, failed sign-ins are limited, the audit log records who did what to which study, DIMSE peers
are held to their roles (DCMTK clients; a DCMTK storescp as the C-MOVE destination), and the first start's key
reaches the operator through a 0600 file when the output is not a terminal.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pydicom
import pytest

from cubepacs.archive.auth import apikeys
from cubepacs.archive.web.session import COOKIE, remove_user, save_user
from tests.archive.conftest import Server, dcmtk, free_port, start_server, stop_all, stop_server, wait_port, wait_until
from tests.conftest import SINGLES

pytestmark = pytest.mark.dcmtk
CT = next(s for s in SINGLES if s.name == "ct_ge_small_signed.dcm")


@dataclass
class Site:
    serve: Server
    other: int  # the HTTP port of the second web process
    admin: str  # the key made at first start
    keys: dict[str, str]
    dest: Path  # where the C-MOVE destination writes

    def base(self, second: bool = False) -> str:
        return f"http://127.0.0.1:{self.other if second else self.serve.http_port}"


def cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cubepacs", *args], input=stdin, check=False, capture_output=True,
                          text=True, timeout=120)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("accounts")
    data, dest = root / "data", root / "dest"
    dest.mkdir()
    dimse, http_port, other, dest_port = free_port(), free_port(), free_port(), free_port()
    cfg = root / "a.toml"
    cfg.write_text(f'[cubepacs]\ndata_dir = "{data}"\ndimse_port = {dimse}\nhttp_port = {http_port}\n'
                   'quiet_seconds = 1.0\nlog_interval = 1.0\n'
                   f'remote_aes = {{ "DEST" = "127.0.0.1:{dest_port}", "VIEWER" = "127.0.0.1:{dest_port}" }}\n'
                   'dimse_roles = { "VIEWER" = "viewer", "*" = "user" }\n')
    data.mkdir()
    srv = start_server(data, cfg, dimse, http_port)
    procs: list[subprocess.Popen[bytes]] = []
    logs = [open(root / "web2.log", "ab"), open(root / "dest.log", "ab")]
    try:
        procs.append(subprocess.Popen([sys.executable, "-m", "cubepacs", "web", "--config", str(cfg), "--http-port",
                                       str(other)], stdout=logs[0], stderr=subprocess.STDOUT,
                                      env={**os.environ, "PYTHONWARNINGS": "ignore"}))
        procs.append(subprocess.Popen(["storescp", "-aet", "DEST", "-od", str(dest), str(dest_port)],
                                      stdout=logs[1], stderr=subprocess.STDOUT))
        wait_port(other, procs[0])
        wait_port(dest_port, procs[1])
        admin = (data / "initial-api-key").read_text().strip()
        made = cli("keys", "create", "--role", "user", "--data-dir", str(data))
        assert made.returncode == 0 and "user key for tenant default" in made.stderr, made.stderr
        keys = {"user": made.stdout.strip().splitlines()[-1], "viewer": apikeys.create(data, "default", "viewer")}
        yield Site(srv, other, admin, keys, dest)
    finally:
        stop_all(procs, logs)
        stop_server(srv)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def sign_in(site: Site, user: str, password: str, second: bool = False, address: str = "127.0.0.1") -> httpx.Response:
    with httpx.Client(transport=httpx.HTTPTransport(local_address=address)) as client:
        return client.post(f"{site.base(second)}/login", data={"user": user, "password": password})


def studies(site: Site, cookie: str, second: bool = False) -> int:
    return httpx.get(f"{site.base(second)}/dicom-web/studies", cookies={COOKIE: cookie}).status_code


def test_first_start_writes_the_key_to_a_private_file(site: Site) -> None:
    path = site.serve.data_dir / "initial-api-key"
    assert oct(path.stat().st_mode)[-3:] == "600"
    log = (site.serve.data_dir.parent / "data.log").read_text()
    assert str(path) in log and site.admin not in log
    me = httpx.get(f"{site.base()}/api/me", headers=bearer(site.admin)).json()
    assert me["tenant"] == "default" and me["role"] == "admin"


def test_users_and_keys_take_effect_at_once_in_every_process(site: Site) -> None:
    assert sign_in(site, "bob", "correct horse 1").status_code == 401
    add = cli("users", "add", "bob", "--role", "viewer", "--data-dir", str(site.serve.data_dir), "--password-stdin",
              stdin="correct horse 1\n")
    assert add.returncode == 0, add.stderr
    first = sign_in(site, "bob", "correct horse 1")
    assert first.status_code == 303
    assert sign_in(site, "bob", "correct horse 1", second=True).status_code == 303
    cookie = first.cookies[COOKIE]
    assert studies(site, cookie) == studies(site, cookie, second=True) == 204
    assert remove_user(site.serve.data_dir, "bob")  # (this test's process: neither server's)
    assert studies(site, cookie) == studies(site, cookie, second=True) == 401
    assert sign_in(site, "bob", "correct horse 1").status_code == 401
    assert sign_in(site, "bob", "correct horse 1", second=True).status_code == 401
    made = apikeys.create(site.serve.data_dir, "default", "viewer")
    assert httpx.get(f"{site.base(True)}/api/me", headers=bearer(made)).json()["role"] == "viewer"
    session = httpx.post(f"{site.base()}/login", data={"api_key": made}).cookies[COOKIE]
    assert studies(site, session, second=True) == 204
    revoked = cli("keys", "revoke", apikeys.key_id_of(apikeys.hash_key(made)), "--data-dir", str(site.serve.data_dir))
    assert revoked.returncode == 0, revoked.stderr
    assert httpx.get(f"{site.base()}/api/me", headers=bearer(made)).status_code == 401
    assert httpx.get(f"{site.base(True)}/api/me", headers=bearer(made)).status_code == 401
    assert studies(site, session) == studies(site, session, second=True) == 401


def test_sign_out_password_change_and_end_all_end_sessions_everywhere(site: Site) -> None:
    data = site.serve.data_dir
    save_user(data, "carol", "first password", "default", "user")
    # sign-out in the second process ends the session in both: a copy of the cookie answers 401
    one = sign_in(site, "carol", "first password").cookies[COOKIE]
    assert httpx.post(f"{site.base(True)}/logout", cookies={COOKIE: one}).status_code == 303
    assert studies(site, one) == studies(site, one, second=True) == 401
    # a password change ends every session of the user
    two, three = (sign_in(site, "carol", "first password", second=s).cookies[COOKIE] for s in (False, True))
    assert studies(site, two) == studies(site, three, second=True) == 204
    save_user(data, "carol", "second password", "default", "user")
    assert studies(site, two) == studies(site, three) == 401
    assert sign_in(site, "carol", "first password").status_code == 401
    # an admin ends all sessions of the tenant (its own bearer key keeps working: it is no session)
    four = sign_in(site, "carol", "second password").cookies[COOKIE]
    listed = httpx.get(f"{site.base(True)}/api/sessions", headers=bearer(site.admin)).json()
    assert [s["who"] for s in listed] == ["user:carol"]
    ended = httpx.post(f"{site.base(True)}/api/sessions/end", headers=bearer(site.admin), json={"all": True})
    assert ended.json() == {"ended": 1}
    assert studies(site, four) == 401
    assert httpx.get(f"{site.base()}/api/me", headers=bearer(site.admin)).status_code == 200


def test_failed_sign_ins_are_limited_per_user_and_per_address(site: Site) -> None:
    for name in ("dave", "erin"):
        save_user(site.serve.data_dir, name, "right password", "default", "viewer")
    for _ in range(5):  # from 127.0.0.2
        assert sign_in(site, "dave", "wrong password", address="127.0.0.2").status_code == 401
    refused = sign_in(site, "dave", "right password", address="127.0.0.3")  # the right one, another address
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) > 800
    assert sign_in(site, "dave", "right password", second=True).status_code == 429  # in the other process too
    assert sign_in(site, "erin", "right password", address="127.0.0.2").status_code == 303  # 5 < 20 per address
    for i in range(20):  # 20 failures from 127.0.0.4, each for another name
        assert sign_in(site, f"nobody{i}", "x", address="127.0.0.4").status_code == 401
    assert sign_in(site, "erin", "right password", address="127.0.0.4").status_code == 429
    assert sign_in(site, "erin", "right password", address="127.0.0.5").status_code == 303


def test_audit_log_records_who_did_what_to_which_study(site: Site) -> None:
    from cubepacs.archive.web import multipart

    study = str(pydicom.dcmread(CT, stop_before_pixels=True).StudyInstanceUID)
    body, ctype = multipart.encode([CT.read_bytes()], "application/dicom")
    viewer, user = bearer(site.keys["viewer"]), bearer(site.keys["user"])
    assert httpx.post(f"{site.base()}/dicom-web/studies", content=body,
                      headers={**viewer, "Content-Type": ctype}).status_code == 403
    assert httpx.post(f"{site.base()}/dicom-web/studies", content=body,
                      headers={**user, "Content-Type": ctype}).status_code == 200
    wait_until(lambda: httpx.get(f"{site.base()}/dicom-web/studies/{study}/metadata", headers=viewer)
               .status_code == 200)
    assert httpx.get(f"{site.base(True)}/dicom-web/studies/{study}", headers=viewer).status_code == 200
    assert httpx.delete(f"{site.base()}/api/studies/{study}", headers=user).status_code == 403
    sent = httpx.post(f"{site.base()}/api/send", headers=user, json={"to": "DEST", "level": "study", "uid": study})
    assert sent.status_code == 200 and '"sent": 1' in sent.text
    assert httpx.delete(f"{site.base(True)}/api/studies/{study}", headers=bearer(site.admin)).json() == {"deleted": 1}
    assert httpx.get(f"{site.base()}/api/audit", headers=user).status_code == 403
    rows = httpx.get(f"{site.base()}/api/audit", headers=bearer(site.admin), params={"study": study}).json()
    who = {r: httpx.get(f"{site.base()}/api/me", headers=bearer(k)).json()["who"]
           for r, k in (("viewer", site.keys["viewer"]), ("user", site.keys["user"]), ("admin", site.admin))}
    seen = {(r["who"], r["action"]) for r in rows}
    assert {(who["viewer"], "view"), (who["viewer"], "download"), (who["user"], "refused:delete"),
            (who["user"], "send"), (who["admin"], "delete")} <= seen, seen
    assert all(r["study"] == study for r in rows)
    uploads = httpx.get(f"{site.base()}/api/audit", headers=bearer(site.admin), params={"action": "upload"}).json()
    assert [r["who"] for r in uploads] == [who["user"]]
    # the access log's Delta table carries who, role, action and study too
    from deltalake import DeltaTable

    table = site.serve.data_dir / "logs" / "access"

    def logged() -> bool:
        if not (table / "_delta_log").exists():
            return False
        t = DeltaTable(str(table)).to_pyarrow_table().to_pylist()
        return any(r["action"] == "delete" and r["study_uid"] == study and r["user"] == who["admin"]
                   and r["role"] == "admin" for r in t)

    wait_until(logged, timeout=30)


def test_dimse_peers_are_held_to_their_roles(site: Site, tmp_path: Path) -> None:
    port = str(site.serve.dimse_port)
    refused = dcmtk("storescu", "-v", "-aet", "VIEWER", "-aec", "CUBEPACS", "127.0.0.1", port, str(CT))
    assert refused.returncode != 0 and "Store Response (Unknown Status: 0x124)" in refused.stderr, refused
    stored = dcmtk("storescu", "-aet", "MODALITY", "-aec", "CUBEPACS", "127.0.0.1", port, str(CT))
    assert stored.returncode == 0 and "0x0124" not in stored.stderr, stored.stderr
    study = str(pydicom.dcmread(CT, stop_before_pixels=True).StudyInstanceUID)
    wait_until(lambda: httpx.get(f"{site.base()}/dicom-web/studies", headers=bearer(site.admin),
                                 params={"StudyInstanceUID": study}).status_code == 200)
    found = dcmtk("findscu", "-aet", "VIEWER", "-aec", "CUBEPACS", "-S", "-X", "-k", "QueryRetrieveLevel=STUDY",
                  "-k", f"StudyInstanceUID={study}", "127.0.0.1", port, cwd=tmp_path)
    assert found.returncode == 0 and len(list(tmp_path.glob("rsp*.dcm"))) == 1
    for f in site.dest.iterdir():  # (the audit test sent this study here already)
        f.unlink()
    moved = dcmtk("movescu", "-aet", "VIEWER", "-aec", "CUBEPACS", "-aem", "DEST", "-S", "-k",
                  "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study}", "127.0.0.1", port)
    assert moved.returncode != 0 and "Refused: MoveDestinationUnknown" in moved.stderr, moved.stderr  # 0xA801
    assert not list(site.dest.iterdir())
    moved = dcmtk("movescu", "-aet", "MODALITY", "-aec", "CUBEPACS", "-aem", "DEST", "-S", "-k",
                  "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study}", "127.0.0.1", port)
    assert moved.returncode == 0, moved.stderr
    wait_until(lambda: len(list(site.dest.iterdir())) == 1)
    got = tmp_path / "got"
    got.mkdir()
    fetched = dcmtk("getscu", "-aet", "VIEWER", "-aec", "CUBEPACS", "-S", "-k", "QueryRetrieveLevel=STUDY", "-k",
                    f"StudyInstanceUID={study}", "-od", str(got), "127.0.0.1", port)
    assert fetched.returncode == 0 and len(list(got.iterdir())) == 1, fetched.stderr
    # the audit log: the peers' queries, retrievals and refusals, by calling AE
    rows = httpx.get(f"{site.base()}/api/audit", headers=bearer(site.admin), params={"who": "ae:VIEWER"}).json()
    assert {(r["action"], r["study"]) for r in rows} >= {("refused:upload", None), ("search", study),
                                                          ("refused:send", study), ("download", study)}, rows
    rows = httpx.get(f"{site.base()}/api/audit", headers=bearer(site.admin), params={"who": "ae:MODALITY"}).json()
    assert [(r["action"], r["study"], r["detail"]) for r in rows] == [("send", study, "C-MOVE")]
