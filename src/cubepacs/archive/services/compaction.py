"""Compaction: a series' instances into one cube that is published only once it reads back.

Every instance's header, the whole pixel value of encapsulated/opaque ones and the first native frame of each are
decoded and checked against the writer's checksum. An instance the cube cannot hold — one the writer takes but the
reader refuses (Bits Allocated 24, say), or that cannot be read at all — is left out and returned with the reason
(the web worker logs and counts it: ``cubepacs_instances_not_compacted``); it stays served from its own file, the
others from the cube, so one odd instance never poisons its series.

Example
-------
>>> read_back(b"not a cube").startswith("InvalidCubeError")
True
"""

from __future__ import annotations

from typing import Any

CHECK_FRAMES = 1  # native frames of each instance decoded when a new cube is read back (all: the whole series)


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc)[:200]}"


def read_back(cube: bytes, frames: int = CHECK_FRAMES, max_value_bytes: int = 1 << 30) -> str | None:
    """Why the cube in ``cube`` cannot be served (None when it can): opened as the web opens it (whole pixel values
    bounded by ``max_value_bytes``, the setting), its index read, each instance read back
    (:meth:`~cubepacs.cube.reader.CubeReader.check_instance` with ``frames`` native frames)."""
    from cubepacs.cube.reader import CubeReader

    try:
        reader = CubeReader(cube, max_value_bytes)
        reader.index  # noqa: B018 - loads and checks the frame index
        for i in range(len(reader.meta)):
            reader.check_instance(i, frames)
    except Exception as exc:
        return _reason(exc)
    return None


def compact(files: list[tuple[str, bytes]], codec: str, frames: int = CHECK_FRAMES,
            max_value_bytes: int = 1 << 30) -> tuple[bytes | None, list[tuple[str, str]]]:
    """A cube of the instances in ``files`` ((name, file bytes)) that one can hold, read back before it is returned
    (:func:`read_back`), and the instances left out with the reason ((name, reason)). When the whole cube does not
    read back, each instance is tried alone and those at fault are left out; None when no cube can be made.

    Example
    -------
    >>> from pathlib import Path
    >>> good = Path("../shared/data/single/ct_ge_small_signed.dcm").read_bytes()
    >>> cube, left = compact([("a.dcm", good), ("b.dcm", b"not DICOM")], "htj2k")
    >>> cube[:4], [name for name, _ in left]
    (b'DCBS', ['b.dcm'])
    """
    import io

    from cubepacs.cube.sources import read_instance
    from cubepacs.cube.writer import write_cube

    left: list[tuple[str, str]] = []
    instances = []
    for name, data in files:
        try:
            instances.append(read_instance(data, name))
        except Exception as exc:
            left.append((name, _reason(exc)))

    def build(chosen: list[Any]) -> tuple[bytes | None, str | None]:
        try:
            buf = io.BytesIO()
            write_cube(chosen, buf, codec=codec, threads=1)
        except Exception as exc:
            return None, _reason(exc)
        cube = buf.getvalue()
        problem = read_back(cube, frames, max_value_bytes)
        return (cube, None) if problem is None else (None, problem)

    if not instances:
        return None, left
    cube, problem = build(instances)
    if cube is not None:
        return cube, left
    keep = []
    for inst in instances:  # the slow path, only for a series whose cube failed: who is at fault?
        alone_cube, alone = build([inst])
        if alone_cube is None:
            left.append((inst.name, alone or "cannot be compacted"))
        else:
            keep.append(inst)
    if keep and len(keep) < len(instances):
        cube, problem = build(keep)
    if cube is None:
        left.extend((inst.name, f"the series' cube does not read back: {problem}") for inst in keep)
    return cube, left
