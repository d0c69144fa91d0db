"""Duplicate policy ``replace`` in a group commit (QA round 4, scale helper): a replacement that
changes its series' Modality and its SOP Class, written in the same transaction as a new
instance of the same study, leaves Modalities / SOP Classes in Study and the study's values
equal to what the stored rows say (the group's own bookkeeping must not write back stale
aggregates)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.uid import CTImageStorage, MRImageStorage, UltrasoundImageStorage
from sqlalchemy import select

from archivist.index.extract import extract
from archivist.index.repository import AddRequest, BlobInfo, Index
from archivist.index.schema import patient, series, study
from archivist.testing.datasets import make_instance, new_uid


@pytest.fixture
def index(tmp_path: Path) -> Iterator[Index]:
    idx = Index(f"sqlite:///{tmp_path / 'index.sqlite'}")
    idx.migrate()
    yield idx
    idx.close()


def _request(tmp: Path, n: int, *, study: str, series_uid: str, sop: str, modality: str,
             cls: str, description: str, name: str, policy: str) -> AddRequest:
    ds = make_instance(tmp / f"{n}.dcm", study_uid=study, series_uid=series_uid, sop_uid=sop,
                       modality=modality, sop_class_uid=cls, study_description=description,
                       patient_name=name, patient_id="QAGRP")
    return AddRequest(extract(ds), BlobInfo(f"key{n}", 100, "0" * 64, "1.2.840.10008.1.2.1"),
                      sop_instance_uid=sop, sop_class_uid=cls, study_instance_uid=study,
                      series_instance_uid=series_uid, source_aet=None, source_address=None,
                      policy=policy)


def _study(index: Index, uid: str) -> tuple[str, str, str, int]:
    with index.reader.connect() as conn:
        row = conn.execute(select(study).where(study.c.study_instance_uid == uid)).one()
    return (row.modalities_in_study, row.sop_classes_in_study, row.study_description,
            row.number_of_study_related_instances)


def test_replacement_and_new_instance_in_one_group(index: Index, tmp_path: Path) -> None:
    st, se1, se2 = new_uid(), new_uid(), new_uid()
    sop = new_uid()
    first = _request(tmp_path, 1, study=st, series_uid=se1, sop=sop, modality="CT",
                     cls=CTImageStorage, description="FIRST", name="OLD^NAME", policy="keep")
    assert index.add_instances([first])[0].status == "added"
    assert _study(index, st) == ("\\CT\\", f"\\{CTImageStorage}\\", "FIRST", 1)
    # One group: a new instance of the study (new series, US), then the new version of the
    # first instance (MR now, another description and patient name).
    new = _request(tmp_path, 2, study=st, series_uid=se2, sop=new_uid(), modality="US",
                   cls=UltrasoundImageStorage, description="FIRST", name="OLD^NAME",
                   policy="replace")
    again = _request(tmp_path, 3, study=st, series_uid=se1, sop=sop, modality="MR",
                     cls=MRImageStorage, description="SECOND", name="NEW^NAME",
                     policy="replace")
    outcomes = index.add_instances([new, again])
    assert [o.status for o in outcomes] == ["added", "replaced"]
    mods, classes, description, n = _study(index, st)
    assert sorted(m for m in mods.split("\\") if m) == ["MR", "US"]
    assert sorted(c for c in classes.split("\\") if c) == sorted(
        [MRImageStorage, UltrasoundImageStorage])
    assert (description, n) == ("SECOND", 2)
    with index.reader.connect() as conn:
        assert conn.execute(select(series.c.modality)
                            .where(series.c.series_instance_uid == se1)).scalar() == "MR"
        names = conn.execute(select(patient.c.patient_name, patient.c.patient_name_norm)
                             .where(patient.c.patient_id == "QAGRP")).one()
    assert names[0] == "NEW^NAME"
    assert names[1] is not None and "NEW" in names[1].upper()


def test_replacement_with_another_patient_id_keeps_the_patient(index: Index,
                                                               tmp_path: Path) -> None:
    """A new version naming another Patient ID stays filed under its study's patient, whose
    values are not overwritten by another patient's."""
    st, se, sop = new_uid(), new_uid(), new_uid()
    first = _request(tmp_path, 1, study=st, series_uid=se, sop=sop, modality="CT",
                     cls=CTImageStorage, description="FIRST", name="KEEP^ME", policy="keep")
    index.add_instances([first])
    other = _request(tmp_path, 2, study=st, series_uid=se, sop=sop, modality="CT",
                     cls=CTImageStorage, description="SECOND", name="OTHER^PERSON",
                     policy="replace")
    other.rows.patient["patient_id"] = "SOMEONE-ELSE"
    assert index.add_instances([other])[0].status == "replaced"
    with index.reader.connect() as conn:
        rows = conn.execute(select(patient.c.patient_id, patient.c.patient_name)).all()
    assert [tuple(r) for r in rows] == [("QAGRP", "KEEP^ME")]
    assert _study(index, st)[2] == "SECOND"
