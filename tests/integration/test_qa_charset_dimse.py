"""International character sets end to end, found wrong by black-box QA against a real
``archivist serve`` driven by DCMTK ``storescu`` / ``findscu``, pynetdicom and HTTP.

- A C-FIND in an ISO 2022 character set (``\\ISO 2022 IR 87``, ``\\ISO 2022 IR 149``) was always
  answered in UTF-8, although the README promises "answers in the query's character set when it
  can carry the values" and pydicom writes those sets (PS3.5 6.1.2.5, PS3.4 C.4.1.1.3.2).
- A C-FIND in ``ISO_IR 13`` (JIS X 0201, half-width katakana) was answered in ``ISO_IR 13`` with
  every kanji and kana as ``?`` (the check used Python's shift_jis, a superset).
- Text inside sequence items (a Code Meaning of a returned code sequence) was not considered: a
  Latin-1 query got its Japanese Code Meaning as ``????`` under ``ISO_IR 100``.
- A multi-valued Specific Character Set without code extensions (``ISO_IR 100\\ISO_IR 144``,
  not valid, PS3.3 C.12.1.1.2) was echoed back.
- ``ISO 2022 IR 58`` (GB 2312): pydicom left the ``ESC $ ) A`` escape sequence in every decoded
  value, so the index, C-FIND, QIDO-RS and WADO-RS metadata gave ``\\x1b$)A王^\\x1b$)A五`` and
  a query for the name found nothing (Orthanc, the oracle, gives ``王^五``).
"""

from __future__ import annotations

import json
import subprocess
import urllib.parse
import urllib.request
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pydicom.data
import pytest
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import Tag
from pynetdicom import AE
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind

from archivist.testing.datasets import make_instance
from archivist.testing.server import ServerProcess
from conftest import dcmtk_tool

AET = "ARCHIVIST"
FIND = StudyRootQueryRetrieveInformationModelFind
GB2312_G1 = b"\x1b$)A"  # ESC $ ) A: GB 2312 into G1 (PS3.3 Table C.12-4)
GB_NAME = b"Wang^Wu=" + GB2312_G1 + "王".encode("gb2312") + b"^" + GB2312_G1 + "五".encode("gb2312")
GB_TEXT = GB2312_G1 + "胸部检查".encode("gb2312")


def _charset_file(name: str) -> Path:
    return Path(pydicom.data.get_charset_files(name)[0])


def _raw(tag: int, vr: str, value: bytes) -> RawDataElement:
    value += b" " * (len(value) % 2)
    return RawDataElement(Tag(tag), vr, len(value), value, 0, False, True)


def _gb2312_object(path: Path) -> str:
    """An object in ``\\ISO 2022 IR 58`` written byte by byte (pydicom cannot write it)."""
    make_instance(path, patient_id="QA-GB", charset=["", "ISO 2022 IR 58"], patient_name="X")
    ds = pydicom.dcmread(path)
    ds[0x00100010] = _raw(0x00100010, "PN", GB_NAME)
    ds[0x00081030] = _raw(0x00081030, "LO", GB_TEXT)
    ds.save_as(path)
    return str(ds.StudyInstanceUID)


