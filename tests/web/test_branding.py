"""OHIF configured for the archive (``web/branding.py``), in Debian's chromium with OHIF as ``cubepacs viewer
install`` puts it: the archive's name (``viewer_name``) replaces OHIF's logo in the study list and the viewer and
leads to ``/ui``; the "investigational use" banner does not show — while the same page with that one key taken
out of the served app-config shows it (OHIF's default, so the key is what hides it); the first visit to the
viewer gets the archive's tour, once. Screenshots: ``test-artifacts/browser/branding-*.png``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest

from cubepacs.archive.web import multipart
from cubepacs.archive.web.session import save_user
from tests.archive.conftest import Server, free_port, start_server, stop_server, write_config
from tests.conftest import SERIES, dicom_files
from tests.web.test_browser import ARTIFACTS, viewer_dir  # noqa: F401 - OHIF installed once per machine

pytestmark = pytest.mark.browser
NAME = "Saint Example PACS"
BANNER = "for investigational use only"
MR = next(s for s in SERIES if s.name.startswith("mr_ge_mr750_epi"))


@pytest.fixture(scope="module")
def branded(tmp_path_factory: pytest.TempPathFactory, viewer_dir: Path) -> Iterator[tuple[Server, str]]:  # noqa: F811
    root = tmp_path_factory.mktemp("branding")
    dimse, http_port = free_port(), free_port()
    save_user(root / "data", "bea", "bea's password", "alpha", "viewer")
    srv = start_server(root / "data", write_config(root / "b.toml", root / "data", dimse, http_port,
                                                   viewer_dir=str(viewer_dir), viewer_name=NAME), dimse, http_port)
    files = dicom_files(MR)[:4]
    body, ctype = multipart.encode([f.read_bytes() for f in files], "application/dicom")
    assert httpx.post(f"{srv.url}/studies", content=body, timeout=60,
                      headers={**srv.headers(), "Content-Type": ctype}).status_code == 200
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    yield srv, str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    stop_server(srv)


def signed_in(browser: Any, site: Server) -> tuple[Any, Any]:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.goto(f"http://127.0.0.1:{site.http_port}/login")
    page.fill("#user", "bea")
    page.fill("#password", "bea's password")
    page.click("button[type=submit]")
    page.wait_for_url(f"http://127.0.0.1:{site.http_port}/")
    return context, page


def test_ohif_shows_the_archive_not_ohif(browser: Any, branded: tuple[Server, str]) -> None:
    site, study = branded
    context, page = signed_in(browser, site)
    logo = page.wait_for_selector("#cubepacs-logo", timeout=30_000)
    assert logo.inner_text() == NAME and logo.get_attribute("href") == "/ui"
    page.wait_for_timeout(1000)  # OHIF's banner shows at once when it shows (see the control below)
    page.screenshot(path=str(ARTIFACTS / "branding-list.png"))
    assert BANNER not in page.inner_text("body")
    page.goto(f"http://127.0.0.1:{site.http_port}/viewer?StudyInstanceUIDs={study}")
    tour = page.wait_for_selector(".shepherd-element", timeout=60_000)
    assert NAME in tour.inner_text() and "/ui" in tour.inner_text()
    page.screenshot(path=str(ARTIFACTS / "branding-tour.png"))
    page.click(".shepherd-element button:has-text('Next')")
    page.wait_for_selector(".shepherd-element:has-text('Scrolling through images')")
    page.click(".shepherd-element button:has-text('Done')")
    assert page.locator("#cubepacs-logo").inner_text() == NAME and BANNER not in page.inner_text("body")
    page.reload()  # the tour is shown once
    page.wait_for_selector(".viewport-element", timeout=60_000)
    page.wait_for_timeout(1500)
    assert page.locator(".shepherd-element").count() == 0 and page.locator("#cubepacs-logo").count() == 1
    context.close()

    # control: the same pages with investigationalUseDialog taken out of the app-config show OHIF's banner
    context, page = signed_in(browser, site)

    def without_the_key(route: Any) -> None:
        response = route.fetch()
        body = response.text().replace("cfg.investigationalUseDialog =", "cfg.notOhifsKey =")
        route.fulfill(response=response, body=body)

    page.route("**/app-config.js", without_the_key)
    page.reload()
    page.wait_for_selector(f"text={BANNER}", timeout=30_000)
    page.screenshot(path=str(ARTIFACTS / "branding-control.png"))
    context.close()


def test_a_bad_banner_setting_is_one_error_at_start(tmp_path: Path) -> None:
    import subprocess
    import sys

    cfg = write_config(tmp_path / "bad.toml", tmp_path / "data", free_port(), free_port(), viewer_banner="sometimes")
    run = subprocess.run([sys.executable, "-m", "cubepacs", "serve", "--config", str(cfg)], capture_output=True,
                         text=True, timeout=60, check=False)
    assert run.returncode == 2 and "viewer_banner: 'sometimes' is not never, always or configure:DAYS" in run.stderr
    assert "Traceback" not in run.stderr + run.stdout
