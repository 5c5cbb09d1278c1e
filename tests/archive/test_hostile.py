"""Hostile input against a running archive (issue 27): no 500 on any route, before and after compaction; one odd
instance never poisons its series; malformed STOW bodies and JSON bodies are 4xx.

The odd instances are made in the test from real files (fuzz/mutants.py: an RLE stream that makes pylibjpeg-rle
panic, Bits Allocated 24, a Specific Character Set encoded as US); each shares its series with good twins made
from the same real file, whose answers are compared with pydicom's pixels (the oracle).
"""

from __future__ import annotations

import io
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

from cubepacs.archive.web import multipart
from tests.archive.conftest import Server, start_server, stop_server, wait_until

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "fuzz"))
import mutants

STUDY = generate_uid()
CT_SERIES, MR_SERIES = generate_uid(), generate_uid()
GOOD = [mutants.renamed(mutants.CT, STUDY, CT_SERIES) for _ in range(2)] + [
    mutants.renamed(mutants.RLE_MR, STUDY, MR_SERIES)]
ODD = {"bits24": mutants.bits24(mutants.CT, STUDY, CT_SERIES), "charset": mutants.bad_charset(mutants.CT, STUDY,
                                                                                               CT_SERIES),
       "panic": mutants.rle_panic(STUDY, MR_SERIES), "rle header": mutants.rle_bad_header(STUDY, MR_SERIES)}
ROUTES = ("", "/metadata", "/frames/1", "/rendered", "/thumbnail", "/frames/1/rendered")
SYNTAXES = (None, "1.2.840.10008.1.2.1", "1.2.840.10008.1.2", "*")


def _url(server: Server, data: bytes) -> str:
    from cubepacs.archive.ingest import describe  # reads what pydicom refuses (the bad character set)

    ev = describe(data)
    return f"{server.url}/studies/{ev['study_uid']}/series/{ev['series_uid']}/instances/{ev['sop_uid']}"


def _stow(server: Server, parts: list[bytes]) -> httpx.Response:
    body, ctype = multipart.encode(parts, "application/dicom")
    return httpx.post(f"{server.url}/studies", content=body, headers={**server.headers(), "Content-Type": ctype},
                      timeout=120)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = start_server(tmp_path_factory.mktemp("hostile") / "data")
    try:
        r = _stow(srv, GOOD + list(ODD.values()))
        assert r.status_code == 200, r.text  # the archive keeps what it was sent: decoding is the readers' business
        for data in GOOD + list(ODD.values()):
            wait_until(lambda data=data: httpx.get(_url(srv, data) + "/metadata", headers=srv.headers())
                       .status_code == 200)
        yield srv
    finally:
        stop_server(srv)


def _answers(server: Server) -> dict[tuple[str, str, str | None], httpx.Response]:
    out = {}
    for name, data in [(f"good{k}", d) for k, d in enumerate(GOOD)] + list(ODD.items()):
        for route in ROUTES:
            syntaxes = SYNTAXES if route == "" else (None,)
            for ts in syntaxes:
                accept = {} if ts is None else {"Accept": f'multipart/related; type="application/dicom"; '
                                                          f"transfer-syntax={ts}"}
                out[(name, route, ts)] = httpx.get(_url(server, data) + route, headers={**server.headers(), **accept},
                                                   timeout=60)
    return out


def _check(answers: dict[tuple[str, str, str | None], httpx.Response]) -> None:
    errors = {k: r.status_code for k, r in answers.items() if r.status_code >= 500}
    assert not errors, errors
    for (name, route, ts), r in answers.items():
        if name.startswith("good"):
            assert r.status_code == 200, (name, route, ts, r.text[:300])
        elif route.startswith("/frames/1") or route in ("/rendered", "/thumbnail"):
            if name in ("panic", "rle header"):
                assert r.status_code == 422 and "frame 1" in r.json()["detail"], (name, route, r.text[:300])
        assert "Traceback" not in r.text
    implicit = answers[("charset", "", "1.2.840.10008.1.2")]  # pydicom cannot read it to re-encode it: declared
    assert implicit.status_code == 406 and "(0008,0005)" in implicit.json()["detail"], implicit.text


def _good_frames_equal_pydicoms(server: Server) -> None:
    for data in GOOD:
        r = httpx.get(_url(server, data) + "/frames/1", headers=server.headers())
        (part,) = multipart.parse(r.content, r.headers["content-type"])
        ref = pydicom.dcmread(io.BytesIO(data)).pixel_array
        np.testing.assert_array_equal(np.frombuffer(part, ref.dtype.newbyteorder("<")).reshape(ref.shape), ref)


