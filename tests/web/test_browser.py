"""The archive in a real browser: Debian's chromium driven by Playwright, the OHIF viewer served by the archive.

Screenshots are kept in ``test-artifacts/browser/`` (not committed).
"""

from __future__ import annotations

import datetime as dt
import functools
import http.server
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pydicom
import pytest

from tests.archive.conftest import KEYS, Server, dcmtk, free_port, start_server, stop_server, wait_until, write_config
from tests.conftest import SERIES, dicom_files

pytestmark = [pytest.mark.browser, pytest.mark.dcmtk]
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "browser"
T1 = next(s for s in SERIES if s.name.startswith("mr_ge_signa_3dt1"))


@pytest.fixture(scope="session")
def viewer_dir() -> Path:
    """OHIF installed by `cubepacs viewer install` (once per machine: kept in ~/.cache)."""
    data = Path.home() / ".cache" / "cubepacs-tests"
    run = subprocess.run([sys.executable, "-m", "cubepacs", "viewer", "install", "--data-dir", str(data)],
                         check=False, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    return data / "viewer"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, viewer_dir: Path) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("browser")
    dimse, http_port = free_port(), free_port()
    # a second origin serving OHIF, for CORS: its port held from now on (a port only looked up free here could be
    # taken by an outgoing connection of the tests in between — it happened in CI)
    held = socket.socket()
    held.bind(("127.0.0.1", 0))
    held.listen(16)
    other = held.getsockname()[1]
    cfg = write_config(root / "b.toml", root / "data", dimse, http_port, viewer_dir=str(viewer_dir),
                       cors_origins=[f"http://127.0.0.1:{other}"])
    srv = start_server(root / "data", cfg, dimse, http_port)
    srv.other_port, srv.other_socket = other, held  # type: ignore[attr-defined]
    for series in SERIES:
        res = dcmtk("storescu", "-aec", "CUBEPACS", "127.0.0.1", str(dimse), *map(str, dicom_files(series)))
        assert res.returncode == 0, res.stderr
    expected = sum(len(dicom_files(s)) for s in SERIES)
    wait_until(lambda: len(httpx.get(f"{srv.url}/instances", params={"limit": 5000},
                                     headers=srv.headers()).json()) == expected, timeout=60)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    yield srv
    stop_server(srv)
    held.close()


class Watch:
    """Failed requests and console errors of a page."""

    def __init__(self, page: Any) -> None:
        self.failed: list[Any] = []
        self.errors: list[str] = []
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        # (net::ERR_ABORTED: a request the page itself cancelled, e.g. by navigating away — not a failure)
        page.on("requestfailed", lambda r: self.failed.append((r.url, r.failure))
                if "ERR_ABORTED" not in str(r.failure) else None)
        page.on("response", lambda r: self.failed.append((r.url, r.status)) if r.status >= 400 else None)


def sign_in(browser: Any, site: Server, tenant: str = "alpha") -> tuple[Any, Any, Watch]:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    watch = Watch(page)
    page.goto(f"http://127.0.0.1:{site.http_port}/")
    assert page.url.endswith("/login")
    page.fill("#api_key", KEYS[tenant])
    page.click("button[type=submit]")
    page.wait_for_url(f"http://127.0.0.1:{site.http_port}/")
    page.wait_for_load_state("networkidle")
    return context, page, watch


def close_tour(page: Any) -> None:
    """Step through the archive's first-visit tour (tests/web/test_branding.py tests it): its card sits over the
    middle of the viewport, where the tests turn the mouse wheel."""
    for label in ("Next", "Done"):
        button = page.locator(f".shepherd-element button:has-text('{label}')")
        if button.count() == 0:
            return
        button.first.click()
        page.wait_for_timeout(500)


def not_blank(png: bytes) -> float:
    import imagecodecs

    img = np.asarray(imagecodecs.png_decode(png)).astype(np.float64)
    return float(img.std())


