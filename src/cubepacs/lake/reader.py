"""Read DICOM headers straight out of ZIP archives, folders and cubes, in memory, into rows.

Only the bytes before Pixel Data are decompressed and parsed; values above the bulk threshold are left out of the
JSON (PS3.18 F) and listed in ``bulk_tags``. A bad entry gives a row with ``error`` and ``error_stage``; nothing
raises out of :func:`read_item`.

Example
-------
>>> from cubepacs.lake.partitions import WorkItem, zip_entries
>>> rows = list(read_item(WorkItem("file", "../shared/data/single/ct_ge_small_signed.dcm")))
>>> rows[0]["modality"], rows[0]["rows"], rows[0]["error"]
('CT', 128, None)
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import struct
import tempfile
import warnings
import zipfile
from collections.abc import Iterator
from io import BytesIO
from typing import IO, Any

import pydicom
from pydicom.dataelem import DataElement

from cubepacs.dicom.dicomjson import InvalidValue, Unsupported, dataset_to_json
from cubepacs.dicom.rawfile import DEFLATED, PIXEL_TAGS, Cursor, encoding_of, guess_encoding, plausible_start
from cubepacs.errors import DicomReadError
from cubepacs.lake.partitions import WorkItem, zip_entries

DEFAULT_BULK_THRESHOLD = 1024
DEFAULT_MAX_HEADER = 32 * 1024 * 1024  # bytes of one entry read at most to find its header (settable)
DEFAULT_MAX_NESTED = 4 * 1024**3  # bytes of a ZIP inside a ZIP spooled at most (to a temporary file)
_FIRST_READ = 32 * 1024

Row = dict[str, Any]


class NeedMore(Exception):
    """The header runs past the bytes read so far."""


def row_id(archive: str, entry: str, fingerprint: str = "") -> str:
    """Deterministic row key from the canonical archive path, the entry name and the entry's content fingerprint
    (size and CRC or modification time), never a counter or the partitioning.

    Example
    -------
    >>> row_id("/d/a.zip", "x/1.dcm") == row_id("/d/a.zip", "x/1.dcm") != row_id("/d/a.zip", "x/2.dcm")
    True
    """
    return hashlib.blake2b(f"{archive}\0{entry}\0{fingerprint}".encode(), digest_size=16).hexdigest()


def _empty_row(archive: str, entry: str, container: str, fingerprint: str = "") -> Row:
    return {
        "id": row_id(archive, entry, fingerprint), "archive": archive, "entry": entry, "container": container,
        "entry_size": None, "compressed_size": None, "crc32": None, "patient_id": None, "study_uid": None,
        "series_uid": None, "sop_uid": None, "sop_class_uid": None, "modality": None, "transfer_syntax": None,
        "instance_number": None, "rows": None, "columns": None, "study_date": None, "header_json": None,
        "bulk_tags": [], "pixel_offset": None, "error": None, "error_stage": None,
    }


def file_meta(buf: bytes, eof: bool, source: str = "") -> tuple[int, str | None]:
    """(offset where the dataset starts, Transfer Syntax UID or None) after the preamble and file meta group.

    Raises :class:`NeedMore` when the file meta runs past ``buf`` and more bytes exist.
    """
    pos = 132 if len(buf) >= 132 and buf[128:132] == b"DICM" else 0
    cur = Cursor(buf, True, source)
    ts = None
    while pos + 6 <= len(buf) and buf[pos : pos + 2] == b"\x02\x00":
        try:
            tag, vr, length, hsize = cur.header(pos, False)
            end = cur.end_of(pos, False, tag, vr, length, hsize)
        except DicomReadError:
            if eof:
                raise
            raise NeedMore() from None
        if tag == 0x00020010:
            ts = buf[pos + hsize : pos + hsize + length].rstrip(b"\0 ").decode("ascii", "replace")
        pos = end
    return pos, ts


def header_end(buf: bytes, eof: bool, source: str = "") -> tuple[int, int | None]:
    """(end of header, Pixel Data tag or None) of an encoded file whose first ``len(buf)`` bytes are known.

    Raises :class:`NeedMore` when an element runs past ``buf`` and more bytes exist, DicomReadError when the file
    ends inside an element or a ``(0000,0000)`` element shows zero-filled data.
    """
    return _HeaderScan(source).advance(buf, eof)


class _HeaderScan:
    """Finds the end of an entry's header as its bytes arrive, never walking an element twice (linear)."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.pos: int | None = None
        self.implicit = self.little = True
        self.deflated = False

    def advance(self, buf: bytes, eof: bool) -> tuple[int, int | None]:
        """The header's end in ``buf`` and the Pixel Data tag found there (None at the end); NeedMore while it may
        lie beyond."""
        if self.pos is None:
            pos, ts = file_meta(buf, eof, self.source)
            self.deflated = ts in DEFLATED
            self.implicit, self.little = guess_encoding(buf, pos) if ts is None else encoding_of(ts)
            self.pos = pos
        if self.deflated:  # the dataset is one deflate stream: the whole entry is needed
            if not eof:
                raise NeedMore()
            return len(buf), None
        cur = Cursor(buf, self.little, self.source)
        while self.pos < len(buf):
            tag = -1
            try:
                tag, vr, length, hsize = cur.header(self.pos, self.implicit)
                if tag in PIXEL_TAGS:
                    return self.pos, tag
                if tag == 0:
                    raise DicomReadError(self.source, "element (0000,0000) in the dataset: not a DICOM header "
                                                      "(zero-filled data?)", self.pos)
                self.pos = cur.end_of(self.pos, self.implicit, tag, vr, length, hsize)
            except DicomReadError:
                if eof or tag == 0:
                    raise
                raise NeedMore() from None
        if not eof:
            raise NeedMore()
        return self.pos, None


