"""An export's selection runs in the thread pool: while ``POST /ui/export`` (and ``POST /api/export``) selects a
large cohort, the process' event loop answers other requests.

The slow path is the real one: the archive's SQLite index holds a cohort of :data:`STUDIES` studies (one real
file of ../shared/data indexed under as many study UIDs, as a large archive holds them), and the export selects
them by patient ID — one index read per study, seconds in all. The index reads are counted, not slowed. Another
request is sent once the selection has begun; it must be answered before the selection's last read. Were the
selection on the event loop, no other request could be answered until it ended, whatever the machine's speed.
The export asks for a Delta table without the DICOM files, which the plan refuses (400) only after selecting:
the whole selection runs and nothing is written.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.archive.conftest import free_port
from tests.conftest import SINGLES

STUDIES = 1000
KEY = "admin-key-0123456789"


class Counted:
    """The index, its ``instances_of`` reads counted (one per selected study)."""

    def __init__(self, index: Any) -> None:
        self.index = index
        self.reads = 0
        self.started = threading.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.index, name)

    def instances_of(self, *args: Any, **kwargs: Any) -> Any:
        self.reads += 1
        self.started.set()
        return self.index.instances_of(*args, **kwargs)


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[httpx.Client, Counted, str]]:
    """The app over real backends with a cohort of :data:`STUDIES` studies of one patient, served by uvicorn in a
    thread; a client with an admin key; the patient ID."""
    import uvicorn

    from cubepacs.archive.index.store import Index
    from cubepacs.archive.ingest import ingest
    from cubepacs.archive.queue.embedded import EmbeddedQueue
    from cubepacs.archive.storage.file import FileStorage
    from cubepacs.archive.web.app import Services, create_app
    from cubepacs.research.api import routes
    from cubepacs.research.exportui import ui_routes

    root = tmp_path_factory.mktemp("exportloop")
    storage, queue = FileStorage(str(root / "store")), EmbeddedQueue(os.path.join(root, "q.db"))
    index = Index.from_url(f"sqlite:///{root}/index.db")
    event = ingest(SINGLES[0].read_bytes(), "alpha", storage, queue)
    cohort = [
        {
            **event,
            "study_uid": f"{event['study_uid']}.{n}",
            "series_uid": f"{event['series_uid']}.{n}",
            "sop_uid": f"{event['sop_uid']}.{n}",
        }
        for n in range(STUDIES)
    ]
    for at in range(0, STUDIES, 500):
        index.add_instances(cohort[at : at + 500])
    counted = Counted(index)
    services = Services(storage, queue, counted, api_keys={KEY: "alpha:admin"}, keys_file=str(root / "keys.json"))
    exports = str(root / "exports")
    app = create_app(services, extensions=[routes(exports, "s3cret-x"), ui_routes(exports, "s3cret-x")])
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="critical"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        for _ in range(200):
            if server.started:
                break
            time.sleep(0.05)
        with httpx.Client(
            base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {KEY}"}, timeout=120
        ) as client:
            yield client, counted, str(event["attrs"]["PatientID"])
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def _export(client: httpx.Client, route: str, patient: str) -> httpx.Response:
    if route == "/ui/export":
        return client.post(route, data={"name": "loop", "PatientID": patient, "format": "delta"})
    return client.post(route, json={"name": "loop", "query": {"PatientID": patient}, "formats": ["delta"]})


@pytest.mark.parametrize("route", ["/ui/export", "/api/export"])
def test_other_requests_are_answered_while_an_export_selects(
    archive: tuple[httpx.Client, Counted, str], route: str
) -> None:
    client, counted, patient = archive
    counted.reads, answer = 0, {}
    counted.started.clear()
    worker = threading.Thread(target=lambda: answer.update(export=_export(client, route, patient)))
    worker.start()
    assert counted.started.wait(60), "the export never began its selection"
    other = client.get("/ui/export")  # another request of the same process: the export form
    reads_then = counted.reads
    worker.join(120)
    assert other.status_code == 200 and 'id="export"' in other.text
    refused = answer["export"]
    assert refused.status_code == 400 and "delta is made from the exported DICOM files" in refused.text
    assert counted.reads == STUDIES  # the selection ran in full (one read per study) ...
    assert 0 < reads_then < STUDIES  # ... and the other request was answered in the middle of it