def test_no_route_answers_500_before_and_after_compaction_and_good_twins_stay_whole(server: Server) -> None:
    before = _answers(server)
    _check(before)
    _good_frames_equal_pydicoms(server)
    base = server.data_dir / "storage" / "alpha" / STUDY
    wait_until(lambda: (base / f"{CT_SERIES}.dcbs").exists() and (base / f"{MR_SERIES}.dcbs").exists(), timeout=90)
    after = _answers(server)
    _check(after)
    _good_frames_equal_pydicoms(server)  # now from the cube
    for key, r in before.items():  # what answered before answers the same after (nothing poisoned)
        assert after[key].status_code == r.status_code, (key, r.status_code, after[key].status_code)
    metrics = httpx.get(f"http://127.0.0.1:{server.http_port}/metrics").text
    left = [line for line in metrics.splitlines() if line.startswith("cubepacs_instances_not_compacted_total")]
    assert left and float(left[0].split()[-1]) >= 1, left
    bits24_sop = _url(server, ODD["bits24"]).rsplit("/", 1)[1]
    log = (server.data_dir.parent / f"{server.data_dir.name}.log").read_text(errors="replace")
    lines = [line for line in log.splitlines() if bits24_sop in line and "not compacted" in line]
    assert len(lines) == 1 and "served from its file" in lines[0], lines


@pytest.mark.parametrize(("body", "reason"), [
    (b"no boundary in here at all", "boundary not found"),
    (b"--b0\r\nContent-Type: application/dicom\r\n\r\nDICM and never closed", "not closed"),
    (b"--b0\r\nContent-Type: application/dicom but no blank line\r\n--b0--\r\n", "no header/body separator"),
])
def test_malformed_multipart_is_400_naming_the_problem(server: Server, body: bytes, reason: str) -> None:
    r = httpx.post(f"{server.url}/studies", content=body, headers={
        **server.headers(), "Content-Type": 'multipart/related; type="application/dicom"; boundary=b0'})
    assert r.status_code == 400 and reason in r.json()["detail"], r.text


def test_a_bare_dataset_is_stored_and_a_refused_part_names_its_uids(server: Server) -> None:
    data = mutants.renamed(mutants.CT)
    bare = data[132 + _meta_len(data):]  # no preamble, no file meta: the dataset alone (Explicit VR LE)
    with warnings.catch_warnings():  # pydicom warns about the UID we make invalid on purpose
        warnings.simplefilter("ignore")
        refused = mutants.renamed(mutants.CT, study="1.2.3.bad..uid")
        bad = pydicom.dcmread(io.BytesIO(refused), stop_before_pixels=True)
    r = _stow(server, [bare, refused])
    assert r.status_code == 202, r.text
    doc = r.json()
    stored, failed = doc["00081199"]["Value"], doc["00081198"]["Value"]
    ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    assert stored[0]["00081155"]["Value"] == [ds.SOPInstanceUID]
    assert failed[0]["00081155"]["Value"] == [bad.SOPInstanceUID]
    assert failed[0]["00081150"]["Value"] == [bad.SOPClassUID]
    wait_until(lambda: httpx.get(_url(server, data) + "/metadata", headers=server.headers()).status_code == 200)
    got = httpx.get(_url(server, data), headers={**server.headers(), "Accept": 'multipart/related; '
                                                 'type="application/dicom"; transfer-syntax=*'})
    (part,) = multipart.parse(got.content, got.headers["content-type"])
    assert part.endswith(bare)  # the dataset's bytes as sent, after the file meta made for it
    assert pydicom.dcmread(io.BytesIO(part)).SOPInstanceUID == ds.SOPInstanceUID


def _meta_len(data: bytes) -> int:
    import struct

    return 12 + int(struct.unpack_from("<I", data, 140)[0])  # (0002,0000) group length element + the group


@pytest.mark.parametrize(("body", "status"), [
    (b"[" * 100_000 + b"]" * 100_000, 400),  # RecursionError before
    (b'{"to": "DEST", "uid": "' + b"1" * (2 << 20) + b'"}', 413),
    (b"{not json", 400),
    (b'["a list"]', 400),
])
@pytest.mark.parametrize("endpoint", ["/api/send", "/api/users"])
def test_json_bodies_are_bounded(server: Server, body: bytes, status: int, endpoint: str) -> None:
    if endpoint == "/api/users" and status == 413:
        body = b'{"name": "' + b"x" * 70_000 + b'"}'  # its own bound: 64 KB
    elif endpoint == "/api/users" and body.startswith(b"[[["):
        body = b"[" * 30_000 + b"]" * 30_000  # deep, within its 64 KB (RecursionError, a 500, before)
    r = httpx.post(f"http://127.0.0.1:{server.http_port}{endpoint}", content=body,
                   headers={**server.headers(), "Content-Type": "application/json"})
    assert r.status_code == status, r.text[:300]


