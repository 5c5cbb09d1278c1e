"""ZIP answers written as they are sent: a chunk of a stored file in memory at a time, nothing on disk (the admin
UI's downloads, ``web/studyactions.py``), and the DICOMDIR of a set of instances made by pydicom's ``FileSet``.

:func:`zip_stream` hands Python's ``zipfile`` a sink that is not seekable, so each member is written with a data
descriptor and the archive's bytes leave as soon as a chunk (:data:`CHUNK`) of a member is written (ZIP64 where
sizes or offsets need it). A member's content comes from a file read a chunk at a time (``Storage.open_read``):
memory is bounded by a chunk, not by a file, nor a series. :func:`chunks` does the same for one object
(the series' cube download).

Example
-------
>>> import io, zipfile
>>> body = b"".join(zip_stream([("a/1.dcm", lambda: io.BytesIO(b"one")), ("b.txt", lambda: b"two")]))
>>> with zipfile.ZipFile(io.BytesIO(body)) as zf:
...     zf.namelist(), zf.read("a/1.dcm")
(['a/1.dcm', 'b.txt'], b'one')
"""

from __future__ import annotations

import io
import re
import tempfile
import warnings
import zipfile
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any

CHUNK = 1 << 20  # bytes of a stored file read at a time


class _Sink(io.RawIOBase):
    """Where ``zipfile`` writes: collects the bytes until the stream takes them; not seekable."""

    def __init__(self) -> None:
        super().__init__()
        self.chunks: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self.chunks.append(bytes(data))
        return len(data)

    def taken(self) -> Iterator[bytes]:
        """What was written since, as one piece (none when nothing was: an empty piece could end a chunked body)."""
        if self.chunks:
            out = b"".join(self.chunks)
            self.chunks.clear()
            yield out


def _file(content: bytes | IO[bytes]) -> IO[bytes]:
    return io.BytesIO(content) if isinstance(content, bytes | bytearray | memoryview) else content


def size_of(fp: IO[bytes]) -> int | None:
    """The bytes left in ``fp`` from where it is, when it can tell (a seekable file), else None.

    Example
    -------
    >>> f = io.BytesIO(b"0123456789"); _ = f.read(3)
    >>> size_of(f), f.read(2)
    (7, b'34')
    """
    try:
        if fp.seekable():
            here = fp.tell()
            end = fp.seek(0, io.SEEK_END)
            fp.seek(here)
            return end - here
    except (OSError, ValueError):
        pass
    return None


def chunks(fp: IO[bytes], size: int = CHUNK) -> Iterator[bytes]:
    """The bytes of ``fp``, at most ``size`` at a time; closes it once read (or when the iterator is closed).

    Example
    -------
    >>> list(chunks(io.BytesIO(b"0123456789"), 4))
    [b'0123', b'4567', b'89']
    """
    with fp:
        while piece := fp.read(size):
            yield piece


