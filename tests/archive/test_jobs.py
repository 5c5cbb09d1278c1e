"""Send jobs' database (``archive/jobs.py``) under the concurrency it is built for: up to ``RUNNING`` jobs of one
process writing their results at once, on a jobs file (as ``serve`` keeps it) and on the shared in-memory database
of an archive without a data folder. SQLite itself is the oracle: every result written is read back, in order."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cubepacs.archive.jobs import RUNNING, Jobs

RESULTS = 300


@pytest.mark.parametrize("where", ["file", "memory"])
def test_concurrent_jobs_record_every_result(tmp_path: Path, where: str) -> None:
    """Each job's thread records its results while the others do: a deferred transaction that then wrote failed
    at once with "database is locked" (file), a shared in-memory database with "database table is locked" — 1,068
    of 1,200 writes here, and the job ended failed."""
    jobs = Jobs(tmp_path / "jobs.db" if where == "file" else ":memory:")
    ids = [jobs.create("t", "user:ada", "DEST", "study", "1.2", RESULTS) for _ in range(RUNNING)]
    errors: list[str] = []
    start = threading.Barrier(RUNNING)

    def record(job: str) -> None:
        start.wait()
        for n in range(RESULTS):
            try:
                jobs.result(job, f"1.2.{n}", 0, "as stored", "", True)
            except Exception as exc:  # what the job's thread would have ended on
                errors.append(f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=record, args=(job,)) for job in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == []
    for job in ids:
        found = jobs.get("t", job)
        assert found is not None and found["sent"] == RESULTS
        assert [r["sop_uid"] for r in found["results"]] == [f"1.2.{n}" for n in range(RESULTS)]


def test_a_process_holds_at_most_waiting_jobs(tmp_path: Path) -> None:
    """Each job waits in a thread of its own: without a bound, send requests without end exhausted the process'
    threads (jobs left ``queued`` for ever). ``full()`` says when WAITING are held (the routes answer 429), and
    stops saying it once they end."""
    from cubepacs.archive.dimse.scu import SendResult
    from cubepacs.archive.jobs import WAITING

    jobs = Jobs(tmp_path / "jobs.db")
    release = threading.Event()

    def slow() -> Iterator[SendResult]:
        release.wait(60)
        yield SendResult("1.2.3", 0, "as stored")

    threads = []
    for _ in range(WAITING):
        assert not jobs.full()
        threads.append(jobs.run(jobs.create("t", "user:ada", "DEST", "study", "1.2", 1), slow))
    assert jobs.full()
    deadline = time.monotonic() + 30  # (the RUNNING threads that took a slot mark their job running)
    while sum(j["state"] == "running" for j in jobs.list("t")) < RUNNING and time.monotonic() < deadline:
        time.sleep(0.05)
    states = [j["state"] for j in jobs.list("t")]
    assert states.count("running") == RUNNING and states.count("queued") == WAITING - RUNNING
    release.set()
    for t in threads:
        t.join(timeout=60)
    assert not jobs.full() and {j["state"] for j in jobs.list("t")} == {"done"}
