"""`archivist reindex --codes` beside a delete: an object deleted while the command runs is
"changed meanwhile", not "unreadable", and the command exits 0.

The delete commits the index and then removes the object, so a reindex that listed the instance
before the delete may find its object gone (``NotFound``). It counted it as unreadable, logged
"not read (NotFound)" and exited 1, though its docstring says such objects are skipped.

The race is made exact with a real process and a real delete: the stored object of one instance
is replaced by a FIFO, so the reindex (a subprocess) blocks on reading it; the study is then
deleted with ``archivist delete``, and the FIFO is closed without data, so the read fails.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from archivist.archive.archive import Archive
from archivist.archive.ingest import Origin
from archivist.config import load_settings
from archivist.testing.datasets import code_item as code
from archivist.testing.datasets import make_instance, new_uid


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "archivist.cli.main", *args]


def open_writer_when_read(fifo: Path, proc: subprocess.Popen[str], timeout: float = 120) -> int:
    """Open `fifo` for writing once a reader has it open (the reindex blocked on it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno != errno.ENXIO:  # ENXIO: no reader yet
                raise
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    raise AssertionError("the reindex never opened the stored object")


class TestDeletedWhileReindexed:
    def test_counted_as_changed_and_exit_0(self, tmp_path: Path) -> None:
        data = tmp_path / "data"
        archive = Archive.open(load_settings(env={}, overrides={"data_dir": data}))
        try:
            studies = {"gone": new_uid(), "kept": new_uid()}
            keys = {}
            for name, study in studies.items():
                path = tmp_path / f"{name}.dcm"
                make_instance(path, study_uid=study, extra={
                    "ProcedureCodeSequence": [code("10200004", "SCT", "Liver")]})
                result = archive.ingest.store_file(path, Origin("import"))
                row = archive.index.get_instance(result.sop_instance_uid)
                assert row is not None
                keys[name] = str(row["storage_key"])
            stored = archive.blobs.path(keys["gone"])
        finally:
            archive.close()
        assert stored is not None
        stored.unlink()
        os.mkfifo(stored)

        reindex = subprocess.Popen(cli("reindex", "--codes", "--json", "--data", str(data)),
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            writer = open_writer_when_read(stored, reindex)
            deleted = subprocess.run(cli("delete", "--data", str(data), "--study", studies["gone"]),
                                     capture_output=True, text=True, timeout=120, check=False)
            assert deleted.returncode == 0, deleted.stdout + deleted.stderr
            assert not stored.exists()
            os.close(writer)  # the reindex reads an empty object: not DICOM
            out, err = reindex.communicate(timeout=120)
        finally:
            if reindex.poll() is None:
                reindex.kill()
                reindex.communicate()
        assert reindex.returncode == 0, out + err
        counts = json.loads(out)
        assert (counts["instances"], counts["unreadable"], counts["changed"]) == (1, 0, 1)
        assert "not read" not in err

    def test_an_object_still_stored_but_unreadable_is_still_reported(self, tmp_path: Path) -> None:
        data = tmp_path / "data"
        archive = Archive.open(load_settings(env={}, overrides={"data_dir": data}))
        try:
            path = tmp_path / "x.dcm"
            make_instance(path, extra={"ProcedureCodeSequence": [code("P1", "99QA", "x")]})
            result = archive.ingest.store_file(path, Origin("import"))
            row = archive.index.get_instance(result.sop_instance_uid)
            assert row is not None
            stored = archive.blobs.path(str(row["storage_key"]))
        finally:
            archive.close()
        assert stored is not None
        stored.write_bytes(b"not DICOM any more")
        out = subprocess.run(cli("reindex", "--codes", "--json", "--data", str(data)),
                             capture_output=True, text=True, timeout=120, check=False)
        assert out.returncode == 1, out.stdout + out.stderr
        counts = json.loads(out.stdout)
        assert (counts["unreadable"], counts["changed"]) == (1, 0)
        assert result.sop_instance_uid in out.stderr
