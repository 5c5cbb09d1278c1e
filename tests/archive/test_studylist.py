"""The study list's server-side sorting and label filter over thousands of studies, paged, against Python's own
sort of the same values; the upload's ZIP bounds; the streamed ZIP read back by ``zipfile`` and ``unzip -t``."""

from __future__ import annotations

import io
import random
import shutil
import subprocess
import warnings
import zipfile
from pathlib import Path

import pytest

from cubepacs.archive.index import labels
from cubepacs.archive.index.matching import STUDY_ORDERS
from cubepacs.archive.index.store import Index
from cubepacs.archive.web.uploads import expand_zip
from cubepacs.archive.web.zipstream import zip_stream
from cubepacs.errors import ConfigError
from tests.conftest import DATA, SERIES, dicom_files

STUDIES = 2_000
PREFIX = "1.2.826.0.1.3680043.8.498."
COLUMN = {"date": "study_date", "patient": "patient_name", "patient_id": "patient_id",
          "accession": "accession_number", "description": "study_description"}


@pytest.fixture(scope="module")
def index() -> Index:
    rng = random.Random(7)
    idx = Index.from_url("sqlite://")
    events = []
    for n in range(STUDIES):
        uid = f"{PREFIX}{n + 1}"
        for s in range(rng.randint(1, 3)):  # 1 to 3 series, 1 to 4 instances each
            for i in range(rng.randint(1, 4)):
                events.append({"tenant": "t", "study_uid": uid, "series_uid": f"{uid}.{s + 1}",
                               "sop_uid": f"{uid}.{s + 1}.{i + 1}", "key": f"k/{uid}/{s}/{i}",
                               "attrs": {"PatientName": f"DOE^{rng.randint(0, 500):04d}",
                                         "PatientID": f"P{rng.randint(0, 900):05d}",
                                         "StudyDate": f"20{rng.randint(10, 24)}0{rng.randint(1, 9)}15",
                                         "StudyTime": f"{rng.randint(10, 23)}0000",
                                         "Modality": rng.choice(["CT", "MR", "US"]),
                                         "StudyDescription": rng.choice(["head", "chest", "knee", ""]),
                                         "AccessionNumber": f"A{rng.randint(0, 99999)}"}})
    idx.add_instances(events)
    idx.add_instances([{"tenant": "other", "study_uid": f"{PREFIX}1", "series_uid": f"{PREFIX}1.1",
                        "sop_uid": f"{PREFIX}1.1.1", "key": "o", "attrs": {"PatientName": "AAA"}}])
    return idx


def _all(idx: Index, order: str, label: str = "", page: int = 200) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    while True:
        got = idx.search_studies("t", {}, page, len(rows), order=order, label=label)
        rows.extend(got)
        if len(got) < page:
            return rows


@pytest.mark.parametrize("order", sorted(STUDY_ORDERS))
def test_every_order_pages_through_every_study_as_python_sorts_them(index: Index, order: str) -> None:
    unsorted = _all(index, "")
    assert len(unsorted) == STUDIES and len({r["study_uid"] for r in unsorted}) == STUDIES

    def key(r: dict[str, object]) -> tuple[object, ...]:
        if order in COLUMN:
            value: tuple[object, ...] = (str(r[COLUMN[order]] or ""),)
            if order == "date":
                value += (str(r["study_time"] or ""),)
        elif order == "modality":
            value = (min(r["modalities"]),)  # type: ignore[call-overload]
        elif order in ("series", "instances"):
            value = (int(r[order]),)  # type: ignore[call-overload]
        else:
            value = ()
        return value

    for descending in (False, True):
        got = _all(index, ("-" if descending else "") + order)
        uids = [str(r["study_uid"]) for r in got]
        # ties are broken by study UID ascending (a stable sort, reversed or not, keeps that order)
        expected = sorted(unsorted, key=lambda r: str(r["study_uid"]), reverse=descending and order == "uid")
        expected.sort(key=key, reverse=descending)
        assert [key(r) for r in got] == [key(r) for r in expected], order
        assert uids == [str(r["study_uid"]) for r in expected], order
        assert len(set(uids)) == STUDIES


