"""QA (workers): a sibling worker that dies while it stores a part handed over by its file's
name. The sibling moves the file into the store before it records the instance; killed before it
answers, it leaves the forwarding worker with no file to store, and the part was reported as a
failure ("internal error (FileNotFoundError)") though the instance was stored, or lost when the
sibling had not recorded it yet."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
from pathlib import Path

import pytest

from archivist.archive.archive import Archive
from archivist.archive.ingest import Origin, StoreStatus
from archivist.config import load_settings
from archivist.testing.datasets import make_instance, new_uid
from archivist.web.dicomweb import stow
from archivist.web.dicomweb.siblings import Calls, Siblings, socket_path

pytestmark = pytest.mark.timeout(120)


def _settings(data: Path):  # type: ignore[no-untyped-def]
    return load_settings(env={}, overrides={"data_dir": data})


def _sibling_that_dies(data: Path, record: bool, ready: object) -> None:
    """Worker 1: takes parts from worker 0 and dies (as with kill -9) before it answers;
    with `record` the instance is in the index by then, otherwise only its file was moved."""
    # A worker makes its parts' thread pool after the fork; one this test process made
    # before (another test's) has no threads here.
    stow._pool = None
    settings = _settings(data)
    archive = Archive.open(settings)

    async def store(body: bytes | Path, study: str | None, client: str | None) -> Calls:
        if record:
            await stow.store_for_sibling(archive, body, study, client)
        else:
            assert isinstance(body, Path)
            body.rename(Path(settings.blob_dir) / "moved-away")
        os._exit(9)

    async def serve() -> None:
        siblings = Siblings(data / "run", Path(settings.tmp_dir), 1, 2)
        assert await siblings.start(store)
        ready.set()  # type: ignore[attr-defined]
        await asyncio.sleep(60)

    asyncio.run(serve())


@pytest.mark.parametrize("record", [True, False], ids=["recorded", "file-moved-only"])
def test_a_part_file_survives_a_sibling_that_dies_before_it_answers(
        tmp_path: Path, record: bool) -> None:
    data = tmp_path / "data"
    settings = _settings(data)
    archive = Archive.open(settings)
    tmp_dir = Path(settings.tmp_dir)
    source = tmp_path / "big.dcm"
    study = new_uid()
    make_instance(source, study_uid=study, rows=800, columns=800)  # over 1 MiB: a part file
    part = tmp_dir / "stow-qa_workers.part"
    part.write_bytes(source.read_bytes())

    ctx = multiprocessing.get_context("fork")
    ready = ctx.Event()
    child = ctx.Process(target=_sibling_that_dies, args=(data, record, ready))
    child.start()
    try:
        assert ready.wait(30)
        assert socket_path(data / "run", 1).exists()

        async def forward() -> Calls | None:
            siblings = Siblings(data / "run", tmp_dir, 0, 2)
            try:
                return await siblings.forward(part, study, "127.0.0.1")
            finally:
                await siblings.close()

        assert asyncio.run(forward()) is None  # the sibling did not answer: store it here
        child.join(30)
        assert child.exitcode == 9
        # The part is there to be stored here, as it came, and nothing else is left in tmp.
        assert part.read_bytes() == source.read_bytes()
        assert sorted(p.name for p in tmp_dir.iterdir()) == [part.name]
        outcome = stow._Outcome()
        stow._store_body(archive, part, study, outcome, Origin("stow", None, "127.0.0.1"))
        assert [name for name, _ in outcome.calls] == ["ok"], outcome.calls
        assert archive.index.storage_keys()
        res = archive.ingest.store_bytes(source.read_bytes(), Origin("stow", None, None))
        assert res.status is StoreStatus.ALREADY_STORED  # stored once
    finally:
        if child.is_alive():
            child.kill()
        archive.close()
