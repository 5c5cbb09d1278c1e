"""The admin UI at ``/ui`` in a real browser: Debian's chromium driven by Playwright against ``cubepacs serve``.

One test walks what an administrator does on a real series of ``../shared/data`` (upload the folder, find the
study with the filters, open its series, an instance's tags, download the ZIP and compare every file with the
original, send it to a peer — DCMTK storescp — and compare what arrived, manage users and sessions, delete with
confirmation and see it gone from QIDO, read the audit log); the
other holds a viewer to its role. Screenshots go to ``test-artifacts/browser/ui-*.png`` (not committed).
"""

from __future__ import annotations

import subprocess
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest

from cubepacs.archive.web.session import save_user
from cubepacs.dicom.rawfile import split_file
from tests.archive.conftest import (
    DEST_PORT,
    Server,
    free_port,
    start_server,
    stop_all,
    stop_server,
    wait_port,
    wait_until,
    write_config,
)
from tests.conftest import SERIES, dicom_files
from tests.web.test_browser import ARTIFACTS

pytestmark = pytest.mark.browser
CT = next(s for s in SERIES if s.name.startswith("ct_philips_ingenuity"))


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("adminui")
    dimse, http_port = free_port(), free_port()
    cfg = write_config(root / "u.toml", root / "data", dimse, http_port)
    save_user(root / "data", "ada", "ada's password", "alpha", "admin")
    srv = start_server(root / "data", cfg, dimse, http_port)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    yield srv
    stop_server(srv)


