"""A PyTorch ``Dataset`` over a folder or an object-storage prefix of cubes: volumes, 2D slices or 3D patches.

Optional: ``pip install 'cubepacs[torch]'``. Each item is a dict (an :class:`Item`): ``image`` (a float32 tensor in
Hounsfield or other rescaled units, or the stored values with ``rescale=False``; volumes and patches are depth ×
rows × columns, slices rows × columns), ``spacing`` (slice, row, column spacing in mm), ``origin`` (the position of
the volume's first voxel, patient coordinates), ``orientation`` (the six direction cosines), ``index`` (slice, or
patch corner) and ``source``. Slices are in position order along the slice normal (not file or instance number
order).

What cannot form a volume is handled, not crashed on: a cube without frames is skipped; a cube whose frames have
several shapes (a localizer beside the axial slices) is split into one volume per shape, and a 4D series
(single-frame instances repeating their positions: fMRI, perfusion) into one volume per temporal position
(:mod:`cubepacs.research.geometry`); each with a warning, and counted in ``skipped`` and ``split``. A volume smaller
than ``patch_size`` is padded (``pad="edge"`` or ``"constant"``, with ``pad_value``) or refused at construction
(``pad=None``). A series whose slice steps differ by more than 1 % (or 0.01 mm) warns with their range: its
``spacing`` is the median step. ``spacing=(dz, dy, dx)`` resamples volumes and patches to that spacing (trilinear);
``orientation="RAS"`` (or ``"LPS"``, any code with one letter of each pair) first permutes and flips their axes
toward those patient directions (no interpolation: an oblique volume stays oblique); with ``oblique="resample"``,
an oblique volume is then resampled (trilinear) onto a grid along those patient axes, voxels outside it set to
``pad_value``.

``cache_volumes=n`` keeps the last ``n`` decoded volumes of each process (stored values, whole): slices and patches
of a volume then cost one decode (memory: n × the largest volume, per DataLoader worker; kept between epochs with
``persistent_workers=True``). In a worker, each image is decoded into shared memory with its metadata after it,
and crosses to the main process as one tensor without a copy; the worker reuses that shared memory once the main
process holds no tensor of it (``reuse_buffers=False``: a new segment each time; :mod:`cubepacs.research.batching`
says when not to rely on it). A batch of slices of one volume (a DataLoader's
batched fetch, ``__getitems__``) is decoded in one go into one array, and is the batch: no collate copy.

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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cubepacs.cube.reader import CubeReader
from cubepacs.research.geometry import Geometry, check_code, directions, geometry, reorient, resample_to_axes

try:
    import torch
    from torch.utils.data import Dataset, get_worker_info
except ImportError as exc:  # pragma: no cover - the extra names what to install
    raise ImportError("cubepacs.research.dataset needs PyTorch: pip install 'cubepacs[torch]'") from exc

from cubepacs.research.batching import _SENT_ALONE, TAIL, Item, _Batch, carried, collate_list, shared

__all__ = ["CubeDataset", "Geometry", "Item", "collate_list", "geometry"]


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

    def __init__(
        self,
        source: str | os.PathLike[str] | list[str],
        mode: str = "slice",
        patch_size: tuple[int, int, int] = (16, 64, 64),
        patches_per_volume: int = 8,
        rescale: bool = True,
        seed: int = 0,
        storage_options: dict[str, str] | None = None,
        pad: str | None = "edge",
        pad_value: float = 0.0,
        spacing: tuple[float, float, float] | None = None,
        cache_volumes: int = 0,
        orientation: str | None = None,
        oblique: str = "permute",
        reuse_buffers: bool = True,
    ) -> None:
        if mode not in ("volume", "slice", "patch"):
            raise ValueError(f"mode must be volume, slice or patch, not {mode!r}")
        if pad not in (None, "edge", "constant"):
            raise ValueError(f"pad must be None, 'edge' or 'constant', not {pad!r}")
        self.mode, self.patch_size, self.per_volume = mode, patch_size, patches_per_volume
        self.rescale, self.seed, self.pad, self.pad_value, self.spacing = rescale, seed, pad, pad_value, spacing
        self.cache_volumes, self.reuse_buffers = cache_volumes, reuse_buffers
        self.orientation = check_code(orientation) if orientation is not None else None
        if oblique not in ("permute", "resample"):
            raise ValueError(f"oblique must be 'permute' or 'resample', not {oblique!r}")
        self.oblique = oblique
        if self.orientation and mode == "slice":
            raise ValueError("orientation applies to volumes and patches (mode='volume' or 'patch'), not slices")
        self._cache: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()  # (pid, volume) → stored values
        self._buffers: dict[tuple[tuple[int, ...], str], np.ndarray] = {}  # one decoded frame, reused
        self._flat: torch.Tensor | None = None  # the last image made in shared memory (in a worker)
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
        self._geometries: dict[int, Geometry] = {}  # computed once, here: workers get them with the dataset
        self.skipped: dict[str, str] = {}  # cube → why it gives no item
        self.split: dict[str, int] = {}  # cube → volumes it was split into (frame shapes, temporal positions)
        self.volumes: list[tuple[int, np.ndarray]] = []  # (cube, positions in its slice order) of one frame shape
        self._shapes: list[tuple[int, ...]] = []  # each volume's frame shape
        for k in range(len(self.paths)):
            self._plan(k)
        if not self.volumes:
            raise ValueError(f"no cube of {source} forms a volume: {self.skipped}")
        warm: dict[str, int] = {}  # a volume per codec: one frame decoded here imports its decoder (blosc2: ≈ 0.25 s
        for v, (k, _) in enumerate(self.volumes):  # of CPU), which workers forked from this process then have
            warm.setdefault(self._open(k)[0].codec, v)
        for v in warm.values():
            k, volume = self.volumes[v]
            reader, geo = self._open(k)
            self._frame(reader, int(geo.order[volume[0]]))
        self._readers.clear()  # opened again, per process, when items are read
        self._buffers.clear()
        self.counts = [len(v) for _, v in self.volumes]
        self._starts = np.concatenate([[0], np.cumsum(self.counts)]).astype(np.int64)

    def __getstate__(self) -> dict[str, Any]:
        """What a worker started with ``spawn`` receives: no open reader, cache or buffer."""
        return {**self.__dict__, "_readers": {}, "_cache": OrderedDict(), "_buffers": {}, "_flat": None}

    def _plan(self, k: int) -> None:
        reader, geo = self._open(k)
        name = self.paths[k]
        if len(geo.order) == 0:
            self.skipped[name] = "no frame"
            warnings.warn(f"{name}: no frame, skipped", stacklevel=3)
            return
        shapes = _frame_shapes(reader)
        phase = geo.phase if geo.phase is not None else np.zeros(len(geo.order), np.int64)
        groups: dict[tuple[tuple[int, ...], int], list[int]] = {}
        for n, frame in enumerate(geo.order):
            shape = shapes[int(frame)]
            if len(shape) >= 2 and all(shape):  # a frame without pixels (0 × 0, no pixel description) is no image
                groups.setdefault((shape, int(phase[n])), []).append(n)
        if not groups:
            self.skipped[name] = "no frame with pixels"
            warnings.warn(f"{name}: no frame with pixels, skipped", stacklevel=3)
            return
        kinds = {shape for shape, _ in groups}
        times = 1 + max(p for _, p in groups)
        if len(groups) > 1:
            self.split[name] = len(groups)
        if len(kinds) > 1:
            warnings.warn(
                f"{name}: frames of {len(kinds)} shapes ({', '.join(map(str, kinds))}): one volume per shape",
                stacklevel=3,
            )
        if times > 1:
            depths = sorted({len(v) for v in groups.values()})
            warnings.warn(
                f"{name}: slice positions repeated ({times} temporal positions, 4D): one volume per "
                f"temporal position, of {'-'.join(map(str, depths))} slices",
                stacklevel=3,
            )
        low, high = geo.steps
        if high - low > max(0.01, 0.01 * high):
            warnings.warn(
                f"{name}: slice steps from {low:.2f} to {high:.2f} mm (not uniform): spacing "
                f"{geo.spacing[0]:.2f} mm is their median",
                stacklevel=3,
            )
        for (shape, _), numbers in sorted(groups.items(), key=lambda g: (g[0][1], g[1][0])):
            volume = np.array(numbers, np.int64)
            if self.mode == "patch" and self.pad is None:
                size = (len(volume), *shape[:2])
                if any(s < p for s, p in zip(size, self.patch_size, strict=True)):
                    raise ValueError(
                        f"{name}: a volume of {size} is smaller than the patch {self.patch_size} "
                        "(pad='edge' or 'constant' pads it)"
                    )
            self.volumes.append((k, volume))
            self._shapes.append(shape)

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
            geo = self._geometries.get(k)
            if geo is None:
                geo = self._geometries[k] = geometry(reader)
            found = self._readers[key] = (reader, geo)
        return found

    def __len__(self) -> int:
        if self.mode == "volume":
            return len(self.volumes)
        if self.mode == "patch":
            return len(self.volumes) * self.per_volume
        return int(self._starts[-1])

    def volume_of(self, idx: int) -> int:
        """The volume item ``idx`` comes from (``iter_items`` asks workers for runs of one volume)."""
        if self.mode == "slice":
            return int(np.searchsorted(self._starts, idx, side="right")) - 1
        return idx // self.per_volume if self.mode == "patch" else idx

    def _frame(self, reader: CubeReader, number: int) -> np.ndarray:
        """Series frame ``number`` as stored values, decoded into a buffer reused for the next frame."""
        i = reader.locate(number)[0]
        desc = reader.desc(i)
        if desc is None or desc.mode != "native":
            return reader.frame(number)
        key = (desc.frame_shape, desc.native_dtype.str)
        buffer = self._buffers.get(key)
        if buffer is None:
            buffer = self._buffers[key] = np.empty(desc.frame_shape, desc.native_dtype)
        return reader.frame(number, buffer)

    def _stored(self, v: int) -> np.ndarray:
        """The whole volume ``v`` as stored values (its dtype, not float), kept in this process's cache."""
        key = (os.getpid(), v)  # per process: each DataLoader worker keeps its own
        whole = self._cache.get(key)
        if whole is not None:
            self._cache.move_to_end(key)
            return whole
        k, volume = self.volumes[v]
        reader, geo = self._open(k)
        first = self._frame(reader, int(geo.order[volume[0]]))
        whole = np.empty((len(volume), *first.shape), first.dtype)
        whole[0] = first
        for j in range(1, len(volume)):
            whole[j] = self._frame(reader, int(geo.order[volume[j]]))
        self._cache[key] = whole
        while len(self._cache) > self.cache_volumes:
            self._cache.popitem(last=False)
        return whole

    def _decode(
        self, v: int, numbers: np.ndarray, window: tuple[slice, slice] | None = None, out: np.ndarray | None = None
    ) -> np.ndarray:
        """Frames ``numbers`` of volume ``v`` (cut to ``window``) as float32, rescaled: each frame decoded once
        and converted straight into the output (``out`` if given), a patch's voxels only."""
        k, volume = self.volumes[v]
        reader, geo = self._open(k)
        positions = volume[numbers]
        crop = window or (slice(None), slice(None))
        whole = self._stored(v) if self.cache_volumes > 0 else None
        for j, n in enumerate(positions):
            frame = (whole[numbers[j]] if whole is not None else self._frame(reader, int(geo.order[n])))[crop]
            if out is None:
                shape = (len(positions), *frame.shape)
                if _SENT_ALONE[0] and get_worker_info() is not None:
                    self._flat = shared(shape, TAIL, self.reuse_buffers)
                    out = self._flat.numpy()[:-TAIL].reshape(shape)
                else:
                    out = np.empty(shape, np.float32)
            if self.rescale and geo.slope[n] == 1 and frame.dtype.kind in "iu" and frame.dtype.itemsize <= 2:
                np.add(frame, np.float32(geo.intercept[n]), out=out[j], casting="unsafe")  # one pass, same values
            elif self.rescale:
                np.multiply(frame, np.float32(geo.slope[n]), out=out[j], casting="unsafe")
                np.add(out[j], np.float32(geo.intercept[n]), out=out[j])
            else:
                np.copyto(out[j], frame, casting="unsafe")
        assert out is not None
        return out

    def _resample(self, image: np.ndarray, spacing: tuple[float, float, float]) -> np.ndarray:
        assert self.spacing is not None
        size = [max(1, round(n * s / t)) for n, s, t in zip(image.shape[:3], spacing, self.spacing, strict=True)]
        tensor = torch.from_numpy(np.ascontiguousarray(image))
        tensor = tensor.permute(3, 0, 1, 2)[None] if image.ndim == 4 else tensor[None, None]  # samples → channels
        out = torch.nn.functional.interpolate(tensor, size=size, mode="trilinear", align_corners=True)[0]
        return (out.permute(1, 2, 3, 0) if image.ndim == 4 else out[0]).numpy()

    def _place(self, v: int) -> tuple[tuple[float, float, float], np.ndarray, np.ndarray]:
        """Spacing, origin (the first voxel's position) and axis directions of volume ``v`` as stored."""
        k, volume = self.volumes[v]
        _, geo = self._open(k)
        origin = geo.positions[volume[0]] if geo.positions is not None else np.zeros(3)
        return geo.spacing, np.array(geo.origin) if np.isnan(origin).any() else origin, directions(geo)

    def _whole(self, v: int) -> tuple[np.ndarray, tuple[tuple[float, float, float], np.ndarray, np.ndarray]]:
        """Volume ``v`` reoriented and resampled as asked; its spacing, origin and axis directions."""
        image = self._decode(v, np.arange(self.counts[v]))
        spacing, origin, axes = self._place(v)
        if self.orientation:
            turn = resample_to_axes if self.oblique == "resample" else reorient
            kw = {"fill": self.pad_value} if self.oblique == "resample" else {}
            image, spacing, origin, axes = turn(image, spacing, origin, axes, self.orientation, **kw)
        if self.spacing is not None:
            image, spacing = self._resample(image, spacing), self.spacing
        return image, (spacing, origin, axes)

    def _item(
        self,
        v: int,
        image: np.ndarray,
        index: Any,
        place: tuple[tuple[float, float, float], np.ndarray, np.ndarray] | None = None,
    ) -> Item:
        spacing, origin, axes = place or self._place(v)
        orientation = [*axes[2].tolist(), *axes[1].tolist()]  # along a row (columns), along a column (rows)
        values = np.array([*spacing, *origin.tolist(), *orientation, *index], np.float64)
        flat, self._flat = self._flat, None
        if (
            flat is not None
            and image.flags.c_contiguous
            and image.ctypes.data == flat.data_ptr()
            and image.size + TAIL == flat.numel()
            and bool((np.abs(values[12:]) < 1 << 24).all())
        ):
            n = image.size  # the image was made in shared memory: its metadata goes after it, one tensor to send
            flat[n:] = torch.from_numpy(values.astype(np.float32))
            layout = [
                ("image", torch.float32, image.shape, 0),
                ("spacing", torch.float32, (3,), n),
                ("origin", torch.float32, (3,), n + 3),
                ("orientation", torch.float32, (6,), n + 6),
                ("index", torch.int64, (3,), n + 12),
            ]
            return carried(flat, layout, self.reuse_buffers, source=self.paths[self.volumes[v][0]])
        meta = torch.from_numpy(values[:12].astype(np.float32))  # one array, in views
        item = Item(
            image=torch.from_numpy(np.ascontiguousarray(image)),
            spacing=meta[:3],
            origin=meta[3:6],
            orientation=meta[6:],
            index=torch.from_numpy(np.array(index, np.int64)),
            source=self.paths[self.volumes[v][0]],
        )
        item.__dict__["made"] = True
        return item

    def __getitems__(self, indices: list[int]) -> Sequence[Item]:
        """Items ``indices`` (what a DataLoader's worker fetches for one batch). Slices of one volume are decoded
        in one go into one array (in a worker, in shared memory with their metadata after it), and come as a
        sequence holding their batch, which PyTorch's default collate returns as it is (no stacking copy); each
        item is made only if asked for. Anything else: item by item. Each item equals ``self[i]``.

        >>> ds = CubeDataset([str(p) for p in sorted(Path("../shared/data").rglob("*.dcbs"))])  # doctest: +SKIP
        >>> [tuple(item["index"].tolist()) for item in ds.__getitems__([3, 4])]  # doctest: +SKIP
        [(3, 0, 0), (4, 0, 0)]
        """
        if not indices or self.mode != "slice" or not all(0 <= i < len(self) for i in indices):
            return [self[i] for i in indices]
        at = np.searchsorted(self._starts, indices, side="right") - 1
        if (at != at[0]).any():
            return [self[i] for i in indices]
        return _slices(self, int(at[0]), np.asarray(indices, np.int64) - self._starts[at[0]])

    def __getitem__(self, idx: int) -> Item:
        if not 0 <= idx < len(self):
            raise IndexError(idx)
        if self.mode == "volume":
            image, place = self._whole(idx)
            return self._item(idx, image, [0, 0, 0], place)
        if self.mode == "slice":
            v = int(np.searchsorted(self._starts, idx, side="right")) - 1
            s = idx - int(self._starts[v])
            return self._item(v, self._decode(v, np.array([s]))[0], [s, 0, 0])
        v = idx // self.per_volume
        rng = np.random.default_rng([self.seed, idx])
        if self.spacing is not None or self.orientation:  # patches of the resampled or reoriented volume
            whole, place = self._whole(v)
            corner = [
                int(rng.integers(0, max(1, n - p + 1))) for n, p in zip(whole.shape, self.patch_size, strict=True)
            ]
            patch = whole[tuple(slice(c, c + p) for c, p in zip(corner, self.patch_size, strict=True))]
            return self._item(v, self._padded(patch), corner, place)
        rows, cols = self._shapes[v][:2]
        depth = self.counts[v]
        d, h, w = (min(a, b) for a, b in zip(self.patch_size, (depth, rows, cols), strict=True))
        z, y, x = (int(rng.integers(0, lim - size + 1)) for lim, size in ((depth, d), (rows, h), (cols, w)))
        patch = self._decode(v, np.arange(z, z + d), (slice(y, y + h), slice(x, x + w)))
        return self._item(v, self._padded(patch), [z, y, x])

    def _padded(self, patch: np.ndarray) -> np.ndarray:
        missing = [(0, max(0, p - n)) for n, p in zip(patch.shape[:3], self.patch_size, strict=True)]
        missing += [(0, 0)] * (patch.ndim - 3)  # a colour patch's samples axis
        if not any(m for _, m in missing):
            return patch
        if self.pad == "edge":
            return np.pad(patch, missing, mode="edge")
        return np.pad(patch, missing, mode="constant", constant_values=self.pad_value)