def read_and_parse(stream: IO[bytes], row: Row, source: str, bulk_threshold: int,
                   max_header: int = DEFAULT_MAX_HEADER) -> Row | None:
    """Read one entry's header (more bytes only while needed, at most ``max_header``) and fill ``row``; None when
    it is not DICOM."""
    buf = stream.read(_FIRST_READ)
    if not (len(buf) >= 132 and buf[128:132] == b"DICM") and not (len(buf) >= 8 and plausible_start(buf)):
        return None
    eof = len(buf) < _FIRST_READ
    scan = _HeaderScan(source)
    while True:
        try:
            scan.advance(buf, eof)
            break
        except NeedMore:
            if len(buf) >= max_header:
                raise DicomReadError(source, f"no end of header within {max_header} bytes (max_header_bytes); "
                                             "not read further", len(buf)) from None
            more = stream.read(min(max(len(buf), _FIRST_READ), max_header - len(buf)))
            eof = not more
            buf += more
    try:
        return parse_buffer(buf, eof, row, source, bulk_threshold)
    except NeedMore:  # the header is complete (found above): what is missing is not needed
        return parse_buffer(buf, True, row, source, bulk_threshold)


def _bulk_handler(found: list[str]) -> Any:
    def handler(elem: DataElement) -> str:
        key = f"{elem.tag:08X}"
        found.append(key)
        return f"bulk:{key}"

    return handler


def _text(ds: pydicom.Dataset, keyword: str) -> str | None:
    value = ds.get(keyword)
    return None if value in (None, "") else str(value)


def _int(ds: pydicom.Dataset, keyword: str) -> int | None:
    try:
        value = ds.get(keyword)
        return None if value in (None, "") else int(value)
    except (TypeError, ValueError):
        return None


def _date(ds: pydicom.Dataset) -> dt.date | None:
    return _parse_date(_text(ds, "StudyDate"))


def _parse_date(text: str | None) -> dt.date | None:
    try:
        return dt.datetime.strptime(text.strip()[:8], "%Y%m%d").date() if text else None
    except ValueError:
        return None


def _first(doc: dict[str, Any], key: str) -> Any:
    values = doc.get(key, {}).get("Value")
    return values[0] if values else None


def _fast_parse(header: bytes, eof: bool, row: Row, bulk_threshold: int) -> None:
    """The fast path: DICOM JSON straight from the bytes, in one walk that stops at Pixel Data.

    Raises NeedMore when the header runs past ``header`` and the entry has more bytes; any other exception means
    the general path must decide.
    """
    pos, ts = file_meta(header, eof)
    if ts is None and not eof:
        raise NeedMore()  # the file meta may be cut off (or absent: then the general path reads it all)
    if ts is None or ts in DEFLATED:
        raise Unsupported("no file meta or a deflated dataset")
    implicit, little = encoding_of(ts)
    try:
        doc, bulk, stop, pixel = dataset_to_json(header[pos:], implicit, little, bulk_threshold, stop_at_pixels=True)
    except (DicomReadError, IndexError, struct.error):
        if not eof:
            raise NeedMore() from None
        raise
    if pixel is None and not eof:  # the walk ended with the bytes read: the header may go on
        raise NeedMore()
    if pixel is not None:  # never read: listed with where it starts
        bulk.append(f"{pixel:08X}")
        row["pixel_offset"] = pos + stop
    date = _first(doc, "00080020")
    number = _first(doc, "00200013")
    row.update(
        patient_id=_first(doc, "00100020"), study_uid=_first(doc, "0020000D"), series_uid=_first(doc, "0020000E"),
        sop_uid=_first(doc, "00080018"), sop_class_uid=_first(doc, "00080016"), modality=_first(doc, "00080060"),
        transfer_syntax=ts, instance_number=number if isinstance(number, int) else None,
        rows=_first(doc, "00280010"), columns=_first(doc, "00280011"),
        study_date=_parse_date(date if isinstance(date, str) else None),
    )
    row["header_json"] = json.dumps(doc, separators=(",", ":"))
    row["bulk_tags"] = bulk


