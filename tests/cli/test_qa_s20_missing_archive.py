"""Commands pointed at a data directory that holds no archive (QA s20, the README followed).

Found by hand: ``archivist reindex --codes --data TYPO`` created an empty archive at TYPO and
reported "0 instances read" (exit 0), after which ``purge-tombstones`` there found that archive
too; ``inventory create`` stored an inventory of 0 studies in a new archive at a mistyped
``--data`` (exit 0), ``inventory export`` wrote it, and ``inventory diff FILE archive`` listed
every record of FILE as missing (exit 1) instead of saying there is no archive. ``delete``,
``purge-tombstones`` and ``inventory list`` already refused (exit 2).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from archivist.cli.main import app

runner = CliRunner()


class Result:
    def __init__(self, returncode: int, stdout: str, stderr: str) -> None:
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def archivist(*args: str) -> Result:
    env = {"ARCHIVIST_DATA_DIR": None, "ARCHIVIST_DATA": None, "ARCHIVIST_DATABASE_URL": None,
           "ARCHIVIST_S3_BUCKET": None, "ARCHIVIST_CONFIG": None, "COLUMNS": "200"}
    result = runner.invoke(app, list(args), env=env)
    return Result(result.exit_code, result.stdout, result.stderr)


@pytest.mark.parametrize("command", [
    ["reindex", "--codes"],
    ["inventory", "create"],
    ["inventory", "export", "{out}"],
    ["inventory", "diff", "archive", "archive"],
], ids=lambda c: " ".join(c[:2]))
def test_no_archive_is_created_at_a_mistyped_data_dir(tmp_path: Path,
                                                       command: list[str]) -> None:
    typo = tmp_path / "archvist-data"
    args = [a.replace("{out}", str(tmp_path / "inventory.json")) for a in command]
    result = archivist(*args, "--data", str(typo))
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert f"no archive at {typo}" in result.stderr
    assert not typo.exists()
    assert not (tmp_path / "inventory.json").exists()


def test_reindex_of_blobs_without_an_index_still_says_the_index_is_lost(tmp_path: Path) -> None:
    """Stored objects and no index: the lost-index message with how to recover, not "no
    archive"."""
    data = tmp_path / "data"
    (data / "blobs" / "ab").mkdir(parents=True)
    (data / "blobs" / "ab" / "object").write_bytes(b"\0" * 128 + b"DICM")
    result = archivist("reindex", "--codes", "--data", str(data))
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "no archive at" not in result.stderr
    assert "import" in result.stderr
