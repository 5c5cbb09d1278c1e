"""A PyTorch ``Dataset`` over a folder or an object-storage prefix of cubes: volumes, 2D slices or 3D patches.

Optional: ``pip install 'cubepacs[torch]'``. Each item is a dict: ``image`` (a float32 tensor in Hounsfield or
other rescaled units, or the stored values with ``rescale=False``; volumes and patches are depth × rows ×
columns, slices rows × columns), ``spacing`` (slice, row, column spacing in mm), ``origin`` (the position of the
first voxel, patient coordinates), ``orientation`` (the six direction cosines), ``source`` and ``index`` (slice,
or patch corner). Slices are in position order along the slice normal (not file or instance number order).

What cannot form a volume is handled, not crashed on: a cube without frames is skipped; a cube whose frames have
several shapes (a localizer beside the axial slices) is split into one volume per shape; each with a warning, and
counted in ``skipped`` and ``split``. A volume smaller than ``patch_size`` is padded (``pad="edge"`` or
``"constant"``, with ``pad_value``) or refused at construction (``pad=None``). A series whose slice steps differ
by more than 1 % (or 0.01 mm) warns with their range: its ``spacing`` is the median step. ``spacing=(dz, dy, dx)``
resamples volumes and patches to that spacing (trilinear, on the stored slice order; orientation is not changed).

``cache_volumes=n`` keeps the last ``n`` decoded volumes of each process (float32, whole): patches of a volume
then cost one decode, not one per patch (memory: n × the largest volume, per DataLoader worker).

Colour frames (RGB, YBR) keep a trailing samples axis: volumes and patches are depth × rows × columns × samples.
Items of different volumes have different shapes: a ``DataLoader`` with ``batch_size > 1`` then needs
``collate_fn=collate_list`` (lists, not stacked tensors), or patches (one shape), or ``spacing`` plus patches.

Readers are opened lazily in the process that reads (one set per DataLoader worker), so the dataset is safe with
``num_workers > 0``; only paths (or storage keys) are pickled.

Example
-------
>>> import tempfile, cubepacs
>>> folder = tempfile.mkdtemp()
>>> cubepacs.save(cubepacs.load_from_dicom_folder("../shared/data/series/ct_philips_ingenuity_tilt_54sl"),
...               folder + "/ct.dcbs")
>>> ds = CubeDataset(folder, mode="slice")
>>> item = ds[10]
>>> len(ds), tuple(item["image"].shape), item["spacing"].tolist()[1:]   # doctest: +SKIP
(54, (512, 512), [0.48828125, 0.48828125])
"""

from __future__ import annotations

import os
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cubepacs.cube.reader import CubeReader

try:
    import torch
    from torch.utils.data import Dataset
except ImportError as exc:  # pragma: no cover - the extra names what to install
    raise ImportError("cubepacs.research.dataset needs PyTorch: pip install 'cubepacs[torch]'") from exc


@dataclass(frozen=True)
class Geometry:
    """Where the voxels of one cube are: slice order, spacing, origin and direction cosines."""

    order: np.ndarray  # series frame numbers in position order
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    orientation: tuple[float, ...]
    slope: np.ndarray  # per frame
    intercept: np.ndarray
    steps: tuple[float, float] = (0.0, 0.0)  # smallest and largest slice step (mm)


def _floats(value: Any, n: int, default: float) -> list[float]:
    try:
        values = [float(v) for v in (value if isinstance(value, list | tuple) else [value])]
    except (TypeError, ValueError):
        values = []
    return values[:n] if len(values) >= n else [default] * n


