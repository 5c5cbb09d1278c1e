"""``orientation=`` with ``oblique="resample"``: an oblique series resampled onto the patient axes, against an
oracle that is not the code — trilinear interpolation of pydicom's pixel arrays at patient points, placed by each
file's Image Position, Image Orientation and Pixel Spacing as pydicom reads them.

The data set has no oblique series: a real one (the GE 3D T1, coronal) is made oblique here by rotating its Image
Orientation (Patient) and Image Position (Patient) headers — every file by the same rotation about the patient
origin, so the series stays one rigid volume — and written to new files (pixels untouched)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from tests.conftest import SERIES, dicom_files

torch = pytest.importorskip("torch")
T1 = next(s for s in SERIES if s.name.startswith("mr_ge_signa"))


def _rotation(axis: list[float], degrees: float) -> np.ndarray:
    x, y, z = np.array(axis, float) / np.linalg.norm(axis)
    c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    k = np.array([[0, -z, y], [z, 0, -x], [-y, x, 0]])
    return np.eye(3) + s * k + (1 - c) * (k @ k)


def _oblique_copy(out: Path, rotation: np.ndarray) -> list[pydicom.Dataset]:
    """The T1 series' files with their position and orientation rotated; the rotated datasets as pydicom reads
    them back from the new files."""
    out.mkdir()
    for f in dicom_files(T1):
        ds = pydicom.dcmread(f)
        iop = np.array([float(v) for v in ds.ImageOrientationPatient])
        ds.ImageOrientationPatient = [f"{v:.8f}" for v in (*rotation @ iop[:3], *rotation @ iop[3:])]
        ds.ImagePositionPatient = [f"{v:.6f}" for v in rotation @ np.array([float(v) for v in ds.ImagePositionPatient])]
        ds.save_as(out / f.name)
    return [pydicom.dcmread(p) for p in sorted(out.iterdir())]


class _Oracle:
    """Values at patient points: the two files whose planes hold the point between them, bilinear in each plane
    (row and column from the file's position, orientation and pixel spacing), linear between the planes."""

    def __init__(self, files: list[pydicom.Dataset]) -> None:
        iop = np.array([float(v) for v in files[0].ImageOrientationPatient])
        self.row_dir, self.col_dir = iop[:3], iop[3:]
        self.normal = np.cross(self.row_dir, self.col_dir)
        place = [(float(np.dot([float(v) for v in d.ImagePositionPatient], self.normal)), d) for d in files]
        place.sort(key=lambda p: p[0])
        self.planes = np.array([p for p, _ in place])
        self.ipp = [np.array([float(v) for v in d.ImagePositionPatient]) for _, d in place]
        self.spacing = [(float(d.PixelSpacing[0]), float(d.PixelSpacing[1])) for _, d in place]
        self.pixels = [
            d.pixel_array * float(d.get("RescaleSlope", 1) or 1) + float(d.get("RescaleIntercept", 0) or 0)
            for _, d in place
        ]

    def _plane(self, k: int, point: np.ndarray) -> float | None:
        rel = point - self.ipp[k]
        r = float(np.dot(rel, self.col_dir)) / self.spacing[k][0]
        c = float(np.dot(rel, self.row_dir)) / self.spacing[k][1]
        image = self.pixels[k]
        if not (-1e-6 <= r <= image.shape[0] - 1 + 1e-6 and -1e-6 <= c <= image.shape[1] - 1 + 1e-6):
            return None
        r0, c0 = min(int(np.floor(r)), image.shape[0] - 2), min(int(np.floor(c)), image.shape[1] - 2)
        fr, fc = r - r0, c - c0
        block = image[r0 : r0 + 2, c0 : c0 + 2].astype(float)
        return float(
            (1 - fr) * ((1 - fc) * block[0, 0] + fc * block[0, 1]) + fr * ((1 - fc) * block[1, 0] + fc * block[1, 1])
        )

    def __call__(self, point: np.ndarray) -> float | None:
        d = float(np.dot(point, self.normal))
        if not self.planes[0] - 1e-6 <= d <= self.planes[-1] + 1e-6:
            return None
        k = min(int(np.searchsorted(self.planes, d, side="right")) - 1, len(self.planes) - 2)
        k = max(k, 0)
        t = (d - self.planes[k]) / (self.planes[k + 1] - self.planes[k])
        a, b = self._plane(k, point), self._plane(k + 1, point)
        return None if a is None or b is None else (1 - t) * a + t * b


@pytest.mark.parametrize("code", ["LPS", "RAS"])
def test_an_oblique_series_is_resampled_onto_the_patient_axes(tmp_path: Path, code: str) -> None:
    import cubepacs
    from cubepacs.research.dataset import CubeDataset

    rotation = _rotation([1.0, 1.0, 0.3], 25.0)
    files = _oblique_copy(tmp_path / "oblique", rotation)
    cubepacs.save(cubepacs.load_from_dicom_folder(str(tmp_path / "oblique")), tmp_path / "t1.dcbs", codec="blosc2")
    item = CubeDataset(
        [str(tmp_path / "t1.dcbs")], mode="volume", orientation=code, oblique="resample", pad_value=-7.0
    )[0]
    toward = {"L": [1, 0, 0], "R": [-1, 0, 0], "P": [0, 1, 0], "A": [0, -1, 0], "S": [0, 0, 1], "I": [0, 0, -1]}
    image, spacing, origin = item["image"].numpy(), item["spacing"].numpy().astype(float), item["origin"].numpy()
    along_row, along_column = item["orientation"].numpy()[:3], item["orientation"].numpy()[3:]
    assert np.allclose(along_row, toward[code[0]]) and np.allclose(along_column, toward[code[1]])
    across = np.array(toward[code[2]], float)
    oracle = _Oracle(files)
    rng = np.random.default_rng(11)
    inside, outside = [], 0
    while len(inside) < 300:
        k, j, i = (int(rng.integers(0, n)) for n in image.shape)
        world = (
            origin.astype(float) + i * spacing[2] * along_row + j * spacing[1] * along_column + k * spacing[0] * across
        )
        want = oracle(world)
        if want is None:
            if all(oracle(world + 2.0 * d) is None for d in np.eye(3)) and all(
                oracle(world - 2.0 * d) is None for d in np.eye(3)
            ):
                assert image[k, j, i] == -7.0  # well outside the rotated volume: pad_value
                outside += 1
            continue
        assert abs(float(image[k, j, i]) - want) <= 0.05 + 1e-4 * abs(want), (code, k, j, i, want)
        inside.append(want)
    assert outside > 20 and len(set(np.round(inside))) > 100  # the anatomy, and the corners around it
    plain = CubeDataset([str(tmp_path / "t1.dcbs")], mode="volume", orientation=code)[0]  # permuted only
    assert not np.allclose(plain["orientation"].numpy()[:3], toward[code[0]])  # stays oblique


def test_oblique_argument_is_checked(tmp_path: Path) -> None:
    import cubepacs
    from cubepacs.research.dataset import CubeDataset

    cubepacs.save(cubepacs.load_from_dicom_folder(str(T1)), tmp_path / "t1.dcbs", codec="blosc2")
    with pytest.raises(ValueError, match="oblique must be"):
        CubeDataset(tmp_path, mode="volume", orientation="LPS", oblique="rotate")
    straight = CubeDataset(tmp_path, mode="volume", orientation="LPS", oblique="resample")[0]
    permuted = CubeDataset(tmp_path, mode="volume", orientation="LPS")[0]
    assert torch.equal(straight["image"], permuted["image"])  # not oblique: no interpolation at all