def test_unknown_order_is_a_clear_error(index: Index) -> None:
    with pytest.raises(ValueError, match="unknown sort order 'size'"):
        index.search_studies("t", {}, order="size")


def test_label_filter_with_paging_and_tenants(index: Index) -> None:
    chosen = [f"{PREFIX}{n}" for n in range(1, STUDIES + 1, 7)]
    for uid in chosen:
        assert labels.add(index, "t", uid, "teaching")
    assert not labels.add(index, "t", chosen[0], "teaching")
    got = _all(index, "-date", label="teaching", page=50)
    assert sorted(str(r["study_uid"]) for r in got) == sorted(chosen)
    assert index.search_studies("other", {}, label="teaching") == []  # another tenant's study of the same UID
    assert labels.tenant_labels(index, "other") == []
    # combined with a DICOM filter
    mr = {str(r["study_uid"]) for r in _all(index, "") if "MR" in r["modalities"]}  # type: ignore[operator]
    both = index.search_studies("t", {"ModalitiesInStudy": "MR"}, 10_000, label="teaching")
    assert {str(r["study_uid"]) for r in both} == mr & set(chosen)
    # a deleted study loses its labels; a removed label no longer filters
    index.delete("t", chosen[0])
    assert labels.of_studies(index, "t", [chosen[0]]) == {chosen[0]: []}
    assert labels.remove(index, "t", chosen[1], "teaching")
    assert len(_all(index, "", label="teaching")) == len(chosen) - 2


def test_zip_upload_bounds() -> None:
    files = dicom_files(next(s for s in SERIES if s.name.startswith("ct_philips")))[:3]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in files:
            zf.write(f, f"series/{f.name}")
        zf.writestr("bomb.bin", b"\0" * 20_000_000)  # 20 MB of zeros: ~20 KB deflated
    data = buf.getvalue()
    total = sum(f.stat().st_size for f in files)
    items = list(expand_zip("up.zip", data, total + 1000))
    assert [s for s, _ in items[:3]] == [f"up.zip/series/{f.name}" for f in files]
    assert [d for _, d in items[:3]] == [f.read_bytes() for f in files]
    assert items[-1][0] == "up.zip: refused" and b"expands beyond max_request_bytes" in items[-1][1]
    assert len(data) < 1_000_000 and len(items) == 4
    assert list(expand_zip("x.dcm", files[0].read_bytes(), 10**9)) == [("x.dcm", files[0].read_bytes())]


def test_streamed_zip_reads_back(tmp_path: Path) -> None:
    files = dicom_files(next(s for s in SERIES if s.name.startswith("mr_ge_mr750")))
    chunks = list(zip_stream((f"s/{f.name}", f.read_bytes) for f in files))
    biggest = max(f.stat().st_size for f in files)
    assert max(len(c) for c in chunks) <= biggest + 1024  # one member at a time, never the whole archive
    (tmp_path / "a.zip").write_bytes(b"".join(chunks))
    with zipfile.ZipFile(tmp_path / "a.zip") as zf:
        assert zf.testzip() is None
        assert all(zf.read(f"s/{f.name}") == f.read_bytes() for f in files)
    if shutil.which("unzip"):
        test = subprocess.run(["unzip", "-tq", str(tmp_path / "a.zip")], capture_output=True, text=True, check=False)
        assert test.returncode == 0, test.stdout + test.stderr


