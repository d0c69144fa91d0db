"""Found by black-box QA of the terminology itself (round 5): searches filtered by scheme or
context group, or asking for every result, lost matches; plural and British forms of a word
found nothing or the wrong code; a UCUM unit that is not valid UCUM was reported like a valid
one; look-ups in the wrong scheme and bad search parameters said too little."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from pydicom.dataset import Dataset
from starlette.applications import Starlette

from archivist import terminology
from archivist.terminology.findings import FindingKind, Severity
from archivist.terminology.text import fold
from archivist.terminology.ucum import ucum_error
from archivist.web.codes import routes


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    """The terminology routes on a real uvicorn, on a free local port."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = uvicorn.Config(Starlette(routes=routes()), host="127.0.0.1", port=port,
                            log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def get(base_url: str, path: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(base_url + path, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "archivist.cli.main", "codes", *args],
        check=False, capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )


def with_word(word: str, cid: int | None = None, scheme: str | None = None) -> set[str]:
    """The keys of every concept with `word` in one of its meanings (the expected answer of
    a search for that word with no limit), computed from the tables directly."""
    term = terminology.default_terminology()
    keys = set()
    for concept in term:
        if cid is not None and cid not in concept.cids:
            continue
        if scheme is not None and concept.scheme != scheme:
            continue
        if any(word in fold(m).split() for m in concept.meanings):
            keys.add(concept.key)
    return keys


def found(query: str, **options: Any) -> set[str]:
    return {h.concept.key for h in terminology.search(query, limit=0, **options)}


class TestFilteredAndUnlimitedSearch:
    """The word ranking kept only the best 400 meaning forms, and the scheme or CID filter was
    applied after that cut: `codes cid 12300 --search left` listed 9 of its 68 members with
    "left", `search("structure", cid=4)` 133 of 299, and `limit=0` ("all") was 400 at most."""

    @pytest.mark.parametrize(("word", "cid"), [
        ("left", 12300), ("structure", 4), ("structure", 7151), ("left", 7192), ("of", 4),
    ])
    def test_cid_filter_keeps_every_match(self, word: str, cid: int) -> None:
        expected = with_word(word, cid=cid)
        assert expected <= found(word, cid=cid)

    @pytest.mark.parametrize(("word", "scheme"), [("left", "LN"), ("left", "MDC")])
    def test_scheme_filter_keeps_every_match(self, word: str, scheme: str) -> None:
        assert with_word(word, scheme=scheme) <= found(word, scheme=scheme)

    @pytest.mark.parametrize("word", ["left", "structure", "right"])
    def test_limit_zero_is_everything(self, word: str) -> None:
        assert with_word(word) <= found(word)

    def test_limit_above_400_is_honoured(self) -> None:
        assert len(terminology.search("structure", limit=900)) == 900

    def test_cid_search_on_the_command_line(self) -> None:
        out = run("cid", "12300", "--search", "left", "--json")
        assert out.returncode == 0, out.stderr
        keys = {f"{m['scheme']}:{m['value']}" for m in json.loads(out.stdout)["members"]}
        assert with_word("left", cid=12300) <= keys

    def test_cid_search_over_http(self, base_url: str) -> None:
        status, body = get(base_url, "/api/cids/4?search=structure")
        assert status == 200
        keys = {f"{m['scheme']}:{m['value']}" for m in body["members"]}
        assert with_word("structure", cid=4) <= keys


