"""With validation on (the default, warn), a huge deferred text value is checked a chunk at a
time: a 16 MiB UT cost twice its size (read whole, then decoded), and a finding quoted the
whole value. Its findings are the same kinds as for a short value."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from tests.archive.test_qa_large_values import LARGE, LIMIT, MIB, _peak, _save, _warm

from archivist.archive.archive import Archive
from archivist.archive.ingest import Origin, StoreStatus


@pytest.mark.parametrize("implicit", [False, True], ids=["explicit", "implicit"])
def test_a_huge_text_value_is_validated_in_steps(open_archive: Callable[..., Archive],
                                                 tmp_path: Path, implicit: bool) -> None:
    archive = open_archive()
    assert archive.settings.validation_policy == "warn"
    _warm(archive, tmp_path, implicit)
    text = b"a" * (LARGE - 4) + b"\x01\xe9ab"  # a control character, a non-ASCII one
    path = tmp_path / "huge-ut.dcm"
    ds = _save(path, {0x0040A160: ("UT", text)}, implicit)
    result, peak = _peak(lambda: archive.ingest.store_file(path, Origin("stow")))
    assert result.status is StoreStatus.STORED  # type: ignore[attr-defined]
    assert peak < LIMIT, f"validating a {LARGE >> 20} MiB UT peaked at {peak / MIB:.1f} MiB"
    found = archive.index.validation_of(ds.SOPInstanceUID)
    assert found is not None
    rules = {f["rule_id"]: f["message"] for f in found["findings"]
             if f["path"].startswith("(0040,A160)") or "A160" in f["path"]}
    assert "dict.value-invalid" in rules and "control characters" in rules["dict.value-invalid"]
    assert "dict.character-repertoire" in rules
    assert max(len(m) for m in rules.values()) < 300


def test_a_long_quoted_value_is_cut_in_the_finding(open_archive: Callable[..., Archive],
                                                   tmp_path: Path) -> None:
    """A 30,000-character LO (its limit is 64) is reported with its start, not quoted whole."""
    archive = open_archive()
    path = tmp_path / "long-lo.dcm"
    ds = _save(path, {0x00081090: ("LO", b"M" * 30000)}, implicit=True)  # Model Name
    archive.ingest.store_file(path, Origin("stow"))
    found = archive.index.validation_of(ds.SOPInstanceUID)
    assert found is not None
    messages = [f["message"] for f in found["findings"] if "exceeds the maximum of 64" in
                f["message"]]
    assert messages and len(messages[0]) < 400 and "30000 characters" in messages[0]
