"""The admin UI's study actions in a real browser (Debian's chromium, Playwright) against ``cubepacs serve``, on real
series of ``../shared/data``: upload a folder (file picker) and a ZIP (dropped on the page) with the progress bar,
find them, sort the list, label a study and filter by it, download ZIPs (every file's bytes against the
original; the DICOMDIR read by pydicom and DCMTK's dcmdump) and a cube (pixels against pydicom's decoding of the
originals), delete and see it gone from QIDO, and each role refused what it may not do (button hidden and the
POST answered 403), a send job to a peer that does not answer failed with its reason, a ZIP through
``/api/upload``. Sending to Orthanc is ``test_sendjob.py`` (its own network namespace). Screenshots go to
``test-artifacts/browser/ui-*.png``.
"""

from __future__ import annotations

import base64
import hashlib
import io
import subprocess
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pydicom
import pytest

from cubepacs.archive.auth import apikeys
from cubepacs.archive.web.session import save_user
from tests.archive.conftest import Server, free_port, start_server, stop_server, wait_until, write_config
from tests.conftest import DATA, SERIES, dicom_files
from tests.web.test_browser import ARTIFACTS

pytestmark = pytest.mark.browser
CT = next(s for s in SERIES if s.name.startswith("ct_philips_ingenuity"))
MR = next(s for s in SERIES if s.name.startswith("mr_ge_mr750_epi"))
STATIC = Path(__file__).resolve().parents[2] / "src" / "cubepacs" / "archive" / "web" / "static"


def study_of(folder: Path) -> str:
    return str(pydicom.dcmread(dicom_files(folder)[0], stop_before_pixels=True).StudyInstanceUID)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("studyactions")
    dimse, http_port = free_port(), free_port()
    cfg = write_config(root / "s.toml", root / "data", dimse, http_port)
    for name, role in (("ada", "admin"), ("uma", "user"), ("val", "viewer")):
        save_user(root / "data", name, f"{name}'s password", "alpha", role)
    (root / "tmp").mkdir()
    with pytest.MonkeyPatch.context() as mp:  # the server's temporary files, where a test can see them
        mp.setenv("TMPDIR", str(root / "tmp"))
        srv = start_server(root / "data", cfg, dimse, http_port)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    yield srv
    stop_server(srv)


def temporary_files(site: Server) -> list[Path]:
    return sorted((site.data_dir.parent / "tmp").rglob("*"))


def base(site: Server) -> str:
    return f"http://127.0.0.1:{site.http_port}"


def sign_in(browser: Any, site: Server, user: str) -> tuple[Any, Any]:
    context = browser.new_context(viewport={"width": 1400, "height": 900}, accept_downloads=True)
    page = context.new_page()
    page.goto(base(site) + "/login")
    page.fill("#user", user)
    page.fill("#password", f"{user}'s password")
    page.click("button[type=submit]")
    page.wait_for_url(base(site) + "/")
    return context, page


def qido_count(site: Server, study: str) -> int:
    r = httpx.get(f"{site.url}/studies/{study}/instances", headers=site.headers(), params={"limit": 1000})
    return len(r.json()) if r.status_code == 200 else 0


def test_htmx_is_the_pinned_file(site: Server) -> None:
    digest = hashlib.sha256((STATIC / "htmx.min.js").read_bytes()).hexdigest()
    assert digest in (STATIC / "README.md").read_text()
    r = httpx.get(base(site) + "/ui/static/htmx.min.js")
    assert r.status_code == 200 and hashlib.sha256(r.content).hexdigest() == digest


