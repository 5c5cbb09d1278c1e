"""The admin UI's de-identified export (``/ui/export``) in Debian's chromium against ``cubepacs serve``: copies of
real files with synthetic PHI injected everywhere (``tests/research/phi.py``, the checker that is not the
exporter) are stored by STOW-RS and selected in the study list and exported with the research export's options; every
byte written — each DICOM file, each instance a cube gives back, each cell of the Delta table — is searched for
every injected value and every original UID; a viewer is refused the page. Screenshot:
``test-artifacts/browser/ui-export.png``.
"""

from __future__ import annotations

import io
import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest

from cubepacs.archive.web import multipart
from cubepacs.archive.web.session import save_user
from tests.archive.conftest import Server, free_port, start_server, stop_server, wait_until, write_config
from tests.conftest import SERIES, dicom_files
from tests.research import phi
from tests.research.test_phi import _outputs as outputs  # every byte written, cubes and Delta read back
from tests.web.test_adminui import go, sign_in
from tests.web.test_browser import ARTIFACTS

pytestmark = pytest.mark.browser
MR = next(s for s in SERIES if s.name.startswith("mr_ge_mr750_epi"))
COUNT = 6


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Path]]:
    root = tmp_path_factory.mktemp("exportui")
    ports = free_port(), free_port()
    save_user(root / "data", "eve", "eve's password", "alpha", "admin")
    save_user(root / "data", "val", "val's password", "alpha", "viewer")
    srv = start_server(root / "data", write_config(root / "e.toml", root / "data", *ports, export_secret="s3cret-x",
                                                   export_dir=str(root / "exports")), *ports)
    yield srv, root / "exports" / "alpha"
    stop_server(srv)


def injected() -> tuple[list[bytes], set[str], str]:
    """Copies of the first files of a real series with PHI injected (each references the next), their original
    UIDs (file meta included), and their study."""
    files = dicom_files(MR)[:COUNT]
    sops = [str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files]
    datas, originals = [], set()
    for k, f in enumerate(files):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(f)
        originals.update(phi.uids_in(ds))
        originals.update(phi.uids_in(ds.file_meta))
        phi.inject(ds, 1, sops[k + 1] if k + 1 < len(files) else None, empty_id=False)
        buf = io.BytesIO()
        ds.save_as(buf)
        datas.append(buf.getvalue())
    return datas, {u for u in originals if len(u) >= 8}, str(ds.StudyInstanceUID)


def test_export_from_the_study_page_leaves_no_identifier(browser: Any, archive: tuple[Server, Path]) -> None:
    site, exports = archive
    datas, originals, study = injected()
    assert all(n.encode() in b"".join(datas) for n in phi.needles())  # the search finds what is there
    body, ctype = multipart.encode(datas, "application/dicom")
    with httpx.Client(base_url=site.url, headers=site.headers("alpha"), timeout=120) as api:
        assert api.post("/studies", content=body, headers={"Content-Type": ctype}).status_code == 200
        wait_until(lambda: api.get("/instances", params={"limit": 100}).status_code == 200)

    context, page = sign_in(browser, site, "eve", "eve's password")
    page.goto(f"http://127.0.0.1:{site.http_port}/ui/studies/{study}")  # the study page links to the form
    assert page.get_attribute("#export", "href") == f"/ui/export?study={study}"
    page.goto(f"http://127.0.0.1:{site.http_port}/ui")  # the list: select the study, export the selection
    page.check(f"input[name=study][value='{study}']")
    go(page, "#export-selected")
    assert page.locator("#export li").all_inner_texts() == [study]
    page.fill("#name", "cohort-ui")
    page.check("#format-cube")
    page.check("#format-delta")
    page.check("#opt-clean_descriptors")
    go(page, "#start")
    page.wait_for_selector("#summary")
    page.screenshot(path=str(ARTIFACTS / "ui-export.png"), full_page=True)
    assert page.inner_text("#selected").startswith(f"1 study, 1 series, {COUNT} instances")
    assert page.inner_text("#exported") == str(COUNT) and page.inner_text("#failed") == "0"
    assert page.locator("#progress li").count() >= 1
    text = page.content()
    assert not [n for n in phi.needles() if n in text] and not [u for u in originals if u in text]
    context.close()

    out = exports / "cohort-ui"
    assert len(list((out / "dicom").rglob("*.dcm"))) == COUNT and len(list(out.rglob("*.dcbs"))) == 1
    token = re.compile(rb"[0-9]+(?:\.[0-9]+)+")  # every dotted number: any UID, wherever it is

    def leaks(uid: str) -> bool:  # an original UID, or one with components added after it
        parts = uid.split(".")
        return any(".".join(parts[:n]) in originals for n in range(2, len(parts) + 1))

    searched, found = 0, []
    for name, data in outputs(out):
        searched += len(data)
        found += [(name, n) for n in phi.needles() if n.encode() in data]
        found += [(name, u) for u in {t.decode() for t in token.findall(data)} if leaks(u)]
    assert searched > sum(len(d) for d in datas) and not found, found[:10]

    # the same by the API; the audit log says who exported which study, both times
    with httpx.Client(base_url=f"http://127.0.0.1:{site.http_port}", headers=site.headers("alpha"),
                      timeout=120) as api:
        lines = api.post("/api/export", json={"name": "cohort-api", "studies": [study], "formats": ["dicom"]})
        assert lines.status_code == 200 and '"done": true' in lines.text and '"error"' not in lines.text
        rows = api.get("/api/audit", params={"action": "export"}).json()
    assert {(r["who"].split(":")[0], r["study"]) for r in rows} == {("user", study), ("key", study)}
    assert all(f"{COUNT} instance(s) of {study}" in r["detail"] for r in rows)

    context, page = sign_in(browser, site, "val", "val's password")  # a viewer may not export
    answer = page.goto(f"http://127.0.0.1:{site.http_port}/ui/export?study={study}")
    assert answer is not None and answer.status == 403
    context.close()
