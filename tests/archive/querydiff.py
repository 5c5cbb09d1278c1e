"""Differential query test: the same files in cubepacs and in Orthanc, the same C-FIND and QIDO queries to both.

``tests/archive/test_query_orthanc.py`` runs ``unshare -n python -m tests.archive.querydiff OUT.json`` (Orthanc
binds 0.0.0.0: it and ``cubepacs serve`` run in a namespace holding only ``lo``, as in ``peers.py``).

Stored in both: every file of ``../shared/data`` that Orthanc 1.10 and cubepacs both accept, plus copies **crafted
here from one real file** (``single/ct_ge_small_signed.dcm``, pixels kept) for what no real file covers: names in
ISO 2022 IR 87 (Japanese, three component groups), UTF-8 and Latin-1, a five-component name, malformed stored dates
and times, lower-case identifiers, and a study holding a US and a CR series. Queries are generated from the stored
values (exact, case changed, ``*``/``?`` wild cards, several values, UID lists, date and time ranges, sequences as
return keys, non-ASCII values) at STUDY, SERIES and IMAGE level, each sent as a Study Root C-FIND (pynetdicom) and
as a QIDO-RS request to both servers; the answers' UIDs (and, for names, the returned Person Name groups) are
written to OUT.json for the test to compare.
"""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pydicom
from pydicom import config
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from tests.archive.peers import DATA, files, wait_port

KEY = "querydiff-key-0123456789"
ORTHANC_DICOM, ORTHANC_HTTP, CUBE_DICOM, CUBE_HTTP = 4242, 8043, 11112, 8042
LEVEL_UID = {"STUDY": "StudyInstanceUID", "SERIES": "SeriesInstanceUID", "IMAGE": "SOPInstanceUID"}
QIDO_PATH = {"STUDY": "studies", "SERIES": "series", "IMAGE": "instances"}
UID_TAG = {"STUDY": "0020000D", "SERIES": "0020000E", "IMAGE": "00080018"}
PN_TAG = "00100010"


def crafted_study(n: int) -> str:
    """The Study Instance UID of crafted copy ``n``."""
    return str(generate_uid(entropy_srcs=["querydiff-study", str(n)]))


def crafted() -> list[bytes]:
    """Copies of a real file with what no file of the data set has (see the module docstring)."""
    base = DATA / "single" / "ct_ge_small_signed.dcm"
    out = []

    def copy(n: int, study: int | None = None, charset: str | list[str] | None = None, **values: str) -> None:
        ds = pydicom.dcmread(base)
        ds.StudyInstanceUID = crafted_study(study or n)
        ds.SeriesInstanceUID = generate_uid(entropy_srcs=["querydiff-series", str(n)])
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=["querydiff", str(n)])
        if charset is not None:
            ds.SpecificCharacterSet = charset
        for kw, value in values.items():
            ds[kw] = DataElement(kw, pydicom.datadict.dictionary_VR(kw), value, validation_mode=config.IGNORE)
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        out.append(buf.getvalue())

    copy(1, charset=["ISO 2022 IR 6", "ISO 2022 IR 87"], PatientName="Yamada^Tarou=山田^太郎=やまだ^たろう",
         PatientID="JP-001", AccessionNumber="jp001", Modality="US", StudyDate="20210615", StudyTime="081500",
         StudyDescription="Kopf")
    copy(2, study=1, charset=["ISO 2022 IR 6", "ISO 2022 IR 87"], PatientName="Yamada^Tarou=山田^太郎=やまだ^たろう",
         PatientID="JP-001", AccessionNumber="jp001", Modality="CR", StudyDate="20210615", StudyTime="081500",
         StudyDescription="Kopf", SeriesDescription="Thorax pa")
    copy(3, charset="ISO_IR 192", PatientName="Müller^Jürgen=ミュラー^ユルゲン", PatientID="UTF-002",
         Modality="CR", StudyDate="20220202", StudyTime="1430", StudyDescription="Hand links")
    copy(4, charset="ISO_IR 100", PatientName="Éloïse^Dupont", PatientID="LAT-003", StudyDate="20190909",
         StudyTime="23", ReferringPhysicianName="Rieux^Bernard")
    copy(5, PatientName="Doe^John^Michael^Dr.^Jr.", PatientID="MC-004", ReferringPhysicianName="Watson^John^H^Dr",
         StudyDate="20180101", StudyTime="120000.123456")
    copy(6, PatientName="Bad^Date", PatientID="BAD-005", StudyDate="***", StudyTime="ab")
    copy(7, PatientName="Old^Format", PatientID="BAD-006", StudyDate="1995.05.01", StudyTime="10:30:00")
    copy(8, PatientName="mcdonald^ronald", PatientID="case-007", AccessionNumber="AbC123",
         StudyDescription="chest ct", StudyDate="20200229")
    return out


