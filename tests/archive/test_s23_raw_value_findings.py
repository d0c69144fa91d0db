"""Validation on ingest saw values after decoding, which drops a NUL padding a text value and
forgets an odd value length: an object that ``archivist validate FILE`` finds in error was
stored under ``validation_policy=reject`` with no finding (QA s23). Such an element is now left
undecoded for the validator, which judges its bytes as it does a file's."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from test_archive_validation import complete_ct

from archivist.archive.archive import Archive
from archivist.archive.ingest import Origin, StoreStatus
from archivist.errors import ValidationRejected
from archivist.validate import validate_file

OpenArchive = Callable[..., Archive]


def _nul_padded(path: Path) -> bytes:
    complete_ct(path, study_description="ABCD", extra={"BodyPartExamined": "CHEST\0"})
    return path.read_bytes()


def _odd_length(path: Path) -> bytes:
    data = bytearray(complete_ct(path, study_description="ABCD") and path.read_bytes())
    element = b"\x08\x00\x30\x10LO\x04\x00ABCD"  # Study Description, explicit VR
    at = data.index(element)
    data[at:at + len(element)] = b"\x08\x00\x30\x10LO\x03\x00ABC"
    return bytes(data)


def _uid_space_padded(path: Path) -> bytes:
    series = "1.2.826.0.1.3680043.10.1235.77777"  # 33 characters: padded to 34
    complete_ct(path, series_uid=series)
    data = path.read_bytes()
    return data.replace(series.encode() + b"\0", series.encode() + b" ", 1)


CASES = {"nul-padded-cs": (_nul_padded, "dict.value-invalid", "/BodyPartExamined(0018,0015)"),
         "odd-length-lo": (_odd_length, "encoding.odd-length", "/StudyDescription(0008,1030)"),
         "uid-space-padded": (_uid_space_padded, "dict.uid-space-padding",
                              "/SeriesInstanceUID(0020,000E)")}
#: Errors, which validation_policy=reject refuses (a UID padded with a space is a warning).
REFUSED = ["nul-padded-cs", "odd-length-lo"]


@pytest.mark.parametrize("case", list(CASES))
def test_warn_keeps_what_the_file_validator_finds(archive: Archive, tmp_path: Path,
                                                  case: str) -> None:
    make, rule, path = CASES[case]
    data = make(tmp_path / "a.dcm")
    (tmp_path / "b.dcm").write_bytes(data)
    on_file = {(f.rule_id, f.path) for f in validate_file(tmp_path / "b.dcm").findings}
    assert (rule, path) in on_file
    result = archive.ingest.store_bytes(data, Origin("import"))
    assert result.status is StoreStatus.STORED
    kept = archive.index.validation_of(result.sop_instance_uid)
    assert kept is not None
    assert (rule, path) in {(f["rule_id"], f["path"]) for f in kept["findings"]}


@pytest.mark.parametrize("case", REFUSED)
@pytest.mark.parametrize("how", ["bytes", "file"])
def test_reject_refuses_it(open_archive: OpenArchive, tmp_path: Path, case: str,
                           how: str) -> None:
    make, rule, _ = CASES[case]
    archive = open_archive(validation_policy="reject")
    data = make(tmp_path / "a.dcm")
    (tmp_path / "b.dcm").write_bytes(data)
    with pytest.raises(ValidationRejected) as caught:
        if how == "bytes":
            archive.ingest.store_bytes(data, Origin("import"))
        else:
            archive.ingest.store_file(tmp_path / "b.dcm", Origin("import"))
    assert rule in caught.value.rule_ids
