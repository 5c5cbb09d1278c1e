"""Query matching (PS3.4 C.2.2.2, ``index/matching.py``) on both index backends: the cases the Orthanc
differential test (``test_query_orthanc.py``) cannot show, because Orthanc answers them otherwise or its data
has none (case-sensitive PN as a setting, a stored value longer than the old columns, a schema-2 PostgreSQL index
brought up to date)."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from typing import Any

import pytest

from cubepacs.archive.index.store import Index

ADMIN = os.environ.get("CUBEPACS_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")

# crafted index rows (no file needed: these are the values the ingest path hands the index)
ROWS = {
    "1": {"PatientName": "Yamada^Tarou=山田^太郎=やまだ^たろう", "PatientID": "JP-1", "Modality": "US",
          "StudyDate": "20210615", "StudyTime": "0815"},
    "2": {"PatientName": "smith^john", "PatientID": "p-2", "Modality": "CR", "StudyDate": "1995.05.01",
          "StudyTime": "101010.5", "StudyDescription": "Chest, PA"},
    "3": {"PatientName": "Smith^Jane", "PatientID": "P-3", "Modality": "MR", "StudyDate": "***", "StudyTime": "23"},
    "4": {"PatientName": "Müller^Jürgen", "PatientID": "P-4", "Modality": "CT", "StudyDate": "19991231",
          "StudyTime": "bad", "AccessionNumber": "A_1%", "StudyID": "d6e895774587360288a394441a225639" * 2},
}


def _fill(idx: Index) -> Index:
    idx.add_instances([{"tenant": "t", "study_uid": f"1.{n}", "series_uid": f"1.{n}.1", "sop_uid": f"1.{n}.1.1",
                        "key": f"k{n}", "attrs": attrs} for n, attrs in ROWS.items()])
    return idx


@contextlib.contextmanager
def postgres_database() -> Iterator[str]:
    """A new PostgreSQL database on the test server, dropped afterwards."""
    import psycopg

    name = f"cubepacs_query_{os.getpid()}_{time.monotonic_ns()}"
    with psycopg.connect(ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield ADMIN.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('query')}/index.db"
    else:
        with postgres_database() as pg:
            yield pg


@pytest.fixture(scope="module")
def index(url: str) -> Iterator[Index]:
    idx = _fill(Index.from_url(url))
    yield idx
    idx.close()


def studies(idx: Index, qido: bool = False, **filters: Any) -> list[str]:
    return [r["study_uid"] for r in idx.search_studies("t", filters, qido=qido)]


@pytest.mark.parametrize(("filters", "qido", "expected"), [
    ({"ModalitiesInStudy": "US\\CR"}, False, ["1.1", "1.2"]),
    ({"ModalitiesInStudy": "US,CR"}, True, ["1.1", "1.2"]),
    ({"ModalitiesInStudy": "US,CR"}, False, []),  # C-FIND: a comma is a character
    ({"StudyInstanceUID": "1.1\\1.4"}, False, ["1.1", "1.4"]),
    ({"StudyInstanceUID": ["1.2", "1.3"]}, False, ["1.2", "1.3"]),
    ({"PatientID": "P-*"}, False, ["1.3", "1.4"]),  # case-sensitive outside PN (SQLite's LIKE is not)
    ({"PatientID": "p?2"}, False, ["1.2"]),  # ? is one character
    ({"PatientID": "P?2"}, False, []),
    ({"AccessionNumber": "A_1%"}, False, ["1.4"]),  # SQL's own wild cards are characters
    ({"AccessionNumber": "A?1*"}, False, ["1.4"]),
    ({"StudyDate": "-19991231"}, False, ["1.4"]),  # neither '***' nor '1995.05.01' falls in a range
    ({"StudyDate": "1995.05.01"}, False, ["1.2"]),  # … but a single value matches what is stored
    ({"StudyTime": "-10"}, False, ["1.1", "1.2"]),  # 08:15 and 10:10:10.5: the bound counts to 10:59:59
    ({"StudyTime": "1010-"}, False, ["1.2", "1.3"]),
    ({"PatientName": "SMITH*"}, False, ["1.2", "1.3"]),
    ({"PatientName": "山田*"}, False, ["1.1"]),
    ({"PatientName": "=山田^太郎"}, False, ["1.1"]),
    ({"PatientName": "yamada^tarou=山田^太郎"}, False, ["1.1"]),
    ({"PatientName": "Yamada^Tarou=鈴木*"}, False, []),
    ({"PatientName": "müller^jürgen"}, False, ["1.4"]),
    ({"PatientName": "*^J?n*"}, False, ["1.3"]),
    ({"StudyDescription": "Chest, PA"}, False, ["1.2"]),
    ({"PatientID": "*"}, False, ["1.1", "1.2", "1.3", "1.4"]),
    ({"PatientID": "P-*\\JP-1"}, False, ["1.1"]),  # in a list, * is a character (lists: UIDs only, C.2.2.2.2)
    ({"PatientName": "SMITH*\\yamada^tarou"}, False, ["1.1"]),
])
def test_matching(index: Index, filters: dict[str, Any], qido: bool, expected: list[str]) -> None:
    assert studies(index, qido, **filters) == expected


def test_pn_case_sensitivity_is_a_setting(index: Index, url: str) -> None:
    idx = Index.from_url(url, pn_case_sensitive=True)  # the same rows
    try:
        assert studies(idx, PatientName="smith*") == ["1.2"]
        assert studies(idx, PatientName="Smith*") == ["1.3"]
        assert studies(idx, PatientName="MÜLLER^JÜRGEN") == []
    finally:
        idx.close()


def test_stored_values_come_back_as_stored(index: Index) -> None:
    rows = {r["study_uid"]: r for r in index.search_studies("t", {})}
    assert rows["1.2"]["study_date"] == "1995.05.01" and rows["1.3"]["study_date"] == "***"
    assert rows["1.1"]["patient_name"] == ROWS["1"]["PatientName"]  # all three component groups
    assert rows["1.4"]["study_id"] == ROWS["4"]["StudyID"]  # 64 characters in an SH (16): kept, not cut


@pytest.mark.postgres
def test_a_schema_2_postgresql_index_takes_long_values() -> None:
    """An index made with the length-limited columns of schema 2 (8-character dates, 16-character Study IDs) is
    widened when opened: a malformed value of any length is kept as stored."""
    import psycopg

    with postgres_database() as url:
        Index.from_url(url).close()
        with psycopg.connect(url) as conn:
            for column in ("study_date", "series_date", "patient_birth_date"):
                conn.execute(f"ALTER TABLE dicom_state_meta ALTER COLUMN {column} TYPE VARCHAR(8)")
            conn.execute("ALTER TABLE dicom_state_meta ALTER COLUMN study_id TYPE VARCHAR(16)")
            conn.execute("DELETE FROM cubepacs_schema")
            conn.execute("INSERT INTO cubepacs_schema (version) VALUES (2)")
        idx = _fill(Index.from_url(url))
        try:
            assert studies(idx, StudyDate="1995.05.01") == ["1.2"]
            assert studies(idx, StudyID=ROWS["4"]["StudyID"]) == ["1.4"]
        finally:
            idx.close()