def start(tmp: Path) -> tuple[list[subprocess.Popen[bytes]], Any]:
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    ocfg = {"Name": "querydiff", "StorageDirectory": str(tmp / "orthanc"), "IndexDirectory": str(tmp / "orthanc"),
            "DicomAet": "ORTHANC", "DicomPort": ORTHANC_DICOM, "HttpPort": ORTHANC_HTTP, "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False, "DicomCheckCalledAet": False, "DicomAlwaysAllowFind": True,
            "StorageCompression": False, "Plugins": ["/usr/share/orthanc/plugins/libOrthancDicomWeb.so"],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/"}, "CaseSensitivePN": False,
            "DefaultEncoding": "Utf8"}
    (tmp / "orthanc.json").write_text(json.dumps(ocfg))
    (tmp / "cubepacs.toml").write_text(
        f'[cubepacs]\ndata_dir = "{tmp / "cubepacs"}"\nquiet_seconds = 3600\ndimse_workers = 1\n'
        f'api_keys = {{ "{KEY}" = "default" }}\n')
    null = subprocess.DEVNULL
    procs = [subprocess.Popen(["Orthanc", str(tmp / "orthanc.json")], stdout=null, stderr=null)]
    log = open(tmp / "cubepacs.log", "wb")
    procs.append(subprocess.Popen([sys.executable, "-m", "cubepacs", "serve", "--config", str(tmp / "cubepacs.toml")],
                                  env={**os.environ, "PYTHONWARNINGS": "ignore"}, stdout=log, stderr=subprocess.STDOUT))
    for port in (ORTHANC_DICOM, ORTHANC_HTTP, CUBE_DICOM, CUBE_HTTP):
        wait_port(port)
    return procs, log


def _uids(data: bytes) -> tuple[str, str, str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, force=True)
    return str(ds.get("StudyInstanceUID", "")), str(ds.get("SeriesInstanceUID", "")), str(ds.get("SOPInstanceUID", ""))


def store(datas: list[bytes]) -> dict[str, Any]:
    """Each file into Orthanc (REST) and into cubepacs (STOW-RS), one by one in the same order (a series whose
    instances disagree then has the same first instance in both); an instance only one of them took is deleted
    from it again. Returns the indices of the files both hold."""
    from cubepacs.archive.web import multipart

    headers = {"Authorization": f"Bearer {KEY}"}
    with httpx.Client(base_url=f"http://127.0.0.1:{ORTHANC_HTTP}", timeout=60) as oc, \
            httpx.Client(base_url=f"http://127.0.0.1:{CUBE_HTTP}", timeout=60, headers=headers) as cc:
        def to_orthanc() -> list[str | None]:
            answers = [oc.post("/instances", content=data) for data in datas]
            return [r.json()["ID"] if r.status_code == 200 else None for r in answers]

        def to_cubepacs() -> list[bool]:
            out = []
            for data in datas:
                body, ctype = multipart.encode([data], "application/dicom")
                out.append(cc.post("/dicom-web/studies", content=body, headers={"Content-Type": ctype}).status_code
                           == 200)
            return out

        with ThreadPoolExecutor(2) as pool:
            in_orthanc, in_cubepacs = pool.submit(to_orthanc), pool.submit(to_cubepacs)
            ids, taken = in_orthanc.result(), in_cubepacs.result()
        refused: dict[str, list[str]] = {"orthanc": [], "cubepacs": []}
        both = []
        for n, (oid, ok) in enumerate(zip(ids, taken, strict=True)):
            if oid is not None and ok:
                both.append(n)
                continue
            if oid is None:
                refused["orthanc"].append(str(n))
            if not ok:
                refused["cubepacs"].append(str(n))
            if oid is not None:
                oc.delete(f"/instances/{oid}")
            elif ok:
                study, series, sop = _uids(datas[n])
                cc.delete(f"/api/studies/{study}/series/{series}/instances/{sop}")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            r = cc.get("/dicom-web/instances", params={"limit": 10000})
            if r.status_code == 200 and len(r.json()) == len(both):
                break
            time.sleep(0.3)
    return {"both": both, "refused": refused}


