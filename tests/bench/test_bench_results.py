"""Results of the harness: JSON and Markdown, and "not available" never shown as a number."""

import json
from pathlib import Path

from bench.clients import count_parts, multipart_dicom, split
from bench.profile import categorise, parse_raw, summarise
from bench.results import NOT_AVAILABLE, WRONG, Record, Results


def _results() -> Results:
    r = Results(meta={"started": "2026-01-01-000000", "load_start": (0.5, 0.4, 0.3)})
    r.add(Record("ingest", "ct_ingest", "archivist", "inst/s", "higher", [300.0, 330.0, 360.0]))
    r.add(Record("ingest", "ct_ingest", "orthanc", "inst/s", "higher", [200.0, 220.0, 240.0]))
    r.add(Record("dicomweb", "one_frame", "archivist", "ms", "lower", status=NOT_AVAILABLE,
                 detail={"http_status": 404}))
    r.add(Record("dicomweb", "one_frame", "orthanc", "ms", "lower", [4.0, 5.0]))
    return r


class TestResults:
    def test_markdown_cells_and_ratio(self) -> None:
        md = _results().to_markdown()
        line = next(ln for ln in md.splitlines() if ln.startswith("| ct_ingest"))
        assert "330 (357)" in line and "220 (238)" in line and "| 1.50 |" in line

    def test_not_available_is_never_a_number(self) -> None:
        md = _results().to_markdown()
        line = next(ln for ln in md.splitlines() if ln.startswith("| one_frame"))
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[2] == "not available (HTTP 404)"
        assert cells[-1] == "–"  # no ratio either

    def test_wrong_counts_are_flagged(self) -> None:
        r = _results()
        r.records[1].status = WRONG
        assert "**wrong count**" in r.to_markdown()

    def test_json_round_trip(self, tmp_path: Path) -> None:
        json_path, md_path = _results().write(tmp_path, "run")
        data = json.loads(json_path.read_text())
        assert data["meta"]["load_start"] == [0.5, 0.4, 0.3]
        first = data["records"][0]
        assert first["summary"]["median"] == 330.0 and first["values"] == [300.0, 330.0, 360.0]
        assert data["records"][2]["summary"] is None
        assert md_path.read_text().startswith("# Benchmark run")


class TestClientsHelpers:
    def test_split_keeps_order_and_everything(self) -> None:
        items = [Path(str(i)) for i in range(10)]
        chunks = split(items, 4)
        assert [len(c) for c in chunks] == [3, 3, 2, 2]
        assert [p for c in chunks for p in c] == items
        assert split(items[:2], 4) == [[items[0]], [items[1]]]

    def test_multipart_body(self, tmp_path: Path) -> None:
        files = []
        for i in range(3):
            files.append(tmp_path / f"{i}.dcm")
            files[-1].write_bytes(bytes([i]) * 10)
        body, ctype = multipart_dicom(files)
        assert ctype.startswith('multipart/related; type="application/dicom"; boundary=')
        assert count_parts(body, ctype) == 3
        assert count_parts(body, "application/json") == 0


class TestProfileSummary:
    SRC = "/work/main/src/archivist"
    LIB = "/work/main/.venv/lib/python3.11/site-packages"
    RAW = (
        f"<module> ({SRC}/cli/main.py:1);run ({LIB}/pynetdicom/dul.py:10);"
        f"decode ({LIB}/pynetdicom/pdu.py:5) 30\n"
        f"<module> ({SRC}/cli/main.py:1);store ({SRC}/archive/ingest.py:50);"
        f"fsync ({SRC}/store/blob.py:20) 50\n"
        f"<module> ({SRC}/cli/main.py:1);store ({SRC}/archive/ingest.py:50);"
        f"execute ({LIB}/sqlalchemy/engine/base.py:9) 20\n"
    )

    def test_categories_and_tops(self) -> None:
        stacks = parse_raw(self.RAW)
        assert [n for _, n in stacks] == [30, 50, 20]
        assert categorise(stacks[1][0]) == "fsync / file writes"
        s = summarise(stacks)
        assert s["samples"] == 100
        cats = {name: pct for name, _, pct in s["categories"]}
        assert cats == {"fsync / file writes": 50.0, "pynetdicom PDU/DIMSE decode": 30.0,
                        "SQLite + SQLAlchemy": 20.0}
        assert s["self"][0][0] == "fsync (archivist/store/blob.py)"
        # <module> is on every stack and left out; store() holds 70 of the 100 samples.
        assert s["inclusive"][0] == ("store (archivist/archive/ingest.py)", 70, 70.0)
        assert not any(name.startswith("<module>") for name, _, _ in s["inclusive"])
