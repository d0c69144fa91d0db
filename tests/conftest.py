"""Shared pytest configuration.

Tests are imported with ``--import-mode=importlib`` (test files in different folders may share a
basename); helper modules that live beside the tests (``dicomgen``, ``validation_cases``, ...) are
made importable by putting each test folder on ``sys.path``.
"""

import sys
from pathlib import Path

for _folder in sorted(p for p in Path(__file__).parent.iterdir() if p.is_dir()):
    if _folder.name.startswith((".", "__")):
        continue
    if str(_folder) not in sys.path:
        sys.path.insert(0, str(_folder))


# pynetdicom's requestor can lose a response on a loaded machine (pydicom/pynetdicom#875; see
# archivist.core.pynetdicom_race): every pynetdicom client of the suite is guarded.
from archivist.core.pynetdicom_race import install as _install_scu_guard

_install_scu_guard()

# -- the whole suite on PostgreSQL ------------------------------------------------------------------
# ARCHIVIST_TEST_POSTGRES=1 gives every test a new PostgreSQL database as its archive's index
# (ARCHIVIST_DATABASE_URL, which archives opened from the environment and `archivist serve`
# read); tests that build a SQLite index themselves keep it. tests/integration/test_postgresql.py
# runs on PostgreSQL in every run.
import os

import pytest

if os.environ.get("ARCHIVIST_TEST_POSTGRES") == "1":

    @pytest.fixture(scope="session")
    def _postgres_for_all():  # type: ignore[no-untyped-def]
        from archivist.testing.postgres import PostgresServer

        server = PostgresServer().start()
        yield server
        server.stop()

    @pytest.fixture(autouse=True)
    def _index_on_postgres(_postgres_for_all, monkeypatch):  # type: ignore[no-untyped-def]
        monkeypatch.setenv("ARCHIVIST_DATABASE_URL", _postgres_for_all.new_database())
