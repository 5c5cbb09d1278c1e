"""The admin UI's send job to Orthanc, driven in Chromium — run inside a private network namespace.

``tests/web/test_sendjob.py`` runs ``unshare -n python -m tests.web.sendjob OUT.json``: Orthanc (apt) binds
0.0.0.0, so it, ``cubepacs serve`` and the browser all run in a namespace holding only ``lo``. A real CT series
and an fMRI series are stored by STOW-RS; an administrator signs in, sends the CT series to ``ORTHANC`` (DIMSE) and
the MR study to ``ORTHANCWEB`` (Orthanc's DICOMweb plugin, STOW-RS) from the study pages, follows each job's page
until it is done (screenshots in ``test-artifacts/browser/``), and the script records what
the page said and what Orthanc's REST API holds (each instance's file, compared with the original element by
element: Orthanc re-encodes what it keeps with DCMTK).
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from tests.archive.conftest import stop_all
from tests.archive.peers import KEY, compare, serve_archive, wait_port
from tests.conftest import SERIES, dicom_files
from tests.web.conftest import ARGS, CHROMIUM
from tests.web.test_browser import ARTIFACTS

CT = next(s for s in SERIES if s.name.startswith("ct_philips_ingenuity"))
MR = next(s for s in SERIES if s.name.startswith("mr_ge_mr750_epi"))
ORTHANC_DICOM, ORTHANC_HTTP, HTTP, DIMSE = 4242, 8043, 8042, 11112


def follow(page: Any, base: str, study: str, what: str, to: str, shot: str) -> dict[str, Any]:
    """Send ``what`` (a series UID, or "" for the whole study) of ``study`` to ``to`` from the study page and
    follow the job's page to its end: what the page said."""
    result: dict[str, Any] = {}
    page.goto(f"{base}/ui/studies/{study}")
    page.select_option("#send-what", what)
    page.select_option("#send-to", to)
    with page.expect_navigation():
        page.click("#send button")
    result["job_url"] = page.url
    result["first_state"] = page.get_attribute("#job", "data-state")
    page.wait_for_selector("#job[data-state=done], #job[data-state=failed]", timeout=120_000)
    page.screenshot(path=str(ARTIFACTS / shot))
    result["state"] = page.get_attribute("#job", "data-state")
    result["summary"] = page.inner_text("#summary")
    result["rows"] = [[c.inner_text() for c in row.locator("td").all()] for row in page.locator("#sent tr").all()[1:]]
    return result


def browse(result: dict[str, Any], ct: tuple[str, str], mr: str) -> None:
    from playwright.sync_api import sync_playwright

    base = f"http://127.0.0.1:{HTTP}"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_context(viewport={"width": 1400, "height": 900}).new_page()
        page.goto(base + "/login")
        page.fill("#user", "ada")
        page.fill("#password", "ada's password")
        page.click("button[type=submit]")
        page.wait_for_url(base + "/")
        result["dimse"] = follow(page, base, ct[0], ct[1], "ORTHANC", "ui-send-job.png")
        page.goto(f"{base}/ui/studies/{mr}")
        result["options"] = [o.inner_text() for o in page.locator("#send-to option").all()]
        result["dicomweb"] = follow(page, base, mr, "", "ORTHANCWEB", "ui-send-job-dicomweb.png")
        page.goto(base + "/ui/jobs")
        result["jobs"] = [[c.inner_text() for c in row.locator("td").all()]
                          for row in page.locator("#jobs tr").all()[1:]]
        page.screenshot(path=str(ARTIFACTS / "ui-jobs.png"))
        browser.close()


def main(out: Path) -> None:
    import pydicom

    from cubepacs.archive.web import multipart
    from cubepacs.archive.web.session import save_user

    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="cubepacs-sendjob-"))
    env = {**os.environ, "TCP_NODELAY": "1"}
    ocfg = {"Name": "peer", "StorageDirectory": str(tmp / "orthanc"), "IndexDirectory": str(tmp / "orthanc"),
            "DicomAet": "ORTHANC", "DicomPort": ORTHANC_DICOM, "HttpPort": ORTHANC_HTTP,
            "RemoteAccessAllowed": False, "AuthenticationEnabled": False, "DicomCheckCalledAet": False,
            "StorageCompression": False, "Plugins": ["/usr/share/orthanc/plugins/libOrthancDicomWeb.so"],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/"}}
    (tmp / "orthanc.json").write_text(json.dumps(ocfg))
    procs = [subprocess.Popen(["Orthanc", str(tmp / "orthanc.json")], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)]
    save_user(tmp / "cubepacs", "ada", "ada's password", "default", "admin")
    proc, log = serve_archive(tmp, f'[cubepacs]\ndata_dir = "{tmp / "cubepacs"}"\nquiet_seconds = 3600\n'
                              f'http_port = {HTTP}\ndimse_port = {DIMSE}\napi_keys = {{ "{KEY}" = "default" }}\n'
                              f'remote_aes = {{ "ORTHANC" = "127.0.0.1:{ORTHANC_DICOM}" }}\n'
                              f'dicomweb_peers = {{ "ORTHANCWEB" = "http://127.0.0.1:{ORTHANC_HTTP}/dicom-web" }}\n',
                              env)
    procs.append(proc)
    result: dict[str, Any] = {}
    try:
        for port in (ORTHANC_DICOM, ORTHANC_HTTP, HTTP):
            wait_port(port)
        files = [*dicom_files(CT), *dicom_files(MR)]
        originals = {str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID): f.read_bytes() for f in files}
        ct, mr = (pydicom.dcmread(dicom_files(s)[0], stop_before_pixels=True) for s in (CT, MR))
        headers = {"Authorization": f"Bearer {KEY}"}
        with httpx.Client(timeout=120) as client:
            for folder in (CT, MR):
                body, ctype = multipart.encode([f.read_bytes() for f in dicom_files(folder)], "application/dicom")
                r = client.post(f"http://127.0.0.1:{HTTP}/dicom-web/studies", content=body,
                                headers={**headers, "Content-Type": ctype})
                result.setdefault("stow", []).append(r.status_code)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and len(client.get(
                    f"http://127.0.0.1:{HTTP}/dicom-web/instances", params={"limit": 1000},
                    headers=headers).json()) < len(originals):
                time.sleep(0.3)
        result["ct_sops"] = sorted(str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID)
                                   for f in dicom_files(CT))
        result["mr_sops"] = sorted(str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID)
                                   for f in dicom_files(MR))
        browse(result, (str(ct.StudyInstanceUID), str(ct.SeriesInstanceUID)), str(mr.StudyInstanceUID))
        received: dict[str, bytes] = {}
        with httpx.Client(base_url=f"http://127.0.0.1:{ORTHANC_HTTP}", timeout=60) as oc:
            for oid in oc.get("/instances").json():
                data = oc.get(f"/instances/{oid}/file").content
                received[str(pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True,
                                             force=True).SOPInstanceUID)] = data
        result["orthanc_sops"] = sorted(received)
        result["compared"] = {sop: compare(originals[sop], data, True) for sop, data in received.items()
                              if sop in originals}
    finally:
        stop_all(procs, [log])
    out.write_text(json.dumps(result))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