def test_a_dicomdir_over_every_real_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every file of ../shared/data: those pydicom's FileSet can place (every series file among them, Type 1 record
    keys the file leaves empty invented) are in a DICOMDIR that pydicom and DCMTK's dcmdump read, each record
    naming its instance; the others are listed with pydicom's reason; nothing is left in the temporary folder."""
    import pydicom

    from cubepacs.archive.web.zipstream import dicomdir
    from tests.conftest import DATA

    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    files = [p for d in ("series", "single", "malformed") for p in sorted((DATA / d).rglob("*")) if p.is_file()]
    raw, paths, notes = dicomdir((str(p), p.read_bytes()) for p in files)
    left = [n for n in notes if ": not in the DICOMDIR: " in n]
    assert len(paths) + len(left) == len(files)
    series = [p for p in files if "/series/" in str(p) and p.name != "DIRFILE" and p.suffix != ".txt"]
    assert {str(p) for p in series} <= set(paths)  # every series file placed (TCIA's empty Study ID invented)
    invented = [n for n in notes if n.endswith("(invented)")]
    assert invented and all(f"{DATA}/series/ct_ge_lightspeedvct" in n or "/single/" in n or "/malformed/" in n
                            for n in invented)
    assert list((tmp_path / "tmp").iterdir()) == []
    (tmp_path / "DICOMDIR").write_bytes(raw)
    with warnings.catch_warnings():  # (the malformed files' malformed values, copied into their records)
        warnings.simplefilter("ignore")
        records = [r for r in pydicom.dcmread(tmp_path / "DICOMDIR").DirectoryRecordSequence
                   if "ReferencedSOPInstanceUIDInFile" in r]
        by_path = {"/".join(r.ReferencedFileID): str(r.ReferencedSOPInstanceUIDInFile) for r in records}
        assert sorted(by_path) == sorted(paths.values())
        for key, path in paths.items():
            assert by_path[path] == str(pydicom.dcmread(key, stop_before_pixels=True).SOPInstanceUID), key
    dump = subprocess.run(["dcmdump", str(tmp_path / "DICOMDIR")], capture_output=True, text=True, errors="replace",
                          check=False)
    assert dump.returncode == 0 and dump.stdout.count("ReferencedSOPInstanceUIDInFile") == len(paths)
    # the files themselves are unchanged by the invention: the records name them by their own SOP Instance UID
    assert all(n.split(": not in the DICOMDIR: ")[1] for n in left)


@pytest.mark.parametrize("method", [zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA])
def test_a_corrupt_compressed_member_is_refused_not_raised(method: int) -> None:
    """A member whose compressed bytes are damaged (zlib.error, LZMAError: not zipfile's own errors) makes the
    ZIP one refused item naming why — it was an exception out of the upload (HTTP 500)."""
    member = dicom_files(next(s for s in SERIES if s.name.startswith("ct_philips")))[0].read_bytes()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as zf:
        zf.writestr("a/ct.dcm", member)
    raw = bytearray(buf.getvalue())
    start = 30 + len("a/ct.dcm")  # the member's compressed bytes follow its local header
    for i in range(start + 20, start + 60):
        raw[i] ^= 0xFF
    items = list(expand_zip("up.zip", bytes(raw), 10**8))
    assert items[-1][0] == "up.zip: refused" and items[-1][1].startswith(b"ZIP not taken apart: "), items[-1]


def test_labels_are_bounded_per_study_and_per_tenant(monkeypatch: pytest.MonkeyPatch) -> None:
    """Labels added without end (any ``upload`` caller may) would make every study list page list them all: a
    study carries at most MAX_PER_STUDY, a tenant uses at most MAX_PER_TENANT different ones (a clear error), an
    existing label may still go on another study, and another tenant is not counted."""
    idx = Index.from_url("sqlite://")
    for n in range(labels.MAX_PER_STUDY):
        assert labels.add(idx, "t", "1.1", f"l{n}")
    with pytest.raises(ConfigError, match="at most 50"):
        labels.add(idx, "t", "1.1", "one more")
    assert not labels.add(idx, "t", "1.1", "l3") and len(labels.of_studies(idx, "t", ["1.1"])["1.1"]) == 50
    monkeypatch.setattr(labels, "MAX_PER_TENANT", 7)  # (1,000 by default)
    idx2 = Index.from_url("sqlite://")
    for n in range(7):
        assert labels.add(idx2, "t", f"2.{n}", f"w{n}")
    with pytest.raises(ConfigError, match="7 different labels"):
        labels.add(idx2, "t", "2.0", "new word")
    assert labels.add(idx2, "t", "2.0", "w5") and labels.add(idx2, "other", "2.0", "new word")
    assert len(labels.tenant_labels(idx2, "t")) == 7


