"""Object kinds test_browser_viewer.py does not open, in the real OHIF viewer in Chromium.

One real ``archivist serve`` with the real OHIF build, one STOW-RS per study, one browser
session (``qa_viewer_kinds.mjs``):

- an enhanced CT (one multi-frame instance, functional groups) and a native RGB ultrasound cine
  show an image, and scrolling shows another frame;
- an MR in explicit VR big endian (the archive swaps its frames to little
  endian for ``application/octet-stream``) and the same MR deflated show the same picture; a
  DX in MONOCHROME1 shows an image;
- a CT series with a highdicom Segmentation and a TID 1500 Comprehensive 3D SR (one length):
  loading the SEG puts colour on the image, loading the SR shows its "44.00 mm";
- the study list shows each study with its modalities and instance count.

No answer of the server behind those pages is a 4xx or 5xx, and the viewer logs no error. As in
test_browser_viewer.py nothing skips: without the OHIF build, Chromium or Node.js the test
fails. Screenshots go to ``test-artifacts/browser/qa-kinds-*.png``.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian, generate_uid
from test_browser_viewer import ARTEFACTS, CHROMIUM, HERE, _node_modules, _stow, _tool, _viewer_dir

from archivist.testing.server import ServerProcess


def _base(sop_class: str, modality: str, label: str, study: str | None = None,
          series: str | None = None) -> Dataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = \
        f"KIND^{label}", f"QA-KIND-{label}", "19700101", "O"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study or generate_uid(), series or generate_uid()
    ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20250301", "101010", "1", ""
    ds.StudyDescription, ds.ReferringPhysicianName = f"Kind {label}", ""
    ds.SeriesDescription = f"series {label}"
    ds.Modality, ds.SeriesNumber, ds.InstanceNumber, ds.Manufacturer = modality, 1, 1, "QA"
    ds.ContentDate, ds.ContentTime = "20250301", "101010"
    return ds


def _pixels(ds: Dataset, array: np.ndarray, photometric: str = "MONOCHROME2",
            bits_stored: int | None = None) -> None:
    colour = photometric == "RGB"
    ds.SamplesPerPixel, ds.PhotometricInterpretation = (3 if colour else 1), photometric
    if colour:
        ds.PlanarConfiguration = 0
    ds.Rows, ds.Columns = array.shape[-3:-1] if colour else array.shape[-2:]
    bits = array.dtype.itemsize * 8
    ds.BitsAllocated, ds.BitsStored = bits, bits_stored or bits
    ds.HighBit, ds.PixelRepresentation = ds.BitsStored - 1, 0
    ds.PixelData = array.tobytes()


def _ball(size: int, z: float, radius: float = 24.0) -> np.ndarray:
    """CT numbers + 1024 of a slice through a ball of soft tissue with a bony core."""
    yy, xx = np.mgrid[0:size, 0:size] - size / 2
    r = np.sqrt(xx ** 2 + yy ** 2 + z ** 2)
    hu = np.where(r < radius, 40.0, -1000.0) + np.where(r < radius / 3, 760.0, 0.0)
    return (hu + 1024).astype("<u2")


def _enhanced_ct(folder: Path, frames: int = 10, size: int = 96) -> Dataset:
    """An Enhanced CT Image (PS3.3 A.38.1): one instance, a frame per slice, functional groups."""
    ds = _base("1.2.840.10008.5.1.4.1.1.2.1", "CT", "enhanced-ct")
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL", "NONE"]
    ds.NumberOfFrames, ds.FrameOfReferenceUID, ds.PositionReferenceIndicator = frames, generate_uid(), ""
    ds.ContentQualification, ds.BurnedInAnnotation = "PRODUCT", "NO"
    ds.AcquisitionDateTime = "20250301101010"
    shared = Dataset()
    orientation, measures, rescale, voi = Dataset(), Dataset(), Dataset(), Dataset()
    orientation.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    measures.PixelSpacing, measures.SliceThickness, measures.SpacingBetweenSlices = [1, 1], 2, 2
    rescale.RescaleIntercept, rescale.RescaleSlope, rescale.RescaleType = -1024, 1, "HU"
    voi.WindowCenter, voi.WindowWidth = 40, 400
    shared.PlaneOrientationSequence, shared.PixelMeasuresSequence = [orientation], [measures]
    shared.PixelValueTransformationSequence, shared.FrameVOILUTSequence = [rescale], [voi]
    ds.SharedFunctionalGroupsSequence = [shared]
    per_frame = []
    for k in range(frames):
        group, position, content = Dataset(), Dataset(), Dataset()
        position.ImagePositionPatient = [-size / 2, -size / 2, k * 2.0]
        content.StackID, content.InStackPositionNumber, content.DimensionIndexValues = "1", k + 1, [1, k + 1]
        group.PlanePositionSequence, group.FrameContentSequence = [position], [content]
        per_frame.append(group)
    ds.PerFrameFunctionalGroupsSequence = per_frame
    organisation = generate_uid()
    stack, in_stack = Dataset(), Dataset()
    stack.DimensionOrganizationUID = in_stack.DimensionOrganizationUID = organisation
    stack.DimensionIndexPointer, in_stack.DimensionIndexPointer = 0x00209056, 0x00209057
    stack.FunctionalGroupPointer = in_stack.FunctionalGroupPointer = 0x00209111
    organisation_item = Dataset()
    organisation_item.DimensionOrganizationUID = organisation
    ds.DimensionOrganizationSequence, ds.DimensionIndexSequence = [organisation_item], [stack, in_stack]
    _pixels(ds, np.stack([_ball(size, (k - frames / 2) * 2.0 + 4) for k in range(frames)]),
            bits_stored=12)
    ds.save_as(folder / "enhanced-ct.dcm", enforce_file_format=True)
    return ds


def _us_cine(folder: Path, frames: int = 8) -> Dataset:
    """A native RGB ultrasound cine: a coloured square moving over a colour gradient."""
    ds = _base("1.2.840.10008.5.1.4.1.1.3.1", "US", "us-rgb-cine")
    array = np.zeros((frames, 120, 160, 3), np.uint8)
    array[..., 0] = np.arange(160, dtype=np.uint8)[None, None, :]
    array[..., 1] = np.arange(120, dtype=np.uint8)[None, :, None] * 2
    for f in range(frames):
        array[f, 30:60, 10 + f * 15:40 + f * 15] = (255, 255, 0)
    ds.NumberOfFrames, ds.FrameIncrementPointer, ds.FrameTime = frames, 0x00181063, 40
    _pixels(ds, array, "RGB")
    ds.save_as(folder / "us-rgb-cine.dcm", enforce_file_format=True)
    return ds


def _dx_monochrome1(folder: Path) -> Dataset:
    ds = _base("1.2.840.10008.5.1.4.1.1.1.1", "DX", "dx-mono1")
    ds.ImageType, ds.PresentationIntentType = ["ORIGINAL", "PRIMARY"], "FOR PRESENTATION"
    ds.PixelIntensityRelationship, ds.PixelIntensityRelationshipSign = "LOG", -1
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = 0, 1, "US"
    ds.WindowCenter, ds.WindowWidth = 2000, 3600
    yy, xx = np.mgrid[0:320, 0:256]
    _pixels(ds, (200 + 3600 * (0.5 + 0.5 * np.cos(np.hypot(yy - 160, xx - 128) / 12))).astype("<u2"),
            "MONOCHROME1", bits_stored=12)
    ds.save_as(folder / "dx-mono1.dcm", enforce_file_format=True)
    return ds


def _re_encoded(folder: Path, label: str, source: Dataset, transfer_syntax: str) -> Dataset:
    """`source` again, as a study of its own, in another uncompressed transfer syntax."""
    ds = _base(source.SOPClassUID, source.Modality, label)
    for keyword in ("ImageType", "PixelSpacing", "WindowCenter", "WindowWidth",
                    "RescaleIntercept", "RescaleSlope"):
        if keyword in source:
            setattr(ds, keyword, source.data_element(keyword).value)
    big = transfer_syntax == ExplicitVRBigEndian
    _pixels(ds, source.pixel_array.astype(">u2" if big else "<u2"))  # bytes are written as given
    ds.file_meta.TransferSyntaxUID = transfer_syntax
    ds.save_as(folder / f"{label}.dcm", enforce_file_format=True)
    return ds


def _ct_with_seg_and_sr(folder: Path, slices: int = 8, size: int = 64) -> tuple[Dataset, list[Path]]:
    """A CT series, a highdicom Segmentation of its core and a TID 1500 SR with one length."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    study, series, frame_of_reference = generate_uid(), generate_uid(), generate_uid()
    paths, cts = [], []
    for k in range(slices):
        ds = _base("1.2.840.10008.5.1.4.1.1.2", "CT", "ct-seg-sr", study, series)
        ds.InstanceNumber, ds.ImageType = k + 1, ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.FrameOfReferenceUID, ds.PositionReferenceIndicator = frame_of_reference, ""
        ds.PatientPosition, ds.KVP, ds.AcquisitionNumber = "HFS", "", 1
        ds.ImagePositionPatient = [-size / 2, -size / 2, k * 2.0]
        ds.ImageOrientationPatient, ds.PixelSpacing, ds.SliceThickness = [1, 0, 0, 0, 1, 0], [1, 1], 2
        ds.RescaleIntercept, ds.RescaleSlope, ds.WindowCenter, ds.WindowWidth = -1024, 1, 40, 400
        _pixels(ds, _ball(size, (k - slices / 2) * 2.0))
        path = folder / f"ct-{k}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
        cts.append(pydicom.dcmread(path))
    yy, xx = np.mgrid[0:size, 0:size] - size / 2
    mask = np.stack([np.sqrt(xx ** 2 + yy ** 2 + ((k - slices / 2) * 2.0) ** 2) < 12
                     for k in range(slices)]).astype(np.uint8)
    segment = hd.seg.SegmentDescription(
        segment_number=1, segment_label="Core", segmented_property_category=codes.SCT.Tissue,
        segmented_property_type=codes.SCT.Bone,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL)
    seg = hd.seg.Segmentation(
        source_images=cts, pixel_array=mask, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[segment], series_instance_uid=generate_uid(), series_number=2,
        sop_instance_uid=generate_uid(), instance_number=1, manufacturer="QA",
        manufacturer_model_name="qa", software_versions="1", device_serial_number="1")
    seg.SeriesDescription = "SEG core"
    seg.save_as(folder / "seg.dcm")
    middle = cts[slices // 2]
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Person,
        observer_identifying_attributes=hd.sr.PersonObserverIdentifyingAttributes(name="QA^Reader"))
    region = hd.sr.ImageRegion(
        graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
        graphic_data=np.array([[10.0, 32.0], [54.0, 32.0]]),
        source_image=hd.sr.SourceImageForRegion(
            referenced_sop_class_uid=middle.SOPClassUID,
            referenced_sop_instance_uid=middle.SOPInstanceUID))
    group = hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=generate_uid(), identifier="Length1"),
        referenced_region=region, finding_type=codes.SCT.Lesion,
        measurements=[hd.sr.Measurement(name=codes.SCT.Length, value=44.0,
                                        unit=codes.UCUM.Millimeter)])
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_person_context=observer),
        procedure_reported=codes.LN.CTUnspecifiedBodyRegion, imaging_measurements=[group])
    sr = hd.sr.Comprehensive3DSR(
        evidence=[middle], content=report[0], series_number=3, series_instance_uid=generate_uid(),
        sop_instance_uid=generate_uid(), instance_number=1, manufacturer="QA",
        is_complete=True, is_final=True)
    sr.SeriesDescription = "SR length"
    sr.save_as(folder / "sr.dcm")
    return cts[0], [*paths, folder / "seg.dcm", folder / "sr.dcm"]


