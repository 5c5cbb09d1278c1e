"""The index on SQLAlchemy 2: one code path for SQLite (embedded) and PostgreSQL.

Connection string
-----------------
``sqlite:////srv/cubepacs/index.db`` (``sqlite:///relative.db``), ``postgresql://user:pass@host:5432/db``
(driven by psycopg 3).

Options
-------
``echo`` (bool): log SQL. Passwords are never logged (URLs are masked).

Example
-------
>>> idx = Index.from_url("sqlite://")
>>> ev = {"tenant": "t", "study_uid": "1.2", "series_uid": "1.2.3", "sop_uid": "1.2.3.4", "key": "k",
...       "attrs": {"PatientID": "P1", "Modality": "CT", "StudyDate": "20240101"}}
>>> idx.add_instance(ev), idx.add_instance(ev)
(True, False)
>>> [s["study_uid"] for s in idx.search_studies("t", {"PatientID": "P*"})]
['1.2']
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import ColumnElement, and_, create_engine, event, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError
from sqlalchemy.sql import Select

from cubepacs._registry import mask_url
from cubepacs.archive.index.matching import condition, study_order
from cubepacs.archive.index.models import (
    DIALECT_MIGRATIONS,
    MIGRATIONS,
    SCHEMA_VERSION,
    dicom_instance,
    dicom_instance_json,
    dicom_json_meta,
    dicom_state_meta,
    metadata,
    schema_version,
)
from cubepacs.archive.index.statements import fit, instance_row, int_or_none, statements
from cubepacs.errors import BackendError


def _tables(conn: Connection) -> list[str]:
    """The tables of the index's database (its schema migration looks before it creates)."""
    from sqlalchemy import inspect

    return list(inspect(conn).get_table_names())

STUDY_FIELDS = {
    "StudyInstanceUID": "study_uid", "PatientID": "patient_id", "PatientName": "patient_name",
    "PatientSex": "patient_sex", "PatientBirthDate": "patient_birth_date", "StudyDate": "study_date",
    "StudyTime": "study_time", "AccessionNumber": "accession_number", "StudyID": "study_id",
    "StudyDescription": "study_description", "ReferringPhysicianName": "referring_physician",
    "ModalitiesInStudy": "modality",
}
SERIES_FIELDS = {"SeriesInstanceUID": "series_uid", "Modality": "modality", "SeriesNumber": "series_number",
                 "SeriesDescription": "series_description", "SeriesDate": "series_date"}
INSTANCE_FIELDS = {"SOPInstanceUID": "sop_uid", "SOPClassUID": "sop_class_uid", "InstanceNumber": "instance_number"}


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _hash(uid: str) -> str:
    return hashlib.blake2b(uid.encode(), digest_size=16).hexdigest()


# the VR of each queried column (PS3.6), which decides how a query value matches it (index/matching.py)
_VRS = {"study_uid": "UI", "series_uid": "UI", "sop_uid": "UI", "sop_class_uid": "UI", "patient_id": "LO",
        "patient_name": "PN", "referring_physician": "PN", "patient_sex": "CS", "modality": "CS",
        "patient_birth_date": "DA", "study_date": "DA", "series_date": "DA", "study_time": "TM",
        "accession_number": "SH", "study_id": "SH", "study_description": "LO", "series_description": "LO",
        "series_number": "IS", "instance_number": "IS", "rows": "US", "columns": "US", "frames": "IS"}


def _where(table: Any, fields: dict[str, str], filters: dict[str, Any], fuzzy: bool, dialect: str = "sqlite",
           qido: bool = False, pn_case_sensitive: bool = False) -> list[ColumnElement[bool]]:
    """Conditions of the ``filters`` (keyword → value) that name one of ``fields``' columns."""
    out = []
    for key, value in filters.items():
        column = fields.get(key)
        if column is None:
            continue
        cond = condition(table.c[column], _VRS.get(column, "LO"), value, dialect, qido, pn_case_sensitive, fuzzy)
        if cond is not None:
            out.append(cond)
    return out