@pytest.fixture(scope="module")
def dest(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The peer ``DEST`` of the archive's settings: DCMTK storescp writing what it receives."""
    out = tmp_path_factory.mktemp("dest")
    log = open(out.parent / "dest.log", "ab")
    proc = subprocess.Popen(["storescp", "-aet", "DEST", "-od", str(out), str(DEST_PORT)], stdout=log,
                            stderr=subprocess.STDOUT)
    wait_port(DEST_PORT, proc)
    yield out
    stop_all([proc], [log])


def base(site: Server) -> str:
    return f"http://127.0.0.1:{site.http_port}"


def sign_in(browser: Any, site: Server, user: str, password: str) -> tuple[Any, Any]:
    context = browser.new_context(viewport={"width": 1400, "height": 900}, accept_downloads=True)
    page = context.new_page()
    page.goto(base(site) + "/ui")
    assert page.url.endswith("/login")
    page.fill("#user", user)
    page.fill("#password", password)
    page.click("button[type=submit]")
    page.wait_for_url(base(site) + "/")
    page.goto(base(site) + "/ui")
    return context, page


def go(page: Any, selector: str) -> None:
    """Click ``selector`` and wait for the page it leads to."""
    with page.expect_navigation():
        page.click(selector)


def test_an_administrator_at_work(browser: Any, site: Server, dest: Path, tmp_path: Path) -> None:
    files = dicom_files(CT)
    first = pydicom.dcmread(files[0], stop_before_pixels=True)
    study = str(first.StudyInstanceUID)
    context, page = sign_in(browser, site, "ada", "ada's password")
    # upload the series' folder with the browser's folder picker
    go(page, "text=Upload")
    page.set_input_files("#folder", str(CT))
    page.click("#send-files")  # htmx posts it: the result comes into the page
    page.wait_for_selector("#result")
    result = page.inner_text("#result")
    assert result == f"{len(files)} stored, 1 refused.", result  # the folder's DIRFILE is no instance
    page.screenshot(path=str(ARTIFACTS / "ui-upload.png"))
    wait_until(lambda: httpx.get(f"{site.url}/studies/{study}/series", headers=site.headers()).status_code == 200)
    wait_until(lambda: len(httpx.get(f"{site.url}/studies/{study}/instances", headers=site.headers(),
                                     params={"limit": 1000}).json()) == len(files))
    # find it with the filters: a wrong patient ID finds nothing, the right one and the modality find it
    go(page, "text=Studies")
    page.fill("input[name=PatientID]", "NO-SUCH-ID")
    go(page, "#filters button")
    assert "No study matches." in page.inner_text("#studies")
    page.fill("input[name=PatientID]", str(first.PatientID))
    page.fill("input[name=ModalitiesInStudy]", str(first.Modality))
    go(page, "#filters button")
    rows = page.locator("#studies tr")
    assert rows.count() == 2 and str(len(files)) in rows.nth(1).inner_text()
    page.screenshot(path=str(ARTIFACTS / "ui-studies.png"))
    go(page, "#studies tr:nth-child(2) a")
    assert page.locator("#series tr").count() == 2
    go(page, "#series a >> nth=0")
    assert page.locator("#instances tr").count() == len(files) + 1
    go(page, "#instances a >> nth=0")
    # every tag, against pydicom's reading of the original file of that instance
    sop = page.url.rsplit("/", 1)[1]
    original = next(f for f in files if pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID == sop)
    ds = pydicom.dcmread(original, stop_before_pixels=True)
    shown = {row.get_attribute("data-tag"): row for row in page.locator("#dataset > table > tbody > tr").all()}
    top = [e for e in ds if e.tag != 0x7FE00010]
    assert {f"({e.tag.group:04X},{e.tag.element:04X})" for e in top} <= set(shown)
    for e in top:
        if e.VR in ("SQ", "OB", "OW", "UN") or e.VM != 1 or len(str(e.value)) > 300:
            continue
        cell = shown[f"({e.tag.group:04X},{e.tag.element:04X})"].locator("td").nth(3).inner_text()
        assert cell.strip() == str(e.value).strip(), (e.tag, cell, e.value)
    page.screenshot(path=str(ARTIFACTS / "ui-tags.png"), full_page=False)
    # download the study as a ZIP: every file's data set as sent
    page.goto(f"{base(site)}/ui/studies/{study}")
    with page.expect_download() as info:
        page.click("#zip")
    zipped = tmp_path / "study.zip"
    info.value.save_as(zipped)
    with zipfile.ZipFile(zipped) as zf:
        got = {Path(n).stem: zf.read(n) for n in zf.namelist()}
    assert len(got) == len(files)
    for f in files:
        raw = f.read_bytes()
        sop_uid = pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID
        assert split_file(raw).dataset_bytes() == split_file(got[sop_uid]).dataset_bytes(), f.name
    # send it to the peer: every instance's result on the page, every file there with its data set as sent
    page.select_option("#send-to", "DEST")
    go(page, "#send button")  # a send job: its page follows it
    page.wait_for_selector("#job[data-state=done]", timeout=60_000)
    assert page.inner_text("#summary") == f"{len(files)} sent, 0 failed of {len(files)}."
    assert page.locator("#sent tr").count() == len(files) + 1
    page.screenshot(path=str(ARTIFACTS / "ui-send.png"))
    arrived = {pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID: f for f in dest.iterdir()}
    assert set(arrived) == set(got)
    for sop_uid, f in arrived.items():
        assert split_file(f.read_bytes()).dataset_bytes() == split_file(got[sop_uid]).dataset_bytes(), sop_uid
    # the admin pages: a new user, its session, all sessions ended (this one too: sign in again)
    page.goto(base(site) + "/ui/admin")
    page.fill("#add-user input[name=name]", "vic")
    page.fill("#add-user input[name=password]", "vic's password")
    page.select_option("#add-user select", "viewer")
    go(page, "#add-user button")
    assert "viewer" in page.inner_text("#users")
    page.select_option("#add-key select", "user")
    go(page, "#add-key button")
    key = page.inner_text("#new-key").rsplit(" ", 1)[1]
    assert httpx.get(f"{base(site)}/api/me", headers={"Authorization": f"Bearer {key}"}).json()["role"] == "user"
    page.screenshot(path=str(ARTIFACTS / "ui-admin.png"))
    go(page, "#end-all")
    page.goto(base(site) + "/ui")
    assert page.url.endswith("/login")
    context.close()
    context, page = sign_in(browser, site, "ada", "ada's password")
    # delete with confirmation; gone from QIDO
    page.goto(f"{base(site)}/ui/studies/{study}")
    go(page, "#delete")
    assert "cannot be undone" in page.inner_text("main")
    go(page, "#confirm")
    assert f"{len(files)} instance(s) deleted." in page.inner_text("main")
    assert httpx.get(f"{site.url}/studies", headers=site.headers(),
                     params={"StudyInstanceUID": study}).status_code == 204
    # the audit log: the upload, the download, the deletion
    page.goto(f"{base(site)}/ui/audit?study={study}")
    log = page.inner_text("#audit")
    assert "user:ada" in log and "download" in log and "delete" in log and "send" in log
    page.goto(f"{base(site)}/ui/audit?action=upload")
    assert "user:ada" in page.inner_text("#audit")
    page.screenshot(path=str(ARTIFACTS / "ui-audit.png"))
    context.close()


def test_a_viewer_is_refused_what_it_may_not_do(browser: Any, site: Server) -> None:
    save_user(site.data_dir, "val", "val's password", "alpha", "viewer")
    context, page = sign_in(browser, site, "val", "val's password")
    nav = page.inner_text("nav")
    assert "Upload" not in nav and "Audit log" not in nav
    for path in ("/ui/upload", "/ui/admin", "/ui/audit", "/ui/studies/1.2.3/delete"):
        response = page.goto(base(site) + path)
        assert response is not None and response.status == 403, path
    page.screenshot(path=str(ARTIFACTS / "ui-viewer-refused.png"))
    context.close()
