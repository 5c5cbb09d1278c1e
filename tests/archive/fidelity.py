"""The fidelity matrix: every file of ../shared/data × every way out of the archive, run in a private network
namespace (``tests/archive/test_fidelity.py`` runs ``unshare -n python -m tests.archive.fidelity OUT.json``).

One archive (``cubepacs serve``), and as its peers:

* ``STRICT``: Orthanc 1.10 accepting only Implicit and Explicit VR Little Endian; it refuses a C-STORE whose
  dataset's SOP Instance UID is not the command's (the check that found new UIDs on decoded instances);
* ``ALLSCP``: DCMTK ``storescp +xa +B`` (every syntax DCMTK knows, files written bit-preserving);
* ``RLESCP``: DCMTK ``storescp`` whose association profile accepts RLE Lossless only;
* ``JLSSCP``: DCMTK ``storescp`` whose association profile accepts JPEG-LS Lossless only;
* ``PLAINSCP``: DCMTK ``storescp +B`` (uncompressed only), the destination of ``/api/send``.

Every file of the data set is STOW-RS'd (those the archive refuses are recorded with its answer). Ways out: C-MOVE
(DCMTK ``movescu``) of every study to STRICT, ALLSCP, RLESCP and JLSSCP; C-GET of every study by DCMTK ``getscu``
with its default proposal and ``+xs``, ``+xe``, ``+xi``; ``/api/send`` of every study to PLAINSCP;
WADO-RS of every instance without a transfer-syntax (Explicit VR LE), with ``*`` (as stored), its stored
syntax named, Explicit and Implicit VR LE, Deflated, RLE Lossless, JPEG 2000 Lossless, and JPEG Lossless or
Explicit VR LE (two media ranges), a series folder's files in one series request; WADO-RS frame 1 of every
instance, uncompressed; the compacted series' cubes exported with the cube API.

A second tenant (called AE ``CUBEJPEG``) holds a study DCMTK's ``dcmcjpeg`` wrote in JPEG Lossless SV1: every CT
of it, and half of its MR (the other half as the MR files are): C-GET by ``getscu`` with each proposal checks that
the archive accepts the stored syntax of a class whose stored instances all have it (the CT go out byte for byte
with ``+xs``) and Explicit VR LE for the others.

For every instance that comes out the script records :func:`verdict`: its SOP Instance UID (dataset and file
meta) against the stored one, its elements and values against the stored file's (all but the pixel encoding),
its pixels against pydicom's decoding of the stored file, and whether its dataset bytes are the stored ones.
An instance that does not come out is recorded with why (the archive's log line naming the peer's status).
"""

from __future__ import annotations

import functools
import io
import json
import os
import re
import resource
import shutil
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

from tests.pixeloracle import reference_decoders, same_pixels

ROOT = Path(__file__).resolve().parents[2]
KEY = "fidelity-key-0123456789"
KEY_JPEG = "fidelity-jpeg-key-0123456789"
PEERS = {"STRICT": 4242, "ALLSCP": 4343, "RLESCP": 4444, "PLAINSCP": 4545, "JLSSCP": 4646}
EXPLICIT, IMPLICIT, DEFLATED = "1.2.840.10008.1.2.1", "1.2.840.10008.1.2", "1.2.840.10008.1.2.1.99"
RLE, J2K, JPEG_LOSSLESS = "1.2.840.10008.1.2.5", "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.70"
JLS = "1.2.840.10008.1.2.4.80"
WADO_WAYS = (("default", EXPLICIT), ("*", None), ("stored", None), (EXPLICIT, EXPLICIT), (IMPLICIT, IMPLICIT),
             (DEFLATED, DEFLATED), (RLE, RLE), (J2K, J2K), ("jpeg lossless or explicit", EXPLICIT))
ONE_SYNTAX = {"RLESCP": ("RLELossless", RLE), "JLSSCP": ("JPEGLSLossless", JLS)}  # peer -> (DCMTK's name, UID)
# what a transcoded copy may change besides the transfer syntax (PS3.5 8: the pixel encoding); float pixel data is
# compared as pixels, and the Data Set Trailing Padding (FFFC,FFFC) after them is not compared (PS3.5 7.2: it has
# no meaning, and DCMTK's storescp drops it)
PIXEL_ENCODING = {0x7FE00010, 0x00280004, 0x00280006, 0x00280008, 0x7FE00008, 0x7FE00009, 0xFFFCFFFC}