@pytest.mark.slow  # coverage of ~30 object kinds in OHIF (~40 s); CI's 20 minutes are near
@pytest.mark.timeout(600)
def test_more_object_kinds_in_the_viewer(tmp_path: Path) -> None:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is required (apt-get install chromium; .ci/run does it)")
    viewer_dir = _viewer_dir()
    _node_modules()

    enhanced = _enhanced_ct(tmp_path)
    cine = _us_cine(tmp_path)
    dx = _dx_monochrome1(tmp_path)
    mr = pydicom.dcmread(pydicom.data.get_testdata_file("MR_small.dcm"))
    big_endian = _re_encoded(tmp_path, "mr-big-endian", mr, ExplicitVRBigEndian)
    deflated = _re_encoded(tmp_path, "mr-deflated", mr, DeflatedExplicitVRLittleEndian)
    (tmp_path / "ct-seg-sr").mkdir()
    ct, ct_files = _ct_with_seg_and_sr(tmp_path / "ct-seg-sr")

    server = ServerProcess(tmp_path / "data", env={"ARCHIVIST_VIEWER_DIR": str(viewer_dir)})
    server.start()
    try:
        for ds, label in ((enhanced, "enhanced-ct"), (cine, "us-rgb-cine"), (dx, "dx-mono1"),
                          (big_endian, "mr-big-endian"), (deflated, "mr-deflated")):
            _stow(server.url, tmp_path / f"{label}.dcm")
        _stow(server.url, *ct_files)

        ARTEFACTS.mkdir(parents=True, exist_ok=True)
        studies = {"enhanced-ct": enhanced, "us-rgb-cine": cine, "dx-mono1": dx,
                   "mr-big-endian": big_endian, "mr-deflated": deflated, "ct-seg-sr": ct}
        spec = {
            "baseUrl": server.url, "artefacts": str(ARTEFACTS),
            "markers": [f"KIND, {label}" for label in studies],
            "open": [
                {"name": "enhanced-ct", "studyUid": str(enhanced.StudyInstanceUID), "scroll": 3},
                {"name": "us-rgb-cine", "studyUid": str(cine.StudyInstanceUID), "scroll": 2},
                {"name": "dx-mono1", "studyUid": str(dx.StudyInstanceUID)},
                {"name": "mr-big-endian", "studyUid": str(big_endian.StudyInstanceUID)},
                {"name": "mr-deflated", "studyUid": str(deflated.StudyInstanceUID)},
                {"name": "ct-seg-sr", "studyUid": str(ct.StudyInstanceUID),
                 "load": [{"series": "SEG core"}, {"series": "SR length", "expect": "44.00 mm"}]},
            ],
        }
        run = subprocess.run([_tool("node"), str(HERE / "qa_viewer_kinds.mjs"), json.dumps(spec)],
                             cwd=HERE, check=False, capture_output=True, text=True, timeout=400,
                             env={**os.environ, "CHROMIUM": CHROMIUM})
        (ARTEFACTS / "qa-kinds-node-stderr.txt").write_text(run.stderr)
        assert run.returncode == 0, f"qa_viewer_kinds.mjs failed:\n{run.stderr[-4000:]}"
        results = json.loads(run.stdout.strip().splitlines()[-1])
        (ARTEFACTS / "qa-kinds-results.json").write_text(json.dumps(results, indent=2))

        # The study list: each study, its modalities and its number of instances.
        rows = results["list"]
        assert set(rows) == set(spec["markers"]), rows
        assert "Kind enhanced-ct" in rows["KIND, enhanced-ct"] and "CT" in rows["KIND, enhanced-ct"]
        assert "DX" in rows["KIND, dx-mono1"] and "US" in rows["KIND, us-rgb-cine"], rows
        seg_sr = rows["KIND, ct-seg-sr"]
        assert "10" in seg_sr, seg_sr  # 8 CT slices, the SEG and the SR
        assert any(set(cell.replace("/", "\\").split("\\")) == {"CT", "SEG", "SR"}
                   for cell in seg_sr), seg_sr

        opened = {s["name"]: s for s in results["studies"]}
        for name in studies:
            assert opened[name]["shown"], opened[name]
        assert max(c["colour"] for c in opened["us-rgb-cine"]["samples"]) > 0.2, opened["us-rgb-cine"]
        for name in ("enhanced-ct", "us-rgb-cine"):
            assert opened[name]["scrolled"] == {"changed": True, "shown": True}, opened[name]
        # The same MR pixels, stored big endian and deflated, are the same picture on the canvas.
        assert [c["sum"] for c in opened["mr-big-endian"]["samples"]] == \
            [c["sum"] for c in opened["mr-deflated"]["samples"]], opened
        seg, sr = opened["ct-seg-sr"]["loaded"]
        assert seg["colour"] > 0.002, seg  # the segment is drawn in colour over the grey CT
        assert sr["expectSeen"], sr

        assert results["failedRequests"] == [], results["failedRequests"]
        assert results["consoleErrors"] == [], results["consoleErrors"]
    finally:
        server.stop()
