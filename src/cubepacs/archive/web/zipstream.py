"""ZIP answers written as they are sent: one stored file in memory at a time, nothing on disk (the admin UI's
downloads, ``web/studyactions.py``), and the DICOMDIR of a set of instances made by pydicom's ``FileSet``.

:func:`zip_stream` hands Python's ``zipfile`` a sink that is not seekable, so each member is written with a data
descriptor and the archive's bytes leave as soon as a member is written (ZIP64 where sizes or offsets need it).

Example
-------
>>> import io, zipfile
>>> body = b"".join(zip_stream([("a/1.dcm", lambda: b"one"), ("b.txt", lambda: b"two")]))
>>> with zipfile.ZipFile(io.BytesIO(body)) as zf:
...     zf.namelist(), zf.read("a/1.dcm")
(['a/1.dcm', 'b.txt'], b'one')
"""

from __future__ import annotations

import io
import tempfile
import warnings
import zipfile
from collections.abc import Callable, Iterable, Iterator
from typing import Any


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

    def take(self) -> bytes:
        out = b"".join(self.chunks)
        self.chunks.clear()
        return out


def zip_stream(entries: Iterable[tuple[str, Callable[[], bytes]]]) -> Iterator[bytes]:
    """The bytes of a ZIP (stored, not compressed: DICOM pixel data rarely shrinks) holding ``entries`` — (name,
    function returning the content) — read one at a time, yielded as each is written."""
    sink = _Sink()
    with zipfile.ZipFile(sink, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, read in entries:
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            data = read()
            zf.writestr(info, data)
            del data
            yield sink.take()
    yield sink.take()


def dicomdir(files: Iterable[tuple[str, bytes]]) -> tuple[bytes, dict[str, str], list[str]]:
    """A DICOMDIR for ``files`` ((key, file bytes); only each header is kept, so pass them one by one): (its
    bytes, key → path of the file in the file-set (``PT000000/ST000000/SE000000/IM000000``), why each key left
    out could not be placed). pydicom's ``FileSet`` writes the directory; what it writes beside it (the headers)
    lives in a temporary folder removed before this returns.

    Example
    -------
    >>> from pathlib import Path
    >>> data = Path("../shared/data/single/ct_ge_small_signed.dcm").read_bytes()
    >>> raw, paths, left = dicomdir([("x", data)])
    >>> raw[128:132], paths, left
    (b'DICM', {'x': 'PT000000/ST000000/SE000000/IM000000'}, [])
    """
    import pydicom
    from pydicom.fileset import FileSet

    fs = FileSet()  # it stages each added header in a temporary folder of its own: removed in the end
    keys: dict[str, str] = {}  # SOP Instance UID → key
    left: list[str] = []
    try:
        for key, data in files:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
                    fs.add(ds)
                keys[str(ds.SOPInstanceUID)] = key
            except Exception as exc:
                left.append(f"{key}: {type(exc).__name__}: {str(exc)[:200]}")
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
    return raw, paths, left
