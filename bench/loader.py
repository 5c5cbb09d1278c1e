"""Benchmark the PyTorch loader: slices/s and patches/s from cubes vs the same volumes read from DICOM folders with
pydicom (+ rescale), and vs MONAI's LoadImage + RandSpatialCrop; same run, interleaved, DataLoader with 0 and 2
workers, one item at a time (``batch_size=None``) and in batches.

Usage: .venv/bin/python bench/loader.py [--codec blosc2] [--slices 1000] [--patches 96] [--batch 16] [--cache 4]
                                        [--cohort] [--monai /tmp/monai-bench] [--rounds 3] [--no-settle]
                                        [--floor] [--ab] [--modes slice,patch]

``--cohort``: the four series are first exported as a de-identified cohort (``export_cohort``: DICOM files and
cubes, the cubes with ``--codec``), and both sides read the export: the cubes, and its DICOM folders. Without it,
the cubes are made from the series folders, and pydicom reads those folders.

``--floor``: after each slice row, a loader that does nothing (a new tensor of the slice's shape per item) against
pydicom: the highest ratio any loader can reach through the same DataLoader settings on this machine.

``--ab``: after each batched slice row, same-run A/B rows of our own loader against itself: the batched fetch
on vs off (``CubeDataset.__getitems__`` hidden, so that the DataLoader fetches item by item and stacks them), and,
with workers, shared-memory buffers reused vs a new segment per batch (``reuse_buffers=False``). The ratio is the
first variant's rate over the second's.

``--modes slice`` (or ``patch``): only those rows.

``--cache N``: extra rows, the dataset keeping the last N decoded volumes per process
(``CubeDataset(cache_volumes=N)``), so that the slices and patches of a volume cost one decode per process (the
DICOM side has no cache: these rows measure the feature, not the same work).

``--monai DIR``: MONAI installed apart (``pip install --no-deps --target DIR monai``; torch, numpy and pydicom come
from the project's venv) is put on the path, and patches are compared with MONAI's path on the exported cohort's
3D series (``--cohort`` is implied): ``LoadImage(reader="PydicomReader")`` + ``EnsureChannelFirst`` +
``RandSpatialCrop`` (one volume read per patch, as the transform chain does), and the same with
``RandSpatialCropSamples`` (one read per volume for its ``patches_per_volume`` patches).

Fairness: both sides give the same items — float32 in rescaled units, slices in position order, a 4D series split
into one volume per temporal position, the same random patch corners (checked: the first slice and patch of each
side are compared voxel for voxel) — and run in the same DataLoader settings. The DICOM side reads the frame
shape from the headers once, crops before converting, and converts in float32; it is what a training script
without cubes does: one pydicom read per slice (and per slice of a patch). Measurements alternate (cubes, DICOM,
DICOM, cubes…) ``--rounds`` times; the median rate of each side is printed. Items cross the worker boundary as
PyTorch sends tensors (a shared-memory segment and a file descriptor per tensor). The main process runs torch
with one intra-op thread (``--threads``), as DataLoader workers do: on 2 cores shared with other work, two
spinning threads made a batch's ``torch.stack`` 3-20x slower, for both sides alike.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "series"
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))
PATCH = (16, 64, 64)
PER_VOLUME = 12


def _number(value: Any) -> float:
    try:
        return float(value) if value not in (None, "") else 0.0
    except (TypeError, ValueError):
        return 0.0


class DicomFolders:
    """The same items from DICOM folders with pydicom (the anchor)."""

    def __init__(self, folders: list[Path], mode: str, patch: tuple[int, int, int], per_volume: int) -> None:
        import pydicom

        self.mode, self.patch, self.per_volume = mode, patch, per_volume
        self.series: list[list[Path]] = []
        self.shapes: list[tuple[int, int]] = []
        for folder in folders:
            heads = []
            for f in sorted(folder.iterdir()):
                if f.suffix == ".txt" or f.name == "DIRFILE":
                    continue
                ds = pydicom.dcmread(f, stop_before_pixels=True)
                iop = np.array(ds.ImageOrientationPatient, float)
                pos = float(np.dot(np.array(ds.ImagePositionPatient, float), np.cross(iop[:3], iop[3:])))
                when = tuple(
                    _number(ds.get(k))
                    for k in ("TemporalPositionIdentifier", "TriggerTime", "AcquisitionTime", "InstanceNumber")
                )
                heads.append((round(pos / 1e-3), when, pos, f, (int(ds.Rows), int(ds.Columns))))
            heads.sort(key=lambda h: h[:3])
            phases: dict[int, list[tuple[float, Path, tuple[int, int]]]] = {}  # a 4D series: one volume per time
            seen: dict[int, int] = {}
            for at, _, pos, f, shape in heads:
                seen[at] = seen.get(at, -1) + 1
                phases.setdefault(seen[at], []).append((pos, f, shape))
            for _, volume in sorted(phases.items()):
                self.series.append([f for _, f, _ in volume])
                self.shapes.append(volume[0][2])
        self.counts = [len(s) for s in self.series]
        self.starts = np.concatenate([[0], np.cumsum(self.counts)])

    def __len__(self) -> int:
        return len(self.series) * self.per_volume if self.mode == "patch" else int(self.starts[-1])

    @staticmethod
    def _read(path: Path, window: tuple[slice, slice] = (slice(None), slice(None))) -> np.ndarray:
        import pydicom

        ds = pydicom.dcmread(path)
        slope, intercept = float(ds.get("RescaleSlope", 1) or 1), float(ds.get("RescaleIntercept", 0) or 0)
        return ds.pixel_array[window].astype(np.float32) * np.float32(slope) + np.float32(intercept)

    def __getitem__(self, idx: int) -> Any:
        import torch

        if self.mode == "slice":
            k = int(np.searchsorted(self.starts, idx, side="right")) - 1
            return {"image": torch.from_numpy(self._read(self.series[k][idx - int(self.starts[k])]))}
        k = idx // self.per_volume
        files = self.series[k]
        rows, cols = self.shapes[k]
        d, h, w = (min(a, b) for a, b in zip(self.patch, (len(files), rows, cols), strict=True))
        rng = np.random.default_rng([0, idx])  # the dataset's seed 0: the same corners
        z, y, x = (int(rng.integers(0, lim - s + 1)) for lim, s in ((len(files), d), (rows, h), (cols, w)))
        window = (slice(y, y + h), slice(x, x + w))
        patch = np.stack([self._read(f, window) for f in files[z : z + d]])
        missing = [(0, p - n) for n, p in zip(patch.shape, self.patch, strict=True)]
        if any(m for _, m in missing):  # a volume smaller than the patch: padded with its edge, as the dataset does
            patch = np.pad(patch, missing, mode="edge")
        return {"image": torch.from_numpy(patch)}


class Floor:
    """A loader that does nothing: each item a new float32 tensor of the slice's shape (the ceiling of any loader's
    rate through the same DataLoader: what moving the items between processes costs alone)."""

    def __init__(self, anchor: DicomFolders) -> None:
        self.anchor = anchor

    def __len__(self) -> int:
        return len(self.anchor)

    def __getitem__(self, idx: int) -> Any:
        import torch

        k = int(np.searchsorted(self.anchor.starts, idx, side="right")) - 1
        return {"image": torch.empty(self.anchor.shapes[k], dtype=torch.float32)}


def batches(counts: list[int], per_volume: int, mode: str, size: int, limit: int) -> list[list[int]]:
    """``limit`` item indices in batches of ``size`` that never mix volumes (slices of one shape), cycling."""
    ranges = (
        [(0, len(counts) * per_volume)]
        if mode == "patch"
        else [(int(a), int(a + n)) for a, n in zip(np.cumsum([0, *counts[:-1]]), counts, strict=True)]
    )
    chunks = [list(range(a, min(a + size, end))) for start, end in ranges for a in range(start, end, size)]
    out: list[list[int]] = []
    while sum(map(len, out)) < limit:
        out += chunks
    return out


def rate(
    dataset: Any, workers: int, limit: int, batch: int, counts: list[int], mode: str, collate: Any = None,
    chunk: int = 0,
) -> float:
    """Items per second through a DataLoader (worker start-up included: ``persistent_workers=False``); ``chunk``:
    one by one through ``iter_items`` (the workers asked for ``chunk`` items at a time)."""
    import torch

    from cubepacs.research.loading import iter_items

    loader: Any
    indices = [i % len(dataset) for i in range(limit)]  # every item, and again: worker start-up amortised
    if chunk and not batch:
        loader = iter_items(dataset, indices, chunk=chunk, num_workers=workers)
    elif batch:
        groups = batches(counts, PER_VOLUME, mode, batch, limit)
        loader = torch.utils.data.DataLoader(dataset, batch_sampler=groups, num_workers=workers, collate_fn=collate)
    else:
        loader = torch.utils.data.DataLoader(dataset, sampler=indices, batch_size=None, num_workers=workers)
    start = time.perf_counter()
    n = 0
    for item in loader:
        image = item["image"] if isinstance(item, dict) else item
        n += len(image) if isinstance(image, list) else (image.shape[0] if batch else 1)
    return n / (time.perf_counter() - start)


def compare(label: str, ours: Any, anchor: Any, rounds: int, anchor_limit: int = 0, **kw: Any) -> None:
    """Alternate the two sides ``rounds`` times; print the medians and their ratio."""
    a: list[float] = []
    b: list[float] = []
    for r in range(rounds):
        for side in (0, 1) if r % 2 == 0 else (1, 0):
            if side == 0:
                a.append(rate(ours, **kw))
            else:
                b.append(rate(anchor, **{**kw, "limit": anchor_limit or kw["limit"]}))
    mine, theirs = statistics.median(a), statistics.median(b)
    print(
        f"{label:28} {kw['workers']:7d} {kw['batch'] or '-':>5} {mine:9.1f} {theirs:9.1f} {mine / theirs:6.2f}x",
        flush=True,
    )


def ab_rows(ours: Any, rounds: int, **kw: Any) -> None:
    """Our loader against itself in the same run: the batched fetch on vs off, and (with workers) shared-memory
    buffers reused vs a new segment per batch."""
    off = copy.copy(ours)
    off.__getitems__ = None  # the DataLoader then fetches item by item and collates them (its test: falsy)
    compare("  A/B: batched fetch on/off", ours, off, rounds, **kw)
    if kw["workers"]:
        fresh = copy.copy(ours)
        fresh.reuse_buffers = False
        compare("  A/B: buffers reused/new", ours, fresh, rounds, **kw)


def export(folders: list[Path], out: Path, codec: str) -> tuple[list[Path], Path]:
    """The series as a de-identified cohort (DICOM and cubes): its DICOM folders and its cube folder."""
    import pydicom

    from cubepacs.research.deid import Options
    from cubepacs.research.export import export_cohort

    groups: dict[tuple[str, str], list[dict[str, str]]] = {}
    for folder in folders:
        for f in sorted(folder.iterdir()):
            if f.suffix == ".txt" or f.name == "DIRFILE":
                continue
            ds = pydicom.dcmread(f, stop_before_pixels=True)
            row = {
                "study_uid": str(ds.StudyInstanceUID),
                "series_uid": str(ds.SeriesInstanceUID),
                "sop_uid": str(ds.SOPInstanceUID),
                "path": str(f),
            }
            groups.setdefault((row["study_uid"], row["series_uid"]), []).append(row)
    report = export_cohort(
        lambda r: Path(r["path"]).read_bytes(),
        groups,
        out,
        Options(b"bench-loader-secret-0123"),
        formats=("dicom", "cube"),
        codec=codec,
    )
    print(f"exported cohort: {report.series} series, {report.instances} instances, {len(report.failed)} failed")
    return sorted(p for p in (out / "dicom").glob("*/*") if p.is_dir()), out / "cubes"


def monai_rows(folders: list[Path], cubes: Path, args: argparse.Namespace) -> None:
    """Patches: ours vs MONAI's LoadImage + RandSpatialCrop (and + RandSpatialCropSamples) on the 3D series."""
    sys.path.insert(0, args.monai)
    import monai
    from monai.data import Dataset
    from monai.transforms import Compose, EnsureChannelFirst, LoadImage, RandSpatialCrop, RandSpatialCropSamples

    from cubepacs.research.dataset import CubeDataset

    three_d = [f for f in folders if len(DicomFolders([f], "patch", PATCH, 1).series) == 1]  # not the 4D one
    paths = [str(cubes / f.parent.name / f"{f.name}.dcbs") for f in three_d]
    ours = CubeDataset(paths, mode="patch", patch_size=PATCH, patches_per_volume=PER_VOLUME)
    roi = (PATCH[2], PATCH[1], PATCH[0])  # MONAI's PydicomReader: columns × rows × slices
    load = [LoadImage(reader="PydicomReader", image_only=True), EnsureChannelFirst(channel_dim="no_channel")]
    one = Dataset(
        [str(f) for f in three_d for _ in range(PER_VOLUME)], Compose([*load, RandSpatialCrop(roi, random_size=False)])
    )
    many = Dataset(
        [str(f) for f in three_d],
        Compose([*load, RandSpatialCropSamples(roi, num_samples=PER_VOLUME, random_size=False)]),
    )
    print(f"MONAI {monai.__version__}, on the cohort's {len(three_d)} 3D series, patches {PATCH}:")
    for workers in (0, 2):
        kw = {"workers": workers, "batch": 0, "counts": ours.counts, "mode": "patch"}
        compare("patches vs MONAI crop", ours, one, args.rounds, limit=args.monai_patches, **kw)
        compare(
            f"patches vs MONAI {PER_VOLUME} samples",
            ours,
            many,
            args.rounds,
            limit=len(one),
            anchor_limit=len(many),
            **kw,
        )


