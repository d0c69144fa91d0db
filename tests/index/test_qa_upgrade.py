"""Upgrading a data directory in place, refusing one from a newer version, and restoring one
from a backup (QA round 5, "upgrade").

- An index at an older revision is upgraded when the archive opens, and the log says so: from
  which revision to which, each revision applied, and (from before 0002) that `archivist reindex
  --codes` is needed for query by code. It said nothing: a long upgrade looked like a hung start.
- An index at a revision this version does not know (written by a newer version) is refused
  with a message that says so, before anything is written; every command exits cleanly (it was
  Alembic's "Can't locate revision identified by '0006'", a traceback from `archivist find`, and
  `serve` started its workers three times before giving up).
- An upgrade cut short by kill -9 leaves the index at the revision it had, and the next open
  finishes it.
- WADO-RS series metadata files kept under ``cache/metadata`` were served for a series whose
  index was restored from an older backup (they listed an object the index no longer had, and
  not the one stored since, which reused the change sequence), and, after the data directory was
  restored to another path, their BulkDataURIs kept the old directory's placeholder
  (``urn:archivist:root:...``) instead of the server's URL.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import select

from archivist.archive.archive import Archive, lost_index
from archivist.archive.ingest import Origin
from archivist.config import Settings
from archivist.errors import IndexLost
from archivist.index.repository import Index
from archivist.index.schema import series
from archivist.testing.datasets import make_instance
from archivist.web.dicomweb.wado import MetadataCache

IMPORT = Origin("import")
STUDY = "1.2.826.0.1.3680043.10.543.77.1"
SERIES = STUDY + ".1"


def _settings(data: Path) -> Settings:
    return Settings(data_dir=data)


def _index_at(data: Path, revision: str) -> Path:
    """A data directory whose index was built by this tree's migrations up to `revision` (the
    shape an older version left), with no rows."""
    data.mkdir(parents=True, exist_ok=True)
    path = data / "index.sqlite"
    index = Index(f"sqlite:///{path}")
    try:
        cfg = Config()
        cfg.set_main_option("script_location", "archivist.index:migrations")
        with index.writer.connect() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
            conn.commit()
    finally:
        index.close()
    return path


def _add_padded_patients(path: Path, count: int) -> None:
    """Patients as revision 0004 left them: names padded with empty components, folded the old
    way (the padding kept)."""
    with closing(sqlite3.connect(path)) as con, con:
        con.executemany(
            "INSERT INTO patient (patient_id, issuer_of_patient_id, patient_name, "
            "patient_name_norm, number_of_patient_related_studies, "
            "number_of_patient_related_series, number_of_patient_related_instances) "
            "VALUES (?, '', ?, ?, 0, 0, 0)",
            ((f"P{i}", f"PAD{i}^NAME^^", f"pad{i}^name^^") for i in range(count)))


def _revision(path: Path) -> str:
    with closing(sqlite3.connect(path)) as con, con:
        return str(con.execute("SELECT version_num FROM alembic_version").fetchone()[0])


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "archivist.cli.main", *args],
                          check=False, capture_output=True, text=True, timeout=120)


# -- upgrade in place ------------------------------------------------------------------------------

def test_an_upgrade_says_what_it_did(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    data = tmp_path / "data"
    path = _index_at(data, "0004")
    _add_padded_patients(path, 3)
    with caplog.at_level(logging.INFO, logger="archivist"):
        archive = Archive.open(_settings(data))
    archive.close()
    said = [r.getMessage() for r in caplog.records if r.name.startswith("archivist.index")]
    assert any("at revision 0004" in m and "upgrading" in m for m in said), said
    assert any(m.startswith("index revision 0005 applied: Person names") for m in said), said
    assert any("upgraded from revision 0004 to 0008" in m for m in said), said
    assert _revision(path) == "0008"
    with closing(sqlite3.connect(path)) as con, con:
        assert con.execute("SELECT patient_name_norm FROM patient WHERE patient_id = 'P1'"
                           ).fetchone()[0] == "pad1^name"


def test_an_upgrade_from_before_codes_says_to_reindex(tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    data = tmp_path / "data"
    path = _index_at(data, "0001")
    with closing(sqlite3.connect(path)) as con, con:  # one object stored by a version 0.1 archive
        con.executescript("""
            INSERT INTO patient VALUES (1, 'P', '', 'A^B', 'a^b', NULL, NULL, NULL, 1, 1, 1, NULL);
            INSERT INTO study (pk, patient_pk, study_instance_uid, modalities_in_study,
                sop_classes_in_study, number_of_study_related_series,
                number_of_study_related_instances, change_seq) VALUES (1, 1, '1.2.3', '\\CT\\',
                '\\1.2.840.10008.5.1.4.1.1.2\\', 1, 1, 1);
            INSERT INTO series (pk, study_pk, series_instance_uid, number_of_series_related_instances,
                change_seq) VALUES (1, 1, '1.2.3.4', 1, 1);
            INSERT INTO instance (pk, series_pk, sop_instance_uid, sop_class_uid,
                transfer_syntax_uid, size, sha256, storage_key, received_at, change_seq)
                VALUES (1, 1, '1.2.3.4.5', '1.2.840.10008.5.1.4.1.1.2', '1.2.840.10008.1.2.1', 1,
                'x', 'k', '2024-01-01 00:00:00', 1);
        """)
    with caplog.at_level(logging.INFO, logger="archivist"):
        Archive.open(_settings(data)).close()
    said = " | ".join(r.getMessage() for r in caplog.records)
    assert "upgraded from revision 0001 to 0008" in said
    assert "archivist reindex --codes" in said


def test_a_new_index_is_not_reported_as_an_upgrade(tmp_path: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="archivist"):
        Archive.open(_settings(tmp_path / "data")).close()
    assert not [r for r in caplog.records if r.name.startswith("archivist.index.migrations")]


def test_an_upgrade_cut_short_is_finished_by_the_next_start(tmp_path: Path) -> None:
    """kill -9 while revision 0005 rewrites 40,000 names: the index is still at 0004 with every
    row as it was (or, if the kill came late, at 0005 with every row done), never in between;
    the next open finishes the upgrade."""
    data = tmp_path / "data"
    path = _index_at(data, "0004")
    _add_padded_patients(path, 40_000)
    opener = ("import sys; from archivist.archive.archive import Archive; "
              "from archivist.config import Settings; "
              "from pathlib import Path; "
              "Archive.open(Settings(data_dir=Path(sys.argv[1]))).close()")
    proc = subprocess.Popen([sys.executable, "-c", opener, str(data)],
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    assert proc.stderr is not None
    line = proc.stderr.readline()  # the upgrade announces itself before it starts
    assert "upgrading" in line, line
    time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    with closing(sqlite3.connect(path)) as con, con:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        padded = con.execute("SELECT COUNT(*) FROM patient WHERE patient_name_norm LIKE '%^'"
                             ).fetchone()[0]
    assert (_revision(path), padded) in {("0004", 40_000), ("0005", 0), ("0006", 0), ("0007", 0),
                                        ("0008", 0)}
    Archive.open(_settings(data)).close()
    assert _revision(path) == "0008"
    with closing(sqlite3.connect(path)) as con, con:
        assert con.execute("SELECT COUNT(*) FROM patient WHERE patient_name_norm LIKE '%^'"
                           ).fetchone()[0] == 0


# -- an index from a newer version ---------------------------------------------------------------

@pytest.fixture()
def newer(tmp_path: Path) -> Path:
    """A data directory whose index a future version (revision 0099) wrote, with a blob."""
    data = tmp_path / "newer"
    Archive.open(_settings(data)).close()
    with closing(sqlite3.connect(data / "index.sqlite")) as con, con:
        con.execute("UPDATE alembic_version SET version_num = '0099'")
        con.execute("CREATE TABLE future_thing (x INTEGER)")
    (data / "blobs" / "ab").mkdir(parents=True)
    (data / "blobs" / "ab" / "abcdef").write_bytes(b"DICM")
    return data


def _state(data: Path) -> dict[str, bytes]:
    return {str(p.relative_to(data)): p.read_bytes() for p in sorted(data.rglob("*"))
            if p.is_file() and not p.name.endswith(("-shm", "-wal", ".lock"))}


def test_an_index_from_a_newer_version_is_refused_and_left_alone(newer: Path) -> None:
    before = _state(newer)
    problem = lost_index(_settings(newer))
    assert problem is not None and "revision 0099" in problem and "newer version" in problem
    with pytest.raises(IndexLost, match="revision 0099.*newer version"):
        Archive.open(_settings(newer))
    assert _state(newer) == before


def test_commands_refuse_a_newer_index_cleanly(newer: Path) -> None:
    before = _state(newer)
    done = _cli("find", "--data", str(newer))  # as every command opens the archive
    # (`serve` asks lost_index before it starts any worker)
    assert done.returncode == 2, done.stderr
    assert "revision 0099" in done.stderr and "Traceback" not in done.stderr
    assert _state(newer) == before


# -- restore from a backup --------------------------------------------------------------------------

def _store(archive: Archive, tmp: Path, sop_suffix: str) -> str:
    sop = f"{SERIES}.{sop_suffix}"
    path = tmp / f"{sop_suffix}.dcm"
    make_instance(path, study_uid=STUDY, series_uid=SERIES, sop_uid=sop,
                  patient_name="RESTORE^TEST")
    archive.ingest.store_file(path, IMPORT)
    return sop


def _metadata(archive: Archive) -> str:
    with archive.index.reader.connect() as conn:
        pk, seq = conn.execute(select(series.c.pk, series.c.change_seq)
                               .where(series.c.series_instance_uid == SERIES)).one()
    body = MetadataCache(archive).series_gz(int(pk), int(seq), STUDY, SERIES,
                                            "http://pacs:8080/dicomweb")
    return gzip.decompress(body).decode()


def _sops(metadata: str) -> set[str]:
    return {item["00080018"]["Value"][0] for item in json.loads(metadata)}


def test_an_index_restored_from_a_backup_does_not_get_newer_metadata(tmp_path: Path) -> None:
    data = tmp_path / "data"
    archive = Archive.open(_settings(data))
    try:
        first = {_store(archive, tmp_path, "1"), _store(archive, tmp_path, "2")}
        assert _sops(_metadata(archive)) == first
        with closing(sqlite3.connect(data / "index.sqlite")) as live, \
                closing(sqlite3.connect(tmp_path / "backup.sqlite")) as backup:
            live.backup(backup)  # what `sqlite3 index.sqlite .backup FILE` does
        gone = _store(archive, tmp_path, "3")  # after the backup: lost with the restore
        assert _sops(_metadata(archive)) == first | {gone}
    finally:
        archive.close()
    for suffix in ("-wal", "-shm"):
        (data / f"index.sqlite{suffix}").unlink(missing_ok=True)
    shutil.copy(tmp_path / "backup.sqlite", data / "index.sqlite")

    archive = Archive.open(_settings(data))  # its blob goes to orphans/
    try:
        assert list((data / "orphans").iterdir())
        new = _store(archive, tmp_path, "4")  # takes the change sequence "3" had
        assert _sops(_metadata(archive)) == first | {new}
    finally:
        archive.close()


def test_a_data_directory_restored_to_another_path_serves_its_own_urls(tmp_path: Path) -> None:
    data = tmp_path / "data"
    archive = Archive.open(_settings(data))
    try:
        _store(archive, tmp_path, "1")
        assert "urn:archivist" not in _metadata(archive)
    finally:
        archive.close()
    assert any((data / "cache" / "metadata").iterdir())
    elsewhere = tmp_path / "restored" / "archive"
    shutil.copytree(data, elsewhere)  # a copy of the stopped data directory, put elsewhere

    archive = Archive.open(_settings(elsewhere))
    try:
        text = _metadata(archive)
        assert "urn:archivist" not in text
        assert f"http://pacs:8080/dicomweb/studies/{STUDY}/series/{SERIES}/instances/" in text
    finally:
        archive.close()
    # The original, opened again where it was, keeps its files.
    kept = sorted(p.name for p in (data / "cache" / "metadata").iterdir())
    Archive.open(_settings(data)).close()
    assert sorted(p.name for p in (data / "cache" / "metadata").iterdir()) == kept


def test_copies_of_the_data_directory_name_it_from_the_environment(tmp_path: Path) -> None:
    """ARCHIVIST_DATA_DIR pointing at a symlink to the data directory is the same directory:
    its metadata files are kept."""
    data = tmp_path / "data"
    archive = Archive.open(_settings(data))
    try:
        _store(archive, tmp_path, "1")
        _metadata(archive)
    finally:
        archive.close()
    kept = sorted(p.name for p in (data / "cache" / "metadata").iterdir())
    link = tmp_path / "link"
    os.symlink(data, link)
    Archive.open(_settings(link)).close()
    assert sorted(p.name for p in (data / "cache" / "metadata").iterdir()) == kept


def test_objects_whose_blob_a_restore_lacks_are_reported(tmp_path: Path,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    """Blobs copied before the index (a hot backup in the wrong order): the restored index lists
    objects the copy lacks; the start says which instead of leaving them to 404 one by one."""
    data = tmp_path / "data"
    archive = Archive.open(_settings(data))
    try:
        kept = _store(archive, tmp_path, "1")
        lost = _store(archive, tmp_path, "2")
        row = archive.index.get_instance(lost)
        assert row is not None
        path = archive.blobs.path(str(row["storage_key"]))
    finally:
        archive.close()
    assert path is not None
    path.unlink()
    with caplog.at_level(logging.WARNING, logger="archivist"):
        Archive.open(_settings(data)).close()
    said = " | ".join(r.getMessage() for r in caplog.records)
    assert "1 objects the index lists have no blob" in said and lost in said
    assert kept not in said


def test_no_upgrade_under_an_older_version_still_running(tmp_path: Path) -> None:
    """Another process holds the data directory (every version holds ``archivist.lock`` shared
    while it runs) and the index is behind: it is an older version, which would go on writing
    the old way into the new schema. The upgrade waits until it is stopped."""
    import fcntl

    data = tmp_path / "data"
    path = _index_at(data, "0004")
    with open(data / "archivist.lock", "a+") as older:
        fcntl.flock(older, fcntl.LOCK_SH)
        with pytest.raises(IndexLost, match="another process uses the data directory"):
            Archive.open(_settings(data))
        assert _revision(path) == "0004"
    Archive.open(_settings(data)).close()
    assert _revision(path) == "0008"
