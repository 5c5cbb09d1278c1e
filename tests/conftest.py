"""Shared fixtures: the real DICOM data set beside the repository (../shared/data)."""

from __future__ import annotations

from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SERIES = sorted(p for p in (DATA / "series").iterdir() if p.is_dir())
SINGLES = sorted((DATA / "single").glob("*.dcm"))
MALFORMED = sorted((DATA / "malformed").iterdir())


def dicom_files(folder: Path) -> list[Path]:
    """Files of a series folder that are DICOM (skips DIRFILE, README)."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix not in (".txt",) and p.name != "DIRFILE")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not DATA.is_dir():
        pytest.fail(f"test data not found at {DATA}: clone the repository beside shared/")
    return DATA
