"""DIMSE services against a real `archivist serve`, driven by DCMTK and pynetdicom."""

from __future__ import annotations

import hashlib
import sqlite3
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE, _config, build_role
from pynetdicom.sop_class import (
    CTImageStorage,
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

from archivist.testing.datasets import make_instance
from archivist.testing.net import wait_listening
from archivist.testing.server import ServerProcess, free_port
from conftest import dcmtk_tool

AET = "ARCHIVIST"


def run(*cmd: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run a command; DCMTK tool names resolve to DCMTK, not pynetdicom's apps."""
    if cmd[0] in ("echoscu", "storescu", "findscu", "movescu", "getscu", "storescp"):
        cmd = (dcmtk_tool(cmd[0]), *cmd[1:])
    if cmd[0] == "python":
        cmd = (sys.executable, *cmd[1:])
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)


def associate(srv: ServerProcess, contexts: list[tuple[str, list[str]]] | None = None,
              calling: str = "TESTSCU", roles: list | None = None):  # type: ignore[no-untyped-def]
    ae = AE(ae_title=calling)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    for sop, syntaxes in contexts or [(Verification, ["1.2.840.10008.1.2"])]:
        ae.add_requested_context(sop, syntaxes)
    assoc = ae.associate("127.0.0.1", srv.dicom_port, ae_title=AET, ext_neg=roles or [])
    assert assoc.is_established, "association refused"
    return assoc


def store_files(srv: ServerProcess, paths: list[Path]) -> list[int]:
    """C-STORE each file with its own transfer syntax; returns the statuses."""
    datasets = [pydicom.dcmread(p, stop_before_pixels=True) for p in paths]
    contexts = sorted({(str(d.SOPClassUID), str(d.file_meta.TransferSyntaxUID))
                       for d in datasets})
    assoc = associate(srv, [(c, [t]) for c, t in contexts])
    old = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = True  # send the file's bytes as they are
    try:
        statuses = []
        for p in paths:
            rsp = assoc.send_c_store(p)
            statuses.append(int(rsp.Status) if "Status" in rsp else -1)
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = old
        assoc.release()
    return statuses


def find(srv: ServerProcess, identifier: Dataset, model=StudyRootQueryRetrieveInformationModelFind):  # type: ignore[no-untyped-def]
    assoc = associate(srv, [(model, ["1.2.840.10008.1.2"])])
    results, final = [], None
    try:
        for status, ds in assoc.send_c_find(identifier, model):
            if status.Status in (0xFF00, 0xFF01):
                results.append(ds)
            else:
                final = int(status.Status)
    finally:
        assoc.release()
    return results, final


def q(level: str, **keys: object) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for k, v in keys.items():
        setattr(ds, k, v)
    return ds


def index_rows(data: Path) -> list[tuple[str, str, str]]:
    con = sqlite3.connect(data / "index.sqlite")
    try:
        return list(con.execute("SELECT sop_instance_uid, storage_key, sha256 FROM instance"))
    finally:
        con.close()


def blob_path(data: Path, key: str) -> Path:
    return data / "blobs" / key[:2] / key[2:4] / key


def dataset_bytes(path: Path) -> bytes:
    """The bytes after the File Meta Information group."""
    raw = path.read_bytes()
    meta = pydicom.dcmread(path, stop_before_pixels=True).file_meta
    start = 132 + 12 + int(meta.FileMetaInformationGroupLength)
    return raw[start:]


@pytest.mark.usefixtures("dcmtk")
class TestVerificationAndStorage:
    def test_echoscu(self, server: ServerProcess) -> None:
        r = run("echoscu", "-aec", AET, "127.0.0.1", str(server.dicom_port))
        assert r.returncode == 0, r.stderr

    def test_every_bundled_kind_stored_byte_for_byte(self, server: ServerProcess,
                                                     bundled_files: list[Path]) -> None:
        statuses = store_files(server, bundled_files)
        assert statuses == [0] * len(bundled_files)
        rows = {uid: (key, sha) for uid, key, sha in index_rows(server.data_dir)}
        assert len(rows) == len(bundled_files)
        for path in bundled_files:
            uid = str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)
            key, sha = rows[uid]
            blob = blob_path(server.data_dir, key)
            assert hashlib.sha256(blob.read_bytes()).hexdigest() == sha
            # The data set is kept exactly as it was sent; only the File Meta is ours.
            assert dataset_bytes(blob) == dataset_bytes(path), path.name

    def test_storescu_then_duplicate_keeps_one(self, server: ServerProcess,
                                               bundled_files: list[Path]) -> None:
        ct = bundled_files[0]
        for _ in range(2):
            r = run("storescu", "-aec", AET, "127.0.0.1", str(server.dicom_port), str(ct))
            assert r.returncode == 0, r.stderr
        assert len(index_rows(server.data_dir)) == 1

    def test_wrong_called_aet_rejected(self, server: ServerProcess) -> None:
        r = run("echoscu", "-aec", "SOMEONE", "127.0.0.1", str(server.dicom_port))
        assert r.returncode != 0
        assert "called ae title not recogni" in (r.stderr + r.stdout).lower()

    def test_hostile_uid_refused_and_nothing_outside(self, server: ServerProcess,
                                                     tmp_path: Path) -> None:
        path = tmp_path / "bad.dcm"
        ds = make_instance(path)
        uid_ok = ds.SOPInstanceUID
        for bad in ["../escaped", "1.2.3/../../x", "1.2.\x003"]:
            ds.SOPInstanceUID = bad
            ds.file_meta.MediaStorageSOPInstanceUID = bad
            ds.save_as(path, enforce_file_format=True)
            assoc = associate(server, [(CTImageStorage, ["1.2.840.10008.1.2.1"])])
            rsp = assoc.send_c_store(ds)
            assoc.release()
            assert rsp.Status in (0xC000, 0xA900), hex(rsp.Status)
        assert not (server.data_dir.parent / "escaped").exists()
        assert index_rows(server.data_dir) == []
        del uid_ok

    def test_truncated_object_refused(self, server: ServerProcess, tmp_path: Path) -> None:
        good = tmp_path / "good.dcm"
        make_instance(good, rows=64, columns=64)
        cut = tmp_path / "cut.dcm"
        cut.write_bytes(good.read_bytes()[:-3000])
        statuses = store_files(server, [cut])
        assert statuses[0] == 0xC000
        statuses = store_files(server, [good])
        assert statuses == [0]
        assert len(index_rows(server.data_dir)) == 1
        # Objects are logged at DEBUG; the end of each association counts them at INFO.
        log = server.log()
        assert "released (0 stored, 1 refused)" in log
        assert "released (1 stored, 0 refused)" in log
        assert "stored sop=" not in log