def parse_buffer(buf: bytes, eof: bool, row: Row, source: str, bulk_threshold: int) -> Row:
    """Fill ``row`` from the first bytes of an entry (all of it when ``eof``); NeedMore asks for more bytes."""
    row["error_stage"] = "parse"
    try:
        _fast_parse(buf, eof, row, bulk_threshold)
    except NeedMore:
        raise
    except InvalidValue as exc:
        row.update(error=str(exc), error_stage="json")
        return row
    except DicomReadError:
        if not eof:
            raise NeedMore() from None
        # a broken top level raises the error naming the entry; a sound one, odd inside: pydicom decides
        end, pixel = header_end(buf, eof, source)
        _pydicom_parse(buf[:end], row, bulk_threshold)
        if pixel is not None:
            row["bulk_tags"].append(f"{pixel:08X}")
            row["pixel_offset"] = end
    except Exception:  # an unusual file: pydicom's general (slower, more lenient) path decides
        end, pixel = header_end(buf, eof, source)
        _pydicom_parse(buf[:end], row, bulk_threshold)
        if pixel is not None:
            row["bulk_tags"].append(f"{pixel:08X}")
            row["pixel_offset"] = end
    row["error_stage"] = None
    return row


def _pydicom_parse(header: bytes, row: Row, bulk_threshold: int) -> None:
    try:
        _pydicom_parse_unchecked(header, row, bulk_threshold)
    except DicomReadError:
        raise
    except Exception as exc:  # pydicom's own errors (unknown VR, bad values…) for the entry, as a DicomReadError
        raise DicomReadError(str(row.get("entry") or ""), f"{type(exc).__name__}: {exc}") from None


def _pydicom_parse_unchecked(header: bytes, row: Row, bulk_threshold: int) -> None:
    row["error_stage"] = "parse"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(BytesIO(header), force=True)
    row.update(
        patient_id=_text(ds, "PatientID"), study_uid=_text(ds, "StudyInstanceUID"),
        series_uid=_text(ds, "SeriesInstanceUID"), sop_uid=_text(ds, "SOPInstanceUID"),
        sop_class_uid=_text(ds, "SOPClassUID"), modality=_text(ds, "Modality"),
        instance_number=_int(ds, "InstanceNumber"), rows=_int(ds, "Rows"), columns=_int(ds, "Columns"),
        study_date=_date(ds),
    )
    meta = getattr(ds, "file_meta", None)
    row["transfer_syntax"] = str(meta.TransferSyntaxUID) if meta is not None and "TransferSyntaxUID" in meta else None
    row["error_stage"] = "json"
    bulk: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        doc = ds.to_json_dict(bulk_data_threshold=bulk_threshold, bulk_data_element_handler=_bulk_handler(bulk))
    row["header_json"] = json.dumps(doc, separators=(",", ":"))
    row["bulk_tags"] = bulk


def _spool(zf: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int) -> IO[bytes]:
    """A nested archive in a temporary file (memory for small ones), at most ``limit`` bytes; ValueError beyond."""
    if info.file_size > limit:
        raise ValueError(f"nested ZIP of {info.file_size} bytes exceeds max_nested_bytes ({limit}): not read")
    out: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=8 * 1024 * 1024)
    total = 0
    with zf.open(info) as src:
        while chunk := src.read(1024 * 1024):
            total += len(chunk)
            if total > limit:
                out.close()
                raise ValueError(f"nested ZIP larger than max_nested_bytes ({limit}): not read")
            out.write(chunk)
    out.seek(0)
    return out