def _code_meaning_object(path: Path) -> None:
    """A UTF-8 object whose Requested Procedure Code Sequence has a Japanese Code Meaning."""
    item = Dataset()
    item.CodeValue = "QA1"
    item.CodingSchemeDesignator = "99QA"
    item.CodeMeaning = "胸部ＣＴ"
    make_instance(path, patient_id="QA-SQ", patient_name="Sq^Test", charset="ISO_IR 192",
                  extra={"RequestedProcedureCodeSequence": [item]})


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    base = tmp_path_factory.mktemp("qa_charset")
    server = ServerProcess(base / "data", extra_args=["--workers", "1"]).start()
    gb = base / "gb2312.dcm"
    study_gb = _gb2312_object(gb)
    sq = base / "sq.dcm"
    _code_meaning_object(sq)
    cyr = base / "cyr.dcm"
    make_instance(cyr, patient_id="QA-CY", patient_name="Иванов^Пётр", charset="ISO_IR 144")
    files = [str(_charset_file(n)) for n in ("chrH31.dcm", "chrH32.dcm", "chrI2.dcm")]
    run = subprocess.run([dcmtk_tool("storescu"), "-aec", AET, "127.0.0.1",
                          str(server.dicom_port), *files, str(gb), str(sq), str(cyr)],
                         check=False, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    yield {"server": server, "study_gb": study_gb, "base": base}
    server.stop()


def findscu(srv: dict[str, Any], tmp_path: Path, charset: str, **keys: str) -> list[Path]:
    """DCMTK findscu, each response written as a file (the bytes as received)."""
    out = tmp_path / "rsp"
    out.mkdir()
    args = [dcmtk_tool("findscu"), "-S", "-aec", AET, "-X", "-od", str(out),
            "-k", f"SpecificCharacterSet={charset}", "-k", "QueryRetrieveLevel=STUDY"]
    for keyword, value in keys.items():
        args += ["-k", f"{keyword}={value}"]
    args += ["127.0.0.1", str(srv["server"].dicom_port)]
    run = subprocess.run(args, check=False, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    return sorted(out.iterdir())


def charset_of(path: Path) -> list[str]:
    value = pydicom.dcmread(path).SpecificCharacterSet
    return [value] if isinstance(value, str) else list(value)


def raw_value(path: Path, tag: int) -> bytes:
    ds = pydicom.dcmread(path)
    elem = ds.get_item(tag)
    assert isinstance(elem, RawDataElement)
    return bytes(elem.value).rstrip(b" ")


def find(srv: dict[str, Any], charset: Any, **keys: Any) -> list[Dataset]:
    ident = Dataset()
    ident.SpecificCharacterSet = charset
    ident.QueryRetrieveLevel = "STUDY"
    for keyword, value in keys.items():
        setattr(ident, keyword, value)
    ae = AE(ae_title="QACHARSET")
    ae.add_requested_context(FIND)
    assoc = ae.associate("127.0.0.1", srv["server"].dicom_port, ae_title=AET)
    assert assoc.is_established
    found = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom on the invalid request set
            for status, ds in assoc.send_c_find(ident, FIND):
                if int(status.Status) in (0xFF00, 0xFF01):
                    found.append(ds)
                else:
                    assert int(status.Status) == 0
    finally:
        assoc.release()
    return found


def get_json(srv: dict[str, Any], path: str, **params: str) -> Any:
    url = f"http://127.0.0.1:{srv['server'].http_port}/dicomweb{path}"
    if params:
        url += "?" + urllib.parse.urlencode(params)
    with urllib.request.urlopen(url, timeout=30) as resp:
        return json.loads(resp.read().decode("utf-8"))


class TestAnsweredInTheQuerysCharacterSet:
    def test_iso_2022_ir_87_is_answered_in_it(self, srv: dict[str, Any], tmp_path: Path) -> None:
        [rsp] = findscu(srv, tmp_path, "\\ISO 2022 IR 87", PatientID="H31EXAMPLE",
                        PatientName="")
        assert charset_of(rsp) == ["", "ISO 2022 IR 87"]
        # the bytes of the standard's example (PS3.5 H.3.1), as chrH31.dcm has them
        assert raw_value(rsp, 0x00100010) == raw_value(_charset_file("chrH31.dcm"), 0x00100010)

    def test_iso_2022_ir_149_is_answered_in_it(self, srv: dict[str, Any],
                                                tmp_path: Path) -> None:
        [rsp] = findscu(srv, tmp_path, "\\ISO 2022 IR 149", PatientID="I2EXAMPLE",
                        PatientName="")
        assert charset_of(rsp) == ["", "ISO 2022 IR 149"]
        assert raw_value(rsp, 0x00100010) == raw_value(_charset_file("chrI2.dcm"), 0x00100010)

    def test_a_name_the_set_cannot_carry_comes_in_utf8(self, srv: dict[str, Any]) -> None:
        # half-width katakana are not in ISO 2022 IR 87 (they are ISO 2022 IR 13)
        [ds] = find(srv, ["", "ISO 2022 IR 87"], PatientID="H32EXAMPLE", PatientName="")
        assert ds.SpecificCharacterSet == "ISO_IR 192"
        assert ds.PatientName == "ﾔﾏﾀﾞ^ﾀﾛｳ=山田^太郎=やまだ^たろう"

    def test_iso_ir_13_never_gives_question_marks(self, srv: dict[str, Any]) -> None:
        [ds] = find(srv, "ISO_IR 13", PatientID="H31EXAMPLE", PatientName="")
        assert ds.SpecificCharacterSet == "ISO_IR 192"
        assert ds.PatientName == "Yamada^Tarou=山田^太郎=やまだ^たろう"

    def test_iso_ir_13_when_it_can(self, srv: dict[str, Any]) -> None:
        [ds] = find(srv, ["ISO 2022 IR 13", "ISO 2022 IR 87"], PatientID="H32EXAMPLE",
                    PatientName="")
        assert list(ds.SpecificCharacterSet) == ["ISO 2022 IR 13", "ISO 2022 IR 87"]
        assert ds.PatientName == "ﾔﾏﾀﾞ^ﾀﾛｳ=山田^太郎=やまだ^たろう"

    def test_text_in_sequence_items_counts(self, srv: dict[str, Any]) -> None:
        [ds] = find(srv, "ISO_IR 100", PatientID="QA-SQ",
                    RequestedProcedureCodeSequence=[Dataset()])
        assert ds.SpecificCharacterSet == "ISO_IR 192"
        assert [i.CodeMeaning for i in ds.RequestedProcedureCodeSequence] == ["胸部ＣＴ"]

    def test_invalid_multi_valued_set_is_not_echoed(self, srv: dict[str, Any]) -> None:
        [ds] = find(srv, ["ISO_IR 100", "ISO_IR 144"], PatientID="QA-CY", PatientName="")
        assert ds.SpecificCharacterSet == "ISO_IR 192"
        assert ds.PatientName == "Иванов^Пётр"

    def test_single_byte_set_still_answered_in_it(self, srv: dict[str, Any]) -> None:
        [ds] = find(srv, "ISO_IR 144", PatientName="иванов*")
        assert ds.SpecificCharacterSet == "ISO_IR 144"
        assert ds.PatientName == "Иванов^Пётр"


class TestGB2312:
    """ISO 2022 IR 58: decoded without its escape sequence everywhere, and written with it."""

    def test_qido_rs(self, srv: dict[str, Any]) -> None:
        [study] = get_json(srv, "/studies", PatientID="QA-GB", includefield="StudyDescription")
        assert study["00100010"]["Value"] == [{"Alphabetic": "Wang^Wu", "Ideographic": "王^五"}]
        assert study["00081030"]["Value"] == ["胸部检查"]

    def test_qido_rs_matches_the_name(self, srv: dict[str, Any]) -> None:
        found = get_json(srv, "/studies", PatientName="Wang^Wu=王^五")
        assert [s["00100020"]["Value"] for s in found] == [["QA-GB"]]

    def test_wado_rs_metadata(self, srv: dict[str, Any]) -> None:
        [meta] = get_json(srv, f"/studies/{srv['study_gb']}/metadata")
        assert meta["00100010"]["Value"] == [{"Alphabetic": "Wang^Wu", "Ideographic": "王^五"}]
        assert meta["00081030"]["Value"] == ["胸部检查"]

    def test_qido_rs_matches_the_ideographic_group_alone(self, srv: dict[str, Any]) -> None:
        """No alphabetic group in the query: the groups given are matched (s21; chrH31 has
        Yamada^Tarou=山田^太郎=やまだ^たろう, chrH32 the same name with the alphabetic group in
        half-width katakana)."""
        for query in ("=山田*", "=山田^太郎", "==やまだ^たろう"):
            found = get_json(srv, "/studies", PatientName=query)
            assert sorted(s["00100020"]["Value"][0] for s in found) == [
                "H31EXAMPLE", "H32EXAMPLE"], query
        assert get_json(srv, "/studies", PatientName="=山田") == []

    def test_c_find_of_the_ideographic_group_alone(self, srv: dict[str, Any]) -> None:
        found = find(srv, "ISO_IR 192", PatientName="=山田^太郎", PatientID="")
        assert sorted(str(ds.PatientID) for ds in found) == ["H31EXAMPLE", "H32EXAMPLE"]
        found = find(srv, "ISO_IR 192", PatientName="=王^五", PatientID="")
        assert [str(ds.PatientID) for ds in found] == ["QA-GB"]

    def test_c_find_in_utf8(self, srv: dict[str, Any]) -> None:
        [ds] = find(srv, "ISO_IR 192", PatientID="QA-GB", PatientName="", StudyDescription="")
        assert ds.PatientName == "Wang^Wu=王^五"
        assert ds.StudyDescription == "胸部检查"

    def test_c_find_in_gb2312_has_the_escape_sequences(self, srv: dict[str, Any],
                                                        tmp_path: Path) -> None:
        [rsp] = findscu(srv, tmp_path, "\\ISO 2022 IR 58", PatientID="QA-GB", PatientName="",
                        StudyDescription="")
        assert charset_of(rsp) == ["", "ISO 2022 IR 58"]
        assert raw_value(rsp, 0x00100010) == GB_NAME
        assert raw_value(rsp, 0x00081030) == GB_TEXT