def check_same(ours: Any, anchor: Any, mode: str) -> None:
    """The first item of each side, voxel for voxel (refuses to measure different work)."""
    a, b = ours[0]["image"].numpy(), anchor[0]["image"].numpy()
    if a.shape != b.shape or not np.allclose(a, b, atol=1e-3):
        raise SystemExit(f"{mode}: the two sides give different items ({a.shape} vs {b.shape})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--codec", default="blosc2", help="codec of the cubes (blosc2: a training copy)")
    parser.add_argument("--slices", type=int, default=1000, help="slices read per measurement")
    parser.add_argument("--patches", type=int, default=96, help="patches read per measurement")
    parser.add_argument("--batch", type=int, default=16, help="batch size of the batched rows (0: none)")
    parser.add_argument("--cache", type=int, default=0, help="an extra row: decoded volumes kept per process")
    parser.add_argument("--cohort", action="store_true", help="read an exported cohort (DICOM and cubes)")
    parser.add_argument("--monai", default="", help="folder where MONAI is installed (pip --target): compare")
    parser.add_argument("--monai-patches", type=int, default=24, help="patches per MONAI measurement")
    parser.add_argument("--rounds", type=int, default=3, help="alternations of the two sides per row")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads of the main process")
    parser.add_argument("--floor", action="store_true", help="a row per slice setting: a loader doing nothing")
    parser.add_argument("--ab", action="store_true", help="same-run A/B rows: batched fetch, buffer reuse")
    parser.add_argument("--modes", default="slice,patch", help="rows to measure: slice, patch or both")
    parser.add_argument("--chunk", type=int, default=16, help="slices one by one through iter_items, both sides "
                        "asking the workers for this many at a time (0: no such row)")
    parser.add_argument("--no-settle", action="store_true")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)  # as in DataLoader workers; 2 spinning threads on 2 shared cores: 3-20x slower
    warnings.simplefilter("ignore")  # the 4D series' split is announced by a warning: expected here
    from _settle import cleanup, settle

    import cubepacs
    from cubepacs.research.dataset import CubeDataset

    if not args.no_settle:
        settle(tempfile.gettempdir())
    series = sorted(d for d in DATA.iterdir() if d.is_dir())
    work = Path(tempfile.mkdtemp(prefix="cubepacs-loader-"))
    try:
        if args.cohort or args.monai:
            folders, cubes = export(series, work / "cohort", args.codec)
        else:
            folders, cubes = series, work / "cubes"
            cubes.mkdir()
            for d in series:
                cubepacs.save(cubepacs.load_from_dicom_folder(str(d)), cubes / f"{d.name}.dcbs", codec=args.codec)
        print(
            f"{len(folders)} series ({sum(1 for d in folders for _ in d.iterdir())} files), cubes: {args.codec}"
            f"{', exported cohort' if args.cohort or args.monai else ''}; medians of {args.rounds} alternations"
        )
        print(f"{'items':28} {'workers':>7} {'batch':>5} {'cubes/s':>9} {'other/s':>9} {'ratio':>7}")
        for mode, limit in (("slice", args.slices), ("patch", args.patches)):
            if mode not in args.modes.split(","):
                continue
            anchor = DicomFolders(folders, mode, PATCH, PER_VOLUME)
            variants = [("", 0)] + ([(f" (cache {args.cache})", args.cache)] if args.cache else [])
            for suffix, cache in variants:
                ours = CubeDataset(
                    cubes, mode=mode, patch_size=PATCH, patches_per_volume=PER_VOLUME, cache_volumes=cache
                )
                if ours.counts != anchor.counts:
                    raise SystemExit(f"volumes differ: cubes {ours.counts}, DICOM {anchor.counts}")
                check_same(ours, anchor, mode)
                for batch in (0, args.batch) if args.batch else (0,):
                    for workers in (0, 2):
                        label = f"{'patches' if mode == 'patch' else 'slices'} vs pydicom{suffix}"
                        kw = {"workers": workers, "limit": limit, "batch": batch, "counts": ours.counts, "mode": mode}
                        compare(label, ours, anchor, args.rounds, **kw)
                        if args.chunk and not batch and mode == "slice":
                            compare(f"  one by one, chunks of {args.chunk}", ours, anchor, args.rounds,
                                    **kw, chunk=args.chunk)  # both sides through iter_items
                        if args.floor and mode == "slice" and not cache:
                            compare("slices: no work vs pydicom", Floor(anchor), anchor, args.rounds, **kw)
                        if args.ab and mode == "slice" and batch and not cache:
                            ab_rows(ours, args.rounds, **kw)
        if args.monai:
            monai_rows(folders, cubes, args)
    finally:
        cleanup(work)


if __name__ == "__main__":
    main()
