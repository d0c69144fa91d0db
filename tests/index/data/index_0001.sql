BEGIN TRANSACTION;
CREATE TABLE alembic_version (
	version_num VARCHAR(32) NOT NULL, 
	CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num)
);
INSERT INTO "alembic_version" VALUES('0001');
CREATE TABLE change (
	seq INTEGER NOT NULL, 
	kind VARCHAR(32) NOT NULL, 
	level VARCHAR(16) NOT NULL, 
	study_instance_uid VARCHAR(64), 
	series_instance_uid VARCHAR(64), 
	sop_instance_uid VARCHAR(64), 
	at DATETIME NOT NULL, 
	PRIMARY KEY (seq)
);
INSERT INTO "change" VALUES(1,'stored','IMAGE','1.2.826.0.1.3680043.10.1235.77.1','1.2.826.0.1.3680043.10.1235.77.1.1','1.2.826.0.1.3680043.10.1235.77.1.1.1','2026-11-24 19:08:11.382627');
INSERT INTO "change" VALUES(2,'stored','IMAGE','1.2.826.0.1.3680043.10.1235.77.1','1.2.826.0.1.3680043.10.1235.77.1.1','1.2.826.0.1.3680043.10.1235.77.1.1.2','2026-11-24 19:08:11.401707');
CREATE TABLE instance (
	pk INTEGER NOT NULL, 
	series_pk INTEGER NOT NULL, 
	sop_instance_uid VARCHAR(64) NOT NULL, 
	sop_class_uid VARCHAR(64) NOT NULL, 
	instance_number INTEGER, 
	content_date VARCHAR(8), 
	content_time VARCHAR(16), 
	acquisition_number INTEGER, 
	number_of_frames INTEGER, 
	rows INTEGER, 
	columns INTEGER, 
	bits_allocated INTEGER, 
	transfer_syntax_uid VARCHAR(64) NOT NULL, 
	size BIGINT NOT NULL, 
	sha256 VARCHAR(64) NOT NULL, 
	storage_key VARCHAR(64) NOT NULL, 
	received_at DATETIME NOT NULL, 
	source_aet VARCHAR(16), 
	source_address VARCHAR(64), 
	change_seq BIGINT NOT NULL, 
	attrs TEXT, 
	PRIMARY KEY (pk), 
	FOREIGN KEY(series_pk) REFERENCES series (pk), 
	UNIQUE (sop_instance_uid), 
	UNIQUE (storage_key)
);
INSERT INTO "instance" VALUES(1,1,'1.2.826.0.1.3680043.10.1235.77.1.1.1','1.2.840.10008.5.1.4.1.1.2',1,NULL,NULL,NULL,NULL,4,4,8,'1.2.840.10008.1.2.1',828,'7d939fabb4cdef8e75316a6ab3c251af3a30a26e6f5761a93e43e34fb49e2f09','472fb25c076b8ca466fbf5f07b6aeec7','2026-11-24 19:08:11.382627',NULL,NULL,1,'{"00080008":{"vr":"CS","Value":["ORIGINAL","PRIMARY","AXIAL"]},"00080016":{"vr":"UI","Value":["1.2.840.10008.5.1.4.1.1.2"]},"00080018":{"vr":"UI","Value":["1.2.826.0.1.3680043.10.1235.77.1.1.1"]},"00080020":{"vr":"DA","Value":["20240102"]},"00080030":{"vr":"TM","Value":["101500"]},"00080050":{"vr":"SH","Value":["ACC1"]},"00080060":{"vr":"CS","Value":["CT"]},"00080070":{"vr":"LO","Value":["Archivist Test"]},"00080090":{"vr":"PN"},"00081030":{"vr":"LO","Value":["Test study"]},"00100010":{"vr":"PN","Value":[{"Alphabetic":"DOE^JOHN"}]},"00100020":{"vr":"LO","Value":["OLD1"]},"00100030":{"vr":"DA","Value":["19700101"]},"00100040":{"vr":"CS","Value":["O"]},"00180015":{"vr":"CS","Value":["CHEST"]},"0020000D":{"vr":"UI","Value":["1.2.826.0.1.3680043.10.1235.77.1"]},"0020000E":{"vr":"UI","Value":["1.2.826.0.1.3680043.10.1235.77.1.1"]},"00200010":{"vr":"SH","Value":["1"]},"00200011":{"vr":"IS","Value":[1]},"00200013":{"vr":"IS","Value":[1]},"00280002":{"vr":"US","Value":[1]},"00280004":{"vr":"CS","Value":["MONOCHROME2"]},"00280010":{"vr":"US","Value":[4]},"00280011":{"vr":"US","Value":[4]},"00280100":{"vr":"US","Value":[8]},"00280101":{"vr":"US","Value":[8]},"00280102":{"vr":"US","Value":[7]},"00280103":{"vr":"US","Value":[0]}}');
INSERT INTO "instance" VALUES(2,1,'1.2.826.0.1.3680043.10.1235.77.1.1.2','1.2.840.10008.5.1.4.1.1.2',2,NULL,NULL,NULL,NULL,4,4,8,'1.2.840.10008.1.2.1',828,'0f10a1d0d006c00a1bd978d01d56bac1e5182b63a3d2e0d349e4f228b8c6a55f','22cffc2f5d8c83359040d66682c3560a','2026-11-24 19:08:11.401707',NULL,NULL,2,'{"00080008":{"vr":"CS","Value":["ORIGINAL","PRIMARY","AXIAL"]},"00080016":{"vr":"UI","Value":["1.2.840.10008.5.1.4.1.1.2"]},"00080018":{"vr":"UI","Value":["1.2.826.0.1.3680043.10.1235.77.1.1.2"]},"00080020":{"vr":"DA","Value":["20240102"]},"00080030":{"vr":"TM","Value":["101500"]},"00080050":{"vr":"SH","Value":["ACC1"]},"00080060":{"vr":"CS","Value":["CT"]},"00080070":{"vr":"LO","Value":["Archivist Test"]},"00080090":{"vr":"PN"},"00081030":{"vr":"LO","Value":["Test study"]},"00100010":{"vr":"PN","Value":[{"Alphabetic":"DOE^JOHN"}]},"00100020":{"vr":"LO","Value":["OLD1"]},"00100030":{"vr":"DA","Value":["19700101"]},"00100040":{"vr":"CS","Value":["O"]},"00180015":{"vr":"CS","Value":["CHEST"]},"0020000D":{"vr":"UI","Value":["1.2.826.0.1.3680043.10.1235.77.1"]},"0020000E":{"vr":"UI","Value":["1.2.826.0.1.3680043.10.1235.77.1.1"]},"00200010":{"vr":"SH","Value":["1"]},"00200011":{"vr":"IS","Value":[1]},"00200013":{"vr":"IS","Value":[2]},"00280002":{"vr":"US","Value":[1]},"00280004":{"vr":"CS","Value":["MONOCHROME2"]},"00280010":{"vr":"US","Value":[4]},"00280011":{"vr":"US","Value":[4]},"00280100":{"vr":"US","Value":[8]},"00280101":{"vr":"US","Value":[8]},"00280102":{"vr":"US","Value":[7]},"00280103":{"vr":"US","Value":[0]}}');
CREATE TABLE patient (
	pk INTEGER NOT NULL, 
	patient_id VARCHAR(64) NOT NULL, 
	issuer_of_patient_id VARCHAR(64) NOT NULL, 
	patient_name VARCHAR(324), 
	patient_name_norm VARCHAR(324), 
	patient_birth_date VARCHAR(8), 
	patient_birth_time VARCHAR(16), 
	patient_sex VARCHAR(16), 
	number_of_patient_related_studies INTEGER NOT NULL, 
	number_of_patient_related_series INTEGER NOT NULL, 
	number_of_patient_related_instances INTEGER NOT NULL, 
	attrs TEXT, 
	PRIMARY KEY (pk), 
	CONSTRAINT uq_patient_id_issuer UNIQUE (patient_id, issuer_of_patient_id)
);
INSERT INTO "patient" VALUES(1,'OLD1','','DOE^JOHN','doe^john','19700101',NULL,'O',1,1,2,'{"00080008":{"vr":"CS","Value":["ORIGINAL","PRIMARY","AXIAL"]},"00080016":{"vr":"UI","Value":["1.2.840.10008.5.1.4.1.1.2"]},"00080018":{"vr":"UI","Value":["1.2.826.0.1.3680043.10.1235.77.1.1.1"]},"00080020":{"vr":"DA","Value":["20240102"]},"00080030":{"vr":"TM","Value":["101500"]},"00080050":{"vr":"SH","Value":["ACC1"]},"00080060":{"vr":"CS","Value":["CT"]},"00080070":{"vr":"LO","Value":["Archivist Test"]},"00080090":{"vr":"PN"},"00081030":{"vr":"LO","Value":["Test study"]},"00100010":{"vr":"PN","Value":[{"Alphabetic":"DOE^JOHN"}]},"00100020":{"vr":"LO","Value":["OLD1"]},"00100030":{"vr":"DA","Value":["19700101"]},"00100040":{"vr":"CS","Value":["O"]},"00180015":{"vr":"CS","Value":["CHEST"]},"0020000D":{"vr":"UI","Value":["1.2.826.0.1.3680043.10.1235.77.1"]},"0020000E":{"vr":"UI","Value":["1.2.826.0.1.3680043.10.1235.77.1.1"]},"00200010":{"vr":"SH","Value":["1"]},"00200011":{"vr":"IS","Value":[1]},"00200013":{"vr":"IS","Value":[1]},"00280002":{"vr":"US","Value":[1]},"00280004":{"vr":"CS","Value":["MONOCHROME2"]},"00280010":{"vr":"US","Value":[4]},"00280011":{"vr":"US","Value":[4]},"00280100":{"vr":"US","Value":[8]},"00280101":{"vr":"US","Value":[8]},"00280102":{"vr":"US","Value":[7]},"00280103":{"vr":"US","Value":[0]}}');
CREATE TABLE series (
	pk INTEGER NOT NULL, 
	study_pk INTEGER NOT NULL, 
	series_instance_uid VARCHAR(64) NOT NULL, 
	modality VARCHAR(16), 
	series_number INTEGER, 
	series_description VARCHAR(64), 
	series_date VARCHAR(8), 
	series_time VARCHAR(16), 
	body_part_examined VARCHAR(16), 
	protocol_name VARCHAR(64), 
	station_name VARCHAR(16), 
	performed_procedure_step_start_date VARCHAR(8), 
	performed_procedure_step_start_time VARCHAR(16), 
	number_of_series_related_instances INTEGER NOT NULL, 
	attrs TEXT, 
	change_seq BIGINT NOT NULL, 
	PRIMARY KEY (pk), 
	FOREIGN KEY(study_pk) REFERENCES study (pk), 
	UNIQUE (series_instance_uid)
);
INSERT INTO "series" VALUES(1,1,'1.2.826.0.1.3680043.10.1235.77.1.1','CT',1,NULL,NULL,NULL,'CHEST',NULL,NULL,NULL,NULL,2,'{"00080008":{"vr":"CS","Value":["ORIGINAL","PRIMARY","AXIAL"]},"00080016":{"vr":"UI","Value":["1.2.840.10008.5.1.4.1.1.2"]},"00080018":{"vr":"UI","Value":["1.2.826.0.1.3680043.10.1235.77.1.1.1"]},"00080020":{"vr":"DA","Value":["20240102"]},"00080030":{"vr":"TM","Value":["101500"]},"00080050":{"vr":"SH","Value":["ACC1"]},"00080060":{"vr":"CS","Value":["CT"]},"00080070":{"vr":"LO","Value":["Archivist Test"]},"00080090":{"vr":"PN"},"00081030":{"vr":"LO","Value":["Test study"]},"00100010":{"vr":"PN","Value":[{"Alphabetic":"DOE^JOHN"}]},"00100020":{"vr":"LO","Value":["OLD1"]},"00100030":{"vr":"DA","Value":["19700101"]},"00100040":{"vr":"CS","Value":["O"]},"00180015":{"vr":"CS","Value":["CHEST"]},"0020000D":{"vr":"UI","Value":["1.2.826.0.1.3680043.10.1235.77.1"]},"0020000E":{"vr":"UI","Value":["1.2.826.0.1.3680043.10.1235.77.1.1"]},"00200010":{"vr":"SH","Value":["1"]},"00200011":{"vr":"IS","Value":[1]},"00200013":{"vr":"IS","Value":[1]},"00280002":{"vr":"US","Value":[1]},"00280004":{"vr":"CS","Value":["MONOCHROME2"]},"00280010":{"vr":"US","Value":[4]},"00280011":{"vr":"US","Value":[4]},"00280100":{"vr":"US","Value":[8]},"00280101":{"vr":"US","Value":[8]},"00280102":{"vr":"US","Value":[7]},"00280103":{"vr":"US","Value":[0]}}',2);
CREATE TABLE study (
	pk INTEGER NOT NULL, 
	patient_pk INTEGER NOT NULL, 
	study_instance_uid VARCHAR(64) NOT NULL, 
	study_date VARCHAR(8), 
	study_time VARCHAR(16), 
	accession_number VARCHAR(64), 
	study_id VARCHAR(16), 
	referring_physician_name VARCHAR(324), 
	referring_physician_name_norm VARCHAR(324), 
	study_description VARCHAR(64), 
	patient_age VARCHAR(4), 
	patient_size VARCHAR(16), 
	patient_weight VARCHAR(16), 
	institution_name VARCHAR(64), 
	modalities_in_study VARCHAR(512) NOT NULL, 
	sop_classes_in_study TEXT NOT NULL, 
	number_of_study_related_series INTEGER NOT NULL, 
	number_of_study_related_instances INTEGER NOT NULL, 
	attrs TEXT, 
	updated_at DATETIME, 
	change_seq BIGINT NOT NULL, 
	PRIMARY KEY (pk), 
	FOREIGN KEY(patient_pk) REFERENCES patient (pk), 
	UNIQUE (study_instance_uid)
);
INSERT INTO "study" VALUES(1,1,'1.2.826.0.1.3680043.10.1235.77.1','20240102','101500','ACC1','1',NULL,NULL,'Test study',NULL,NULL,NULL,NULL,'\CT\','\1.2.840.10008.5.1.4.1.1.2\',1,2,'{"00080008":{"vr":"CS","Value":["ORIGINAL","PRIMARY","AXIAL"]},"00080016":{"vr":"UI","Value":["1.2.840.10008.5.1.4.1.1.2"]},"00080018":{"vr":"UI","Value":["1.2.826.0.1.3680043.10.1235.77.1.1.1"]},"00080020":{"vr":"DA","Value":["20240102"]},"00080030":{"vr":"TM","Value":["101500"]},"00080050":{"vr":"SH","Value":["ACC1"]},"00080060":{"vr":"CS","Value":["CT"]},"00080070":{"vr":"LO","Value":["Archivist Test"]},"00080090":{"vr":"PN"},"00081030":{"vr":"LO","Value":["Test study"]},"00100010":{"vr":"PN","Value":[{"Alphabetic":"DOE^JOHN"}]},"00100020":{"vr":"LO","Value":["OLD1"]},"00100030":{"vr":"DA","Value":["19700101"]},"00100040":{"vr":"CS","Value":["O"]},"00180015":{"vr":"CS","Value":["CHEST"]},"0020000D":{"vr":"UI","Value":["1.2.826.0.1.3680043.10.1235.77.1"]},"0020000E":{"vr":"UI","Value":["1.2.826.0.1.3680043.10.1235.77.1.1"]},"00200010":{"vr":"SH","Value":["1"]},"00200011":{"vr":"IS","Value":[1]},"00200013":{"vr":"IS","Value":[1]},"00280002":{"vr":"US","Value":[1]},"00280004":{"vr":"CS","Value":["MONOCHROME2"]},"00280010":{"vr":"US","Value":[4]},"00280011":{"vr":"US","Value":[4]},"00280100":{"vr":"US","Value":[8]},"00280101":{"vr":"US","Value":[8]},"00280102":{"vr":"US","Value":[7]},"00280103":{"vr":"US","Value":[0]}}','2026-11-24 19:08:11.401707',2);
CREATE INDEX ix_patient_name ON patient (patient_name);
CREATE INDEX ix_patient_name_norm ON patient (patient_name_norm);
CREATE INDEX ix_change_study ON change (study_instance_uid);
CREATE INDEX ix_study_accession ON study (accession_number);
CREATE INDEX ix_study_patient ON study (patient_pk);
CREATE INDEX ix_study_date ON study (study_date);
CREATE INDEX ix_series_study ON series (study_pk);
CREATE INDEX ix_series_modality ON series (modality);
CREATE INDEX ix_instance_change_seq ON instance (change_seq);
CREATE INDEX ix_instance_series ON instance (series_pk);
COMMIT;
