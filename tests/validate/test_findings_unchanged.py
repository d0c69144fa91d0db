"""The validator's findings on a varied set of objects are what they were (findings_corpus.py).

About a thousand objects: pydicom's test files as read, as ingest reads them and broken in fixed
ways, plus the broken cases of validation_cases. A restructuring of the validator (for speed, say)
must give every finding unchanged, in the same order; a change of findings that is meant
regenerates ``data/findings_digests.json`` (see findings_corpus.py) in the same commit.
"""

from __future__ import annotations

import json

from findings_corpus import DIGESTS, compute


class TestFindingsUnchanged:
    def test_every_object_gives_the_recorded_findings(self) -> None:
        expected = json.loads(DIGESTS.read_text())
        got = compute()
        assert len(expected) > 900
        assert sorted(got) == sorted(expected), "the set of objects changed"
        changed = {
            name: {"recorded": expected[name], "now": got[name]}
            for name in expected
            if got[name] != expected[name]
        }
        assert not changed, json.dumps(dict(list(changed.items())[:10]), indent=1)

    def test_the_corpus_exercises_every_layer(self) -> None:
        rules: set[str] = set()
        for summary in json.loads(DIGESTS.read_text()).values():
            rules.update(summary["rules"])
        for rule in ("iod.type1-missing", "iod.type2-missing", "iod.type1c-missing",
                     "iod.type2c-missing", "iod.type1-empty", "iod.type1c-empty",
                     "iod.module-missing", "iod.not-in-iod", "iod.enumerated-value",
                     "iod.defined-term", "dict.value-invalid", "dict.vm", "dict.vr-mismatch",
                     "dict.vr-un", "dict.retired", "dict.unknown-tag", "dict.group-length",
                     "dict.private-creator-missing", "dict.private-reserved",
                     "dict.illegal-group", "dict.character-repertoire", "dict.charset-unknown",
                     "dict.value-length", "encoding.odd-length", "encoding.pixel-data-length"):
            assert rule in rules, rule
