"""One contract for every index backend: SQLite (embedded) and PostgreSQL (a real server on 127.0.0.1)."""

from __future__ import annotations

import base64
import datetime as dt
import os
import time
import zlib
from collections.abc import Iterator
from typing import Any

import pytest

from cubepacs.archive.index.store import Index


def event(sop: str, series: str = "1.2.3", study: str = "1.2", tenant: str = "t", **attrs: Any) -> dict[str, Any]:
    base = {"PatientID": "P1", "PatientName": "Doe^Jane", "StudyDate": "20240115", "Modality": "CT",
            "InstanceNumber": int(sop.rsplit(".", 1)[-1])}
    return {"tenant": tenant, "study_uid": study, "series_uid": series, "sop_uid": sop, "key": f"{tenant}/{sop}",
            "sop_class_uid": "1.2.840.10008.5.1.4.1.1.2", "attrs": {**base, **attrs}}


class IndexContract:
    """What every index backend must do."""

    @pytest.fixture
    def index(self) -> Iterator[Index]:
        raise NotImplementedError

    def test_study_list_sorts_and_filters_by_label(self, index: Index) -> None:
        from cubepacs.archive.index import labels
        from cubepacs.archive.index.matching import STUDY_ORDERS

        for n in range(30):  # values whose order is the same byte-wise and in a language collation
            attrs = {"PatientName": f"P{(n * 7) % 11:02d}", "PatientID": f"ID{(n * 5) % 13:02d}",
                     "StudyDate": f"2024{(n * 3) % 12 + 1:02d}01", "AccessionNumber": f"A{n % 4}",
                     "Modality": ("CT", "MR", "US")[n % 3]}
            if n % 5:
                attrs["StudyDescription"] = f"D{n % 6}"
            for i in range(n % 3 + 1):
                index.add_instance(event(f"9.{n}.1.{i + 1}", series=f"9.{n}.1", study=f"9.{n}", **attrs))
        rows = index.search_studies("t", {}, 100)
        column = {"date": "study_date", "patient": "patient_name", "patient_id": "patient_id",
                  "accession": "accession_number", "description": "study_description"}
        for order in STUDY_ORDERS:
            for descending in (False, True):
                def key(r: dict[str, Any], order: str = order) -> Any:
                    value = (r[column[order]] if order in column else min(r["modalities"]) if order == "modality"
                             else r[order] if order in ("series", "instances") else r["study_uid"])
                    return (value is not None, value or "")  # a missing value first (last, descending)

                expected = sorted(rows, key=lambda r: r["study_uid"], reverse=descending and order == "uid")
                expected.sort(key=key, reverse=descending)
                got = [index.search_studies("t", {}, 7, offset, order=("-" if descending else "") + order)
                       for offset in range(0, 35, 7)]
                assert [r["study_uid"] for page in got for r in page] == [r["study_uid"] for r in expected], order
        for n in (3, 4, 17):
            labels.add(index, "t", f"9.{n}", "teaching")
        assert [r["study_uid"] for r in index.search_studies("t", {}, order="-date", label="teaching")] == \
            [r["study_uid"] for r in sorted((r for r in rows if r["study_uid"] in ("9.3", "9.4", "9.17")),
                                            key=lambda r: (r["study_date"], r["study_uid"]), reverse=True)]
        assert index.search_studies("u", {}, label="teaching") == []

    def test_add_is_idempotent_and_counts(self, index: Index) -> None:
        assert index.add_instance(event("1.2.3.1"))
        assert not index.add_instance(event("1.2.3.1"))
        assert index.add_instance(event("1.2.3.2"))
        series = index.search_series("t", {})
        assert len(series) == 1 and series[0]["series_related_instances"] == 2
        studies = index.search_studies("t", {})
        assert studies[0]["instances"] == 2 and studies[0]["series"] == 1 and studies[0]["modalities"] == ["CT"]

    def test_matching(self, index: Index) -> None:
        index.add_instance(event("1.2.3.1"))
        index.add_instance(event("5.6.7.1", series="5.6.7", study="5.6", PatientID="Q2", PatientName="Roe^Rick",
                                 StudyDate="20200301", Modality="MR"))
        assert [s["study_uid"] for s in index.search_studies("t", {"PatientID": "P*"})] == ["1.2"]
        assert [s["study_uid"] for s in index.search_studies("t", {"PatientID": "?2"})] == ["5.6"]
        assert len(index.search_studies("t", {"StudyDate": "20200101-20201231"})) == 1
        assert len(index.search_studies("t", {"StudyDate": "-20230101"})) == 1
        assert len(index.search_studies("t", {"StudyDate": "20200101-"})) == 2
        assert len(index.search_studies("t", {"StudyInstanceUID": "1.2\\5.6"})) == 2
        assert len(index.search_studies("t", {"PatientName": "roe*"})) == 1  # names match case-insensitively
        assert len(index.search_studies("t", {"PatientName": "rick"}, fuzzy=True)) == 1
        assert len(index.search_studies("t", {"ModalitiesInStudy": "MR"})) == 1
        assert len(index.search_series("t", {"Modality": "CT"})) == 1
        assert len(index.search_instances("t", {"InstanceNumber": "1"})) == 2
        assert len(index.search_studies("t", {}, limit=1, offset=1)) == 1
        assert index.search_studies("t", {"PatientID": "50%_off"}) == []  # SQL wildcards are literal

    def test_frame_sources_are_a_series_in_instance_order(self, index: Index) -> None:
        for n in (3, 1, 2):
            index.add_instance(event(f"1.2.3.{n}"))
        index.add_instance(event("1.2.3.9", tenant="other"))
        rows = index.frame_sources("t", "1.2", "1.2.3")
        assert [r["sop_uid"] for r in rows] == ["1.2.3.1", "1.2.3.2", "1.2.3.3"]
        one = index.frame_source("t", "1.2", "1.2.3", "1.2.3.2")
        assert one is not None and rows[1] == one  # the same row as one instance's frame source
        assert index.frame_sources("t", "1.2", "9.9") == []

    def test_tenants_never_mix(self, index: Index) -> None:
        index.add_instance(event("1.2.3.1", tenant="a"))
        index.add_instance(event("1.2.3.1", tenant="b"))  # the same UIDs in another tenant: another instance
        assert len(index.search_instances("a", {})) == 1 and len(index.search_instances("b", {})) == 1
        assert index.search_studies("c", {}) == []

    def test_web_worker_table(self, index: Index) -> None:
        index.add_instance(event("1.2.3.1"))
        assert index.pending_series(quiet_seconds=3600, max_retries=3) == []
        time.sleep(0.05)
        (row,) = index.pending_series(quiet_seconds=0.01, max_retries=3)
        assert index.finish_series(row, ok=False, max_retries=1)
        assert index.series_state("t", "1.2", "1.2.3")["json_status"] == 2  # failed for good after 1 retry
        index.add_instance(event("1.2.3.2"))  # a new instance makes it pending again
        time.sleep(0.05)
        (row,) = index.pending_series(quiet_seconds=0.01, max_retries=3)
        index.add_instance(event("1.2.3.3"))  # arrives while the worker builds: its result must not stick
        assert not index.finish_series(row, ok=True, max_retries=3, json_key="j", cube_key="c", instances=2)
        time.sleep(0.05)
        (row,) = index.pending_series(quiet_seconds=0.01, max_retries=3)
        assert index.finish_series(row, ok=True, max_retries=3, json_key="j", cube_key="c", instances=3)
        state = index.series_state("t", "1.2", "1.2.3")
        assert state["json_status"] == 1 and state["built_instances"] == 3
        assert isinstance(state["flag_time"], dt.datetime)

    def test_instance_documents_follow_their_instances(self, index: Index) -> None:
        def doc(text: str) -> str:
            return base64.b64encode(zlib.compress(text.encode())).decode()

        index.add_instances([{**event("1.2.3.1"), "meta": doc('{"a":1}')}, {**event("1.2.3.2"), "meta": doc('{"b":2}')},
                             event("1.2.3.3")])  # kept by the ingest path for two of the three
        index.add_instance({**event("1.2.3.1", tenant="other"), "meta": doc('{"x":0}')})
        kept = index.instance_docs("t", "1.2", "1.2.3")
        assert {k: zlib.decompress(v) for k, v in kept.items()} == {"1.2.3.1": b'{"a":1}', "1.2.3.2": b'{"b":2}'}
        assert not index.add_instance({**event("1.2.3.1"), "meta": doc('{"c":3}')})  # a duplicate keeps its document
        index.add_instance({**event("1.2.3.1"), "meta": doc('{"d":4}'), "replace": True})  # re-sent, overwritten
        index.add_instance({**event("1.2.3.2"), "replace": True})  # replaced by bytes without one: the old goes
        kept = index.instance_docs("t", "1.2", "1.2.3")
        assert {k: zlib.decompress(v) for k, v in kept.items()} == {"1.2.3.1": b'{"d":4}'}
        index.delete("t", "1.2", "1.2.3", ["1.2.3.1"])
        assert index.instance_docs("t", "1.2", "1.2.3") == {}
        assert list(index.instance_docs("other", "1.2", "1.2.3")) == ["1.2.3.1"]  # another tenant's stays


