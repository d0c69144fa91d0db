"""Conditions added after the QA s23 differential against dciodvfy.

* "Shall not be present otherwise" (``conditions.NOT_PRESENT_OTHERWISE``): Planar Configuration
  with Samples per Pixel 1 (PS3.3 C.7.6.3.1.3), Rescale Intercept with a Modality LUT Sequence
  (C.11.1), a Verifying Observer Sequence in an UNVERIFIED SR (C.17.2), a Code Value beside a
  Long Code Value (8.8) were silent; dciodvfy reports each as an error.
* Type 2C conditions that were not registered: X-Ray Tube Current, Exposure Time and Exposure
  in the X-Ray Acquisition Module (C.8.7.2); Patient's Sex Neutered for an animal (C.7.2.2).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from validation_cases import comprehensive_sr, ct, write

from archivist.validate import validate_dataset

XA = "1.2.840.10008.5.1.4.1.1.12.1"
CR = "1.2.840.10008.5.1.4.1.1.1"


def _found(ds: Dataset, rule: str) -> list[str]:
    return [f.path for f in validate_dataset(ds) if f.rule_id == rule]


def _exposure_missing(ds: Dataset) -> list[str]:
    return sorted(p for p in _found(ds, "iod.type2c-missing")
                  if "Exposure" in p or "XRayTubeCurrent" in p)


def _planar() -> Dataset:
    ds = ct()
    ds.PlanarConfiguration = 0
    return ds


def _cr_with_lut_and_rescale() -> Dataset:
    ds = ct()
    ds.SOPClassUID = CR
    ds.Modality = "CR"
    lut = Dataset()
    lut.LUTDescriptor = [2, 0, 16]
    lut.ModalityLUTType = "HU"
    lut.add_new(0x00283006, "US", [0, 1])
    ds.ModalityLUTSequence = Sequence([lut])
    return ds


def _sr_unverified_with_observer() -> Dataset:
    ds = comprehensive_sr()
    observer = Dataset()
    observer.VerifyingObserverName = "A^B"
    observer.VerifyingOrganization = "X"
    observer.VerificationDateTime = "20240101120000"
    observer.VerifyingObserverIdentificationCodeSequence = Sequence()
    ds.VerifyingObserverSequence = Sequence([observer])
    return ds


def _long_and_short_code() -> Dataset:
    ds = comprehensive_sr()
    ds.ConceptNameCodeSequence[0].LongCodeValue = "12345678901234567890"
    return ds


def _xa(**values: object) -> Dataset:
    ds = ct()
    ds.SOPClassUID = XA
    ds.Modality = "XA"
    for attribute in ("XRayTubeCurrent", "ExposureTime", "Exposure"):
        if attribute in ds:
            delattr(ds, attribute)
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    return ds


def _animal() -> Dataset:
    ds = ct()
    ds.PatientSpeciesDescription = "dog"
    ds.PatientBreedDescription = "beagle"
    ds.PatientBreedCodeSequence = Sequence()
    ds.BreedRegistrationSequence = Sequence()
    ds.ResponsiblePerson = "Owner^A"
    ds.ResponsiblePersonRole = "OWNER"
    ds.ResponsibleOrganization = ""
    return ds


class TestNotPresentOtherwise:
    def test_planar_configuration_with_one_sample(self) -> None:
        found = [f for f in validate_dataset(_planar()) if f.rule_id == "iod.not-allowed"]
        assert [(f.path, f.severity.value, f.reference) for f in found] == [
            ("/PlanarConfiguration(0028,0006)", "error", "PS3.3 C.7.6.3.1.3")
        ]
        assert "SamplesPerPixel > 1" in found[0].message

    def test_planar_configuration_with_three_samples_is_allowed(self) -> None:
        ds = _planar()
        ds.SamplesPerPixel = 3
        ds.PhotometricInterpretation = "RGB"
        assert _found(ds, "iod.not-allowed") == []

    def test_rescale_and_modality_lut_together(self) -> None:
        assert _found(_cr_with_lut_and_rescale(), "iod.not-allowed") == [
            "/RescaleIntercept(0028,1052)", "/ModalityLUTSequence(0028,3000)"
        ]

    def test_verifying_observer_of_an_unverified_report(self) -> None:
        assert _found(_sr_unverified_with_observer(), "iod.not-allowed") == [
            "/VerifyingObserverSequence(0040,A073)"
        ]

    def test_code_value_beside_long_code_value(self) -> None:
        assert _found(_long_and_short_code(), "iod.not-allowed") == [
            "/ConceptNameCodeSequence(0040,A043)[1]/CodeValue(0008,0100)"
        ]

    def test_valid_objects_have_none(self) -> None:
        assert _found(ct(), "iod.not-allowed") == []
        assert _found(comprehensive_sr(), "iod.not-allowed") == []


class TestType2CConditions:
    def test_xray_acquisition_all_absent(self) -> None:
        assert _exposure_missing(_xa()) == [
            "/Exposure(0018,1152)", "/ExposureTime(0018,1150)", "/XRayTubeCurrent(0018,1151)"
        ]

    def test_exposure_alone_is_enough(self) -> None:
        assert _exposure_missing(_xa(Exposure=10)) == []

    def test_tube_current_alone_needs_exposure_time(self) -> None:
        # dciodvfy: Exposure Time missing; Exposure not required while a tube current is given.
        assert _exposure_missing(_xa(XRayTubeCurrent=10)) == [
            "/ExposureTime(0018,1150)"
        ]

    def test_current_and_time(self) -> None:
        assert _exposure_missing(_xa(XRayTubeCurrent=10, ExposureTime=5)) == []

    def test_animal_needs_sex_neutered(self) -> None:
        assert _found(_animal(), "iod.type2c-missing") == ["/PatientSexNeutered(0010,2203)"]
        ds = _animal()
        ds.PatientSexNeutered = ""
        assert _found(ds, "iod.type2c-missing") == []
        assert "/PatientSexNeutered(0010,2203)" not in _found(ct(), "iod.type2c-missing")


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy not installed")
class TestAgreesWithDciodvfy:
    @pytest.mark.parametrize("build, phrase, ours_rule", [
        (_planar, "present when condition unsatisfied", "iod.not-allowed"),
        (_cr_with_lut_and_rescale, "present when condition unsatisfied", "iod.not-allowed"),
        (_sr_unverified_with_observer, "present when condition unsatisfied", "iod.not-allowed"),
        (_long_and_short_code, "present when condition unsatisfied", "iod.not-allowed"),
        (_xa, "Missing attribute for Type 2C", "iod.type2c-missing"),
        (lambda: _xa(XRayTubeCurrent=10), "Missing attribute for Type 2C", "iod.type2c-missing"),
        (_animal, "Missing attribute for Type 2C", "iod.type2c-missing"),
    ])
    def test_same_paths(self, build: object, phrase: str, ours_rule: str,
                        tmp_path: Path) -> None:
        ds = build()  # type: ignore[operator]
        ours = {p.lower() for p in _found(ds, ours_rule) if "Laterality" not in p}
        path = write(ds, tmp_path / "x.dcm")
        err = subprocess.run(["dciodvfy", "-new", str(path)], capture_output=True, text=True,
                             check=False).stderr
        theirs = {line.split("<", 1)[1].split(">", 1)[0].lower() for line in err.splitlines()
                  if line.startswith("Error") and phrase in line and "Laterality" not in line}
        assert ours and ours <= theirs