def zip_stream(entries: Iterable[tuple[str, Callable[[], bytes | IO[bytes]]]]) -> Iterator[bytes]:
    """The bytes of a ZIP (stored, not compressed: DICOM pixel data rarely shrinks) holding ``entries`` — (name,
    function returning the content: a binary file to read, closed once read, or bytes) — read one at a time and
    a chunk at a time, yielded as each chunk is written."""
    sink = _Sink()
    with zipfile.ZipFile(sink, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, read in entries:
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            with _file(read()) as fp:
                size = size_of(fp)  # (what zipfile's ZIP64 choice needs; unknown: ZIP64 fields anyway)
                info.file_size = size or 0
                with zf.open(info, "w", force_zip64=size is None) as member:
                    while piece := fp.read(CHUNK):
                        member.write(piece)
                        yield from sink.taken()
            yield from sink.taken()
    yield from sink.taken()


# values invented for a directory record whose Type 1 key the file leaves empty or out (the file is unchanged), as
# DCMTK's dcmmkdir +I does; "#" stands for the instance's position in the file-set
INVENTED = {"PatientID": "UNKNOWN", "StudyID": "1", "StudyDate": "19000101", "StudyTime": "000000",
            "SeriesNumber": "1", "InstanceNumber": "#", "Modality": "OT"}
_MISSING = re.compile(r"\(([0-9A-F]{4}),([0-9A-F]{4})\) '[^']*' element (?:cannot be empty|is missing)")


def _add(fs: Any, ds: Any, position: int) -> list[str]:
    """Add ``ds`` to the file-set, inventing record values pydicom's record creators ask for (at most one try per
    invented value); the values invented, as ``Keyword 'value'``. ValueError when it still cannot be placed."""
    from pydicom.datadict import keyword_for_tag

    invented: list[str] = []
    while True:
        try:
            fs.add(ds)
            return invented
        except ValueError as exc:
            found = _MISSING.search(str(exc))
            keyword = keyword_for_tag(int(found.group(1) + found.group(2), 16)) if found else ""
            if keyword not in INVENTED or any(i.startswith(keyword + " ") for i in invented):
                raise
            value = str(position) if INVENTED[keyword] == "#" else INVENTED[keyword]
            setattr(ds, keyword, value)
            invented.append(f"{keyword} {value!r}")


def dicomdir(files: Iterable[tuple[str, bytes | IO[bytes]]]) -> tuple[bytes, dict[str, str], list[str]]:
    """A DICOMDIR for ``files`` ((key, the file: bytes, or a binary file of which only the header is read and
    which is closed); only each header is kept, so pass them one by one): (its
    bytes, key → path of the file in the file-set (``PT000000/ST000000/SE000000/IM000000``), notes: why each key
    left out could not be placed, and the record values invented for a file that leaves a Type 1 key of its
    directory record empty — :data:`INVENTED`, in the DICOMDIR only, never in the file). pydicom's ``FileSet``
    writes the directory; what it writes beside it (the headers) lives in a temporary folder removed before this
    returns.

    Example
    -------
    >>> from pathlib import Path
    >>> data = Path("../shared/data/single/ct_ge_small_signed.dcm").read_bytes()
    >>> raw, paths, notes = dicomdir([("x", data)])
    >>> raw[128:132], paths, notes
    (b'DICM', {'x': 'PT000000/ST000000/SE000000/IM000000'}, [])
    >>> tcia = Path("../shared/data/series/ct_ge_lightspeedvct_chest_100sl/1-001.dcm").read_bytes()  # Study ID empty
    >>> dicomdir([("y", tcia)])[1:]
    ({'y': 'PT000000/ST000000/SE000000/IM000000'}, ["y: in the DICOMDIR with StudyID '1' (invented)"])
    """
    import pydicom
    from pydicom.fileset import FileSet

    fs = FileSet()  # it stages each added header in a temporary folder of its own: removed in the end
    keys: dict[str, str] = {}  # SOP Instance UID → key
    notes: list[str] = []
    try:
        for n, (key, data) in enumerate(files):
            try:
                with warnings.catch_warnings(), _file(data) as fp:
                    warnings.simplefilter("ignore")  # (a file pydicom cannot seek in is read whole: S3's body)
                    ds = pydicom.dcmread(fp if fp.seekable() else io.BytesIO(fp.read()), stop_before_pixels=True)
                    if str(ds.get("SOPInstanceUID", "")) in keys:  # FileSet would replace the first one
                        raise ValueError(f"the same SOP Instance UID as {keys[str(ds.SOPInstanceUID)]}")
                    invented = _add(fs, ds, n + 1)
                keys[str(ds.SOPInstanceUID)] = key
                if invented:
                    notes.append(f"{key}: in the DICOMDIR with {', '.join(invented)} (invented)")
            except Exception as exc:
                notes.append(f"{key}: not in the DICOMDIR: {type(exc).__name__}: {str(exc)[:200]}")
        with tempfile.TemporaryDirectory(prefix="cubepacs-dicomdir-") as tmp, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fs.write(tmp)
            paths = {keys[str(inst.SOPInstanceUID)]: inst.FileID.replace("\\", "/") for inst in fs}
            with open(f"{tmp}/DICOMDIR", "rb") as f:
                raw = f.read()
    finally:
        stage = getattr(fs, "_stage", {}).get("t")
        if stage is not None:
            stage.cleanup()
    return raw, paths, notes
