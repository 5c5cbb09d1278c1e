"""The PyTorch dataset over cubes against pydicom's reading of the same files: voxels (pydicom's ``pixel_array`` ×
slope + intercept), slice order, geometry, 4D series split by temporal position, what cannot form a volume, items
through DataLoader workers."""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest

from tests.conftest import SERIES, SINGLES, dicom_files

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.filterwarnings("ignore:Invalid value for VR:UserWarning")  # odd values of real files
CT = next(s for s in SERIES if s.name.startswith("ct_ge"))
T1 = next(s for s in SERIES if s.name.startswith("mr_ge_signa"))
FMRI = next(s for s in SERIES if "fmri" in s.name)


def _by_position(files: list[Path]) -> list[pydicom.Dataset]:
    refs = [pydicom.dcmread(f) for f in files]
    iop = np.array(refs[0].ImageOrientationPatient, float)
    normal = np.cross(iop[:3], iop[3:])
    return sorted(refs, key=lambda d: float(np.dot(np.array(d.ImagePositionPatient, float), normal)))


def _rescaled(ds: pydicom.Dataset) -> np.ndarray:
    slope, intercept = float(ds.get("RescaleSlope", 1) or 1), float(ds.get("RescaleIntercept", 0) or 0)
    return (ds.pixel_array * slope + intercept).astype(np.float32)


