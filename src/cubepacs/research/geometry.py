"""Where the voxels of a cube are, from its metadata: slice order, spacing, origin, direction cosines, rescale, and
the temporal position of each frame when a series repeats its slice positions (4D: fMRI, perfusion, dynamic).

Frames are put in order along the slice normal (the cross product of the row and column cosines); frames at one
position (within 0.001 mm) are put in temporal order: Temporal Position Identifier, then Trigger Time, Acquisition
Time, Instance Number and the frame number. Where single-frame instances repeat their positions, the k-th frame at
each position has temporal position k (``Geometry.phase``): the dataset makes one volume of each. Frames of one
multi-frame instance are never split from each other, and frames without a position keep phase 0.

Example
-------
>>> import cubepacs, io
>>> from cubepacs.cube.reader import CubeReader
>>> buf = io.BytesIO()
>>> cubepacs.save(cubepacs.load_from_dicom_folder("../shared/data/series/mr_ge_mr750_epi_fmri_150img"), buf)
>>> geo = geometry(CubeReader(buf.getvalue()))
>>> int(geo.phase.max()) + 1, len(geo.order), [round(s, 2) for s in geo.spacing]   # 10 volumes of 15 slices
(10, 150, [5.0, 3.75, 3.75])
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from cubepacs.cube.reader import CubeReader

__all__ = ["Geometry", "geometry"]
SAME_POSITION = 1e-3  # mm: frames closer than this along the normal are at one position


@dataclass(frozen=True)
class Geometry:
    """Where the voxels of one cube are. Arrays with one entry per frame are in ``order`` (position) order."""

    order: np.ndarray  # series frame numbers in position order (temporal order among frames at one position)
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    orientation: tuple[float, ...]
    slope: np.ndarray  # per frame
    intercept: np.ndarray
    steps: tuple[float, float] = (0.0, 0.0)  # smallest and largest slice step (mm)
    positions: np.ndarray | None = None  # (frames, 3) Image Position (Patient) of each frame, NaN where unknown
    phase: np.ndarray | None = None  # temporal position of each frame (0 … m-1), 0 where positions do not repeat


def _floats(value: Any, n: int, default: float) -> list[float]:
    try:
        values = [float(v) for v in (value if isinstance(value, list | tuple) else [value])]
    except (TypeError, ValueError):
        values = []
    return values[:n] if len(values) >= n else [default] * n


def _number(values: list[Any], i: int) -> float:
    """Instance ``i``'s value of a numeric (or HHMMSS time) attribute as a float; 0 where absent or unreadable."""
    value = values[i] if i < len(values) else None
    if isinstance(value, list | tuple):
        value = value[0] if value else None
    try:
        number = float(value) if value is not None and value != "" else 0.0
    except (TypeError, ValueError):
        return 0.0
    return number if math.isfinite(number) else 0.0


def _temporal_keys(reader: CubeReader) -> list[tuple[float, ...]]:
    """Per instance: the key putting frames at one position in temporal order."""
    meta = reader.meta
    columns = [
        meta.get_values(name)
        for name in ("TemporalPositionIdentifier", "TriggerTime", "AcquisitionTime", "InstanceNumber")
    ]
    return [tuple(_number(values, i) for values in columns) for i in range(len(meta))]


def geometry(reader: CubeReader) -> Geometry:
    """The geometry of a cube from its metadata (typed columns, shared values)."""
    meta = reader.meta
    ipp = meta.get_array("ImagePositionPatient")
    iop_values = meta.get_values("ImageOrientationPatient")
    iop = _floats(iop_values[0] if iop_values else None, 6, 0.0)
    if not any(iop):
        iop = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    normal = np.cross(iop[:3], iop[3:])
    keys = _temporal_keys(reader)
    frames = []  # (position rounded, temporal key, series frame number, position, instance, position known)
    for i in range(len(meta)):
        known = i < len(ipp) and not np.isnan(ipp[i]).any()
        pos = float(np.dot(ipp[i], normal)) if known else float(i)
        for f in range(int(reader.frame_starts[i]), int(reader.frame_starts[i + 1])):
            frames.append((round(pos / SAME_POSITION), keys[i], f, pos, i, known))
    frames.sort()
    order = np.array([f[2] for f in frames], np.int64)
    inst_of_frame = np.array([f[4] for f in frames], np.int64)
    positions = np.array([f[3] for f in frames])
    steps = np.diff(positions)
    steps = steps[steps > 1e-6]
    thickness_values = meta.get_values("SliceThickness")
    thickness = _floats(thickness_values[0] if thickness_values else None, 1, 1.0)[0]
    dz = float(np.median(steps)) if len(steps) else thickness
    ps_values = meta.get_values("PixelSpacing")
    row, col = _floats(ps_values[0] if ps_values else None, 2, 1.0)
    ipp_of_frame = np.array([ipp[i] if i < len(ipp) else [np.nan] * 3 for i in inst_of_frame], float).reshape(-1, 3)
    first = ipp_of_frame[0] if frames and not np.isnan(ipp_of_frame[0]).any() else np.zeros(3)
    slopes = meta.get_values("RescaleSlope")
    intercepts = meta.get_values("RescaleIntercept")
    per_instance_slope = np.array(
        [_floats(slopes[i] if i < len(slopes) else None, 1, 1.0)[0] for i in range(len(meta))]
    )
    per_instance_intercept = np.array(
        [_floats(intercepts[i] if i < len(intercepts) else None, 1, 0.0)[0] for i in range(len(meta))]
    )
    phase = np.zeros(len(frames), np.int64)
    seen: dict[int, int] = {}  # rounded position → frames of single-frame instances met there
    for n, (at, _, _, _, i, known) in enumerate(frames):
        if known and reader.frame_starts[i + 1] - reader.frame_starts[i] == 1:
            phase[n] = seen.get(at, 0)
            seen[at] = phase[n] + 1
    return Geometry(
        order,
        (dz, row, col),
        (float(first[0]), float(first[1]), float(first[2])),
        tuple(iop),
        per_instance_slope[inst_of_frame] if len(meta) else np.zeros(0),
        per_instance_intercept[inst_of_frame] if len(meta) else np.zeros(0),
        (float(steps.min()), float(steps.max())) if len(steps) else (dz, dz),
        ipp_of_frame,
        phase,
    )


