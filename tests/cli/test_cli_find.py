"""`archivist find` with dotted code sequence keys (query by code from the command line)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from archivist.archive.archive import Archive
from archivist.archive.ingest import Origin
from archivist.cli.main import app
from archivist.config import load_settings
from archivist.testing.datasets import code_item as code
from archivist.testing.datasets import make_instance, new_uid

runner = CliRunner()


@pytest.fixture
def stored(tmp_path: Path) -> dict[str, str]:
    """An archive holding liver coded with SRT, liver coded with SCT and a local code."""
    data = tmp_path / "data"
    archive = Archive.open(load_settings(env={}, overrides={"data_dir": data}))
    uids = {"data": str(data)}
    try:
        for name, item in (("srt", code("T-62000", "SRT", "Liver")),
                           ("sct", code("10200004", "SCT", "Liver")),
                           ("local", code("P1", "99LOCAL", "Local procedure"))):
            uids[name] = new_uid()
            path = tmp_path / f"{name}.dcm"
            make_instance(path, study_uid=uids[name], extra={"ProcedureCodeSequence": [item]})
            archive.ingest.store_file(path, Origin("import"))
    finally:
        archive.close()
    return uids


def find(stored: dict[str, str], *args: str) -> tuple[int, str]:
    # A wide terminal, so that rich does not fold the table's cells.
    result = runner.invoke(app, ["find", "--data", stored["data"], *args],
                           env={"COLUMNS": "400"})
    return result.exit_code, result.output


class TestDottedKeys:
    def test_keyword_path_with_json(self, stored: dict[str, str]) -> None:
        status, out = find(stored, "ProcedureCodeSequence.CodeValue=10200004",
                           "ProcedureCodeSequence.CodingSchemeDesignator=SCT", "--json")
        assert status == 0, out
        found = {item["0020000D"]["Value"][0]: item["00081032"]["Value"][0]
                 for item in json.loads(out)}
        # The SCT code finds the object stored with the retired SRT code, which comes back as is.
        assert sorted(found) == sorted([stored["srt"], stored["sct"]])
        assert found[stored["srt"]]["00080100"]["Value"] == ["T-62000"]
        assert found[stored["srt"]]["00080102"]["Value"] == ["SRT"]

    def test_tag_path_and_table(self, stored: dict[str, str]) -> None:
        status, out = find(stored, "00081032.00080100=P1", "00081032.00080102=99LOCAL",
                           "StudyInstanceUID=")
        assert status == 0, out
        assert "1 match" in out and "1 matches" not in out
        assert "ProcedureCodeSequence" in out and "99LOCAL:P1 (Local procedure)" in out
        assert "10200004" not in out

    def test_code_value_alone_matches_any_scheme(self, stored: dict[str, str]) -> None:
        status, out = find(stored, "ProcedureCodeSequence.CodeValue=P1", "--json")
        assert status == 0, out
        assert [item["0020000D"]["Value"][0] for item in json.loads(out)] == [stored["local"]]

    @pytest.mark.parametrize("key", ["ProcedureCodeSequence.NoSuchKeyword=1",
                                     "ProcedureCodeSequence.CodeValue"])
    def test_malformed_key(self, stored: dict[str, str], key: str) -> None:
        status, out = find(stored, key)
        assert status == 2
        assert "dotted code sequence path" in out

    def test_other_sequence_is_refused(self, stored: dict[str, str]) -> None:
        status, out = find(stored, "ReferencedStudySequence.ReferencedSOPInstanceUID=1.2.3")
        assert status == 2
        assert "code sequences only" in out


class TestStudyLevelAggregates:
    """Modality and SOP Class UID at STUDY level match the studies holding such a series or
    instance (Modalities / SOP Classes in Study), as C-FIND and QIDO-RS match them."""

    def test_modality_and_sop_class_narrow_the_studies(self, tmp_path: Path) -> None:
        data = tmp_path / "data"
        archive = Archive.open(load_settings(env={}, overrides={"data_dir": data}))
        studies = {}
        try:
            for modality, sop_class in (("CT", "1.2.840.10008.5.1.4.1.1.2"),
                                        ("MR", "1.2.840.10008.5.1.4.1.1.4")):
                studies[modality] = new_uid()
                path = tmp_path / f"{modality}.dcm"
                make_instance(path, study_uid=studies[modality], modality=modality,
                              sop_class_uid=sop_class)
                archive.ingest.store_file(path, Origin("import"))
        finally:
            archive.close()
        where = {"data": str(data)}
        for key in ("Modality=MR", "00080060=MR", "SOPClassUID=1.2.840.10008.5.1.4.1.1.4"):
            status, out = find(where, key, "--json")
            assert status == 0, out
            assert [s["0020000D"]["Value"][0] for s in json.loads(out)] == [studies["MR"]], key
        status, out = find(where, "--json")
        assert status == 0 and len(json.loads(out)) == 2
        status, out = find(where, "Modality=US", "--json")
        assert status == 0 and json.loads(out) == []


def test_table_written_to_a_pipe_keeps_every_uid_whole(stored: dict[str, str]) -> None:
    """No terminal and no COLUMNS (`archivist find ... > file`, `| less`): the table keeps its
    natural width; at rich's default of 80 columns each UID was folded over several lines."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    run = subprocess.run([sys.executable, "-m", "archivist.cli.main", "find", "--data",
                          stored["data"], "StudyInstanceUID=", "PatientName=",
                          "StudyDescription="], capture_output=True, text=True, env=env,
                         timeout=120, check=False)
    assert run.returncode == 0, run.stderr
    for name in ("srt", "sct", "local"):
        assert stored[name] in run.stdout, run.stdout
    assert max(len(line) for line in run.stdout.splitlines()) < 400, run.stdout
