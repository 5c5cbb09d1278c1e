"""Benchmark the admin UI's pages over 10,000 studies: the server's time for the study list (first page, a page
deep in the list, a wildcard search, a modality + date range search, sorted by date, patient and instances, a label
filter over 1,000 labelled studies) and a study page, and Chromium's first
contentful paint of the study list and a study page.

Usage: .venv/bin/python bench/adminui.py [--studies 10000]

The index is filled through ``Index.add_instances`` with one synthetic instance per study (names, IDs, dates,
modalities varied; the files themselves are not stored, so the study page's thumbnails answer an error — they
load after the first paint and do not count). The app is ``create_app`` under uvicorn on 127.0.0.1, as
``cubepacs serve`` runs it.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import uvicorn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from cubepacs.archive.auth import apikeys  # noqa: E402
from cubepacs.archive.auth.accounts import Accounts  # noqa: E402
from cubepacs.archive.index import labels  # noqa: E402
from cubepacs.archive.index.store import Index  # noqa: E402
from cubepacs.archive.queue.embedded import EmbeddedQueue  # noqa: E402
from cubepacs.archive.storage.file import FileStorage  # noqa: E402
from cubepacs.archive.web.app import Services, create_app  # noqa: E402
from cubepacs.archive.web.session import LiveUsers, save_user  # noqa: E402

PREFIX = "1.2.826.0.1.3680043.8.498."


def fill(index: Index, studies: int) -> None:
    """One instance per study, 1,000 per transaction."""
    events = []
    for n in range(studies):
        uid = f"{PREFIX}{n + 1}"
        events.append({"tenant": "t", "study_uid": uid, "series_uid": uid + ".1", "sop_uid": uid + ".1.1",
                       "key": f"t/{n}", "sop_class_uid": "1.2.840.10008.5.1.4.1.1.2", "size": 1000,
                       "attrs": {"PatientName": f"DOE^{n:05d}", "PatientID": f"P{n:05d}",
                                 "StudyDate": f"2020{n % 12 + 1:02d}15", "Modality": "CT" if n % 2 else "MR",
                                 "StudyDescription": f"study {n}", "AccessionNumber": f"A{n}",
                                 "InstanceNumber": "1", "Rows": "512", "Columns": "512"}})
    for i in range(0, len(events), 1000):
        index.add_instances(events[i:i + 1000])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=10_000)
    args = parser.parse_args()
    data = Path(tempfile.mkdtemp(prefix="cubepacs-uibench-"))
    key = apikeys.create(data, "t", "admin")
    save_user(data, "ada", "ada's password", "t", "admin")
    index = Index.from_url(f"sqlite:///{data}/index.db")
    fill(index, args.studies)
    services = Services(FileStorage(str(data / "storage")), EmbeddedQueue(str(data / "queue.db")), index, {},
                        sessions=Accounts(data / "accounts.db"), users=LiveUsers(data / "users.json"),
                        keys_file=str(data / "api-keys.json"))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(services), host="127.0.0.1", port=port, log_level="critical"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    base = f"http://127.0.0.1:{port}"
    middle = f"/ui/studies/{PREFIX}{args.studies // 2}"
    for n in range(1, args.studies + 1, 10):  # a label on every tenth study
        labels.add(index, "t", f"{PREFIX}{n}", "teaching")
    anchor = 0.0
    for url in ("/ui", f"/ui?offset={args.studies // 2}", "/ui?PatientName=DOE*0042*",
                "/ui?ModalitiesInStudy=CT&from=20200301&to=20200331", "/ui?sort=-date", "/ui?sort=patient",
                f"/ui?sort=-instances&offset={args.studies // 2}", "/ui?label=teaching&sort=-date", middle):
        times = []
        for _ in range(10):
            start = time.perf_counter()
            r = httpx.get(base + url, headers={"Authorization": f"Bearer {key}"})
            times.append(time.perf_counter() - start)
            assert r.status_code == 200, (url, r.status_code)
        median = statistics.median(times)
        anchor = anchor or median  # the unsorted first page, measured in this run
        print(f"{url}: median {median * 1000:.0f} ms, max {max(times) * 1000:.0f} ms "
              f"({median / anchor:.2f}x the unsorted first page)")
    paints(base, middle)
    server.should_exit = True


def paints(base: str, study: str) -> None:
    """Chromium's first contentful paint of the study list and a study page (median of 5 loads)."""
    from playwright.sync_api import sync_playwright

    script = ("performance.getEntriesByType('paint').find(e => e.name == 'first-contentful-paint')?.startTime"
              " ?? -1")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page()
        page.goto(base + "/login")
        page.fill("#user", "ada")
        page.fill("#password", "ada's password")
        page.click("button[type=submit]")
        page.wait_for_url(base + "/")
        for url in ("/ui", "/ui?sort=-date", study):
            fcp = []
            for _ in range(5):
                page.goto(base + url)
                page.wait_for_timeout(300)
                fcp.append(float(page.evaluate(script)))
            print(f"chromium {url}: first contentful paint median {statistics.median(fcp):.0f} ms, "
                  f"max {max(fcp):.0f} ms")
        browser.close()


def free_port() -> int:
    """A free 127.0.0.1 port."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


if __name__ == "__main__":
    main()