def geometry(reader: CubeReader) -> Geometry:
    """The geometry of a cube from its metadata (typed columns, shared values)."""
    meta = reader.meta
    ipp = meta.get_array("ImagePositionPatient")
    iop_values = meta.get_values("ImageOrientationPatient")
    iop = _floats(iop_values[0] if iop_values else None, 6, 0.0)
    if not any(iop):
        iop = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    normal = np.cross(iop[:3], iop[3:])
    frames = []  # (position along the normal, series frame number, instance)
    for i in range(len(meta)):
        pos = float(np.dot(ipp[i], normal)) if i < len(ipp) and not np.isnan(ipp[i]).any() else float(i)
        for f in range(int(reader.frame_starts[i]), int(reader.frame_starts[i + 1])):
            frames.append((pos, f, i))
    frames.sort()
    order = np.array([f for _, f, _ in frames], np.int64)
    positions = np.array([p for p, _, _ in frames])
    steps = np.diff(positions)
    steps = steps[steps > 1e-6]
    thickness = _floats(meta.get_values("SliceThickness")[0] if meta.get_values("SliceThickness") else None, 1,
                        1.0)[0]
    dz = float(np.median(steps)) if len(steps) else thickness
    ps_values = meta.get_values("PixelSpacing")
    row, col = _floats(ps_values[0] if ps_values else None, 2, 1.0)
    first = frames[0][2] if frames else 0
    origin = tuple(float(v) for v in ipp[first]) if len(ipp) and not np.isnan(ipp[first]).any() else (0.0, 0.0, 0.0)
    slopes = meta.get_values("RescaleSlope")
    intercepts = meta.get_values("RescaleIntercept")
    per_instance_slope = np.array([_floats(slopes[i] if i < len(slopes) else None, 1, 1.0)[0]
                                   for i in range(len(meta))])
    per_instance_intercept = np.array([_floats(intercepts[i] if i < len(intercepts) else None, 1, 0.0)[0]
                                       for i in range(len(meta))])
    inst_of_frame = np.array([i for _, _, i in frames], np.int64)
    return Geometry(order, (dz, row, col), (origin[0], origin[1], origin[2]), tuple(iop),
                    per_instance_slope[inst_of_frame], per_instance_intercept[inst_of_frame],
                    (float(steps.min()), float(steps.max())) if len(steps) else (dz, dz))


