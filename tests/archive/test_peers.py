"""Every archivable file of ../shared/data reaches real peers by C-MOVE: Orthanc (apt), DCMTK storescp accepting
every syntax, and DCMTK storescp accepting only uncompressed ones (all in a private network namespace: see
tests/archive/peers.py)."""

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


def test_every_instance_reaches_a_storescp_byte_for_byte(moved: dict[str, Any]) -> None:
    r = moved["ALLSCP"]
    assert r["missing"] == [] and r["other"] == {}
    assert all(s["status"] == 0 for s in r["statuses"])
    assert r["bytes"] == moved["stored"]  # the deflated file deflated too (padded to an even length)


def test_uncompressed_only_peer_gets_decoded_pixels(moved: dict[str, Any]) -> None:
    r = moved["PLAINSCP"]
    assert set(r["missing"]) <= UNDECODABLE and r["missing_decodable"] == []
    assert r["other"] == {} and r["pixels"] >= 10  # the compressed and big-endian ones, decoded by pydicom
    failed = [s for s in r["statuses"] if s["status"] != 0]
    assert all(s["status"] == 0xB000 and s["failed"] == 1 for s in failed)  # the undecodable one, reported
