"""An instance stays itself on every way out (issue 26): the fidelity matrix of tests/archive/fidelity.py, run in a
private network namespace with Orthanc as the strict peer and DCMTK's movescu, getscu and storescp, and the
transcoding it relies on checked against pydicom over the data set's files.

The oracles are not the archive's code: Orthanc refuses a C-STORE whose dataset names another instance than its
command; pixels are compared with pydicom's decoding of the stored file; an instance may fail to go out only where
pydicom itself cannot decode it or encode it in the one syntax the peer takes, or where the peer proposed no
context for its SOP class — and then the archive's log names it with the reason.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pydicom
import pytest

from tests.archive import fidelity

ROOT = Path(__file__).resolve().parents[2]
OK = ("bytes", "same")


@pytest.fixture(scope="module")
def matrix(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("fidelity") / "result.json"
    run = subprocess.run(["unshare", "-n", sys.executable, "-m", "tests.archive.fidelity", str(out)], cwd=ROOT,
                         check=False, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    return dict(json.loads(out.read_text()))


def _pydicom_cannot(data: bytes, syntax: str) -> bool:
    """Whether pydicom itself cannot produce ``syntax`` from this file (decode, then encode where compressed)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
        try:
            if ds.file_meta.TransferSyntaxUID.is_compressed:
                ds.decompress(generate_instance_uid=False)
            if pydicom.uid.UID(syntax).is_compressed:
                if "PixelData" not in ds and any(t in ds for t in (0x7FE00008, 0x7FE00009)):
                    return True  # float pixel data has no encapsulated form
                if "PixelData" in ds:
                    ds.compress(syntax, generate_instance_uid=False)
            return False
        except Exception:
            return True


def _stored(matrix: dict[str, Any]) -> dict[str, bytes]:
    from tests.archive.peers import DATA

    return {sop: (DATA / name).read_bytes() for sop, name in matrix["names"].items()}


def _not_out(matrix: dict[str, Any], way: str) -> dict[str, str]:
    return {sop: v for sop, v in matrix[way].items() if v not in OK}


def _logged(matrix: dict[str, Any], verb: str, sop: str) -> bool:
    """The archive logged this instance's failed sub-operation with its reason (the peer's status or why not)."""
    return any(verb in line and "WARNING" in line and f": {sop}: " in line for line in matrix["log"].splitlines())


@pytest.mark.dcmtk
@pytest.mark.orthanc
def test_matrix_ran_over_every_file_of_the_data(matrix: dict[str, Any]) -> None:
    from tests.archive.peers import files

    assert matrix["files"] == len(files()) >= 450
    assert matrix["stored"] >= 435, (matrix["stored"], matrix["refused"])
    assert matrix["cubes"] >= 20
    assert matrix["timings"]["total"] < 400, matrix["timings"]  # a hang, not a benchmark


@pytest.mark.dcmtk
@pytest.mark.orthanc
def test_a_refused_part_names_the_uids_pydicom_reads(matrix: dict[str, Any]) -> None:
    """STOW-RS: every file the archive refuses (409) names, in its FailedSOPSequence item, the SOP Class and
    Instance UIDs pydicom reads from it (where they are valid UIDs): a bare Big Endian dataset included."""
    from tests.archive.peers import DATA

    assert matrix["refused"], "the data set holds files no archive keeps"
    named = 0
    for name, answer in matrix["refused"].items():
        assert answer.startswith("409 "), (name, answer)
        item = json.loads(answer[4:])["00081198"]["Value"][0]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the files' own invalid values
            ds = pydicom.dcmread(DATA / name, force=True, stop_before_pixels=True)
            uids = {tag: str(ds.get(keyword) or "") for keyword, tag in (("SOPClassUID", "00081150"),
                                                                         ("SOPInstanceUID", "00081155"))}
            valid = {tag: bool(uid) and pydicom.uid.UID(uid).is_valid for tag, uid in uids.items()}
        for tag, uid in uids.items():
            if valid[tag]:
                assert item[tag]["Value"] == [uid], (name, tag, item)
                named += 1
    assert named >= 10


