-- Apache Doris tables fed by cubepacs (Kafka/Redpanda topics with JSON rows, one row per message).
-- Field names are the JSON keys the indexer publishes (cubepacs/archive/observability/accesslog.py: object_row, image_row;
-- the state row is the index's dicom_state_meta row).
CREATE DATABASE IF NOT EXISTS cubepacs;
USE cubepacs;

CREATE TABLE IF NOT EXISTS dicom_object_meta (
    tenant_id        VARCHAR(64)  NOT NULL,
    sop_uid          VARCHAR(64)  NOT NULL,
    study_uid        VARCHAR(64),
    series_uid       VARCHAR(64),
    patient_id       VARCHAR(64),
    sop_class_uid    VARCHAR(64),
    transfer_syntax  VARCHAR(64),
    storage_key      VARCHAR(512),
    size             BIGINT
) UNIQUE KEY (tenant_id, sop_uid)
DISTRIBUTED BY HASH (tenant_id, sop_uid) BUCKETS 8
PROPERTIES ("replication_num" = "1", "enable_unique_key_merge_on_write" = "true");

CREATE TABLE IF NOT EXISTS dicom_image_meta (
    tenant_id        VARCHAR(64)  NOT NULL,
    sop_uid          VARCHAR(64)  NOT NULL,
    study_uid        VARCHAR(64),
    series_uid       VARCHAR(64),
    modality         VARCHAR(16),
    study_date       VARCHAR(8),
    instance_number  BIGINT,
    `rows`           BIGINT,
    `columns`        BIGINT,
    frames           BIGINT
) UNIQUE KEY (tenant_id, sop_uid)
DISTRIBUTED BY HASH (tenant_id, sop_uid) BUCKETS 8
PROPERTIES ("replication_num" = "1", "enable_unique_key_merge_on_write" = "true");

CREATE TABLE IF NOT EXISTS dicom_state_meta (
    tenant_id                 VARCHAR(64) NOT NULL,
    study_uid                 VARCHAR(64) NOT NULL,
    series_uid                VARCHAR(64) NOT NULL,
    patient_id                VARCHAR(64),
    study_uid_hash            VARCHAR(32),
    series_uid_hash           VARCHAR(32),
    patient_name              VARCHAR(324),
    patient_sex               VARCHAR(16),
    patient_birth_date        VARCHAR(8),
    study_date                VARCHAR(8),
    study_time                VARCHAR(16),
    accession_number          VARCHAR(16),
    study_id                  VARCHAR(16),
    study_description         VARCHAR(64),
    referring_physician       VARCHAR(324),
    modality                  VARCHAR(16),
    series_number             INT,
    series_description        VARCHAR(64),
    series_date               VARCHAR(8),
    series_related_instances  INT,
    created_time              DATETIME,
    updated_time              DATETIME
) UNIQUE KEY (tenant_id, study_uid, series_uid)
DISTRIBUTED BY HASH (tenant_id, study_uid) BUCKETS 8
PROPERTIES ("replication_num" = "1", "enable_unique_key_merge_on_write" = "true");