_LETTERS = {"L": (0, 1.0), "R": (0, -1.0), "P": (1, 1.0), "A": (1, -1.0), "S": (2, 1.0), "I": (2, -1.0)}


def check_code(code: str) -> str:
    """An orientation code checked: three letters, one of each pair L/R, P/A, S/I (``"LPS"``, ``"RAS"``…)."""
    code = str(code).upper()
    if len(code) != 3 or any(c not in _LETTERS for c in code) or len({_LETTERS[c][0] for c in code}) != 3:
        raise ValueError(f"orientation {code!r}: three letters, one of each pair L/R, P/A, S/I (e.g. LPS or RAS)")
    return code


def directions(geo: Geometry) -> np.ndarray:
    """Unit vectors (patient coordinates, LPS) along which the slice, row and column index increase."""
    row, col = np.array(geo.orientation[:3], float), np.array(geo.orientation[3:], float)
    return np.array([np.cross(row, col), col, row])


def reorient(
    image: np.ndarray, spacing: tuple[float, float, float], origin: np.ndarray, axes: np.ndarray, code: str
) -> tuple[np.ndarray, tuple[float, float, float], np.ndarray, np.ndarray]:
    """A volume (slices × rows × columns [× samples]) with its axes permuted and flipped so that the column, row
    and slice index increase toward the three letters of ``code`` (nibabel's and MONAI's order: x, y, z), each
    array axis taken along the patient axis nearest to it (no interpolation: an oblique volume stays oblique).
    Returns the volume (a view), its spacing, origin (first voxel) and axis directions (as :func:`directions`).

    >>> volume = np.arange(8).reshape(2, 2, 2)   # axial: slices toward S, rows toward P, columns toward L
    >>> axes = np.array([[0, 0, 1.0], [0, 1.0, 0], [1.0, 0, 0]])
    >>> out, spacing, origin, new = reorient(volume, (3.0, 1.0, 1.0), np.zeros(3), axes, "RAS")
    >>> out[0].tolist(), spacing, origin.tolist()   # rows and columns reversed: the first voxel moves
    ([[3, 2], [1, 0]], (3.0, 1.0, 1.0), [1.0, 1.0, 0.0])
    """
    code = check_code(code)
    wanted = [_LETTERS[c] for c in reversed(code)]  # numpy axis 0 (slices) takes the last letter
    nearest = [int(np.argmax(np.abs(a))) for a in axes]
    if len(set(nearest)) != 3:
        raise ValueError(
            f"orientation {code}: two axes of the volume are nearest to one patient axis (oblique "
            "at 45°): cannot be permuted"
        )
    perm = [nearest.index(patient) for patient, _ in wanted]
    flips = [bool(np.sign(axes[perm[k]][patient]) != sign) for k, (patient, sign) in enumerate(wanted)]
    start = origin + sum((image.shape[perm[k]] - 1) * spacing[perm[k]] * axes[perm[k]] for k in range(3) if flips[k])
    out = np.transpose(image, perm + list(range(3, image.ndim)))
    out = np.flip(out, axis=tuple(k for k in range(3) if flips[k])) if any(flips) else out
    new_axes = np.array([axes[perm[k]] * (-1.0 if flips[k] else 1.0) for k in range(3)])
    return out, (spacing[perm[0]], spacing[perm[1]], spacing[perm[2]]), np.asarray(start, float), new_axes