def _row_texts(page: Any) -> list[str]:
    page.wait_for_selector("text=Study List")
    page.wait_for_timeout(1500)
    body = page.inner_text("body")
    return [line.strip() for line in body.splitlines() if line.strip()]


def test_sign_in_and_the_study_list(browser: Any, site: Server) -> None:
    context, page, watch = sign_in(browser, site)
    cookie = next(c for c in context.cookies() if c["name"] == "cubepacs_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["expires"] > 0
    lines = _row_texts(page)
    page.screenshot(path=str(ARTIFACTS / "study-list.png"))
    for series in SERIES:
        ds = pydicom.dcmread(dicom_files(series)[0], stop_before_pixels=True)
        date = dt.datetime.strptime(ds.StudyDate, "%Y%m%d").strftime("%d-%b-%Y")
        family = str(ds.PatientName).split("^")[0]
        assert any(family in line for line in lines), (family, lines)
        assert any(date in line for line in lines), date
        assert str(len(dicom_files(series))) in lines
        assert ds.Modality in lines
    assert "1-4 of 4" in page.inner_text("body")
    # the study list is the study browser: filter by patient (a QIDO search with wildcards)
    page.locator("input").nth(0).fill("HEAD")
    page.wait_for_selector("text=1-1 of 1", timeout=20_000)
    page.screenshot(path=str(ARTIFACTS / "study-list-filtered.png"))
    page.locator("input").nth(0).fill("")
    page.wait_for_selector("text=1-4 of 4", timeout=20_000)
    assert watch.failed == [] and watch.errors == []
    # the key never reaches the page: app-config.js only holds the session's CSRF token
    assert KEYS["alpha"] not in page.evaluate("JSON.stringify(window.config)")
    context.close()


def test_every_series_opens_and_scrolls(browser: Any, site: Server) -> None:
    context, page, watch = sign_in(browser, site)
    for series in SERIES:
        ds = pydicom.dcmread(dicom_files(series)[0], stop_before_pixels=True)
        page.goto(f"http://127.0.0.1:{site.http_port}/viewer?StudyInstanceUIDs={ds.StudyInstanceUID}")
        canvas = page.wait_for_selector("canvas", timeout=60_000)
        page.wait_for_timeout(3000)
        close_tour(page)
        before = canvas.screenshot()
        (ARTIFACTS / f"{series.name}.png").write_bytes(before)
        assert not_blank(before) > 3, series.name
        box = canvas.bounding_box()
        page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        # OHIF ignores the wheel until the stack's images have loaded: on a busy machine the first turns can be
        # lost, so turn again (at most three times) before judging that the image does not move
        for _ in range(3):
            for _ in range(10):
                page.mouse.wheel(0, 120)
                page.wait_for_timeout(150)
            page.wait_for_timeout(1000)
            after = canvas.screenshot()
            if after != before:
                break
        (ARTIFACTS / f"{series.name}-scrolled.png").write_bytes(after)
        assert after != before and not_blank(after) > 3, series.name
    assert watch.failed == [], watch.failed[:5]
    assert watch.errors == [], watch.errors[:5]
    context.close()


def _frames_seen(page: Any) -> list[str]:
    """The Content-Type of every frames response the page gets."""
    seen: list[str] = []
    page.on("response", lambda r: seen.append(r.headers.get("content-type", "")) if "/frames/" in r.url else None)
    return seen


@pytest.mark.parametrize("name", ["ct_ge", "ct_philips"])  # 16 of 16 bits, signed; 12 of 16 bits, unsigned
def test_frames_sent_as_stored_look_as_decoded_ones(browser: Any, site: Server, name: str) -> None:
    """OHIF asks for frames with ``transfer-syntax=*``: a compacted series' frames then go as the cube's HTJ2K
    codestreams, which the viewer decodes itself. The same series with the Accept header rewritten to plain
    octet-stream (frames decoded on the server) must look the same on screen."""
    ct = next(s for s in SERIES if s.name.startswith(name))
    ds = pydicom.dcmread(dicom_files(ct)[0], stop_before_pixels=True)
    cube = site.data_dir / "storage" / "alpha" / str(ds.StudyInstanceUID) / f"{ds.SeriesInstanceUID}.dcbs"
    wait_until(cube.exists, timeout=120)
    shots = []
    for rewrite in (False, True):
        context, page, watch = sign_in(browser, site)
        if rewrite:
            page.route("**/frames/**", lambda route: route.continue_(headers={
                **route.request.headers, "accept": 'multipart/related; type="application/octet-stream"'}))
        seen = _frames_seen(page)
        page.goto(f"http://127.0.0.1:{site.http_port}/viewer?StudyInstanceUIDs={ds.StudyInstanceUID}")
        canvas = page.wait_for_selector("canvas", timeout=60_000)
        page.wait_for_load_state("networkidle")
        page.wait_for_timeout(3000)
        close_tour(page)
        shot = canvas.screenshot()
        (ARTIFACTS / f"as-stored-{name}-{'decoded' if rewrite else 'htj2k'}.png").write_bytes(shot)
        shots.append(np.asarray(__import__("imagecodecs").png_decode(shot)).astype(np.int16))
        assert seen, "no frame was asked for"
        if rewrite:  # (each part names its transfer syntax: tests/archive/test_asstored.py)
            assert all('type="application/octet-stream"' in t for t in seen), seen[:3]
        else:
            assert any('type="image/jphc"' in t for t in seen), seen[:3]
        assert watch.failed == [] and watch.errors == [], (watch.failed[:3], watch.errors[:3])
        context.close()
    assert not_blank(ARTIFACTS.joinpath(f"as-stored-{name}-htj2k.png").read_bytes()) > 3
    assert shots[0].shape == shots[1].shape
    assert float(np.abs(shots[0] - shots[1]).mean()) < 0.5  # the same picture (a glyph of the overlay may move)


def test_mpr_of_the_3d_t1(browser: Any, site: Server) -> None:
    context, page, watch = sign_in(browser, site)
    ds = pydicom.dcmread(dicom_files(T1)[0], stop_before_pixels=True)
    page.goto(f"http://127.0.0.1:{site.http_port}/viewer?StudyInstanceUIDs={ds.StudyInstanceUID}"
              "&hangingprotocolId=mpr")
    page.wait_for_function("document.querySelectorAll('canvas').length >= 3", timeout=60_000)
    page.wait_for_timeout(5000)
    page.screenshot(path=str(ARTIFACTS / "mpr-t1.png"))
    canvases = page.query_selector_all("canvas")[:3]
    assert all(not_blank(c.screenshot()) > 3 for c in canvases)
    assert watch.failed == [] and watch.errors == []
    context.close()


def test_upload_through_the_viewer_and_tenant_isolation(browser: Any, site: Server) -> None:
    single = ROOT.parent / "shared" / "data" / "single" / "ct_ge_small_signed.dcm"
    context, page, watch = sign_in(browser, site)
    _row_texts(page)
    page.click("text=Upload")
    page.set_input_files("input[type=file]:not([webkitdirectory])", str(single))
    uid = pydicom.dcmread(single, stop_before_pixels=True).StudyInstanceUID
    wait_until(lambda: httpx.get(f"{site.url}/studies", params={"StudyInstanceUID": uid},
                                 headers=site.headers()).status_code == 200, timeout=60)
    page.goto(f"http://127.0.0.1:{site.http_port}/")
    page.wait_for_selector("text=1-5 of 5", timeout=30_000)
    page.screenshot(path=str(ARTIFACTS / "after-upload.png"))
    assert watch.failed == [] and watch.errors == []
    # a state-changing request with the cookie but without (or with a wrong) CSRF token is refused
    cookie = {c["name"]: c["value"] for c in context.cookies()}
    api = f"http://127.0.0.1:{site.http_port}/api/studies/1.2.3"
    assert httpx.delete(api, cookies=cookie).status_code == 403
    assert httpx.delete(api, cookies=cookie, headers={"X-CSRF-Token": "wrong"}).status_code == 403
    config = httpx.get(f"http://127.0.0.1:{site.http_port}/app-config.js", cookies=cookie).text
    token = config.split("var token = ")[1].split(";")[0].strip('"')
    assert httpx.delete(api, cookies=cookie, headers={"X-CSRF-Token": token}).json() == {"deleted": 0}
    context.close()
    other, page2, _ = sign_in(browser, site, "beta")
    page2.wait_for_selector("text=No studies available", timeout=30_000)
    assert page2.evaluate("async () => (await fetch('/dicom-web/studies')).status") == 204
    other.close()


class _Spa(http.server.SimpleHTTPRequestHandler):
    def send_head(self) -> Any:
        path = Path(self.translate_path(self.path))
        if not path.exists():
            self.path = "/index.html"
        return super().send_head()

    def log_message(self, *args: Any) -> None:
        pass


def test_ohif_from_another_origin_through_cors(browser: Any, site: Server, tmp_path: Path, viewer_dir: Path) -> None:
    port = site.other_port  # type: ignore[attr-defined]
    root = tmp_path / "ohif"
    shutil.copytree(viewer_dir, root)
    api = f"http://127.0.0.1:{site.http_port}/dicom-web"
    # OHIF 3.13 takes tokens from its user authentication service (OIDC); a hosting page without OIDC adds the key
    # to the requests for the archive itself, which is what a browser on another origin does through CORS
    (root / "app-config.js").write_text(
        "window.config = {routerBasename: '/', extensions: [], modes: [], showStudyList: true,"
        " defaultDataSourceName: 'c', dataSources: [{namespace: '@ohif/extension-default.dataSourcesModule.dicomweb',"
        f" sourceName: 'c', configuration: {{friendlyName: 'c', name: 'c', wadoUriRoot: '{api}', qidoRoot: '{api}',"
        f" wadoRoot: '{api}', imageRendering: 'wadors', thumbnailRendering: 'wadors', enableStudyLazyLoad: true,"
        " omitQuotationForMultipartRequest: true}}]};\n"
        "(function () { var open = XMLHttpRequest.prototype.open, send = XMLHttpRequest.prototype.send;"
        " XMLHttpRequest.prototype.open = function (m, url) { this._api = String(url).indexOf('" + api + "') === 0;"
        " return open.apply(this, arguments); };"
        " XMLHttpRequest.prototype.send = function () { if (this._api) this.setRequestHeader('Authorization',"
        f" 'Bearer {KEYS['alpha']}'); return send.apply(this, arguments); }};}})();\n")
    handler = functools.partial(_Spa, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler, bind_and_activate=False)
    server.socket.close()
    server.socket = site.other_socket  # type: ignore[attr-defined]  # bound and listening since the fixture
    server.server_name, server.server_port = "127.0.0.1", port
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        pre = httpx.options(f"{api}/studies", headers={"Origin": f"http://127.0.0.1:{port}",
                                                      "Access-Control-Request-Method": "GET",
                                                      "Access-Control-Request-Headers": "authorization"})
        assert pre.status_code == 200 and pre.headers["access-control-allow-origin"] == f"http://127.0.0.1:{port}"
        context = browser.new_context(viewport={"width": 1400, "height": 900})
        page = context.new_page()
        watch = Watch(page)
        page.goto(f"http://127.0.0.1:{port}/")
        page.wait_for_selector("text=Study List")
        try:
            page.wait_for_selector("text=CMB-CRC-MSB-01068", timeout=30_000)
        except Exception:
            page.screenshot(path=str(ARTIFACTS / "cors-failed.png"))
            raise AssertionError(f"{watch.failed[:5]} {watch.errors[:5]}") from None
        page.screenshot(path=str(ARTIFACTS / "cors-study-list.png"))
        assert watch.failed == [], watch.failed[:5]
        context.close()
    finally:
        server.shutdown()
        server.server_close()