class TestWordForms:
    """A plural found nothing ("ovaries", "tumours"), or not the singular concept ("lungs" gave
    one DCM code, "masses" "Number of passes", "bodies" "Bos"); British spellings that are the
    prefix of some word ("colour") never reached the American one."""

    @pytest.mark.parametrize(("query", "expected"), [
        ("lungs", "SCT:39607008"),
        ("ovaries", "SCT:15497006"),
        ("masses", "SCT:4147007"),
        ("lesions", "SCT:52988006"),
        ("nodules", "SCT:27925004"),
        ("kidneys", "SCT:64033007"),
        ("arteries", "SCT:51114001"),
        ("vertebrae", "SCT:51282000"),
        ("bronchi", "SCT:955009"),
        ("metastases", "SCT:128462008"),
        ("feet", "SCT:56459004"),
        ("teeth", "SCT:38199008"),
        ("Lymph nodes", "SCT:59441001"),
        ("tumours", "SCT:108369006"),
        ("tumour", "SCT:108369006"),
        ("haemorrhages", "SCT:50960005"),
        ("oedema", "SCT:79654002"),
        ("oesophagus", "SCT:32849002"),
        ("paediatric radiology", "DCM:128177"),
        ("colour flow doppler", "DCM:CD"),
        ("millimetre", "UCUM:mm"),
        ("centre", "DCM:111010"),
        # A SNOMED CT Fully Specified Name equals the query but for its semantic tag.
        ("body mass index", "SCT:60621009"),
        ("glomerular filtration rate", "SCT:80274001"),
    ])
    def test_first(self, query: str, expected: str) -> None:
        hits = terminology.search(query, limit=3)
        assert hits and hits[0].concept.key == expected, [h.concept.key for h in hits]

    def test_singular_still_first_for_its_exact_meaning(self) -> None:
        assert terminology.search("lung", limit=1)[0].concept.key == "SCT:39607008"
        assert terminology.search("four chamber", limit=1)[0].concept.key == "SCT:399214001"


class TestCodeValues:
    def test_the_value_as_typed_comes_first(self) -> None:
        # UCUM ms (millisecond) and DCM MS (MR spectroscopy) were tied, DCM first.
        assert terminology.search("ms", limit=1)[0].concept.key == "UCUM:ms"
        assert terminology.search("MS", limit=1)[0].concept.key == "DCM:MS"

    @pytest.mark.parametrize("query", ["\u00b5m", "\u03bcm"])
    def test_micro_sign(self, query: str) -> None:
        assert terminology.search(query, limit=1)[0].concept.key == "UCUM:um"