def _directory_only_zip(entries: int, declared: int) -> bytes:
    """A ZIP body of ``entries`` central-directory entries (1-byte names, no member data) whose end record
    declares ``declared`` members."""
    import struct

    entry = struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0) + b"a"
    directory = entry * entries
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, declared, declared, len(directory), 4, 0)
    return b"PK\x03\x04" + directory + end


@pytest.mark.parametrize("declared", [60_000, 10])
def test_a_huge_central_directory_is_refused_before_it_is_read(declared: int) -> None:
    """zipfile reads a whole central directory (a ZipInfo per entry, whatever count the end record declares)
    before the member count could be checked: a 44 MB body of 1,000,000 entries peaked at 457 MB and 17 s. The
    end record's size is checked first: refused, naming it, with memory near the body's size."""
    import tracemalloc

    body = _directory_only_zip(800_000, declared)  # 37.6 MB of directory
    tracemalloc.start()
    items = list(expand_zip("up.zip", body, 10**10))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert items == [("up.zip: refused", items[0][1])] and b"central directory of 37600000 bytes" in items[0][1]
    assert peak < len(body) // 4, peak


def test_a_zip_expands_to_at_most_a_ratio_of_its_size() -> None:
    """A member is held in memory whole: with only max_request_bytes (4 GiB by default) as the bound, 4 MB of
    deflated zeros made the server hold 4 GiB. A ZIP now expands to at most MAX_RATIO x its size (at least
    MIN_EXPANDED) — refused naming that — while a real series, deflated, comes out byte for byte."""
    from cubepacs.archive.web import uploads

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("bomb.dcm", bytes(uploads.MIN_EXPANDED + (1 << 20)))
    items = list(expand_zip("up.zip", buf.getvalue(), 4 << 30))
    assert len(buf.getvalue()) * uploads.MAX_RATIO < uploads.MIN_EXPANDED
    assert items == [("up.zip: refused", items[0][1])], [s for s, _ in items]
    assert f"expands beyond {uploads.MIN_EXPANDED} bytes ({uploads.MAX_RATIO} x the ZIP's".encode() in items[0][1]
    files = dicom_files(next(s for s in SERIES if s.name.startswith("ct_philips")))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in files:
            zf.write(f, f.name)
    assert [d for _, d in expand_zip("up.zip", buf.getvalue(), 4 << 30)] == [f.read_bytes() for f in files]


def test_a_nameless_member_is_skipped() -> None:
    """A ZIP entry with an empty name (zipfile's ``is_dir()`` raises IndexError on it: the lake's fuzzing found it,
    ``docs/security.md``) is skipped like a folder; the other members come out — it was an HTTP 500."""
    import struct

    real = DATA / "single" / "ct_ge_small_signed.dcm"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("x", b"nameless")
        zf.write(real, "ct.dcm")
    raw = bytearray(buf.getvalue())
    raw[30:31] = b""  # the first member's name, "x", out of its local header
    struct.pack_into("<H", raw, 26, 0)
    cd = raw.find(b"PK\x01\x02")
    raw[cd + 46:cd + 47] = b""  # and out of its central directory entry
    struct.pack_into("<H", raw, cd + 28, 0)
    cd2 = raw.find(b"PK\x01\x02", cd + 4)
    struct.pack_into("<L", raw, cd2 + 42, struct.unpack_from("<L", raw, cd2 + 42)[0] - 1)  # ct.dcm's offset
    end = raw.find(b"PK\x05\x06")
    struct.pack_into("<LL", raw, end + 12, end - cd, cd)
    with zipfile.ZipFile(io.BytesIO(bytes(raw))) as zf:
        assert [m.filename for m in zf.infolist()] == ["", "ct.dcm"]
    assert list(expand_zip("up.zip", bytes(raw), 10**8)) == [("up.zip/ct.dcm", real.read_bytes())]
