"""The fidelity matrix: every file of ../shared/data × every way out of the archive, run in a private network
namespace (``tests/archive/test_fidelity.py`` runs ``unshare -n python -m tests.archive.fidelity OUT.json``).

One archive (``cubepacs serve``), and as its peers:

* ``STRICT``: Orthanc 1.10 accepting only Implicit and Explicit VR Little Endian; it refuses a C-STORE whose
  dataset's SOP Instance UID is not the command's (the check that found new UIDs on decoded instances);
* ``ALLSCP``: DCMTK ``storescp +xa +B`` (every syntax DCMTK knows, files written bit-preserving);
* ``RLESCP``: DCMTK ``storescp`` whose association profile accepts RLE Lossless only;
* ``PLAINSCP``: DCMTK ``storescp +B`` (uncompressed only), the destination of ``/api/send``.

Ways out: C-MOVE (DCMTK ``movescu``) of every study to STRICT, ALLSCP and RLESCP; C-GET of every study by DCMTK
``getscu`` with its default proposal and ``+xs``, ``+xe``, ``+xi``; ``/api/send`` of every study to PLAINSCP;
WADO-RS of every instance without a transfer-syntax (Explicit VR LE), with ``*`` (as stored), its stored
syntax named, Explicit and Implicit VR LE, Deflated, RLE Lossless, JPEG 2000 Lossless, and JPEG Lossless or
Explicit VR LE (two media ranges); the compacted series' cubes exported with the cube API.

For every instance that comes out the script records :func:`verdict`: its SOP Instance UID (dataset and file
meta) against the stored one, its elements and values against the stored file's (all but the pixel encoding),
its pixels against pydicom's decoding of the stored file, and whether its dataset bytes are the stored ones.
An instance that does not come out is recorded with why (the archive's log line naming the peer's status).
"""

from __future__ import annotations

import io
import json
import os
import re
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
KEY = "fidelity-key-0123456789"
PEERS = {"STRICT": 4242, "ALLSCP": 4343, "RLESCP": 4444, "PLAINSCP": 4545}
SERIES_SAMPLE = 8  # files of each series in the matrix (every single and malformed file is)
EXPLICIT, IMPLICIT, DEFLATED = "1.2.840.10008.1.2.1", "1.2.840.10008.1.2", "1.2.840.10008.1.2.1.99"
RLE, J2K, JPEG_LOSSLESS = "1.2.840.10008.1.2.5", "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.70"
# what a transcoded copy may change besides the transfer syntax (PS3.5 8: the pixel encoding)
PIXEL_ENCODING = {0x7FE00010, 0x00280004, 0x00280006, 0x00280008}


def _read(data: bytes, pixels: bool = True) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(io.BytesIO(data), force=True, stop_before_pixels=not pixels)


_ORIGINAL_PIXELS: dict[int, np.ndarray | None] = {}  # id(stored bytes) -> pydicom's decoding, once each
_ORIGINAL_VALUES: dict[tuple[int, bool], dict[int, Any]] = {}  # (id(stored bytes), implicit) -> its values