def _values(datas: list[bytes]) -> dict[str, list[str]]:
    """Distinct stored values per keyword, in first-seen order (what queries are made of)."""
    keys = ("PatientID", "PatientName", "AccessionNumber", "StudyDescription", "ReferringPhysicianName", "StudyID",
            "PatientSex", "Modality", "SeriesDescription", "SeriesNumber", "InstanceNumber", "StudyDate", "StudyTime",
            "PatientBirthDate", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID")
    out: dict[str, list[str]] = {k: [] for k in (*keys, "count")}
    for data in datas:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, force=True)
        out["count"] += [str(ds.get("StudyInstanceUID", "")), str(ds.get("SOPClassUID", ""))]  # instances of each
        for k in keys:
            v = ds.get(k)
            text = str(v) if v not in (None, "") else ""
            if text and "\\" not in text and text not in out[k]:
                out[k].append(text)
    return out


def queries(datas: list[bytes]) -> list[dict[str, Any]]:
    """The generated queries: ``{"id", "level", "keys": {keyword: value}, "kind"}``."""
    v = _values(datas)
    out: list[dict[str, Any]] = []

    def add(level: str, kind: str, **keys: str) -> None:
        out.append({"id": f"{len(out):03d}", "level": level, "kind": kind, "keys": keys})

    for kw in ("PatientID", "PatientName", "AccessionNumber", "StudyDescription", "ReferringPhysicianName",
               "StudyID"):
        for value in [x for x in v[kw] if x.isascii() and "=" not in x][:2]:
            add("STUDY", f"{kw} exact", **{kw: value})
            add("STUDY", f"{kw} other case", **{kw: value.swapcase()})
            if len(value) > 3:
                add("STUDY", f"{kw} prefix *", **{kw: value[:3] + "*"})
                add("STUDY", f"{kw} suffix *", **{kw: "*" + value[-3:]})
                add("STUDY", f"{kw} ?", **{kw: value[0] + "?" + value[2:]})
        pair = [x for x in v[kw] if x.isascii() and "=" not in x][:2]
        if len(pair) == 2:
            add("STUDY", f"{kw} two values", **{kw: "\\".join(pair)})
    for value in ("Yamada*", "yamada^tarou", "山田*", "=山田^太郎", "==やまだ^たろう", "Yamada^Tarou=山田^太郎",
                  "*^Jürgen", "MÜLLER*", "müller^jürgen", "ミュラー*", "Éloïse*", "éloïse^dupont",
                  "Doe^John*", "DOE^JOHN^MICHAEL^DR.^JR.", "*Michael*"):
        add("STUDY", "PatientName characters", PatientName=value)
    for value in ("US\\CR", "CT\\MR", "MR", "SEG\\SR\\ECG", "RT*", "C?", "ct"):
        add("STUDY", "ModalitiesInStudy", ModalitiesInStudy=value)
    dates = sorted(d for d in v["StudyDate"] if d.isdigit())
    for value in ("-19991231", "20000101-", f"{dates[2]}-{dates[-3]}", f"{dates[1]}-{dates[1]}", dates[0],
                  f"{dates[0]}\\{dates[-1]}", "-20191231", "20200101-20221231"):
        add("STUDY", "StudyDate", StudyDate=value)
    for value in ("-120000", "120000-", "080000-150000", "-10", "23-", "1430"):
        add("STUDY", "StudyTime", StudyTime=value)
    for value in ("-19700101", "19500101-"):
        add("STUDY", "PatientBirthDate", PatientBirthDate=value)
    for value in ("F", "M", "O\\F"):
        add("STUDY", "PatientSex", PatientSex=value)
    studies = v["StudyInstanceUID"]
    add("STUDY", "StudyInstanceUID list", StudyInstanceUID="\\".join(studies[:3]))
    add("STUDY", "StudyInstanceUID", StudyInstanceUID=studies[-1])
    add("STUDY", "StudyInstanceUID wild card", StudyInstanceUID=studies[0][:6] + "*")
    add("STUDY", "sequence return key", PatientID="*", ReferencedStudySequence="")
    add("STUDY", "sequence return key", StudyDate=dates[len(dates) // 2], ProcedureCodeSequence="")
    add("STUDY", "everything")
    for value in ("CT\\MR", "CT", "RTDOSE\\RTPLAN", "M*", "?T", "SEG\\SR", "mr"):
        add("SERIES", "Modality", Modality=value)
    for value in [str(x) for x in v["SeriesNumber"][:5]] + ["1\\2", "-3"]:
        add("SERIES", "SeriesNumber", SeriesNumber=value)
    for value in [x for x in v["SeriesDescription"] if x.isascii()][:2]:
        add("SERIES", "SeriesDescription exact", SeriesDescription=value)
        add("SERIES", "SeriesDescription prefix *", SeriesDescription=value[:2] + "*")
        add("SERIES", "SeriesDescription other case", SeriesDescription=value.swapcase())
    series = v["SeriesInstanceUID"]
    add("SERIES", "SeriesInstanceUID list", SeriesInstanceUID="\\".join(series[:4]))
    for study in studies[:3]:
        add("SERIES", "series of a study", StudyInstanceUID=study)
    add("SERIES", "series of a study, one modality", StudyInstanceUID=studies[0], Modality="CT\\MR\\US\\CR")
    # study attributes, wild cards, ranges and several values at the lower levels too
    add("SERIES", "PatientName at series level", PatientName="*^J*")
    add("SERIES", "StudyDate at series level", StudyDate="20000101-20181231", Modality="CT\\MR")
    add("SERIES", "SeriesDate", SeriesDate="-20100101")
    add("SERIES", "SeriesDate", SeriesDate="20100101-")
    add("SERIES", "everything")
    sops = v["SOPInstanceUID"]
    add("IMAGE", "SOPInstanceUID list", SOPInstanceUID="\\".join(sops[::40][:6]))
    add("IMAGE", "SOPInstanceUID", SOPInstanceUID=sops[-1])
    add("IMAGE", "Modality at image level", Modality="US\\CR\\NM")
    add("IMAGE", "PatientID at image level", PatientID="Compressed*\\JP-001\\case-*", InstanceNumber="1\\2")
    add("IMAGE", "PatientName at image level", PatientName="compressedsamples^?T1")
    for value in ("1", "50", "1\\2\\3", "100"):
        add("IMAGE", "InstanceNumber", InstanceNumber=value)
    # (IMAGE queries answered by few instances: Orthanc's QIDO reads each answered instance's file)
    for study in [s for s in studies if 1 < v["count"].count(s) < 20][:2]:
        add("IMAGE", "instances of a study", StudyInstanceUID=study)
    for cls in sorted(v["SOPClassUID"], key=v["count"].count)[:3]:
        add("IMAGE", "SOPClassUID", SOPClassUID=cls)
    return out


def studies(datas: list[bytes]) -> dict[str, dict[str, str]]:
    """Study attributes as pydicom reads them from each study's first file (what the test checks answers by)."""
    out: dict[str, dict[str, str]] = {}
    for data in datas:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, force=True)
        out.setdefault(str(ds.get("StudyInstanceUID", "")), {
            k: str(ds.get(k, "") or "") for k in ("PatientName", "PatientID", "StudyDate", "StudyTime",
                                                  "PatientBirthDate")})
    return out


def _identifier(q: dict[str, Any]) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = q["level"]
    keys = dict(q["keys"])
    if any(not str(x).isascii() for x in keys.values()):
        ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientName = keys.pop("PatientName", "")
    ds[LEVEL_UID[q["level"]]] = DataElement(LEVEL_UID[q["level"]], "UI", "")
    for kw, value in keys.items():
        vr = pydicom.datadict.dictionary_VR(kw)
        ds[kw] = DataElement(kw, vr, [] if vr == "SQ" else value, validation_mode=config.IGNORE)
    return ds


def c_find(port: int, aet: str, qs: list[dict[str, Any]]) -> dict[str, Any]:
    from pynetdicom import AE
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind  # type: ignore[attr-defined]

    ae = AE(ae_title="QUERYDIFF")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    ae.dimse_timeout = ae.network_timeout = ae.acse_timeout = 60
    assoc = ae.associate("127.0.0.1", port, ae_title=aet)
    # a request's command and identifier go in two small writes: without TCP_NODELAY the second waits for the
    # peer's delayed ACK (≈ 40 ms a query, either server)
    sock = assoc.dul.socket.socket if assoc.dul.socket is not None else None
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    out: dict[str, Any] = {}
    try:
        for q in qs:
            uids, names, final = [], [], None
            for status, ident in assoc.send_c_find(_identifier(q), StudyRootQueryRetrieveInformationModelFind):
                if status is None:
                    final = "no answer"
                    break
                if status.Status in (0xFF00, 0xFF01) and ident is not None:
                    uids.append(str(ident.get(LEVEL_UID[q["level"]], "")))
                    pn = ident.get("PatientName")
                    names.append(list(pn.components) if pn is not None and str(pn) else [])
                else:
                    final = f"0x{status.Status:04X}"
            out[q["id"]] = {"status": final, "uids": sorted(uids), "names": sorted(map(json.dumps, names))}
    finally:
        assoc.release()
    return out


# characters a query value keeps as they are in the URL: the rest is percent-encoded (RFC 3986)
_RAW = frozenset(chr(c) for c in range(0x21, 0x7F)) - set('%&#+"<>')


def qido_url(level: str, keys: dict[str, str]) -> str:
    """The QIDO-RS request of a query: several values joined by commas (PS3.18 8.3.4.1), sequences left out."""
    from urllib.parse import quote

    params = {"limit": "10000", "includefield": "00100010"}
    for kw, value in keys.items():
        if pydicom.datadict.dictionary_VR(kw) != "SQ":
            params[kw] = value.replace("\\", ",")
    query = "&".join(f"{k}={''.join(c if c in _RAW else quote(c) for c in v)}" for k, v in params.items())
    return f"/dicom-web/{QIDO_PATH[level]}?{query}"


def qido(base: str, headers: dict[str, str], qs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with httpx.Client(base_url=base, timeout=60, headers=headers) as client:
        for q in qs:
            r = client.get(qido_url(q["level"], q["keys"]))
            items = r.json() if r.status_code == 200 else []
            uids = sorted(i.get(UID_TAG[q["level"]], {}).get("Value", [""])[0] for i in items)
            names = sorted(json.dumps(i.get(PN_TAG, {}).get("Value", [{}])[0], sort_keys=True, ensure_ascii=False)
                           for i in items)
            out[q["id"]] = {"status": r.status_code if r.status_code not in (200, 204) else None, "uids": uids,
                            "names": names}
    return out


def metadata_names() -> dict[str, dict[str, list[Any]]]:
    """The Patient Names that ``/metadata`` of the crafted non-ASCII studies gives, by server and study."""
    out: dict[str, dict[str, list[Any]]] = {}
    for server, port, headers in (("orthanc", ORTHANC_HTTP, {}),
                                  ("cubepacs", CUBE_HTTP, {"Authorization": f"Bearer {KEY}"})):
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60, headers=headers) as client:
            for n in (1, 3, 4):
                r = client.get(f"/dicom-web/studies/{crafted_study(n)}/metadata")
                out.setdefault(server, {})[str(n)] = [i.get(PN_TAG, {}).get("Value") for i in r.json()] \
                    if r.status_code == 200 else [r.status_code]
    return out


def first_of_each(datas: list[bytes]) -> list[bytes]:
    """The first file of each SOP Instance UID (both servers keep the first of several; the later ones would
    only make the two differ on which they received first)."""
    seen: set[str] = set()
    out: list[bytes] = []
    for data in datas:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                sop = str(pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, force=True).SOPInstanceUID)
            except Exception:  # no UID to read: each server refuses it on its own
                sop = str(len(out))
        if sop not in seen:
            seen.add(sop)
            out.append(data)
    return out