@pytest.mark.dcmtk
@pytest.mark.orthanc
def test_strict_peer_gets_every_decodable_instance_under_its_own_uid(matrix: dict[str, Any]) -> None:
    """C-MOVE (movescu) to Orthanc accepting only uncompressed syntaxes, which refuses a dataset whose SOP
    Instance UID is not the command's: every instance pydicom can decode arrives, decoded, as itself."""
    stored = _stored(matrix)
    failed = _not_out(matrix, "move STRICT")
    assert all(v == "missing" for v in failed.values()), failed
    assert all(_pydicom_cannot(stored[sop], fidelity.EXPLICIT) for sop in failed), failed
    assert all(_logged(matrix, "C-MOVE", sop) for sop in failed)
    compressed = [sop for sop, ts in matrix["syntaxes"].items() if pydicom.uid.UID(ts).is_compressed]
    assert sum(matrix["move STRICT"][sop] == "same" for sop in compressed) >= 10  # decoded, same UID and values


@pytest.mark.dcmtk
@pytest.mark.orthanc
def test_peer_taking_everything_gets_the_stored_bytes(matrix: dict[str, Any]) -> None:
    """C-MOVE to storescp +xa: every instance as stored, the deflated one deflated (padded to an even length,
    PS3.5 A.5: the same dataset)."""
    out = matrix["move ALLSCP"]
    assert all(v in OK for v in out.values()), _not_out(matrix, "move ALLSCP")
    assert all(v == "bytes" or matrix["syntaxes"][sop] == fidelity.DEFLATED for sop, v in out.items())


@pytest.mark.dcmtk
@pytest.mark.orthanc
@pytest.mark.parametrize("peer", sorted(fidelity.ONE_SYNTAX))
def test_peer_taking_one_compressed_syntax_gets_it_losslessly(matrix: dict[str, Any], peer: str) -> None:
    """C-MOVE to a storescp accepting RLE Lossless only, or JPEG-LS Lossless only: everything pydicom can encode in
    that syntax arrives in it, its UID and values kept, pixels equal to pydicom's decoding of the stored file; the
    rest is logged with its reason."""
    stored = _stored(matrix)
    syntax = fidelity.ONE_SYNTAX[peer][1]
    failed = _not_out(matrix, f"move {peer}")
    assert all(v == "missing" and _pydicom_cannot(stored[sop], syntax) for sop, v in failed.items()), failed
    assert all(_logged(matrix, "C-MOVE", sop) for sop in failed)
    assert len(matrix[f"move {peer}"]) - len(failed) >= 420


@pytest.mark.dcmtk
@pytest.mark.orthanc
@pytest.mark.parametrize("option", ["default", "+xs", "+xe", "+xi"])
def test_getscu_gets_every_instance_as_itself(matrix: dict[str, Any], option: str) -> None:
    """C-GET by DCMTK getscu (its default proposal, JPEG lossless first, Explicit first, +xi): every instance of a
    class it proposes arrives with its own UID, values and pixels — in its stored syntax where the archive accepted
    it — and the association is released cleanly even when a sub-operation failed."""
    stored = _stored(matrix)
    failed = _not_out(matrix, f"get {option}")
    for sop in failed:
        assert _logged(matrix, "C-GET", sop), sop
        reason = next(line for line in matrix["log"].splitlines() if f": {sop}: " in line and "C-GET" in line)
        assert "only in nothing" in reason or _pydicom_cannot(stored[sop], fidelity.EXPLICIT), reason
    assert len(failed) <= 2, failed
    assert matrix[f"get {option} errors"] == []  # no "Association Release Failed: P-Data PDU arrived"
    assert sum(v == "bytes" for v in matrix[f"get {option}"].values()) >= (30 if option == "+xi" else 300)


@pytest.mark.dcmtk
@pytest.mark.orthanc
@pytest.mark.parametrize("option", ["default", "+xs", "+xe", "+xi"])
def test_getscu_gets_the_stored_syntax_a_class_shares(matrix: dict[str, Any], option: str) -> None:
    """C-GET of a study DCMTK's dcmcjpeg wrote (another tenant): its CT all JPEG Lossless, its MR half JPEG Lossless,
    half Implicit VR LE. With ``+xs`` (JPEG Lossless proposed first) the archive accepts JPEG Lossless for the CT —
    every stored CT has it — and they arrive byte for byte; the MR (two syntaxes) in Explicit VR LE, decoded. With
    the other proposals every instance arrives decoded, as itself. Every instance keeps its UID (``verdict``), and
    every association is released cleanly."""
    ct = "1.2.840.10008.5.1.4.1.1.2"
    out = matrix[f"get jpeg {option}"]
    assert matrix["jpeg refused"] == {} and len(out) == 10
    assert all(v in OK for v in out.values()), out
    assert matrix[f"get jpeg {option} errors"] == []
    classes, syntaxes = matrix["jpeg classes"], matrix["jpeg syntaxes"]
    shared = {sop for sop, c in classes.items() if c == ct}
    assert len(shared) == 6 and {syntaxes[sop] for sop in shared} == {fidelity.JPEG_LOSSLESS}
    if option == "+xs":
        assert all(out[sop] == "bytes" for sop in shared), out
        assert all(out[sop] == ("bytes" if syntaxes[sop] == fidelity.EXPLICIT else "same")
                   for sop in set(out) - shared), out
    else:  # none of them proposed JPEG Lossless: every instance decoded (or, stored implicit, as stored with +xi)
        assert all(out[sop] == "same" for sop in shared), out


