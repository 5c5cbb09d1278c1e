"""Truncated or corrupted cubes raise InvalidCubeError naming the block; writes are atomic."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import cubepacs
from cubepacs.cube.format import HEADER_SIZE
from cubepacs.cube.reader import CubeReader
from cubepacs.errors import InvalidCubeError
from tests.conftest import SERIES


@pytest.fixture(scope="module")
def cube_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("c") / "mr.dcbs"
    series = next(s for s in SERIES if s.name.startswith("mr_ge_mr750"))
    cubepacs.save(cubepacs.load_from_dicom_folder(series), path)
    return path.read_bytes()


def _flip(data: bytes, pos: int) -> bytes:
    return data[:pos] + bytes([data[pos] ^ 0xFF]) + data[pos + 1 :]


def test_truncated_cube_names_the_block(cube_bytes: bytes) -> None:
    with pytest.raises(InvalidCubeError, match="header"):
        cubepacs.load(cube_bytes[:50])
    reader = CubeReader(cube_bytes)
    h = reader.header
    with pytest.raises(InvalidCubeError, match="meta"):
        cubepacs.load_meta(cube_bytes[: h.meta_offset + 10])
    cut = cubepacs.load(cube_bytes[: h.data_offset + h.data_length - 5])
    with pytest.raises(InvalidCubeError, match=r"frame \d+.*truncated"):
        cut.raw_image  # noqa: B018


def test_corruption_is_detected_never_returned(cube_bytes: bytes) -> None:
    h = CubeReader(cube_bytes).header
    with pytest.raises(InvalidCubeError, match=r"header.*checksum"):
        cubepacs.load(_flip(cube_bytes, 20))
    with pytest.raises(InvalidCubeError, match=r"meta.*checksum"):
        cubepacs.load_meta(_flip(cube_bytes, h.meta_offset + 5))
    with pytest.raises(InvalidCubeError, match=r"index.*checksum"):
        cubepacs.load(_flip(cube_bytes, h.index_offset + 3)).frame(0)
    damaged = _flip(cube_bytes, h.data_offset + h.data_length // 2)
    with pytest.raises(InvalidCubeError, match=r"frame \d+.*checksum"):
        cubepacs.load(damaged).raw_image  # noqa: B018
    problems = cubepacs.verify(damaged)
    assert len(problems) == 1 and "checksum" in problems[0]
    assert cubepacs.verify(cube_bytes) == []


def test_not_a_cube_and_wrong_version(cube_bytes: bytes, tmp_path: Path) -> None:
    with pytest.raises(InvalidCubeError, match="bad magic"):
        cubepacs.load(b"x" * 200)
    future = cube_bytes[:8] + (9).to_bytes(2, "little") + cube_bytes[10:]
    with pytest.raises(InvalidCubeError, match="version 9"):
        cubepacs.load(future)
    empty = tmp_path / "empty.dcbs"
    empty.write_bytes(b"")
    with pytest.raises(InvalidCubeError, match="empty"):
        cubepacs.load(empty)
    assert len(cube_bytes) > HEADER_SIZE


def test_failed_write_leaves_nothing_behind(tmp_path: Path) -> None:
    image = cubepacs.load_from_dicom_folder(SERIES[0])
    with pytest.raises(Exception, match="unknown codec"):
        cubepacs.save(image, tmp_path / "x.dcbs", codec="nope")
    assert list(tmp_path.iterdir()) == []


def test_existing_file_is_replaced_whole(tmp_path: Path) -> None:
    target = tmp_path / "x.dcbs"
    target.write_bytes(b"old")
    image = cubepacs.load_from_dicom_folder(SERIES[2])
    cubepacs.save(image, target, codec="blosc2")
    np.testing.assert_array_equal(cubepacs.load(target).raw_image, image.raw_image)
    assert [p.name for p in tmp_path.iterdir()] == ["x.dcbs"]
