"""Found by the second QA pass of the terminology commands, run as people run them.

- ``archivist codes check`` on a file cut short reported what pydicom read of it (nothing, or a
  bogus ``meaning.differs`` for a Code Meaning cut in two) and exited 0. The lengths the
  elements declare are now compared with the file's size, as ingest does
  (:func:`archivist.core.truncation.cut_short`): "cannot read ... truncated", exit 2.
  A file cut in its File Meta, or with an element pydicom cannot decode, gave a traceback
  (exit 1): now "cannot read", exit 2.
- ``archivist codes cid 4 --search zzzzz`` printed only the header and exited 0, while
  ``codes search`` exits 1 when nothing is found: both now exit 1, with ``--json`` too.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from archivist import terminology
from archivist.core.truncation import cut_short
from archivist.terminology.check import CheckError
from archivist.testing.datasets import code_item as code
from archivist.testing.datasets import make_instance, pydicom_test_file


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "archivist.cli.main", "codes", *args],
        check=False, capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )


@pytest.fixture
def coded_file(tmp_path: Path) -> Path:
    """A small CT with a Procedure Code, and a long text value to cut in its middle."""
    path = tmp_path / "whole.dcm"
    make_instance(path, rows=16, columns=16, extra={
        "ProcedureCodeSequence": [code("80891009", "SCT", "Heart")],
        "ImageComments": "x" * 300,  # a value long enough to be cut in its middle
    })
    return path


def cut(source: Path, size: int, target: Path) -> Path:
    target.write_bytes(source.read_bytes()[:size])
    return target


def value_end(source: Path, keyword: str) -> int:
    """Where the value of `keyword` (a top-level element) ends in the file."""
    import pydicom

    with open(source, "rb") as fh:
        ds = pydicom.dcmread(fh)
        raw = ds._dict[pydicom.datadict.tag_for_keyword(keyword)]
        return int(raw.value_tell) + int(raw.length)


class TestTruncatedFile:
    def test_cut_in_a_value_is_exit_2(self, coded_file: Path, tmp_path: Path) -> None:
        whole = run("check", str(coded_file))
        assert whole.returncode == 0, whole.stdout + whole.stderr
        size = value_end(coded_file, "ImageComments") - 100
        out = run("check", str(cut(coded_file, size, tmp_path / "t.dcm")))
        assert out.returncode == 2, out.stdout + out.stderr
        assert "truncated" in out.stderr and f"{size} bytes in the file" in out.stderr
        assert "finding" not in out.stdout

    def test_cut_in_the_pixel_data(self, coded_file: Path, tmp_path: Path) -> None:
        size = coded_file.stat().st_size - 10
        out = run("check", "--json", str(cut(coded_file, size, tmp_path / "p.dcm")))
        assert out.returncode == 2
        report = json.loads(out.stdout)
        assert "truncated" in report[0]["error"] and report[0]["findings"] == []

    def test_cut_in_an_element_header(self, coded_file: Path, tmp_path: Path) -> None:
        size = value_end(coded_file, "ImageComments") + 3  # 3 bytes of the next tag
        with pytest.raises(CheckError, match="ends inside an element header"):
            terminology.check_file(cut(coded_file, size, tmp_path / "h.dcm"))

    @pytest.mark.parametrize("size", [141, 154, 170])
    def test_cut_in_the_file_meta_is_exit_2_without_a_traceback(
        self, coded_file: Path, tmp_path: Path, size: int
    ) -> None:
        out = run("check", str(cut(coded_file, size, tmp_path / "m.dcm")))
        assert out.returncode == 2, out.stdout + out.stderr
        assert "Traceback" not in out.stderr and "cannot read" in out.stderr

    def test_an_element_that_cannot_be_decoded(self, coded_file: Path, tmp_path: Path) -> None:
        data = bytearray(coded_file.read_bytes())
        at = data.index(b"\x08\x00\x00\x01SH")  # Code Value (0008,0100), explicit VR
        data[at + 4:at + 6] = b"QQ"  # a VR that does not exist
        broken = tmp_path / "vr.dcm"
        broken.write_bytes(bytes(data))
        out = run("check", str(broken))
        assert out.returncode == 2, out.stdout + out.stderr
        assert "Traceback" not in out.stderr and "cannot decode an element" in out.stderr

    @pytest.mark.parametrize("name", ["MR_truncated.dcm", "rtplan_truncated.dcm"])
    def test_pydicoms_truncated_files(self, name: str) -> None:
        path = pydicom_test_file(name)
        if path is None:
            pytest.skip(f"{name} is not in this pydicom")
        with pytest.raises(CheckError, match="truncated"):
            terminology.check_file(path)

    @pytest.mark.parametrize("name", ["image_dfl.dcm", "CT_small.dcm", "test-SR.dcm",
                                      "JPEG2000.dcm"])
    def test_whole_files_are_read_as_before(self, name: str) -> None:
        import pydicom

        path = pydicom_test_file(name)
        if path is None:
            pytest.skip(f"{name} is not in this pydicom")
        before = terminology.check_dataset(pydicom.dcmread(path, stop_before_pixels=True))
        assert terminology.check_file(path) == before

    def test_helper_on_bytes_and_on_a_file(self, coded_file: Path) -> None:
        import io

        import pydicom

        data = coded_file.read_bytes()
        for source in (data, coded_file):
            ds = pydicom.dcmread(io.BytesIO(data), defer_size=1024)
            assert cut_short(ds, len(data), len(data), source) is None
        short = data[:-10]
        ds = pydicom.dcmread(io.BytesIO(short), defer_size=1024)
        assert cut_short(ds, len(short), len(short), short) == (
            f"{len(short)} bytes in the file, the values need {len(data)}")


class TestNothingFoundExitsOne:
    def test_cid_search_without_a_match(self) -> None:
        out = run("cid", "4", "--search", "zzqxqzzq")
        assert out.returncode == 1, out.stdout + out.stderr
        assert "no member of CID 4 found for 'zzqxqzzq'" in out.stdout

    def test_cid_search_json_without_a_match(self) -> None:
        out = run("cid", "CID4", "--search", "zzqxqzzq", "--json")
        assert out.returncode == 1
        assert json.loads(out.stdout)["members"] == []

    def test_search_json_without_a_match(self) -> None:
        out = run("search", "zzqxqzzq", "--json")
        assert out.returncode == 1
        assert json.loads(out.stdout)["count"] == 0

    def test_a_match_is_still_exit_0(self) -> None:
        assert run("cid", "4", "--search", "liv").returncode == 0
        assert run("cid", "244").returncode == 0
        assert run("search", "liver", "--json", "-n", "1").returncode == 0