class TestUcum:
    @pytest.mark.parametrize("unit", [
        "mm", "mm2", "mg/dL", "{ratio}", "10*3/uL", "10^3", "mm[Hg]", "[hnsf'U]", "1", "/min",
        "{beats}/min", "kg/m2", "mL", "ml", "mL/min/{1.73_m2}", "mg/(24.h)", "dyn.s.cm-5/m2",
        "kBq/mL", "[iU]/L", "daL", "10*-3", "B[10.nV]", "cm[H2O]", "%", "g/(8.h){shift}", "dB",
    ])
    def test_valid(self, unit: str) -> None:
        assert ucum_error(unit) is None

    @pytest.mark.parametrize("unit", [
        "MM3", "mmm", "", "(", "mm)", "m//s", "m.", "/", "m2{a b}", "\u00b5m", "mm 2", "m-",
        "kmin", "[in_i", "MG/DL",
    ])
    def test_invalid(self, unit: str) -> None:
        assert ucum_error(unit) is not None

    def test_check_tells_valid_from_invalid(self) -> None:
        def unit(value: str) -> Dataset:
            item = Dataset()
            item.CodeValue = value
            item.CodingSchemeDesignator = "UCUM"
            item.CodeMeaning = value
            return item

        ds = Dataset()
        ds.MeasurementUnitsCodeSequence = [unit("mg/dL"), unit("MM3"), unit("mmm")]
        findings = terminology.check_dataset(ds)
        by_path = {f.path: f for f in findings}
        assert by_path["MeasurementUnitsCodeSequence[0]"].severity is Severity.INFO
        bad = by_path["MeasurementUnitsCodeSequence[1]"]
        assert (bad.kind, bad.severity) == (FindingKind.UNITS_INVALID, Severity.WARNING)
        assert bad.suggestion is not None and bad.suggestion["value"] == "mm3"
        other = by_path["MeasurementUnitsCodeSequence[2]"]
        assert other.kind is FindingKind.UNITS_INVALID and other.suggestion is None

    def test_highdicom_measurement_report(self, tmp_path: Path) -> None:
        """A TID 1500 report as highdicom writes it: valid units that PS3.16 does not list are
        information only; a unit in the wrong case is a warning."""
        hd = pytest.importorskip("highdicom")
        import numpy as np
        import pydicom
        from pydicom.data import get_testdata_file
        from pydicom.sr.codedict import codes
        from pydicom.sr.coding import Code

        ct = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
        region = hd.sr.ImageRegion(
            graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
            graphic_data=np.array([[1.0, 1.0], [9.0, 1.0], [9.0, 9.0], [1.0, 1.0]]),
            source_image=hd.sr.SourceImageForRegion.from_source_image(ct),
        )
        measurements = [
            hd.sr.Measurement(name=codes.SCT.Area, value=12.5,
                              unit=codes.UCUM.SquareMillimeter),
            hd.sr.Measurement(name=Code("2345-7", "LN", "Glucose"), value=99.0,
                              unit=Code("mg/dL", "UCUM", "mg/dL")),
            hd.sr.Measurement(name=codes.SCT.Volume, value=3.0,
                              unit=Code("MM3", "UCUM", "cubic millimeter")),
        ]
        group = hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier="lesion 1"),
            referenced_region=region, measurements=measurements,
        )
        observer = hd.sr.ObserverContext(
            observer_type=codes.DCM.Person,
            observer_identifying_attributes=hd.sr.PersonObserverIdentifyingAttributes(
                name="Doe^Jane"),
        )
        report = hd.sr.MeasurementReport(
            observation_context=hd.sr.ObservationContext(observer_person_context=observer),
            procedure_reported=codes.LN.CTUnspecifiedBodyRegion,
            imaging_measurements=[group],
        )
        sr = hd.sr.Comprehensive3DSR(
            evidence=[ct], content=report, series_number=9, series_instance_uid=hd.UID(),
            sop_instance_uid=hd.UID(), instance_number=1, manufacturer="QA",
        )
        path = tmp_path / "sr.dcm"
        sr.save_as(path)
        findings = terminology.check_file(path)
        units = {f.code[1]: f for f in findings if f.code and "MeasurementUnits" in f.path}
        assert set(units) == {"mg/dL", "MM3"}, findings
        assert units["mg/dL"].severity is Severity.INFO
        assert (units["MM3"].kind, units["MM3"].severity) == (
            FindingKind.UNITS_INVALID, Severity.WARNING)
        assert not [f for f in findings if f.severity is Severity.ERROR]


class TestLookupHints:
    @pytest.mark.parametrize(("code", "hint"), [
        ("DCM:10200004", "SCT:10200004 (Liver)"),
        ("SCT:T-62000", "SCT:10200004 (Liver)"),
        ("SRT:10200004", "SCT:10200004 (Liver)"),
        ("SCT:113000", "DCM:113000"),
    ])
    def test_code_in_the_wrong_scheme(self, base_url: str, code: str, hint: str) -> None:
        out = run("show", code)
        assert out.returncode == 1
        assert f"did you mean {hint}" in out.stderr
        status, body = get(base_url, "/api/codes/" + code.replace(":", "/", 1))
        assert status == 404 and f"did you mean {hint}" in body["detail"]

    def test_unlisted_ucum_unit(self, base_url: str) -> None:
        # Any valid UCUM unit is a code (CID 82), shown with its name as `codes show` does.
        status, body = get(base_url, "/api/codes/UCUM/" + urllib.parse.quote("mg/dL", safe=""))
        assert status == 200 and body["meaning"] == "milligram per deciliter"
        assert "valid UCUM unit" in body["note"]
        status, body = get(base_url, "/api/codes/UCUM/MM3")
        assert status == 404 and "not a valid UCUM unit" in body["detail"]


