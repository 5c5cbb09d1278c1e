"""C-MOVE of every archivable file of ../shared/data to real peers, run inside a private network namespace.

``tests/archive/test_peers.py`` runs ``unshare -n python -m tests.archive.peers OUT.json``: Orthanc (apt) binds
0.0.0.0, so it, DCMTK storescp and ``cubepacs serve`` all run in a namespace holding only ``lo``. Peers:

* ``ORTHANC``: Orthanc 1.10 with its default transfer syntaxes;
* ``ALLSCP``: DCMTK ``storescp +xa +B`` (every syntax DCMTK knows, files written bit-preserving) — only the studies
  of the Deflated Explicit VR files: the fidelity matrix (``tests/archive/fidelity.py``, "move ALLSCP") moves every
  file to this same peer and checks every dataset byte for byte, but lets a deflated one arrive as the same
  elements in another syntax; here it must arrive deflated, its dataset's bytes the stored ones (padded);
* ``PLAINSCP``: DCMTK ``storescp +B`` (uncompressed syntaxes only) — only the studies holding a compressed file
  pydicom cannot decode: the matrix sends every file to this same peer (``/api/send``, the same SCU) and moves
  every file to an uncompressed-only Orthanc, both checking decoded pixels against pydicom's; what only this run
  checks is the C-MOVE's final status when a sub-operation could not be done (0xB000, one failed).

Every study goes to Orthanc: the matrix's Orthanc takes uncompressed syntaxes only, this one its defaults.

Every file is stored by STOW-RS (so the stored bytes are the file's), every study is moved to each peer with
pynetdicom's C-MOVE SCU, and for each received instance the script records whether its dataset bytes equal the
stored ones or, where the syntax changed, whether its pixels equal pydicom's decoding of the original.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pydicom

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data"
KEY = "peers-key-0123456789"
PEERS = {"ORTHANC": 4242, "ALLSCP": 4343, "PLAINSCP": 4444}
DEFLATED = "1.2.840.10008.1.2.1.99"


def files() -> list[Path]:
    out = [p for d in sorted((DATA / "series").iterdir()) for p in sorted(d.iterdir())
           if p.is_file() and p.suffix != ".txt" and p.name != "DIRFILE"]
    return out + sorted((DATA / "single").glob("*.dcm")) + sorted((DATA / "malformed").iterdir())


def wait_port(port: int, timeout: float = 60) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"port {port}")


def dataset_part(data: bytes) -> bytes:
    from cubepacs.archive.dimse.scu import dataset_offset

    return data[dataset_offset(data):]


def pixels(data: bytes) -> np.ndarray | None:
    """pydicom's decoding (the oracle: its own plugins, not the project's), None when it cannot decode them."""
    from tests.pixeloracle import reference_decoders

    with warnings.catch_warnings(), reference_decoders():
        warnings.simplefilter("ignore")
        try:
            return np.asarray(pydicom.dcmread(io.BytesIO(data)).pixel_array)
        except Exception:
            return None


def same_elements(a: bytes, b: bytes) -> bool:
    """Equal datasets element by element (group lengths aside): how Orthanc, which re-encodes what it
    receives with DCMTK, is checked."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        da, db = (pydicom.dcmread(io.BytesIO(x), force=True) for x in (a, b))
        for d in (da, db):
            for elem in list(d):
                if elem.tag.element == 0:
                    del d[elem.tag]
        return bool(da == db)