def _slices(ds: CubeDataset, v: int, numbers: np.ndarray) -> _Batch:
    """Slices ``numbers`` of volume ``v``, decoded into one array; as items and as their batch."""
    b, shape = len(numbers), (len(numbers), *ds._shapes[v])  # values: each slice's spacing, origin, … index
    spacing, origin, axes = ds._place(v)
    values = np.tile([*spacing, *origin.tolist(), *axes[2].tolist(), *axes[1].tolist(), 0.0, 0, 0], (b, 1))
    values[:, 12] = numbers
    columns = [(0, 3), (3, 6), (6, 12), (12, 15)]
    keys = [
        ("spacing", torch.float32),
        ("origin", torch.float32),
        ("orientation", torch.float32),
        ("index", torch.int64),
    ]
    n, exact = int(np.prod(shape)), bool((np.abs(values[:, 12:]) < 1 << 24).all())
    flat = shared(shape, TAIL * b, ds.reuse_buffers) if get_worker_info() is not None and exact else None
    image = ds._decode(v, numbers, out=flat.numpy()[:n].reshape(shape) if flat is not None else None)
    source = ds.paths[ds.volumes[v][0]]
    if flat is not None:  # image and metadata in one tensor in shared memory: one to send, no copy
        flat[n:] = torch.from_numpy(np.concatenate([values[:, a:z].ravel() for a, z in columns]).astype(np.float32))
        layout: list[tuple[str, torch.dtype, tuple[int, ...], int]] = [("image", torch.float32, shape, 0)]
        layout += [(key, dtype, (b, z - a), n + b * a) for (key, dtype), (a, z) in zip(keys, columns, strict=True)]
        batch = carried(flat, layout, ds.reuse_buffers, source=[source] * b)
    else:
        batch = Item(
            image=torch.from_numpy(image),
            **{
                key: torch.from_numpy(np.ascontiguousarray(values[:, a:z])).to(dtype)
                for (key, dtype), (a, z) in zip(keys, columns, strict=True)
            },
            source=[source] * b,
        )
    return _Batch(batch, source)
