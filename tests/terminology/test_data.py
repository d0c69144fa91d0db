"""The generated tables (_data/) and the lookups built on them."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from archivist import terminology
from archivist.terminology.text import fold

DATA = Path(terminology.__file__).with_name("_data")


@pytest.fixture(scope="module")
def document() -> dict:
    return json.loads(gzip.decompress((DATA / "terminology.json.gz").read_bytes()))


@pytest.fixture(scope="module")
def term() -> terminology.Terminology:
    return terminology.default_terminology()


class TestCounts:
    """Figures from pydicom 3.0.2 (see _data/README.md); re-check on every pydicom upgrade."""

    def test_codes_per_scheme(self, term: terminology.Terminology) -> None:
        counts = term.scheme_counts
        assert counts["SCT"] == 8152
        assert counts["DCM"] == 4755
        assert counts["LN"] == 746
        assert counts["UCUM"] == 95
        assert counts["MDC"] == 1326
        assert len(counts) == 18
        assert len(term) == 15456

    def test_keywords(self, term: terminology.Terminology) -> None:
        assert len(term.meanings) == 18735

    def test_context_groups(self, term: terminology.Terminology) -> None:
        numbers = term.cid_numbers
        assert len(numbers) == 1355
        assert (numbers[0], numbers[-1]) == (2, 12325)

    def test_srt_map_and_body_parts(self, term: terminology.Terminology) -> None:
        assert len(term.srt_to_sct) == 7990
        assert len(term.body_part_terms) == 317

    def test_readme_quotes_the_counts(self) -> None:
        readme = (DATA / "README.md").read_text(encoding="utf-8")
        for figure in ("15,456", "18,735", "1,355", "7,990", "| SCT | 8,152 |", "pydicom 3.0.2"):
            assert figure in readme


class TestGeneratedIndex:
    """The stored folded meanings and word index agree with the code that reads queries."""

    def test_folded_meanings_match_fold(self, term: terminology.Terminology) -> None:
        assert term.folded == [fold(m) for m in term.meanings]

    def test_word_index_matches_meanings(self, term: terminology.Terminology) -> None:
        expected: dict[str, list[int]] = {}
        for variant, text in enumerate(term.folded):
            for word in dict.fromkeys(text.split()):
                expected.setdefault(word, []).append(variant)
        assert term.search_words == sorted(expected)
        rebuilt = {
            w: [int(v) for v in p.split()]
            for w, p in zip(term.search_words, term.search_postings, strict=True)
        }
        assert rebuilt == expected

    def test_matches_pydicom(self, term: terminology.Terminology) -> None:
        from pydicom.sr._cid_dict import cid_concepts
        from pydicom.sr._concepts_dict import concepts

        for scheme, by_keyword in list(concepts.items())[:3]:
            for keyword, by_value in list(by_keyword.items())[:200]:
                for value, (meaning, cids) in by_value.items():
                    concept = term.lookup(scheme, value)
                    assert meaning in concept.meanings and keyword in concept.keywords
                    assert set(cids) <= set(concept.cids)
        group = term.context_group(4)
        assert len(group.members) == len(cid_concepts[4]["SCT"])

    def test_loading_does_not_import_pydicom(self) -> None:
        import subprocess
        import sys

        code = (
            "import sys; import archivist.terminology as t; t.search('liver'); "
            "t.lookup('SCT', '10200004'); t.context_group(4); "
            "print('pydicom' in sys.modules)"
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             check=True)
        assert out.stdout.strip() == "False"


class TestLookup:
    def test_lookup(self, term: terminology.Terminology) -> None:
        c = terminology.lookup("SCT", "36118008")
        assert c.meaning == "Pneumothorax"
        assert c.cids == (6062, 6102, 6105)
        assert c.srt == "D2-80300"
        assert c.key == "SCT:36118008"

    def test_preferred_meaning_and_synonyms(self) -> None:
        c = terminology.lookup("SCT", "10200004")
        assert c.meaning == "Liver"
        assert "Liver structure (body structure)" in c.meanings
        assert set(c.keywords) == {"Liver", "LiverStructure"}

    def test_retired_code_finds_sct(self) -> None:
        assert terminology.lookup("SRT", "T-62000").key == "SCT:10200004"
        assert terminology.get_concept("SNM3", "T-62000").key == "SCT:10200004"

    def test_unknown(self) -> None:
        assert terminology.get_concept("SCT", "12345678") is None
        with pytest.raises(terminology.UnknownCode):
            terminology.lookup("SCT", "12345678")
        with pytest.raises(LookupError):
            terminology.lookup("NOPE", "1")

    def test_parse_code(self) -> None:
        assert terminology.parse_code("SCT:36118008") == ("SCT", "36118008")
        assert terminology.parse_code(" UCUM:mm[Hg] ") == ("UCUM", "mm[Hg]")
        assert terminology.parse_code("MDC:2:16136") == ("MDC", "2:16136")
        with pytest.raises(ValueError):
            terminology.parse_code("36118008")

    def test_context_group(self) -> None:
        group = terminology.context_group(4)
        assert group.name == "AnatomicRegion" and group.title == "Anatomic Region"
        keys = {m.key for m in group.members}
        assert "SCT:10200004" in keys
        assert len(group.members) == 343
        with pytest.raises(terminology.UnknownContextGroup):
            terminology.context_group(3)

    def test_context_group_uses_its_own_meaning_form(self) -> None:
        # DCM 126327 is "IAUC180BN" in its CIDs, "AUCBN180" only in Annex D.
        group = terminology.context_group(218)
        member = next(m for m in group.members if m.key == "DCM:126327")
        assert member.meaning == "IAUC180BN"

    def test_schemes(self) -> None:
        found = {s.designator: s for s in terminology.schemes()}
        assert found["SCT"].codes == 8152 and found["SCT"].name == "SNOMED CT"
        assert found["SRT"].retired and found["SRT"].codes == 7990
        assert found["SNM3"].retired and found["99SDM"].retired


class TestNormaliseCode:
    @pytest.mark.parametrize(
        ("scheme", "value", "expected"),
        [
            ("SRT", "T-62000", ("SCT", "10200004")),
            ("SNM3", "T-62000", ("SCT", "10200004")),
            ("99SDM", "T-62000", ("SCT", "10200004")),
            ("SRT ", "D2-80300 ", ("SCT", "36118008")),
            ("SCT", "10200004", ("SCT", "10200004")),
            ("DCM", "121071", ("DCM", "121071")),
            ("SRT", "X-99999", ("SRT", "X-99999")),
            ("99LOCAL", "ABC", ("99LOCAL", "ABC")),
        ],
    )
    def test_normalise(self, scheme: str, value: str, expected: tuple[str, str]) -> None:
        assert terminology.normalise_code(scheme, value) == expected

    def test_every_srt_value_maps_to_a_known_sct(self, term: terminology.Terminology) -> None:
        for srt, sct in term.srt_to_sct.items():
            assert terminology.normalise_code("SRT", srt) == ("SCT", sct)
            assert term.get("SCT", sct) is not None


class TestBodyPart:
    @pytest.mark.parametrize(
        ("term", "expected"),
        [
            ("CHEST", ("SCT", "816094009")),
            ("chest ", ("SCT", "816094009")),
            ("ABDOMEN", ("SCT", "818981001")),
            ("LIVER", ("SCT", "10200004")),
            ("HEAD", ("SCT", "69536005")),
            ("NOTAPART", None),
        ],
    )
    def test_body_part_to_code(self, term: str, expected: tuple[str, str] | None) -> None:
        assert terminology.body_part_to_code(term) == expected

    def test_matches_highdicom(self) -> None:
        from highdicom._standard_utils import get_anatomic_region_map

        for part, (code, _) in get_anatomic_region_map().items():
            assert terminology.body_part_to_code(part) == (
                code.scheme_designator, code.value
            )


class TestGenerator:
    def test_committed_data_is_what_the_generator_builds(self, document: dict) -> None:
        """The committed file matches the installed pydicom/highdicom: regenerate if not."""
        import importlib.util

        path = Path(__file__).resolve().parents[2] / "tools" / "generate_terminology.py"
        spec = importlib.util.spec_from_file_location("generate_terminology", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        built = module.build()
        assert built.keys() == document.keys()
        for key in built:
            assert built[key] == document[key], f"{key} differs: run {path.name}"