def _entry_rows(zf: zipfile.ZipFile, info: zipfile.ZipInfo, archive: str, prefix: str, container: str,
                bulk_threshold: int, limits: tuple[int, int] = (DEFAULT_MAX_HEADER, DEFAULT_MAX_NESTED)
                ) -> Iterator[Row]:
    entry = prefix + info.filename
    row = _empty_row(archive, entry, container, f"{info.file_size}:{info.CRC}")
    row.update(entry_size=info.file_size, compressed_size=info.compress_size, crc32=info.CRC)
    try:
        row["error_stage"] = "zip"
        if info.filename.lower().endswith(".zip"):
            if prefix:
                row.update(error=f"{entry}: nested ZIP deeper than one level: not read")
                yield row
                return
            with _spool(zf, info, limits[1]) as spooled, zipfile.ZipFile(spooled) as inner:
                for sub in zip_entries(inner):
                    yield from _entry_rows(inner, sub, archive, entry + "/", "nested-zip", bulk_threshold, limits)
            return
        with zf.open(info) as stream:
            yield from _parsed_or_error(stream, row, entry, bulk_threshold, limits[0])
    except Exception as exc:
        row["error"] = f"{entry}: {type(exc).__name__}: {exc}"
        yield row


def _parsed_or_error(stream: IO[bytes], row: Row, source: str, bulk_threshold: int,
                     max_header: int = DEFAULT_MAX_HEADER) -> Iterator[Row]:
    """The entry's row, an error row for broken DICOM, or nothing for an entry that is not DICOM at all."""
    try:
        done = read_and_parse(stream, row, source, bulk_threshold, max_header)
    except DicomReadError as exc:
        where = f" at byte {exc.offset}" if exc.offset is not None else ""
        row.update(error=f"{source}: {exc.reason}{where}", error_stage="parse")
        yield row
        return
    if done is None:
        yield from _not_dicom(row)
    else:
        yield done


def _not_dicom(row: Row) -> Iterator[Row]:
    """An entry without the DICM magic: skipped, unless its name says it is DICOM (then an error row)."""
    if str(row["entry"]).lower().endswith((".dcm", ".dicom")):
        row.update(error="not a DICOM file (no DICM prefix and no DICOM element at the start)", error_stage="magic")
        yield row


def fingerprint(path: str) -> str:
    """What identifies a file's content cheaply: its size and a hash of its first 4 KiB (where a DICOM file's
    preamble, file meta and identifying attributes are, and a cube's header with the checksums of its blocks) —
    never its modification time, so that a file rewritten with the same bytes is the same entry."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError:
        return ""
    return f"{size}:{hashlib.blake2b(head, digest_size=8).hexdigest()}"


def read_item(item: WorkItem, bulk_threshold: int = DEFAULT_BULK_THRESHOLD, max_header: int = DEFAULT_MAX_HEADER,
              max_nested: int = DEFAULT_MAX_NESTED) -> Iterator[Row]:
    """Rows of one work item (a ZIP or a slice of its entries, a plain file, a cube).

    Row ids come from the item's canonical path, the entry name and its content fingerprint only: the same input
    named another way (a relative path, a symbolic link) or read in other partitions gives the same ids.
    """
    path = os.path.realpath(item.path)
    if item.kind == "zip":
        try:
            zf = zipfile.ZipFile(path)
        except Exception as exc:
            row = _empty_row(path, "", "zip", fingerprint(path))
            row.update(error=f"{path}: unreadable ZIP: {type(exc).__name__}: {exc}", error_stage="zip")
            yield row
            return
        with zf:
            wanted = set(item.entries)
            for info in zip_entries(zf):
                if not wanted or info.filename in wanted:
                    yield from _entry_rows(zf, info, path, "", "zip", bulk_threshold, (max_header, max_nested))
        return
    if item.kind == "cube":
        yield from _cube_rows(path, bulk_threshold)
        return
    row = _empty_row(path, os.path.basename(path), "folder", fingerprint(path))
    try:
        row["error_stage"] = "open"
        row["entry_size"] = os.path.getsize(path)
        with open(path, "rb") as f:
            yield from _parsed_or_error(f, row, path, bulk_threshold, max_header)
    except Exception as exc:
        row["error"] = f"{path}: {type(exc).__name__}: {exc}"
        yield row


def _cube_rows(path: str, bulk_threshold: int) -> Iterator[Row]:
    from cubepacs.cube.reader import CubeReader

    try:
        reader = CubeReader(path)
    except Exception as exc:
        row = _empty_row(path, "", "cube", fingerprint(path))
        row.update(error=f"unreadable cube: {exc}", error_stage="open")
        yield row
        return
    for i, name in enumerate(reader.meta.names):
        row = _empty_row(path, name, "cube", fingerprint(path))
        try:
            header, _ = reader.header_bytes(i)
            yield parse_buffer(header, True, row, name, bulk_threshold)
        except Exception as exc:
            row["error"] = f"{type(exc).__name__}: {exc}"
            yield row