def test_upload_find_sort_label(browser: Any, site: Server) -> None:
    context, page = sign_in(browser, site, "ada")
    page.goto(base(site) + "/ui/upload")
    # a folder through the folder picker (htmx posts it, the progress bar fills)
    page.set_input_files("#folder", str(CT))
    page.click("#send-files")
    page.wait_for_selector("#result")
    assert page.inner_text("#result") == f"{len(dicom_files(CT))} stored, 1 refused."  # DIRFILE is no instance
    assert page.get_attribute("#progress", "value") == "100"
    assert page.get_attribute("a.uploaded", "href") == f"/ui/studies/{study_of(CT)}"  # a link to what was stored
    page.screenshot(path=str(ARTIFACTS / "ui-upload-folder.png"))
    # a ZIP of another series dropped on the page
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for f in dicom_files(MR):
            zf.write(f, f"{MR.name}/{f.name}")
    page.goto(base(site) + "/ui/upload")
    transfer = page.evaluate_handle("""(b64) => {
        const bin = atob(b64), bytes = new Uint8Array(bin.length);
        for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
        const dt = new DataTransfer();
        dt.items.add(new File([bytes], "mr.zip", {type: "application/zip"}));
        return dt; }""", base64.b64encode(buf.getvalue()).decode())
    page.dispatch_event("#drop", "drop", {"dataTransfer": transfer})
    page.wait_for_selector("#result", timeout=60_000)
    assert page.inner_text("#result") == f"{len(dicom_files(MR))} stored, 0 refused."
    page.screenshot(path=str(ARTIFACTS / "ui-upload-drop.png"))
    ct, mr = study_of(CT), study_of(MR)
    wait_until(lambda: qido_count(site, ct) == len(dicom_files(CT)) and qido_count(site, mr) == len(dicom_files(MR)))
    # sorted by each column, both ways: the order pydicom's values give
    heads = {str(pydicom.dcmread(dicom_files(f)[0], stop_before_pixels=True).StudyInstanceUID):
             pydicom.dcmread(dicom_files(f)[0], stop_before_pixels=True) for f in (CT, MR)}
    for key, keyword in (("date", "StudyDate"), ("patient", "PatientName"), ("patient_id", "PatientID")):
        for descending in (False, True):
            page.goto(base(site) + "/ui")
            with page.expect_navigation():
                page.click(f"#sort-{key}")
            if descending:  # a second click on the sorted page's own link: the other way
                with page.expect_navigation():
                    page.click(f"#sort-{key}")
            assert f"sort={'-' if descending else ''}{key}&" in page.url
            shown = [a.get_attribute("href").rsplit("/", 1)[1] for a in page.locator("#studies td:first-child a").all()]
            expected = sorted(heads, key=lambda u, k=keyword: (str(heads[u].get(k, "")), u), reverse=descending)
            assert shown == expected, (key, descending)
    page.screenshot(path=str(ARTIFACTS / "ui-sorted.png"))
    # a label on the CT study (htmx swaps the list in place), the list filtered by it, then removed
    page.goto(f"{base(site)}/ui/studies/{ct}")
    page.fill("#add-label input[name=label]", "to review")
    page.click("#add-label button")
    page.wait_for_selector("#labels .label")
    assert "to review" in page.inner_text("#labels")
    page.fill("#add-label input[name=label]", "bad/label")
    page.click("#add-label button")
    page.wait_for_selector("#labels .err")
    page.screenshot(path=str(ARTIFACTS / "ui-labels.png"))
    page.goto(base(site) + "/ui")
    page.select_option("#label-filter", "to review")
    page.click("#filters button")
    page.wait_for_url("**label=to+review*")
    rows = page.locator("#studies td:first-child a").all()
    assert [a.get_attribute("href").rsplit("/", 1)[1] for a in rows] == [ct]
    assert httpx.get(f"{base(site)}/api/studies/{ct}/labels", headers=site.headers()).json() == ["to review"]
    page.goto(f"{base(site)}/ui/studies/{ct}")
    page.click("#labels .remove-label")
    page.wait_for_selector("#labels .label", state="detached")
    assert httpx.get(f"{base(site)}/api/labels", headers=site.headers()).json() == []
    context.close()