def compare(original: bytes, received: bytes, by_elements: bool = False) -> str:
    """'bytes' (dataset identical), 'elements' (same elements), 'pixels' (syntax changed, pixels equal), or what
    differs."""
    a, b = dataset_part(original), dataset_part(received)
    if a == b or (len(a) % 2 and b == a + b"\0"):  # a deflated dataset of odd length goes out padded (PS3.5 A.5)
        return "bytes"
    if by_elements and same_elements(original, received):
        return "elements"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ts_in = str(pydicom.dcmread(io.BytesIO(original), stop_before_pixels=True).file_meta.TransferSyntaxUID)
        ts_out = str(pydicom.dcmread(io.BytesIO(received), stop_before_pixels=True).file_meta.TransferSyntaxUID)
    if ts_in == ts_out:
        return f"changed although kept in {ts_in}"
    a, b = pixels(original), pixels(received)
    if a is None:
        return f"pixels not decodable by pydicom ({ts_in} -> {ts_out})"
    from tests.pixeloracle import same_pixels

    if b is not None and same_pixels(b, a, ts_in):
        return "pixels"
    return f"pixels differ ({ts_in} -> {ts_out})"


def move(port: int, study: str, destination: str) -> dict[str, Any]:
    from pydicom.dataset import Dataset
    from pynetdicom import AE
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelMove  # type: ignore[attr-defined]

    ae = AE(ae_title="MOVESCU")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    ae.dimse_timeout = ae.network_timeout = ae.acse_timeout = 120
    assoc = ae.associate("127.0.0.1", port, ae_title="CUBEPACS")
    ident = Dataset()
    ident.QueryRetrieveLevel = "STUDY"
    ident.StudyInstanceUID = study
    final: dict[str, Any] = {}
    for status, _ in assoc.send_c_move(ident, destination, StudyRootQueryRetrieveInformationModelMove):
        if status and status.Status not in (0xFF00, 0xFF01):
            final = {"status": int(status.Status),
                     "completed": int(status.get("NumberOfCompletedSuboperations", 0) or 0),
                     "failed": int(status.get("NumberOfFailedSuboperations", 0) or 0)}
    assoc.release()
    return final


def serve_archive(tmp: Path, config: str, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], Any]:
    """``cubepacs serve`` with ``config`` (the TOML's text) written to ``tmp/cubepacs.toml``, its output in
    ``tmp/cubepacs.log``: (process, open log file)."""
    (tmp / "cubepacs.toml").write_text(config)
    log = open(tmp / "cubepacs.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "cubepacs", "serve", "--config", str(tmp / "cubepacs.toml")],
                            env={**env, "PYTHONWARNINGS": "ignore"}, stdout=log, stderr=subprocess.STDOUT)
    return proc, log


