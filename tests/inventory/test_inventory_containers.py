# ruff: noqa: F811 - fixtures imported from inventory_helpers are parameters here
"""The container studies that hold the archive's inventories stay out of ordinary study lists
(Study Root C-FIND, QIDO-RS, ``archivist find``) and out of Patient Root C-FIND at PATIENT level
(patients and their related counts) unless a query names them by UID or by the Inventory
Storage SOP Class; they remain retrievable by UID (C-GET, WADO-RS) and through Inventory FIND.
Against a real ``archivist serve``, pynetdicom (and for PATIENT level DCMTK findscu) as the
SCU."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from inventory_helpers import fill, make_server  # noqa: F401
from legacy_peers import dcmtk_env, tool
from pydicom.dataset import Dataset
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
)

from archivist.archive.archive import Archive
from archivist.config import load_settings
from archivist.inventory import INVENTORY_FIND, INVENTORY_STORAGE
from archivist.inventory.builder import InventoryBuilder, InventorySpec
from archivist.testing.datasets import make_instance, new_uid
from archivist.testing.server import ServerProcess

STUDY_ROOT_FIND = StudyRootQueryRetrieveInformationModelFind
STUDY_ROOT_GET = StudyRootQueryRetrieveInformationModelGet


def _filled(tmp: Path) -> tuple[Path, list[str], str, Any]:
    """A data directory with three studies and an inventory of them."""
    data = tmp / "srv"
    archive = Archive.open(load_settings(env={}, overrides={"data_dir": data}))
    try:
        made = fill(archive, tmp / "in", studies=3, series=1, instances=2)
        built, _ = InventoryBuilder(archive).create(InventorySpec(level="INSTANCE"))
    finally:
        archive.close()
    patient_studies = sorted({m["study"] for m in made})
    container = str(built.root.StudyInstanceUID)
    assert container not in patient_studies
    return data, patient_studies, container, built


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, ...]]:
    """One server for the tests that only read (one that stores has `served`)."""
    data, patient_studies, container, built = _filled(tmp_path_factory.mktemp("containers"))
    srv = ServerProcess(data).start()
    try:
        yield srv, data, patient_studies, container, built
    finally:
        srv.stop()


@pytest.fixture
def served(make_server, tmp_path: Path):  # type: ignore[no-untyped-def]
    data, patient_studies, container, built = _filled(tmp_path)
    return make_server(data=data), data, patient_studies, container, built


def _find(port: int, level: str, model: str = STUDY_ROOT_FIND, **keys: Any) -> list[Dataset]:
    ae = AE(ae_title="CONTSCU")
    ae.dimse_timeout = 20
    ae.add_requested_context(model)
    assoc = ae.associate("127.0.0.1", port, ae_title="ARCHIVIST")
    assert assoc.is_established
    try:
        ident = Dataset()
        if model == STUDY_ROOT_FIND:
            ident.QueryRetrieveLevel = level
            ident.StudyInstanceUID = ""
        for k, v in keys.items():
            setattr(ident, k, v)
        out = []
        for status, ds in assoc.send_c_find(ident, model):
            assert status and status.Status in (0x0000, 0xFF00), status
            if ds is not None:
                out.append(ds)
        return out
    finally:
        assoc.release()


def _qido(url: str) -> list[dict[str, Any]]:
    req = urllib.request.Request(url, headers={"Accept": "application/dicom+json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        body = r.read()
    return json.loads(body) if body else []


def _uids(results: list[dict[str, Any]], tag: str = "0020000D") -> list[str]:
    return sorted({r[tag]["Value"][0] for r in results})


def test_c_find_hides_containers_unless_named(shared) -> None:  # type: ignore[no-untyped-def]
    srv, _, studies, container, built = shared
    port = srv.dicom_port
    assert sorted(ds.StudyInstanceUID for ds in _find(port, "STUDY")) == studies
    assert sorted({ds.StudyInstanceUID for ds in _find(port, "SERIES")}) == studies
    assert sorted({ds.StudyInstanceUID for ds in _find(port, "IMAGE", SOPInstanceUID="")}) \
        == studies
    # Named by its Study Instance UID (alone or in a UID list): there.
    named = _find(port, "STUDY", StudyInstanceUID=container, SOPClassesInStudy="")
    assert [ds.StudyInstanceUID for ds in named] == [container]
    assert named[0].SOPClassesInStudy == INVENTORY_STORAGE
    assert sorted(ds.StudyInstanceUID for ds in _find(
        port, "STUDY", StudyInstanceUID=[container, studies[0]])) == sorted([container, studies[0]])
    # Asked for by the Inventory Storage SOP Class: there.
    assert [ds.StudyInstanceUID for ds in _find(port, "STUDY",
                                                SOPClassesInStudy=INVENTORY_STORAGE)] \
        == [container]
    # Inventory FIND (Annex JJ) still lists the inventory.
    found = _find(port, "", INVENTORY_FIND, SOPInstanceUID="")
    assert [ds.SOPInstanceUID for ds in found] == [built.root.SOPInstanceUID]


def test_qido_and_cli_hide_containers_unless_named(shared) -> None:  # type: ignore[no-untyped-def]
    srv, data, studies, container, built = shared
    base = f"{srv.url}/dicomweb"
    assert _uids(_qido(f"{base}/studies")) == studies
    assert _uids(_qido(f"{base}/series")) == studies
    assert _uids(_qido(f"{base}/instances")) == studies
    assert _uids(_qido(f"{base}/studies?StudyInstanceUID={container}")) == [container]
    assert _uids(_qido(f"{base}/studies/{container}/series"), "0020000E") \
        == [str(built.root.SeriesInstanceUID)]
    assert _uids(_qido(f"{base}/instances?SOPClassUID={INVENTORY_STORAGE}"), "00080018") \
        == [str(built.root.SOPInstanceUID)]
    # WADO-RS retrieves the container study by its UID.
    req = urllib.request.Request(f"{base}/studies/{container}", headers={
        "Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'})
    with urllib.request.urlopen(req, timeout=30) as r:
        assert r.status == 200 and str(built.root.SOPInstanceUID).encode() in r.read()

    # archivist find: the same search.
    def cli(*keys: str) -> list[str]:
        r = subprocess.run([sys.executable, "-m", "archivist.cli.main", "find", "--level",
                            "study", "--json", "--data", str(data), *keys],
                           capture_output=True, text=True, timeout=120, check=False)
        assert r.returncode == 0, r.stdout + r.stderr
        return _uids(json.loads(r.stdout))

    assert cli() == studies
    assert cli(f"StudyInstanceUID={container}") == [container]


def test_c_get_retrieves_a_container_by_uid(shared) -> None:  # type: ignore[no-untyped-def]
    srv, _, _, container, built = shared
    received: list[str] = []

    def on_store(event: Any) -> int:
        received.append(str(event.request.AffectedSOPInstanceUID))
        return 0x0000

    ae = AE(ae_title="CONTSCU")
    ae.dimse_timeout = 20
    ae.add_requested_context(STUDY_ROOT_GET)
    ae.add_requested_context(INVENTORY_STORAGE)
    assoc = ae.associate("127.0.0.1", srv.dicom_port, ae_title="ARCHIVIST",
                         ext_neg=[build_role(INVENTORY_STORAGE, scp_role=True)],
                         evt_handlers=[(evt.EVT_C_STORE, on_store)])
    assert assoc.is_established
    try:
        ident = Dataset()
        ident.QueryRetrieveLevel = "STUDY"
        ident.StudyInstanceUID = container
        results = list(assoc.send_c_get(ident, STUDY_ROOT_GET))
        assert int(results[-1][0].Status) == 0x0000
    finally:
        assoc.release()
    assert received == [str(built.root.SOPInstanceUID)]


PATIENT_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.1.1"
_COUNTS = ("NumberOfPatientRelatedStudies", "NumberOfPatientRelatedSeries",
           "NumberOfPatientRelatedInstances")


def _patients_by_pynetdicom(port: int) -> dict[str, tuple[int, int, int]]:
    keys = {"QueryRetrieveLevel": "PATIENT", "PatientID": "", **dict.fromkeys(_COUNTS)}
    return {str(ds.get("PatientID", "")): tuple(int(ds[k].value) for k in _COUNTS)
            for ds in _find(port, "PATIENT", PATIENT_ROOT_FIND, **keys)}


def _patients_by_findscu(port: int, tmp: Path) -> dict[str, tuple[int, int, int]]:
    """The same query from DCMTK findscu (Patient Root), its responses extracted to files."""
    out_dir = tmp / "findscu"
    out_dir.mkdir(parents=True)
    args = [tool("findscu", "dcmtk"), "-P", "-aet", "CONTSCU", "-aec", "ARCHIVIST", "-X",
            "-od", str(out_dir), "-k", "QueryRetrieveLevel=PATIENT", "-k", "PatientID="]
    for key in _COUNTS:
        args += ["-k", f"{key}="]
    r = subprocess.run([*args, "127.0.0.1", str(port)], capture_output=True, text=True,
                       timeout=60, check=False, env=dcmtk_env())
    assert r.returncode == 0, r.stdout + r.stderr
    out = {}
    for path in sorted(out_dir.iterdir()):
        ds = pydicom.dcmread(path)
        out[str(ds.get("PatientID", ""))] = tuple(int(ds[k].value) for k in _COUNTS)
    return out


def test_patient_level_hides_containers_and_their_counts(  # type: ignore[no-untyped-def]
        served, tmp_path: Path) -> None:
    srv, _, _, container, _ = served
    port = srv.dicom_port
    # The inventory holds no patient: its container study has an empty Patient ID. Only the
    # three patients with images are reported, each with its one study, series and 2 images.
    expected = {f"P{s}": (1, 1, 2) for s in range(3)}
    assert _patients_by_pynetdicom(port) == expected
    assert _patients_by_findscu(port, tmp_path / "a") == expected
    # A real study without Patient ID joins the container's patient: that patient is reported
    # now, counting its own study but not the container study beside it.
    anonymous = make_instance(tmp_path / "anon.dcm", study_uid=new_uid(), series_uid=new_uid(),
                              patient_id="", patient_name="")
    ae = AE(ae_title="CONTSCU")
    ae.add_requested_context(str(anonymous.SOPClassUID), str(anonymous.file_meta.TransferSyntaxUID))
    assoc = ae.associate("127.0.0.1", port, ae_title="ARCHIVIST")
    assert assoc.is_established
    try:
        assert assoc.send_c_store(anonymous).Status == 0x0000
    finally:
        assoc.release()
    expected[""] = (1, 1, 1)
    assert _patients_by_pynetdicom(port) == expected
    assert _patients_by_findscu(port, tmp_path / "b") == expected
    # The container study is still under that patient (Study Root, named by UID).
    named = _find(port, "STUDY", StudyInstanceUID=container, PatientID="")
    assert [(ds.StudyInstanceUID, ds.PatientID) for ds in named] == [(container, "")]
