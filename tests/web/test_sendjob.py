"""The admin UI sends a series (DIMSE) and a study (DICOMweb STOW-RS) to peers as jobs, and they arrive: Orthanc
(apt, with its DICOMweb plugin) in a private network namespace, asked through its REST API what it holds
(``tests/web/sendjob.py`` runs the browser, the archive and Orthanc in that namespace)."""

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
    assert r["stow"] == [200, 200] and r["options"] == ["ORTHANC", "ORTHANCWEB (DICOMweb)"]
    for way, sops, sent_as in (("dimse", r["ct_sops"], "as stored"), ("dicomweb", r["mr_sops"], "STOW-RS")):
        job, n = r[way], len(sops)
        assert job["first_state"] in ("queued", "running", "done") and job["state"] == "done", (way, job["summary"])
        assert job["summary"] == f"{n} sent, 0 failed of {n}.", way
        # each instance's result on the job's page: the peer's status 0x0000, how it was sent
        assert sorted(row[0] for row in job["rows"]) == sops, way
        assert all(row[1] == "0x0000" and row[2].startswith(sent_as) for row in job["rows"]), job["rows"][:3]
    assert len(r["ct_sops"]) == 54 and len(r["mr_sops"]) == 150
    # the jobs page lists both, newest first, done; Orthanc holds every instance, with the same elements
    assert [(j[3], j[4], j[5]) for j in r["jobs"][:2]] == [("ORTHANCWEB", "done", "150"), ("ORTHANC", "done", "54")]
    assert r["orthanc_sops"] == sorted(r["ct_sops"] + r["mr_sops"])
    assert set(r["compared"].values()) <= {"bytes", "elements"}, r["compared"]
