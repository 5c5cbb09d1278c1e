"""``/ui/operations`` in Debian's chromium against ``cubepacs serve``: after a real series is stored (STOW-RS), an
instance crafted from one of its files without its SOP Instance UID is refused and an association calling an AE
title the archive does not know is rejected and one that declares 24 bits allocated is left out of the cube, the
page shows the counts — and they agree with ``/metrics``, read
with prometheus-client's own parser — the tenant's storage (the files' sizes on disk) and the failures
themselves; a user is refused the page. Screenshot: ``test-artifacts/browser/ui-operations.png``.
"""

from __future__ import annotations

import io
from typing import Any

import httpx
import pydicom
import pytest

from cubepacs.archive.web import multipart
from cubepacs.archive.web.session import save_user
from tests.archive.conftest import KEYS, Server, wait_until
from tests.conftest import SERIES, dicom_files
from tests.web import test_adminui
from tests.web.test_adminui import sign_in
from tests.web.test_browser import ARTIFACTS

pytestmark = pytest.mark.browser
site = test_adminui.site  # the admin UI's archive (its user ada is an admin)
MR = next(s for s in SERIES if s.name.startswith("mr_ge_mr750_epi"))


def scrape(site: Server) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"http://127.0.0.1:{site.http_port}/metrics").text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(scraped: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> int:
    return int(sum(v for (n, lab), v in scraped.items() if n == name and set(labels.items()) <= set(lab)))


def test_operations_page_agrees_with_metrics(browser: Any, site: Server) -> None:
    files = dicom_files(MR)
    with httpx.Client(base_url=f"http://127.0.0.1:{site.http_port}", headers=site.headers("alpha"),
                      timeout=120) as api:
        check(browser, site, api, files)


def check(browser: Any, site: Server, api: httpx.Client, files: list[Any]) -> None:
    odd = pydicom.dcmread(files[0])  # a file of the series declaring 24 bits allocated: no cube holds it
    odd.BitsAllocated = 24
    odd.SOPInstanceUID = odd.file_meta.MediaStorageSOPInstanceUID = "1.2.826.0.1.3680043.10.543.24"
    crafted24 = io.BytesIO()
    odd.save_as(crafted24)
    body, ctype = multipart.encode([p.read_bytes() for p in files] + [crafted24.getvalue()], "application/dicom")
    assert api.post("/dicom-web/studies", content=body, headers={"Content-Type": ctype}).status_code == 200
    ds = pydicom.dcmread(files[0])  # a real file without its SOP Instance UID (nor the file meta's copy)
    del ds.SOPInstanceUID
    del ds.file_meta.MediaStorageSOPInstanceUID
    crafted = io.BytesIO()
    ds.save_as(crafted, enforce_file_format=False)
    body, ctype = multipart.encode([crafted.getvalue()], "application/dicom")
    refused = api.post("/dicom-web/studies", content=body, headers={"Content-Type": ctype})
    assert refused.status_code == 409
    from pynetdicom import AE  # an association to an AE title the archive does not serve: rejected

    scu = AE(ae_title="OPSTEST")
    scu.add_requested_context("1.2.840.10008.1.1")
    assoc = scu.associate("127.0.0.1", site.dimse_port, ae_title="NOSUCHAE")
    assert assoc.is_rejected
    assoc = scu.associate("127.0.0.1", site.dimse_port, ae_title="CUBEPACS")  # alpha's AE title: accepted, aborted
    assert assoc.is_established
    assoc.abort()
    wait_until(lambda: value(scrape(site), "cubepacs_associations_refused_total", reason="aborted") >= 1)
    wait_until(lambda: value(scrape(site), "cubepacs_webworker_builds_total", result="ok") >= 1, timeout=120)

    save_user(site.data_dir, "uma", "uma's password", "alpha", "user")  # (takes effect at once)
    context, page = sign_in(browser, site, "ada", "ada's password")
    page.goto(f"http://127.0.0.1:{site.http_port}/ui/operations")
    page.screenshot(path=str(ARTIFACTS / "ui-operations.png"), full_page=True)
    scraped = scrape(site)  # after the page: counters only grow, and nothing else happens meanwhile

    def cell(selector: str) -> int:
        return int(page.inner_text(selector).strip())

    stored = len(files) + 1
    assert cell("#indexed") == value(scraped, "cubepacs_indexed_instances_total") == stored
    assert cell("#queue-waiting") == value(scraped, "cubepacs_queue_waiting") == 0
    assert cell("#series-built") == 1 and cell("#series-pending") == cell("#series-failed") == 0
    assert page.inner_text("#builds-done").split("/")[0].strip() == str(
        value(scraped, "cubepacs_webworker_builds_total", result="ok"))
    assert cell("#not-compacted") == value(scraped, "cubepacs_instances_not_compacted_total") == 1
    assert "1.2.826.0.1.3680043.10.543.24" in page.inner_text("#left-out")
    refused_cell = cell("#refused-counts tr[data-protocol='STOW-RS'] .count")
    assert refused_cell == value(scraped, "cubepacs_instances_refused_total", tenant="alpha", protocol="STOW-RS") == 1
    assert cell("#assoc-rejected") == value(scraped, "cubepacs_associations_refused_total", reason="rejected") >= 1
    # storage: what the index holds against the files' own sizes (STOW keeps a Part 10 file's bytes as they are)
    assert cell("#storage tr[data-tenant='alpha'] .instances") == stored
    assert cell("#storage tr[data-tenant='alpha'] .bytes") == sum(p.stat().st_size for p in files) + len(
        crafted24.getvalue())
    assert "SOPInstanceUID" in page.inner_text("#refused")
    assert cell("#assoc-aborted") == value(scraped, "cubepacs_associations_refused_total", reason="aborted") >= 1
    failed = page.inner_text("#failed-associations")
    assert "NOSUCHAE" in failed and "AE OPSTEST" in failed and "aborted" in failed
    assert page.locator("nav a[href='/ui/operations']").count() == 1
    context.close()
    # a user (no admin) is refused the page, and has no link to it
    context, page = sign_in(browser, site, "uma", "uma's password")
    answer = page.goto(f"http://127.0.0.1:{site.http_port}/ui/operations")
    assert answer is not None and answer.status == 403
    assert page.locator("nav a[href='/ui/operations']").count() == 0
    context.close()
    other = api.get("/ui/operations", headers={"Authorization": f"Bearer {KEYS['beta']}"})  # another tenant's admin
    assert other.status_code == 200 and "SOPInstanceUID" not in other.text and "aborted</td>" not in other.text
    assert "NOSUCHAE" in other.text  # (no tenant was called: every tenant's admin sees it)
