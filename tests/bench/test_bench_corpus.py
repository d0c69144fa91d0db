"""The benchmark corpus: deterministic, the sizes the issue asks for, and query answers that
follow from the study numbers alone."""

import hashlib
from collections import Counter
from io import BytesIO
from pathlib import Path

import pydicom
import pytest
from bench.corpus import (
    FAMILIES,
    STOW_SAMPLES,
    CorpusSpec,
    expected_matches,
    load_or_generate,
    moved_uids,
    population,
    stow_sample,
    study_meta,
    study_queries,
)
from pydicom.uid import UID

SMALL = CorpusSpec(ct_studies=2, ct_series=2, ct_per_series=2, tiny_studies=6, tiny_per_study=3,
                   big_mb=2)


def _digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*.dcm"))}


@pytest.fixture(scope="module")
def corpora(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    a = load_or_generate(tmp_path_factory.mktemp("a"), SMALL, workers=1, log=lambda m: None)
    b = load_or_generate(tmp_path_factory.mktemp("b"), SMALL, workers=2, log=lambda m: None)
    return a, b


class TestGeneration:
    def test_same_spec_gives_identical_bytes(self, corpora) -> None:  # type: ignore[no-untyped-def]
        a, b = corpora
        da, db = _digests(a.root), _digests(b.root)
        assert da and da == db

    def test_counts(self, corpora) -> None:  # type: ignore[no-untyped-def]
        a, _ = corpora
        assert len(a.sets["ct"].files) == SMALL.ct_instances == 8
        assert len(a.sets["tiny"].files) == SMALL.tiny_instances == 18
        assert len(a.sets["stow"].files) == SMALL.ct_series * SMALL.ct_per_series
        assert len(a.sets["big"].files) == 1

    def test_sizes(self, corpora) -> None:  # type: ignore[no-untyped-def]
        a, _ = corpora
        ct = [p.stat().st_size for p in a.paths("ct")]
        assert all(512 * 512 * 2 < s < 512 * 512 * 2 + 3000 for s in ct)  # about 513 KiB
        tiny = [p.stat().st_size for p in a.paths("tiny")]
        assert all(1000 < s < 2000 for s in tiny)  # about 1.5 KB
        assert sum(ct) == a.sets["ct"].bytes
        big = a.paths("big")[0].stat().st_size
        assert 2_000_000 <= big < 2_000_000 + 512 * 512 * 2 + 3000

    def test_files_are_valid_and_identifiers_follow_the_numbering(self, corpora) -> None:  # type: ignore[no-untyped-def]
        a, _ = corpora
        sops = set()
        for path in a.paths("ct") + a.paths("tiny") + a.paths("big"):
            ds = pydicom.dcmread(path)
            assert UID(ds.SOPInstanceUID).is_valid and UID(ds.StudyInstanceUID).is_valid
            assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
            g = int(ds.StudyID)
            meta = study_meta(g, "ct" if ds.Modality == "CT" else
                              "tiny" if ds.Modality == "MR" else "big")
            assert (ds.StudyInstanceUID, ds.PatientID, str(ds.PatientName), ds.StudyDate) == (
                meta.study_uid, meta.patient_id, meta.patient_name, meta.study_date)
            sops.add(ds.SOPInstanceUID)
        assert len(sops) == 8 + 18 + 1
        big = pydicom.dcmread(a.paths("big")[0], stop_before_pixels=True)
        assert int(big.NumberOfFrames) == 4  # ceil(2,000,000 / 524,288)

    def test_stow_samples_are_new_instances_of_the_same_bytes_otherwise(self, corpora) -> None:  # type: ignore[no-untyped-def]
        a, _ = corpora
        keys = ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID")
        seen: set[str] = set()
        for path in a.paths("stow"):
            data = path.read_bytes()
            original = pydicom.dcmread(path)
            assert stow_sample(data, 0) is data
            for sample in range(1, STOW_SAMPLES):
                changed = stow_sample(data, sample)
                assert len(changed) == len(data)
                ds = pydicom.dcmread(BytesIO(changed))
                assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
                for key in keys:
                    assert UID(ds[key].value).is_valid
                    assert ds[key].value != original[key].value
                    assert len(ds[key].value) == len(original[key].value)
                assert ds.PixelData == original.PixelData
                assert ds.PatientID == original.PatientID
                seen.add(ds.SOPInstanceUID)
            seen.add(original.SOPInstanceUID)
        assert len(seen) == len(a.paths("stow")) * STOW_SAMPLES
        with pytest.raises(ValueError):
            stow_sample(data, STOW_SAMPLES)
        with pytest.raises(ValueError):
            stow_sample(a.paths("ct")[0].read_bytes(), 1)

    def test_tiny_objects_under_new_uids(self, corpora) -> None:  # type: ignore[no-untyped-def]
        # The stock-storescu row stores tiny objects no other row stores.
        a, _ = corpora
        path = a.paths("tiny")[0]
        data, original = path.read_bytes(), pydicom.dcmread(path)
        ds = pydicom.dcmread(BytesIO(moved_uids(data, "tiny", STOW_SAMPLES - 1)))
        for key in ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"):
            assert UID(ds[key].value).is_valid and ds[key].value != original[key].value
        assert ds.PixelData == original.PixelData
        with pytest.raises(ValueError):
            moved_uids(data, "ct", 1)

    def test_cached_set_is_reused(self, corpora, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
        a, _ = corpora
        messages: list[str] = []
        again = load_or_generate(a.root.parent, SMALL, workers=1, log=messages.append)
        assert messages == [] and again.sets["ct"].files == a.sets["ct"].files


class TestQueries:
    def test_patients_have_two_studies(self) -> None:
        studies = population(CorpusSpec())
        per_patient = Counter(s.patient_id for s in studies)
        assert set(per_patient.values()) == {2}
        assert len(studies) == 490

    def test_no_family_name_is_a_prefix_of_another(self) -> None:
        for a in FAMILIES:
            assert [b for b in FAMILIES if b.startswith(a)] == [a]

    def test_dates_cover_ten_years(self) -> None:
        years = Counter(s.study_date[:4] for s in population(CorpusSpec()))
        assert sorted(years) == [str(y) for y in range(2015, 2025)]

    def test_expected_counts(self) -> None:
        studies = population(CorpusSpec())
        by_family = [expected_matches(studies, {"PatientName": f + "*"}) for f in FAMILIES]
        assert sum(by_family) == len(studies)
        by_year = [expected_matches(studies, {"StudyDate": f"{y}0101-{y}1231"})
                   for y in range(2015, 2025)]
        assert sum(by_year) == len(studies)
        assert expected_matches(studies, {"PatientID": studies[0].patient_id}) == 2
        assert expected_matches(studies, {"PatientName": "chavez*"}) == by_family[2]
        assert expected_matches(studies, {}) == len(studies)

    def test_study_queries(self) -> None:
        studies = population(CorpusSpec.quick())
        qs = study_queries(studies, per_kind=5, broad=2)
        assert [len(v) for v in qs.values()] == [5, 5, 5, 2]
        assert all(q.expected == 2 for q in qs["patient_id_exact"])
        assert qs["all_studies"][0].expected == len(studies) == 61

    def test_scale_population_continues_the_numbering(self) -> None:
        spec = CorpusSpec.quick()
        studies = population(spec, scale=95)
        assert len(studies) == 61 + 10
        assert len({s.study_uid for s in studies}) == len(studies)
