"""Deflate bombs where the first pass left them (bombs2): a request's deflated data set, a
deflated object re-encoded for C-GET / C-MOVE, and the UIDs of a refused STOW part.

* A C-FIND / C-GET / C-MOVE Identifier (or an N-service data set) in Deflated Explicit VR
  Little Endian was inflated whole by pynetdicom's decoder: about 200 KB on the wire took
  400 MB. It is inflated a step at a time and refused past 16 MiB with 0xC001 and an Error
  Comment; the association goes on.
* C-GET / C-MOVE parsed a stored deflated object with ``pydicom.dcmread`` to re-encode it for
  a peer that did not accept Deflated: a bomb stored before ingest refused them was inflated
  whole. It is read with the bounded reader and counted as a failed sub-operation.
* STOW named a refused part by reading it again with ``dcmread``; a truncated deflated part
  was inflated whole to find its UIDs. Its UIDs now come from the bounded reader, or from its
  File Meta past the limit.

Scaled down, and the server runs under an address-space limit (as test_qa_bombs_memory.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import requests
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import (
    SecondaryCaptureImageStorage,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)
from tests.integration.test_qa_bombs_memory import (
    DEFLATED,
    MIB,
    _blob_of,
    _failure_text,
    _limit,
    _peak_kb,
    _stow,
    deflate_bomb,
)

from archivist.testing.server import ServerProcess

EXPLICIT_LE = "1.2.840.10008.1.2.1"


@pytest.fixture
def capped(make_server) -> ServerProcess:  # type: ignore[no-untyped-def]
    srv = make_server("--workers", "1", "--peer", "QADEST=127.0.0.1:9")
    _limit(srv)
    return srv


def _bomb_identifier(level: str = "STUDY", size: int = 128 * MIB) -> Dataset:
    """A query whose private OB of zeros deflates to about a thousandth of its size."""
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    ds.StudyInstanceUID = "1.2.3.4"
    ds.add_new(0x00090010, "LO", "QA BOMB")
    ds.add_new(0x00091000, "OB", bytes(size))
    return ds


def _query(level: str = "STUDY") -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    ds.PatientID = "*"
    ds.StudyInstanceUID = ""
    return ds


class TestDeflatedIdentifier:
    def test_refused_past_the_limit_and_the_association_goes_on(
            self, capped: ServerProcess) -> None:
        ae = AE(ae_title="QABOMBS2")
        for model in (StudyRootQueryRetrieveInformationModelFind,
                      StudyRootQueryRetrieveInformationModelGet,
                      StudyRootQueryRetrieveInformationModelMove):
            ae.add_requested_context(model, DEFLATED)
        assoc = ae.associate("127.0.0.1", capped.dicom_port, ae_title=capped.aet)
        assert assoc.is_established
        try:
            before = _peak_kb(capped)
            statuses = [s for s, _ in assoc.send_c_find(
                _bomb_identifier(), StudyRootQueryRetrieveInformationModelFind)]
            assert len(statuses) == 1
            assert statuses[0].Status == 0xC001, statuses[0]
            assert "Identifier inflates past 16 MiB" in statuses[0].ErrorComment
            moved = [s for s, _ in assoc.send_c_move(
                _bomb_identifier(), "QADEST", StudyRootQueryRetrieveInformationModelMove)]
            assert [s.Status for s in moved] == [0xC001], moved
            assert "inflates past" in moved[0].ErrorComment
            got = [s for s, _ in assoc.send_c_get(
                _bomb_identifier(), StudyRootQueryRetrieveInformationModelGet)]
            assert [s.Status for s in got] == [0xC001], got
            assert "inflates past" in got[0].ErrorComment
            grown = (_peak_kb(capped) - before) // 1024
            assert grown < 100, f"the server's peak memory grew by {grown} MB"
            # The same association still answers an honest deflated query.
            final = [s.Status for s, _ in assoc.send_c_find(
                _query(), StudyRootQueryRetrieveInformationModelFind)]
            assert final == [0x0000], final
            assert assoc.is_established
        finally:
            assoc.release()

    def test_an_honest_deflated_identifier_is_read(self, capped: ServerProcess,
                                                   tmp_path: Path) -> None:
        small = tmp_path / "small.dcm"
        ds = deflate_bomb(small, 4096)
        assert _stow(capped, small).status_code == 200
        ae = AE(ae_title="QABOMBS2")
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind, DEFLATED)
        assoc = ae.associate("127.0.0.1", capped.dicom_port, ae_title=capped.aet)
        try:
            query = _query()
            query.StudyInstanceUID = ds.StudyInstanceUID
            found = list(assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind))
        finally:
            assoc.release()
        assert [s.Status for s, _ in found] == [0xFF00, 0x0000]
        assert found[0][1].StudyInstanceUID == ds.StudyInstanceUID


class TestRetrieveReencoding:
    def test_a_stored_bomb_fails_its_sub_operation_in_bounded_memory(
            self, capped: ServerProcess, tmp_path: Path) -> None:
        """Two deflated objects of one study, one of them replaced on disk by a bomb (stored
        before ingest refused them); a C-GET by a peer that takes Explicit VR Little Endian
        only: the honest one is inflated and re-encoded, the bomb fails."""
        honest, small = tmp_path / "honest.dcm", tmp_path / "small.dcm"
        first = deflate_bomb(honest, 4096)
        second = Dataset()
        second.SOPInstanceUID = generate_uid()
        second.StudyInstanceUID = first.StudyInstanceUID
        second.SeriesInstanceUID = first.SeriesInstanceUID
        deflate_bomb(small, 4096, uids_from=second)
        assert _stow(capped, honest).status_code == 200
        assert _stow(capped, small).status_code == 200
        deflate_bomb(_blob_of(capped, small.read_bytes()), 300 * MIB, uids_from=second)

        received: list[str] = []

        def on_store(event: evt.Event) -> int:
            received.append(str(event.dataset.SOPInstanceUID))
            return 0x0000

        ae = AE(ae_title="QABOMBS2")
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
        ae.add_requested_context(SecondaryCaptureImageStorage, EXPLICIT_LE)
        assoc = ae.associate("127.0.0.1", capped.dicom_port, ae_title=capped.aet,
                             ext_neg=[build_role(SecondaryCaptureImageStorage, scp_role=True)],
                             evt_handlers=[(evt.EVT_C_STORE, on_store)])
        assert assoc.is_established
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.StudyInstanceUID = first.StudyInstanceUID
        before = _peak_kb(capped)
        try:
            responses = list(assoc.send_c_get(query, StudyRootQueryRetrieveInformationModelGet))
        finally:
            assoc.release()
        grown = (_peak_kb(capped) - before) // 1024
        final = responses[-1][0]
        assert received == [first.SOPInstanceUID], received
        assert final.Status == 0xB000, final  # one sub-operation failed
        assert final.NumberOfCompletedSuboperations == 1
        assert final.NumberOfFailedSuboperations == 1
        assert responses[-1][1].FailedSOPInstanceUIDList == second.SOPInstanceUID
        assert grown < 100, f"the server's peak memory grew by {grown} MB"
        assert "InflateRefused" in capped.log()


class TestStowRefusedPart:
    def test_a_truncated_deflated_part_is_named_in_bounded_memory(
            self, capped: ServerProcess, tmp_path: Path) -> None:
        bomb = tmp_path / "bomb.dcm"
        ds = deflate_bomb(bomb, 300 * MIB)
        data = bomb.read_bytes()
        cut = data[:len(data) * 9 // 10]  # the part never ends: refused as truncated
        boundary = "qa-bombs2-boundary"
        body = f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + cut
        before = _peak_kb(capped)
        r = requests.post(f"{capped.url}/dicomweb/studies", data=body, timeout=300, headers={
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
            "Accept": "application/dicom+json"})
        grown = (_peak_kb(capped) - before) // 1024
        assert r.status_code == 409, r.text
        assert "truncated" in _failure_text(r)
        assert ds.SOPInstanceUID in r.text  # named from its File Meta
        assert grown < 100, f"the server's peak memory grew by {grown} MB"
