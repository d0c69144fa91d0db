"""`archivist reindex --codes`: the codes of objects stored before index revision 0002 (or whose
code rows are gone) are indexed again from the stored objects, idempotently."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, select
from typer.testing import CliRunner

from archivist.archive.archive import Archive
from archivist.archive.ingest import Origin
from archivist.cli.main import app
from archivist.config import Settings, load_settings
from archivist.core.levels import QueryLevel
from archivist.index.schema import instance, instance_code
from archivist.testing.datasets import code_item as code
from archivist.testing.datasets import make_instance, new_uid

runner = CliRunner()
DUMP_0001 = Path(__file__).parent.parent / "index" / "data" / "index_0001.sql"
OLD_STUDY = "1.2.826.0.1.3680043.10.1235.77.1"  # the study of the revision-0001 dump
CHEST_SCT = "816094009"  # Body Part Examined CHEST (PS3.16 Annex L)


def settings_of(data: Path) -> Settings:
    return load_settings(env={}, overrides={"data_dir": data})


def reindex(data: Path) -> tuple[int, dict[str, int]]:
    result = runner.invoke(app, ["reindex", "--codes", "--json", "--data", str(data)])
    return result.exit_code, json.loads(result.stdout)


def code_rows(data: Path) -> list[tuple[Any, ...]]:
    """Every indexed code, without its primary key, sorted."""
    archive = Archive.open(settings_of(data))
    try:
        with archive.index.reader.connect() as conn:
            rows = conn.execute(select(*[c for c in instance_code.c if c.name != "pk"])).all()
    finally:
        archive.close()
    return sorted(tuple(r) for r in rows)


def studies_with(data: Path, sequence: str, value: str, scheme: str) -> list[str]:
    archive = Archive.open(settings_of(data))
    try:
        level = QueryLevel.SERIES if sequence == "AnatomicRegionSequence" else QueryLevel.STUDY
        query = archive.search.query_from_pairs(level, [
            ("StudyInstanceUID", ""), (f"{sequence}.CodeValue", value),
            (f"{sequence}.CodingSchemeDesignator", scheme)])
        return sorted(str(ds.StudyInstanceUID) for ds in archive.search.find(query))
    finally:
        archive.close()


class TestIndexFromRevision0001:
    @pytest.fixture
    def data(self, tmp_path: Path) -> Path:
        """A data directory whose index was written by revision 0001 (no code rows), with the
        objects it lists in the blob store: liver coded with SRT, body part CHEST."""
        data = tmp_path / "data"
        settings = settings_of(data)
        data.mkdir()
        with sqlite3.connect(settings.index_path) as con:
            con.executescript(DUMP_0001.read_text())
            stored = con.execute("SELECT sop_instance_uid, storage_key, instance_number "
                                 "FROM instance").fetchall()
        assert len(stored) == 2
        for sop_uid, key, number in stored:
            source = tmp_path / f"{number}.dcm"
            make_instance(source, study_uid=OLD_STUDY, series_uid=f"{OLD_STUDY}.1",
                          sop_uid=sop_uid, instance_number=number, extra={
                              "ProcedureCodeSequence": [code("T-62000", "SRT", "Liver")],
                              "BodyPartExamined": "CHEST"})
            final = settings.blob_dir / key[:2] / key[2:4] / key
            final.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, final)
        return data

    def test_codes_indexed_then_found(self, data: Path) -> None:
        assert studies_with(data, "ProcedureCodeSequence", "10200004", "SCT") == []
        status, done = reindex(data)
        assert status == 0
        assert done == {"instances": 2, "with_codes": 2, "codes": 4, "unreadable": 0,
                        "changed": 0}
        # Found by the SCT code of the SRT code it was stored with, and by its body part.
        assert studies_with(data, "ProcedureCodeSequence", "10200004", "SCT") == [OLD_STUDY]
        assert studies_with(data, "AnatomicRegionSequence", CHEST_SCT, "SCT") == [OLD_STUDY]

    def test_running_again_changes_nothing(self, data: Path) -> None:
        first = reindex(data)
        rows = code_rows(data)
        assert len(rows) == 4
        assert reindex(data) == first
        assert code_rows(data) == rows

    def test_unreadable_object_is_counted_and_the_rest_indexed(self, data: Path) -> None:
        settings = settings_of(data)
        [victim] = [p for p in settings.blob_dir.rglob("*") if p.is_file()][:1]
        victim.write_bytes(b"not DICOM at all")
        status, done = reindex(data)
        assert status == 1
        assert (done["instances"], done["unreadable"], done["codes"]) == (1, 1, 2)
        assert studies_with(data, "ProcedureCodeSequence", "T-62000", "SRT") == [OLD_STUDY]


class TestSameAsIngest:
    def test_rows_equal_those_ingest_wrote(self, tmp_path: Path) -> None:
        data = tmp_path / "data"
        archive = Archive.open(settings_of(data))
        try:
            for name, extra in (
                ("srt", {"ProcedureCodeSequence": [code("T-62000", "SRT", "Liver")],
                         "BodyPartExamined": "CHEST"}),
                ("local", {"ProcedureCodeSequence": [code("P1", "99LOCAL", "Local")],
                           "AnatomicRegionSequence": [code("10200004", "SCT", "Liver")]}),
                ("none", {}),
            ):
                path = tmp_path / f"{name}.dcm"
                make_instance(path, study_uid=new_uid(), extra=extra)
                archive.ingest.store_file(path, Origin("import"))
        finally:
            archive.close()
        ingested = code_rows(data)
        assert len(ingested) == 4
        archive = Archive.open(settings_of(data))
        try:
            with archive.index.writer.begin() as conn:
                conn.execute(delete(instance_code))
            with archive.index.reader.connect() as conn:
                assert conn.execute(select(instance.c.pk)).all() != []
        finally:
            archive.close()
        assert code_rows(data) == []
        status, done = reindex(data)
        assert status == 0 and done["instances"] == 3 and done["with_codes"] == 2
        assert code_rows(data) == ingested


class TestCommand:
    def test_nothing_asked_is_a_usage_error(self, tmp_path: Path) -> None:
        result = runner.invoke(app, ["reindex", "--data", str(tmp_path / "data")])
        assert result.exit_code == 2 and "--codes" in result.output

    def test_text_summary(self, tmp_path: Path) -> None:
        Archive.open(settings_of(tmp_path / "data")).close()
        result = runner.invoke(app, ["reindex", "--codes", "--data", str(tmp_path / "data")])
        assert result.exit_code == 0, result.output
        assert "0 instances read" in result.output
