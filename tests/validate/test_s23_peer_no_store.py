"""check-peer with --no-store: with nothing of the probe's on the peer, no C-FIND identifier
comes back, so the checks of returned keys and matching are skipped, not passed (QA s23: every
C-FIND check said "pass ... requested keys returned, matching applied"). The "no match" query
is genuinely tested and still passes.
"""

from __future__ import annotations

from validate_peers import pynetdicom_qr_scp

from archivist.validate.peer import FAIL, PASS, SKIP, PeerOptions, probe_peer


class TestNoStore:
    def test_find_checks_without_identifiers_are_skipped(self) -> None:
        with pynetdicom_qr_scp() as (port, store):
            report = probe_peer(PeerOptions("127.0.0.1", port, "QRSCP", store=False, timeout=5))
        assert store == {}
        finds = {c.name: c for c in report.checks if c.name.startswith("C-FIND")}
        assert len(finds) == 6
        no_match = finds.pop("C-FIND Study Root STUDY no match matching")
        assert no_match.outcome == PASS and "no match, as expected" in no_match.detail
        for check in finds.values():
            assert check.outcome == SKIP, (check.name, check.outcome, check.detail)
            assert "requested keys returned" not in check.detail
            assert "not checked" in check.detail
        assert report.ok
        assert report.counts()[SKIP] >= 5

    def test_with_a_stored_object_they_pass(self) -> None:
        with pynetdicom_qr_scp() as (port, _store):
            report = probe_peer(PeerOptions("127.0.0.1", port, "QRSCP", timeout=5))
        finds = [c for c in report.checks if c.name.startswith("C-FIND")]
        assert len(finds) == 6 and all(c.outcome == PASS for c in finds)
        assert sum("requested keys returned" in c.detail for c in finds) == 5

    def test_a_peer_that_answers_nothing_still_fails(self) -> None:
        # Stored, but the peer ignores matching and drops keys: failures, never skipped.
        with pynetdicom_qr_scp(honest=False) as (port, _store):
            report = probe_peer(PeerOptions("127.0.0.1", port, "QRSCP", timeout=5))
        finds = [c for c in report.checks if c.name.startswith("C-FIND")]
        assert any(c.outcome == FAIL for c in finds)
        assert not any(c.outcome == SKIP for c in finds)
