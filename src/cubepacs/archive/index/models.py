"""Index tables (the reference design's ``dicom_state_meta``, an instance table, and ``dicom_json_meta``).

One SQLAlchemy 2 definition for SQLite and PostgreSQL; ``SCHEMA_VERSION`` is recorded in ``cubepacs_schema``
and migrations (``MIGRATIONS``) bring an older index up to date.

Example
-------
>>> sorted(c.name for c in dicom_json_meta.columns)[1:4]
['cube_key', 'flag_time', 'json_key']
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)

SCHEMA_VERSION = 5
metadata = MetaData()

schema_version = Table(
    "cubepacs_schema", metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
)

dicom_state_meta = Table(
    "dicom_state_meta", metadata,
    Column("tenant_id", String(64), primary_key=True),
    Column("study_uid", String(64), primary_key=True),
    Column("series_uid", String(64), primary_key=True),
    Column("patient_id", String),
    Column("study_uid_hash", String(32)),
    Column("series_uid_hash", String(32)),
    Column("patient_name", String),
    Column("patient_sex", String),
    Column("patient_birth_date", String),
    Column("study_date", String),
    Column("study_time", String),
    Column("accession_number", String),
    Column("study_id", String),
    Column("study_description", String),
    Column("referring_physician", String),
    Column("modality", String),
    Column("series_number", Integer),
    Column("series_description", String),
    Column("series_date", String),
    Column("series_related_instances", Integer, nullable=False, default=0),
    Column("created_time", DateTime(timezone=True), nullable=False),
    Column("updated_time", DateTime(timezone=True), nullable=False),
    Index("ix_state_tenant_patient", "tenant_id", "patient_id"),
    Index("ix_state_tenant_date", "tenant_id", "study_date"),
)

dicom_instance = Table(
    "dicom_instance", metadata,
    Column("tenant_id", String(64), primary_key=True),
    Column("sop_uid", String(64), primary_key=True),
    Column("study_uid", String(64), nullable=False),
    Column("series_uid", String(64), nullable=False),
    Column("sop_class_uid", String(64)),
    Column("instance_number", Integer),
    Column("transfer_syntax", String(64)),
    Column("storage_key", Text, nullable=False),
    Column("size", BigInteger),
    Column("rows", Integer),
    Column("columns", Integer),
    Column("frames", Integer),
    Column("created_time", DateTime(timezone=True), nullable=False),
    Index("ix_instance_series", "tenant_id", "study_uid", "series_uid"),
    # which transfer syntaxes a SOP class's stored instances have (C-GET negotiation, index/classes.py): index seeks
    Index("ix_instance_class_syntax", "tenant_id", "sop_class_uid", "transfer_syntax"),
)

dicom_json_meta = Table(
    "dicom_json_meta", metadata,
    Column("tenant_id", String(64), primary_key=True),
    Column("study_uid", String(64), primary_key=True),
    Column("series_uid", String(64), primary_key=True),
    Column("flag_time", DateTime(timezone=True), nullable=False),
    Column("json_status", Integer, nullable=False, default=0),  # 0 pending, 1 built, 2 failed for good
    Column("retry_times", Integer, nullable=False, default=0),
    Column("json_key", Text),
    Column("cube_key", Text),
    Column("built_instances", Integer),
    Column("updated_time", DateTime(timezone=True), nullable=False),
    Index("ix_json_pending", "json_status", "flag_time"),
)

# an instance's DICOM JSON as stored by the ingest path (``metadata_at_ingest``): a series' metadata is then
# joined from these rows instead of converting every file when it is first asked for
dicom_instance_json = Table(
    "dicom_instance_json", metadata,
    Column("tenant_id", String(64), primary_key=True),
    Column("sop_uid", String(64), primary_key=True),
    Column("doc", LargeBinary, nullable=False),  # zlib-compressed DICOM JSON, BulkDataURIs relative to the host
)

# labels an admin UI user puts on a study (``index/labels.py``), per tenant; kept when the study's instances change
study_label = Table(
    "study_label", metadata,
    Column("tenant_id", String(64), primary_key=True),
    Column("study_uid", String(64), primary_key=True),
    Column("label", String(64), primary_key=True),
    Index("ix_label_tenant_label", "tenant_id", "label"),
)

# version -> SQL statements bringing version-1 to version; versions 2 and 4 only added a table (create_all makes it)
# (5: an index on a table that exists, which create_all does not add)
MIGRATIONS: dict[int, list[str]] = {2: [], 3: [], 4: [], 5: [
    "CREATE INDEX IF NOT EXISTS ix_instance_class_syntax ON dicom_instance "
    "(tenant_id, sop_class_uid, transfer_syntax)"]}
# the attributes C-FIND and QIDO match and answer: kept as stored, of any length (a malformed value is answered
# unchanged, never cut: docs/archive.md, "Queries")
QUERIED = ("patient_id", "patient_name", "patient_sex", "patient_birth_date", "study_date", "study_time",
           "accession_number", "study_id", "study_description", "referring_physician", "modality",
           "series_description", "series_date")
# version -> dialect -> statements for that dialect only. 3: the queried columns lose their length limit (SQLite
# enforces none)
DIALECT_MIGRATIONS: dict[int, dict[str, list[str]]] = {3: {"postgresql": [
    f"ALTER TABLE dicom_state_meta ALTER COLUMN {c} TYPE VARCHAR" for c in QUERIED]}}