@pytest.mark.dcmtk
@pytest.mark.orthanc
def test_api_send_reports_each_failure_with_its_reason(matrix: dict[str, Any]) -> None:
    stored = _stored(matrix)
    failed = _not_out(matrix, "api send")
    assert all(_pydicom_cannot(stored[sop], fidelity.EXPLICIT) for sop in failed), failed
    reported = {x["sop"]: x for x in matrix["api send failures"]}
    assert set(reported) == set(failed)
    assert all("cannot" in x["sent_as"] for x in reported.values())


@pytest.mark.dcmtk
@pytest.mark.orthanc
@pytest.mark.parametrize("label", ["default", "*", "stored", fidelity.EXPLICIT, fidelity.IMPLICIT, fidelity.DEFLATED,
                                   fidelity.RLE, fidelity.J2K, "jpeg lossless or explicit"])
def test_wado_instance_in_each_transfer_syntax(matrix: dict[str, Any], label: str) -> None:
    """WADO-RS instance: as stored with ``*`` or the stored syntax named (byte for byte), Explicit VR LE without a
    transfer-syntax (PS3.18), each other syntax as asked; 406 only where pydicom cannot produce it (and without a
    parameter, such an instance comes as stored, its part saying so)."""
    stored = _stored(matrix)
    out = matrix[f"wado {label}"]
    if label in ("*", "stored"):
        assert all(v == "bytes" for v in out.values()), _not_out(matrix, f"wado {label}")
        return
    syntax = fidelity.EXPLICIT if label in ("default", "jpeg lossless or explicit") else label
    if label == "jpeg lossless or explicit":
        jpeg = [sop for sop, ts in matrix["syntaxes"].items() if ts == fidelity.JPEG_LOSSLESS]
        assert jpeg and all(out[sop] == "bytes" for sop in jpeg)  # as stored: its syntax is one of those asked
    for sop, v in out.items():
        if v in OK:
            continue
        assert _pydicom_cannot(stored[sop], syntax), (matrix["names"][sop], v)
        expected = f"in {matrix['syntaxes'][sop]}, not" if label == "default" else "HTTP 406: "
        assert v.startswith(expected), (matrix["names"][sop], v)
    assert sum(v in OK for v in out.values()) >= 60


@pytest.mark.dcmtk
@pytest.mark.orthanc
def test_every_frame_is_pydicoms_in_the_layout_its_metadata_says(matrix: dict[str, Any]) -> None:
    """WADO-RS frame 1, uncompressed (PS3.18's default), of every stored instance: pydicom's stored values of that
    frame laid out as ``/metadata`` says; an error status only for what pydicom cannot decode either (no pixel
    data, an unreadable codestream)."""
    out = matrix["frames"]
    failed = {matrix["names"][sop]: v for sop, v in out.items() if v != "same"}
    assert all(v.startswith("HTTP 4") and "pydicom decodes it" not in v for v in failed.values()), failed
    assert sum(v == "same" for v in out.values()) >= 430


@pytest.mark.dcmtk
@pytest.mark.orthanc
def test_cube_export_gives_back_the_stored_files(matrix: dict[str, Any]) -> None:
    assert len(matrix["cube export"]) == matrix["stored"]
    assert all(v == "bytes" for v in matrix["cube export"].values())


