"""Value lengths under a multi-byte Specific Character Set (QA s20, dcmodify-broken files
compared with dciodvfy).

PS3.5 Table 6.2-1 limits SH, LO, PN (per component group)... in characters. Under
``ISO_IR 192``, ``GB18030``, ``GBK`` or an ISO 2022 multi-byte set (``ISO 2022 IR 87``...) the
length of these VRs was not checked at all, because the raw bytes outnumber the characters: a
Patient ID of 65 ASCII characters or an Accession Number of 17 (``dcmodify -i``) passed, which
dciodvfy reports ("Value invalid for this VR"), and such an object was stored under
``validation_policy=reject``. The value is now counted in characters, decoded with the
object's character set; a value at the limit in characters (more bytes) is still valid.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_charset_files
from validation_cases import ct, write

from archivist.validate import Severity, validate_file

# (Specific Character Set, a value of 64 characters that takes more than 64 bytes in it)
_CHARSETS = [
    ("ISO_IR 192", "\u00e9" * 64),
    ("GB18030", "\u4e2d" * 64),
    ("ISO 2022 IR 87", "\u5c71" * 64),
]


def _errors(path: Path) -> list[tuple[str, str]]:
    report = validate_file(str(path))
    return [(f.rule_id, f.path) for f in report.findings if f.severity is Severity.ERROR]


def _object(tmp_path: Path, charset: str, name: str, **values: str) -> Path:
    ds = ct()
    ds.SpecificCharacterSet = charset
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns of the values too long on purpose
        for keyword, value in values.items():
            setattr(ds, keyword, value)
        return write(ds, tmp_path / name)


@pytest.mark.parametrize(("charset", "long_value"), _CHARSETS, ids=[c for c, _ in _CHARSETS])
def test_over_the_limit_in_characters_is_an_error(tmp_path: Path, charset: str,
                                                  long_value: str) -> None:
    path = _object(tmp_path, charset, "over.dcm", PatientID="P" * 65,
                   AccessionNumber="A" * 17, PatientName="N" * 65)
    errors = _errors(path)
    assert ("dict.value-invalid", "/PatientID(0010,0020)") in errors
    assert ("dict.value-invalid", "/AccessionNumber(0008,0050)") in errors
    assert ("dict.value-invalid", "/PatientName(0010,0010)") in errors


@pytest.mark.parametrize(("charset", "long_value"), _CHARSETS, ids=[c for c, _ in _CHARSETS])
def test_at_the_limit_in_characters_is_valid(tmp_path: Path, charset: str,
                                             long_value: str) -> None:
    path = _object(tmp_path, charset, "at.dcm", PatientID=long_value,
                   StudyDescription=long_value, PatientName=long_value)
    data = pydicom.dcmread(path)
    assert len(data.PatientID) == 64 < len(data.PatientID.encode(data._character_set[-1]))
    assert _errors(path) == []


def test_a_japanese_file_broken_like_dcmodify_does(tmp_path: Path) -> None:
    # pydicom's chrH31.dcm (ISO 2022 IR 87) with a Study ID of 17 characters.
    ds = pydicom.dcmread(get_charset_files("chrH31.dcm")[0])
    assert ds.SpecificCharacterSet[-1] == "ISO 2022 IR 87"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.StudyID = "12345678901234567"
    path = tmp_path / "chrH31_studyid17.dcm"
    ds.save_as(path)
    # its Japanese names (more bytes than characters) are no error
    assert [e for e in _errors(path) if e[1] != "/StudyID(0020,0010)"] == []
    assert ("dict.value-invalid", "/StudyID(0020,0010)") in _errors(path)


def test_reject_policy_refuses_it_on_import(tmp_path: Path) -> None:
    over = _object(tmp_path, "ISO_IR 192", "over.dcm", PatientID="P" * 65)
    at = _object(tmp_path, "ISO_IR 192", "at.dcm", PatientID="\u00e9" * 64,
                 SOPInstanceUID=pydicom.uid.generate_uid())
    env = dict(os.environ, ARCHIVIST_VALIDATION_POLICY="reject")
    cli = Path(sys.executable).with_name("archivist")
    proc = subprocess.run(
        [str(cli), "import", "--data", str(tmp_path / "data"), str(over), str(at)],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "1 stored" in proc.stdout and "1 rejected" in proc.stdout, proc.stdout
    assert "over.dcm: dict.value-invalid" in proc.stdout, proc.stdout