MOVE_PORT = free_port()


@pytest.fixture(scope="module")
def populated(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """Three patients, four studies, one with a non-ASCII name in ISO_IR 192 (read-only)."""
    tmp_path = tmp_path_factory.mktemp("populated")
    server = ServerProcess(tmp_path / "data", extra_args=["--peer",
                                                          f"STORESCP=127.0.0.1:{MOVE_PORT}"])
    server.start()
    files = []
    specs = [
        ("DOE^JOHN", "P1", "20200115", "CT", None, 3),
        ("DOE^JANE", "P2", "20210620", "MR", None, 2),
        ("Müller^Jürgen", "P3", "20221231", "CT", "ISO_IR 192", 1),
        ("Müller^Jürgen", "P3", "20230301", "MR", "ISO_IR 192", 2),
    ]
    n = 0
    for name, pid, date, modality, charset, count in specs:
        study = generate_uid()
        series = generate_uid()
        for i in range(count):
            n += 1
            path = tmp_path / f"g{n}.dcm"
            make_instance(path, patient_name=name, patient_id=pid, study_uid=study,
                          series_uid=series, study_date=date, modality=modality,
                          sop_class_uid=CTImageStorage, charset=charset,
                          instance_number=i + 1)
            files.append(path)
    assert store_files(server, files) == [0] * len(files)
    yield server
    server.stop()


class TestQuery:
    def test_study_level_counts_and_modalities(self, populated: ServerProcess) -> None:
        results, final = find(populated, q("STUDY", PatientName="", StudyInstanceUID="",
                                          ModalitiesInStudy="", NumberOfStudyRelatedSeries="",
                                          NumberOfStudyRelatedInstances="",
                                          SOPClassesInStudy=""))
        assert final == 0
        assert len(results) == 4
        counts = sorted(int(r.NumberOfStudyRelatedInstances) for r in results)
        assert counts == [1, 2, 2, 3]
        assert all(int(r.NumberOfStudyRelatedSeries) == 1 for r in results)
        assert sorted(r.ModalitiesInStudy for r in results) == ["CT", "CT", "MR", "MR"]
        assert all(r.SOPClassesInStudy == CTImageStorage for r in results)

    @pytest.mark.parametrize("keys,expected", [
        ({"PatientName": "DOE*"}, 2),
        ({"PatientName": "doe^j?n*"}, 1),           # ? is one character: JANE, not JOHN
        ({"PatientName": "doe^j*"}, 2),           # case-insensitive (the default)
        ({"PatientName": "müller*"}, 2),
        ({"PatientID": "P3"}, 2),
        ({"StudyDate": "20210101-"}, 3),
        ({"StudyDate": "-20201231"}, 1),
        ({"StudyDate": "20210101-20221231"}, 2),
        ({"StudyDate": "20200115"}, 1),
        ({"ModalitiesInStudy": "MR"}, 2),
        ({"ModalitiesInStudy": ["CT", "MR"]}, 4),
        ({"AccessionNumber": "NOPE"}, 0),
        ({"Manufacturer": "Archivist*"}, 4),         # no column: matched on stored attributes
    ])
    def test_study_matching(self, populated: ServerProcess, keys: dict, expected: int) -> None:
        results, final = find(populated, q("STUDY", StudyInstanceUID="", **keys))
        assert final == 0
        assert len(results) == expected

    def test_uid_list_and_series_image_levels(self, populated: ServerProcess) -> None:
        studies, _ = find(populated, q("STUDY", StudyInstanceUID="", PatientID="P1"))
        assert len(studies) == 1
        uid = studies[0].StudyInstanceUID
        series, final = find(populated, q("SERIES", StudyInstanceUID=uid, SeriesInstanceUID="",
                                          Modality="", NumberOfSeriesRelatedInstances=""))
        assert final == 0 and len(series) == 1
        assert int(series[0].NumberOfSeriesRelatedInstances) == 3
        images, _ = find(populated, q("IMAGE", StudyInstanceUID=uid,
                                      SeriesInstanceUID=series[0].SeriesInstanceUID,
                                      SOPInstanceUID="", InstanceNumber=""))
        assert sorted(int(i.InstanceNumber) for i in images) == [1, 2, 3]
        two = [images[0].SOPInstanceUID, images[1].SOPInstanceUID]
        listed, _ = find(populated, q("IMAGE", StudyInstanceUID=uid, SOPInstanceUID=two))
        assert sorted(x.SOPInstanceUID for x in listed) == sorted(two)

    def test_patient_root_patient_level(self, populated: ServerProcess) -> None:
        results, final = find(populated, q("PATIENT", PatientID="", PatientName="",
                                           NumberOfPatientRelatedStudies="",
                                           NumberOfPatientRelatedInstances=""),
                              PatientRootQueryRetrieveInformationModelFind)
        assert final == 0
        by_id = {r.PatientID: r for r in results}
        assert set(by_id) == {"P1", "P2", "P3"}
        assert int(by_id["P3"].NumberOfPatientRelatedStudies) == 2
        assert int(by_id["P3"].NumberOfPatientRelatedInstances) == 3

    def test_character_sets(self, populated: ServerProcess) -> None:
        # Query in Latin-1: answer in Latin-1, with the name decoded correctly.
        ident = q("STUDY", PatientName="Müller*", StudyInstanceUID="")
        ident.SpecificCharacterSet = "ISO_IR 100"
        results, _ = find(populated, ident)
        assert len(results) == 2
        assert all(r.SpecificCharacterSet == "ISO_IR 100" for r in results)
        assert str(results[0].PatientName) == "Müller^Jürgen"
        # Query in the default repertoire: non-ASCII results come back in UTF-8.
        results, _ = find(populated, q("STUDY", PatientID="P3", PatientName=""))
        assert all(r.SpecificCharacterSet == "ISO_IR 192" for r in results)
        assert str(results[0].PatientName) == "Müller^Jürgen"

    def test_findscu(self, populated: ServerProcess, tmp_path: Path, dcmtk: None) -> None:
        out = tmp_path / "rsp"
        out.mkdir()
        r = run("findscu", "-S", "-aec", AET, "-X", "-od", str(out),
                "-k", "QueryRetrieveLevel=STUDY", "-k", "PatientName=DOE*",
                "-k", "StudyInstanceUID=", "-k", "NumberOfStudyRelatedInstances=",
                "127.0.0.1", str(populated.dicom_port))
        assert r.returncode == 0, r.stderr
        found = [pydicom.dcmread(p) for p in sorted(out.iterdir())]
        assert sorted(int(d.NumberOfStudyRelatedInstances) for d in found) == [2, 3]

    def test_bad_date_is_a_failure_status(self, populated: ServerProcess) -> None:
        _, final = find(populated, q("STUDY", StudyDate="2020-01-XX", StudyInstanceUID=""))
        assert final is not None and final & 0xF000 in (0xA000, 0xC000)


class TestRetrieve:
    def _study(self, srv: ServerProcess, pid: str) -> str:
        studies, _ = find(srv, q("STUDY", StudyInstanceUID="", PatientID=pid))
        return str(studies[0].StudyInstanceUID)

    def test_movescu_to_storescp(self, populated: ServerProcess, tmp_path: Path,
                                 dcmtk: None) -> None:
        out = tmp_path / "received"
        out.mkdir()
        scp = subprocess.Popen([dcmtk_tool("storescp"), "-aet", "STORESCP", "-od", str(out), str(MOVE_PORT)])
        try:
            wait_listening(MOVE_PORT, scp, what="storescp")
            srv = populated
            uid = self._study(srv, "P1")
            r = run("movescu", "-S", "-aec", AET, "-aem", "STORESCP",
                    "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={uid}",
                    "127.0.0.1", str(srv.dicom_port))
            assert r.returncode == 0, r.stderr
            assert len(list(out.iterdir())) == 3
            # pynetdicom as the second client: sub-operation counts add up.
            assoc = associate(srv, [(StudyRootQueryRetrieveInformationModelMove,
                                     ["1.2.840.10008.1.2"])])
            responses = list(assoc.send_c_move(q("STUDY", StudyInstanceUID=uid), "STORESCP",
                                               StudyRootQueryRetrieveInformationModelMove))
            final = responses[-1][0]
            assert final.Status == 0
            assert final.NumberOfCompletedSuboperations == 3
            assert final.NumberOfFailedSuboperations == 0
            pend = [s for s, _ in responses[:-1] if s.Status == 0xFF00]
            for s in pend:
                assert (s.NumberOfRemainingSuboperations + s.NumberOfCompletedSuboperations
                        + s.NumberOfFailedSuboperations + s.NumberOfWarningSuboperations) == 3
            # Unknown destination
            responses = list(assoc.send_c_move(q("STUDY", StudyInstanceUID=uid), "NOWHERE",
                                               StudyRootQueryRetrieveInformationModelMove))
            assert responses[-1][0].Status == 0xA801
            assoc.release()
        finally:
            scp.terminate()
            scp.wait(10)

    def test_getscu_and_pynetdicom_get(self, populated: ServerProcess, tmp_path: Path,
                                       dcmtk: None) -> None:
        uid = self._study(populated, "P1")
        out = tmp_path / "got"
        out.mkdir()
        r = run("getscu", "-S", "-aec", AET, "-od", str(out), "-k", "QueryRetrieveLevel=STUDY",
                "-k", f"StudyInstanceUID={uid}", "127.0.0.1", str(populated.dicom_port))
        assert r.returncode == 0, r.stderr
        got = [pydicom.dcmread(p) for p in out.iterdir()]
        assert len(got) == 3 and all(g.StudyInstanceUID == uid for g in got)

        received: list[Dataset] = []

        def on_store(event):  # type: ignore[no-untyped-def]
            received.append(event.dataset)
            return 0

        from pynetdicom import evt

        ae = AE(ae_title="GETTER")
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
        ae.add_requested_context(CTImageStorage, ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"])
        assoc = ae.associate("127.0.0.1", populated.dicom_port, ae_title=AET,
                             ext_neg=[build_role(CTImageStorage, scp_role=True)],
                             evt_handlers=[(evt.EVT_C_STORE, on_store)])
        assert assoc.is_established
        responses = list(assoc.send_c_get(q("SERIES", StudyInstanceUID=uid,
                                            SeriesInstanceUID=got[0].SeriesInstanceUID),
                                          StudyRootQueryRetrieveInformationModelGet))
        assoc.release()
        final = responses[-1][0]
        n = sum(1 for g in got if g.SeriesInstanceUID == got[0].SeriesInstanceUID)
        assert final.Status == 0 and final.NumberOfCompletedSuboperations == n
        assert len(received) == n
