"""Search quality and speed (archivist.terminology.search)."""

from __future__ import annotations

import time

import pytest

from archivist import terminology

# (query, expected SCHEME:VALUE in the top 3). Real queries as people type them: anatomy,
# procedures, findings, units, typos, partial words, code values, keywords, accents, word order.
QUALITY = [
    # anatomy
    ("liver", "SCT:10200004"),
    ("LIVER", "SCT:10200004"),
    ("kidney", "SCT:64033007"),
    ("lung", "SCT:39607008"),
    ("heart", "SCT:80891009"),
    ("brain", "SCT:12738006"),
    ("chest", "SCT:816094009"),
    ("abdomen", "SCT:818981001"),
    ("abdomen pelvis", "SCT:818982008"),
    ("pelvis abdomen", "SCT:818982008"),
    ("abdomen and pelvis", "SCT:818982008"),
    ("knee", "SCT:72696002"),
    ("femur", "SCT:71341001"),
    ("spleen", "SCT:78961009"),
    ("pancreas", "SCT:15776009"),
    ("prostate", "SCT:41216001"),
    ("thyroid", "SCT:69748006"),
    ("breast", "SCT:76752008"),
    ("aorta", "SCT:15825003"),
    ("lymph node", "SCT:59441001"),
    # procedures and modalities
    ("mammography", "SCT:71651007"),
    ("computed tomography", "DCM:CT"),
    ("magnetic resonance", "DCM:MR"),
    ("positron emission tomography", "DCM:PT"),
    ("ultrasound", "DCM:US"),
    ("biopsy", "SCT:86273004"),
    # findings
    ("pneumothorax", "SCT:36118008"),
    ("hemorrhage", "SCT:50960005"),
    ("pulmonary embolism", "SCT:59282003"),
    ("embolism pulmonary", "SCT:59282003"),
    ("pleural effusion", "SCT:60046008"),
    ("nodule", "SCT:27925004"),
    ("cyst", "SCT:367643001"),
    ("edema", "SCT:79654002"),
    ("metastasis", "SCT:128462008"),
    ("stenosis", "SCT:44241007"),
    ("glioblastoma", "SCT:1163375002"),
    # units
    ("mm", "UCUM:mm"),
    ("millimeter", "UCUM:mm"),
    ("hounsfield unit", "UCUM:[hnsf'U]"),
    ("becquerels per milliliter", "UCUM:Bq/ml"),
    ("degrees celsius", "UCUM:Cel"),
    ("second", "UCUM:s"),
    # typos
    ("pnemothorax", "SCT:36118008"),
    ("hemorhage", "SCT:50960005"),
    ("haemorrhage", "SCT:50960005"),
    ("abdomn", "SCT:818981001"),
    ("brest", "SCT:76752008"),
    ("kidny", "SCT:64033007"),
    ("stenossis", "SCT:44241007"),
    # words typed without their space
    ("abdomenpelvis", "SCT:818982008"),
    ("xray angiography", "DCM:XA"),
    # partial words
    ("pneumo", "SCT:36118008"),
    ("pnemo", "SCT:36118008"),
    ("liv", "SCT:10200004"),
    ("pancr", "SCT:15776009"),
    ("glioblast", "SCT:1163375002"),
    # accents and case
    ("Hémorrhage", "SCT:50960005"),
    ("PNEUMOTHORAX", "SCT:36118008"),
    # code values, SCHEME:VALUE, retired SNOMED-RT values, keywords
    ("36118008", "SCT:36118008"),
    ("10200004", "SCT:10200004"),
    ("SCT:10200004", "SCT:10200004"),
    ("T-62000", "SCT:10200004"),
    ("t-62000", "SCT:10200004"),
    ("D2-80300", "SCT:36118008"),
    ("121071", "DCM:121071"),
    ("Liver", "SCT:10200004"),
    ("AbdomenAndPelvis", "SCT:818982008"),
    ("LiverStructure", "SCT:10200004"),
]


@pytest.fixture(scope="module")
def index() -> terminology.SearchIndex:
    return terminology.search_index()


class TestSearchQuality:
    @pytest.mark.parametrize(("query", "expected"), QUALITY, ids=[q for q, _ in QUALITY])
    def test_expected_code_in_top_3(self, query: str, expected: str) -> None:
        keys = [hit.concept.key for hit in terminology.search(query, limit=3)]
        assert expected in keys, f"{query!r}: {keys}"

    def test_table_is_large_enough(self) -> None:
        assert len(QUALITY) >= 40

    def test_exact_meaning_beats_partial(self) -> None:
        hits = terminology.search("Liver", limit=5)
        assert hits[0].concept.key == "SCT:10200004"
        assert hits[0].score > hits[1].score

    def test_code_value_ranks_first(self) -> None:
        assert terminology.search("36118008")[0].concept.meaning == "Pneumothorax"

    def test_word_order_is_free(self) -> None:
        a = [h.concept.key for h in terminology.search("abdomen pelvis", limit=5)]
        b = [h.concept.key for h in terminology.search("pelvis abdomen", limit=5)]
        assert a[0] == b[0] == "SCT:818982008"

    def test_results_are_sorted_best_first(self) -> None:
        hits = terminology.search("left ventricle", limit=20)
        assert hits[0].concept.meaning.lower() == "left ventricle"

    def test_long_queries_are_cut(self) -> None:
        terminology.search("liver")  # the tables loaded: the time below is the query's alone
        start = time.perf_counter()
        hits = terminology.search("pneumothorax " + "abcdefgh " * 500, limit=3)
        assert time.perf_counter() - start < 1.0
        assert hits[0].concept.key == "SCT:36118008"

    def test_empty_and_nonsense_queries(self) -> None:
        assert terminology.search("") == []
        assert terminology.search("   ") == []
        assert terminology.search("zzqxqzzq") == []


class TestSearchFilters:
    def test_scheme_filter(self) -> None:
        hits = terminology.search("mammography", scheme="DCM", limit=5)
        assert hits and all(h.concept.scheme == "DCM" for h in hits)

    def test_scheme_filter_is_case_insensitive_and_srt_means_sct(self) -> None:
        assert terminology.search("liver", scheme="sct")[0].concept.key == "SCT:10200004"
        assert terminology.search("liver", scheme="SRT")[0].concept.key == "SCT:10200004"

    def test_cid_filter(self) -> None:
        hits = terminology.search("liv", cid=4, limit=0)
        assert [h.concept.key for h in hits] == ["SCT:10200004", "SCT:303270005"]
        assert all(4 in h.concept.cids for h in hits)

    def test_limit(self) -> None:
        assert len(terminology.search("left", limit=7)) == 7
        assert len(terminology.search("left", limit=0)) > 100

    def test_hit_to_dict(self) -> None:
        data = terminology.search("pneumothorax")[0].to_dict()
        assert data["scheme"] == "SCT" and data["value"] == "36118008"
        assert data["cids"] == [6062, 6102, 6105]
        assert data["srt"] == "D2-80300"
        assert data["score"] > 0