def _read(data: bytes, pixels: bool = True) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(io.BytesIO(data), force=True, stop_before_pixels=not pixels)


_ORIGINAL_PIXELS: dict[int, np.ndarray | None] = {}  # id(stored bytes) -> pydicom's decoding, once each
_ORIGINAL_VALUES: dict[tuple[int, bool], dict[int, Any]] = {}  # (id(stored bytes), implicit) -> its values
_ORIGINAL_IDS: dict[int, tuple[str, str]] = {}  # id(stored bytes) -> (SOP Instance UID, file meta's)
_ORIGINAL_SYNTAX: dict[int, str] = {}  # id(stored bytes) -> its Transfer Syntax UID


def pixels_of(data: bytes | Any) -> np.ndarray | None:
    """pydicom's decoding of a file's pixels (the oracle; ``data``: its bytes or pydicom's reading of them), None
    when pydicom cannot decode them."""
    with warnings.catch_warnings(), reference_decoders():  # pydicom's own plugins, not the project's
        warnings.simplefilter("ignore")
        try:
            return np.asarray((_read(data) if isinstance(data, bytes) else data).pixel_array)
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
    implicit = ts == IMPLICIT
    key = (id(stored), implicit)
    if key not in _ORIGINAL_VALUES or id(stored) not in _ORIGINAL_IDS:  # the stored file read once
        a = _read(stored, pixels=False)
        _ORIGINAL_IDS[id(stored)] = (str(a.get("SOPInstanceUID")), str(a.file_meta.get("MediaStorageSOPInstanceUID")))
        _ORIGINAL_SYNTAX[id(stored)] = str(a.file_meta.get("TransferSyntaxUID", ""))
        _ORIGINAL_VALUES[key] = _values(a, implicit)
    b = _read(received)  # read once, pixels and all
    if str(b.get("SOPInstanceUID")) != _ORIGINAL_IDS[id(stored)][0]:
        return f"new SOP Instance UID {b.get('SOPInstanceUID')}"
    meta_uid = b.file_meta.get("MediaStorageSOPInstanceUID")
    if meta_uid is not None and str(meta_uid) not in _ORIGINAL_IDS[id(stored)]:
        return f"file meta names another instance: {meta_uid}"
    va, vb = _ORIGINAL_VALUES[key], _values(b, implicit)
    if va != vb:
        diff = sorted(f"{t:08X}" for t in set(va) ^ set(vb)) or sorted(f"{t:08X}" for t in va if va[t] != vb.get(t))
        return f"elements differ: {diff[:5]}"
    original = _ORIGINAL_PIXELS.get(id(stored)) if id(stored) in _ORIGINAL_PIXELS else pixels_of(stored)
    if original is not None:
        got = pixels_of(b)
        if got is None or not same_pixels(got, original, _ORIGINAL_SYNTAX.get(id(stored), "")):
            return f"pixels differ (in {ts})"
    return "same"


def one_syntax_profile(path: Path, sop_classes: set[str], syntax: str) -> None:
    """A DCMTK association profile (named ``Only``) accepting every SOP class of the data in one transfer syntax
    (DCMTK's name of it: ``RLELossless``, ``JPEGLSLossless``)."""
    lines = ["[[TransferSyntaxes]]", "[One]", f"TransferSyntax1 = {syntax}", "", "[[PresentationContexts]]",
             "[OneOnly]"]
    lines += [f"PresentationContext{i} = {uid}\\One" for i, uid in enumerate(sorted(sop_classes), 1)]
    lines += ["", "[[Profiles]]", "[Only]", "PresentationContexts = OneOnly", ""]
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


def getscu(study: str, option: str | None, folder: Path, called: str = "CUBEPACS") -> str:
    folder.mkdir(parents=True, exist_ok=True)
    args = ["getscu", "-S", "-aet", "GETSCU", "-aec", called, "+B", "-od", str(folder),
            *([option] if option else []), "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study}",
            "127.0.0.1", "11112"]
    run = subprocess.run(args, capture_output=True, text=True, timeout=300, check=False)
    return run.stderr + run.stdout


