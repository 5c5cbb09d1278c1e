"""The series image: metadata plus frames, backed by DICOM instances in memory or by a cube file.

Example
-------
>>> import cubepacs
>>> image = cubepacs.load_from_dicom_folder("../shared/data/series/ct_philips_ingenuity_tilt_54sl")
>>> image.raw_image.shape, image.raw_image.dtype.name
((54, 512, 512), 'uint16')
>>> image.frame(3).shape
(512, 512)
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

import numpy as np

from cubepacs.cube.framedecode import decode_with_pydicom
from cubepacs.cube.meta import DicomMeta
from cubepacs.cube.pixels import PixelDesc, split_frames, to_stored_values
from cubepacs.cube.reader import CubeReader
from cubepacs.cube.sources import Instance
from cubepacs.dicom.rawfile import KEY_PIXEL_VALUE
from cubepacs.errors import CubepacsError


class PixelSource(Protocol):
    """What an image needs from its backing store."""

    frame_starts: np.ndarray

    @property
    def num_frames(self) -> int: ...

    def desc(self, i: int) -> PixelDesc | None: ...

    def locate(self, k: int) -> tuple[int, int]: ...

    def frame(self, k: int, out: np.ndarray | None = None) -> np.ndarray: ...

    def instance_bytes(self, i: int) -> bytes: ...


class InstancePixels:
    """Frames straight from DICOM instances held in memory."""

    def __init__(self, instances: Sequence[Instance]) -> None:
        self.instances = list(instances)
        counts = [i.desc.frames if i.desc is not None else 0 for i in self.instances]
        self.frame_starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)

    @property
    def num_frames(self) -> int:
        return int(self.frame_starts[-1])

    def desc(self, i: int) -> PixelDesc | None:
        return self.instances[i].desc

    def locate(self, k: int) -> tuple[int, int]:
        if not 0 <= k < self.num_frames:
            raise IndexError(f"frame {k} out of range (the series has {self.num_frames} frames)")
        i = int(np.searchsorted(self.frame_starts, k, side="right")) - 1
        return i, k - int(self.frame_starts[i])

    def frame(self, k: int, out: np.ndarray | None = None) -> np.ndarray:
        i, f = self.locate(k)
        inst = self.instances[i]
        assert inst.desc is not None
        if inst.desc.mode != "native":
            arr = decode_with_pydicom(self.instance_bytes(i), f, inst.name)
        else:
            d = inst.desc
            value = memoryview(inst.raw.pixel_value)[f * d.frame_bytes : (f + 1) * d.frame_bytes]
            arr = split_frames(PixelDesc(**{**d.to_json(), "frames": 1}), value)[0][0]
            if d.stored:  # the split frame may be a read-only view of the file bytes: interpret a copy
                arr = to_stored_values(d, np.array(arr))
        if out is not None:
            out[...] = arr
            return out
        return arr

    def instance_bytes(self, i: int) -> bytes:
        raw = self.instances[i].raw
        return b"".join(raw.pixel_value if c.key == KEY_PIXEL_VALUE else c.data for c in raw.chunks)


class DicomCubeImage:
    """A series: ``dicom_meta`` (all elements of all instances) and frames of stored pixel values.

    ``raw_image`` is the whole series as one array (frames × rows × cols [× samples]); it needs all frames
    to have one shape and dtype. ``frame(k)`` and ``frames(a, b)`` decode only what they return.
    """

    def __init__(self, meta: DicomMeta, pixels: PixelSource, instances: Sequence[Instance] | None = None) -> None:
        self.dicom_meta = meta
        self.pixels = pixels
        self._instances = list(instances) if instances is not None else None
        self._raw: np.ndarray | None = None

    @property
    def num_frames(self) -> int:
        """Number of frames in the series (instances × frames per instance)."""
        return self.pixels.num_frames

    def frame(self, k: int) -> np.ndarray:
        """Stored values of frame ``k`` (rows × cols [× samples])."""
        return self.pixels.frame(k)

    def frames(self, start: int, stop: int, threads: int | None = None) -> np.ndarray:
        """Frames ``start`` to ``stop - 1`` as one array, decoded in parallel threads."""
        if not 0 <= start <= stop <= self.num_frames:
            raise IndexError(f"frames {start}:{stop} out of range (the series has {self.num_frames} frames)")
        if start == stop:
            raise IndexError("empty frame range")
        first = self.pixels.frame(start)
        shapes = {(d.frame_shape, d.native_dtype.str) for i in range(len(self.dicom_meta))
                  if (d := self.pixels.desc(i)) is not None and d.mode == "native"}
        if len(shapes) > 1:
            raise CubepacsError(f"frames have different shapes or types {sorted(shapes)}: read them one by one "
                                "with image.frame(k)")
        out = np.empty((stop - start, *first.shape), first.dtype)
        out[0] = first

        def one(k: int) -> None:
            target = out[k - start]
            arr = self.pixels.frame(k, target if self._native(k) else None)
            if arr is not target:
                if arr.shape != first.shape:
                    raise CubepacsError(f"frame {k} has shape {arr.shape}, frame {start} {first.shape}: read "
                                        "them one by one with image.frame(k)")
                target[...] = arr

        workers = threads or min(8, os.cpu_count() or 1)
        if stop - start > 1:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                list(pool.map(one, range(start + 1, stop)))
        return out

    def _native(self, k: int) -> bool:
        d = self.pixels.desc(self.pixels.locate(k)[0])
        return d is not None and d.mode == "native"

    @property
    def raw_image(self) -> np.ndarray:
        """All frames, stored values (never rescaled): frames × rows × cols [× samples]."""
        if self._raw is None:
            if self.num_frames == 0:
                raise CubepacsError("the series has no pixel data")
            self._raw = self.frames(0, self.num_frames)
        return self._raw

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of ``raw_image``."""
        return tuple(self.raw_image.shape)

    @property
    def dtype(self) -> np.dtype[Any]:
        """dtype of ``raw_image``."""
        return self.raw_image.dtype

    def get_fdata(self, dtype: str = "float32") -> np.ndarray:
        """Rescaled values (stored × RescaleSlope + RescaleIntercept, per instance) as floats."""
        slope = np.nan_to_num(self.dicom_meta.get_array("RescaleSlope"), nan=1.0)
        icpt = np.nan_to_num(self.dicom_meta.get_array("RescaleIntercept"), nan=0.0)
        counts = np.diff(self.pixels.frame_starts)
        s, b = np.repeat(slope, counts), np.repeat(icpt, counts)
        shape = (-1,) + (1,) * (self.raw_image.ndim - 1)
        out: np.ndarray = self.raw_image.astype(dtype) * s.reshape(shape).astype(dtype)
        out += b.reshape(shape).astype(dtype)
        return out

    def instances(self) -> list[Instance]:
        """The series as split DICOM instances (re-read from the cube when the image came from one)."""
        if self._instances is None:
            from cubepacs.cube.sources import read_instance

            self._instances = [read_instance(self.pixels.instance_bytes(i), n)
                               for i, n in enumerate(self.dicom_meta.names)]
        return self._instances

    @classmethod
    def from_cube(cls, reader: CubeReader) -> DicomCubeImage:
        """An image whose frames are read from a cube on demand."""
        return cls(reader.meta, reader)
