"""Every archivable file of ../shared/data reaches real peers by C-MOVE: Orthanc (apt) with its default syntaxes,
and DCMTK storescp accepting only uncompressed ones (all in a private network namespace: see
tests/archive/peers.py). A storescp accepting every syntax gets every file byte for byte in the fidelity matrix
(test_fidelity.py::test_peer_taking_everything_gets_the_stored_bytes), and every file decoded for an
uncompressed-only peer (test_strict_peer_gets_every_decodable_instance_under_its_own_uid, and
test_api_send_reports_each_failure_with_its_reason for this storescp): here only what the matrix does not check —
a deflated file arriving deflated byte for byte, and a C-MOVE's final status when an instance cannot be sent."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.dcmtk, pytest.mark.orthanc]
ROOT = Path(__file__).resolve().parents[2]
UNDECODABLE = {"1.3.6.1.4.1.5962.1.1.8.1.3.20040826185059.5457"}  # a JPEG 2000 file whose header no decoder reads


@pytest.fixture(scope="module")
def moved(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("peers") / "result.json"
    run = subprocess.run(["unshare", "-n", sys.executable, "-m", "tests.archive.peers", str(out)], cwd=ROOT,
                         check=False, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    return dict(json.loads(out.read_text()))


def test_every_instance_reaches_orthanc_unchanged(moved: dict[str, Any]) -> None:
    r = moved["ORTHANC"]
    assert moved["stored"] > 400 and r["missing"] == [], r["missing"]
    assert all(s["status"] == 0 and s["failed"] == 0 for s in r["statuses"])
    # Orthanc re-encodes what it keeps (DCMTK): the same elements and syntax, not always the same bytes
    assert r["bytes"] + r["elements"] == moved["stored"] and r["other"] == {}


def test_a_deflated_instance_reaches_a_storescp_deflated_byte_for_byte(moved: dict[str, Any]) -> None:
    r = moved["ALLSCP"]
    assert r["checked"] >= 1 and r["missing"] == [] and r["other"] == {}
    assert all(s["status"] == 0 for s in r["statuses"])
    assert r["bytes"] == r["checked"]  # the dataset as stored, deflated (padded to an even length, PS3.5 A.5)


def test_a_c_move_to_an_uncompressed_only_peer_reports_what_it_could_not_send(moved: dict[str, Any]) -> None:
    r = moved["PLAINSCP"]  # the studies holding a compressed file pydicom cannot decode
    assert set(r["missing"]) <= UNDECODABLE and r["missing_decodable"] == []
    assert r["other"] == {} and r["bytes"] + r["pixels"] + len(r["missing"]) == r["checked"]
    failed = [s for s in r["statuses"] if s["status"] != 0]
    assert len(failed) == len(r["missing"])
    assert all(s["status"] == 0xB000 and s["failed"] == 1 for s in failed)  # the undecodable one, reported
