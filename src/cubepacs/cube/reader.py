"""Read a ``.dcbs`` cube from a path (memory-mapped), a binary file object or bytes: metadata, frames, files.

Every block is checked against its checksum before use; a truncated or corrupted file raises
:class:`~cubepacs.errors.InvalidCubeError` naming the block, never wrong pixels.

Example
-------
>>> import cubepacs, tempfile, os
>>> path = os.path.join(tempfile.mkdtemp(), "x.dcbs")
>>> cubepacs.save(cubepacs.load_from_dicom_folder("../shared/data/series/ct_philips_ingenuity_tilt_54sl"), path)
>>> reader = CubeReader(path)
>>> reader.num_frames, reader.frame(0).shape
(54, (512, 512))
"""

from __future__ import annotations

import mmap
import os
import threading
from pathlib import Path
from typing import IO, Any

import imagecodecs
import numpy as np

from cubepacs.cube import framedecode, guard, validate
from cubepacs.cube.codecs import get_codec, native_call
from cubepacs.cube.format import (
    FRAME_DTYPE,
    HEADER_SIZE,
    WHOLE_VALUE,
    Header,
    checksum,
    decode_meta,
    section,
)
from cubepacs.cube.meta import DicomMeta
from cubepacs.cube.pixels import PixelDesc, frame_to_bytes, to_stored_values
from cubepacs.dicom.rawfile import KEY_PIXEL_VALUE, PIXEL_TAGS
from cubepacs.errors import CodecError, InvalidCubeError

_ic: Any = imagecodecs  # imagecodecs' stubs do not admit memoryview, which every codec accepts

CubeSource = str | os.PathLike[str] | bytes | bytearray | memoryview | IO[bytes]
HEAD_READ = 64 * 1024  # first read from a file object (object storage: one ranged GET for header and meta)


class _Bytes:
    """Random access to the cube's bytes, whatever they came from."""

    def __init__(self, src: CubeSource) -> None:
        self._lock = threading.Lock()
        self._file: IO[bytes] | None = None
        self._view: memoryview | None = None
        if isinstance(src, (str, os.PathLike)):
            self.name = str(src)
            with open(src, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size == 0:
                    raise InvalidCubeError(self.name, "header", "file is empty")
                self._view = memoryview(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ))
        elif isinstance(src, (bytes, bytearray, memoryview)):
            self.name = "<bytes>"
            self._view = memoryview(src).cast("B")
        else:
            self.name = str(getattr(src, "name", "<file>"))
            self._file = src
        self._head: bytes | None = None  # the first bytes of a file object: header and (usually) the meta block

    def read(self, offset: int, length: int, block: str) -> memoryview:
        if self._view is not None:
            out = self._view[offset : offset + length]
        else:
            assert self._file is not None
            with self._lock:
                if self._head is None and offset == 0:  # one request for header + meta on object storage
                    self._file.seek(0)
                    self._head = self._file.read(max(HEAD_READ, length))
                if self._head is not None and offset + length <= len(self._head):
                    out = memoryview(self._head)[offset : offset + length]
                else:
                    self._file.seek(offset)
                    out = memoryview(self._file.read(length))
        if len(out) != length:
            raise InvalidCubeError(
                self.name, block, f"file truncated: needed {length} bytes at {offset}, got {len(out)}"
            )
        return out


MAX_META = 1 << 28  # a metadata block larger than this (256 MB) is refused before it is decompressed
MAX_VALUE_BYTES = 1 << 30  # default bound of a whole (opaque) pixel value decompressed (docs/format.md)


def _read_meta(src: _Bytes) -> tuple[Header, dict[str, Any], memoryview]:
    """Header, checked and decoded meta block (JSON document, binary area), its structure checked."""
    header = Header.unpack(bytes(src.read(0, HEADER_SIZE, "header")), src.name)
    if header.meta_length > MAX_META or header.meta_raw_length > MAX_META:
        raise InvalidCubeError(src.name, "meta", f"metadata block of {header.meta_raw_length} bytes is too large")
    stored = src.read(header.meta_offset, header.meta_length, "meta")
    if checksum(stored) != header.meta_checksum:
        raise InvalidCubeError(src.name, "meta", "checksum mismatch (metadata block corrupted)")
    try:
        declared = guard.zstd_size(stored)
    except CodecError as exc:
        raise InvalidCubeError(src.name, "meta", str(exc)) from None
    if declared != header.meta_raw_length:
        raise InvalidCubeError(
            src.name, "meta", f"block declares {declared} bytes, the header {header.meta_raw_length}"
        )
    try:
        doc, area = decode_meta(stored, header.meta_raw_length, src.name)
        validate.check_doc(doc, len(area), src.name)
    except InvalidCubeError:
        raise
    except Exception as exc:  # whatever a crafted document trips over
        raise InvalidCubeError(src.name, "meta", f"{type(exc).__name__}: {exc}") from None
    return header, doc, area


