"""The index file lost, emptied or damaged, as the command line meets it (QA round 4).

Found by hand: with ``index.sqlite`` deleted (or emptied) and the stored objects still in the
blob store, ``archivist reindex --codes``, ``import``, ``migrate`` and (for an empty file)
``find`` opened the archive, whose start-up sweep takes every blob the new, empty index does not
name for a crash leftover: every stored object was deleted. A damaged index file gave ``import``
a Python traceback (exit 1, documented as "some objects rejected"), and the other commands said
"try again", which cannot help. ``migrate --via carrier`` created the data directory before
refusing the option.
"""

from __future__ import annotations

import traceback
from pathlib import Path

import pytest
from typer.testing import CliRunner

from archivist.archive.archive import Archive
from archivist.archive.ingest import Origin
from archivist.cli.main import app
from archivist.config import load_settings
from archivist.testing.datasets import make_instance, new_uid


class Ran:
    def __init__(self, returncode: int, output: str) -> None:
        self.returncode = returncode
        self.stdout = self.stderr = output


def archivist(*args: str) -> Ran:
    """The command line, in this process (typer's runner: stdout and stderr together)."""
    result = CliRunner().invoke(app, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        return Ran(1, "".join(traceback.format_exception(result.exception)))
    return Ran(result.exit_code, result.output)


def blobs(data: Path) -> list[Path]:
    return [p for p in (data / "blobs").rglob("*") if p.is_file()]


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """A data directory holding two stored instances."""
    data = tmp_path / "data"
    archive = Archive.open(load_settings(env={}, overrides={"data_dir": data}))
    try:
        study, series = new_uid(), new_uid()
        for n in (1, 2):
            path = tmp_path / f"{n}.dcm"
            make_instance(path, study_uid=study, series_uid=series, instance_number=n)
            archive.ingest.store_file(path, Origin("test"))
    finally:
        archive.close()
    assert len(blobs(data)) == 2
    return data


def lose_index(data: Path, how: str) -> None:
    for path in data.glob("index.sqlite*"):
        path.unlink()
    if how == "emptied":
        (data / "index.sqlite").write_bytes(b"")


class TestLostIndex:
    @pytest.mark.parametrize(("how", "command"), [
        ("deleted", ["reindex", "--codes"]),
        ("emptied", ["import", "-q", "{file}"]),
        ("emptied", ["find"]),
        ("deleted", ["migrate", "-q", "--from", "NOBODY@127.0.0.1:9"]),
        ("emptied", ["validate", "--stored", "1.2.3"]),
    ])
    def test_the_stored_objects_are_kept_and_the_command_refused(
            self, data: Path, tmp_path: Path, how: str, command: list[str]) -> None:
        lose_index(data, how)
        make_instance(tmp_path / "new.dcm", study_uid=new_uid())
        args = [a.replace("{file}", str(tmp_path / "new.dcm")) for a in command]
        result = archivist(*args, "--data", str(data))
        assert len(blobs(data)) == 2, result.stdout + result.stderr
        assert result.returncode == 2, result.stdout + result.stderr
        assert "holds stored objects" in result.stderr and "Traceback" not in result.stderr

    def test_the_message_s_recovery_works(self, data: Path, tmp_path: Path) -> None:
        lose_index(data, "deleted")
        moved = tmp_path / "moved-blobs"
        (data / "blobs").rename(moved)
        result = archivist("import", "-q", "--data", str(data), str(moved))
        assert result.returncode == 0 and "2 stored" in result.stdout, result.stdout


class TestDamagedIndex:
    @pytest.mark.parametrize("command", [["import", "-q", "{file}"], ["delete", "--study", "1.2.3"]])
    def test_a_damaged_index_is_named_not_a_traceback(self, data: Path, tmp_path: Path,
                                                      command: list[str]) -> None:
        index = data / "index.sqlite"
        with open(index, "r+b") as fh:
            fh.write(b"this is no SQLite file")
        make_instance(tmp_path / "new.dcm", study_uid=new_uid())
        args = [a.replace("{file}", str(tmp_path / "new.dcm")) for a in command]
        result = archivist(*args, "--data", str(data))
        assert "Traceback" not in result.stderr, result.stderr
        assert result.returncode == 3
        assert "the index is damaged" in result.stderr and "try again" not in result.stderr
        assert len(blobs(data)) == 2


def test_migrate_refuses_a_bad_option_before_creating_the_data_directory(
        tmp_path: Path) -> None:
    result = archivist("migrate", "--from", "SRC@127.0.0.1:9", "--via", "carrier",
                       "--data", str(tmp_path / "typo"))
    assert result.returncode == 2 and "--via must be get or move" in result.stderr
    assert not (tmp_path / "typo").exists()