def test_transcoding_keeps_identity_over_the_data_set() -> None:
    """Without any server: every file of the data set the archive could keep (the single and malformed ones and
    each series' first), transcoded to each syntax it can be, keeps its SOP Instance UID, elements and values
    (but the pixel encoding) and pixels equal to pydicom's decoding — or raises CodecError naming the instance,
    only where pydicom itself cannot. (JPEG 2000 lossless, the slowest, is checked through WADO-RS in the matrix.)"""
    from cubepacs.dicom.transcode import transcode_file
    from cubepacs.errors import CodecError

    paths = [p for p in fidelity.sample() if not p.parent.parent.name == "series" or
             p == sorted(x for x in p.parent.iterdir() if x.suffix != ".txt" and x.name != "DIRFILE")[0]]
    checked = 0
    kept = []  # alive to the end: fidelity's caches are keyed by id()
    for path in paths:
        data = path.read_bytes()
        kept.append(data)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            original = pydicom.dcmread(io.BytesIO(data), force=True)
        if "SOPInstanceUID" not in original or "TransferSyntaxUID" not in getattr(original, "file_meta", {}):
            continue  # not archivable: no identity to keep
        fidelity._ORIGINAL_PIXELS[id(data)] = fidelity.pixels_of(data)  # decoded once, compared five times
        for syntax in (fidelity.EXPLICIT, fidelity.IMPLICIT, fidelity.DEFLATED, fidelity.RLE, fidelity.JLS):
            try:
                out = transcode_file(data, syntax)
            except CodecError as exc:
                assert str(original.SOPInstanceUID) in str(exc) or "damaged" in str(exc)
                assert _pydicom_cannot(data, syntax) or "damaged" in str(exc), (path.name, syntax, exc)
                continue
            verdict = fidelity.verdict(data, out, syntax)
            assert verdict in OK, (path.name, syntax, verdict)
            checked += 1
    assert checked >= 150


def test_a_compressed_instance_without_pixel_data_is_not_decoded() -> None:
    """Crafted from a real file (no such file in the data set): an SR stored as JPEG Lossless — its dataset is
    Explicit VR LE — goes out in Explicit VR LE byte for byte, nothing decoded."""
    from cubepacs.dicom.transcode import dataset_offset, transcode_file
    from tests.archive.peers import DATA

    src = pydicom.dcmread(DATA / "single" / "sr_comprehensive_nested.dcm")
    src.file_meta.TransferSyntaxUID = pydicom.uid.JPEGLosslessSV1
    buf = io.BytesIO()
    src.save_as(buf, enforce_file_format=True)
    data = buf.getvalue()
    out = transcode_file(data, fidelity.EXPLICIT)
    assert out[dataset_offset(out):] == data[dataset_offset(data):]
    assert pydicom.dcmread(io.BytesIO(out)).file_meta.TransferSyntaxUID == fidelity.EXPLICIT


def test_acceptor_prefers_explicit_then_lossless_for_contexts_it_sends_on() -> None:
    """The archive as C-GET acceptor: pynetdicom would take the first of the archive's syntaxes the requestor
    proposed (JPEG Lossless, or Implicit VR before Explicit); for the contexts the archive sends on it takes
    Explicit VR LE, else the best lossless syntax it can encode, else what was proposed."""
    from pynetdicom import build_context
    from pynetdicom.presentation import negotiate_as_acceptor as pynetdicom_negotiation

    from cubepacs.archive.dimse.scp import build_ae
    from cubepacs.archive.dimse.syntaxes import negotiate_as_acceptor

    ct = "1.2.840.10008.5.1.4.1.1.2"
    proposals = {"getscu": ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2"],
                 "+xs": ["1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2"],
                 "rle only": [fidelity.RLE], "jpeg only": ["1.2.840.10008.1.2.4.50"]}
    expected = {"getscu": fidelity.EXPLICIT, "+xs": fidelity.EXPLICIT, "rle only": fidelity.RLE,
                "jpeg only": "1.2.840.10008.1.2.4.50"}
    ae = build_ae("CUBEPACS")
    for name, syntaxes in proposals.items():
        rq = build_context(ct, syntaxes)
        rq.context_id = 1
        roles = {ct: (False, True)}  # the requestor is the storage SCP: C-GET
        before, _ = pynetdicom_negotiation([rq], ae.supported_contexts, roles)
        after, _ = negotiate_as_acceptor([rq], ae.supported_contexts, roles)
        assert after[0].as_scu and after[0].transfer_syntax[0] == expected[name], name
        if name == "+xs":
            assert before[0].transfer_syntax[0] == "1.2.840.10008.1.2.4.70"  # what pynetdicom alone accepts
        plain, _ = negotiate_as_acceptor([rq], ae.supported_contexts, None)  # a storage SCU: left as it was
        assert plain[0].transfer_syntax[0] == pynetdicom_negotiation([rq], ae.supported_contexts, None)[0][0] \
            .transfer_syntax[0]