def parts(body: bytes, content_type: str) -> list[tuple[bytes, str]]:
    """The parts of a multipart/related answer: (body, the transfer-syntax its Content-Type names, or "")."""
    boundary = re.search(r'boundary="?([^";]+)"?', content_type)
    assert boundary is not None, content_type
    out = []
    for chunk in body.split(b"--" + boundary.group(1).encode())[1:]:
        if chunk.startswith(b"--"):
            break
        head, _, value = chunk.partition(b"\r\n\r\n")
        said = re.search(rb"transfer-syntax=([0-9.*]+)", head)
        out.append((value.removesuffix(b"\r\n"), said.group(1).decode() if said else ""))
    return out


def wado(client: httpx.Client, url: str, accept: str) -> tuple[int, list[tuple[bytes, str]], str]:
    """WADO-RS of ``url`` (a series or an instance): (HTTP status, its parts, the error's text)."""
    r = client.get(url, headers={"Accept": accept})
    if r.status_code != 200:
        return r.status_code, [], r.text[:300]
    return 200, parts(r.content, r.headers["content-type"]), ""


def sample() -> list[Path]:
    """The files the matrix runs on: every file of the data set (each series' files, but the non-DICOM ones
    its folder came with; every single and malformed file)."""
    from tests.archive.peers import files

    return files()


