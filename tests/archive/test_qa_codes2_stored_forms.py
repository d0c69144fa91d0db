"""Query by code, QA round 4 (codes2): every code an object carries is indexed as stored.

The index kept one row per *normalised* code, so an object carrying SCT 10200004 (Liver) and
its retired equivalent SRT T-62000 (in one Code Sequence, or one at the top and one in the
Frame Anatomy of the functional groups) kept whichever came first:

- the sequence came back with one item instead of both (docs/terminology.md: "the sequence
  comes back with the codes as stored"; PS3.4 C.2.2.2.6 answers the entity's own items);
- a query on the second code as stored (``T-6200*`` with ``SRT``, ``T-62000`` without a
  designator, designator ``SRT`` alone) did not find the object, although both forms are
  found on an object that carries only that one (C.2.2.2.6: the sequence matches when any
  of its items matches);
- the same code twice with two Code Meanings lost the second meaning, so a Code Meaning query
  for it found nothing.

The objects go to a real ``archivist serve`` with DCMTK storescu and are asked for with DCMTK
findscu, QIDO-RS and ``archivist find``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from pydicom.dataset import Dataset
from typer.testing import CliRunner

from archivist.archive.coded import extract_codes
from archivist.cli.main import app
from archivist.terminology import context_group
from archivist.testing.datasets import code_item as code
from archivist.testing.datasets import make_instance, new_uid
from archivist.testing.server import ServerProcess

AET = "ARCHIVIST"
PCS = "ProcedureCodeSequence"
ARS = "AnatomicRegionSequence"


def dcmtk(tool: str) -> str:
    """A DCMTK tool (pynetdicom installs Python apps of the same names in the venv)."""
    venv_bin = os.path.dirname(sys.executable)
    dirs = [d for d in os.environ.get("PATH", "").split(os.pathsep)
            if d and os.path.abspath(d) != venv_bin]
    found = shutil.which(tool, path=os.pathsep.join(dirs))
    if found is None:
        pytest.fail(f"{tool} (DCMTK) is required: apt-get install dcmtk")
    return found


def shared_anatomy(item: Dataset) -> Dataset:
    anatomy = Dataset()
    anatomy.AnatomicRegionSequence = [item]
    anatomy.FrameLaterality = "U"
    group = Dataset()
    group.FrameAnatomySequence = [anatomy]
    return group


SPECS: dict[str, dict[str, Any]] = {
    # SCT and its retired SRT equivalent in one sequence.
    "same": {PCS: [code("10200004", "SCT", "Liver"), code("T-62000", "SRT", "Liver")]},
    # The SCT code at the top, the SRT one in the shared Frame Anatomy.
    "split": {ARS: [code("10200004", "SCT", "Liver")],
              "SharedFunctionalGroupsSequence": [shared_anatomy(code("T-62000", "SRT", "Liver"))]},
    # One code, two meanings.
    "meanings": {PCS: [code("80891009", "SCT", "Heart"),
                       code("80891009", "SCT", "Heart structure")]},
}


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, dict]]:
    root = tmp_path_factory.mktemp("codes2")
    ids: dict[str, str] = {}
    paths = []
    for name, extra in SPECS.items():
        ids[name] = new_uid()
        path = root / f"{name}.dcm"
        make_instance(path, study_uid=ids[name], patient_id=f"QA-{name}", extra=extra)
        paths.append(str(path))
    srv = ServerProcess(root / "data").start()
    try:
        sent = subprocess.run([dcmtk("storescu"), "-aec", AET, "127.0.0.1",
                               str(srv.dicom_port), *paths],
                              capture_output=True, text=True, timeout=120, check=False,
                              env={**os.environ, "TCP_NODELAY": "1"})
        assert sent.returncode == 0, sent.stdout + sent.stderr
        yield srv, ids
    finally:
        srv.stop()


def qido(srv: ServerProcess, params: list[tuple[str, str]]) -> dict[str, Any]:
    """Study UID -> DICOM JSON of each study found."""
    url = f"{srv.url}/dicomweb/studies?{urllib.parse.urlencode(params)}"
    request = urllib.request.Request(url, headers={"Accept": "application/dicom+json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        body = response.read()
    return {r["0020000D"]["Value"][0]: r for r in (json.loads(body) if body else [])}


def findscu(srv: ServerProcess, tag: str, **item: str) -> dict[str, list[tuple[str, ...]]]:
    """DCMTK findscu at STUDY level with one item of the sequence at `tag`:
    Study UID -> the (value, designator, meaning) of each item answered."""
    keys = ["-k", "QueryRetrieveLevel=STUDY", "-k", "StudyInstanceUID="]
    for attr in ("CodeValue", "CodingSchemeDesignator", "CodeMeaning"):
        keys += ["-k", f"({tag})[0].{attr}={item.get(attr, '')}"]
    out = subprocess.run([dcmtk("findscu"), "-S", "-aec", AET, *keys, "127.0.0.1",
                          str(srv.dicom_port)], capture_output=True, timeout=60, check=False,
                         env={**os.environ, "TCP_NODELAY": "1"})
    text = (out.stdout + out.stderr).decode("utf-8", "replace")
    assert out.returncode == 0, text
    found: dict[str, list[tuple[str, ...]]] = {}
    for response in text.split("Find Response:")[1:]:
        uid = re.search(r"\(0020,000d\) UI \[([0-9.]+)", response)
        assert uid is not None, response
        items = []
        for block in response.split("(fffe,e000)")[1:]:
            vals = {}
            for attr in ("0008,0100", "0008,0102", "0008,0104"):
                hit = re.search(rf"\({attr}\) \w\w \[([^\]]*)\]", block)
                vals[attr] = hit.group(1).strip(" \x00") if hit else ""
            items.append((vals["0008,0100"], vals["0008,0102"], vals["0008,0104"]))
        found[uid.group(1)] = sorted(items)
    return found


def find_cli(srv: ServerProcess, *keys: str) -> dict[str, Any]:
    result = CliRunner().invoke(app, ["find", "--data", str(srv.data_dir), "--json", *keys])
    assert result.exit_code == 0, result.output
    return {r["0020000D"]["Value"][0]: r for r in json.loads(result.output)}


def items_of(found: dict[str, Any], uid: str, tag: str) -> list[tuple[str, ...]]:
    return sorted((i["00080100"]["Value"][0], i["00080102"]["Value"][0],
                   i["00080104"]["Value"][0]) for i in found[uid][tag]["Value"])


BOTH_LIVERS = [("10200004", "SCT", "Liver"), ("T-62000", "SRT", "Liver")]


class TestBothFormsKept:
    def test_returned_as_stored(self, stored: tuple[ServerProcess, dict]) -> None:
        srv, ids = stored
        got = findscu(srv, "0008,1032", CodeValue="10200004", CodingSchemeDesignator="SCT")
        assert got == {ids["same"]: BOTH_LIVERS}
        got = qido(srv, [(f"{PCS}.CodeValue", "T-62000"), (f"{PCS}.CodingSchemeDesignator", "SRT"),
                         ("includefield", "00081032")])
        assert items_of(got, ids["same"], "00081032") == BOTH_LIVERS
        got = find_cli(srv, f"{PCS}.CodeValue=10200004", f"{PCS}.CodingSchemeDesignator=SCT")
        assert items_of(got, ids["same"], "00081032") == BOTH_LIVERS
        # The two sequences of the split object: both codes are Anatomic Region codes.
        got = findscu(srv, "0008,2218", CodeValue="10200004", CodingSchemeDesignator="SCT")
        assert got == {ids["split"]: BOTH_LIVERS}

    @pytest.mark.parametrize("sequence", [PCS, ARS])
    def test_the_retired_form_as_stored_finds_it(
        self, stored: tuple[ServerProcess, dict], sequence: str,
    ) -> None:
        srv, ids = stored
        want = {ids["same"] if sequence == PCS else ids["split"]}
        for keys in ([("CodeValue", "T-6200*"), ("CodingSchemeDesignator", "SRT")],
                     [("CodeValue", "T-62000")],
                     [("CodingSchemeDesignator", "SRT")],
                     [("CodeValue", "T-62000"), ("CodingSchemeDesignator", "SRT")],
                     [("CodeValue", "1020000?"), ("CodingSchemeDesignator", "SCT")]):
            params = [(f"{sequence}.{k}", v) for k, v in keys]
            assert set(qido(srv, params)) == want, keys
            assert set(find_cli(srv, *(f"{k}={v}" for k, v in params))) == want, keys
        tag = "0008,1032" if sequence == PCS else "0008,2218"
        assert set(findscu(srv, tag, CodeValue="T-6200*", CodingSchemeDesignator="SRT")) == want
        assert set(findscu(srv, tag, CodeValue="T-62000")) == want

    def test_each_meaning_kept(self, stored: tuple[ServerProcess, dict]) -> None:
        srv, ids = stored
        want = [("80891009", "SCT", "Heart"), ("80891009", "SCT", "Heart structure")]
        assert findscu(srv, "0008,1032", CodeMeaning="Heart struct*") == {ids["meanings"]: want}
        got = qido(srv, [(f"{PCS}.CodeMeaning", "Heart structure"), ("includefield", "00081032")])
        assert items_of(got, ids["meanings"], "00081032") == want


def test_extract_keeps_distinct_stored_codes() -> None:
    ds = Dataset()
    ds.ProcedureCodeSequence = [code("10200004", "SCT", "Liver"), code("T-62000", "SRT", "Liver"),
                                code("10200004", "SCT", "Liver")]
    rows = extract_codes(ds)
    assert sorted((r.scheme, r.value, r.original_scheme, r.original_value) for r in rows) == [
        ("SCT", "10200004", "SCT", "10200004"), ("SCT", "10200004", "SRT", "T-62000")]



def test_cap_counts_concepts_not_forms() -> None:
    """Forty concepts, each given as SCT then as its retired SRT code: all forty are kept, in
    both forms (a cap of 64 rows would keep the first 32 concepts only)."""
    pairs = [(c.value, c.srt) for c in context_group(4).members if c.srt][:40]
    assert len(pairs) == 40
    ds = Dataset()
    ds.ProcedureCodeSequence = [code(v, s, "x") for sct, srt in pairs
                                for v, s in ((sct, "SCT"), (srt, "SRT"))] * 2
    ds.AnatomicRegionSequence = [code(f"A{n}", "99QA", "x") for n in range(60)]
    ds.BodyPartExamined = "LIVER"
    rows = extract_codes(ds)
    procedure = {(r.original_scheme, r.original_value) for r in rows if r.attribute == PCS}
    assert len(procedure) == 80
    assert {r.value for r in rows if r.attribute == PCS} == {sct for sct, _ in pairs}
    # 64 concepts in all; Body Part Examined is indexed beside them.
    assert len([r for r in rows if r.attribute == ARS and r.origin == ARS]) == 24
    assert [r.value for r in rows if r.origin == "BodyPartExamined"] == ["10200004"]