def test_acceptor_takes_the_syntax_every_stored_instance_of_the_class_has() -> None:
    """With the called tenant's stored syntaxes bound (as EVT_REQUESTED binds them), a context the archive sends on
    gets the syntax every stored instance of its class has when the requestor proposed it — read from a real
    index holding real files' rows — and Explicit VR LE otherwise (not proposed, or the class's instances have
    several syntaxes)."""
    from pynetdicom import build_context

    from cubepacs.archive.dimse import syntaxes
    from cubepacs.archive.dimse.scp import build_ae
    from cubepacs.archive.index.store import Index
    from tests.archive.peers import DATA

    index = Index.from_url("sqlite://")
    for name in ("ts_jpeg_lossless_sv1_dcmtk_siemens_mr.dcm", "ts_explicit_le_siemens_mr.dcm",
                 "ct_ge_small_signed.dcm"):
        ds = pydicom.dcmread(DATA / "single" / name, stop_before_pixels=True)
        syntax = str(ds.file_meta.TransferSyntaxUID)
        if name.startswith("ct_"):  # the class's only instance, taken as stored in JPEG Lossless
            syntax = fidelity.JPEG_LOSSLESS
        index.add_instance({"tenant": "t", "study_uid": str(ds.StudyInstanceUID), "series_uid": name,
                            "sop_uid": str(ds.SOPInstanceUID), "key": name, "attrs": {},
                            "sop_class_uid": str(ds.SOPClassUID), "transfer_syntax": syntax})
    ct, mr = "1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.4"
    xs = [fidelity.JPEG_LOSSLESS, fidelity.EXPLICIT, "1.2.840.10008.1.2.2", fidelity.IMPLICIT]
    ae = build_ae("CUBEPACS")

    def accepted(proposal: list[str]) -> dict[str, str]:
        rqs = [build_context(sop, proposal) for sop in (ct, mr)]
        for n, rq in enumerate(rqs):
            rq.context_id = 2 * n + 1
        token = syntaxes.STORED.set(lambda classes: syntaxes.stored_syntaxes(index, "t", classes))
        try:
            result, _ = syntaxes.negotiate_as_acceptor(rqs, ae.supported_contexts, {ct: (False, True),
                                                                                   mr: (False, True)})
        finally:
            syntaxes.STORED.reset(token)
        return {str(cx.abstract_syntax): str(cx.transfer_syntax[0]) for cx in result}

    assert accepted(xs) == {ct: fidelity.JPEG_LOSSLESS, mr: fidelity.EXPLICIT}  # the MR have two syntaxes
    assert accepted(xs[1:]) == {ct: fidelity.EXPLICIT, mr: fidelity.EXPLICIT}  # JPEG Lossless not proposed
    assert accepted([fidelity.RLE]) == {ct: fidelity.RLE, mr: fidelity.RLE}  # only a lossless one: encoded to it


def test_the_class_syntax_lookup_seeks_an_index_also_after_migration(tmp_path: Path) -> None:
    """An index of the previous schemas (``schema_v2.py``) gains ``ix_instance_class_syntax`` when opened, and
    SQLite's own plan for ``one_syntax``'s statement searches it (no scan of the tenant's instance rows)."""
    from sqlalchemy import create_engine, inspect, select, text

    from cubepacs.archive.index.classes import one_syntax
    from cubepacs.archive.index.models import dicom_instance
    from cubepacs.archive.index.store import Index
    from tests.archive import schema_v2

    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = create_engine(url)
    schema_v2.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(schema_v2.schema_version.insert().values(version=2))
    engine.dispose()
    index = Index.from_url(url)
    try:
        names = {ix["name"] for ix in inspect(index.engine).get_indexes("dicom_instance")}
        assert "ix_instance_class_syntax" in names, names
        i = dicom_instance
        seek = select(text("min(transfer_syntax)")).select_from(i).where(i.c.tenant_id == "t",
                                                                           i.c.sop_class_uid == "1.2")
        with index.engine.connect() as conn:
            plan = " ".join(str(r[-1]) for r in conn.execute(text("EXPLAIN QUERY PLAN " + str(seek.compile(
                compile_kwargs={"literal_binds": True})))))
        assert "USING COVERING INDEX ix_instance_class_syntax" in plan, plan
        assert one_syntax(index, "t", ["1.2"]) == {}
    finally:
        index.close()