def test_a_4d_series_gives_one_volume_per_temporal_position(tmp_path: Path) -> None:
    """The GE fMRI series (150 files, 15 positions): its header says 10 temporal positions of 15 images
    (Number of Temporal Positions, Images in Acquisition, instances numbered in acquisition order): volume t is
    instances 15·t+1 … 15·t+15 in position order, as pydicom reads them."""
    import cubepacs
    from cubepacs.research.dataset import CubeDataset

    cubepacs.save(cubepacs.load_from_dicom_folder(str(FMRI)), tmp_path / "fmri.dcbs", codec="blosc2")
    heads = [pydicom.dcmread(f, stop_before_pixels=True) for f in dicom_files(FMRI)]
    times, per = int(heads[0].NumberOfTemporalPositions), int(heads[0].ImagesInAcquisition)
    by_time: dict[int, list[Path]] = {}
    for f, ds in zip(dicom_files(FMRI), heads, strict=True):
        by_time.setdefault((int(ds.InstanceNumber) - 1) // per, []).append(f)
    with pytest.warns(UserWarning, match=f"{times} temporal positions, 4D"):
        volumes = CubeDataset(tmp_path, mode="volume")
    assert len(volumes) == times and volumes.split == {str(tmp_path / "fmri.dcbs"): times}
    for t in range(times):
        refs = _by_position(by_time[t])
        item = volumes[t]
        np.testing.assert_array_equal(item["image"].numpy(), np.stack([_rescaled(d) for d in refs]))
        assert np.allclose(item["origin"].numpy(), [float(v) for v in refs[0].ImagePositionPatient])
        steps = np.diff([float(d.SliceLocation) for d in refs])
        assert np.isclose(item["spacing"][0].item(), np.median(steps), atol=1e-3)
    with pytest.warns(UserWarning):
        slices = CubeDataset(tmp_path, mode="slice")
    assert len(slices) == times * per
    np.testing.assert_array_equal(slices[per * 3 + 7]["image"].numpy(), _rescaled(_by_position(by_time[3])[7]))


def test_items_cross_the_worker_boundary_whole() -> None:
    """An item pickled as a DataLoader worker sends it: the same tensors come back (small ones packed)."""
    from cubepacs.research.dataset import Item

    item = Item(
        image=torch.arange(12.0).reshape(3, 4),
        spacing=torch.tensor([2.5, 0.7, 0.7]),
        origin=torch.tensor([-1.5, 2.0, 3.25]),
        index=torch.tensor([4, 5, 6]),
        source="a.dcbs",
    )
    far = Item(item, index=torch.tensor([2**40 + 1, 0, 0]))  # not exact in float32: packed apart from the image
    for back in (pickle.loads(pickle.dumps(item)), item.__copy__(), pickle.loads(pickle.dumps(far))):
        item = far if back["index"][0] > 2**30 else item
        assert type(back) is Item and list(back) == list(item) and back["source"] == "a.dcbs"
        for key in ("image", "spacing", "origin", "index"):
            assert back[key].dtype == item[key].dtype and torch.equal(back[key], item[key]), key


def test_dataset_matches_pydicom_and_works_with_workers(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    import cubepacs
    from cubepacs.research.dataset import CubeDataset

    cubepacs.save(cubepacs.load_from_dicom_folder(str(CT)), tmp_path / "ct.dcbs")
    cubepacs.save(cubepacs.load_from_dicom_folder(str(T1)), tmp_path / "t1.dcbs")
    refs = [pydicom.dcmread(f) for f in dicom_files(CT)]
    iop = np.array(refs[0].ImageOrientationPatient, float)
    normal = np.cross(iop[:3], iop[3:])
    refs.sort(key=lambda d: float(np.dot(np.array(d.ImagePositionPatient, float), normal)))
    slices = CubeDataset(tmp_path, mode="slice")
    assert len(slices) == 200
    ct_index = next(i for i in range(len(slices.paths)) if slices.paths[i].endswith("ct.dcbs"))
    offset = int(slices._starts[ct_index])
    for s in (0, 37, 99):
        item = slices[offset + s]
        ref = refs[s].pixel_array * float(refs[s].RescaleSlope) + float(refs[s].RescaleIntercept)
        np.testing.assert_array_equal(item["image"].numpy(), ref.astype(np.float32))
    assert np.allclose(item["spacing"].numpy()[1:], [float(v) for v in refs[0].PixelSpacing])
    assert np.allclose(item["origin"].numpy(), [float(v) for v in refs[0].ImagePositionPatient])
    volume = CubeDataset([str(tmp_path / "t1.dcbs")], mode="volume")[0]
    assert tuple(volume["image"].shape) == (100, 256, 256)
    patches = CubeDataset(tmp_path, mode="patch", patch_size=(8, 32, 32), patches_per_volume=4)
    loader = torch.utils.data.DataLoader(patches, batch_size=4, num_workers=2)
    batches = list(loader)
    assert len(batches) == 2 and tuple(batches[0]["image"].shape) == (4, 8, 32, 32)
    again = list(torch.utils.data.DataLoader(patches, batch_size=4, num_workers=0))
    assert torch.equal(batches[1]["image"], again[1]["image"])  # patches depend on the index, not the worker
    chosen = [0, offset + 37, len(slices) - 1]
    for dataset, indices in ((slices, chosen), (patches, [0, 5, 7])):  # one by one: made in shared memory
        sent = list(torch.utils.data.DataLoader(dataset, sampler=indices, batch_size=None, num_workers=2))
        for i, item in zip(indices, sent, strict=True):
            here = dataset[i]
            assert list(item) == list(here) and item["source"] == here["source"]
            for key in ("image", "spacing", "origin", "orientation", "index"):
                assert item[key].dtype == here[key].dtype and torch.equal(item[key], here[key]), key


@pytest.mark.s3
def test_dataset_over_an_s3_prefix(tmp_path: Path, seaweedfs: str) -> None:
    pytest.importorskip("torch")
    import cubepacs
    from cubepacs._registry import open_backend
    from cubepacs.research.dataset import CubeDataset

    cube = tmp_path / "ct.dcbs"
    cubepacs.save(
        cubepacs.load_from_dicom_folder(str(next(s for s in SERIES if s.name.startswith("ct_philips")))), cube
    )
    import uuid

    path, _, query = seaweedfs.partition("?")
    url = f"{path}/loader-{uuid.uuid4().hex[:8]}?{query}"  # a prefix of its own in the shared bucket
    storage = open_backend("storage", url, access_key="test", secret_key="test")
    storage.put("cohort/ct.dcbs", cube.read_bytes())
    remote = CubeDataset(url, mode="slice", storage_options={"access_key": "test", "secret_key": "test"})
    local = CubeDataset(tmp_path, mode="slice")
    assert len(remote) == len(local) == 54
    assert np.array_equal(remote[20]["image"].numpy(), local[20]["image"].numpy())


def test_dataset_on_cubes_that_cannot_form_one_volume(tmp_path: Path) -> None:
    """Cubes made from real files, put together the ways a real cohort has them: no frame (an SR), frames of two
    shapes (a CT series and a smaller CT), one slice, a gap in the slices (steps of 2.5 and 27.5 mm)."""
    torch = pytest.importorskip("torch")
    from cubepacs.cube.sources import read_instances
    from cubepacs.cube.writer import write_cube
    from cubepacs.research.dataset import CubeDataset, collate_list

    ct = dicom_files(CT)
    small = next(s for s in SINGLES if s.name == "ct_ge_small_signed.dcm")
    sr = next(s for s in SINGLES if s.name == "sr_comprehensive_nested.dcm")
    write_cube(read_instances([sr]), tmp_path / "a-empty.dcbs", codec="zstd")
    write_cube(read_instances([*ct[:5], small]), tmp_path / "b-mixed.dcbs", codec="zstd")
    write_cube(read_instances([small]), tmp_path / "c-one.dcbs", codec="zstd")
    write_cube(read_instances(ct[:4] + ct[15:19]), tmp_path / "d-gap.dcbs", codec="zstd")
    with pytest.warns(UserWarning) as caught:
        data = CubeDataset(tmp_path, mode="patch", patch_size=(4, 96, 96), patches_per_volume=2)
    said = " ".join(str(w.message) for w in caught)
    assert "no frame" in said and "2 shapes" in said and "not uniform" in said
    assert list(data.skipped.values()) == ["no frame"] and list(data.split.values()) == [2]
    assert len(data.volumes) == 4 and len(data) == 8
    shapes = {tuple(data[i]["image"].shape) for i in range(len(data))}
    assert shapes == {(4, 96, 96)}  # padded where the volume is smaller than the patch
    with pytest.warns(UserWarning):
        cached = CubeDataset(tmp_path, mode="patch", patch_size=(4, 96, 96), patches_per_volume=2, cache_volumes=2)
    for i in (*range(len(data)), 0, 5):  # decoded volumes kept (and dropped) give the same patches
        assert torch.equal(cached[i]["image"], data[i]["image"])
    assert len(cached._cache) == 2
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="smaller than the patch"):
        CubeDataset(tmp_path, mode="patch", patch_size=(4, 96, 96), pad=None)
    with pytest.warns(UserWarning):
        volumes = CubeDataset(tmp_path, mode="volume", spacing=(5.0, 2.0, 2.0))
    batch = next(iter(torch.utils.data.DataLoader(volumes, batch_size=4, collate_fn=collate_list)))
    assert len(batch["image"]) == 4 and len({tuple(i.shape) for i in batch["image"]}) > 1
    assert all(sp.tolist() == [5.0, 2.0, 2.0] for sp in batch["spacing"])
    ref = pydicom.dcmread(ct[0], stop_before_pixels=True)
    expected = round(512 * float(ref.PixelSpacing[0]) / 2.0)  # 512 pixels of the CT's spacing, at 2 mm
    assert expected in {int(i.shape[1]) for i in batch["image"]}


def test_dataset_gives_every_item_of_every_file_of_the_data_set(tmp_path: Path) -> None:
    """One cube per series folder and per single file of ../shared/data: every patch and every 37th slice load;
    what has no pixels (ECG, SR, an empty dataset) is skipped with a reason."""
    pytest.importorskip("torch")
    from cubepacs.cube.sources import read_instances
    from cubepacs.cube.writer import write_cube
    from cubepacs.research.dataset import CubeDataset

    for source in [*SERIES, *SINGLES]:
        write_cube(read_instances([source]), tmp_path / f"{source.stem}.dcbs", codec="zstd", threads=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        patches = CubeDataset(tmp_path, mode="patch", patch_size=(4, 64, 64), patches_per_volume=1)
        slices = CubeDataset(tmp_path, mode="slice")
    assert sorted(Path(p).stem for p in patches.skipped) == [
        "ecg_waveform_mortara",
        "nested_private_sequences_min",
        "sr_comprehensive_nested",
    ]
    fmri = pydicom.dcmread(dicom_files(FMRI)[0], stop_before_pixels=True)
    assert len(patches) == len(SERIES) + len(SINGLES) - 3 + int(fmri.NumberOfTemporalPositions) - 1  # 4D: split
    shapes = {tuple(patches[i]["image"].shape) for i in range(len(patches))}
    assert shapes == {(4, 64, 64), (4, 64, 64, 3)}  # grey and colour, padded where smaller
    assert all(slices[i]["image"].ndim in (2, 3) for i in range(0, len(slices), 37))
    from cubepacs.research.loading import iter_items  # every file's slices, one at a time from 2 workers in chunks

    shuffled = torch.randperm(len(slices), generator=torch.Generator().manual_seed(5)).tolist()
    picked = sorted(shuffled[: len(slices) // 4])
    for i, item in zip(picked, iter_items(slices, picked, num_workers=2), strict=True):
        assert item["source"] == slices[i]["source"] and torch.equal(item["image"], slices[i]["image"]), i


@pytest.mark.parametrize("code", ["LPS", "RAS"])
def test_reoriented_volumes_put_each_voxel_where_the_files_say(tmp_path: Path, code: str) -> None:
    """A coronal MR (rows toward the feet) and an axial CT reoriented: every sampled voxel, placed in patient
    coordinates by the item's origin, spacing and directions, holds the value pydicom reads at that place in the
    file whose plane it is in (Image Position, Orientation and Pixel Spacing of each file)."""
    import cubepacs
    from cubepacs.research.dataset import CubeDataset

    toward = {"L": [1, 0, 0], "R": [-1, 0, 0], "P": [0, 1, 0], "A": [0, -1, 0], "S": [0, 0, 1], "I": [0, 0, -1]}
    rng = np.random.default_rng(7)
    for series in (T1, CT):
        cubepacs.save(cubepacs.load_from_dicom_folder(str(series)), tmp_path / f"{series.name}.dcbs", codec="blosc2")
        item = CubeDataset([str(tmp_path / f"{series.name}.dcbs")], mode="volume", orientation=code)[0]
        image, spacing, origin = item["image"].numpy(), item["spacing"].numpy(), item["origin"].numpy()
        along_row, along_column = item["orientation"].numpy()[:3], item["orientation"].numpy()[3:]
        assert np.allclose(along_row, toward[code[0]]) and np.allclose(along_column, toward[code[1]])
        across = np.array(toward[code[2]], float)
        refs = [pydicom.dcmread(f) for f in dicom_files(series)]
        normal = np.cross(
            [float(v) for v in refs[0].ImageOrientationPatient[:3]],
            [float(v) for v in refs[0].ImageOrientationPatient[3:]],
        )
        planes = np.array([float(np.dot([float(v) for v in d.ImagePositionPatient], normal)) for d in refs])
        values = [_rescaled(d) for d in refs]
        sampled = []
        for k, j, i in zip(*(rng.integers(0, n, 300) for n in image.shape), strict=True):
            world = origin + i * spacing[2] * along_row + j * spacing[1] * along_column + k * spacing[0] * across
            at = int(np.argmin(np.abs(planes - np.dot(world, normal))))
            ref = refs[at]
            ipp = np.array([float(v) for v in ref.ImagePositionPatient])
            iop = [float(v) for v in ref.ImageOrientationPatient]
            r = round(float(np.dot(world - ipp, iop[3:])) / float(ref.PixelSpacing[0]))
            c = round(float(np.dot(world - ipp, iop[:3])) / float(ref.PixelSpacing[1]))
            assert 0 <= r < ref.Rows and 0 <= c < ref.Columns and abs(planes[at] - np.dot(world, normal)) < 0.1
            assert image[k, j, i] == values[at][r, c], (series.name, k, j, i)
            sampled.append(image[k, j, i])
        assert len(set(sampled)) > 100  # voxels of the anatomy, not only of the background
    with pytest.raises(ValueError, match="one of each pair"):
        CubeDataset(tmp_path, mode="volume", orientation="LPR")


def _ct_and_t1(folder: Path) -> tuple[Any, int, list[pydicom.Dataset]]:
    """Slices of the CT and the T1 as blosc2 cubes in ``folder``: the dataset, the CT's first index, the CT's files
    in position order (pydicom's reading)."""
    import cubepacs
    from cubepacs.research.dataset import CubeDataset

    cubepacs.save(cubepacs.load_from_dicom_folder(str(CT)), folder / "ct.dcbs", codec="blosc2")
    cubepacs.save(cubepacs.load_from_dicom_folder(str(T1)), folder / "t1.dcbs", codec="blosc2")
    slices = CubeDataset(folder, mode="slice")
    ct = next(v for v in range(len(slices.volumes)) if slices.paths[slices.volumes[v][0]].endswith("ct.dcbs"))
    return slices, int(slices._starts[ct]), _by_position(dicom_files(CT))


def test_batched_slices_equal_the_items_one_by_one(tmp_path: Path) -> None:
    """``__getitems__`` (a DataLoader's batched fetch: one decode pass into one array, the batch made there) gives
    what ``dataset[i]`` gives, key by key, through the default collate with 0 and 2 workers and through
    ``collate_list``, where a batch across two volumes is made item by item. The voxels are pydicom's."""
    from cubepacs.research.dataset import collate_list

    slices, start, refs = _ct_and_t1(tmp_path)
    groups = [list(range(start + 3, start + 19)), [start + 99], [start, start + 1, start + 2]]
    for workers in (0, 2):
        loader = torch.utils.data.DataLoader(slices, batch_sampler=groups, num_workers=workers)
        for indices, batch in zip(groups, loader, strict=True):
            alone = [slices[i] for i in indices]
            assert list(batch) == list(alone[0]) and batch["source"] == [a["source"] for a in alone]
            for key in ("image", "spacing", "origin", "orientation", "index"):
                expected = torch.stack([a[key] for a in alone])
                assert batch[key].dtype == expected.dtype and torch.equal(batch[key], expected), (workers, key)
    for i, item in zip(groups[0], slices.__getitems__(groups[0]), strict=True):
        here = slices[i]
        assert list(item) == list(here) and item["source"] == here["source"]
        assert all(torch.equal(item[k], here[k]) and item[k].dtype == here[k].dtype for k in here if k != "source")
        np.testing.assert_array_equal(item["image"].numpy(), _rescaled(refs[i - start]))
    mixed = [0, len(slices) - 1]  # two volumes (two shapes): lists only
    listed = list(torch.utils.data.DataLoader(slices, batch_sampler=[groups[0], mixed], collate_fn=collate_list))
    for indices, batch in zip([groups[0], mixed], listed, strict=True):
        assert all(torch.equal(a, slices[i]["image"]) for a, i in zip(batch["image"], indices, strict=True))
        assert batch["index"][-1].tolist() == slices[indices[-1]]["index"].tolist()


def _inode(tensor: torch.Tensor) -> int:
    """The shared-memory file behind a tensor received from a worker (its storage's file descriptor)."""
    import os

    fd, _ = tensor.untyped_storage()._share_fd_cpu_()
    return os.fstat(fd).st_ino


def test_worker_buffers_are_reused_only_once_the_batch_is_dropped(tmp_path: Path) -> None:
    """Batches of slices from 2 workers: held, every batch keeps its own shared memory and its values to the end
    (nothing is written over while a tensor of it lives, views and NumPy arrays included); dropped as they come,
    the workers reuse their segments — and every batch still equals the slices one by one, and pydicom's voxels."""
    import cubepacs
    from cubepacs.research.dataset import CubeDataset

    cubepacs.save(cubepacs.load_from_dicom_folder(str(CT)), tmp_path / "ct.dcbs", codec="blosc2")
    slices = CubeDataset(tmp_path, mode="slice")
    refs = _by_position(dicom_files(CT))
    groups = [list(range(a, a + 8)) for a in range(0, 96, 8)] * 2  # 24 batches of 8
    expected = [torch.stack([slices[i]["image"] for i in g]) for g in groups]
    loader = torch.utils.data.DataLoader(slices, batch_sampler=groups, num_workers=2)
    held = [(batch["image"][2:5], batch["index"], batch["image"].numpy()[0]) for batch in loader]  # views only
    assert len({_inode(view) for view, _, _ in held}) == len(groups)  # each in memory of its own while held
    for g, want, (view, index, first) in zip(groups, expected, held, strict=True):
        assert torch.equal(view, want[2:5]) and index[:, 0].tolist() == g
        np.testing.assert_array_equal(first, _rescaled(refs[g[0]]))
    del held
    seen = []
    for g, want, batch in zip(groups, expected, loader, strict=True):
        assert torch.equal(batch["image"], want) and batch["index"][:, 0].tolist() == g
        seen.append(_inode(batch["image"]))
        del batch
    assert len(set(seen)) < len(groups) / 2  # segments went back to the workers and came again
    unshared = CubeDataset(tmp_path, mode="slice", reuse_buffers=False)
    fresh = [_inode(b["image"]) for b in torch.utils.data.DataLoader(unshared, batch_sampler=groups, num_workers=2)]
    assert len(set(fresh)) == len(groups)  # a new segment for each batch


def test_items_one_by_one_from_workers_reuse_buffers_safely(tmp_path: Path) -> None:
    """Items sent one by one (batch_size=None) are made in reused shared memory too: held items keep their
    values, and every item equals the main process's, key by key."""
    import cubepacs
    from cubepacs.research.dataset import CubeDataset

    cubepacs.save(cubepacs.load_from_dicom_folder(str(CT)), tmp_path / "ct.dcbs", codec="blosc2")
    slices = CubeDataset(tmp_path, mode="slice")
    order = [*range(0, 100, 3), *range(1, 100, 7)]
    held = list(torch.utils.data.DataLoader(slices, sampler=order, batch_size=None, num_workers=2))
    for i, item in zip(order, held, strict=True):
        here = slices[i]
        for key in ("image", "spacing", "origin", "orientation", "index"):
            assert item[key].dtype == here[key].dtype and torch.equal(item[key], here[key]), (i, key)
    again = [
        int(item["index"][0])
        for item in torch.utils.data.DataLoader(slices, sampler=order, batch_size=None, num_workers=2)
    ]
    assert again == order


def test_items_one_at_a_time_fetched_in_chunks(tmp_path: Path) -> None:
    """``iter_items``: every item in the order asked (in order, then a random permutation across two volumes and
    the patch mode), one at a time, equal to ``dataset[i]`` key by key with 0 and 2 workers — held to the end, so
    reused memory would show — and the CT's voxels are pydicom's."""
    from cubepacs.research.dataset import CubeDataset
    from cubepacs.research.loading import iter_items

    slices, start, refs = _ct_and_t1(tmp_path)
    shuffled = torch.randperm(len(slices), generator=torch.Generator().manual_seed(3)).tolist()[:70]
    for order in (list(range(start, start + 40)), shuffled):
        for workers in (0, 2):
            held = list(iter_items(slices, order, chunk=16, num_workers=workers))
            assert len(held) == len(order), workers
            for i, item in zip(order, held, strict=True):
                here = slices[i]
                assert list(item) == list(here) and item["source"] == here["source"], (i, workers)
                for key in ("image", "spacing", "origin", "orientation", "index"):
                    assert item[key].dtype == here[key].dtype and torch.equal(item[key], here[key]), (i, key)
                if start <= i < start + len(refs):
                    np.testing.assert_array_equal(item["image"].numpy(), _rescaled(refs[i - start]))
    patches = CubeDataset(tmp_path, mode="patch", patch_size=(4, 32, 32), patches_per_volume=3, seed=1)
    assert all(torch.equal(item["image"], patches[i]["image"]) for i, item in
               zip(range(len(patches)), iter_items(patches, chunk=4, num_workers=2), strict=True))
    with pytest.raises(TypeError, match="batch_size"):
        list(iter_items(slices, batch_size=4))