class TestSqlite(IndexContract):
    @pytest.fixture
    def index(self, tmp_path: Any) -> Iterator[Index]:
        idx = Index.from_url(f"sqlite:///{tmp_path}/index.db")
        yield idx
        idx.close()


@pytest.mark.postgres
class TestPostgres(IndexContract):
    @pytest.fixture
    def index(self) -> Iterator[Index]:
        import psycopg

        admin = os.environ.get("CUBEPACS_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
        name = f"cubepacs_test_{os.getpid()}_{time.monotonic_ns()}"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        idx = Index.from_url(admin.rsplit("/", 1)[0] + "/" + name)
        yield idx
        idx.close()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def test_a_version_1_index_gains_the_documents_table(tmp_path: Any) -> None:
    """An index made before the instance documents existed (schema version 1, built here as that version made
    it) is brought up to date when opened: its rows stay, the new table is there."""
    import sqlite3

    path = tmp_path / "old.db"
    idx = Index.from_url(f"sqlite:///{path}")
    idx.add_instance(event("1.2.3.1"))
    idx.close()
    with sqlite3.connect(path) as conn:
        conn.execute("DROP TABLE dicom_instance_json")
        conn.execute("DELETE FROM cubepacs_schema WHERE version > 1")
    idx = Index.from_url(f"sqlite:///{path}")
    try:
        idx.add_instance({**event("1.2.3.2"), "meta": base64.b64encode(zlib.compress(b"{}")).decode()})
        assert list(idx.instance_docs("t", "1.2", "1.2.3")) == ["1.2.3.2"]
        assert len(idx.search_instances("t", {})) == 2
    finally:
        idx.close()
