"""The index schema as of a699df5 (schema version 2: before the date columns were widened), kept to build the
database an older cubepacs left, which tests/archive/test_backup.py opens with the current code (a migration
test). A copy of that commit's ``src/cubepacs/archive/index/models.py`` tables, not imported by the package."""

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

SCHEMA_VERSION = 2
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
    Column("patient_id", String(64)),
    Column("study_uid_hash", String(32)),
    Column("series_uid_hash", String(32)),
    Column("patient_name", String(324)),
    Column("patient_sex", String(16)),
    Column("patient_birth_date", String(8)),
    Column("study_date", String(8)),
    Column("study_time", String(16)),
    Column("accession_number", String(16)),
    Column("study_id", String(16)),
    Column("study_description", String(64)),
    Column("referring_physician", String(324)),
    Column("modality", String(16)),
    Column("series_number", Integer),
    Column("series_description", String(64)),
    Column("series_date", String(8)),
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

# version -> SQL statements bringing version-1 to version; version 2 only added a table (create_all makes it)
MIGRATIONS: dict[int, list[str]] = {2: []}
