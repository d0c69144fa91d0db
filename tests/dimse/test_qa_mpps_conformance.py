"""QA of the MPPS SCP (PS3.4 Annex F) as modalities and a RIS drive it, against one running
``archivist serve``: N-GET answers, malformed (cut short) Attribute / Modification Lists, the
worklist status of a grouped procedure (one MPPS naming scheduled steps of two studies), the
HTTP listing's parameters, and behaviours worth keeping (every transfer syntax and character
set round-trips, concurrent duplicates, the attributes N-SET may not change).

Tests named ``test_bug_*`` failed on the code they were written against (each names the rule;
their docstrings describe that code) and pass since the fixes that came with them.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pynetdicom.association
import pytest
import requests
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)
from pynetdicom import AE
from pynetdicom.dsutils import encode
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    ModalityPerformedProcedureStep,
    ModalityPerformedProcedureStepRetrieve,
    ModalityWorklistInformationFind,
)

from archivist.testing.datasets import new_uid
from archivist.testing.mpps import completion, in_progress, scheduled_item
from archivist.testing.server import ServerProcess

MPPS = ModalityPerformedProcedureStep
RETRIEVE = ModalityPerformedProcedureStepRetrieve
SYNTAXES = [ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian,
            DeflatedExplicitVRLittleEndian]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp("qa-mpps")
    folder = tmp / "worklist"
    folder.mkdir()
    srv = ServerProcess(tmp / "data", env={"ARCHIVIST_WORKLIST_DIR": str(folder)})
    srv.worklist = folder  # type: ignore[attr-defined]
    srv.start()
    yield srv
    srv.stop()


def _assoc(srv: ServerProcess, syntax: str = ExplicitVRLittleEndian,
           worklist: bool = False) -> Any:
    ae = AE(ae_title="CT_SCANNER")
    ae.dimse_timeout = ae.acse_timeout = ae.network_timeout = 30
    ae.add_requested_context(MPPS, [syntax])
    ae.add_requested_context(RETRIEVE, [syntax])
    if worklist:
        ae.add_requested_context(ModalityWorklistInformationFind, [ExplicitVRLittleEndian])
    assoc = ae.associate("127.0.0.1", srv.dicom_port, ae_title="ARCHIVIST")
    assert assoc.is_established
    return assoc


def _in_progress(study: str, sps_id: str = "SPS1") -> Dataset:
    return in_progress(study, sps_id, PatientName="Roe^Qa", PatientID="QA-PID-1")


def _completion(count: int, status: str = "COMPLETED") -> Dataset:
    return completion([new_uid() for _ in range(count)], status)


def _api(srv: ServerProcess, path: str) -> requests.Response:
    return requests.get(f"{srv.url}{path}", timeout=30)


def _send_cut_short(monkeypatch: pytest.MonkeyPatch, ds: Dataset, cut: int) -> None:
    """Make pynetdicom send `ds` (Explicit VR Little Endian) without its last `cut` bytes."""
    data = encode(ds, False, True)
    assert data is not None
    monkeypatch.setattr(pynetdicom.association, "encode",
                        lambda *_a, **_k: data[:-cut])


# -- N-GET ------------------------------------------------------------------------------------


def test_bug_n_get_of_one_attribute(server: ServerProcess) -> None:
    """PS3.7 10.1.2.1.3: the Attribute Identifier List is AT, VM 1-n. A RIS asking for one
    attribute (the step's status) gets 0x0110 today: the list decodes as a single tag and the
    handler fails on iterating it ("'BaseTag' object is not iterable" in the log)."""
    uid = new_uid()
    assoc = _assoc(server)
    try:
        assert assoc.send_n_create(_in_progress(new_uid()), MPPS, uid)[0].Status == 0x0000
        status, got = assoc.send_n_get([0x00400252], RETRIEVE, uid)
        assert status.Status == 0x0000, status
        assert got.PerformedProcedureStepStatus == "IN PROGRESS"
        status, got = assoc.send_n_get([0x00400340], RETRIEVE, uid)  # a sequence alone
        assert status.Status == 0x0000, status
    finally:
        assoc.release()


def test_bug_n_get_answer_names_its_character_set(server: ServerProcess) -> None:
    """An N-GET that does not ask for (0008,0005) gets a Patient's Name stored in UTF-8 written
    in the default repertoire: the ideographic group becomes "??" (and the Latin part goes out
    as Latin-1 bytes no character set names). A data set with values outside the default
    repertoire needs its Specific Character Set (PS3.3 C.12.1.1.2, Type 1C; PS3.5 6.1.2.3)."""
    uid = new_uid()
    ds = _in_progress(new_uid())
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientName = "Müller^Jörg=山田^太郎"
    assoc = _assoc(server)
    try:
        assert assoc.send_n_create(ds, MPPS, uid)[0].Status == 0x0000
        status, got = assoc.send_n_get([0x00100010, 0x00400253], RETRIEVE, uid)
        assert status.Status == 0x0000, status
        assert str(got.PatientName) == "Müller^Jörg=山田^太郎"
        assert "SpecificCharacterSet" in got
    finally:
        assoc.release()


# -- data sets cut short ------------------------------------------------------------------------


def test_bug_a_cut_short_n_set_is_not_stored(server: ServerProcess,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A Modification List cut short (its last 150 bytes missing: the series item's Protocol
    Name and Series Instance UID) is answered 0x0000 today and stored: the step is COMPLETED,
    final (no N-SET may correct it, F.7.2.2.2), with a Performed Series item without its Series
    Instance UID (Type 1 in F.7.2-1). A data set that does not decode must be refused (the
    handler means to: "The Modification List is missing or does not decode")."""
    uid = new_uid()
    assoc = _assoc(server)
    try:
        assert assoc.send_n_create(_in_progress(new_uid()), MPPS, uid)[0].Status == 0x0000
        with monkeypatch.context() as patch:
            _send_cut_short(patch, _completion(10), 150)
            status, _ = assoc.send_n_set(Dataset(), MPPS, uid)
        assert status.Status != 0x0000, "a truncated Modification List was accepted"
        status, got = assoc.send_n_get([0x00400252, 0x00400340], RETRIEVE, uid)
        assert got.PerformedProcedureStepStatus == "IN PROGRESS"
    finally:
        assoc.release()


def test_bug_a_cut_short_n_create_is_not_stored(server: ServerProcess,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The same for N-CREATE: an Attribute List without its last 30 bytes (inside the
    Scheduled Step Attributes item) is answered 0x0000 and stored without its Performed Series
    Sequence and with a partial scheduled step."""
    uid = new_uid()
    assoc = _assoc(server)
    try:
        with monkeypatch.context() as patch:
            _send_cut_short(patch, _in_progress(new_uid()), 30)
            status, _ = assoc.send_n_create(Dataset(), MPPS, uid)
        assert status.Status != 0x0000, "a truncated Attribute List was accepted"
    finally:
        assoc.release()
    assert _api(server, f"/api/mpps/{uid}").status_code == 404


# -- worklist -----------------------------------------------------------------------------------


def _worklist_entry(path: Path, study: str, sps_id: str) -> None:
    ds = Dataset()
    ds.PatientName = "Roe^Qa"
    ds.PatientID = "QA-PID-1"
    ds.AccessionNumber = "ACC" + sps_id
    ds.StudyInstanceUID = study
    ds.RequestedProcedureID = "RP" + sps_id
    step = Dataset()
    step.Modality = "CT"
    step.ScheduledStationAETitle = "CT_SCANNER"
    step.ScheduledProcedureStepStartDate = "20261207"
    step.ScheduledProcedureStepID = sps_id
    step.ScheduledProcedureStepStatus = "SCHEDULED"
    ds.ScheduledProcedureStepSequence = [step]
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.31"
    ds.file_meta.MediaStorageSOPInstanceUID = new_uid()
    ds.save_as(path, enforce_file_format=True)


def _worklist_states(assoc: Any, accessions: set[str]) -> dict[str, str]:
    query = Dataset()
    query.AccessionNumber = ""
    step = Dataset()
    step.ScheduledProcedureStepID = ""
    step.ScheduledProcedureStepStatus = ""
    query.ScheduledProcedureStepSequence = [step]
    out = {}
    for status, answer in assoc.send_c_find(query, ModalityWorklistInformationFind):
        if status and status.Status in (0xFF00, 0xFF01) and answer is not None \
                and str(answer.AccessionNumber) in accessions:
            out[str(answer.AccessionNumber)] = str(
                answer.ScheduledProcedureStepSequence[0].ScheduledProcedureStepStatus)
    return out


def test_bug_grouped_procedure_starts_every_scheduled_step(server: ServerProcess) -> None:
    """IHE SWF Group Case: one MPPS names two scheduled steps of two requested procedures
    (two studies) in its Scheduled Step Attributes Sequence. Only the first item's study is
    indexed, so the second scheduled step stays SCHEDULED while it is being performed; the
    conformance statement promises STARTED for every entry whose Study Instance UID and
    Scheduled Procedure Step ID a step names (PS3.4 F.7.2.1: the MWL SCP may update the
    worklist from the MPPS)."""
    folder: Path = server.worklist  # type: ignore[attr-defined]
    first, second = new_uid(), new_uid()
    _worklist_entry(folder / "group-a.wl", first, "GA1")
    _worklist_entry(folder / "group-b.wl", second, "GB1")
    ds = _in_progress(first, "GA1")
    ds.ScheduledStepAttributesSequence.append(scheduled_item(second, "GB1"))
    assoc = _assoc(server, worklist=True)
    try:
        assert assoc.send_n_create(ds, MPPS, new_uid())[0].Status == 0x0000
        assert _worklist_states(assoc, {"ACCGA1", "ACCGB1"}) == {"ACCGA1": "STARTED",
                                                                 "ACCGB1": "STARTED"}
    finally:
        assoc.release()


# -- HTTP ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("query", ["limit=%C2%B2", "offset=%C2%B9"])
def test_bug_listing_refuses_non_ascii_digits_with_400(server: ServerProcess,
                                                       query: str) -> None:
    """``str.isdigit`` accepts superscript digits that ``int`` refuses: 500 Internal Server
    Error (a ValueError traceback in the log) instead of the documented 400."""
    assert _api(server, f"/api/mpps?{query}").status_code == 400


def test_listing_parameters_and_unknown_uids(server: ServerProcess) -> None:
    for query in ("limit=-1", "limit=abc", "limit=1e3", "offset=1000000000", "study=abc",
                  "status=paused"):
        assert _api(server, f"/api/mpps?{query}").status_code == 400, query
    assert _api(server, "/api/mpps?offset=999999999").json() == {"mpps": []}
    assert _api(server, "/api/mpps?limit=0").json() == {"mpps": []}
    assert _api(server, f"/api/mpps/{new_uid()}").status_code == 404
    assert _api(server, "/api/mpps/" + "1" * 65).status_code == 400


# -- behaviours to keep -------------------------------------------------------------------------


@pytest.mark.parametrize("syntax", SYNTAXES, ids=lambda s: s.name)
def test_every_syntax_and_character_set_round_trips(server: ServerProcess, syntax: str) -> None:
    cases = [("ISO_IR 100", "Müller^Jörg"), ("ISO_IR 192", "Müller^Jörg=山田^太郎"),
             (["", "ISO 2022 IR 87"], "Yamada^Tarou=山田^太郎=やまだ^たろう")]
    assoc = _assoc(server, syntax)
    try:
        for charset, name in cases:
            uid = new_uid()
            ds = _in_progress(new_uid())
            ds.SpecificCharacterSet = charset
            ds.PatientName = name
            assert assoc.send_n_create(ds, MPPS, uid)[0].Status == 0x0000
            assert assoc.send_n_set(_completion(2), MPPS, uid)[0].Status == 0x0000
            status, got = assoc.send_n_get([0x00080005, 0x00100010, 0x00400252], RETRIEVE,
                                           uid)
            assert status.Status == 0x0000
            assert str(got.PatientName) == name and got.PerformedProcedureStepStatus == \
                "COMPLETED"
            body = _api(server, f"/api/mpps/{uid}").json()
            assert body["images"] == 2
    finally:
        assoc.release()


def test_n_set_rules(server: ServerProcess) -> None:
    uid, study = new_uid(), new_uid()
    assoc = _assoc(server)
    try:
        assert assoc.send_n_create(_in_progress(study), MPPS, uid)[0].Status == 0x0000
        # A vendor repeating the whole step as created is accepted.
        again = _in_progress(study)
        assert assoc.send_n_set(again, MPPS, uid)[0].Status == 0x0000
        for bad in ("completed", "COMPLETE", "IN_PROGRESS", ""):
            m = _completion(0)
            m.PerformedProcedureStepStatus = bad
            assert assoc.send_n_set(m, MPPS, uid)[0].Status == 0x0106, bad
        for keyword, value in (("PatientID", "OTHER"), ("Modality", "MR"), ("StudyID", "2"),
                               ("PerformedProcedureStepStartDate", "20261208")):
            m = Dataset()
            setattr(m, keyword, value)
            status = assoc.send_n_set(m, MPPS, uid)[0]
            assert status.Status == 0x0106 and keyword in status.ErrorComment
        m = _completion(1, "DISCONTINUED")
        reason = Dataset()
        reason.CodeValue = "110514"
        reason.CodingSchemeDesignator = "DCM"
        reason.CodeMeaning = "Incorrect worklist entry selected"
        m.PerformedProcedureStepDiscontinuationReasonCodeSequence = [reason]
        assert assoc.send_n_set(m, MPPS, uid)[0].Status == 0x0000
        status = assoc.send_n_set(_completion(0), MPPS, uid)[0]
        assert status.Status == 0x0110
        status, got = assoc.send_n_get([0x00400281, 0x00400252], RETRIEVE, uid)
        assert got.PerformedProcedureStepDiscontinuationReasonCodeSequence[0].CodeValue == \
            "110514"
    finally:
        assoc.release()
    assert "Roe^Qa" not in server.log() and "QA-PID-1" not in server.log()


def test_start_and_end_must_be_dates_and_times(server: ServerProcess) -> None:
    """A Performed Procedure Step start or end that is no date or time (20261301, 2500) is
    0x0106 naming the attribute, at N-CREATE and at N-SET, and nothing changes; it was kept
    and listed (QA s20)."""
    uid, study = new_uid(), new_uid()
    assoc = _assoc(server)
    try:
        bad = _in_progress(study)
        bad.PerformedProcedureStepStartDate = "20260230"
        status = assoc.send_n_create(bad, MPPS, uid)[0]
        assert status.Status == 0x0106 and "StartDate" in status.ErrorComment, status
        assert assoc.send_n_create(_in_progress(study), MPPS, uid)[0].Status == 0x0000
        for keyword, value in (("PerformedProcedureStepEndDate", "20261301"),
                               ("PerformedProcedureStepEndTime", "2500")):
            m = _completion(1)
            setattr(m, keyword, value)
            status = assoc.send_n_set(m, MPPS, uid)[0]
            assert status.Status == 0x0106 and keyword in status.ErrorComment, status
        status, got = assoc.send_n_get([0x00400252], RETRIEVE, uid)
        assert got.PerformedProcedureStepStatus == "IN PROGRESS"
        assert assoc.send_n_set(_completion(1), MPPS, uid)[0].Status == 0x0000
    finally:
        assoc.release()


def test_the_same_uid_created_at_once_from_four_associations(server: ServerProcess) -> None:
    uid, study = new_uid(), new_uid()
    statuses: list[int] = []

    def create() -> None:
        assoc = _assoc(server)
        try:
            statuses.append(int(assoc.send_n_create(_in_progress(study), MPPS, uid)[0].Status))
        finally:
            assoc.release()

    threads = [threading.Thread(target=create) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(statuses) == [0x0000, 0x0111, 0x0111, 0x0111]
    assert len(_api(server, f"/api/mpps?study={study}").json()["mpps"]) == 1
