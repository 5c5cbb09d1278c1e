"""Behind a reverse proxy: ``trusted_proxies`` decides whose ``X-Forwarded-*`` headers are believed — by the
sign-in rate limit (per browser, not per proxy), by uvicorn itself (``forwarded_allow_ips``) and by the public
base URL — against a real ``cubepacs serve``; the proxy is a second loopback address (127.0.0.2) the test
connects from. And the admin UI's session pages on an archive without its accounts database answer a page
saying so, not a 500.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from cubepacs.archive.auth.accounts import PER_ADDRESS
from cubepacs.archive.web.session import COOKIE, save_user
from tests.archive.conftest import KEYS, Server, free_port, start_server, stop_server, write_config

PROXY, OTHER = "127.0.0.2", "127.0.0.3"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("proxies")
    dimse, http_port = free_port(), free_port()
    cfg = write_config(root / "p.toml", root / "data", dimse, http_port, trusted_proxies=[PROXY])
    save_user(root / "data", "pat", "pat's password", "alpha", "viewer")
    srv = start_server(root / "data", cfg, dimse, http_port)
    yield srv
    stop_server(srv)


def post_login(site: Server, user: str, password: str, peer: str = "127.0.0.1",
               headers: dict[str, str] | None = None) -> httpx.Response:
    """A sign-in from ``peer``; without a user name, with ``password`` as an API key (a failure that costs no
    Argon2 check: counted against the address only)."""
    form = {"user": user, "password": password} if user else {"api_key": password}
    with httpx.Client(transport=httpx.HTTPTransport(local_address=peer)) as client:
        return client.post(f"http://127.0.0.1:{site.http_port}/login", data=form, headers=headers or {})


def test_sign_in_limit_counts_the_browser_behind_a_trusted_proxy(site: Server) -> None:
    for i in range(PER_ADDRESS):  # one browser behind the proxy fails again and again
        assert post_login(site, "", f"no-key-{i}", PROXY, {"X-Forwarded-For": "198.51.100.1"}).status_code == 401
    refused = post_login(site, "pat", "pat's password", PROXY, {"X-Forwarded-For": "198.51.100.1"})
    assert refused.status_code == 429
    # another browser behind the same proxy is not in that bucket (nor is the proxy itself)
    assert post_login(site, "pat", "pat's password", PROXY, {"X-Forwarded-For": "198.51.100.2"}).status_code == 303
    assert post_login(site, "pat", "pat's password", PROXY,
                      {"X-Forwarded-For": "198.51.100.3, 127.0.0.2"}).status_code == 303
    # a client that is no proxy cannot pick its bucket: its X-Forwarded-For is ignored, its failures are its own
    for i in range(PER_ADDRESS):
        assert post_login(site, "", f"no-key-{i}", OTHER, {"X-Forwarded-For": f"203.0.113.{i}"}).status_code == 401
    assert post_login(site, "pat", "pat's password", OTHER, {"X-Forwarded-For": "203.0.113.99"}).status_code == 429
    # the audit log names the browser, not the proxy
    rows = httpx.get(f"http://127.0.0.1:{site.http_port}/api/audit", params={"action": "sign-in"},
                     headers={"Authorization": f"Bearer {KEYS['alpha']}"}).json()
    assert {r["address"] for r in rows} >= {"198.51.100.2", "198.51.100.3"}
    assert PROXY not in {r["address"] for r in rows}


def test_uvicorn_believes_only_the_trusted_proxies(site: Server) -> None:
    https = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "198.51.100.9", "X-Forwarded-Host": "pacs.example"}
    # from 127.0.0.1 (uvicorn's own default trust, not in trusted_proxies): plain http, the cookie is not Secure
    direct = post_login(site, "pat", "pat's password", "127.0.0.1", https)
    assert direct.status_code == 303 and "secure" not in direct.headers["set-cookie"].lower()
    via = post_login(site, "pat", "pat's password", PROXY, https)
    assert via.status_code == 303 and "secure" in via.headers["set-cookie"].lower()
    # the viewer's configuration names the proxy's public address only for the proxy's requests
    for response, expected, absent in ((via, "https://pacs.example/dicom-web", None),
                                       (direct, f"http://127.0.0.1:{site.http_port}/dicom-web", "pacs.example")):
        with httpx.Client(transport=httpx.HTTPTransport(local_address=PROXY if response is via else "127.0.0.1"),
                          cookies={COOKIE: response.cookies[COOKIE]}) as client:
            config = client.get(f"http://127.0.0.1:{site.http_port}/app-config.js", headers=https).text
        assert expected in config
        assert absent is None or absent not in config


@contextlib.contextmanager
def in_process(tmp_path: Path, sessions: Any = None) -> Iterator[httpx.Client]:
    """The archive's app over real backends in ``tmp_path``, ``sessions`` its accounts database (None: none, as
    bench/ and fuzz/ run it), served by uvicorn in a thread; a client with an admin key of tenant alpha."""
    import threading

    import uvicorn

    from cubepacs.archive.index.store import Index
    from cubepacs.archive.queue.embedded import EmbeddedQueue
    from cubepacs.archive.storage.file import FileStorage
    from cubepacs.archive.web.app import Services, create_app
    from cubepacs.research.exportui import ui_routes

    services = Services(FileStorage(str(tmp_path / "store")), EmbeddedQueue(os.path.join(tmp_path, "q.db")),
                        Index.from_url(f"sqlite:///{tmp_path}/index.db"), sessions=sessions,
                        api_keys={"admin-key-0123456789": "alpha:admin"}, keys_file=str(tmp_path / "api-keys.json"))
    app = create_app(services, extensions=[ui_routes(str(tmp_path / "exports"), "")])  # (no export_secret)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="critical"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": "Bearer admin-key-0123456789"},
                          timeout=10) as client:
            for _ in range(200):
                if server.started:
                    break
                time.sleep(0.05)
            yield client
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_admin_session_pages_without_an_accounts_database(tmp_path: Path) -> None:
    with in_process(tmp_path) as client:
        page = client.get("/ui/admin")
        assert page.status_code == 200 and 'id="no-sessions"' in page.text and 'id="end-all"' not in page.text
        for form in ({"all": "1"}, {"user": "pat"}, {"id": "0123456789abcdef"}):
            ended = client.post("/ui/admin/sessions/end", data=form)
            assert ended.status_code == 409 and "keeps no sessions" in ended.text
        audit = client.get("/ui/audit")
        assert audit.status_code == 409 and "keeps no audit log" in audit.text
        assert client.get("/api/sessions").status_code < 500
        off = client.get("/ui/export")  # the export form says at once that exports are off
        assert off.status_code == 409 and "set export_secret" in off.text


def test_audit_page_reaches_every_row(tmp_path: Path) -> None:
    """The audit page pages through the whole log, newest first, filters kept — read against SQLite itself."""
    import re
    import sqlite3

    from cubepacs.archive.auth.accounts import Accounts

    accounts = Accounts(tmp_path / "accounts.db")
    for i in range(230):
        accounts.audit("alpha", f"user:u{i:03d}", "admin", "delete" if i % 3 else "send", f"1.2.{i}")
    accounts.audit("beta", "user:other", "admin", "delete", "9.9")
    with in_process(tmp_path, accounts) as client:
        for action in ("", "delete"):
            seen, url, sizes = [], f"/ui/audit?limit=100&action={action}", []
            while url:
                page = client.get(url)
                assert page.status_code == 200
                rows = re.findall(r"<td>(user:[a-z0-9]+)</td>", page.text)
                seen, sizes = seen + rows, [*sizes, len(rows)]
                older = re.search(r'id="older" href="\?([^"]+)"', page.text)
                url = f"/ui/audit?{older.group(1).replace('&amp;', '&')}" if older else ""
            with sqlite3.connect(tmp_path / "accounts.db") as db:
                expected = [r[0] for r in db.execute(
                    "SELECT principal FROM audit WHERE tenant = 'alpha' AND (? = '' OR action = ?) "
                    "ORDER BY at DESC, rowid DESC", (action, action))]
            assert seen == expected and sizes == ([100, 100, 30] if not action else [100, 53])
