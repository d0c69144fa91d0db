"""The index schema (SQLAlchemy Core): patient / study / series / instance, and the change log.

Every matching key of PS3.4 C.6 that the archive indexes has a typed column named as the DICOM
keyword in snake_case; :data:`COLUMN_OF` is the one mapping between the two. Person names have a
second, folded column (``*_norm``) for case-insensitive matching. Multi-valued study aggregates
(``modalities_in_study``, ``sop_classes_in_study``) are stored as ``\\A\\B\\`` so that
"any of" matching is a LIKE on ``\\value\\``.

Schema changes go through Alembic migrations in ``index/migrations``; this module is the current
shape that the latest migration produces.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

patient = Table(
    "patient", metadata,
    Column("pk", Integer, primary_key=True),
    Column("patient_id", String(64), nullable=False, default=""),
    Column("issuer_of_patient_id", String(64), nullable=False, default=""),
    Column("patient_name", String(324)),
    Column("patient_name_norm", String(324)),
    Column("patient_birth_date", String(8)),
    Column("patient_birth_time", String(16)),
    Column("patient_sex", String(16)),
    Column("number_of_patient_related_studies", Integer, nullable=False, default=0),
    Column("number_of_patient_related_series", Integer, nullable=False, default=0),
    Column("number_of_patient_related_instances", Integer, nullable=False, default=0),
    Column("attrs", Text),
    UniqueConstraint("patient_id", "issuer_of_patient_id", name="uq_patient_id_issuer"),
)
Index("ix_patient_name_norm", patient.c.patient_name_norm)
Index("ix_patient_name", patient.c.patient_name)

study = Table(
    "study", metadata,
    Column("pk", Integer, primary_key=True),
    Column("patient_pk", Integer, ForeignKey("patient.pk"), nullable=False),
    Column("study_instance_uid", String(64), nullable=False, unique=True),
    Column("study_date", String(8)),
    Column("study_time", String(16)),
    Column("accession_number", String(64)),
    Column("study_id", String(16)),
    Column("referring_physician_name", String(324)),
    Column("referring_physician_name_norm", String(324)),
    Column("study_description", String(64)),
    Column("patient_age", String(4)),
    Column("patient_size", String(16)),
    Column("patient_weight", String(16)),
    Column("institution_name", String(64)),
    Column("modalities_in_study", String(512), nullable=False, default="\\"),
    Column("sop_classes_in_study", Text, nullable=False, default="\\"),
    Column("number_of_study_related_series", Integer, nullable=False, default=0),
    Column("number_of_study_related_instances", Integer, nullable=False, default=0),
    Column("attrs", Text),
    Column("updated_at", DateTime(timezone=True)),
    Column("change_seq", BigInteger, nullable=False, default=0),
)
Index("ix_study_patient", study.c.patient_pk)
Index("ix_study_date", study.c.study_date)
Index("ix_study_accession", study.c.accession_number)

series = Table(
    "series", metadata,
    Column("pk", Integer, primary_key=True),
    Column("study_pk", Integer, ForeignKey("study.pk"), nullable=False),
    Column("series_instance_uid", String(64), nullable=False, unique=True),
    Column("modality", String(16)),
    Column("series_number", Integer),
    Column("series_description", String(64)),
    Column("series_date", String(8)),
    Column("series_time", String(16)),
    Column("body_part_examined", String(16)),
    Column("protocol_name", String(64)),
    Column("station_name", String(16)),
    Column("performed_procedure_step_start_date", String(8)),
    Column("performed_procedure_step_start_time", String(16)),
    Column("number_of_series_related_instances", Integer, nullable=False, default=0),
    Column("attrs", Text),
    Column("change_seq", BigInteger, nullable=False, default=0),
)
Index("ix_series_study", series.c.study_pk)
Index("ix_series_modality", series.c.modality)

instance = Table(
    "instance", metadata,
    Column("pk", Integer, primary_key=True),
    Column("series_pk", Integer, ForeignKey("series.pk"), nullable=False),
    Column("sop_instance_uid", String(64), nullable=False, unique=True),
    Column("sop_class_uid", String(64), nullable=False),
    Column("instance_number", Integer),
    Column("content_date", String(8)),
    Column("content_time", String(16)),
    Column("acquisition_number", Integer),
    Column("number_of_frames", Integer),
    Column("rows", Integer),
    Column("columns", Integer),
    Column("bits_allocated", Integer),
    Column("transfer_syntax_uid", String(64), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("storage_key", String(64), nullable=False, unique=True),
    Column("received_at", DateTime(timezone=True), nullable=False),
    Column("source_aet", String(16)),
    Column("source_address", String(64)),
    Column("change_seq", BigInteger, nullable=False, default=0),
    Column("attrs", Text),
    # Validation on ingest (revision 0002): NULL when the object was not validated (policy off).
    Column("validation_errors", Integer),
    Column("validation_warnings", Integer),
)
Index("ix_instance_series", instance.c.series_pk)
Index("ix_instance_change_seq", instance.c.change_seq)

#: The findings of the validation on ingest, per instance, in the order the validator gave them
#: (revision 0002). Only with the ``warn`` policy: ``reject`` stores nothing, ``off`` validates
#: nothing.
validation_finding = Table(
    "validation_finding", metadata,
    Column("pk", Integer, primary_key=True),
    Column("instance_pk", Integer, ForeignKey("instance.pk", ondelete="CASCADE"),
           nullable=False),
    Column("ordinal", Integer, nullable=False),
    Column("severity", String(8), nullable=False),
    Column("rule_id", String(64), nullable=False),
    Column("path", Text, nullable=False),
    Column("module", String(128), nullable=False),
    Column("iod", String(128), nullable=False),
    Column("message", Text, nullable=False),
    Column("reference", String(64), nullable=False),
)
Index("ix_validation_finding_instance", validation_finding.c.instance_pk)

#: Coded concepts of each instance, on their normalised (scheme, value) key (revision 0002), for
#: query by code: ``attribute`` is the Code Sequence keyword a query names (e.g.
#: ``ProcedureCodeSequence``), ``origin`` the attribute the code was read from (the same, or
#: ``BodyPartExamined`` for a defined term mapped to its Anatomic Region code). The original
#: designator and value are kept as they came; the stored object is never rewritten.
instance_code = Table(
    "instance_code", metadata,
    Column("pk", Integer, primary_key=True),
    Column("instance_pk", Integer, ForeignKey("instance.pk", ondelete="CASCADE"),
           nullable=False),
    Column("series_pk", Integer, ForeignKey("series.pk"), nullable=False),
    Column("study_pk", Integer, ForeignKey("study.pk"), nullable=False),
    Column("attribute", String(64), nullable=False),
    Column("origin", String(64), nullable=False),
    Column("scheme", String(64), nullable=False),
    Column("value", Text, nullable=False),
    Column("original_scheme", String(64), nullable=False),
    Column("original_value", Text, nullable=False),
    Column("meaning", Text),
)
Index("ix_instance_code_key", instance_code.c.scheme, instance_code.c.value,
      instance_code.c.attribute)
Index("ix_instance_code_instance", instance_code.c.instance_pk)
Index("ix_instance_code_series", instance_code.c.series_pk)
Index("ix_instance_code_study", instance_code.c.study_pk)

change = Table(
    "change", metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("kind", String(32), nullable=False),
    Column("level", String(16), nullable=False),
    Column("study_instance_uid", String(64)),
    Column("series_instance_uid", String(64)),
    Column("sop_instance_uid", String(64)),
    Column("at", DateTime(timezone=True), nullable=False),
)
Index("ix_change_study", change.c.study_instance_uid)

#: Supplement 223 Inventory Creation jobs (one row per Transaction UID; survives restarts).
inventory_job = Table(
    "inventory_job", metadata,
    Column("pk", Integer, primary_key=True),
    Column("transaction_uid", String(64), nullable=False, unique=True),
    Column("state", String(16), nullable=False),
    Column("level", String(16), nullable=False),
    Column("scope", Text, nullable=False),
    Column("purpose", Text),
    Column("requester_aet", String(16)),
    Column("status_interval", Integer, nullable=False),
    Column("studies_per_instance", Integer, nullable=False),
    Column("snapshot_pk", BigInteger, nullable=False),
    Column("studies_total", Integer, nullable=False),
    Column("studies_done", Integer, nullable=False),
    Column("leaves", Text, nullable=False),
    Column("container_study", String(64), nullable=False),
    Column("container_series", String(64), nullable=False),
    Column("root_uid", String(64)),
    Column("retain", String(3)),
    Column("comment", Text),
    Column("owner", String(64)),
    Column("heartbeat_at", DateTime(timezone=True)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

#: Records removed from the archive (revision 0004), kept until purged so that Repository Query
#: and inventories report them as Removed from Operational Use (0008,0405) (Supplement 223). One
#: row per removed study, series or instance: ``record_pk`` is the removed row's primary key (its
#: Record Key), ``generation`` orders records that came to share a key, ``row`` the index row (as
#: a search returns it, JSON) at the time of removal.
tombstone = Table(
    "tombstone", metadata,
    Column("pk", Integer, primary_key=True),
    Column("level", String(16), nullable=False),
    Column("record_pk", BigInteger, nullable=False),
    Column("generation", Integer, nullable=False, default=0),
    Column("study_instance_uid", String(64), nullable=False),
    Column("series_instance_uid", String(64)),
    Column("sop_instance_uid", String(64)),
    Column("removed_at", DateTime(timezone=True), nullable=False),
    Column("reason_value", String(16), nullable=False),
    Column("reason_scheme", String(16), nullable=False),
    Column("reason_meaning", String(64), nullable=False),
    Column("change_seq", BigInteger, nullable=False),
    Column("row", Text, nullable=False),
)
Index("ix_tombstone_record", tombstone.c.level, tombstone.c.record_pk)
Index("ix_tombstone_study", tombstone.c.study_instance_uid)
Index("ix_tombstone_series", tombstone.c.series_instance_uid)
Index("ix_tombstone_sop", tombstone.c.sop_instance_uid)
Index("ix_tombstone_removed_at", tombstone.c.removed_at)

#: Modality Performed Procedure Steps (revision 0006; PS3.4 Annex F): one row per MPPS SOP
#: Instance that a modality created with N-CREATE and updated with N-SET. ``dataset`` is the
#: whole attribute set (explicit VR little endian, no File Meta); the other columns are copies of
#: a few of its values, for listing and matching.
mpps = Table(
    "mpps", metadata,
    Column("pk", Integer, primary_key=True),
    Column("sop_instance_uid", String(64), nullable=False, unique=True),
    Column("status", String(16), nullable=False),
    Column("study_instance_uid", String(64)),
    Column("accession_number", String(64)),
    Column("patient_id", String(64)),
    Column("modality", String(16)),
    Column("performed_station_ae_title", String(16)),
    Column("performed_procedure_step_id", String(64)),
    Column("start_date", String(8)),
    Column("start_time", String(16)),
    Column("end_date", String(8)),
    Column("end_time", String(16)),
    Column("calling_ae_title", String(16)),
    Column("series_count", Integer, nullable=False, default=0),
    Column("image_count", Integer, nullable=False, default=0),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("dataset", LargeBinary, nullable=False),
)
Index("ix_mpps_study", mpps.c.study_instance_uid)
Index("ix_mpps_updated_at", mpps.c.updated_at)

#: The scheduled steps each MPPS names (one row per Scheduled Step Attributes item: a grouped
#: procedure names several studies), for the worklist's Scheduled Procedure Step Status.
mpps_scheduled = Table(
    "mpps_scheduled", metadata,
    Column("pk", Integer, primary_key=True),
    Column("mpps_pk", Integer, ForeignKey("mpps.pk", ondelete="CASCADE"), nullable=False),
    Column("study_instance_uid", String(64), nullable=False),
    Column("scheduled_procedure_step_id", String(64)),
)
Index("ix_mpps_scheduled_study", mpps_scheduled.c.study_instance_uid)

#: Unified Procedure Steps (revision 0007; PS3.4 Annex CC): one row per UPS SOP Instance (a
#: workitem) created by N-CREATE or UPS-RS, its whole attribute set in ``dataset`` (explicit VR
#: little endian, no File Meta, never the Transaction UID), its state and the Transaction UID of
#: the performer that claimed it as columns.
ups = Table(
    "ups", metadata,
    Column("pk", Integer, primary_key=True),
    Column("sop_instance_uid", String(64), nullable=False, unique=True),
    Column("state", String(16), nullable=False),
    Column("transaction_uid", String(64)),
    Column("priority", String(16)),
    Column("procedure_step_label", String(64)),
    Column("worklist_label", String(64)),
    Column("patient_id", String(64)),
    Column("study_instance_uid", String(64)),
    Column("scheduled_start", String(26)),
    Column("calling_ae_title", String(16)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("dataset", LargeBinary, nullable=False),
)
Index("ix_ups_state", ups.c.state)
Index("ix_ups_updated_at", ups.c.updated_at)

#: UPS subscriptions (Watch SOP Class, UPS-RS subscribers): per workitem (``ups_uid``), or
#: global (``ups_uid`` NULL; ``filter`` holds the matching keys of a filtered one).
ups_subscription = Table(
    "ups_subscription", metadata,
    Column("pk", Integer, primary_key=True),
    Column("aet", String(16), nullable=False),
    Column("ups_uid", String(64)),
    Column("deletion_lock", Boolean, nullable=False, default=False),
    Column("filter", LargeBinary),
    Column("created_at", DateTime(timezone=True), nullable=False),
)
Index("ix_ups_subscription_aet", ups_subscription.c.aet)
Index("ix_ups_subscription_ups", ups_subscription.c.ups_uid)

#: UPS events waiting to be delivered (N-EVENT-REPORT or UPS-RS), in ``pk`` order per AE,
#: written in the transaction of the change that caused them.
ups_event = Table(
    "ups_event", metadata,
    Column("pk", Integer, primary_key=True),
    Column("aet", String(16), nullable=False),
    Column("ups_uid", String(64), nullable=False),
    Column("event_type", Integer, nullable=False),
    Column("info", LargeBinary, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("not_before", DateTime(timezone=True)),
)
Index("ix_ups_event_aet", ups_event.c.aet, ups_event.c.pk)

#: Followers of the change log shared by several nodes (revision 0008): forwarding and IAN,
#: one row per destination, their place in the log and what is left to send (JSON). Used on
#: PostgreSQL (:mod:`archivist.index.followers`).
follower = Table(
    "follower", metadata,
    Column("name", String(64), primary_key=True),
    Column("state", Text, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

TABLE_OF_LEVEL = {"PATIENT": patient, "STUDY": study, "SERIES": series, "IMAGE": instance}

#: The tables a query at each level reads: the level's own first, then every level above it.
TABLES_AT_LEVEL = {
    "PATIENT": (patient,),
    "STUDY": (study, patient),
    "SERIES": (series, study, patient),
    "IMAGE": (instance, series, study, patient),
}


def _snake(keyword: str) -> str:
    out = []
    for i, ch in enumerate(keyword):
        if ch.isupper() and i and (not keyword[i - 1].isupper() or
                                   (i + 1 < len(keyword) and keyword[i + 1].islower())):
            out.append("_")
        out.append(ch.lower())
    return "".join(out)


def _column_map() -> dict[str, tuple[Table, str]]:
    from archivist.core.levels import KEYS

    result: dict[str, tuple[Table, str]] = {}
    special = {
        "SOPInstanceUID": "sop_instance_uid", "SOPClassUID": "sop_class_uid",
        "SOPClassesInStudy": "sop_classes_in_study", "StudyID": "study_id",
        "PatientID": "patient_id", "IssuerOfPatientID": "issuer_of_patient_id",
        "TransferSyntaxUID": "transfer_syntax_uid",
    }
    for keyword, key in KEYS.items():
        table = TABLE_OF_LEVEL[key.level.value]
        name = special.get(keyword) or _snake(keyword)
        if name not in table.c:
            raise RuntimeError(f"index column {table.name}.{name} missing for {keyword}")
        result[keyword] = (table, name)
    return result


#: keyword -> (table, column name) for every indexed key.
COLUMN_OF: dict[str, tuple[Table, str]] = _column_map()