def _association_rq() -> bytes:
    from pynetdicom.pdu import A_ASSOCIATE_RQ
    from pynetdicom.pdu_primitives import A_ASSOCIATE, ImplementationClassUIDNotification, MaximumLengthNotification
    from pynetdicom.presentation import build_context

    prim = A_ASSOCIATE()
    prim.application_context_name = "1.2.840.10008.3.1.1.1"
    prim.calling_ae_title, prim.called_ae_title = "HOSTILE", "CUBEPACS"
    cx = build_context("1.2.840.10008.1.1")
    cx.context_id = 1
    prim.presentation_context_definition_list = [cx]
    length, impl = MaximumLengthNotification(), ImplementationClassUIDNotification()
    length.maximum_length_received, impl.implementation_class_uid = 16384, "1.2.3.4"
    prim.user_information = [length, impl]
    rq = A_ASSOCIATE_RQ()
    rq.from_primitive(prim)
    return bytes(rq.encode())


@pytest.mark.dcmtk
def test_a_pdu_of_unknown_type_right_after_an_association_request_is_one_log_line(server: Server) -> None:
    """A valid A-ASSOCIATE-RQ and, in the same write, a PDU of type 0x09: pynetdicom aborts (Sta13) while the
    association accepts (Evt7), an event that state does not take — its DUL thread died with a traceback."""
    import socket

    from tests.archive.conftest import dcmtk

    for _ in range(6):
        with socket.create_connection(("127.0.0.1", server.dimse_port), timeout=10) as sock:
            sock.sendall(_association_rq() + b"\x09\x00\x00\x00\x00\x00")
            answer = sock.recv(10)
        assert answer[:1] in (b"\x02", b"\x07", b""), answer  # A-ASSOCIATE-AC, A-ABORT, or closed
    assert dcmtk("echoscu", "-aec", "CUBEPACS", "127.0.0.1", str(server.dimse_port)).returncode == 0
    log = (server.data_dir.parent / f"{server.data_dir.name}.log").read_text(errors="replace")
    assert "Unknown PDU type received '0x09'" in log
    evt7 = [line for line in log.splitlines() if "Invalid event 'Evt7' for the current state 'Sta13'" in line]
    assert evt7, log[-2000:]  # the InvalidEventError case of the issue was reached, and is this one line each
    assert "Traceback" not in log and "Exception in thread" not in log and "InvalidEventError" not in log


def test_max_value_bytes_setting_bounds_whole_values_in_the_archive(tmp_path: Path) -> None:
    """``max_value_bytes`` (a setting) reaches the readers the archive opens cubes with: with it below the real
    SEG's whole pixel value (1-bit, kept as one opaque value), the new cube does not read back with the SEG in it —
    the SEG is left out, named in one log line, and stays served from its file (its frame equal to pydicom's);
    the CT beside it is compacted."""
    from tests.archive.conftest import free_port, write_config

    study, series = generate_uid(), generate_uid()
    seg, ct = mutants.renamed(mutants.SEG, study, series), mutants.renamed(mutants.CT, study, series)
    value = len(pydicom.dcmread(io.BytesIO(seg)).PixelData)
    data_dir = tmp_path / "data"
    config = write_config(tmp_path / "data.toml", data_dir, free_port(), free_port(), max_value_bytes=value // 2)
    srv = start_server(data_dir, config, *_ports(config))
    try:
        assert _stow(srv, [seg, ct]).status_code == 200
        wait_until((data_dir / "storage" / "alpha" / study / f"{series}.dcbs").exists, timeout=90)
        log = (tmp_path / "data.log").read_text(errors="replace")
        seg_sop = _url(srv, seg).rsplit("/", 1)[1]
        lines = [line for line in log.splitlines() if seg_sop in line and "not compacted" in line]
        assert len(lines) == 1 and "whole pixel value" in lines[0] and f"at most {value // 2}" in lines[0], lines
        r = httpx.get(_url(srv, seg) + "/frames/1", headers=srv.headers(), timeout=60)
        assert r.status_code == 200, r.text[:300]
        (part,) = multipart.parse(r.content, r.headers["content-type"])
        ref = pydicom.dcmread(io.BytesIO(seg)).pixel_array[0]
        np.testing.assert_array_equal(np.unpackbits(np.frombuffer(part, np.uint8), bitorder="little")[:ref.size],
                                      ref.ravel())
    finally:
        stop_server(srv)


def _ports(config: Path) -> tuple[int, int]:
    import tomllib

    section = tomllib.loads(config.read_text())["cubepacs"]
    return int(section["dimse_port"]), int(section["http_port"])
