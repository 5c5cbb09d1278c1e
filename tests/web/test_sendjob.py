"""The admin UI sends a series to a peer as a job, and it arrives: Orthanc (apt) in a private network namespace,
asked through its REST API what it holds (``tests/web/sendjob.py`` runs the browser, the archive and Orthanc in
that namespace)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.orthanc]
ROOT = Path(__file__).resolve().parents[2]


def test_a_send_job_reaches_orthanc(tmp_path: Path) -> None:
    out = tmp_path / "result.json"
    run = subprocess.run(["unshare", "-n", sys.executable, "-m", "tests.web.sendjob", str(out)], cwd=ROOT,
                         check=False, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    r = json.loads(out.read_text())
    n = len(r["sent_sops"])
    assert r["stow"] == 200 and n == 54
    assert r["first_state"] in ("running", "done") and r["state"] == "done", r
    assert r["summary"] == f"{n} sent, 0 failed of {n}."
    # each instance's result on the job's page: Orthanc's status 0x0000, sent as stored
    assert sorted(row[0] for row in r["rows"]) == r["sent_sops"]
    assert all(row[1] == "0x0000" and row[2].startswith("as stored") for row in r["rows"]), r["rows"][:3]
    # the jobs page lists it, done; Orthanc holds every instance, with the same elements
    assert r["jobs"][0][4] == "done" and r["jobs"][0][5] == str(n)
    assert r["orthanc_sops"] == r["sent_sops"]
    assert set(r["compared"].values()) <= {"bytes", "elements"}, r["compared"]
