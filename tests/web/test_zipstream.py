"""Downloads read stored objects a chunk at a time (``web/zipstream.py`` over ``Storage.open_read``): the ZIP of a
series, its DICOMDIR and a cube's download hold a chunk in memory, not an object, nor a series — measured with
tracemalloc on a large object — and give back every stored byte (zipfile and pydicom, not our code, read them).

The large object is made in the test from a real file of ../shared/data: its frame repeated into a multi-frame
instance of at least :data:`SIZE` bytes (pydicom writes it); the other members are a real series' files as stored.
"""

from __future__ import annotations

import io
import tracemalloc
import warnings
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest

from cubepacs.archive.storage.file import FileStorage
from cubepacs.archive.web.zipstream import CHUNK, chunks, dicomdir, zip_stream
from tests.conftest import SERIES, SINGLES, dicom_files

SIZE = 64 << 20


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> tuple[FileStorage, list[str], str]:
    """A file storage holding a real series' files and a large instance made from a real file; their keys, and
    the large one's."""
    storage = FileStorage(tmp_path_factory.mktemp("store"))
    keys = []
    for f in dicom_files(next(s for s in SERIES if s.name.startswith("mr_ge_mr750"))):
        keys.append(f"t/s/{f.name}")
        storage.put(keys[-1], f.read_bytes())
    for f in SINGLES:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(f)
        if "PixelData" in ds and not ds.file_meta.TransferSyntaxUID.is_compressed and ds.get("NumberOfFrames", 1) == 1:
            break
    frames = -(-SIZE // len(ds.PixelData))
    ds.NumberOfFrames = frames
    ds.PixelData = bytes(ds.PixelData) * frames
    buf = io.BytesIO()
    ds.save_as(buf)
    storage.put("t/big.dcm", buf.getvalue())
    keys.append("t/big.dcm")
    return storage, keys, "t/big.dcm"


def peak(work: Callable[[], Any]) -> int:
    """The most memory Python allocated at once while ``work`` ran (tracemalloc)."""
    tracemalloc.start()
    try:
        work()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def drain(pieces: Iterator[bytes], out: Path) -> None:
    with open(out, "wb") as f:
        for piece in pieces:
            f.write(piece)


def test_a_zip_holds_a_chunk_in_memory_and_every_stored_byte(
    stored: tuple[FileStorage, list[str], str], tmp_path: Path
) -> None:
    storage, keys, big = stored
    size = len(storage.get(big))
    assert size > SIZE > 32 * CHUNK
    entries = [(k, lambda k=k: storage.open_read(k)) for k in keys]
    streamed = peak(lambda: drain(zip_stream(entries), tmp_path / "a.zip"))
    whole = peak(lambda: drain(zip_stream([(k, lambda k=k: storage.get(k)) for k in keys]), tmp_path / "b.zip"))
    assert whole > size  # the measure sees an object read whole ...
    assert streamed < size / 8  # ... and a chunked read holds a few chunks (~2 MB here, for a 64 MB object)
    with zipfile.ZipFile(tmp_path / "a.zip") as zf:
        assert zf.testzip() is None and zf.namelist() == keys
        assert all(zf.read(k) == storage.get(k) for k in keys)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(io.BytesIO(zf.read(big)))
        assert len(ds.pixel_array) == int(ds.NumberOfFrames) and len(ds.PixelData) >= SIZE
    assert (tmp_path / "a.zip").read_bytes() == (tmp_path / "b.zip").read_bytes()  # the same ZIP as before


def test_a_dicomdir_reads_headers_only(stored: tuple[FileStorage, list[str], str]) -> None:
    storage, keys, big = stored
    made: list[Any] = []
    used = peak(lambda: made.append(dicomdir((k, storage.open_read(k)) for k in keys)))
    raw, paths, notes = made[0]
    assert used < len(storage.get(big)) / 8
    assert sorted(paths) == sorted(keys) and not [n for n in notes if "not in the DICOMDIR" in n]
    assert (paths, notes) == dicomdir((k, storage.get(k)) for k in keys)[1:]  # as from the bytes (its UIDs new)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        records = pydicom.dcmread(io.BytesIO(raw)).DirectoryRecordSequence
    assert sorted("/".join(r.ReferencedFileID) for r in records if "ReferencedFileID" in r) == sorted(paths.values())


def test_an_object_download_is_chunked(stored: tuple[FileStorage, list[str], str], tmp_path: Path) -> None:
    storage, _, big = stored
    used = peak(lambda: drain(chunks(storage.open_read(big)), tmp_path / "big"))
    assert used < len(storage.get(big)) / 8
    assert (tmp_path / "big").read_bytes() == storage.get(big)
