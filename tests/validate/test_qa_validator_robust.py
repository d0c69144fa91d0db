"""Objects with a corrupt element crashed the validator (black-box QA, round 3).

A few flipped bytes in a file (found by mutating objects and running ``archivist validate``):

- an explicit VR that is no PS3.5 VR (``'P\\xe9'`` where ``PN`` belongs): pydicom raises
  NotImplementedError when the value is decoded, and the validator let it through:
  ``archivist validate`` ended with a traceback (a folder: no report for any file), and ingest
  logged "validator failed" and stored the object unvalidated, even under
  ``validation_policy=reject``;
- a File Meta Transfer Syntax UID that is no transfer syntax: ``check_pixel_data`` asked
  pydicom whether it is compressed, which raises ValueError.

Now the corrupt element is a ``dict.vr-mismatch`` error, a value that cannot be decoded elsewhere
is an ``encoding.unreadable`` error, and an unknown transfer syntax stays the
``part10.transfer-syntax-unknown`` warning.
"""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file

from archivist.archive.validation import PixelDataInfo, validate_on_ingest
from archivist.validate import Severity, validate_file, validate_paths

_CT = get_testdata_file("CT_small.dcm")  # explicit VR little endian


def _patched(tmp_path: Path, name: str, old: bytes, new: bytes) -> Path:
    data = Path(_CT).read_bytes()
    assert data.count(old) == 1, old
    path = tmp_path / name
    path.write_bytes(data.replace(old, new))
    return path


def _bad_vr(tmp_path: Path, tag: tuple[int, int], vr: bytes, bad: bytes) -> Path:
    group, element = tag
    head = group.to_bytes(2, "little") + element.to_bytes(2, "little")
    return _patched(tmp_path, f"vr-{group:04x}{element:04x}.dcm", head + vr, head + bad)


def _ingest(path: Path) -> list[tuple[str, str, str]]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        header = pydicom.dcmread(path, stop_before_pixels=True, defer_size=4096, force=True)
    found = validate_on_ingest(header, PixelDataInfo(0x7FE00010, 128 * 128 * 2))
    return [(f.rule_id, f.path, f.message) for f in found if f.severity is Severity.ERROR]


CASES = [
    ((0x0020, 0x0010), b"SH", b"S\x06", "/StudyID(0020,0010)"),
    ((0x0008, 0x0016), b"UI", b"Uf", "/SOPClassUID(0008,0016)"),
    ((0x0008, 0x0090), b"PN", b"P\xe9", "/ReferringPhysicianName(0008,0090)"),
]


class TestInvalidVR:
    @pytest.mark.parametrize(("tag", "vr", "bad", "path"), CASES)
    def test_validate_file_reports_it(self, tmp_path: Path, tag: tuple[int, int], vr: bytes,
                                      bad: bytes, path: str) -> None:
        report = validate_file(_bad_vr(tmp_path, tag, vr, bad))
        errors = [(f.rule_id, f.path) for f in report.errors]
        assert ("dict.vr-mismatch", path) in errors
        message = next(f.message for f in report.errors if f.rule_id == "dict.vr-mismatch")
        assert "not a value representation" in message and vr.decode() in message

    @pytest.mark.parametrize(("tag", "vr", "bad", "path"), CASES)
    def test_ingest_reports_it(self, tmp_path: Path, tag: tuple[int, int], vr: bytes,
                               bad: bytes, path: str) -> None:
        errors = _ingest(_bad_vr(tmp_path, tag, vr, bad))
        assert ("dict.vr-mismatch", path) in [(rule, p) for rule, p, _m in errors]

    def test_a_folder_is_reported_whole(self, tmp_path: Path) -> None:
        for tag, vr, bad, _path in CASES:
            _bad_vr(tmp_path, tag, vr, bad)
        (tmp_path / "good.dcm").write_bytes(Path(_CT).read_bytes())
        result = validate_paths([tmp_path])
        assert len(result.reports) == 4
        assert sum(1 for r in result.reports if r.ok) == 1

    def test_the_command_line_gives_no_traceback(self, tmp_path: Path) -> None:
        path = _bad_vr(tmp_path, *CASES[0][:3])
        proc = subprocess.run(
            [str(Path(sys.executable).parent / "archivist"), "validate", str(path)],
            capture_output=True, text=True, timeout=120, check=False,
        )
        assert proc.returncode == 1, proc.stderr
        assert "Traceback" not in proc.stderr
        assert "dict.vr-mismatch" in proc.stdout


class TestTransferSyntaxNotATransferSyntax:
    def test_it_is_a_warning_not_a_crash(self, tmp_path: Path) -> None:
        uid = b"1.2.840.10008.1.2.1\x00"
        path = _patched(tmp_path, "ts.dcm", uid, b"1.2.840.10008.9.9.1\x00")
        report = validate_file(path)
        assert "part10.transfer-syntax-unknown" in [f.rule_id for f in report.warnings]
        assert "encoding.unreadable" not in [f.rule_id for f in report.findings]
