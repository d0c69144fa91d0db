"""Found by black-box QA of the terminology service: multi-valued code attributes, empty items of
code sequences, look-ups typed as people type them (``sct:...``, ``CID4``), and bad input that
must be a clear usage error or 4xx."""

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
from typing import Any

import pytest
import uvicorn
from pydicom.dataset import Dataset
from starlette.applications import Starlette

from archivist import terminology
from archivist.archive.coded import extract_codes
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


def code(value: object, scheme: str = "SCT", meaning: str = "Heart") -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "archivist.cli.main", "codes", *args],
        check=False, capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )


class TestMultiValuedCodeValue:
    """Code Value has VM 1; an object that carries two values must neither be indexed nor
    answered as the Python repr of a list (``"['80891009', '10200004']"``)."""

    def test_indexed_on_the_first_value(self) -> None:
        ds = Dataset()
        ds.AnatomicRegionSequence = [code(["T-32000", "T-62000"], "SRT")]
        rows = extract_codes(ds)
        assert [(r.scheme, r.value, r.original_scheme, r.original_value) for r in rows] == [
            ("SCT", "80891009", "SRT", "T-32000")]

    def test_check_names_the_multiplicity(self) -> None:
        ds = Dataset()
        ds.AnatomicRegionSequence = [code(["80891009", "10200004"])]
        findings = terminology.check_dataset(ds)
        assert [(f.kind.value, f.severity.value) for f in findings] == [
            ("structure.value-multiple", "error")]
        assert "CodeValue has 2 values" in findings[0].message
        assert findings[0].code == ("SCT", "80891009")


class TestEmptyCodeItem:
    def test_empty_item_of_a_code_sequence_is_an_error(self) -> None:
        ds = Dataset()
        ds.AnatomicRegionSequence = [Dataset()]
        ds.ProcedureCodeSequence = [code("80891009"), Dataset()]
        findings = terminology.check_dataset(ds)
        assert {(f.path, f.kind.value) for f in findings} >= {
            ("AnatomicRegionSequence[0]", "structure.value-missing"),
            ("ProcedureCodeSequence[1]", "structure.value-missing"),
        }
        assert not [f for f in findings if f.path == "ProcedureCodeSequence[0]"]

    def test_items_of_other_sequences_are_not_codes(self) -> None:
        ds = Dataset()
        other = Dataset()
        other.ReferencedSOPInstanceUID = "1.2.3"
        ds.ReferencedImageSequence = [other]
        assert terminology.check_dataset(ds) == []


class TestCommandLine:
    def test_designator_in_any_case(self) -> None:
        out = run("show", "sct:80891009")
        assert out.returncode == 0, out.stderr
        assert out.stdout.startswith("SCT:80891009  Heart")
        assert "retired" not in out.stdout.splitlines()[1]
        out = run("show", "srt:T-32000")
        assert out.returncode == 0, out.stderr
        assert "note: SRT:T-32000 is a retired SNOMED code; use SCT:80891009" in out.stdout

    @pytest.mark.parametrize("number", ["CID4", "cid4", "4"])
    def test_cid_as_written(self, number: str) -> None:
        out = run("cid", number, "--search", "liv")
        assert out.returncode == 0, out.stderr
        assert out.stdout.startswith("CID 4  Anatomic Region")

    @pytest.mark.parametrize("number", ["4_0", "٤", "x"])
    def test_cid_not_a_number(self, number: str) -> None:
        out = run("cid", number)
        assert out.returncode == 2
        assert "error:" in out.stderr and "Traceback" not in out.stderr

    def test_negative_limit_is_a_usage_error(self) -> None:
        out = run("search", "heart", "--limit", "-1")
        assert out.returncode == 2
        assert "--limit" in out.stderr


class TestHttp:
    def test_designator_in_any_case(self, base_url: str) -> None:
        status, body = get(base_url, "/api/codes/sct/80891009")
        assert status == 200 and body["value"] == "80891009"
        assert "requested" not in body
        status, body = get(base_url, "/api/codes/srt/T-32000")
        assert status == 200 and body["value"] == "80891009"
        assert body["requested"] == {"scheme": "SRT", "value": "T-32000"}

    @pytest.mark.parametrize("path", ["/api/codes/SCT/%20", "/api/codes/%20/80891009"])
    def test_empty_part_is_400(self, base_url: str, path: str) -> None:
        status, body = get(base_url, path)
        assert status == 400 and body["error"] == "bad request"

    def test_huge_value_is_not_echoed_whole(self, base_url: str) -> None:
        status, body = get(base_url, "/api/codes/SCT/" + "9" * 5000)
        assert status == 404
        assert len(body["detail"]) < 200

    @pytest.mark.parametrize("number", ["4_0", urllib.parse.quote("٤"), "-1"])
    def test_cid_not_a_number(self, base_url: str, number: str) -> None:
        status, body = get(base_url, f"/api/cids/{number}")
        assert status == 400, body