def test_downloads(browser: Any, site: Server, tmp_path: Path) -> None:
    ct = study_of(CT)
    wait_until(lambda: qido_count(site, ct) == len(dicom_files(CT)), timeout=60)
    originals = {str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID): f for f in dicom_files(CT)}
    context, page = sign_in(browser, site, "uma")
    page.goto(f"{base(site)}/ui/studies/{ct}")

    def download(selector: str, name: str) -> Path:
        with page.expect_download() as info:
            page.click(selector)
        info.value.save_as(tmp_path / name)
        return tmp_path / name

    # the plain ZIP: every file byte for byte as uploaded
    with zipfile.ZipFile(download("#zip", "study.zip")) as zf:
        got = {Path(n).stem: zf.read(n) for n in zf.namelist()}
    assert set(got) == set(originals)
    for sop, f in originals.items():
        assert got[sop] == f.read_bytes(), f.name
    with zipfile.ZipFile(download(".series-zip", "series.zip")) as zf:  # the series alone: the same files
        assert {Path(n).stem: zf.read(n) for n in zf.namelist()} == got
    # with a DICOMDIR (read by pydicom): every instance at the path it names, with the original's bytes
    out = tmp_path / "dicomdir"
    with zipfile.ZipFile(download("#zip-dicomdir", "dicomdir.zip")) as zf:
        zf.extractall(out)
    records = pydicom.dcmread(out / "DICOMDIR").DirectoryRecordSequence
    found = {str(r.ReferencedSOPInstanceUIDInFile): out.joinpath(*r.ReferencedFileID) for r in records
             if r.DirectoryRecordType == "IMAGE"}
    assert set(found) == set(originals)
    for sop, path in found.items():
        assert path.read_bytes() == originals[sop].read_bytes(), sop
    dump = subprocess.run(["dcmdump", str(out / "DICOMDIR")], capture_output=True, text=True, check=False)
    assert dump.returncode == 0 and dump.stdout.count("ReferencedSOPInstanceUIDInFile") == len(originals)
    # the series as a cube, once the web worker built it: cubepacs.load's pixels are pydicom's of the originals
    series = str(pydicom.dcmread(dicom_files(CT)[0], stop_before_pixels=True).SeriesInstanceUID)
    url = f"{base(site)}/ui/studies/{ct}/series/{series}/cube"
    wait_until(lambda: httpx.get(url, headers=site.headers()).status_code == 200, timeout=120)
    page.reload()
    cube = download(".series-cube", "series.dcbs")
    import cubepacs

    image = cubepacs.load(cube)
    frames = sorted((pydicom.dcmread(f) for f in dicom_files(CT)), key=lambda d: int(d.InstanceNumber))
    expected = np.stack([d.pixel_array for d in frames])
    assert image.raw_image.shape == expected.shape and np.array_equal(image.raw_image, expected)
    page.screenshot(path=str(ARTIFACTS / "ui-downloads.png"))
    context.close()


def test_downloads_leave_no_temporary_file(site: Server) -> None:
    ct = study_of(CT)
    wait_until(lambda: qido_count(site, ct) == len(dicom_files(CT)), timeout=60)
    for query in ("", "?dicomdir=1"):
        url = f"{base(site)}/ui/studies/{ct}/zip{query}"
        with httpx.stream("GET", url, headers=site.headers()) as r:  # the client goes away after one chunk
            assert r.status_code == 200
            next(r.iter_raw())
        with httpx.stream("GET", url, headers=site.headers()) as r:
            size = sum(len(c) for c in r.iter_raw())
        assert size > sum(f.stat().st_size for f in dicom_files(CT))
    wait_until(lambda: temporary_files(site) == [], timeout=10)


def test_roles_are_refused(browser: Any, site: Server) -> None:
    ct = study_of(CT)
    wait_until(lambda: qido_count(site, ct) > 0, timeout=60)
    keys = {role: apikeys.create(site.data_dir, "alpha", role) for role in ("user", "viewer")}
    # the viewer sees no upload, label, send or delete control; the user no delete
    context, page = sign_in(browser, site, "val")
    page.goto(f"{base(site)}/ui/studies/{ct}")
    assert page.locator("#add-label, #send, #delete").count() == 0 and "Upload" not in page.inner_text("nav")
    page.screenshot(path=str(ARTIFACTS / "ui-viewer-study.png"))
    context.close()
    context, page = sign_in(browser, site, "uma")
    page.goto(f"{base(site)}/ui/studies/{ct}")
    assert page.locator("#delete").count() == 0 and page.locator("#add-label, #send").count() == 2
    context.close()
    # and the POSTs themselves are refused (a key of the role: the role check, not the CSRF one, answers)
    refused = {
        "viewer": [("POST", "/ui/upload"), ("POST", "/api/upload"), ("POST", f"/ui/studies/{ct}/labels"),
                   ("PUT", f"/api/studies/{ct}/labels/x"), ("POST", f"/ui/studies/{ct}/send"),
                   ("POST", "/api/jobs/send"), ("POST", f"/ui/studies/{ct}/delete")],
        "user": [("POST", f"/ui/studies/{ct}/delete"), ("GET", f"/ui/studies/{ct}/delete")],
    }
    for role, calls in refused.items():
        for method, path in calls:
            r = httpx.request(method, base(site) + path, headers={"Authorization": f"Bearer {keys[role]}"},
                              content=b"label=x&to=DEST")
            assert r.status_code == 403, (role, method, path, r.status_code)
    assert qido_count(site, ct) == len(dicom_files(CT))
    assert httpx.get(f"{base(site)}/api/studies/{ct}/labels", headers=site.headers()).json() == []


