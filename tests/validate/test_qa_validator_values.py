"""Value checks found missing by black-box QA (round 3), each checked both ways.

- DA (PS3.5 Table 6.2-1): a date that does not exist (``20040230``, ``20230229``) passed; only a
  month over 12 or a day over 31 was caught.
- DT: the components after the date (hour, minute, second) and the UTC offset ``&ZZXX``
  (-1200 to +1400) were only matched by shape: ``20041399`` or an offset of ``+2500`` passed.
- AE: characters outside the default repertoire passed (an AE is the default repertoire less
  backslash and control characters).
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset

from archivist.validate import Severity, validate_dataset

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    _BASE = pydicom.dcmread(get_testdata_file("CT_small.dcm"))


def _errors_at(tag: int, vr: str, value: str | bytes) -> list[str]:
    ds: Dataset = copy.deepcopy(_BASE)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.add_new(tag, vr, value)
    step = f"({tag >> 16:04X},{tag & 0xFFFF:04X})"
    return [f.message for f in validate_dataset(ds)
            if f.severity is Severity.ERROR and f.rule_id == "dict.value-invalid"
            and f.path.endswith(step)]


STUDY_DATE, ACQUISITION_DATETIME, RETRIEVE_AE = 0x00080020, 0x0008002A, 0x00080054


class TestDate:
    @pytest.mark.parametrize("value", ["20040230", "20230229", "20040431", "19000229"])
    def test_a_day_the_month_does_not_have(self, value: str) -> None:
        assert _errors_at(STUDY_DATE, "DA", value) == [
            f"Value 1 of Study Date (DA) = {value!r}: not a valid calendar date."
        ]

    @pytest.mark.parametrize("value", ["20040229", "20000229", "20041231", "19700101"])
    def test_real_dates_are_clean(self, value: str) -> None:
        assert _errors_at(STUDY_DATE, "DA", value) == []


class TestDateTime:
    @pytest.mark.parametrize("value", [
        "20041399", "20040230", "2004011925", "200401191061", "20040119101161",
        "20040119101112+2500", "20040119101112-1300", "20040119101112+0160",
    ])
    def test_a_component_out_of_range(self, value: str) -> None:
        errors = _errors_at(ACQUISITION_DATETIME, "DT", value)
        assert len(errors) == 1 and repr(value) in errors[0], errors

    @pytest.mark.parametrize("value", [
        "2004", "200401", "20040119", "2004011910", "20040119101112.123456",
        "20040119101112+0100", "20040119101112-1200", "20040119101112+1400",
        "20040119235960", "2004+0530",
    ])
    def test_valid_datetimes_are_clean(self, value: str) -> None:
        assert _errors_at(ACQUISITION_DATETIME, "DT", value) == []


class TestApplicationEntity:
    def test_a_character_outside_the_default_repertoire(self) -> None:
        errors = _errors_at(RETRIEVE_AE, "AE", "STORE\u00e9")
        assert len(errors) == 1 and "default repertoire" in errors[0], errors

    def test_an_ascii_title_is_clean(self) -> None:
        assert _errors_at(RETRIEVE_AE, "AE", "STORE SCP_1") == []


class TestBinaryEnumerations:
    """Pixel Representation and Planar Configuration are listed with enumerated values 0 and 1
    (enumerations.py), but the list was only ever applied to text VRs: a US value of 2 passed
    (dciodvfy: "Unrecognized enumerated value")."""

    @pytest.mark.parametrize(("keyword", "tag"), [("PixelRepresentation", 0x00280103),
                                                  ("PlanarConfiguration", 0x00280006)])
    def test_a_value_outside_the_list(self, tmp_path: Path, keyword: str, tag: int) -> None:
        ds = copy.deepcopy(_BASE)
        ds.add_new(tag, "US", 2)
        path = tmp_path / "enum.dcm"
        ds.save_as(path)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            read = pydicom.dcmread(path, stop_before_pixels=True, defer_size=4096)
        for where, findings in (("memory", validate_dataset(ds)), ("file", validate_dataset(read)),
                                ("file, decoded", validate_dataset(_decoded(read)))):
            enum = [f for f in findings if f.rule_id == "iod.enumerated-value"]
            expected = f"/{keyword}({tag >> 16:04X},{tag & 0xFFFF:04X})"
            assert [f.path for f in enum] == [expected], where
            assert "'2'" in enum[0].message and "0, 1" in enum[0].message

    @pytest.mark.parametrize("value", [0, 1])
    def test_the_listed_values_are_clean(self, value: int) -> None:
        ds = copy.deepcopy(_BASE)
        ds.PixelRepresentation = value
        assert "iod.enumerated-value" not in [f.rule_id for f in validate_dataset(ds)]


def _decoded(ds: Dataset) -> Dataset:
    for elem in ds:  # iterating decodes every element, as ingest hands the header over
        pass
    return ds
