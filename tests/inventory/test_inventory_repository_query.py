# ruff: noqa: F811 - fixtures imported from inventory_helpers are parameters here
"""Repository Query (PS3.4 C.6.4): record keys, paging, 0xB001 as the final response, 0xA710.

In-process tests drive :class:`RepositoryQuery` on a real archive; network tests run a real
``archivist serve`` and a pynetdicom SCU over loopback.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from inventory_helpers import archive, fill, make_server, open_archive  # noqa: F401
from pydicom.dataset import Dataset

from archivist.archive.archive import Archive
from archivist.core.levels import QueryLevel
from archivist.errors import QueryError
from archivist.inventory import REPOSITORY_QUERY
from archivist.inventory.records import (
    LIMIT_REACHED,
    InvalidRecordKey,
    RepositoryQuery,
    decode_record_key,
    encode_record_key,
    parse_update_range,
)
from archivist.inventory.remote import Remote, associate, repository_query, repository_walk


def _ident(level: str, **keys: object) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    ds.StudyInstanceUID = ""
    ds.RecordKey = b""
    for k, v in keys.items():
        setattr(ds, k, v)
    return ds


class TestRecordKeys:
    def test_round_trip_and_order(self) -> None:
        keys = [encode_record_key(QueryLevel.SERIES, pk) for pk in (1, 2, 255, 256, 70000)]
        assert keys == sorted(keys)
        assert all(len(k) == 12 for k in keys)
        assert decode_record_key(QueryLevel.SERIES, keys[3]) == (256, 0)

    def test_other_level_or_garbage_is_refused(self) -> None:
        key = encode_record_key(QueryLevel.STUDY, 5)
        with pytest.raises(InvalidRecordKey):
            decode_record_key(QueryLevel.IMAGE, key)
        with pytest.raises(InvalidRecordKey):
            decode_record_key(QueryLevel.STUDY, b"\x09" + key[1:])
        with pytest.raises(InvalidRecordKey):
            decode_record_key(QueryLevel.STUDY, key[:8])

    def test_update_datetime_ranges(self) -> None:
        lo, hi = parse_update_range("20240102")  # type: ignore[misc]
        assert (lo.isoformat(), hi.isoformat()) == ("2024-01-02T00:00:00", "2024-01-03T00:00:00")
        lo, hi = parse_update_range("20240102101500+0100-")  # type: ignore[misc]
        assert lo.isoformat() == "2024-01-02T09:15:00" and hi is None
        lo, hi = parse_update_range("-202402")  # type: ignore[misc]
        assert lo is None and hi.isoformat() == "2024-03-01T00:00:00"
        assert parse_update_range("") is None
        with pytest.raises(QueryError):
            parse_update_range("2024x")


class TestPaging:
    def test_chained_pages_equal_one_query(self, archive: Archive, tmp_path: Path) -> None:
        fill(archive, tmp_path / "in", studies=7, series=2, instances=2)
        rq = RepositoryQuery(archive.search)
        for level, count in (("STUDY", 7), ("SERIES", 14), ("IMAGE", 28)):
            whole = [ds for ds in rq.page(rq.parse(_ident(level, SOPInstanceUID="")))
                     if ds is not LIMIT_REACHED]
            assert len(whole) == count
            chained: list[Dataset] = []
            prior = None
            pages = 0
            while True:
                ident = _ident(level, SOPInstanceUID="", MaximumNumberOfRecords=3)
                if prior is not None:
                    ident.PriorRecordKey = prior
                items = list(rq.page(rq.parse(ident)))
                pages += 1
                more = items and items[-1] is LIMIT_REACHED
                records = [i for i in items if i is not LIMIT_REACHED]
                assert len(records) <= 3
                chained.extend(records)
                if not more:
                    break
                prior = records[-1].RecordKey
            key = "SOPInstanceUID" if level == "IMAGE" else (
                "SeriesInstanceUID" if level == "SERIES" else "StudyInstanceUID")
            assert [d.RecordKey for d in chained] == [d.RecordKey for d in whole]
            assert [d[key].value for d in chained] == [d[key].value for d in whole]
            assert pages == -(-count // 3) + (1 if count % 3 == 0 else 0)

    def test_inserts_between_pages_appear_later(self, archive: Archive, tmp_path: Path) -> None:
        fill(archive, tmp_path / "a", studies=4)
        rq = RepositoryQuery(archive.search)
        first = list(rq.page(rq.parse(_ident("STUDY", MaximumNumberOfRecords=2))))
        assert first[-1] is LIMIT_REACHED
        seen = [d.StudyInstanceUID for d in first[:-1]]
        added = fill(archive, tmp_path / "b", studies=2)
        rest = list(rq.page(rq.parse(_ident("STUDY", PriorRecordKey=first[-2].RecordKey))))
        seen += [d.StudyInstanceUID for d in rest]
        single = [d.StudyInstanceUID for d in rq.page(rq.parse(_ident("STUDY")))]
        assert seen == single and len(seen) == 6
        assert seen[-2:] == [a["study"] for a in added]

    def test_matching_and_repository_keys(self, archive: Archive, tmp_path: Path) -> None:
        before = time.strftime("%Y%m%d%H%M%S", time.gmtime(time.time() - 5))
        fill(archive, tmp_path / "a", studies=3, modality="MR")
        rq = RepositoryQuery(archive.search)
        got = [d for d in rq.page(rq.parse(_ident(
            "STUDY", PatientID="P1", StudyUpdateDateTime=f"{before}-",
            RemovedFromOperationalUse="", ModalitiesInStudy="MR",
            NumberOfStudyRelatedInstances="")))]
        assert len(got) == 1
        assert got[0].PatientID == "P1" and got[0].ModalitiesInStudy == "MR"
        assert got[0].RemovedFromOperationalUse == "NO"
        assert got[0].StudyUpdateDateTime.endswith("+0000")
        assert got[0].NumberOfStudyRelatedInstances == 1
        assert not list(rq.page(rq.parse(_ident("STUDY", StudyUpdateDateTime="-2000"))))
        assert not list(rq.page(rq.parse(_ident("STUDY", RemovedFromOperationalUse="YES"))))

    def test_unknown_prior_key(self, archive: Archive, tmp_path: Path) -> None:
        fill(archive, tmp_path / "a", studies=1)
        rq = RepositoryQuery(archive.search)
        with pytest.raises(InvalidRecordKey):
            rq.parse(_ident("STUDY", PriorRecordKey=encode_record_key(QueryLevel.STUDY, 99)))
        with pytest.raises(QueryError):
            rq.parse(_ident("PATIENT"))


# -- over the network, with a pynetdicom SCU ------------------------------------------------


@pytest.fixture
def rq_server(open_archive, make_server, tmp_path: Path):  # type: ignore[no-untyped-def]
    data = tmp_path / "srv"
    archive = open_archive(data)
    fill(archive, tmp_path / "in", studies=5, series=2, instances=1)
    archive.close()
    return make_server(data=data)


class TestOverTheNetwork:
    def test_b001_is_the_final_response(self, rq_server) -> None:  # type: ignore[no-untyped-def]
        from pynetdicom import AE

        ae = AE(ae_title="RQSCU")
        ae.add_requested_context(REPOSITORY_QUERY)
        ae.dimse_timeout = 60  # only bounds a failure; a loaded machine can be slow to answer
        assoc = ae.associate("127.0.0.1", rq_server.dicom_port, ae_title="ARCHIVIST")
        assert assoc.is_established
        try:
            statuses = []
            responses = assoc.send_c_find(_ident("STUDY", MaximumNumberOfRecords=2),
                                          REPOSITORY_QUERY)
            for status, _ in responses:
                statuses.append(int(status.Status))
                if status.Status == 0xB001:
                    break
            assert statuses == [0xFF00, 0xFF00, 0xB001]
            # Nothing follows the Warning: no trailing Success in the DIMSE queue.
            assoc.dimse_timeout = 2  # the window for one to come
            assoc._reactor_checkpoint.clear()
            _cx, msg = assoc.dimse.get_msg(block=True)  # waits dimse_timeout (2 s)
            assert msg is None
            assoc._reactor_checkpoint.set()
            assoc.dimse_timeout = 60
            # The association is still usable.
            page = repository_query(assoc, _ident("STUDY"))
            assert page.status == 0 and len(page.records) == 5 and not page.limit_reached
        finally:
            assoc.release()

    def test_paging_and_a710(self, rq_server) -> None:  # type: ignore[no-untyped-def]
        # No timing here: the pages are read with pynetdicom's reactor paused throughout (no
        # grace period for it to take a stray response), and the DIMSE timeout only bounds a
        # failure.
        assoc = associate(Remote("ARCHIVIST", "127.0.0.1", rq_server.dicom_port,
                                 dimse_timeout=60), [REPOSITORY_QUERY])
        try:
            walked = list(repository_walk(assoc, "SERIES", {"StudyInstanceUID": "",
                                                             "SeriesInstanceUID": ""},
                                          page_size=3))
            assert len(walked) == 10
            assert len({d.SeriesInstanceUID for d in walked}) == 10
            bad = _ident("SERIES", PriorRecordKey=encode_record_key(QueryLevel.STUDY, 1))
            statuses = [int(s.Status) for s, _ in assoc.send_c_find(bad, REPOSITORY_QUERY)]
            assert statuses == [0xA710]
        finally:
            assoc.release()


    def test_the_reactor_leaves_responses_to_the_request(self, rq_server) -> None:  # type: ignore[no-untyped-def]
        """pynetdicom's reactor, let run while responses wait in the queue (as a reactor thread
        scheduled late after the previous request would), does not take them: the request
        that waits for them gets every one."""
        from archivist.inventory import STUDY_ROOT_FIND

        assoc = associate(Remote("ARCHIVIST", "127.0.0.1", rq_server.dicom_port,
                                 dimse_timeout=60), [STUDY_ROOT_FIND])
        try:
            ident = Dataset()
            ident.QueryRetrieveLevel = "STUDY"
            ident.StudyInstanceUID = ""
            responses = assoc.send_c_find(ident, STUDY_ROOT_FIND)  # sent, reactor paused
            queue = assoc.dimse.msg_queue
            deadline = time.monotonic() + 60
            while queue.qsize() < 6:  # 5 pending and the final response
                assert time.monotonic() < deadline, queue.qsize()
                time.sleep(0.01)
            polls = [0]
            guarded = assoc.dimse.get_msg

            def counted(block: bool = False) -> object:
                if not block:
                    polls[0] += 1
                return guarded(block)

            assoc.dimse.get_msg = counted
            assoc._reactor_checkpoint.set()  # the reactor polls the queue now
            while polls[0] < 20:
                assert time.monotonic() < deadline, polls
                time.sleep(0.01)
            assoc._reactor_checkpoint.clear()
            while not assoc._is_paused:
                time.sleep(0.001)
            assert queue.qsize() == 6
            got = [(int(st.Status), ds is not None) for st, ds in responses]
            assert got == [(0xFF00, True)] * 5 + [(0x0000, False)]
        finally:
            assoc.release()


class TestInventoryOfALiveRepository:
    def test_repository_query_and_cfind_agree_with_the_index(self, rq_server,  # type: ignore[no-untyped-def]
                                                             tmp_path: Path) -> None:
        from archivist.archive.archive import Archive as _Archive
        from archivist.config import load_settings
        from archivist.inventory.diff import diff
        from archivist.inventory.sources import of_archive, of_remote

        remote = Remote("ARCHIVIST", "127.0.0.1", rq_server.dicom_port, dimse_timeout=10)
        by_rq = of_remote(remote, "INSTANCE", method="rq", page_size=3)
        by_find = of_remote(remote, "INSTANCE", method="find")
        assert "Repository Query" in by_rq.source and "C-FIND" in by_find.source
        assert by_rq.counts() == {"studies": 5, "series": 10, "instances": 10}
        assert diff(by_rq, by_find).identical
        local = _Archive.open(load_settings(env={}, overrides={"data_dir": tmp_path / "srv"}))
        try:
            assert diff(of_archive(local), by_rq).identical
        finally:
            local.close()
        # Scope travels to the peer: one patient's studies only.
        one = of_remote(remote, "SERIES", [("PatientID", "P1")], method="rq")
        assert len(one.studies) == 1 and len(next(iter(one.studies.values())).series) == 2


@contextlib.contextmanager
def _pynetdicom_rq_scp(archive: Archive) -> Iterator[int]:
    """A plain pynetdicom Repository Query SCP answering from `archive`; yields its port."""
    from pynetdicom import AE, evt

    from archivist.dimse.inventory_handlers import RepositoryQueryHandler
    from archivist.testing.server import free_port

    port = free_port()
    scp = AE(ae_title="PLAIN")
    scp.add_supported_context(REPOSITORY_QUERY)
    server = scp.start_server(("127.0.0.1", port), block=False,
                              evt_handlers=[(evt.EVT_C_FIND, RepositoryQueryHandler(archive))])
    try:
        yield port
    finally:
        server.shutdown()


def test_b001_fix_for_pynetdicoms_own_scp_loop(archive: Archive, tmp_path: Path) -> None:
    """Our handler served by a plain pynetdicom AE: with install_b001_fix, 0xB001 is final."""
    from pynetdicom import AE

    from archivist.dimse.inventory_handlers import install_b001_fix

    install_b001_fix()
    fill(archive, tmp_path / "in", studies=3)
    with _pynetdicom_rq_scp(archive) as port:
        ae = AE(ae_title="RQSCU")
        ae.add_requested_context(REPOSITORY_QUERY)
        ae.dimse_timeout = 60  # only bounds a failure; a loaded machine can be slow to answer
        assoc = ae.associate("127.0.0.1", port, ae_title="PLAIN")
        assert assoc.is_established
        statuses = []
        for status, _ in assoc.send_c_find(_ident("STUDY", MaximumNumberOfRecords=1),
                                           REPOSITORY_QUERY):
            statuses.append(int(status.Status))
            if status.Status == 0xB001:
                break
        assert statuses == [0xFF00, 0xB001]
        assoc.dimse_timeout = 2  # the window for a trailing response to come
        assoc._reactor_checkpoint.clear()
        _cx, msg = assoc.dimse.get_msg(block=True)  # waits dimse_timeout (2 s)
        assert msg is None  # without the fix pynetdicom sends a 0x0000 here
        assoc._reactor_checkpoint.set()
        assoc.release()


def test_walk_skips_the_trailing_success_of_an_unfixed_pynetdicom_scp(
        archive: Archive, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """pynetdicom's own SCP loop (without install_b001_fix) sends a 0x0000 after each 0xB001:
    our SCU skips it (it answers the previous Message ID) instead of reading it as the end of
    the next page, and the walk returns every record once, in Record Key order."""
    from pynetdicom.service_class import ServiceClass

    fixed = ServiceClass._c_find_scp
    monkeypatch.setattr(ServiceClass, "_c_find_scp", getattr(fixed, "__wrapped__", fixed))
    fill(archive, tmp_path / "in", studies=7)
    with _pynetdicom_rq_scp(archive) as port:
        assoc = associate(Remote("PLAIN", "127.0.0.1", port, dimse_timeout=60),
                          [REPOSITORY_QUERY])
        try:
            walked = list(repository_walk(assoc, "STUDY", {"StudyInstanceUID": ""},
                                          page_size=3))
            keys = [bytes(d.RecordKey) for d in walked]
            assert len(walked) == 7 and len(set(keys)) == 7 and keys == sorted(keys)
            page = repository_query(assoc, _ident("STUDY"))  # after the last trailing one
            assert page.status == 0 and len(page.records) == 7
        finally:
            assoc.release()