def test_delete_with_confirmation(browser: Any, site: Server) -> None:
    mr = study_of(MR)
    wait_until(lambda: qido_count(site, mr) == len(dicom_files(MR)), timeout=60)
    context, page = sign_in(browser, site, "ada")
    page.goto(f"{base(site)}/ui/studies/{mr}")
    page.click("#delete")
    assert "cannot be undone" in page.inner_text("main")
    page.screenshot(path=str(ARTIFACTS / "ui-delete-confirm.png"))
    page.click("#confirm")
    page.wait_for_selector("text=instance(s) deleted.")
    assert f"{len(dicom_files(MR))} instance(s) deleted." in page.inner_text("main")
    assert httpx.get(f"{site.url}/studies", headers=site.headers(), params={"StudyInstanceUID": mr}).status_code == 204
    context.close()


def test_a_send_job_to_a_peer_that_does_not_answer_fails_and_says_why(browser: Any, site: Server) -> None:
    ct = study_of(CT)
    context, page = sign_in(browser, site, "uma")
    page.goto(f"{base(site)}/ui/studies/{ct}")
    page.select_option("#send-to", "COMMITSCU")  # configured, but nothing listens there
    with page.expect_navigation():
        page.click("#send button")
    page.wait_for_selector("#job[data-state=failed]", timeout=30_000)
    assert page.inner_text("#summary") == f"0 sent, 0 failed of {len(dicom_files(CT))}."
    assert "no association with COMMITSCU" in page.inner_text("#job-error")
    page.screenshot(path=str(ARTIFACTS / "ui-send-job-failed.png"))
    page.goto(base(site) + "/ui/jobs")
    assert page.locator("#jobs tr").nth(1).locator("td.state").inner_text() == "failed"
    context.close()


def test_api_upload_of_a_zip(site: Server) -> None:
    single = DATA / "single" / "ct_ge_small_signed.dcm"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.write(single, "a/ct.dcm")
        zf.writestr("a/notes.txt", b"not DICOM")
    r = httpx.post(f"{base(site)}/api/upload", content=buf.getvalue(),
                   headers={**site.headers(), "Content-Type": "application/zip"})
    head = pydicom.dcmread(single, stop_before_pixels=True)
    assert r.status_code == 202 and r.json()["stored"] == 1 and r.json()["failed"] == 1, r.text
    assert r.json()["studies"] == [str(head.StudyInstanceUID)] and "a/notes.txt" in r.json()["reasons"][0]
    stored = httpx.get(f"{site.url}/studies/{head.StudyInstanceUID}/series/{head.SeriesInstanceUID}/instances/"
                       f"{head.SOPInstanceUID}", headers={**site.headers(), "Accept": 'multipart/related; '
                                                          'type="application/dicom"; transfer-syntax=*'})
    assert stored.status_code == 200 and single.read_bytes() in stored.content
    r = httpx.post(f"{base(site)}/api/upload", content=b"PK\x03\x04 broken",
                   headers={**site.headers(), "Content-Type": "application/zip"})
    assert r.status_code == 409 and "ZIP not taken apart" in r.json()["reasons"][0]


def test_a_running_send_job_is_cancelled(browser: Any, site: Server) -> None:
    """A slow peer (pynetdicom's storage SCP taking 0.2 s a C-STORE) on the configured DEST: the job is cancelled
    from its page, ends ``cancelled`` having sent only part of the series, and the association is released."""
    import threading

    from pynetdicom import AE, AllStoragePresentationContexts, evt

    from tests.archive.conftest import DEST_PORT

    received: list[str] = []
    released = threading.Event()

    def store(event: Any) -> int:
        received.append(str(event.request.AffectedSOPInstanceUID))
        time.sleep(0.2)
        return 0x0000

    ae = AE(ae_title="DEST")
    ae.supported_contexts = AllStoragePresentationContexts
    scp = ae.start_server(("127.0.0.1", DEST_PORT), block=False,
                          evt_handlers=[(evt.EVT_C_STORE, store), (evt.EVT_RELEASED, lambda e: released.set())])
    try:
        ct = study_of(CT)
        context, page = sign_in(browser, site, "uma")
        page.goto(f"{base(site)}/ui/studies/{ct}")
        page.select_option("#send-to", "DEST")
        with page.expect_navigation():
            page.click("#send button")
        wait_until(lambda: len(received) >= 3, timeout=30)
        page.click("#cancel button")
        page.wait_for_selector("#job[data-state=cancelled]", timeout=30_000)
        assert released.wait(10)  # the association ended normally
        sent = int(page.inner_text("#summary").split()[0])
        assert 3 <= sent < len(dicom_files(CT)) and sent == page.locator("#sent tr").count() - 1
        assert len(received) in (sent, sent + 1)  # the instance on the wire when asked may still go
        page.screenshot(path=str(ARTIFACTS / "ui-send-job-cancelled.png"))
        context.close()
    finally:
        scp.shutdown()