def main(out: Path) -> None:
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    tmp = Path(tempfile.mkdtemp(prefix="cubepacs-peers-"))
    env = {**os.environ, "TCP_NODELAY": "1"}
    procs = []
    ocfg = {"Name": "peer", "StorageDirectory": str(tmp / "orthanc"), "IndexDirectory": str(tmp / "orthanc"),
            "DicomAet": "ORTHANC", "DicomPort": PEERS["ORTHANC"], "HttpPort": 8043, "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False, "DicomCheckCalledAet": False, "StorageCompression": False}
    (tmp / "orthanc.json").write_text(json.dumps(ocfg))
    procs.append(subprocess.Popen(["Orthanc", str(tmp / "orthanc.json")], env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL))
    for name, extra in (("ALLSCP", ["+xa"]), ("PLAINSCP", [])):
        (tmp / name).mkdir()
        procs.append(subprocess.Popen(["storescp", "-aet", name, *extra, "+B", "-od", str(tmp / name),
                                       str(PEERS[name])], env=env, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL))
    remote = ", ".join(f'"{n}" = "127.0.0.1:{p}"' for n, p in PEERS.items())
    proc, log = serve_archive(tmp, f'[cubepacs]\ndata_dir = "{tmp / "cubepacs"}"\nquiet_seconds = 3600\n'
                                   f'api_keys = {{ "{KEY}" = "default" }}\nremote_aes = {{ {remote} }}\n', env)
    procs.append(proc)
    result: dict[str, Any] = {}
    started = time.monotonic()
    timings = result["timings"] = {}  # seconds of each step (where the test's time goes)
    try:
        for port in (*PEERS.values(), 8043, 8042, 11112):
            wait_port(port)
        timings["start"] = round(time.monotonic() - started, 1)
        from cubepacs.archive.web import multipart

        stored: dict[str, bytes] = {}
        headers = {"Authorization": f"Bearer {KEY}"}
        with httpx.Client(timeout=120) as client:
            for f in files():
                data = f.read_bytes()
                body, ctype = multipart.encode([data], "application/dicom")
                r = client.post("http://127.0.0.1:8042/dicom-web/studies", content=body,
                                headers={**headers, "Content-Type": ctype})
                if r.status_code == 200:
                    sop = r.json()["00081199"]["Value"][0]["00081155"]["Value"][0]
                    stored.setdefault(sop, data)  # a re-sent SOP Instance UID keeps the first (the default)
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                r = client.get("http://127.0.0.1:8042/dicom-web/instances", params={"limit": 10000}, headers=headers)
                if r.status_code == 200 and len(r.json()) == len(stored):
                    break
                time.sleep(0.5)
            study_of = {i["00080018"]["Value"][0]: i["0020000D"]["Value"][0] for i in r.json()}
            studies = [s["0020000D"]["Value"][0] for s in
                       client.get("http://127.0.0.1:8042/dicom-web/studies", params={"limit": 10000},
                                  headers=headers).json()]
        timings["stow and index"] = round(time.monotonic() - started - timings["start"], 1)
        result["stored"] = len(stored)
        result["studies"] = len(studies)
        from cubepacs.dicom.transcode import stored_syntax

        syntaxes = {sop: pydicom.uid.UID(stored_syntax(data)) for sop, data in stored.items()}
        chosen = {"ORTHANC": set(studies),  # the studies each peer gets (see the module's docstring)
                  "ALLSCP": {study_of[sop] for sop, ts in syntaxes.items() if ts == DEFLATED},
                  "PLAINSCP": {study_of[sop] for sop, ts in syntaxes.items()
                               if ts.is_compressed and pixels(stored[sop]) is None}}
        result["moved studies"] = {peer: sorted(chosen[peer]) for peer in PEERS}
        for peer in PEERS:
            t0 = time.monotonic()
            scope = {sop: data for sop, data in stored.items() if study_of[sop] in chosen[peer]}  # (checked on)
            statuses = [move(11112, s, peer) for s in sorted(chosen[peer])]
            received: dict[str, bytes] = {}
            if peer == "ORTHANC":
                with httpx.Client(base_url="http://127.0.0.1:8043", timeout=60) as oc:
                    for oid in oc.get("/instances").json():
                        data = oc.get(f"/instances/{oid}/file").content
                        received[str(pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True,
                                                     force=True).SOPInstanceUID)] = data
            else:
                for p in (tmp / peer).iterdir():
                    data = p.read_bytes()
                    received[str(pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True,
                                                 force=True).file_meta.MediaStorageSOPInstanceUID)] = data
            outcome = {sop: compare(stored[sop], received[sop], peer == "ORTHANC") for sop in scope if sop in received}
            result[peer] = {"statuses": statuses, "received": len(received), "checked": len(scope),
                            "missing": sorted(set(scope) - set(received)),
                            "missing_decodable": sorted(s for s in set(scope) - set(received)
                                                        if pixels(stored[s]) is not None),
                            "bytes": sum(v == "bytes" for v in outcome.values()),
                            "elements": sum(v == "elements" for v in outcome.values()),
                            "pixels": sum(v == "pixels" for v in outcome.values()),
                            "other": {k: v for k, v in outcome.items() if v not in ("bytes", "elements", "pixels")}}
            timings[peer] = round(time.monotonic() - t0, 1)
        result["log"] = (tmp / "cubepacs.log").read_text(errors="replace")[-3000:]
    finally:
        from tests.archive.conftest import stop_all

        stop_all(procs, [log])
    out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main(Path(sys.argv[1]))