def _meta_from(doc: dict[str, Any], area: memoryview, source: str) -> DicomMeta:
    """The series metadata, its pool, keys, references and columns checked (``validate``)."""
    syntax_idx = section(area, doc["syntax"])
    meta = DicomMeta(
        names=doc["names"],
        syntaxes=[doc["syntaxes"][k] for k in syntax_idx.tolist()],
        pool_keys=section(area, doc["pool_keys"]),
        pool_offsets=section(area, doc["pool_offsets"]),
        pool_data=section(area, doc["pool_data"]),
        refs=section(area, doc["refs"]),
        starts=section(area, doc["starts"]),
        columns={name: section(area, c["sect"]) for name, c in doc["columns"].items()},
        qc=doc["qc"],
        source=source,
    )
    validate.check_pool(meta, source)
    validate.check_meta(meta, source)
    return meta


class CubeReader:
    """Open a cube; metadata is read at once, frames on demand."""

    def __init__(self, src: CubeSource, max_value_bytes: int = MAX_VALUE_BYTES) -> None:
        self.max_value_bytes = max_value_bytes  # the largest whole pixel value decompressed (a setting)
        self._src = _Bytes(src)
        self.header, self.doc, self._area = _read_meta(self._src)
        try:
            self.meta = _meta_from(self.doc, self._area, self.source)
            self.descs = [PixelDesc.from_json(d) for d in self.doc["pixel_descs"]]
            validate.check_descs(self.descs, self.source)
            self._desc_idx = section(self._area, self.doc["pixel_desc"])
            validate.check_desc_index(self._desc_idx, len(self.descs), len(self.meta), self.source)
            counts = [d.frames if (d := self.desc(i)) is not None else 0 for i in range(len(self.meta))]
        except InvalidCubeError:
            raise
        except Exception as exc:
            raise InvalidCubeError(self.source, "meta", f"{type(exc).__name__}: {exc}") from None
        self._index: np.ndarray | None = None
        self.frame_starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self._last: tuple[int, bytes] | None = None
        self._positions: dict[str, int] | None = None  # instance name → index (``position``)
        exact = self.doc.get("stored_exact", [])  # optional (format.md); anything but a list of ints: none
        self._stored_exact = (
            frozenset(x for x in exact if isinstance(x, int)) if isinstance(exact, list) else frozenset()
        )

    @property
    def source(self) -> str:
        """The path (or ``<bytes>``) the cube was read from."""
        return self._src.name

    @property
    def codec(self) -> str:
        """The codec the cube was written with (frames it could not take use ``zstd``)."""
        return str(self.doc["codec"])

    @property
    def num_frames(self) -> int:
        """Total number of frames over all instances."""
        return int(self.frame_starts[-1])

    def desc(self, i: int) -> PixelDesc | None:
        """Pixel storage plan of instance ``i`` (None when it has no pixel data)."""
        j = int(self._desc_idx[i])
        return self.descs[j] if j >= 0 else None

    @property
    def index(self) -> np.ndarray:
        """The frame index (one FRAME_DTYPE record per stored blob), loaded and checked on first use."""
        if self._index is None:
            h = self.header
            data = self._src.read(h.index_offset, h.index_length, "index")
            if checksum(data) != h.index_checksum:
                raise InvalidCubeError(self.source, "index", "checksum mismatch (frame index corrupted)")
            if len(data) % FRAME_DTYPE.itemsize:
                raise InvalidCubeError(self.source, "index", "length is not a whole number of records")
            index = np.frombuffer(data, FRAME_DTYPE)
            validate.check_index(index, len(self.meta), h.data_length, self.source)
            self._first_row = np.searchsorted(index["instance"], np.arange(len(self.meta)))
            self._index = index
        return self._index

    def _blob(self, row: int) -> memoryview:
        rec = self.index[row]
        data = self._src.read(self.header.data_offset + int(rec["offset"]), int(rec["length"]), f"frame {row}")
        if checksum(data) != int(rec["checksum"]):
            raise InvalidCubeError(self.source, f"frame {row}", "checksum mismatch (frame data corrupted)")
        return data

    def position(self, name: str) -> int | None:
        """The index of the instance stored as ``name`` (its file name in the series), None when there is none;
        looked up in a table built on first use (a frame request asks this every time).

        Example
        -------
        >>> import io
        >>> from pathlib import Path
        >>> from cubepacs.cube.sources import read_instance
        >>> from cubepacs.cube.writer import write_cube
        >>> data = Path("../shared/data/single/ct_ge_small_signed.dcm").read_bytes()
        >>> buf = io.BytesIO(); _ = write_cube([read_instance(data, "ct.dcm")], buf)
        >>> r = CubeReader(buf.getvalue()); r.position("ct.dcm"), r.position("other.dcm")
        (0, None)
        """
        if self._positions is None:
            positions: dict[str, int] = {}
            for i, n in enumerate(self.meta.names):
                positions.setdefault(n, i)  # the first of a repeated name, as list.index finds it
            self._positions = positions
        return self._positions.get(name)

    def locate(self, k: int) -> tuple[int, int]:
        """(instance, frame within instance) of series frame ``k``."""
        if not 0 <= k < self.num_frames:
            raise IndexError(f"frame {k} out of range (the cube has {self.num_frames} frames)")
        i = int(np.searchsorted(self.frame_starts, k, side="right")) - 1
        return i, k - int(self.frame_starts[i])

    def frame(self, k: int, out: np.ndarray | None = None) -> np.ndarray:
        """Decode series frame ``k`` (stored values, never rescaled) without touching the others."""
        i, f = self.locate(k)
        d = self.desc(i)
        if d is None:
            raise InvalidCubeError(self.source, f"frame {k}", "instance without pixel data")
        try:
            if d.mode != "native":
                return framedecode.whole_frame(self, i, f, d)
            return to_stored_values(d, self._container(i, f, d, out))
        except (InvalidCubeError, CodecError):
            raise
        except Exception as exc:
            raise InvalidCubeError(self.source, f"frame {k}", f"{type(exc).__name__}: {exc}") from None

    def values_exact(self, i: int) -> bool:
        """Whether instance ``i``'s native frames, decoded, are its stored values as they are: Bits Stored equals
        Bits Allocated, or the writer found nothing above Bits Stored in any frame (``stored_exact``).

        Example
        -------
        >>> import io
        >>> from pathlib import Path
        >>> from cubepacs.cube.sources import read_instance
        >>> from cubepacs.cube.writer import write_cube
        >>> single = Path("../shared/data/single")
        >>> files = [(single / n).read_bytes() for n in ("ts_explicit_le_siemens_mr.dcm",  # values below 4096
        ...                                              "mr_12bit_unsigned_siemens.dcm")]  # up to 4379
        >>> buf = io.BytesIO(); _ = write_cube([read_instance(d, f"{n}.dcm") for n, d in enumerate(files)], buf)
        >>> r = CubeReader(buf.getvalue()); [(r.desc(i).stored, r.values_exact(i)) for i in (0, 1)]
        [(12, True), (12, False)]
        """
        d = self.desc(i)
        return d is not None and d.mode == "native" and (not d.stored or i in self._stored_exact)

    def encoded(self, k: int) -> tuple[str, memoryview] | None:
        """Series frame ``k`` as the cube stores it — (codec name, its bytes, checksum and codestream header
        checked) — for a native frame; None for one kept inside its instance's whole pixel value (encapsulated or
        opaque input). An HTJ2K frame is a complete codestream that any HTJ2K decoder reads.

        Example
        -------
        >>> import io
        >>> from pathlib import Path
        >>> from cubepacs.cube.sources import read_instance
        >>> from cubepacs.cube.writer import write_cube
        >>> data = Path("../shared/data/single/ct_ge_small_signed.dcm").read_bytes()
        >>> buf = io.BytesIO(); _ = write_cube([read_instance(data, "ct.dcm")], buf, codec="htj2k")
        >>> codec, blob = CubeReader(buf.getvalue()).encoded(0); codec, blob[:2].hex()  # SOC: a J2K codestream
        ('htj2k', 'ff4f')
        """
        i, f = self.locate(k)
        d = self.desc(i)
        if d is None or d.mode != "native":
            return None
        _, codec, blob = self._checked_blob(i, f, d)
        return get_codec(codec).name, blob

    def _checked_blob(self, i: int, f: int, d: PixelDesc) -> tuple[int, int, memoryview]:
        """(index row, codec id, bytes) of native frame ``f`` of instance ``i``: its record found, its checksum
        and codestream header checked against the frame — before any decoder, or a client, sees the bytes."""
        row = self._row(i, f)
        if (
            not 0 <= row < len(self.index)
            or int(self.index[row]["instance"]) != i
            or (int(self.index[row]["frame"]) != f)
        ):
            raise InvalidCubeError(self.source, "index", f"no record for frame {f} of instance {i}")
        codec, blob = int(self.index[row]["codec"]), self._blob(row)
        try:
            guard.check(codec, blob, d.frame_shape, d.native_dtype.itemsize * 8)
        except CodecError as exc:
            raise CodecError(f"{self.source}: frame {row}: {exc}") from None
        except Exception as exc:
            raise CodecError(f"{self.source}: frame {row}: {type(exc).__name__}: {exc}") from None
        return row, codec, blob

    def _container(self, i: int, f: int, d: PixelDesc, out: np.ndarray | None = None) -> np.ndarray:
        """Frame ``f`` of instance ``i`` as the container values in the file (all bits kept)."""
        row, codec, blob = self._checked_blob(i, f, d)
        try:
            if out is None:
                out = np.empty(d.frame_shape, d.native_dtype)
            get_codec(codec).decode(blob, out)
        except CodecError as exc:
            raise CodecError(f"{self.source}: frame {row}: {exc}") from None
        except Exception as exc:
            raise CodecError(f"{self.source}: frame {row}: {type(exc).__name__}: {exc}") from None
        return out

    def _row(self, i: int, f: int) -> int:
        if self._index is None:
            self.index  # noqa: B018 - loads the index and _first_row
        return int(self._first_row[i]) + f

    def pixel_value(self, i: int) -> bytes:
        """The exact Pixel Data value bytes of instance ``i`` (native frames re-encoded to file order)."""
        d = self.desc(i)
        if d is None or d.mode == "file":
            return b""
        first = self._row(i, 0)
        rec = self.index[first]
        if int(rec["frame"]) == WHOLE_VALUE:
            data = self._blob(first)
            if int(rec["codec"]) == 0:
                return bytes(data)
            if int(rec["codec"]) != 1:
                raise InvalidCubeError(
                    self.source,
                    f"frame {first}",
                    f"whole pixel value stored with codec {int(rec['codec'])} (raw or zstd expected)",
                )
            self._whole_size(i, d, data, first)
            try:
                return bytes(native_call("zstd", _ic.zstd_decode, data))
            except Exception as exc:
                raise InvalidCubeError(self.source, f"frame {first}", str(exc)) from None
        return b"".join(frame_to_bytes(d, self._container(i, f, d)) for f in range(d.frames))

    def _whole_size(self, i: int, d: PixelDesc, data: memoryview, row: int) -> int:
        """The bytes instance ``i``'s zstd whole value ``data`` (index row ``row``) declares, checked before any is
        decompressed: what its Pixel Data element declares, at most the description's frames + 1 MiB and
        ``max_value_bytes``."""
        try:
            size = guard.zstd_size(data)
            declared = self._value_length(i)
            bound = min(
                d.frames * max(d.rows * d.cols * d.spp * max(d.bits, 8) // 8, 1) + (1 << 20), self.max_value_bytes
            )
            if size > bound or (declared is not None and size != declared):
                raise CodecError(
                    f"whole pixel value of {size} bytes (its element declares {declared}, at most {bound} expected)"
                )
        except Exception as exc:
            raise InvalidCubeError(self.source, f"frame {row}", str(exc)) from None
        return size

    def _value_length(self, i: int) -> int | None:
        """The length instance ``i``'s Pixel Data element header declares (None when undefined or not found): what
        its whole value must decompress to."""
        return framedecode.pixel_element(self.meta, i)[2]

    def instance_bytes(self, i: int) -> bytes:
        """The original DICOM file of instance ``i``, byte for byte."""
        if self._last is not None and self._last[0] == i:
            return self._last[1]
        try:
            return self._instance_bytes(i)
        except (InvalidCubeError, CodecError):
            raise
        except Exception as exc:
            raise InvalidCubeError(self.source, f"instance {i}", f"{type(exc).__name__}: {exc}") from None

    def _instance_bytes(self, i: int) -> bytes:
        refs = self.meta.instance_refs(i).tolist()
        keys = [self.meta.pool_key(p) for p in refs]
        validate.check_element_list(refs, keys, self.source, i)  # before a value is decompressed or parsed
        parts = []
        for p, key in zip(refs, keys, strict=True):
            parts.append(self.pixel_value(i) if key == KEY_PIXEL_VALUE else self.meta.chunk(p))
        data = b"".join(parts)
        self._last = (i, data)
        return data

    def header_bytes(self, i: int) -> tuple[bytes, int | None]:
        """Instance ``i``'s bytes before its Pixel Data element, and that element's tag (None without one)."""
        parts: list[bytes] = []
        for p in self.meta.instance_refs(i).tolist():
            key = self.meta.pool_key(p)
            if key in PIXEL_TAGS:
                return b"".join(parts), key
            parts.append(self.meta.chunk(p))
        return self.instance_bytes(i), None

    def check_instance(self, i: int, frames: int = 1) -> None:
        """Read instance ``i`` back as a server would: its header bytes, its whole pixel value (encapsulated or
        opaque) or its first ``frames`` native frames decoded and compared with their stored raw checksums.
        Raises :class:`InvalidCubeError` or :class:`CodecError` naming what fails (what a builder checks before it
        publishes a cube).

        Example
        -------
        >>> import cubepacs, tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "ct.dcbs")
        >>> cubepacs.save(cubepacs.load_from_dicom_folder(["../shared/data/single/ct_ge_small_signed.dcm"]), path)
        >>> CubeReader(path).check_instance(0)
        """
        try:
            self.header_bytes(i)
            d = self.desc(i)
            if d is None or d.mode == "file" or not d.frames:
                return
            if d.mode != "native":
                self.pixel_value(i)
                return
            for f in range(min(frames, d.frames)):
                row = self._row(i, f)
                got = checksum(frame_to_bytes(d, self._container(i, f, d)))
                if got != int(self.index[row]["raw_checksum"]):
                    raise InvalidCubeError(self.source, f"frame {row}", "decoded bytes differ from the original")
        except (InvalidCubeError, CodecError):
            raise
        except Exception as exc:
            raise InvalidCubeError(self.source, f"instance {i}", f"{type(exc).__name__}: {exc}") from None

    def verify(self) -> list[str]:
        """Check every block and decode every blob against its stored raw checksum; return problems found."""
        problems = []
        for row, rec in enumerate(self.index):
            i, f = int(rec["instance"]), int(rec["frame"])
            try:
                if f == WHOLE_VALUE:
                    got = checksum(self.pixel_value(i))
                else:
                    d = self.desc(i)
                    assert d is not None
                    got = checksum(frame_to_bytes(d, self._container(i, f, d)))
                if got != int(rec["raw_checksum"]):
                    problems.append(f"frame {row} (instance {self.meta.names[i]}): decoded bytes differ")
            except Exception as exc:  # verify reports every problem, whatever it is
                name = self.meta.names[i] if 0 <= i < len(self.meta.names) else i
                problems.append(f"frame {row} (instance {name}): {type(exc).__name__}: {exc}")
        return problems


def load_meta_only(src: CubeSource) -> DicomMeta:
    """Read only the header and metadata block of a cube."""
    b = _Bytes(src)
    _, doc, area = _read_meta(b)
    try:
        meta = _meta_from(doc, area, b.name)
    except InvalidCubeError:
        raise
    except Exception as exc:
        raise InvalidCubeError(b.name, "meta", f"{type(exc).__name__}: {exc}") from None
    return meta


def is_cube(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` starts with the .dcbs magic."""
    from cubepacs.cube.format import MAGIC

    with open(Path(path), "rb") as f:
        return f.read(len(MAGIC)) == MAGIC
