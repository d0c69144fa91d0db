"""`archivist validate` and `archivist check-peer` on the command line."""

from __future__ import annotations

import json
from pathlib import Path

from pydicom.data import get_testdata_file
from typer.testing import CliRunner
from validation_cases import ct, write

from archivist.cli.main import app

runner = CliRunner()


def _broken(tmp_path: Path) -> Path:
    ds = ct()
    del ds.Modality
    return write(ds, tmp_path / "broken.dcm")


class TestValidateCommand:
    def test_text_ok(self) -> None:
        result = runner.invoke(app, ["validate", get_testdata_file("CT_small.dcm")])
        assert result.exit_code == 0, result.output
        assert "OK" in result.output and "Summary: 1 file(s), 0 with errors" in result.output

    def test_text_errors_grouped_by_module(self, tmp_path: Path) -> None:
        result = runner.invoke(app, ["validate", str(_broken(tmp_path))])
        assert result.exit_code == 1
        assert "General Series" in result.output
        assert "iod.type1-missing" in result.output
        assert "PS3.3 C.7.3.1" in " ".join(result.output.split())

    def test_json_and_folder(self, tmp_path: Path) -> None:
        _broken(tmp_path)
        (tmp_path / "sub").mkdir()
        write(ct(), tmp_path / "sub" / "ok.dcm")
        result = runner.invoke(app, ["validate", str(tmp_path), "--json"])
        assert result.exit_code == 1
        data = json.loads(result.output)
        assert data["files"] == 2 and data["files_with_errors"] == 1
        finding = next(
            f for r in data["reports"] for f in r["findings"] if f["rule_id"] == "iod.type1-missing"
        )
        assert set(finding) == {"severity", "rule_id", "path", "module", "iod", "message",
                                "reference"}

    def test_non_dicom_in_folder_is_skipped(self, tmp_path: Path) -> None:
        write(ct(), tmp_path / "ok.dcm")
        (tmp_path / "notes.txt").write_text("not DICOM")
        result = runner.invoke(app, ["validate", str(tmp_path), "--json"])
        assert result.exit_code == 0, result.output
        data = json.loads(result.output)
        assert data["files"] == 1 and len(data["skipped_non_dicom"]) == 1
        named = runner.invoke(app, ["validate", str(tmp_path / "notes.txt")])
        assert named.exit_code == 1 and "encoding.unreadable" in named.output

    def test_html(self, tmp_path: Path) -> None:
        out = tmp_path / "report.html"
        result = runner.invoke(app, ["validate", str(_broken(tmp_path)), "--html", str(out)])
        assert result.exit_code == 1
        html = out.read_text()
        assert html.startswith("<!DOCTYPE html>") and "iod.type1-missing" in html
        assert "<script" not in html

    def test_help(self) -> None:
        for command in ("validate", "check-peer"):
            result = runner.invoke(app, [command, "--help"])
            assert result.exit_code == 0
            assert "--json" in result.output