class TestParameters:
    def test_unknown_scheme_is_400_with_a_hint(self, base_url: str) -> None:
        status, body = get(base_url, "/api/codes?q=liver&scheme=SNOMED")
        assert status == 400 and "did you mean SCT" in body["detail"]
        status, body = get(base_url, "/api/codes?q=liver&scheme=XYZ")
        assert status == 400

    @pytest.mark.parametrize("scheme", ["", "sct", "SRT", "I10P"])
    def test_known_or_empty_scheme_is_accepted(self, base_url: str, scheme: str) -> None:
        status, body = get(base_url, f"/api/codes?q=liver&scheme={scheme}")
        assert status == 200, body

    def test_offset_pages(self, base_url: str) -> None:
        status, whole = get(base_url, "/api/codes?q=artery&limit=30")
        assert status == 200
        keys = [(r["scheme"], r["value"]) for r in whole["results"]]
        pages = []
        for offset in (0, 10, 20):
            status, body = get(base_url, f"/api/codes?q=artery&limit=10&offset={offset}")
            assert status == 200 and body["offset"] == offset
            pages += [(r["scheme"], r["value"]) for r in body["results"]]
        assert pages == keys

    @pytest.mark.parametrize("offset", ["-1", "x", "1e3", "100001"])
    def test_bad_offset(self, base_url: str, offset: str) -> None:
        status, body = get(base_url, f"/api/codes?q=liver&offset={offset}")
        assert status == 400 and body["error"] == "bad request"

    @pytest.mark.parametrize("args", [["search", ""], ["search", "  "],
                                      ["search", "liver", "--scheme", "SNOMED"],
                                      ["search", "liver", "--offset", "-1"]])
    def test_command_line_usage_errors(self, args: list[str]) -> None:
        out = run(*args)
        assert out.returncode == 2, out
        assert out.stderr.startswith("error:") and "Traceback" not in out.stderr

    def test_command_line_offset(self) -> None:
        whole = run("search", "liver", "--limit", "3", "--json")
        page = run("search", "liver", "--limit", "2", "--offset", "1", "--json")
        assert whole.returncode == page.returncode == 0
        first = [r["value"] for r in json.loads(whole.stdout)["results"]]
        assert [r["value"] for r in json.loads(page.stdout)["results"]] == first[1:]