class Index:
    """Patient/study/series/instance index with the web worker's work table."""

    def __init__(self, engine: Engine, url: str, pn_case_sensitive: bool = False) -> None:
        self.engine = engine
        self.url = mask_url(url)
        self.pn_case_sensitive = pn_case_sensitive  # PS3.4 C.2.2.2.1 leaves PN case to the archive: a setting
        with engine.connect():  # a database that cannot be reached is said at once, not after the retries below
            pass
        for attempt in range(10):  # services started together race to create the schema: the losers retry
            try:
                self.migrate()
                break
            except (OperationalError, IntegrityError, ProgrammingError):
                if attempt == 9:
                    raise
                time.sleep(0.2 * (attempt + 1))

    @classmethod
    def from_url(cls, url: str, echo: bool = False, pn_case_sensitive: bool = False) -> Index:
        target = url
        if url.startswith("postgresql://"):
            target = "postgresql+psycopg://" + url[len("postgresql://"):]
        kwargs: dict[str, Any] = {"echo": echo, "future": True}
        if url.startswith("sqlite"):
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        else:
            kwargs.update(pool_pre_ping=True, pool_size=10)
        engine = create_engine(target, **kwargs)
        if url.startswith("sqlite"):
            @event.listens_for(engine, "connect")
            def _pragmas(conn: Any, _record: Any) -> None:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
        try:
            return cls(engine, url, pn_case_sensitive)
        except Exception as exc:
            detail = str(getattr(exc, "orig", exc)).splitlines()[0][:200]
            raise BackendError(f"index {mask_url(url)} is not usable: {type(exc).__name__}: {detail}") from exc

    def migrate(self) -> None:
        """Create the tables, or apply the migrations an older index lacks (in one transaction, recorded in
        ``cubepacs_schema``; ``docs/design.md``, "Index schema versions"). An index of a newer schema than this
        code knows is refused: BackendError, nothing changed."""
        with self.engine.begin() as conn:  # before create_all: a newer index must not gain tables either
            if schema_version.name in _tables(conn):
                newest = conn.execute(select(func.max(schema_version.c.version))).scalar()
                if newest is not None and newest > SCHEMA_VERSION:
                    raise BackendError(f"index {self.url} has schema version {newest}, newer than this cubepacs "
                                       f"knows ({SCHEMA_VERSION}): run the cubepacs that wrote it, or a newer one")
        metadata.create_all(self.engine)
        with self.engine.begin() as conn:
            current = conn.execute(select(func.max(schema_version.c.version))).scalar()
            if current is None:
                conn.execute(schema_version.insert().values(version=SCHEMA_VERSION))
                return
            if current < SCHEMA_VERSION:
                logging.getLogger("cubepacs.index").info("index %s: schema version %d migrated to %d", self.url,
                                                         current, SCHEMA_VERSION)
            for version in range(current + 1, SCHEMA_VERSION + 1):
                for statement in [*MIGRATIONS.get(version, []),
                                  *DIALECT_MIGRATIONS.get(version, {}).get(conn.dialect.name, [])]:
                    conn.exec_driver_sql(statement)
                conn.execute(schema_version.insert().values(version=version))

    def _insert(self, conn: Connection, table: Any) -> Any:
        return (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(table)

    def add_instance(self, ev: dict[str, Any]) -> bool:
        """Index one stored instance (a storage event); False when it was already indexed (idempotent).

        An event marked ``replace`` (a re-sent instance stored with ``overwrite``) updates the instance row and
        makes its series (and a series it moved out of) pending again, so that metadata and cube are rebuilt.
        """
        if not ev.get("replace"):
            return self.add_instances([ev])[0]
        tenant, study, series = ev["tenant"], ev["study_uid"], ev["series_uid"]
        now, row, i = _now(), instance_row(ev), dicom_instance
        with self.engine.begin() as conn:
            moved_from: tuple[str, str] | None = None
            old = conn.execute(select(i.c.study_uid, i.c.series_uid).where(
                i.c.tenant_id == tenant, i.c.sop_uid == ev["sop_uid"])).first()
            if old is not None and (old[0], old[1]) != (study, series):
                moved_from = (old[0], old[1])
            ins = self._insert(conn, i).values(tenant_id=tenant, sop_uid=ev["sop_uid"], created_time=now, **row)
            conn.execute(ins.on_conflict_do_update(index_elements=["tenant_id", "sop_uid"], set_=row))
            if ev.get("meta"):
                self._keep_docs(conn, [ev])
            else:  # replaced by bytes without a kept document: the old one describes what is gone
                ij = dicom_instance_json
                conn.execute(ij.delete().where(ij.c.tenant_id == tenant, ij.c.sop_uid == ev["sop_uid"]))
            self._series_changed(conn, tenant, study, series, ev.get("attrs", {}), now)
            if moved_from is not None:
                self._recount(conn, tenant, *moved_from, now)
        return True

    def add_instances(self, events: Sequence[dict[str, Any]]) -> list[bool]:
        """Index a batch of storage events in one transaction; for each, whether it changed the index.

        New instances go in with one multi-row ``INSERT … ON CONFLICT DO NOTHING``; every series they touch is
        then counted, upserted and flagged once (not once per instance). ``replace`` events go one by one.

        Example
        -------
        >>> idx = Index.from_url("sqlite://")
        >>> evs = [{"tenant": "t", "study_uid": "1", "series_uid": "1.1", "sop_uid": f"1.1.{n}", "key": "k",
        ...         "attrs": {}} for n in (1, 2, 1)]
        >>> idx.add_instances(evs), idx.search_series("t", {})[0]["series_related_instances"]
        ([True, True, False], 2)
        """
        out = [False] * len(events)
        first: dict[tuple[str, str], int] = {}
        for n, ev in enumerate(events):
            if ev.get("replace"):
                out[n] = self.add_instance(ev)
            else:
                first.setdefault((ev["tenant"], ev["sop_uid"]), n)
        if not first:
            return out
        now = _now()
        params = [{"tenant_id": t, "sop_uid": sop, "created_time": now, **instance_row(events[n])}
                  for (t, sop), n in first.items()]
        with self.engine.begin() as conn:
            inserted = {(r[0], r[1]) for r in conn.execute(statements(conn.dialect.name)["instances"], params)}
            touched: dict[tuple[str, str, str], dict[str, Any]] = {}
            new = []
            for key, n in first.items():
                if key in inserted:
                    out[n] = True
                    new.append(ev := events[n])
                    touched.setdefault((ev["tenant"], ev["study_uid"], ev["series_uid"]), ev.get("attrs", {}))
            self._keep_docs(conn, new)
            for (tenant, study, series), attrs in touched.items():
                self._series_changed(conn, tenant, study, series, attrs, now, first=True)
        return out

    def _keep_docs(self, conn: Connection, events: Sequence[dict[str, Any]]) -> None:
        """Keep (insert or replace) the DICOM JSON that storage events carry (``meta``: zlib-compressed, base64)."""
        docs = [{"tenant_id": ev["tenant"], "sop_uid": ev["sop_uid"], "doc": base64.b64decode(ev["meta"])}
                for ev in events if ev.get("meta")]
        if docs:
            conn.execute(statements(conn.dialect.name)["doc"], docs)

    def instance_docs(self, tenant: str, study_uid: str, series_uid: str) -> dict[str, bytes]:
        """The DICOM JSON kept at ingest for the instances of a series: SOP Instance UID → zlib-compressed JSON.

        Example
        -------
        >>> import base64, zlib
        >>> idx = Index.from_url("sqlite://")
        >>> doc = base64.b64encode(zlib.compress(b'{"00080060":{"vr":"CS","Value":["CT"]}}')).decode()
        >>> idx.add_instances([{"tenant": "t", "study_uid": "1", "series_uid": "1.1", "sop_uid": "1.1.1",
        ...                     "key": "k", "attrs": {}, "meta": doc}])
        [True]
        >>> zlib.decompress(idx.instance_docs("t", "1", "1.1")["1.1.1"])
        b'{"00080060":{"vr":"CS","Value":["CT"]}}'
        """
        with self.engine.connect() as conn:
            rows = conn.execute(statements(conn.dialect.name)["docs"], {"t": tenant, "st": study_uid, "se": series_uid})
            return {r[0]: bytes(r[1]) for r in rows}

    def _series_changed(self, conn: Connection, tenant: str, study: str, series: str, a: dict[str, Any],
                        now: dt.datetime, first: bool = False) -> None:
        """Upsert a series' state row (instance count; attributes of its first instances with ``first``, else of
        this one: a replaced instance) and flag it."""
        values = fit(dicom_state_meta, {
            "patient_id": a.get("PatientID"), "patient_name": a.get("PatientName"),
            "patient_sex": a.get("PatientSex"), "patient_birth_date": a.get("PatientBirthDate"),
            "study_date": a.get("StudyDate"), "study_time": a.get("StudyTime"),
            "accession_number": a.get("AccessionNumber"), "study_id": a.get("StudyID"),
            "study_description": a.get("StudyDescription"), "referring_physician": a.get("ReferringPhysicianName"),
            "modality": a.get("Modality"), "series_number": int_or_none(a.get("SeriesNumber")),
            "series_description": a.get("SeriesDescription"), "series_date": a.get("SeriesDate"),
            "series_related_instances": self._count(conn, tenant, study, series), "updated_time": now,
        })
        conn.execute(statements(conn.dialect.name)["state_first" if first else "state"], {
            "tenant_id": tenant, "study_uid": study, "series_uid": series, "study_uid_hash": _hash(study),
            "series_uid_hash": _hash(series), "created_time": now, **values})
        self._flag(conn, tenant, study, series, now)

    def _count(self, conn: Connection, tenant: str, study: str, series: str) -> int:
        return int(conn.execute(statements(conn.dialect.name)["count"],
                                {"t": tenant, "st": study, "se": series}).scalar_one())

    def _flag(self, conn: Connection, tenant: str, study: str, series: str, now: dt.datetime) -> None:
        """Make a series pending for the web worker (its metadata and cube are rebuilt)."""
        conn.execute(statements(conn.dialect.name)["flag"], {
            "tenant_id": tenant, "study_uid": study, "series_uid": series, "flag_time": now, "json_status": 0,
            "retry_times": 0, "updated_time": now})

    def _recount(self, conn: Connection, tenant: str, study: str, series: str, now: dt.datetime) -> bool:
        """After instances left a series: update its count and flag it, or drop its rows when it is empty.
        True when the series is gone."""
        s, j = dicom_state_meta, dicom_json_meta
        key = (s.c.tenant_id == tenant, s.c.study_uid == study, s.c.series_uid == series)
        count = self._count(conn, tenant, study, series)
        if count == 0:
            conn.execute(s.delete().where(*key))
            conn.execute(j.delete().where(j.c.tenant_id == tenant, j.c.study_uid == study, j.c.series_uid == series))
            return True
        conn.execute(update(s).where(*key).values(series_related_instances=count, updated_time=now))
        self._flag(conn, tenant, study, series, now)
        return False

    def _conditions(self, table: Any, fields: dict[str, str], filters: dict[str, Any], fuzzy: bool,
                    qido: bool) -> list[ColumnElement[bool]]:
        return _where(table, fields, filters, fuzzy, self.engine.dialect.name, qido, self.pn_case_sensitive)

    def search_studies(self, tenant: str, filters: dict[str, Any], limit: int = 100, offset: int = 0,
                       fuzzy: bool = False, qido: bool = False, order: str = "",
                       label: str = "") -> list[dict[str, Any]]:
        """Studies of ``tenant`` matching ``filters`` (DICOM keywords → values, matched as PS3.4 C.2.2.2 says:
        ``index/matching.py``; ``qido``: a comma separates values too), ordered by study UID, or by ``order``
        (one of ``matching.STUDY_ORDERS``, ``-`` before it: descending; ties by study UID); ``label``: only studies
        carrying it (``index/labels.py``)."""
        from cubepacs.archive.index.labels import studies_with

        s = dicom_state_meta
        cond = [s.c.tenant_id == tenant, *self._conditions(s, STUDY_FIELDS, filters, fuzzy, qido)]
        if label:
            cond.append(s.c.study_uid.in_(studies_with(tenant, label)))
        cols = [func.max(s.c[c]).label(c) for c in STUDY_FIELDS.values() if c not in ("study_uid", "modality")]
        matching = select(s.c.study_uid).where(*cond).distinct()
        keys = [*study_order(order), s.c.study_uid]
        q: Select[Any] = (select(s.c.study_uid, *cols, func.count().label("series"),
                                 func.sum(s.c.series_related_instances).label("instances"))
                          .where(s.c.tenant_id == tenant, s.c.study_uid.in_(matching))
                          .group_by(s.c.study_uid).order_by(*keys).limit(limit).offset(offset))
        with self.engine.connect() as conn:
            rows = [dict(r._mapping) for r in conn.execute(q)]
            if rows:
                mods = conn.execute(select(s.c.study_uid, s.c.modality).where(
                    s.c.tenant_id == tenant, s.c.study_uid.in_([r["study_uid"] for r in rows])).distinct())
                by_study: dict[str, set[str]] = {}
                for uid, mod in mods:
                    if mod:
                        by_study.setdefault(uid, set()).add(mod)
                for r in rows:
                    r["modalities"] = sorted(by_study.get(r["study_uid"], set()))
        return rows

    def search_series(self, tenant: str, filters: dict[str, Any], study_uid: str | None = None, limit: int = 100,
                      offset: int = 0, fuzzy: bool = False, qido: bool = False) -> list[dict[str, Any]]:
        """Series of ``tenant`` (in ``study_uid`` when given) matching ``filters`` (study and series keys)."""
        s = dicom_state_meta
        cond = [s.c.tenant_id == tenant, *self._conditions(s, {**STUDY_FIELDS, **SERIES_FIELDS}, filters, fuzzy, qido)]
        if study_uid:
            cond.append(s.c.study_uid == study_uid)
        q = select(s).where(*cond).order_by(s.c.study_uid, s.c.series_number, s.c.series_uid).limit(limit)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(q.offset(offset))]

    def search_instances(self, tenant: str, filters: dict[str, Any], study_uid: str | None = None,
                         series_uid: str | None = None, limit: int = 1000, offset: int = 0,
                         fuzzy: bool = False, qido: bool = False) -> list[dict[str, Any]]:
        """Instances of ``tenant`` matching ``filters`` (study, series and instance keys)."""
        i, s = dicom_instance, dicom_state_meta
        cond = [i.c.tenant_id == tenant, *self._conditions(i, INSTANCE_FIELDS, filters, fuzzy, qido),
                *self._conditions(s, {**STUDY_FIELDS, **SERIES_FIELDS}, filters, fuzzy, qido)]
        if study_uid:
            cond.append(i.c.study_uid == study_uid)
        if series_uid:
            cond.append(i.c.series_uid == series_uid)
        study_series = {c for c in (*STUDY_FIELDS.values(), *SERIES_FIELDS.values()) if c not in i.c}
        q = (select(i, *[s.c[c] for c in sorted(study_series)])
             .join(s, and_(s.c.tenant_id == i.c.tenant_id, s.c.study_uid == i.c.study_uid,
                           s.c.series_uid == i.c.series_uid))
             .where(*cond).order_by(i.c.study_uid, i.c.series_uid, i.c.instance_number, i.c.sop_uid))
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(q.limit(limit).offset(offset))]

    def pending_series(self, quiet_seconds: float, max_retries: int, limit: int = 50) -> list[dict[str, Any]]:
        """Series whose last instance arrived more than ``quiet_seconds`` ago and whose JSON is not built."""
        j = dicom_json_meta
        cutoff = _now() - dt.timedelta(seconds=quiet_seconds)
        q = (select(j).where(j.c.json_status == 0, j.c.flag_time <= cutoff, j.c.retry_times < max_retries)
             .order_by(j.c.flag_time).limit(limit))
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(q)]

    def finish_series(self, row: dict[str, Any], ok: bool, max_retries: int, json_key: str | None = None,
                      cube_key: str | None = None, instances: int | None = None) -> bool:
        """Record the web worker's result, unless the series changed meanwhile (then it stays pending)."""
        j = dicom_json_meta
        key = and_(j.c.tenant_id == row["tenant_id"], j.c.study_uid == row["study_uid"],
                   j.c.series_uid == row["series_uid"], j.c.flag_time == row["flag_time"])
        if ok:
            values: dict[str, Any] = {"json_status": 1, "json_key": json_key, "cube_key": cube_key,
                                      "built_instances": instances, "updated_time": _now()}
        else:
            retries = row["retry_times"] + 1
            values = {"retry_times": retries, "json_status": 2 if retries >= max_retries else 0,
                      "updated_time": _now()}
        with self.engine.begin() as conn:
            return bool(conn.execute(update(j).where(key).values(**values)).rowcount)

    def series_state(self, tenant: str, study_uid: str, series_uid: str) -> dict[str, Any] | None:
        """The web worker's row for one series."""
        j = dicom_json_meta
        with self.engine.connect() as conn:
            r = conn.execute(select(j).where(j.c.tenant_id == tenant, j.c.study_uid == study_uid,
                                             j.c.series_uid == series_uid)).first()
        return dict(r._mapping) if r else None

    def frame_source(self, tenant: str, study_uid: str, series_uid: str, sop_uid: str) -> dict[str, Any] | None:
        """One instance row with its series' build state (``json_status``, ``cube_key``, ``cube_time``): what a
        WADO frame request needs, in one prepared query; None when there is no such instance.

        Example
        -------
        >>> idx = Index.from_url("sqlite://")
        >>> _ = idx.add_instance({"tenant": "t", "study_uid": "1", "series_uid": "1.1", "sop_uid": "1.1.1",
        ...                       "key": "k", "attrs": {}})
        >>> row = idx.frame_source("t", "1", "1.1", "1.1.1"); row["storage_key"], row["json_status"]
        ('k', 0)
        """
        with self.engine.connect() as conn:
            r = conn.execute(statements(conn.dialect.name)["frame_source"],
                             {"t": tenant, "st": study_uid, "se": series_uid, "sop": sop_uid}).first()
        return dict(r._mapping) if r else None

    def frame_sources(self, tenant: str, study_uid: str, series_uid: str) -> list[dict[str, Any]]:
        """``frame_source`` of every instance of a series, in instance-number order (what a viewer scrolls).

        Example
        -------
        >>> idx = Index.from_url("sqlite://")
        >>> for n in (2, 1):
        ...     _ = idx.add_instance({"tenant": "t", "study_uid": "1", "series_uid": "1.1", "sop_uid": f"1.1.{n}",
        ...                           "key": f"k{n}", "attrs": {"InstanceNumber": n}})
        >>> [r["sop_uid"] for r in idx.frame_sources("t", "1", "1.1")]
        ['1.1.1', '1.1.2']
        """
        with self.engine.connect() as conn:
            rows = conn.execute(statements(conn.dialect.name)["frame_sources"],
                                {"t": tenant, "st": study_uid, "se": series_uid})
            return [dict(r._mapping) for r in rows]

    def instances_of(self, tenant: str, study_uid: str, series_uid: str | None = None,
                     sop_uids: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """Instance rows of a study (or series), in instance-number order."""
        filters: dict[str, Any] = {"SOPInstanceUID": list(sop_uids)} if sop_uids else {}
        return self.search_instances(tenant, filters, study_uid, series_uid, limit=1_000_000)

    def delete(self, tenant: str, study: str, series: str | None = None, sops: Sequence[str] | None = None,
               remove: Callable[[list[str]], None] | None = None) -> list[str]:
        """Remove the rows of a study, series or instances of ``tenant``; returns the storage keys that held them
        (instance files, and the metadata JSON and cube of every series touched: those are rebuilt for a series
        that keeps instances). ``remove(keys)`` is called before the rows go, so that a crash in between leaves
        rows to delete again, never unreachable files. Idempotent: deleting what is gone returns ``[]``."""
        i, j = dicom_instance, dicom_json_meta
        cond = [i.c.tenant_id == tenant, i.c.study_uid == study]
        if series:
            cond.append(i.c.series_uid == series)
        if sops:
            cond.append(i.c.sop_uid.in_(list(sops)))
        now = _now()
        with self.engine.begin() as conn:
            rows = conn.execute(select(i.c.sop_uid, i.c.series_uid, i.c.storage_key).where(*cond)).all()
            if not rows:
                return []
            keys = [r.storage_key for r in rows]
            for uid in {r.series_uid for r in rows}:
                built = conn.execute(select(j.c.json_key, j.c.cube_key).where(
                    j.c.tenant_id == tenant, j.c.study_uid == study, j.c.series_uid == uid)).first()
                if built is not None:
                    keys.extend(k for k in built if k)
            if remove is not None:
                remove(keys)
            ij = dicom_instance_json
            conn.execute(ij.delete().where(ij.c.tenant_id == tenant,
                                           ij.c.sop_uid.in_(select(i.c.sop_uid).where(*cond).scalar_subquery())))
            conn.execute(i.delete().where(*cond))
            for uid in {r.series_uid for r in rows}:
                self._recount(conn, tenant, study, uid, now)
            if series is None and sops is None:  # the study is gone: its labels too
                from cubepacs.archive.index.labels import forget_study

                forget_study(conn, tenant, study)
        return keys

    def close(self) -> None:
        """Release the connection pool."""
        self.engine.dispose()
