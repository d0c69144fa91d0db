"""Query by code, QA round 4 (codes2): the Anatomic Region of a Segmentation's segments.

A Segmentation (highdicom, dcmqi, TotalSegmentator) carries its anatomy only in the Anatomic
Region Sequence of each Segment Sequence item (PS3.3 C.8.20.2), as an enhanced image carries it
in Frame Anatomy. Issue 6 names the Anatomic Region Sequence; a query on it did not find the
segmentation at all. Now the segments' regions are indexed like the frames' (each distinct code
once, as stored, retired SNOMED matched through its SCT code).

The object is made with highdicom and sent with dicomweb-client (STOW-RS); it is asked for
with QIDO-RS (dicomweb-client) and C-FIND (pynetdicom).
"""

from __future__ import annotations

from collections.abc import Iterator

import highdicom as hd
import numpy as np
import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient
from highdicom.sr import CodedConcept
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind as FIND

from archivist.archive.coded import extract_codes
from archivist.testing.datasets import code_item as code
from archivist.testing.datasets import make_instance, new_uid
from archivist.testing.server import ServerProcess

ARS = "AnatomicRegionSequence"


def segmentation(source: Dataset) -> Dataset:
    """Two segments: liver (anatomy coded SRT T-62000) and kidney (SCT 64033007)."""
    mask = np.zeros((1, source.Rows, source.Columns), dtype=np.uint8)
    mask[0, :2, :2] = 1
    mask[0, 2:, 2:] = 2
    tissue = CodedConcept("85756007", "SCT", "Tissue")
    segments = [
        hd.seg.SegmentDescription(
            segment_number=n, segment_label=label, segmented_property_category=tissue,
            segmented_property_type=CodedConcept(*prop),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
            anatomic_regions=[CodedConcept(*region)])
        for n, label, prop, region in (
            (1, "liver", ("10200004", "SCT", "Liver"), ("T-62000", "SRT", "Liver")),
            (2, "kidney", ("64033007", "SCT", "Kidney"), ("64033007", "SCT", "Kidney")))]
    return hd.seg.Segmentation(
        source_images=[source], pixel_array=mask,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY, segment_descriptions=segments,
        series_instance_uid=new_uid(), series_number=2, sop_instance_uid=new_uid(),
        instance_number=1, manufacturer="QA", manufacturer_model_name="QA",
        software_versions="1", device_serial_number="1")


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, str]]:
    root = tmp_path_factory.mktemp("codes2seg")
    study = new_uid()
    make_instance(root / "mr.dcm", study_uid=study, patient_id="QA-SEG", modality="MR",
                  sop_class_uid="1.2.840.10008.5.1.4.1.1.4", extra={
                      "ImageOrientationPatient": [1, 0, 0, 0, 1, 0],
                      "ImagePositionPatient": [0, 0, 0], "PixelSpacing": [1, 1],
                      "SliceThickness": 1, "FrameOfReferenceUID": new_uid()})
    seg = segmentation(pydicom.dcmread(root / "mr.dcm"))
    srv = ServerProcess(root / "data").start()
    try:
        DICOMwebClient(f"{srv.url}/dicomweb").store_instances([seg])
        yield srv, study
    finally:
        srv.stop()


def qido(srv: ServerProcess, level: str, **filters: str) -> list[dict]:
    client = DICOMwebClient(f"{srv.url}/dicomweb")
    search = {"studies": client.search_for_studies, "instances": client.search_for_instances}
    return search[level](search_filters=filters, fields=[ARS])


def cfind(srv: ServerProcess, value: str, scheme: str) -> list[str]:
    ae = AE(ae_title="QA")
    ae.add_requested_context(FIND)
    assoc = ae.associate("127.0.0.1", srv.dicom_port, ae_title="ARCHIVIST")
    assert assoc.is_established
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyInstanceUID = ""
    identifier.AnatomicRegionSequence = [code(value, scheme, "")]
    found = []
    try:
        for status, ds in assoc.send_c_find(identifier, FIND):
            assert status.Status in (0x0000, 0xFF00, 0xFF01), hex(status.Status)
            if ds is not None and status.Status in (0xFF00, 0xFF01):
                found.append(str(ds.StudyInstanceUID))
    finally:
        assoc.release()
    return found


def test_each_segments_region_is_found(stored: tuple[ServerProcess, str]) -> None:
    srv, study = stored
    for value, scheme in (("10200004", "SCT"), ("T-6200*", "SRT"), ("64033007", "SCT")):
        found = qido(srv, "studies", **{f"{ARS}.CodeValue": value,
                                         f"{ARS}.CodingSchemeDesignator": scheme})
        assert [r["0020000D"]["Value"][0] for r in found] == [study], (value, scheme)
        assert cfind(srv, value, scheme) == [study]
    # The regions come back as the segments have them (not the property types).
    (seg,) = qido(srv, "instances", **{f"{ARS}.CodeMeaning": "Kid*"})
    assert sorted((i["00080100"]["Value"][0], i["00080102"]["Value"][0])
                  for i in seg["00082218"]["Value"]) == [("64033007", "SCT"), ("T-62000", "SRT")]


def test_extract_many_segments_capped() -> None:
    ds = Dataset()
    items = []
    for n in range(300):
        segment = Dataset()
        segment.SegmentNumber = n + 1
        segment.AnatomicRegionSequence = [code(f"R{n % 80}", "99QA", "Region")]
        items.append(segment)
    ds.SegmentSequence = items
    rows = extract_codes(ds)
    assert len(rows) == 64
    assert {r.attribute for r in rows} == {ARS}
