"""atomic_write: durable replace, folders remembered but re-made when removed, temporary names unique."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest

from cubepacs._atomic import atomic_write


def test_folder_removed_between_writes_is_made_again(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "x.dcm"
    atomic_write(target, [b"one"])
    shutil.rmtree(tmp_path / "a")  # e.g. a delete of the whole study, while the folder is remembered
    atomic_write(target, [b"two"])
    assert target.read_bytes() == b"two"


def test_concurrent_writers_leave_no_temporary_file(tmp_path: Path) -> None:
    def write(k: int) -> None:
        for n in range(20):
            atomic_write(tmp_path / "f" / f"{k}-{n}.bin", [bytes([k]) * 1000, memoryview(b"end")])

    threads = [threading.Thread(target=write, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    names = sorted(p.name for p in (tmp_path / "f").iterdir())
    assert len(names) == 160 and not [n for n in names if n.endswith(".tmp")]
    assert (tmp_path / "f" / "3-7.bin").read_bytes() == b"\x03" * 1000 + b"end"


def test_a_refused_page_cache_drop_changes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``drop_from`` is advice: a file system refusing ``posix_fadvise`` (EINVAL here, as a FUSE or network file
    system may) still gets the file, durably, under its name."""
    import errno
    import os

    def refuse(*_: object) -> None:
        raise OSError(errno.EINVAL, "Invalid argument")

    monkeypatch.setattr(os, "posix_fadvise", refuse, raising=False)
    atomic_write(tmp_path / "s" / "x.dcm", [b"header", memoryview(b"pixels" * 1000)], drop_from=6)
    assert (tmp_path / "s" / "x.dcm").read_bytes() == b"header" + b"pixels" * 1000
    assert [p.name for p in (tmp_path / "s").iterdir()] == ["x.dcm"]
