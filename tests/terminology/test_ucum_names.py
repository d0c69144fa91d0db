"""UCUM units by name: an expression read in words and back (terminology.ucum), and the units
PS3.16 does not list found by `codes show`, `codes search` and the codes API (CID 82 takes any
valid UCUM unit)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest
from starlette.requests import Request

from archivist import terminology
from archivist.terminology.ucum import (
    ATOM_NAMES,
    METRIC_ATOMS,
    OTHER_ATOMS,
    PREFIX_NAMES,
    PREFIXES,
    UNLISTED_NOTE,
    parse_unit_name,
    unit_name,
)
from archivist.web.codes import get_code, search_codes


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "archivist.cli.main", "codes", *args],
        check=False, capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )


def call(handler: Any, path_params: dict[str, str] | None = None,
         query: str = "") -> tuple[int, Any]:
    """A codes API handler answering a GET, without a server."""
    scope = {"type": "http", "method": "GET", "path": "/", "headers": [],
             "query_string": query.encode(), "path_params": path_params or {}}
    response = handler(Request(scope))
    return response.status_code, json.loads(response.body)


#: (expression, its name); the names as UCUM's print names and definitions read in English.
NAMES = [
    ("mg/dL", "milligram per deciliter"),
    ("kg/m2", "kilogram per square meter"),
    ("mm[Hg]", "millimeter of mercury"),
    ("10*3/uL", "thousand per microliter"),
    ("10^3/uL", "thousand per microliter"),
    ("10*9/L", "billion per liter"),
    ("/min", "per minute"),
    ("1/min", "per minute"),
    ("cm3", "cubic centimeter"),
    ("{beats}/min", "beats per minute"),
    ("%", "percent"),
    ("[degF]", "degree Fahrenheit"),
    ("Cel", "degree Celsius"),
    ("umol/L", "micromole per liter"),
    ("mL/min/{1.73_m2}", "milliliter per minute per 1.73 m2"),
    ("kg", "kilogram"),
    ("dL", "deciliter"),
    ("ng/mL", "nanogram per milliliter"),
    ("mmol/L", "millimole per liter"),
    ("meq/L", "milliequivalent per liter"),
    ("mosm/kg", "milliosmole per kilogram"),
    ("[IU]/L", "international unit per liter"),
    ("[iU]/mL", "international unit per milliliter"),
    ("U/L", "unit per liter"),
    ("ug/kg/min", "microgram per kilogram per minute"),
    ("mg/(kg.d)", "milligram per kilogram per day"),
    ("kg.m/s2", "kilogram meter per square second"),
    ("N.m", "newton meter"),
    ("cm-1", "per centimeter"),
    ("m/(s/h)", "meter hour per second"),
    ("dyn.s.cm-5", "dyne second per centimeter to the power 5"),
    ("mmol/kg{WetWeight}", "millimole per kilogram {WetWeight}"),
    ("g/(8.h){shift}", "gram per (8 hour) {shift}"),
    ("10*-6", "10^-6"),
    ("[ppm]", "parts per million"),
    ("[hnsf'U]", "Hounsfield unit"),
    ("[pH]", "pH"),
    ("[drp]/min", "drop per minute"),
    ("[CFU]/mL", "colony forming unit per milliliter"),
    ("cm[H2O]", "centimeter of water"),
    ("[in_i]", "inch"),
    ("[ft_i]", "foot"),
    ("[lb_av]", "pound"),
    ("[oz_av]", "ounce"),
    ("[mi_i]/h", "mile per hour"),
    ("[sft_i]", "square foot"),
    ("[gal_us]", "US gallon"),
    ("mCi", "millicurie"),
    ("MBq", "megabecquerel"),
    ("mSv", "millisievert"),
    ("mGy", "milligray"),
    ("kPa", "kilopascal"),
    ("Ohm", "ohm"),
    ("KiBy", "kibibyte"),
    ("dam", "dekameter"),
    ("'", "minute of arc"),
    ("deg", "degree"),
    ("h", "hour"),
    ("d", "day"),
    ("wk", "week"),
    ("mo", "month"),
    ("a", "year"),
    ("ms", "millisecond"),
    ("us", "microsecond"),
    ("[psi]", "pound per square inch"),
]


class TestUnitName:
    @pytest.mark.parametrize(("expression", "name"), NAMES)
    def test_name(self, expression: str, name: str) -> None:
        assert unit_name(expression) == name

    def test_every_prefix_is_named(self) -> None:
        assert set(PREFIX_NAMES) == PREFIXES
        for prefix in PREFIXES:
            assert unit_name(prefix + "g") == PREFIX_NAMES[prefix] + "gram"
            assert unit_name(prefix + "L") == PREFIX_NAMES[prefix] + "liter"

    def test_base_and_metric_atoms_are_named(self) -> None:
        base = {"m", "s", "g", "rad", "K", "C", "cd"}
        assert base <= set(ATOM_NAMES)
        assert METRIC_ATOMS <= set(ATOM_NAMES)
        common = {"min", "h", "d", "wk", "mo", "a", "deg", "'", "''", "%", "[ppm]", "[iU]",
                  "[IU]", "[in_i]", "[ft_i]", "[lb_av]", "[oz_av]", "[gal_us]", "[degF]",
                  "[hnsf'U]", "[pH]", "[drp]", "[CFU]", "[psi]", "[Ch]", "[arb'U]", "10*"}
        assert common <= set(ATOM_NAMES)
        assert set(ATOM_NAMES) <= METRIC_ATOMS | OTHER_ATOMS

    def test_an_atom_without_a_name_is_read_as_its_symbol(self) -> None:
        unnamed = sorted(OTHER_ATOMS - set(ATOM_NAMES))
        assert unnamed, "every atom is named: pick another example"
        assert unit_name(unnamed[0]) == unnamed[0]
        assert unit_name(unnamed[0] + "/min") == unnamed[0] + " per minute"

    @pytest.mark.parametrize("expression", ["MM3", "mmm", "", "kg/", "m{", "mg/dl/", "10-6"])
    def test_invalid_expression_is_refused(self, expression: str) -> None:
        with pytest.raises(ValueError, match="not a valid UCUM unit"):
            unit_name(expression)


class TestParseUnitName:
    @pytest.mark.parametrize(("name", "expression"), [
        ("milligram per deciliter", "mg/dL"),
        ("milligrams per deciliter", "mg/dL"),
        ("Milligrams Per Decilitre", "mg/dL"),
        ("mg per dL", "mg/dL"),
        ("kilogram per square meter", "kg/m2"),
        ("kilograms per square metre", "kg/m2"),
        ("kg per m2", "kg/m2"),
        ("beats per minute", "{beats}/min"),
        ("millimeters of mercury", "mm[Hg]"),
        ("MILLIMETRES OF MERCURY", "mm[Hg]"),
        ("thousand per microliter", "10*3/uL"),
        ("10^3 per microlitre", "10^3/uL"),
        ("per minute", "/min"),
        ("cubic centimeter", "cm3"),
        ("cubic centimetres", "cm3"),
        ("percent", "%"),
        ("degrees Fahrenheit", "[degF]"),
        ("degree celsius", "Cel"),
        ("micromoles per litre", "umol/L"),
        ("kilogram", "kg"),
        ("kilograms", "kg"),
        ("deciliter", "dL"),
        ("liter", "L"),
        ("litres", "L"),
        ("meters per second squared", "m/s2"),
        ("meter per second to the power 2", "m/s2"),
        ("centimeter to the power -5", "cm-5"),
        ("international units per liter", "[IU]/L"),
        ("IU per L", "[IU]/L"),
        ("units per liter", "U/L"),
        ("milligrams per kilogram per day", "mg/kg/d"),
        ("mcg per kg per min", "ug/kg/min"),
        ("µg per L", "ug/L"),
        ("newton meter", "N.m"),
        ("square inches", "[in_i]2"),
        ("feet", "[ft_i]"),
        ("pounds per square inch", "[psi]"),
        ("colony forming units per milliliter", "[CFU]/mL"),
        ("cells per microliter", "{cells}/uL"),
        ("dekameter", "dam"),
        ("decametres", "dam"),
        ("kibibytes", "KiBy"),
        ("cmH2O", "cm[H2O]"),
        ("mmHg", "mm[Hg]"),
        ("cc per hour", "cm3/h"),
        ("mg per 100 mL", "mg/(100.mL)"),
        ("kg/m2 per day", "(kg/m2)/d"),
        ("mg/dL", "mg/dL"),
        ("hounsfield units", "[hnsf'U]"),
    ])
    def test_name(self, name: str, expression: str) -> None:
        assert parse_unit_name(name) == expression

    @pytest.mark.parametrize("text", [
        "", "liver", "pneumothorax", "per", "mg per", "per per minute", "square",
        "kg per square", "thousand", "beats", "1.73", "milligram of liver", "MM3", "a day",
    ])
    def test_not_a_unit(self, text: str) -> None:
        assert parse_unit_name(text) is None

    @pytest.mark.parametrize(("expression", "name"), [
        (e, n) for e, n in NAMES
        if "{" not in n and "10^-" not in n and "1.73" not in n
    ])
    def test_names_read_back(self, expression: str, name: str) -> None:
        read = parse_unit_name(name)
        assert read is not None, name
        assert unit_name(read) == name

    def test_every_atom_name_reads_back(self) -> None:
        """Each named atom, and each metric one with a prefix, read from its name gives a unit
        of the same name (``l`` and ``L`` are both liter, read as ``L``)."""
        for atom in ATOM_NAMES:
            if atom in ("10*", "10^"):
                continue
            for expression in [atom, *(["k" + atom, "u" + atom] if atom in METRIC_ATOMS else [])]:
                name = unit_name(expression)
                read = parse_unit_name(name)
                assert read is not None and unit_name(read) == name, (expression, name, read)
                assert parse_unit_name(name.upper()) == read, name


def keys(query: str, **options: Any) -> list[str]:
    return [h.concept.key for h in terminology.search(query, **options)]


class TestSearch:
    @pytest.mark.parametrize(("query", "key", "meaning"), [
        ("mg/dL", "UCUM:mg/dL", "milligram per deciliter"),
        ("kg", "UCUM:kg", "kilogram"),
        ("kilogram", "UCUM:kg", "kilogram"),
        ("deciliter", "UCUM:dL", "deciliter"),
        ("milligram per deciliter", "UCUM:mg/dL", "milligram per deciliter"),
        ("milligrams per decilitre", "UCUM:mg/dL", "milligram per deciliter"),
        ("mg per dL", "UCUM:mg/dL", "milligram per deciliter"),
        ("kilogram per square meter", "UCUM:kg/m2", "kilogram per square meter"),
        ("kg/m2", "UCUM:kg/m2", "kilogram per square meter"),
        ("beats per minute", "UCUM:{beats}/min", "beats per minute"),
        ("10*3/uL", "UCUM:10*3/uL", "thousand per microliter"),
        ("µg/L", "UCUM:ug/L", "microgram per liter"),
        ("UCUM:mg/dL", "UCUM:mg/dL", "milligram per deciliter"),
        ("millimeters of mercury", "UCUM:mm[Hg]", "mmHg"),  # listed: its PS3.16 meaning
        ("milliliters per minute", "UCUM:ml/min", "milliliter per minute"),
        ("per minute", "UCUM:/min", "/min"),
    ])
    def test_unit_first(self, query: str, key: str, meaning: str) -> None:
        hit = terminology.search(query, limit=1)[0]
        assert (hit.concept.key, hit.concept.meaning) == (key, meaning)
        listed = terminology.get_concept("UCUM", key.partition(":")[2]) is not None
        assert (hit.note is None) == listed
        if not listed:
            assert hit.to_dict()["note"] == UNLISTED_NOTE
            assert hit.concept.cids == () and hit.concept.keywords == ()

    def test_a_listed_unit_is_not_made_again(self) -> None:
        found = keys("milliliters per minute", limit=0)
        assert "UCUM:ml/min" in found and "UCUM:mL/min" not in found
        # Typed as a code in another case, the code typed comes after the listed one.
        assert keys("mL/min", limit=2) == ["UCUM:ml/min", "UCUM:mL/min"]

    @pytest.mark.parametrize(("query", "first"), [
        ("pneumothorax", "SCT:36118008"),
        ("36118008", "SCT:36118008"),
        ("T-62000", "SCT:10200004"),
        ("MR", "DCM:MR"),
        ("CT", "DCM:CT"),
        ("ct", "DCM:CT"),
        ("hu", "UCUM:[hnsf'U]"),
        ("foot", "SCT:56459004"),
        ("lumen", "SCT:113342003"),
        ("liver", "SCT:10200004"),
        ("ms", "UCUM:ms"),
        ("degrees celsius", "UCUM:Cel"),
    ])
    def test_other_searches_keep_their_first(self, query: str, first: str) -> None:
        assert keys(query, limit=1) == [first]

    @pytest.mark.parametrize(("query", "value"), [
        ("MR", "MR"),  # DCM MR, not megaroentgen
        ("T-62000", "T-62000"),  # SRT liver, not tesla to the power -62000
        ("36118008", "36118008"),  # numbers alone are valid UCUM
        ("10", "10"),
        ("hu", "hu"),  # Hounsfield unit, not hecto-u
        ("ph", "ph"),  # pH, not phot
        ("second degree", "s.deg"),
        ("MM3", "MM3"),  # not valid UCUM
        ("pneumothorax", None),
        ("liver", None),
    ])
    def test_no_unit_made_for(self, query: str, value: str | None) -> None:
        made = [h.concept.value for h in terminology.search(query, limit=0) if h.note]
        assert value not in made if value else not made, made

    def test_plain_atom_names_stay_behind_the_meanings(self) -> None:
        """"foot" and "gram" are words of many meanings: their unit is found, after them."""
        found = keys("foot", limit=0)
        assert found.index("UCUM:[ft_i]") > 5
        hits = terminology.search("gram", limit=0)
        unit = next(h for h in hits if h.concept.key == "UCUM:g")
        assert unit.score < hits[0].score

    def test_filters(self) -> None:
        assert keys("mg/dL", scheme="UCUM", limit=1) == ["UCUM:mg/dL"]
        assert keys("mg/dL", scheme="ucum", limit=1) == ["UCUM:mg/dL"]
        assert "UCUM:mg/dL" not in keys("mg/dL", scheme="SCT", limit=0)
        assert "UCUM:kg" not in keys("kg", cid=4, limit=0)
        # A listed unit named by the query is filtered as any code.
        assert keys("milliliters per minute", scheme="UCUM", limit=1) == ["UCUM:ml/min"]
        assert "UCUM:ml/min" not in keys("milliliters per minute", scheme="DCM", limit=0)


class TestUnlistedUnit:
    def test_concept(self) -> None:
        term = terminology.default_terminology()
        unit = term.unlisted_unit("mg/dL")
        assert unit is not None
        assert (unit.key, unit.meaning, unit.cids) == ("UCUM:mg/dL", "milligram per deciliter",
                                                       ())
        assert term.unlisted_unit("mm") is None  # listed: term.get
        assert term.unlisted_unit("MM3") is None  # not valid UCUM
        assert term.get("UCUM", "mg/dL") is None  # look-ups and checks are unchanged


class TestCommands:
    def test_show_unlisted_unit(self) -> None:
        out = run("show", "UCUM:kg")
        assert out.returncode == 0, out.stderr
        lines = out.stdout.splitlines()
        assert lines[0] == "UCUM:kg  kilogram"
        assert "valid UCUM unit" in lines[1] and "CID 82" in lines[1]

    def test_show_unlisted_unit_json(self) -> None:
        out = run("show", "ucum:mg/dL", "--json")
        assert out.returncode == 0, out.stderr
        data = json.loads(out.stdout)
        assert (data["scheme"], data["value"], data["meaning"]) == (
            "UCUM", "mg/dL", "milligram per deciliter")
        assert data["note"] == UNLISTED_NOTE and data["cids"] == []

    def test_show_invalid_unit_is_refused(self) -> None:
        out = run("show", "UCUM:MM3")
        assert out.returncode == 1
        assert "not in the PS3.16 tables" in out.stderr
        assert "not a valid UCUM unit" in out.stderr

    def test_show_listed_unit_is_unchanged(self) -> None:
        out = run("show", "UCUM:mm")
        assert out.returncode == 0, out.stderr
        assert out.stdout.splitlines()[:2] == ["UCUM:mm  mm", "  keywords: Millimeter"]
        assert "note" not in out.stdout

    def test_search_by_name(self) -> None:
        out = run("search", "milligram", "per", "deciliter", "--limit", "3")
        assert out.returncode == 0, out.stderr
        assert out.stdout.splitlines()[0] == (
            "UCUM:mg/dL  milligram per deciliter  (valid UCUM, not in PS3.16)")
        for query in ("kilogram", "deciliter"):
            out = run("search", query)
            assert out.returncode == 0, out.stderr
            assert "valid UCUM" in out.stdout.splitlines()[0]

    def test_search_json(self) -> None:
        out = run("search", "mg/dL", "--json", "-n", "2")
        assert out.returncode == 0, out.stderr
        first = json.loads(out.stdout)["results"][0]
        assert (first["value"], first["meaning"], first["note"]) == (
            "mg/dL", "milligram per deciliter", UNLISTED_NOTE)


class TestApi:
    def test_get_code_as_show(self) -> None:
        status, body = call(get_code, {"scheme": "UCUM", "value": "mg/dL"})
        assert status == 200
        assert (body["value"], body["meaning"], body["note"]) == (
            "mg/dL", "milligram per deciliter", UNLISTED_NOTE)
        status, body = call(get_code, {"scheme": "UCUM", "value": "MM3"})
        assert status == 404 and "not a valid UCUM unit" in body["detail"]
        status, body = call(get_code, {"scheme": "UCUM", "value": "mm"})
        assert status == 200 and "note" not in body

    def test_search_as_the_command(self) -> None:
        status, body = call(search_codes, query="q=milligrams+per+deciliter&limit=2")
        assert status == 200
        first = body["results"][0]
        assert (first["scheme"], first["value"], first["note"]) == (
            "UCUM", "mg/dL", UNLISTED_NOTE)