def main(out: Path) -> None:
    started = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="cubepacs-querydiff-"))
    procs, log = start(tmp)
    result: dict[str, Any] = {}
    try:
        datas = first_of_each([p.read_bytes() for p in files()] + crafted())
        result["stored"] = store(datas)
        kept = [datas[n] for n in result["stored"]["both"]]
        qs = queries(kept)
        result["studies"] = studies(kept)
        result["queries"] = qs
        result["seconds_store"] = time.monotonic() - started
        result["metadata"] = metadata_names()
        timings = result["timings"] = {}

        def ask(proto: str, server: str) -> None:
            t = time.monotonic()
            if proto == "cfind":
                port, aet = (ORTHANC_DICOM, "ORTHANC") if server == "orthanc" else (CUBE_DICOM, "CUBEPACS")
                answers = c_find(port, aet, qs)
            else:
                port = ORTHANC_HTTP if server == "orthanc" else CUBE_HTTP
                answers = qido(f"http://127.0.0.1:{port}", {} if server == "orthanc" else
                               {"Authorization": f"Bearer {KEY}"}, qs)
            result.setdefault(proto, {})[server] = answers
            timings[f"{proto} {server}"] = round(time.monotonic() - t, 2)

        for proto in ("cfind", "qido"):  # the two servers asked at the same time
            with ThreadPoolExecutor(2) as pool:
                list(pool.map(lambda server, p=proto: ask(p, server), ("orthanc", "cubepacs")))
        result["seconds"] = time.monotonic() - started
    finally:
        from tests.archive.conftest import stop_all

        stop_all(procs, [log])
        result["log"] = (tmp / "cubepacs.log").read_text(errors="replace")[-3000:]
    out.write_text(json.dumps(result, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    main(Path(sys.argv[1]))