def _axis_grid(code: str) -> np.ndarray:
    """Unit vectors (LPS) toward which the slice, row and column index of a volume in ``code`` increase."""
    out = np.zeros((3, 3))
    for k, letter in enumerate(reversed(code)):  # slices take the last letter, columns the first
        patient, sign = _LETTERS[letter]
        out[k, patient] = sign
    return out


def resample_to_axes(
    image: np.ndarray,
    spacing: tuple[float, float, float],
    origin: np.ndarray,
    axes: np.ndarray,
    code: str,
    fill: float = 0.0,
    slab: int = 8,
) -> tuple[np.ndarray, tuple[float, float, float], np.ndarray, np.ndarray]:
    """A volume (slices × rows × columns [× samples], float32) resampled onto a grid along the patient axes of
    ``code`` (trilinear), for an oblique series: first permuted and flipped as :func:`reorient` does, then each
    axis set exactly toward its letter, with the spacing of the volume axis nearest to it, over the box holding
    the whole volume; points outside the volume get ``fill``. A volume already along those axes (within 1e-6) is
    only permuted and flipped (no interpolation). Returns the volume, its spacing, origin (first voxel) and axis
    directions (as :func:`directions`). Works slab by slab (``slab`` output slices at a time) to bound memory.

    >>> volume = np.arange(27, dtype=np.float32).reshape(3, 3, 3)   # axial, rotated 90° in plane: exact
    >>> axes = np.array([[0, 0, 1.0], [-1.0, 0, 0], [0, 1.0, 0]])
    >>> out, spacing, origin, new = resample_to_axes(volume, (1.0, 1.0, 1.0), np.zeros(3), axes, "LPS")
    >>> same = reorient(volume, (1.0, 1.0, 1.0), np.zeros(3), axes, "LPS")[0]
    >>> out.shape, spacing, origin.tolist(), bool((out == same).all())
    ((3, 3, 3), (1.0, 1.0, 1.0), [-2.0, 0.0, 0.0], True)
    >>> tilted = np.array([[0, 0.6, 0.8], [0, 0.8, -0.6], [1.0, 0, 0]])   # rows and slices oblique (36.9°)
    >>> out, *_ = resample_to_axes(volume, (1.0, 1.0, 1.0), np.zeros(3), tilted, "LPS", fill=-1.0)
    >>> out.shape, float(out.min())   # the box around the tilted volume; corners outside it get fill
    ((4, 4, 3), -1.0)
    """
    import torch

    image, spacing, origin, axes = reorient(image, spacing, origin, axes, code)
    target = _axis_grid(check_code(code))
    if np.allclose(axes, target, atol=1e-6):
        return image, spacing, origin, target
    shape = image.shape[:3]
    step = np.array(spacing, float)
    corners = np.array([[a, b, c] for a in (0, shape[0] - 1) for b in (0, shape[1] - 1) for c in (0, shape[2] - 1)])
    points = origin + (corners * step) @ axes  # the volume's 8 corners, patient coordinates
    low, high = (points @ target.T).min(axis=0), (points @ target.T).max(axis=0)
    size = [int(np.ceil((h - lo) / s - 1e-6)) + 1 for lo, h, s in zip(low, high, step, strict=True)]
    start = low @ target  # the new first voxel
    # continuous input index of output voxel (k, j, i): ((start + Σ index·step·target) - origin)·axes / step
    to_input = (target * step[:, None]) @ axes.T / step  # row: output axis; column: input axis
    base = (start - origin) @ axes.T / step
    data = torch.from_numpy(np.ascontiguousarray(image, np.float32))
    data = data.permute(3, 0, 1, 2)[None] if image.ndim == 4 else data[None, None]  # samples → channels
    out = np.empty((*size, *image.shape[3:]), np.float32)
    grids = [np.arange(n, dtype=np.float64) for n in size]
    for z0 in range(0, size[0], slab):
        k = grids[0][z0 : z0 + slab]
        index = np.stack(np.meshgrid(k, grids[1], grids[2], indexing="ij"), axis=-1) @ to_input + base
        inside = np.all((index > -1e-3) & (index < np.array(shape) - 1 + 1e-3), axis=-1)
        scaled = np.where(np.array(shape) > 1, 2 * index / np.maximum(np.array(shape) - 1, 1) - 1, 0.0)
        grid = torch.from_numpy(scaled[..., ::-1].astype(np.float32).copy())[None]  # x, y, z: columns first
        sampled = torch.nn.functional.grid_sample(
            data, grid, mode="bilinear", padding_mode="border", align_corners=True
        )[0]
        values = (sampled.permute(1, 2, 3, 0) if image.ndim == 4 else sampled[0]).numpy()
        mask = inside[..., None] if image.ndim == 4 else inside
        out[z0 : z0 + len(k)] = np.where(mask, values, np.float32(fill))
    return out, (float(step[0]), float(step[1]), float(step[2])), start, target