def test_a_c_get_request_is_negotiated_anew_each_time() -> None:
    """An A-ASSOCIATE-RQ offering the SCP role (a C-GET requestor) is not cached by ``handshake``: which syntax the
    archive accepts then depends on what it stores, which changes; a storage SCU's request still is."""
    from pynetdicom import build_context
    from pynetdicom.pdu import A_ASSOCIATE_RQ
    from pynetdicom.pdu_primitives import (
        A_ASSOCIATE,
        ImplementationClassUIDNotification,
        MaximumLengthNotification,
        SCP_SCU_RoleSelectionNegotiation,
    )

    from cubepacs.archive.dimse import handshake

    ct = "1.2.840.10008.5.1.4.1.1.2"

    def request(scp_role: bool) -> A_ASSOCIATE_RQ:
        cx = build_context(ct, [fidelity.EXPLICIT])
        cx.context_id = 1
        prim = A_ASSOCIATE()
        prim.calling_ae_title, prim.called_ae_title = "GETSCU", "CUBEPACS"
        prim.application_context_name = "1.2.840.10008.3.1.1.1"
        prim.presentation_context_definition_list = [cx]
        length, impl = MaximumLengthNotification(), ImplementationClassUIDNotification()
        length.maximum_length_received, impl.implementation_class_uid = 16382, "1.2.3.4"
        items: list[Any] = [length, impl]
        if scp_role:
            role = SCP_SCU_RoleSelectionNegotiation()
            role.sop_class_uid, role.scu_role, role.scp_role = ct, False, True
            items.append(role)
        prim.user_information = items
        pdu = A_ASSOCIATE_RQ()
        pdu.from_primitive(prim)
        return pdu

    store, get = request(False), request(True)
    assert handshake.remember(store.encode(), store) is not None
    assert handshake.remember(get.encode(), get) is None


def test_a_refusing_peer_is_reported_with_its_own_status_and_comment() -> None:
    """``send`` (CLI, ``/api/send``, and the C-MOVE/C-GET log lines through the same results) reports the peer's
    own status and Error Comment for each instance it refused — here a real pynetdicom storage SCP refusing the
    CT with 0xA900 and accepting the MR."""
    from pynetdicom import AE, AllStoragePresentationContexts, evt

    from cubepacs.archive.dimse.scu import send_rows
    from tests.archive.conftest import free_port
    from tests.archive.peers import DATA

    files = {p.name: p.read_bytes() for p in (DATA / "single" / "ct_ge_small_signed.dcm",
                                              DATA / "single" / "ts_jpeg_lossless_sv1_dcmtk_siemens_mr.dcm")}
    headers = {name: pydicom.dcmread(io.BytesIO(d), stop_before_pixels=True) for name, d in files.items()}
    refused = str(headers["ct_ge_small_signed.dcm"].SOPInstanceUID)

    def on_store(event: Any) -> Any:
        if event.request.AffectedSOPInstanceUID == refused:
            status = pydicom.Dataset()
            status.Status = 0xA900
            status.ErrorComment = "dataset does not match SOP class"
            return status
        return 0x0000

    ae = AE(ae_title="REFUSER")
    ae.supported_contexts = AllStoragePresentationContexts  # uncompressed only: the MR goes out decoded
    port = free_port()
    server = ae.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    try:
        rows = [{"sop_uid": str(h.SOPInstanceUID), "sop_class_uid": str(h.SOPClassUID),
                 "transfer_syntax": str(h.file_meta.TransferSyntaxUID), "name": name} for name, h in headers.items()]
        results = {r.sop_uid: r for r in send_rows(rows, lambda r: files[r["name"]], "127.0.0.1", port, "REFUSER")}
    finally:
        server.shutdown()
    bad = results[refused]
    assert not bad.ok and bad.status == 0xA900 and bad.comment == "dataset does not match SOP class"
    assert "peer status 0xA900 ('dataset does not match SOP class')" in bad.describe()
    good = next(r for uid, r in results.items() if uid != refused)
    assert good.ok and good.sent_as == "transcoded to 1.2.840.10008.1.2.1"
