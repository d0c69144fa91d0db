"""Alembic migrations: an empty index migrates to exactly `schema.metadata`; revision 0001 is
frozen (it builds the version 0.1 schema, not the live metadata); an index created by the old
revision 0001 (a dump taken from version 0.1, with rows) upgrades and keeps its data."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import select

from archivist.core.levels import QueryLevel
from archivist.core.matching import build_query
from archivist.index.extract import CodeRow, ValidationRecord, extract
from archivist.index.repository import BlobInfo, Index
from archivist.index.schema import instance, metadata
from archivist.testing.datasets import make_instance

DUMP_0001 = Path(__file__).parent / "data" / "index_0001.sql"


def _config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", "archivist.index:migrations")
    return cfg


def _upgrade(index: Index, target: str) -> None:
    cfg = _config()
    with index.writer.connect() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, target)
        conn.commit()


def _diff(index: Index) -> list[object]:
    with index.writer.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        return list(compare_metadata(ctx, metadata))


def _version(path: Path) -> str:
    with sqlite3.connect(path) as con:
        return str(con.execute("SELECT version_num FROM alembic_version").fetchone()[0])


def _ddl(path: Path) -> list[str]:
    with sqlite3.connect(path) as con:
        rows = con.execute("SELECT sql FROM sqlite_master WHERE sql IS NOT NULL "
                           "AND name != 'alembic_version'")
        return sorted(r[0] for r in rows)


class TestMigrations:
    def test_one_chain_of_revisions(self) -> None:
        script = ScriptDirectory.from_config(_config())
        assert script.get_heads() == ["0008"]
        assert [r.revision for r in script.walk_revisions()] == ["0008", "0007", "0006", "0005", "0004",
                                                                  "0003", "0002", "0001"]

    def test_empty_index_migrates_to_the_metadata(self, tmp_path: Path) -> None:
        index = Index(f"sqlite:///{tmp_path / 'i.sqlite'}")
        try:
            index.migrate()
            assert _diff(index) == []
            assert _version(tmp_path / "i.sqlite") == "0008"
            index.migrate()  # idempotent
        finally:
            index.close()

    def test_revision_0001_is_frozen(self, tmp_path: Path) -> None:
        """0001 alone builds the version 0.1 schema, byte for byte the DDL of the old dump."""
        old = tmp_path / "old.sqlite"
        with sqlite3.connect(old) as con:
            con.executescript(DUMP_0001.read_text())
        index = Index(f"sqlite:///{tmp_path / 'new.sqlite'}")
        try:
            _upgrade(index, "0001")
        finally:
            index.close()
        assert _ddl(tmp_path / "new.sqlite") == _ddl(old)
        assert not any("validation" in sql or "instance_code" in sql
                       for sql in _ddl(tmp_path / "new.sqlite"))

    def test_index_created_by_0001_upgrades_and_keeps_its_rows(self, tmp_path: Path) -> None:
        db = tmp_path / "index.sqlite"
        with sqlite3.connect(db) as con:
            con.executescript(DUMP_0001.read_text())
        assert _version(db) == "0001"
        index = Index(f"sqlite:///{db}")
        try:
            index.migrate()
            assert _version(db) == "0008"
            assert _diff(index) == []
            assert index.counts() == {"patient": 1, "study": 1, "series": 1, "instance": 2}
            old = index.validation_of("1.2.826.0.1.3680043.10.1235.77.1.1.1")
            assert old is not None and old["validated"] is False and old["findings"] == []
            # The upgraded index takes new instances with codes and findings.
            ds = make_instance(tmp_path / "new.dcm", study_uid="1.2.826.0.1.3680043.10.1235.77.1",
                               series_uid="1.2.826.0.1.3680043.10.1235.77.1.1")
            rows = extract(ds)
            rows.codes = [CodeRow("ProcedureCodeSequence", "ProcedureCodeSequence", "SCT",
                                  "10200004", "SRT", "T-62000", "Liver")]
            outcome = index.add_instance(
                rows, BlobInfo("k-new", 10, "0" * 64, "1.2.840.10008.1.2.1"),
                sop_instance_uid=str(ds.SOPInstanceUID), sop_class_uid=str(ds.SOPClassUID),
                study_instance_uid=str(ds.StudyInstanceUID),
                series_instance_uid=str(ds.SeriesInstanceUID),
                source_aet=None, source_address=None, policy="keep",
                validation=ValidationRecord(0, 0),
            )
            assert outcome.status == "added"
            query = build_query(QueryLevel.STUDY, [("ProcedureCodeSequence.CodeValue", "T-62000")])
            assert len(list(index.search(query))) == 1
            with index.reader.connect() as conn:
                errors = dict(conn.execute(select(instance.c.sop_instance_uid,
                                                  instance.c.validation_errors)).all())
            assert errors[str(ds.SOPInstanceUID)] == 0
            assert errors["1.2.826.0.1.3680043.10.1235.77.1.1.2"] is None
        finally:
            index.close()


def test_0005_folds_again_names_stored_with_trailing_components(tmp_path: Path) -> None:
    """A name stored padded (``SMITH^JOHN^^^``) under 0004 is found by ``smith^john`` after the
    upgrade; other names keep their folded value."""
    db = tmp_path / "index.sqlite"
    index = Index(f"sqlite:///{db}")
    try:
        _upgrade(index, "0004")
    finally:
        index.close()
    with sqlite3.connect(db) as con:
        con.execute("INSERT INTO patient (pk, patient_id, issuer_of_patient_id, patient_name, patient_name_norm, number_of_patient_related_studies, number_of_patient_related_series, number_of_patient_related_instances) "
                    "VALUES (1, 'P1', '', 'SMITH^JOHN^^^', 'smith^john^^^', 0, 0, 0), "
                    "(2, 'P2', '', 'Doe^Jane', 'doe^jane', 0, 0, 0), "
                    "(3, 'P3', '', 'Yamada^Tarou^^=山田^太郎=', 'yamada^tarou^^=山田^太郎=', 0, 0, 0)")
    index = Index(f"sqlite:///{db}")
    try:
        index.migrate()
    finally:
        index.close()
    with sqlite3.connect(db) as con:
        norms = dict(con.execute("SELECT patient_id, patient_name_norm FROM patient"))
    assert norms == {"P1": "smith^john", "P2": "doe^jane", "P3": "yamada^tarou=山田^太郎"}
