"""``archivist send`` to a DCMTK ``storescp``: the objects arrive as stored, or decompressed
when the receiver accepts uncompressed syntaxes only; bad destinations exit with a reason."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file

from archivist.testing.datasets import make_instance, new_uid
from archivist.testing.net import wait_listening
from archivist.testing.server import free_port

STORESCP = "/usr/bin/storescp"
pytestmark = pytest.mark.skipif(not os.path.exists(STORESCP), reason="DCMTK storescp needed")

STUDY = new_uid()
SERIES = new_uid()


def _archivist(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "archivist.cli.main", *args],
                          capture_output=True, text=True, timeout=120, check=False,
                          env={**os.environ, **(env or {})})


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("send")
    files = tmp / "files"
    files.mkdir()
    for n in (2, 1):
        make_instance(files / f"ct{n}.dcm", study_uid=STUDY, series_uid=SERIES,
                      instance_number=n)
    make_instance(files / "other.dcm", study_uid=STUDY, modality="MR")
    (files / "jpeg.dcm").write_bytes(Path(get_testdata_file("JPEG2000.dcm")).read_bytes())
    data = tmp / "data"
    done = _archivist("import", "--quiet", "--data", str(data), str(files))
    assert done.returncode == 0, done.stdout + done.stderr
    return data


@pytest.fixture()
def receiver(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    port = free_port()
    out = tmp_path / "received"
    out.mkdir()
    proc = subprocess.Popen([STORESCP, "-aet", "STORESCP", "-od", str(out), str(port)],
                            env={**os.environ, "TCP_NODELAY": "1"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_listening(port, proc, what="storescp")
    yield port, out
    proc.terminate()
    proc.wait(10)


def _received(out: Path) -> dict[str, pydicom.Dataset]:
    return {str(ds.SOPInstanceUID): ds
            for ds in (pydicom.dcmread(p) for p in sorted(out.iterdir()))}


def test_a_study_to_a_node_named_on_the_command_line(archive: Path, receiver) -> None:
    port, out = receiver
    done = _archivist("send", f"STORESCP@127.0.0.1:{port}", "--study", STUDY, "--data",
                      str(archive))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"sent 3 of 3 instances to STORESCP at 127.0.0.1:{port}" in done.stdout
    got = _received(out)
    assert len(got) == 3 and {str(ds.StudyInstanceUID) for ds in got.values()} == {STUDY}


def test_a_series_to_a_configured_peer(archive: Path, receiver) -> None:
    port, out = receiver
    done = _archivist("send", "STORESCP", "--study", STUDY, "--series", SERIES, "--data",
                      str(archive), env={"ARCHIVIST_PEERS": f"STORESCP=127.0.0.1:{port}"})
    assert done.returncode == 0, done.stdout + done.stderr
    got = _received(out)
    assert sorted(int(ds.InstanceNumber) for ds in got.values()) == [1, 2]


def test_compressed_object_arrives_decompressed_with_its_uid(archive: Path, receiver) -> None:
    port, out = receiver
    source = pydicom.dcmread(get_testdata_file("JPEG2000.dcm"))
    done = _archivist("send", f"STORESCP@127.0.0.1:{port}", "--study",
                      str(source.StudyInstanceUID), "--data", str(archive))
    assert done.returncode == 0, done.stdout + done.stderr
    (ds,) = _received(out).values()
    assert ds.SOPInstanceUID == source.SOPInstanceUID
    assert not ds.file_meta.TransferSyntaxUID.is_compressed  # storescp's default syntaxes
    assert hashlib.sha256(ds.pixel_array.tobytes()).digest() == \
        hashlib.sha256(source.pixel_array.tobytes()).digest()


@pytest.mark.parametrize("destination, study, status, text", [
    ("NOBODY", STUDY, 2, "neither a configured peer"),
    ("X@127.0.0.1:1", STUDY, 1, "cannot associate with X at 127.0.0.1:1"),
    ("X@127.0.0.1:1", new_uid(), 2, "nothing is stored"),
    ("X@127.0.0.1:1", "1.2.x", 2, "is not a UID"),
], ids=["unknown-peer", "unreachable", "nothing-stored", "not-a-uid"])  # no random UIDs in ids
def test_refusals(archive: Path, destination: str, study: str, status: int, text: str) -> None:
    done = _archivist("send", destination, "--study", study, "--data", str(archive))
    assert done.returncode == status, done.stdout + done.stderr
    assert text in done.stderr
