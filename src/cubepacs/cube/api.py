"""The cube's public functions, named as in dicube so that dicube scripts run with only the import changed.

Example
-------
>>> import cubepacs, tempfile, os
>>> from cubepacs.dicom import CommonTags
>>> image = cubepacs.load_from_dicom_folder("../shared/data/series/ct_philips_ingenuity_tilt_54sl")
>>> path = os.path.join(tempfile.mkdtemp(), "ct.dcbs")
>>> cubepacs.save(image, path)
>>> meta = cubepacs.load_meta(path)
>>> meta.get_shared_value(CommonTags.Modality), meta.get_values(CommonTags.InstanceNumber)[:3]
('CT', [1, 2, 3])
>>> out = tempfile.mkdtemp()
>>> paths = cubepacs.save_to_dicom_folder(cubepacs.load(path), out)
>>> sorted(os.listdir(out)) == sorted(f for f in os.listdir("../shared/data/series/ct_philips_ingenuity_tilt_54sl")
...                                    if f != "DIRFILE")
True
"""

from __future__ import annotations

import enum
import os
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import IO

import numpy as np

from cubepacs._atomic import atomic_write
from cubepacs.cube.codecs import DEFAULT_CODEC
from cubepacs.cube.image import DicomCubeImage, InstancePixels
from cubepacs.cube.meta import DicomMeta
from cubepacs.cube.pool import meta_from_instances
from cubepacs.cube.reader import CubeReader, CubeSource, load_meta_only
from cubepacs.cube.sources import Instance, Sources, read_instances
from cubepacs.cube.writer import write_cube
from cubepacs.errors import CubepacsError, SeriesError


class SortMethod(enum.Enum):
    """How instances are ordered in the cube (the original file names are kept whatever the order)."""

    INSTANCE_NUMBER_ASC = "instance_number"
    POSITION = "position"
    NONE = "none"


def _sort(instances: list[Instance], method: SortMethod) -> list[Instance]:
    if method == SortMethod.NONE:
        return instances
    if method == SortMethod.POSITION:
        def pos(inst: Instance) -> float:
            ipp, iop = inst.attrs.get("ImagePositionPatient"), inst.attrs.get("ImageOrientationPatient")
            try:
                o = np.asarray(iop, dtype=np.float64)
                return float(np.dot(np.cross(o[:3], o[3:6]), np.asarray(ipp, dtype=np.float64)))
            except (TypeError, ValueError, IndexError):
                return float("inf")
        return sorted(instances, key=lambda i: (pos(i), i.name))

    def number(inst: Instance) -> tuple[int, float, str]:
        try:
            return (0, float(inst.attrs["InstanceNumber"]), inst.name)
        except (KeyError, TypeError, ValueError):
            return (1, 0.0, inst.name)
    return sorted(instances, key=number)


def group_series(instances: list[Instance]) -> dict[str, list[Instance]]:
    """Split instances by SeriesInstanceUID (instances without one are grouped under ``""``)."""
    groups: dict[str, list[Instance]] = defaultdict(list)
    for inst in instances:
        groups[str(inst.attrs.get("SeriesInstanceUID", "") or "")].append(inst)
    return dict(groups)


def _image(instances: list[Instance], sort_method: SortMethod) -> DicomCubeImage:
    ordered = _sort(instances, sort_method)
    return DicomCubeImage(meta_from_instances(ordered), InstancePixels(ordered), ordered)


def load_series(src: Sources, sort_method: SortMethod = SortMethod.INSTANCE_NUMBER_ASC,
                errors: str = "skip-non-dicom") -> dict[str, DicomCubeImage]:
    """One image per SeriesInstanceUID found in ``src`` (folder, files, file objects or bytes).

    Example
    -------
    >>> import cubepacs
    >>> list(cubepacs.load_series("../shared/data/series/mr_ge_signa_3dt1_100sl").values())[0].num_frames
    100
    """
    return {uid: _image(insts, sort_method) for uid, insts in group_series(read_instances(src, errors)).items()}


