"""`archivist codes ...` run as a subprocess, as people run it."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys

import pytest


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "archivist.cli.main", "codes", *args],
        check=False, capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )


class TestSearchCommand:
    def test_text(self) -> None:
        out = run("search", "pneumothorax")
        assert out.returncode == 0, out.stderr
        assert out.stdout.splitlines()[0].startswith("SCT:36118008  Pneumothorax")
        assert "CID 6062" in out.stdout

    def test_several_words_and_options(self) -> None:
        out = run("search", "abdomen", "pelvis", "--scheme", "SCT", "--limit", "2")
        assert out.returncode == 0, out.stderr
        lines = out.stdout.splitlines()
        assert len(lines) == 2 and lines[0].startswith("SCT:818982008")

    def test_json_with_cid(self) -> None:
        out = run("search", "liv", "--cid", "4", "--json")
        assert out.returncode == 0, out.stderr
        data = json.loads(out.stdout)
        assert [r["value"] for r in data["results"]] == ["10200004", "303270005"]
        assert data["results"][0]["cids"][0] == 4

    def test_retired_value(self) -> None:
        out = run("search", "T-62000", "-n", "1")
        assert out.stdout.startswith("SCT:10200004  Liver")

    def test_nothing_found(self) -> None:
        out = run("search", "zzqxqzzq")
        assert out.returncode == 1
        assert "no code found" in out.stdout

    def test_bad_option(self) -> None:
        out = run("search", "liver", "--cid", "four")
        assert out.returncode == 2
        assert "--cid" in out.stderr
        out = run("search", "liver", "--cid", "3")
        assert out.returncode == 2 and "CID 3" in out.stderr

    def test_help_lists_the_options(self) -> None:
        out = run("search", "--help")
        assert out.returncode == 0
        for option in ("--scheme", "--cid", "--limit", "--json"):
            assert option in out.stdout

    @pytest.mark.skipif(os.environ.get("CI_SLOW") == "1", reason="timing on a loaded machine")
    def test_cold_start_is_quick(self) -> None:
        """Cold end-to-end cost of the search command (interpreter start included).

        The 300 ms target is measured with ``time uv run --frozen --no-sync archivist codes
        search pneumothorax`` (docs/terminology.md); here a heavy import sneaking in is looked
        for by name (pydicom, numpy), and a loose bound is put on the command's CPU time. Not
        on its wall-clock time: a loaded machine stretched that from ~0.3 s to 1.75 s (the
        bound was 2 s) while the CPU time stayed ~0.3 s.
        """
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        out = subprocess.run(
            [sys.executable, "-X", "importtime", "-m", "archivist.cli.main", "codes", "search",
             "pneumothorax"],
            check=False, capture_output=True, text=True, timeout=60,
            env={**os.environ, "PYTHONWARNINGS": "ignore"},
        )
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        assert out.returncode == 0, out.stderr[-2000:]
        imported = {line.rsplit("|", 1)[-1].strip().split(".")[0]
                    for line in out.stderr.splitlines() if line.startswith("import time:")}
        assert "archivist" in imported  # the import report is there to look at
        assert not imported & {"pydicom", "numpy"}, sorted(imported & {"pydicom", "numpy"})
        assert cpu < 2.0, cpu


class TestShowCommand:
    def test_text(self) -> None:
        out = run("show", "SCT:10200004")
        assert out.returncode == 0, out.stderr
        assert out.stdout.startswith("SCT:10200004  Liver")
        assert "SNOMED-RT (SRT, retired): T-62000" in out.stdout
        assert "CID 4 " in out.stdout and "Anatomic Region" in out.stdout
        # titles as PS3.16 writes them, not pydicom's names
        assert "Organ for Radiation Dose Estimate" in out.stdout
        assert "Liver structure (body structure)" in out.stdout

    def test_retired_code(self) -> None:
        out = run("show", "SRT:T-62000")
        assert out.returncode == 0
        assert "retired SNOMED code; use SCT:10200004" in out.stdout

    def test_json(self) -> None:
        data = json.loads(run("show", "SCT:36118008", "--json").stdout)
        assert data["meaning"] == "Pneumothorax" and data["srt"] == "D2-80300"
        assert data["cid_names"]["6062"] == "InterventionalProcedureComplication"
        assert data["cid_titles"]["6062"] == "Interventional Procedure Complication"

    def test_unknown_and_malformed(self) -> None:
        out = run("show", "SCT:12345678")
        assert out.returncode == 1 and "not in the PS3.16 tables" in out.stderr
        out = run("show", "36118008")
        assert out.returncode == 2 and "SCHEME:VALUE" in out.stderr


class TestCidAndSchemesCommands:
    def test_cid(self) -> None:
        out = run("cid", "4")
        assert out.returncode == 0, out.stderr
        lines = out.stdout.splitlines()
        assert lines[0] == "CID 4  Anatomic Region  (343 members)"
        assert len(lines) == 344

    def test_cid_search(self) -> None:
        out = run("cid", "4", "--search", "liv")
        assert out.stdout.splitlines()[1:] == [
            "  SCT:10200004   Liver",
            "  SCT:303270005  Liver and biliary structure",
        ]

    def test_cid_json_and_unknown(self) -> None:
        data = json.loads(run("cid", "244", "--json").stdout)
        assert data["name"] == "Laterality" and data["count"] == len(data["members"])
        out = run("cid", "3")
        assert out.returncode == 1 and "CID 3" in out.stderr

    def test_schemes(self) -> None:
        out = run("schemes")
        assert out.returncode == 0
        assert out.stdout.splitlines()[0].split()[:2] == ["SCT", "8152"]
        data = json.loads(run("schemes", "--json").stdout)
        assert {"designator": "SRT", "name": data[-3]["name"], "codes": 7990,
                "retired": True} in data


class TestQuickMain:
    """quick_main answers the quick commands without typer's parser, with the same output."""

    def test_same_output_as_typer(self, capsys: pytest.CaptureFixture[str]) -> None:
        from archivist.cli.codes import quick_main

        for argv in (["search", "abdomen", "pelvis", "-n", "3"], ["show", "SRT:T-62000"],
                     ["cid", "4", "--search", "liv", "--json"], ["schemes"]):
            assert quick_main(argv) == 0
            assert capsys.readouterr().out == run(*argv).stdout, argv

    def test_exit_status_and_fallback(self, capsys: pytest.CaptureFixture[str]) -> None:
        from archivist.cli.codes import quick_main

        assert quick_main(["show", "SCT:12345678"]) == 1
        assert quick_main(["search", "zzqxqzzq"]) == 1
        assert quick_main(["search", "--help"]) is None
        assert quick_main(["check", "x.dcm"]) is None
        assert quick_main([]) is None


def test_check_walks_folders_and_skips_non_dicom(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import shutil

    from archivist.testing.datasets import pydicom_test_file

    folder = tmp_path / "reports" / "nested"
    folder.mkdir(parents=True)
    sr = pydicom_test_file("test-SR.dcm")
    assert sr is not None
    shutil.copy(sr, folder / "sr.dcm")
    (tmp_path / "reports" / "notes.txt").write_text("not DICOM")
    done = run("check", "--json", str(tmp_path / "reports"))
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert [r["file"] for r in report] == [str(folder / "sr.dcm")]
    assert any(f["kind"] == "units.not-ucum" for f in report[0]["findings"])
