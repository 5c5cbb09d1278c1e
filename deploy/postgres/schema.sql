-- cubepacs index schema for PostgreSQL (generated from cubepacs/archive/index/models.py).
-- The services create it themselves on first start; this file is for DBAs who create it beforehand.

CREATE TABLE cubepacs_schema (
	version INTEGER NOT NULL, 
	PRIMARY KEY (version)
);

CREATE TABLE dicom_instance (
	tenant_id VARCHAR(64) NOT NULL, 
	sop_uid VARCHAR(64) NOT NULL, 
	study_uid VARCHAR(64) NOT NULL, 
	series_uid VARCHAR(64) NOT NULL, 
	sop_class_uid VARCHAR(64), 
	instance_number INTEGER, 
	transfer_syntax VARCHAR(64), 
	storage_key TEXT NOT NULL, 
	size BIGINT, 
	rows INTEGER, 
	columns INTEGER, 
	frames INTEGER, 
	created_time TIMESTAMP WITH TIME ZONE NOT NULL, 
	PRIMARY KEY (tenant_id, sop_uid)
);
CREATE INDEX ix_instance_series ON dicom_instance (tenant_id, study_uid, series_uid);

CREATE TABLE dicom_json_meta (
	tenant_id VARCHAR(64) NOT NULL, 
	study_uid VARCHAR(64) NOT NULL, 
	series_uid VARCHAR(64) NOT NULL, 
	flag_time TIMESTAMP WITH TIME ZONE NOT NULL, 
	json_status INTEGER NOT NULL, 
	retry_times INTEGER NOT NULL, 
	json_key TEXT, 
	cube_key TEXT, 
	built_instances INTEGER, 
	updated_time TIMESTAMP WITH TIME ZONE NOT NULL, 
	PRIMARY KEY (tenant_id, study_uid, series_uid)
);
CREATE INDEX ix_json_pending ON dicom_json_meta (json_status, flag_time);

CREATE TABLE dicom_state_meta (
	tenant_id VARCHAR(64) NOT NULL, 
	study_uid VARCHAR(64) NOT NULL, 
	series_uid VARCHAR(64) NOT NULL, 
	patient_id VARCHAR(64), 
	study_uid_hash VARCHAR(32), 
	series_uid_hash VARCHAR(32), 
	patient_name VARCHAR(324), 
	patient_sex VARCHAR(16), 
	patient_birth_date VARCHAR(8), 
	study_date VARCHAR(8), 
	study_time VARCHAR(16), 
	accession_number VARCHAR(16), 
	study_id VARCHAR(16), 
	study_description VARCHAR(64), 
	referring_physician VARCHAR(324), 
	modality VARCHAR(16), 
	series_number INTEGER, 
	series_description VARCHAR(64), 
	series_date VARCHAR(8), 
	series_related_instances INTEGER NOT NULL, 
	created_time TIMESTAMP WITH TIME ZONE NOT NULL, 
	updated_time TIMESTAMP WITH TIME ZONE NOT NULL, 
	PRIMARY KEY (tenant_id, study_uid, series_uid)
);
CREATE INDEX ix_state_tenant_patient ON dicom_state_meta (tenant_id, patient_id);
CREATE INDEX ix_state_tenant_date ON dicom_state_meta (tenant_id, study_date);

INSERT INTO cubepacs_schema (version) VALUES (1);
