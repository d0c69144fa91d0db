"""C-FIND response identifiers: the direct encoder gives pydicom's bytes, for the identifiers the
one search builds and for the values it leaves to pydicom."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom.dsutils import encode

from archivist.archive.archive import Archive
from archivist.archive.ingest import Origin
from archivist.config import load_settings
from archivist.core.levels import KEYS, QueryLevel
from archivist.dimse.acceptor_services import encode_identifier
from archivist.dimse.charset import choose_charset
from archivist.testing.datasets import make_instance, new_uid

SYNTAXES = [ImplicitVRLittleEndian, ExplicitVRLittleEndian, ExplicitVRBigEndian]


def _pydicom(ds: Dataset, ts: UID) -> bytes:
    return bytes(encode(ds, ts.is_implicit_VR, ts.is_little_endian))  # type: ignore[arg-type]


@pytest.fixture
def archive(tmp_path: Path) -> Iterator[Archive]:
    settings = load_settings(env={}, overrides={"data_dir": tmp_path / "data"})
    archive = Archive.open(settings)
    specs: list[dict[str, Any]] = [
        {"patient_name": "DOE^JOHN", "patient_id": "P1", "study_description": "odd"},
        {"patient_name": "Yamada^Tarou=山田^太郎", "patient_id": "P2", "charset": "ISO_IR 192",
         "accession_number": "", "extra": {"PatientBirthDate": "19700101"}},
        {"patient_name": "Müller^Jürgen", "patient_id": "", "charset": "ISO_IR 192",
         "study_description": "Knie rechts", "modality": "MR"},
    ]
    for n, spec in enumerate(specs):
        make_instance(tmp_path / f"{n}.dcm", study_uid=new_uid(), series_uid=new_uid(), **spec)
        archive.ingest.store_file(tmp_path / f"{n}.dcm", Origin("import"))
    yield archive
    archive.close()


@pytest.mark.parametrize("ts", SYNTAXES)
@pytest.mark.parametrize("level", list(QueryLevel))
def test_search_identifiers_encode_as_pydicom_does(archive: Archive, level: QueryLevel,
                                                   ts: UID) -> None:
    request = Dataset()
    request.QueryRetrieveLevel = level.value
    for keyword, key in KEYS.items():
        if key.level.rank <= level.rank:
            setattr(request, keyword, None)
    request.PatientBirthDate = ""
    query = archive.search.query_from_identifier(level, request)
    found = list(archive.search.find(query))
    assert len(found) == 3
    for ds in found:
        charset = choose_charset(ds, "")  # as the C-FIND handler answers
        if charset:
            ds.SpecificCharacterSet = charset
        assert encode_identifier(ds, ts) == _pydicom(ds, ts)


def _odd_cases() -> list[Dataset]:
    cases = []
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.StudyInstanceUID = "1.2.3.456"  # odd length: NUL padding
    ds.PatientName = "A^B"  # odd length: space padding
    ds.ModalitiesInStudy = ["CT", "MR", "PT"]
    ds.NumberOfStudyRelatedInstances = 7
    ds.StudyDescription = None
    cases.append(ds)
    with_charset = Dataset()
    with_charset.SpecificCharacterSet = "ISO_IR 192"
    with_charset.PatientName = "Müller^Jürgen"  # not ASCII: pydicom's path
    cases.append(with_charset)
    sequence = Dataset()
    sequence.PatientID = "X"
    sequence.ProcedureCodeSequence = [Dataset()]  # SQ: pydicom's path
    cases.append(sequence)
    binary = Dataset()
    binary.Rows = 512  # US: pydicom's path
    binary.PixelSpacing = [0.5, 0.5]  # DS: pydicom's path
    cases.append(binary)
    groups = Dataset()
    groups.PatientName = "Yamada^Tarou==yamada"
    cases.append(groups)
    return cases


@pytest.mark.parametrize("ts", SYNTAXES)
@pytest.mark.parametrize("ds", _odd_cases())
def test_every_kind_of_value_encodes_as_pydicom_does(ds: Dataset, ts: UID) -> None:
    assert encode_identifier(ds, ts) == _pydicom(ds, ts)