def pixels_of(data: bytes) -> np.ndarray | None:
    """pydicom's decoding of a file's pixels (the oracle), None when pydicom cannot decode them."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return np.asarray(_read(data).pixel_array)
        except Exception:
            return None


def _vr_not_sent(elem: Any) -> bool:
    """Whether reading an element back from Implicit VR needs a VR it did not carry: private, unknown, or one of
    the elements whose VR depends on others (US or SS…)."""
    from pydicom.datadict import dictionary_VR

    if elem.tag.is_private or elem.VR == "UN":
        return True
    try:
        return " or " in dictionary_VR(elem.tag)
    except KeyError:
        return True


def _values(ds: Any, implicit: bool) -> dict[int, Any]:
    """Every element but the pixel encoding's and group lengths, as comparable values (sequences recursively);
    for a copy read as Implicit VR, private elements are compared by tag only (their VR is not sent)."""
    out: dict[int, Any] = {}
    for elem in ds:
        tag = int(elem.tag)
        if tag in PIXEL_ENCODING or elem.tag.element == 0 or elem.tag.group == 0x0002:
            continue
        if implicit and _vr_not_sent(elem):
            out[tag] = "tag only"  # sent without its VR: what the copy reads back is not the same type
        elif elem.VR == "SQ":
            out[tag] = [_values(item, implicit) for item in elem.value]
        else:
            out[tag] = elem.value
    return out


def verdict(stored: bytes, received: bytes, syntax: str | None = None) -> str:
    """'bytes' (the dataset is the stored one), 'same' (the same UID, elements and values; pixels equal to
    pydicom's decoding of the stored file), or what differs. ``syntax``: the one it should be in, if known."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # values are converted as they are compared: real files have bad ones
        return _verdict(stored, received, syntax)


def _verdict(stored: bytes, received: bytes, syntax: str | None) -> str:
    from cubepacs.dicom.transcode import dataset_offset, stored_syntax

    ts, ts_stored = stored_syntax(received), stored_syntax(stored)
    if syntax is not None and ts != syntax:
        return f"in {ts}, not {syntax}"
    if ts == ts_stored and stored[dataset_offset(stored):] == received[dataset_offset(received):]:
        return "bytes"
    a, b = _read(stored, pixels=False), _read(received, pixels=False)
    if str(b.get("SOPInstanceUID")) != str(a.get("SOPInstanceUID")):
        return f"new SOP Instance UID {b.get('SOPInstanceUID')}"
    meta_uid = b.file_meta.get("MediaStorageSOPInstanceUID")
    if meta_uid is not None and str(meta_uid) not in (str(a.get("SOPInstanceUID")),
                                                      str(a.file_meta.get("MediaStorageSOPInstanceUID"))):
        return f"file meta names another instance: {meta_uid}"
    implicit = ts == IMPLICIT
    key = (id(stored), implicit)
    va = _ORIGINAL_VALUES[key] if key in _ORIGINAL_VALUES else _ORIGINAL_VALUES.setdefault(key, _values(a, implicit))
    vb = _values(b, implicit)
    if va != vb:
        diff = sorted(f"{t:08X}" for t in set(va) ^ set(vb)) or sorted(f"{t:08X}" for t in va if va[t] != vb.get(t))
        return f"elements differ: {diff[:5]}"
    original = _ORIGINAL_PIXELS.get(id(stored)) if id(stored) in _ORIGINAL_PIXELS else pixels_of(stored)
    if original is not None:
        got = pixels_of(received)
        if got is None or got.shape != original.shape or not np.array_equal(got, original):
            return f"pixels differ (in {ts})"
    return "same"


def rle_profile(path: Path, sop_classes: set[str]) -> None:
    """A DCMTK association profile accepting every SOP class of the data in RLE Lossless only."""
    lines = ["[[TransferSyntaxes]]", "[RLE]", "TransferSyntax1 = RLELossless", "", "[[PresentationContexts]]",
             "[RLEOnly]"]
    lines += [f"PresentationContext{i} = {uid}\\RLE" for i, uid in enumerate(sorted(sop_classes), 1)]
    lines += ["", "[[Profiles]]", "[RLE]", "PresentationContexts = RLEOnly", ""]
    path.write_text("\n".join(lines))


def received_files(folder: Path) -> dict[str, bytes]:
    """What a DCMTK SCP wrote, by the dataset's SOP Instance UID (several copies of one: the last)."""
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            data = p.read_bytes()
            out[str(_read(data, pixels=False).get("SOPInstanceUID"))] = data
    return out


def movescu(study: str, destination: str) -> str:
    run = subprocess.run(["movescu", "-S", "-aet", "MOVESCU", "-aec", "CUBEPACS", "-aem", destination,
                          "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study}", "127.0.0.1", "11112"],
                         capture_output=True, text=True, timeout=300, check=False)
    return run.stderr + run.stdout


def getscu(study: str, option: str | None, folder: Path) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    args = ["getscu", "-S", "-aet", "GETSCU", "-aec", "CUBEPACS", "+B", "-od", str(folder),
            *([option] if option else []), "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study}",
            "127.0.0.1", "11112"]
    run = subprocess.run(args, capture_output=True, text=True, timeout=300, check=False)
    return run.stderr + run.stdout


def wado(client: httpx.Client, row: dict[str, str], accept: str) -> tuple[int, bytes, str]:
    from cubepacs.archive.web import multipart

    url = f"/dicom-web/studies/{row['study']}/series/{row['series']}/instances/{row['sop']}"
    r = client.get(url, headers={"Accept": accept})
    if r.status_code != 200:
        return r.status_code, b"", r.text[:300]
    (part,) = multipart.parse(r.content, r.headers["content-type"])
    head = r.content[:400].decode("latin-1")
    found = re.search(r"transfer-syntax=([0-9.*]+)", head)
    return 200, part, found.group(1) if found else ""


def sample() -> list[Path]:
    """The files the matrix runs on: every single and malformed file, and the first ``SERIES_SAMPLE`` files of
    each series (a series' files share their encoding, SOP class and modules: the rest of each is what
    tests/archive/test_peers.py moves, as stored, to three peers)."""
    from tests.archive.peers import DATA, files

    out = []
    for p in files():
        if p.is_relative_to(DATA / "series"):
            if sorted(x for x in p.parent.iterdir() if x.suffix != ".txt" and x.name != "DIRFILE").index(p) >= \
                    SERIES_SAMPLE:
                continue
        out.append(p)
    return out


def start(tmp: Path, sop_classes: set[str]) -> tuple[list[subprocess.Popen[bytes]], Any]:
    """Orthanc (STRICT), the three storescp peers and the archive, all on this namespace's 127.0.0.1."""
    env = {**os.environ, "TCP_NODELAY": "1"}
    procs: list[subprocess.Popen[bytes]] = []
    ocfg = {"Name": "strict", "StorageDirectory": str(tmp / "orthanc"), "IndexDirectory": str(tmp / "orthanc"),
            "DicomAet": "STRICT", "DicomPort": PEERS["STRICT"], "HttpPort": 8043, "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False, "DicomCheckCalledAet": False, "StorageCompression": False,
            "AcceptedTransferSyntaxes": [IMPLICIT, EXPLICIT], "Plugins": []}
    (tmp / "orthanc.json").write_text(json.dumps(ocfg))
    procs.append(subprocess.Popen(["Orthanc", str(tmp / "orthanc.json")], env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL))
    rle_profile(tmp / "rle.cfg", sop_classes)
    for name, extra in (("ALLSCP", ["+xa", "+B"]), ("RLESCP", ["-xf", str(tmp / "rle.cfg"), "RLE"]),
                        ("PLAINSCP", ["+B"])):
        (tmp / name).mkdir()
        procs.append(subprocess.Popen(["storescp", "-aet", name, *extra, "-od", str(tmp / name), str(PEERS[name])],
                                      env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    remote = ", ".join(f'"{n}" = "127.0.0.1:{p}"' for n, p in PEERS.items())
    (tmp / "cubepacs.toml").write_text(
        f'[cubepacs]\ndata_dir = "{tmp / "cubepacs"}"\nquiet_seconds = 2\n'
        f'api_keys = {{ "{KEY}" = "default" }}\nremote_aes = {{ {remote} }}\n')
    log = open(tmp / "cubepacs.log", "wb")
    procs.append(subprocess.Popen([sys.executable, "-m", "cubepacs", "serve", "--config", str(tmp / "cubepacs.toml")],
                                  env={**env, "PYTHONWARNINGS": "ignore"}, stdout=log, stderr=subprocess.STDOUT))
    from tests.archive.peers import wait_port

    for port in (*PEERS.values(), 8043, 8042, 11112):
        wait_port(port)
    return procs, log


class Matrix:
    """The stored instances and the ways out, each recording one verdict per stored instance."""

    def __init__(self, tmp: Path, client: httpx.Client) -> None:
        self.tmp, self.client = tmp, client
        self.stored: dict[str, bytes] = {}
        self.rows: dict[str, dict[str, str]] = {}
        self.refused: dict[str, str] = {}

    def stow(self, paths: list[Path]) -> None:
        from cubepacs.archive.web import multipart
        from tests.archive.peers import DATA

        for path in paths:
            data = path.read_bytes()
            body, ctype = multipart.encode([data], "application/dicom")
            r = self.client.post("/dicom-web/studies", content=body, headers={"Content-Type": ctype})
            name = str(path.relative_to(DATA))
            if r.status_code != 200:
                self.refused[name] = f"{r.status_code} {r.text[:200]}"
                continue
            sop = r.json()["00081199"]["Value"][0]["00081155"]["Value"][0]
            if sop in self.stored:  # a re-sent SOP Instance UID keeps the first (the default)
                continue
            self.stored[sop] = data
            ds = _read(data, pixels=False)
            self.rows[sop] = {"study": str(ds.StudyInstanceUID), "series": str(ds.SeriesInstanceUID), "sop": sop,
                              "name": name}
            _ORIGINAL_PIXELS[id(data)] = pixels_of(data)

    @property
    def studies(self) -> list[str]:
        return sorted({r["study"] for r in self.rows.values()})

    def outcome(self, received: dict[str, bytes], syntax: str | None = None) -> dict[str, str]:
        return {sop: verdict(data, received[sop], syntax) if sop in received else "missing"
                for sop, data in self.stored.items()}

    def move(self, peer: str) -> dict[str, Any]:
        outputs = [movescu(s, peer) for s in self.studies]
        received: dict[str, bytes] = {}
        if peer == "STRICT":
            with httpx.Client(base_url="http://127.0.0.1:8043", timeout=60) as oc:
                for oid in oc.get("/instances").json():
                    data = oc.get(f"/instances/{oid}/file").content
                    received[str(_read(data, pixels=False).SOPInstanceUID)] = data
        else:
            received = received_files(self.tmp / peer)
        return {f"move {peer}": self.outcome(received, RLE if peer == "RLESCP" else None),
                f"move {peer} errors": [o[-500:] for o in outputs if re.search(r"\bE:|Release Failed|Abort", o)]}

    def get(self, option: str | None) -> dict[str, Any]:
        folder = self.tmp / f"get{option or ''}"
        outputs = [getscu(s, option, folder / s) for s in self.studies]
        key = f"get {option or 'default'}"
        return {key: self.outcome(received_files(folder)),
                f"{key} errors": [o[-500:] for o in outputs if re.search(r"\bE:|Release Failed|Abort", o)]}

    def api_send(self) -> dict[str, Any]:
        lines = []
        for s in self.studies:
            r = self.client.post("/api/send", json={"to": "PLAINSCP", "level": "study", "uid": s})
            lines += [json.loads(line) for line in r.text.splitlines() if line.strip()]
        return {"api send": self.outcome(received_files(self.tmp / "PLAINSCP")),
                "api send failures": [x for x in lines if "sop" in x and x.get("status") != 0]}

    def wado(self) -> dict[str, Any]:
        from cubepacs.dicom.transcode import stored_syntax

        base = 'multipart/related; type="application/dicom"'
        out: dict[str, Any] = {}
        for label, syntax in (("default", EXPLICIT), ("*", None), ("stored", None), (EXPLICIT, EXPLICIT),
                              (IMPLICIT, IMPLICIT), (DEFLATED, DEFLATED), (RLE, RLE), (J2K, J2K),
                              ("jpeg lossless or explicit", EXPLICIT)):
            verdicts: dict[str, str] = {}
            for sop, data in self.stored.items():
                ts = stored_syntax(data) if label == "stored" else label
                accept = base if label == "default" else f"{base}; transfer-syntax={ts}"
                expected = syntax
                if label == "jpeg lossless or explicit":  # two media ranges: the stored one taken where it is
                    accept = f"{base}; transfer-syntax={JPEG_LOSSLESS}, {base}; transfer-syntax={EXPLICIT}"
                    expected = JPEG_LOSSLESS if stored_syntax(data) == JPEG_LOSSLESS else EXPLICIT
                code, part, said = wado(self.client, self.rows[sop], accept)
                if code != 200:
                    verdicts[sop] = f"HTTP {code}: {said}"
                    continue
                v = verdict(data, part, expected)
                if v in ("bytes", "same") and said != (expected or stored_syntax(data)):
                    v = f"part says {said}"
                verdicts[sop] = v
            out[f"wado {label}"] = verdicts
        return out

    def cube_export(self) -> dict[str, Any]:
        from cubepacs.cube import api

        deadline = time.monotonic() + 60
        cubes: list[Path] = []
        while time.monotonic() < deadline:  # series are compacted once quiet (2 s)
            cubes = sorted((self.tmp / "cubepacs").rglob("*.dcbs"))
            if len(cubes) >= len({r["series"] for r in self.rows.values()}):
                break
            time.sleep(1)
        exported: dict[str, bytes] = {}
        for i, cube in enumerate(cubes):
            for p in api.save_to_dicom_folder(api.load(cube), self.tmp / "export" / str(i)):
                data = Path(p).read_bytes()
                exported[str(_read(data, pixels=False).get("SOPInstanceUID"))] = data
        return {"cube export": {sop: "bytes" if exported[sop] == data else verdict(data, exported[sop])
                                for sop, data in self.stored.items() if sop in exported}, "cubes": len(cubes)}


def main(out: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from cubepacs.dicom.transcode import stored_syntax
    from tests.archive.conftest import stop_all

    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    tmp = Path(tempfile.mkdtemp(prefix="cubepacs-fidelity-"))
    started = time.monotonic()
    paths = sample()
    sop_classes = {str(_read(p.read_bytes(), pixels=False).get("SOPClassUID")) for p in paths} - {"None"}
    procs, log = start(tmp, sop_classes)
    result: dict[str, Any] = {"timings": {"start": round(time.monotonic() - started, 1)}}
    try:
        with httpx.Client(base_url="http://127.0.0.1:8042", timeout=120,
                          headers={"Authorization": f"Bearer {KEY}"}) as client:
            m = Matrix(tmp, client)
            t = time.monotonic()
            m.stow(paths)
            result["timings"]["stow"] = round(time.monotonic() - t, 1)
            result.update(files=len(paths), stored=len(m.stored), refused=m.refused, names={s: r["name"] for s, r in
                                                                                          m.rows.items()},
                          syntaxes={sop: stored_syntax(d) for sop, d in m.stored.items()},
                          decodable=sorted(sop for sop, d in m.stored.items() if _ORIGINAL_PIXELS[id(d)] is not None))
            jobs = {"move STRICT": lambda: m.move("STRICT"), "move ALLSCP": lambda: m.move("ALLSCP"),
                    "move RLESCP": lambda: m.move("RLESCP"), "get default": lambda: m.get(None),
                    "get +xs": lambda: m.get("+xs"), "get +xe": lambda: m.get("+xe"), "get +xi": lambda: m.get("+xi"),
                    "api send": m.api_send, "wado": m.wado, "cube export": m.cube_export}

            def timed(name: str) -> dict[str, Any]:
                t0 = time.monotonic()
                got = jobs[name]()
                result["timings"][name] = round(time.monotonic() - t0, 1)
                return got

            with ThreadPoolExecutor(3) as pool:
                for got in pool.map(timed, list(jobs)):
                    result.update(got)
        result["log"] = (tmp / "cubepacs.log").read_text(errors="replace")
    finally:
        stop_all(procs, [log])
    result["timings"]["total"] = round(time.monotonic() - started, 1)
    out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main(Path(sys.argv[1]))