def coded(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    ds = Dataset()
    ds.ConceptNameCodeSequence = [item]
    return ds


class TestCheckMeanings:
    """Real objects carry SNOMED's Fully Specified Name and British spellings; those were
    reported as meanings that differ from the standard one."""

    @pytest.mark.parametrize(("value", "scheme", "meaning"), [
        ("36118008", "SCT", "Pneumothorax (disorder)"),
        ("10200004", "SCT", "Liver (body structure)"),
        ("49755003", "SCT", "Morphologically abnormal structure (morphologic abnormality)"),
        ("50960005", "SCT", "Haemorrhage"),
        ("108369006", "SCT", "Tumour"),
        ("mm", "UCUM", "millimetre"),
    ])
    def test_same_meaning(self, value: str, scheme: str, meaning: str) -> None:
        assert terminology.check_dataset(coded(value, scheme, meaning)) == []

    def test_another_meaning_is_still_reported(self) -> None:
        found = terminology.check_dataset(coded("36118008", "SCT", "Haemothorax (disorder)"))
        assert [f.kind for f in found] == [FindingKind.MEANING_DIFFERS]

    def test_sct_concept_id_under_a_retired_designator(self) -> None:
        found = terminology.check_dataset(coded("10200004", "SRT", "Liver"))
        assert [f.kind for f in found] == [FindingKind.DESIGNATOR_RETIRED]
        assert found[0].suggestion == {"scheme": "SCT", "value": "10200004", "meaning": "Liver"}
        assert "no SCT equivalent" not in found[0].message

    def test_code_in_the_wrong_scheme(self) -> None:
        found = terminology.check_dataset(coded("36118008", "DCM", "Pneumothorax"))
        assert [f.kind for f in found] == [FindingKind.CODE_UNKNOWN]
        assert "did you mean SCT:36118008 (Pneumothorax)?" in found[0].message


class TestLongMeanings:
    """130 standard meanings are longer than Code Meaning's 64 characters (VR LO): the full
    meaning is a VR error, and a cut one was reported as a different meaning, so no object
    could use those codes without a finding."""

    @pytest.mark.parametrize("cut", [
        lambda m: m[:64], lambda m: m[:64].rstrip(), lambda m: m[:61] + "...",
    ])
    def test_cut_meaning_is_accepted(self, cut: Any) -> None:
        meaning = "Personal history of breast cancer with breast conservation therapy"
        assert terminology.lookup("DCM", "111421").meaning == meaning
        assert terminology.check_dataset(coded("111421", "DCM", cut(meaning))) == []

    def test_every_long_meaning(self) -> None:
        term = terminology.default_terminology()
        long = [c for c in term if len(c.meaning) > 64]
        assert long
        for concept in long:
            ds = coded(concept.value, concept.scheme, concept.meaning[:64])
            assert terminology.check_dataset(ds) == [], concept.key

    def test_a_short_prefix_is_still_another_meaning(self) -> None:
        found = terminology.check_dataset(coded("111421", "DCM", "Personal history"))
        assert [f.kind for f in found] == [FindingKind.MEANING_DIFFERS]


def test_no_invisible_characters_in_meanings() -> None:
    """DCM 111233 carried a zero-width space from the standard's HTML
    ("Individual Impression/\\u200bRecommendation Analysis")."""
    import unicodedata

    term = terminology.default_terminology()
    assert term.lookup("DCM", "111233").meaning == "Individual Impression/Recommendation Analysis"
    assert not [m for m in term.meanings if any(unicodedata.category(c) == "Cf" for c in m)]


class TestAbbreviations:
    """Clinicians type HR, LV, ADC, MRI: those found only meanings containing the letters
    ("HR-Corrected Mean Velocity...", "ADC Hypointense"), never the concept itself."""

    @pytest.mark.parametrize(("query", "expected"), [
        ("HR", "LN:8867-4"),
        ("LV", "SCT:87878005"),
        ("ADC", "DCM:113041"),
        ("HU", "UCUM:[hnsf'U]"),
        ("MRI", "DCM:MR"),
        ("PET", "DCM:PT"),
        ("lad", "SCT:59438005"),
        ("IVC", "SCT:64131007"),
        # QA s22: MI found "Mi pig breed", AF "AF9", CHF and CCA nothing useful
        ("MI", "SCT:22298006"),
        ("AF", "SCT:49436004"),
        ("CHF", "SCT:42343007"),
        ("CCA", "SCT:32062004"),
    ])
    def test_first(self, query: str, expected: str) -> None:
        assert terminology.search(query, limit=1)[0].concept.key == expected

    def test_every_expansion_finds_its_concept(self) -> None:
        from archivist.terminology.search import ABBREVIATIONS

        for short, written in ABBREVIATIONS.items():
            hits = terminology.search(written, limit=1)
            assert hits and hits[0].score >= 100, (short, written)
            assert terminology.search(short, limit=3)[0].concept == hits[0].concept, short


class TestCidParameter:
    """/api/cids/CID4 and `codes cid CID4` took the number as written; the cid filter of a
    search did not (`cid=CID4` was a 400, `--cid CID4` a usage error), and took `4_0` as 40."""

    def test_http(self, base_url: str) -> None:
        status, body = get(base_url, "/api/codes?q=liv&cid=CID4&limit=1")
        assert status == 200 and body["results"][0]["value"] == "10200004"
        status, body = get(base_url, "/api/codes?q=liv&cid=4_0")
        assert status == 400 and "4_0" in body["detail"]

    def test_command_line(self) -> None:
        out = run("search", "liv", "--cid", "CID4", "--limit", "1")
        assert out.returncode == 0, out.stderr
        assert out.stdout.startswith("SCT:10200004")
