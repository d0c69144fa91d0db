"""QIDO-RS return attributes and parameters, against a real `archivist serve` (QA findings).

- ``includefield`` (``all`` or named) returned attributes of *another* instance or study: the
  attributes kept for the patient (its first instance) overrode those of the matched entity.
- A study search returned series and instance attributes (``includefield=all``, or named),
  which PS3.18 10.6.3.3.1 says shall not be returned.
- A key of a lower level (``/studies?Modality=CT``) was silently ignored: every study matched.
- ``emptyvaluematching`` and ``multiplevaluematching`` (PS3.18 Table 8.3.4-1) were a 400.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pydicom
import pytest
import requests
from dicomweb_client.api import DICOMwebClient

from archivist.testing.datasets import make_instance, new_uid
from archivist.testing.server import ServerProcess

pytestmark = pytest.mark.timeout(180)

_TMP = Path(tempfile.mkdtemp(prefix="qa-qido-"))
STUDY_A, STUDY_B, SERIES_B = new_uid(), new_uid(), new_uid()
SOPS_B = [new_uid(), new_uid()]


def _instance(**kw) -> pydicom.Dataset:  # type: ignore[no-untyped-def]
    path = _TMP / f"{new_uid()}.dcm"
    make_instance(path, **kw)
    return pydicom.dcmread(path)


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> ServerProcess:
    server = ServerProcess(tmp_path_factory.mktemp("qaqido") / "data")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def client(srv: ServerProcess) -> DICOMwebClient:
    """One patient, two studies: A first (so the patient's kept attributes are A's), then B
    with one series of two slices at different positions."""
    c = DICOMwebClient(f"{srv.url}/dicomweb")
    first = _instance(patient_id="QA-QIDO", study_uid=STUDY_A, modality="MR", extra={
        "AdmittingDiagnosesDescription": "study A diagnosis",
        "ImagePositionPatient": [0, 0, 0], "ImageComments": "slice of study A"})
    c.store_instances([first])
    slices = [_instance(patient_id="QA-QIDO", study_uid=STUDY_B, series_uid=SERIES_B,
                        sop_uid=sop, instance_number=n + 1, modality="CT", extra={
                            "AdmittingDiagnosesDescription": "study B diagnosis",
                            "ImagePositionPatient": [0, 0, 10 * (n + 1)],
                            "ImageComments": f"slice {n + 1} of study B"})
              for n, sop in enumerate(SOPS_B)]
    c.store_instances(slices)
    return c


def _value(item: dict, tag: str):  # type: ignore[no-untyped-def]
    return item.get(tag, {}).get("Value")


class TestIncludedAttributesAreTheEntitysOwn:
    def test_instance_includefield_all_gives_its_own_geometry(self, client) -> None:
        for n, sop in enumerate(SOPS_B):
            (item,) = client.search_for_instances(search_filters={"SOPInstanceUID": sop},
                                                  fields=["all"])
            assert _value(item, "00200032") == [0, 0, 10 * (n + 1)]
            assert _value(item, "00204000") == [f"slice {n + 1} of study B"]

    def test_study_attributes_are_not_the_first_study_of_the_patient(self, client) -> None:
        for fields in (["all"], ["AdmittingDiagnosesDescription"]):
            (item,) = client.search_for_studies(search_filters={"StudyInstanceUID": STUDY_B},
                                                fields=fields)
            assert _value(item, "00081080") == ["study B diagnosis"], fields

    def test_a_study_has_no_series_or_instance_attributes(self, client) -> None:
        for fields in (["all"], ["Modality", "SOPInstanceUID", "Rows", "ImagePositionPatient",
                                 "SeriesInstanceUID", "ImageComments"]):
            (item,) = client.search_for_studies(search_filters={"StudyInstanceUID": STUDY_B},
                                                fields=fields)
            for tag in ("00080060", "00080018", "00280010", "00200032", "0020000E",
                        "00204000"):
                assert tag not in item, (fields, tag)
            assert _value(item, "00080061") == ["CT"]

    def test_a_series_has_no_instance_attributes(self, client) -> None:
        (item,) = client.search_for_series(STUDY_B, fields=["all", "SOPInstanceUID",
                                                            "ImagePositionPatient"])
        assert _value(item, "0020000E") == [SERIES_B]
        for tag in ("00080018", "00200032", "00200013"):
            assert tag not in item, tag


class TestParameters:
    def test_lower_level_key_is_a_readable_400(self, srv, client) -> None:
        r = requests.get(f"{srv.url}/dicomweb/studies", params={"SeriesDescription": "x"})
        assert r.status_code == 400
        assert "/series" in r.json()["error"]
        r = requests.get(f"{srv.url}/dicomweb/series", params={"SOPInstanceUID": SOPS_B[0]})
        assert r.status_code == 400 and "SOPInstanceUID" in r.json()["error"]
        # the same keys where they belong
        assert len(client.search_for_series(search_filters={"Modality": "MR",
                                                            "PatientID": "QA-QIDO"})) == 1
        assert len(client.search_for_instances(search_filters={"SOPInstanceUID": SOPS_B[0]})) \
            == 1

    def test_modality_at_study_level_matches_the_studies_modalities(self, srv, client) -> None:
        for modality, study in (("CT", STUDY_B), ("MR", STUDY_A)):
            found = client.search_for_studies(search_filters={"Modality": modality,
                                                              "PatientID": "QA-QIDO"})
            assert [_value(s, "0020000D") for s in found] == [[study]], modality
        assert client.search_for_studies(search_filters={"Modality": "US",
                                                         "PatientID": "QA-QIDO"}) == []

    @pytest.mark.parametrize("name", ["multiplevaluematching"])  # emptyvaluematching: performed
    def test_unsupported_matching_parameters_warn(self, srv, client, name) -> None:
        url = f"{srv.url}/dicomweb/studies"
        r = requests.get(url, params={name: "true", "PatientID": "QA-QIDO"})
        assert r.status_code == 200, r.text
        assert len(r.json()) == 2
        assert r.headers["Warning"].startswith("299 ") and name in r.headers["Warning"]
        r = requests.get(url, params={name: "false", "PatientID": "QA-QIDO"})
        assert r.status_code == 200 and "Warning" not in r.headers

    @pytest.mark.parametrize("query", ["fuzzymatching=maybe", "limit=1&limit=2",
                                       "PatientID=A&PatientID=B"])
    def test_bad_parameters_are_a_readable_400(self, srv, client, query) -> None:
        r = requests.get(f"{srv.url}/dicomweb/studies?{query}")
        assert r.status_code == 400
        assert r.json()["error"]

    def test_repeated_uid_key_is_a_uid_list(self, srv, client) -> None:
        r = requests.get(f"{srv.url}/dicomweb/studies?StudyInstanceUID={STUDY_A}"
                         f"&StudyInstanceUID={STUDY_B}")
        assert r.status_code == 200
        assert {s["0020000D"]["Value"][0] for s in r.json()} == {STUDY_A, STUDY_B}

    def test_a_study_without_modality_has_no_empty_modalities_in_study(self, srv, client
                                                                       ) -> None:
        """An empty ModalitiesInStudy ({"vr": "CS"}) made the bundled OHIF's whole study list
        fail ("Data Source Connection Error"): it is left out; the others keep theirs."""
        study = new_uid()
        ds = _instance(patient_id="QA-QIDO-NOMOD", study_uid=study)
        del ds.Modality
        client.store_instances([ds])
        r = requests.get(f"{srv.url}/dicomweb/studies?PatientID=QA-QIDO*"
                         "&includefield=ModalitiesInStudy")
        assert r.status_code == 200
        by_study = {s["0020000D"]["Value"][0]: s for s in r.json()}
        assert "00080061" not in by_study[study]
        assert by_study[STUDY_B]["00080061"] == {"vr": "CS", "Value": ["CT"]}