def jpeg_study(tmp: Path) -> list[Path]:
    """The second tenant's files, written by DCMTK's ``dcmcjpeg`` (JPEG Lossless SV1, UIDs kept): six CT of the
    Philips series, and two of four MR of the GE head series (the other two as they are, Implicit VR LE)."""
    from tests.archive.peers import DATA

    ct = sorted(p for p in (DATA / "series" / "ct_philips_ingenuity_tilt_54sl").iterdir() if p.name != "DIRFILE")[:6]
    mr = sorted((DATA / "series" / "mr_ge_signa_3dt1_100sl").glob("*.IMA"))[:4]
    out = []
    for n, path in enumerate(ct + mr):
        if path in mr[2:]:
            out.append(path)
            continue
        target = tmp / "jpeg" / f"{n}.dcm"
        target.parent.mkdir(exist_ok=True)
        subprocess.run(["dcmcjpeg", str(path), str(target)], check=True, capture_output=True, timeout=60)
        out.append(target)
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
    for peer, (dcmtk_name, _) in ONE_SYNTAX.items():
        one_syntax_profile(tmp / f"{peer}.cfg", sop_classes, dcmtk_name)
    for name, extra in (("ALLSCP", ["+xa", "+B"]), ("RLESCP", ["-xf", str(tmp / "RLESCP.cfg"), "Only"]),
                        ("JLSSCP", ["-xf", str(tmp / "JLSSCP.cfg"), "Only"]), ("PLAINSCP", ["+B"])):
        (tmp / name).mkdir()
        procs.append(subprocess.Popen(["storescp", "-aet", name, *extra, "-od", str(tmp / name), str(PEERS[name])],
                                      env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    remote = ", ".join(f'"{n}" = "127.0.0.1:{p}"' for n, p in PEERS.items())
    (tmp / "cubepacs.toml").write_text(
        f'[cubepacs]\ndata_dir = "{tmp / "cubepacs"}"\nquiet_seconds = 2\n'
        f'api_keys = {{ "{KEY}" = "default", "{KEY_JPEG}" = "jpeg" }}\nremote_aes = {{ {remote} }}\n'
        'ae_tenants = { "CUBEPACS" = "default", "CUBEJPEG" = "jpeg" }\n')
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
            name = str(path.relative_to(DATA)) if path.is_relative_to(DATA) else f"{path.parent.name}/{path.name}"
            if r.status_code != 200:
                self.refused[name] = f"{r.status_code} {r.text}"
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
        return {f"move {peer}": self.outcome(received, ONE_SYNTAX[peer][1] if peer in ONE_SYNTAX else None),
                f"move {peer} errors": [o[-500:] for o in outputs if re.search(r"\bE:|Release Failed|Abort", o)]}

    def get(self, option: str | None) -> dict[str, Any]:
        folder = self.tmp / f"get{option or ''}"
        outputs = [getscu(s, option, folder / s) for s in self.studies]
        key = f"get {option or 'default'}"
        return {key: self.outcome(received_files(folder)),
                f"{key} errors": [o[-500:] for o in outputs if re.search(r"\bE:|Release Failed|Abort", o)]}

    def get_jpeg(self, jpeg: Matrix) -> dict[str, Any]:
        """C-GET of the second tenant's study (``jpeg``: its instances) with each getscu proposal."""
        out: dict[str, Any] = {}
        for option in (None, "+xs", "+xe", "+xi"):
            folder = self.tmp / f"getjpeg{option or ''}"
            outputs = [getscu(s, option, folder / s, "CUBEJPEG") for s in jpeg.studies]
            key = f"get jpeg {option or 'default'}"
            out[key] = jpeg.outcome(received_files(folder))
            out[f"{key} errors"] = [o[-500:] for o in outputs if re.search(r"\bE:|Release Failed|Abort", o)]
        return out

    def api_send(self) -> dict[str, Any]:
        lines = []
        for s in self.studies:
            r = self.client.post("/api/send", json={"to": "PLAINSCP", "level": "study", "uid": s})
            lines += [json.loads(line) for line in r.text.splitlines() if line.strip()]
        return {"api send": self.outcome(received_files(self.tmp / "PLAINSCP")),
                "api send failures": [x for x in lines if "sop" in x and x.get("status") != 0]}

    def retrievals(self) -> list[tuple[str, list[str]]]:
        """WADO-RS requests covering every stored instance: (URL, the instances it answers). A series folder's
        files (one encoding, SOP class and module set) in one series request; each other file on its own."""
        out: list[tuple[str, list[str]]] = []
        series: dict[tuple[str, str], list[str]] = {}
        for sop, r in self.rows.items():
            if r["name"].startswith("series/"):
                series.setdefault((r["study"], r["series"]), []).append(sop)
            else:
                out.append((f"/dicom-web/studies/{r['study']}/series/{r['series']}/instances/{sop}", [sop]))
        return out + [(f"/dicom-web/studies/{st}/series/{se}", sops) for (st, se), sops in series.items()]

    def wado(self, label: str, syntax: str | None) -> dict[str, Any]:
        """WADO-RS of every stored instance with one Accept (``label``: a transfer syntax, ``default``, ``*``,
        ``stored`` or ``jpeg lossless or explicit``); ``syntax``: what the copies must be in (None: as stored)."""
        from cubepacs.dicom.transcode import stored_syntax

        base = 'multipart/related; type="application/dicom"'
        verdicts: dict[str, str] = {}
        for url, sops in self.retrievals():
            ts = stored_syntax(self.stored[sops[0]]) if label == "stored" else label
            accept = base if label == "default" else f"{base}; transfer-syntax={ts}"
            if label == "jpeg lossless or explicit":  # two media ranges: the stored one taken where it is
                accept = f"{base}; transfer-syntax={JPEG_LOSSLESS}, {base}; transfer-syntax={EXPLICIT}"
            code, got, said = wado(self.client, url, accept)
            if len(sops) == 1 and got:
                answered = {sops[0]: got[0]}
            else:
                answered = {str(_read(part, pixels=False).get("SOPInstanceUID")): (part, ts) for part, ts in got}
            for sop in sops:
                data = self.stored[sop]
                expected = syntax
                if label == "jpeg lossless or explicit":
                    expected = JPEG_LOSSLESS if stored_syntax(data) == JPEG_LOSSLESS else EXPLICIT
                if code != 200 or sop not in answered:
                    verdicts[sop] = f"HTTP {code}: {said}" if code != 200 else "not in the answer"
                    continue
                part, part_says = answered[sop]
                v = verdict(data, part, expected)
                if v in ("bytes", "same") and part_says != (expected or stored_syntax(data)):
                    v = f"part says {part_says}"
                verdicts[sop] = v
        return {f"wado {label}": verdicts}

    def frames(self) -> dict[str, Any]:
        """WADO-RS frame 1 of every stored instance, uncompressed (PS3.18's default): 'same' when it is pydicom's
        stored values of that frame (YBR stays YBR) laid out as the instance's ``/metadata`` says (Planar
        Configuration; Bits Allocated 1 packed; YBR_FULL_422 two bytes a pixel: its luminance compared), else
        what differs; for an instance pydicom cannot decode, the HTTP status."""
        from pydicom.pixels import pack_bits, pixel_array

        plain = 'multipart/related; type="application/octet-stream"'
        verdicts: dict[str, str] = {}
        for sop, data in self.stored.items():
            r = self.rows[sop]
            url = f"/dicom-web/studies/{r['study']}/series/{r['series']}/instances/{sop}"
            with warnings.catch_warnings(), reference_decoders():
                warnings.simplefilter("ignore")
                try:
                    values: np.ndarray | None = np.asarray(pixel_array(io.BytesIO(data), index=0, raw=True))
                except Exception:  # pixel_array of a file-like does not inflate a deflated file: the dataset's
                    whole = pixels_of(data)
                    values = None if whole is None else whole[0] if int(_read(data, pixels=False).get(
                        "NumberOfFrames") or 1) > 1 else whole
            got = self.client.get(url + "/frames/1", headers={"Accept": plain})
            if values is None or got.status_code != 200:
                verdicts[sop] = f"HTTP {got.status_code}" + ("" if values is None else " (pydicom decodes it)")
                continue
            meta = self.client.get(url + "/metadata").json()[0]
            said = {tag: (meta.get(tag, {}).get("Value") or [None])[0] for tag in ("00280004", "00280006", "00280100")}
            value = parts(got.content, got.headers["content-type"])[0][0]
            if said["00280004"] == "YBR_FULL_422":
                pairs = np.frombuffer(value, np.uint8).reshape(values.shape[0], -1, 4)
                luminance = pairs[..., :2].reshape(values.shape[:2])
                ok = np.array_equal(luminance, values[..., 0])
            elif said["00280100"] == 1:
                ok = value == pack_bits(values, pad=False)
            else:
                want = values.transpose(2, 0, 1) if values.ndim == 3 and said["00280006"] == 1 else values
                stored_syntax = str(_read(data, pixels=False).file_meta.get("TransferSyntaxUID", ""))
                served = np.frombuffer(value, want.dtype.newbyteorder("<")) if len(value) == want.nbytes else None
                ok = served is not None and same_pixels(served.reshape(want.shape), want, stored_syntax)
            verdicts[sop] = "same" if ok else f"frame differs ({said['00280004']}, planar {said['00280006']})"
        return {"frames": verdicts}

    def cube_export(self) -> dict[str, Any]:
        """Every cube the archive compacted for the default tenant, exported."""
        from cubepacs.cube import api

        deadline = time.monotonic() + 60
        cubes: list[Path] = []
        while time.monotonic() < deadline:  # series are compacted once quiet (2 s)
            cubes = sorted(p for p in (self.tmp / "cubepacs").rglob("*.dcbs") if "default" in p.parts)
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
            jpeg = Matrix(tmp, httpx.Client(base_url="http://127.0.0.1:8042", timeout=120,
                                            headers={"Authorization": f"Bearer {KEY_JPEG}"}))
            jpeg.stow(jpeg_study(tmp))
            jpeg.client.close()
            result.update({"jpeg refused": jpeg.refused, "jpeg syntaxes": {sop: stored_syntax(d) for sop, d in
                                                                          jpeg.stored.items()},
                           "jpeg classes": {sop: str(_read(d, pixels=False).SOPClassUID)
                                            for sop, d in jpeg.stored.items()}})
            jobs = {"move STRICT": lambda: m.move("STRICT"), "move ALLSCP": lambda: m.move("ALLSCP"),
                    "move RLESCP": lambda: m.move("RLESCP"), "move JLSSCP": lambda: m.move("JLSSCP"),
                    "get default": lambda: m.get(None), "get +xs": lambda: m.get("+xs"),
                    "get +xe": lambda: m.get("+xe"), "get +xi": lambda: m.get("+xi"),
                    "get jpeg": lambda: m.get_jpeg(jpeg), "api send": m.api_send, "frames": m.frames,
                    **{f"wado {label}": functools.partial(m.wado, label, syntax) for label, syntax in WADO_WAYS},
                    "cube export": m.cube_export}

            def timed(name: str) -> dict[str, Any]:
                t0 = time.monotonic()
                got = jobs[name]()
                result["timings"][name] = round(time.monotonic() - t0, 1)
                return got

            with ThreadPoolExecutor(4) as pool:
                for got in pool.map(timed, list(jobs)):
                    result.update(got)
        result["log"] = (tmp / "cubepacs.log").read_text(errors="replace")
    finally:
        stop_all(procs, [log])
        shutil.rmtree(tmp, ignore_errors=True)  # 1.2 GB of copies
    result["timings"]["total"] = round(time.monotonic() - started, 1)
    # CPU seconds: this process (the verdicts), and every process it started (the archive, the peers, DCMTK)
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    result["timings"]["cpu matrix"] = round(own.ru_utime + own.ru_stime, 1)
    result["timings"]["cpu others"] = round(children.ru_utime + children.ru_stime, 1)
    out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main(Path(sys.argv[1]))
