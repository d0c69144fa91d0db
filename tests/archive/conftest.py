"""Fixtures for the archive use-case tests: a real embedded archive in a temporary directory."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from archivist.archive.archive import Archive
from archivist.config import load_settings

OpenArchive = Callable[..., Archive]


@pytest.fixture
def open_archive(tmp_path: Path) -> Iterator[OpenArchive]:
    opened: list[Archive] = []

    def _open(**overrides: Any) -> Archive:
        # Only the index's database from the environment (ARCHIVIST_TEST_POSTGRES=1 sets it).
        env = {k: v for k, v in os.environ.items() if k == "ARCHIVIST_DATABASE_URL"}
        settings = load_settings(env=env, overrides={"data_dir": tmp_path / "data",
                                                      **overrides})
        archive = Archive.open(settings)
        opened.append(archive)
        return archive

    yield _open
    for archive in opened:
        archive.close()


@pytest.fixture
def archive(open_archive: OpenArchive) -> Archive:
    return open_archive()
