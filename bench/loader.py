"""Benchmark the PyTorch loader: slices/s and patches/s from cubes vs the same series read from DICOM folders with
pydicom (+ rescale), same run, DataLoader with 0 and 2 workers.

Usage: .venv/bin/python bench/loader.py [--codec htj2k] [--patches 64] [--cache 4]

``--cache N``: the dataset keeps the last N decoded volumes per process (``CubeDataset(cache_volumes=N)``), so the
patches of a volume cost one decode.

Both sides return the same thing: float32 images in rescaled units, slices sorted by position. The DICOM side is
what a training script without cubes does: one pydicom read per slice (and per slice of a patch).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "series"
sys.path.insert(0, str(ROOT / "src"))


class DicomFolders:
    """The same items from DICOM folders with pydicom (the anchor)."""

    def __init__(self, folders: list[Path], mode: str, patch: tuple[int, int, int], per_volume: int) -> None:
        import pydicom

        self.mode, self.patch, self.per_volume = mode, patch, per_volume
        self.series: list[list[Path]] = []
        for folder in folders:
            heads = []
            for f in sorted(folder.iterdir()):
                if f.suffix == ".txt" or f.name == "DIRFILE":
                    continue
                ds = pydicom.dcmread(f, stop_before_pixels=True)
                iop = np.array(ds.ImageOrientationPatient, float)
                heads.append((float(np.dot(np.array(ds.ImagePositionPatient, float), np.cross(iop[:3], iop[3:]))),
                              f))
            self.series.append([f for _, f in sorted(heads, key=lambda h: h[0])])
        self.starts = np.concatenate([[0], np.cumsum([len(s) for s in self.series])])

    def __len__(self) -> int:
        return len(self.series) * self.per_volume if self.mode == "patch" else int(self.starts[-1])

    @staticmethod
    def _read(path: Path) -> np.ndarray:
        import pydicom

        ds = pydicom.dcmread(path)
        return (ds.pixel_array * float(ds.get("RescaleSlope", 1) or 1) + float(ds.get("RescaleIntercept", 0) or 0)
                ).astype(np.float32)

    def __getitem__(self, idx: int) -> Any:
        import torch

        if self.mode == "slice":
            k = int(np.searchsorted(self.starts, idx, side="right")) - 1
            return {"image": torch.from_numpy(self._read(self.series[k][idx - int(self.starts[k])]))}
        k = idx // self.per_volume
        files = self.series[k]
        first = self._read(files[0])
        d, h, w = (min(a, b) for a, b in zip(self.patch, (len(files), *first.shape), strict=True))
        rng = np.random.default_rng([0, idx])
        z, y, x = (int(rng.integers(0, lim - s + 1)) for lim, s in ((len(files), d), (first.shape[0], h),
                                                                      (first.shape[1], w)))
        return {"image": torch.from_numpy(np.stack([self._read(f)[y:y + h, x:x + w] for f in files[z:z + d]]))}


def rate(dataset: Any, workers: int, limit: int) -> float:
    import torch

    indices = [i % len(dataset) for i in range(limit)]  # every item, and again: worker start-up amortised
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(dataset, indices),
                                         batch_size=None, num_workers=workers,
                                         persistent_workers=False)
    start = time.perf_counter()
    n = sum(1 for _ in loader)
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--codec", default="htj2k")
    parser.add_argument("--slices", type=int, default=2000, help="slices read per measurement")
    parser.add_argument("--patches", type=int, default=96, help="patches read per measurement")
    parser.add_argument("--cache", type=int, default=0, help="decoded volumes kept per process (patches)")
    args = parser.parse_args()
    import cubepacs
    from cubepacs.research.dataset import CubeDataset

    folders = sorted(d for d in DATA.iterdir() if d.is_dir())
    cubes = Path(tempfile.mkdtemp(prefix="cubepacs-loader-"))
    for d in folders:
        cubepacs.save(cubepacs.load_from_dicom_folder(str(d)), cubes / f"{d.name}.dcbs", codec=args.codec)
    patch = (16, 64, 64)
    print(f"{len(folders)} series ({sum(1 for d in folders for f in d.iterdir())} files), cubes: {args.codec}, "
          f"volumes cached: {args.cache}")
    print(f"{'items':8} {'workers':>7} {'cubes/s':>9} {'DICOM/s':>9} {'ratio':>7}")
    for mode, limit in (("slice", args.slices), ("patch", args.patches)):
        for workers in (0, 2):
            ours = rate(CubeDataset(cubes, mode=mode, patch_size=patch, patches_per_volume=12,
                                    cache_volumes=args.cache if mode == "patch" else 0), workers, limit)
            anchor = rate(DicomFolders(folders, mode, patch, 12), workers, limit)
            label = "patches" if mode == "patch" else "slices"
            print(f"{label:8} {workers:7d} {ours:9.1f} {anchor:9.1f} {ours / anchor:6.2f}x")


if __name__ == "__main__":
    main()