def collate_list(batch: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """A ``collate_fn`` for items of different shapes: each key's values in a list (nothing stacked).

    >>> collate_list([{"image": 1, "source": "a"}, {"image": 2, "source": "b"}])
    {'image': [1, 2], 'source': ['a', 'b']}
    """
    return {key: [item[key] for item in batch] for key in batch[0]} if batch else {}


def _frame_shapes(reader: CubeReader) -> list[tuple[int, ...]]:
    shapes: list[tuple[int, ...]] = []
    for i in range(len(reader.frame_starts) - 1):
        desc = reader.desc(i)
        shape = desc.frame_shape if desc is not None else ()
        shapes += [shape] * int(reader.frame_starts[i + 1] - reader.frame_starts[i])
    return shapes


class CubeDataset(Dataset):  # type: ignore[type-arg]
    """Volumes (``mode="volume"``), 2D slices (``"slice"``) or random 3D patches (``"patch"``) of cubes.

    ``source``: a folder (every ``.dcbs`` below it), a list of cube paths, or a storage URL
    (``s3://bucket/prefix?endpoint=…``: every ``.dcbs`` key under it, read with ranged GETs).
    """

    def __init__(self, source: str | os.PathLike[str] | list[str], mode: str = "slice",
                 patch_size: tuple[int, int, int] = (16, 64, 64), patches_per_volume: int = 8,
                 rescale: bool = True, seed: int = 0, storage_options: dict[str, str] | None = None,
                 pad: str | None = "edge", pad_value: float = 0.0,
                 spacing: tuple[float, float, float] | None = None, cache_volumes: int = 0) -> None:
        if mode not in ("volume", "slice", "patch"):
            raise ValueError(f"mode must be volume, slice or patch, not {mode!r}")
        if pad not in (None, "edge", "constant"):
            raise ValueError(f"pad must be None, 'edge' or 'constant', not {pad!r}")
        self.mode, self.patch_size, self.per_volume = mode, patch_size, patches_per_volume
        self.rescale, self.seed, self.pad, self.pad_value, self.spacing = rescale, seed, pad, pad_value, spacing
        self.cache_volumes = cache_volumes
        self._cache: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()
        self.url: str | None = None
        self.storage_options = storage_options or {}
        if isinstance(source, list):
            self.paths = [str(p) for p in source]
        elif str(source).startswith(("s3://", "file://")):
            self.url = str(source)
            self.paths = [k for k in self._storage().keys() if k.endswith(".dcbs")]
        else:
            self.paths = sorted(str(p) for p in Path(source).rglob("*.dcbs"))
        if not self.paths:
            raise ValueError(f"no .dcbs cube found in {source}")
        self._readers: dict[tuple[int, int], tuple[CubeReader, Geometry]] = {}
        self.skipped: dict[str, str] = {}  # cube → why it gives no item
        self.split: dict[str, int] = {}  # cube → volumes it was split into
        self.volumes: list[tuple[int, np.ndarray]] = []  # (cube, positions in its slice order) of one frame shape
        for k in range(len(self.paths)):
            self._plan(k)
        self._readers.clear()  # opened again, per process, when items are read
        if not self.volumes:
            raise ValueError(f"no cube of {source} forms a volume: {self.skipped}")
        self.counts = [len(v) for _, v in self.volumes]
        self._starts = np.concatenate([[0], np.cumsum(self.counts)]).astype(np.int64)

    def _plan(self, k: int) -> None:
        reader, geo = self._open(k)
        name = self.paths[k]
        if len(geo.order) == 0:
            self.skipped[name] = "no frame"
            warnings.warn(f"{name}: no frame, skipped", stacklevel=3)
            return
        shapes = _frame_shapes(reader)
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for n, frame in enumerate(geo.order):
            shape = shapes[int(frame)]
            if len(shape) >= 2 and all(shape):  # a frame without pixels (0 × 0, no pixel description) is no image
                by_shape.setdefault(shape, []).append(n)
        if not by_shape:
            self.skipped[name] = "no frame with pixels"
            warnings.warn(f"{name}: no frame with pixels, skipped", stacklevel=3)
            return
        if len(by_shape) > 1:
            self.split[name] = len(by_shape)
            warnings.warn(f"{name}: frames of {len(by_shape)} shapes ({', '.join(map(str, by_shape))}): "
                          "one volume per shape", stacklevel=3)
        low, high = geo.steps
        if high - low > max(0.01, 0.01 * high):
            warnings.warn(f"{name}: slice steps from {low:.2f} to {high:.2f} mm (not uniform): spacing "
                          f"{geo.spacing[0]:.2f} mm is their median", stacklevel=3)
        for numbers in by_shape.values():
            volume = np.array(numbers, np.int64)
            if self.mode == "patch" and self.pad is None:
                shape = (len(volume), *shapes[int(geo.order[numbers[0]])][:2])
                if any(s < p for s, p in zip(shape, self.patch_size, strict=True)):
                    raise ValueError(f"{name}: a volume of {shape} is smaller than the patch {self.patch_size} "
                                     "(pad='edge' or 'constant' pads it)")
            self.volumes.append((k, volume))

    def _storage(self) -> Any:
        from cubepacs._registry import open_backend

        assert self.url is not None
        return open_backend("storage", self.url, **self.storage_options)

    def _open(self, k: int) -> tuple[CubeReader, Geometry]:
        key = (os.getpid(), k)  # a DataLoader worker opens its own readers
        found = self._readers.get(key)
        if found is None:
            if self.url is not None:
                from cubepacs.archive.storage.base import StorageFile

                reader = CubeReader(StorageFile(self._storage(), self.paths[k]))  # type: ignore[arg-type]
            else:
                reader = CubeReader(self.paths[k])
            found = self._readers[key] = (reader, geometry(reader))
        return found

    def __len__(self) -> int:
        if self.mode == "volume":
            return len(self.volumes)
        if self.mode == "patch":
            return len(self.volumes) * self.per_volume
        return int(self._starts[-1])

    def _frames(self, v: int, numbers: np.ndarray) -> np.ndarray:
        if self.cache_volumes > 0:
            key = (os.getpid(), v)  # per process: each DataLoader worker keeps its own
            whole = self._cache.get(key)
            if whole is None:
                whole = self._decode(v, np.arange(self.counts[v]))
                self._cache[key] = whole
                while len(self._cache) > self.cache_volumes:
                    self._cache.popitem(last=False)
            else:
                self._cache.move_to_end(key)
            return np.asarray(whole[numbers[0]:numbers[-1] + 1] if len(numbers) and
                              np.array_equal(numbers, np.arange(numbers[0], numbers[-1] + 1)) else whole[numbers])
        return self._decode(v, numbers)

    def _decode(self, v: int, numbers: np.ndarray, window: tuple[slice, slice] | None = None) -> np.ndarray:
        k, volume = self.volumes[v]
        reader, geo = self._open(k)
        positions = volume[numbers]
        crop = window or (slice(None), slice(None))  # cut before converting: a patch converts its voxels only
        frames = np.stack([reader.frame(int(geo.order[n]))[crop] for n in positions]).astype(np.float32)
        if self.rescale:
            shape = (len(positions),) + (1,) * (frames.ndim - 1)  # colour frames keep a samples axis
            frames = frames * geo.slope[positions].reshape(shape).astype(np.float32) + \
                geo.intercept[positions].reshape(shape).astype(np.float32)
        return frames

    def _resample(self, v: int, image: np.ndarray) -> np.ndarray:
        if self.spacing is None:
            return image
        _, geo = self._open(self.volumes[v][0])
        size = [max(1, round(n * s / t)) for n, s, t in zip(image.shape[:3], geo.spacing, self.spacing,
                                                             strict=True)]
        tensor = torch.from_numpy(np.ascontiguousarray(image))
        tensor = tensor.permute(3, 0, 1, 2)[None] if image.ndim == 4 else tensor[None, None]  # samples → channels
        out = torch.nn.functional.interpolate(tensor, size=size, mode="trilinear", align_corners=True)[0]
        return (out.permute(1, 2, 3, 0) if image.ndim == 4 else out[0]).numpy()

    def _item(self, v: int, image: np.ndarray, index: Any) -> dict[str, Any]:
        k = self.volumes[v][0]
        _, geo = self._open(k)
        spacing = self.spacing if self.spacing is not None and image.ndim == 3 else geo.spacing
        # a view of a cached volume is copied: a caller changing its tensor in place never changes the cache
        image = np.array(image, order="C", copy=True) if self.cache_volumes > 0 else np.ascontiguousarray(image)
        return {"image": torch.from_numpy(image), "spacing": torch.tensor(spacing),
                "origin": torch.tensor(geo.origin), "orientation": torch.tensor(geo.orientation),
                "source": self.paths[k], "index": torch.tensor(index)}

    def __getitem__(self, idx: int) -> dict[str, Any]:
        if not 0 <= idx < len(self):
            raise IndexError(idx)
        if self.mode == "volume":
            return self._item(idx, self._resample(idx, self._frames(idx, np.arange(self.counts[idx]))), [0, 0, 0])
        if self.mode == "slice":
            v = int(np.searchsorted(self._starts, idx, side="right")) - 1
            s = idx - int(self._starts[v])
            return self._item(v, self._frames(v, np.array([s]))[0], [s, 0, 0])
        v = idx // self.per_volume
        rng = np.random.default_rng([self.seed, idx])
        if self.spacing is not None:  # patches of the resampled volume
            whole = self._resample(v, self._frames(v, np.arange(self.counts[v])))
            corner = [int(rng.integers(0, max(1, n - p + 1))) for n, p in zip(whole.shape, self.patch_size,
                                                                               strict=True)]
            patch = whole[tuple(slice(c, c + p) for c, p in zip(corner, self.patch_size, strict=True))]
            return self._item(v, self._padded(patch), corner)
        k, volume = self.volumes[v]
        reader, geo = self._open(k)
        rows, cols = _frame_shapes(reader)[int(geo.order[volume[0]])][:2]
        depth = self.counts[v]
        d, h, w = (min(a, b) for a, b in zip(self.patch_size, (depth, rows, cols), strict=True))
        z, y, x = (int(rng.integers(0, lim - size + 1)) for lim, size in ((depth, d), (rows, h), (cols, w)))
        window = (slice(y, y + h), slice(x, x + w))
        if self.cache_volumes > 0:
            patch = self._frames(v, np.arange(z, z + d))[:, window[0], window[1]]
        else:
            patch = self._decode(v, np.arange(z, z + d), window)
        return self._item(v, self._padded(patch), [z, y, x])

    def _padded(self, patch: np.ndarray) -> np.ndarray:
        missing = [(0, max(0, p - n)) for n, p in zip(patch.shape[:3], self.patch_size, strict=True)]
        missing += [(0, 0)] * (patch.ndim - 3)  # a colour patch's samples axis
        if not any(m for _, m in missing):
            return patch
        if self.pad == "edge":
            return np.pad(patch, missing, mode="edge")
        return np.pad(patch, missing, mode="constant", constant_values=self.pad_value)
