"""The README followed command by command on a fresh machine, with DCMTK as the modality
(QA, session 18): what a reader of the Configuration section expects of the commands that run
beside `serve`."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

from archivist.testing.datasets import pydicom_test_file
from conftest import dcmtk_tool

AET = "ARCHIVIST"


def _archivist(*args: str, env: dict[str, str] | None = None,
               ) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("ARCHIVIST_")}
    environ.update(env or {})
    return subprocess.run([sys.executable, "-m", "archivist.cli.main", *args],
                          capture_output=True, text=True, env=environ, timeout=120, check=False)


class TestInventoryCreateSettings:
    """`inventory_studies_per_instance` is a setting like any other: `archivist inventory
    create` beside a running `serve` took 1000 whatever the settings file or the environment
    said (only its own --studies-per-instance flag counted)."""

    def test_setting_splits_inventory(self, make_server, dcmtk,  # type: ignore[no-untyped-def]
                                      tmp_path: Path) -> None:
        srv = make_server()
        files = [pydicom_test_file(name) for name in ("CT_small.dcm", "MR_small.dcm",
                                                      "rtplan.dcm")]
        stored = subprocess.run([dcmtk_tool("storescu"), "-aec", AET, "127.0.0.1",
                                 str(srv.dicom_port), *map(str, files)],
                                capture_output=True, text=True, timeout=60, check=False)
        assert stored.returncode == 0, stored.stdout + stored.stderr

        def instances(done: subprocess.CompletedProcess[str]) -> int:
            assert done.returncode == 0, done.stderr
            match = re.search(r"level STUDY, 3 studies, (\d+) instance\(s\)", done.stdout)
            assert match, done.stdout
            return int(match.group(1))

        data = str(srv.data_dir)
        by_env = _archivist("inventory", "create", "--data", data,
                            env={"ARCHIVIST_INVENTORY_STUDIES_PER_INSTANCE": "1"})
        assert instances(by_env) == 4  # a root incorporating one instance per study
        config = tmp_path / "archivist.toml"
        config.write_text("inventory_studies_per_instance = 2\n")
        by_file = _archivist("inventory", "create", "--data", data, "--config", str(config))
        assert instances(by_file) == 3
        flag_wins = _archivist("inventory", "create", "--data", data, "--config", str(config),
                               "--studies-per-instance", "3")
        assert instances(flag_wins) == 1
        assert instances(_archivist("inventory", "create", "--data", data)) == 1


def test_sigterm_lets_a_running_storescu_finish(make_server, dcmtk,  # type: ignore[no-untyped-def]
                                               tmp_path: Path) -> None:
    """README: "Ctrl-C or SIGTERM stops it cleanly: running requests and associations get
    10 s to finish". A storescu sending a series of a few seconds when the archive is told to
    stop was aborted after the C-STORE in hand (0006:0317), the rest of the series not stored."""
    import pydicom
    from pydicom.uid import generate_uid

    source = pydicom.dcmread(pydicom_test_file("CT_small.dcm"))
    study, series = generate_uid(), generate_uid()
    folder = tmp_path / "series"
    folder.mkdir()
    for number in range(200):
        source.StudyInstanceUID, source.SeriesInstanceUID = study, series
        source.SOPInstanceUID = generate_uid()
        source.file_meta.MediaStorageSOPInstanceUID = source.SOPInstanceUID
        source.InstanceNumber = number + 1
        source.save_as(folder / f"{number:04d}.dcm", enforce_file_format=True)
    srv = make_server()
    files = sorted(str(p) for p in folder.iterdir())
    scu = subprocess.Popen([dcmtk_tool("storescu"), "-aec", AET, "127.0.0.1",
                            str(srv.dicom_port), *files],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 30
    while "association accepted from STORESCU" not in srv.log():
        assert time.monotonic() < deadline and scu.poll() is None, srv.log()
        time.sleep(0.05)
    time.sleep(0.3)
    started = time.monotonic()
    assert srv.stop() == 0
    output, _ = scu.communicate(timeout=60)
    assert scu.returncode == 0, output
    assert "Store Failed" not in output
    assert time.monotonic() - started < 15
