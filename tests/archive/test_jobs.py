"""Send jobs' database (``archive/jobs.py``) under the concurrency it is built for: up to ``RUNNING`` jobs of one
process writing their results at once, on a jobs file (as ``serve`` keeps it) and on the shared in-memory database
of an archive without a data folder. SQLite itself is the oracle: every result written is read back, in order."""

from __future__ import annotations

import threading
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