def load_from_dicom_folder(src: Sources, sort_method: SortMethod = SortMethod.INSTANCE_NUMBER_ASC,
                           series_uid: str | None = None, errors: str = "skip-non-dicom") -> DicomCubeImage:
    """Read one series from a folder (recursively), a list of files, file objects or bytes.

    Files that are not DICOM at all (a DIRFILE, a README) are skipped; broken DICOM raises
    :class:`~cubepacs.errors.DicomReadError` naming the file (``errors="skip"`` skips those too).
    Several series in the input raise :class:`~cubepacs.errors.SeriesError` unless ``series_uid`` picks one
    (or use :func:`load_series`): they are never stacked silently.
    """
    groups = group_series(read_instances(src, errors))
    if series_uid is not None:
        if series_uid not in groups:
            raise SeriesError(f"series {series_uid} not found; the input holds: {', '.join(groups)}")
        return _image(groups[series_uid], sort_method)
    if len(groups) > 1:
        listing = "; ".join(f"{uid or '<no SeriesInstanceUID>'} ({len(v)} files)" for uid, v in groups.items())
        raise SeriesError(f"the input holds {len(groups)} series ({listing}); pick one with series_uid=… or use "
                          "cubepacs.load_series() / `cubepacs convert --split` to get one cube each")
    return _image(next(iter(groups.values())), sort_method)


_FILE_TYPES = {"s": DEFAULT_CODEC, "a": "jpegls"}


def save(image: DicomCubeImage, file_path: str | os.PathLike[str] | IO[bytes], file_type: str = "s",
         codec: str | None = None, threads: int | None = None, verify: bool = True,
         progress: Callable[[int], None] | None = None) -> None:
    """Write ``image`` to a ``.dcbs`` file (atomically) or a binary file object.

    ``codec`` picks the frame codec (``htj2k`` default, ``jpegls`` compact, ``jxl``, ``blosc2`` fastest,
    ``zstd``); dicube's ``file_type`` ``"s"``/``"a"`` map to ``htj2k``/``jpegls``. Every frame is decoded
    again and compared before the file is written unless ``verify=False``.
    """
    if codec is None:
        if file_type not in _FILE_TYPES:
            raise CubepacsError(f"file_type {file_type!r} is not supported: 's' (speed) or 'a' (archive); cubes "
                                "are lossless only")
        codec = _FILE_TYPES[file_type]
    from_dicom = image._instances is not None
    write_cube(image.instances(), file_path, codec=codec, threads=threads, verify=verify, progress=progress,
               meta=image.dicom_meta if from_dicom else None)


def load(file_path: CubeSource) -> DicomCubeImage:
    """Open a cube (path, bytes or binary file object); frames are decoded when asked for."""
    return DicomCubeImage.from_cube(CubeReader(file_path))


def load_meta(file_path: CubeSource) -> DicomMeta:
    """Read only a cube's metadata block (milliseconds, whatever the pixel data size)."""
    return load_meta_only(file_path)


def _safe_target(out_dir: Path, name: str) -> Path:
    target = (out_dir / name).resolve()
    if out_dir.resolve() not in target.parents:
        raise CubepacsError(f"refusing to write {name!r} outside {out_dir}")
    return target


def save_to_dicom_folder(image: DicomCubeImage, folder_path: str | os.PathLike[str]) -> list[Path]:
    """Write every instance back as a DICOM file under its original name; return the paths written.

    Files are written atomically (temp file + rename); the bytes are those of the original files.
    """
    out_dir = Path(folder_path)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for i, name in enumerate(image.dicom_meta.names):
        target = _safe_target(out_dir, name)
        atomic_write(target, [image.pixels.instance_bytes(i)])
        written.append(target)
    return written


def verify(file_path: CubeSource) -> list[str]:
    """Check a cube completely (every checksum, every frame decoded); return the problems ([] when sound)."""
    return CubeReader(file_path).verify()
