"""SR content items are checked against the content item table at every depth of the tree
(PS3.3 C.17.3: the Document Content Macro applies to every content item; QA s23).

The generated tables expand the Content Sequence one level; items below it were not checked:
a NUM without Measured Value Sequence (Type 2, C.18.1), a TEXT without Text Value, a CODE
without Concept Code Sequence or a Concept Name item without Code Meaning was reported at
depth 1 only. dciodvfy reports each of them at every depth.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from validation_cases import comprehensive_sr, write

from archivist.testing.datasets import code_item
from archivist.validate import validate_dataset
from archivist.validate.iod import MAX_CONTENT_DEPTH

CS = "/ContentSequence(0040,A730)[1]"


def _container(child: Dataset) -> Dataset:
    item = Dataset()
    item.RelationshipType = "CONTAINS"
    item.ValueType = "CONTAINER"
    item.ContinuityOfContent = "SEPARATE"
    item.ConceptNameCodeSequence = Sequence([code_item("111", "99X", "Group")])
    item.ContentSequence = Sequence([child])
    return item


def _text() -> Dataset:
    item = Dataset()
    item.RelationshipType = "CONTAINS"
    item.ValueType = "TEXT"
    item.ConceptNameCodeSequence = Sequence([code_item("121071", "DCM", "Finding")])
    item.TextValue = "x"
    return item


def _broken(kind: str) -> Dataset:
    item = _text()
    if kind == "num-no-value":
        item.ValueType = "NUM"
        del item.TextValue
    elif kind == "text-no-value":
        del item.TextValue
    elif kind == "code-no-concept":
        item.ValueType = "CODE"
        del item.TextValue
    elif kind == "codemeaning-missing":
        del item.ConceptNameCodeSequence[0].CodeMeaning
    elif kind == "no-concept-name":
        del item.ConceptNameCodeSequence
    return item


def _sr(item: Dataset, depth: int) -> Dataset:
    for _ in range(depth - 1):
        item = _container(item)
    ds = comprehensive_sr()
    ds.ContentSequence = Sequence([item])
    return ds


def _errors(ds: Dataset) -> list[tuple[str, str]]:
    return [(f.rule_id, f.path) for f in validate_dataset(ds) if f.severity.value == "error"]


# kind -> (rule id, path below the item)
CASES = {
    "num-no-value": ("iod.type2-missing", "/MeasuredValueSequence(0040,A300)"),
    "text-no-value": ("iod.type1c-missing", "/TextValue(0040,A160)"),
    "code-no-concept": ("iod.type1-missing", "/ConceptCodeSequence(0040,A168)"),
    "codemeaning-missing": (
        "iod.type1-missing", "/ConceptNameCodeSequence(0040,A043)[1]/CodeMeaning(0008,0104)"
    ),
    "no-concept-name": ("iod.type1c-missing", "/ConceptNameCodeSequence(0040,A043)"),
}


class TestEveryDepth:
    @pytest.mark.parametrize("depth", [1, 2, 3, 5])
    @pytest.mark.parametrize("kind", sorted(CASES))
    def test_content_item_rules_apply_at_any_depth(self, kind: str, depth: int) -> None:
        rule, below = CASES[kind]
        assert _errors(_sr(_broken(kind), depth)) == [(rule, CS * depth + below)]

    @pytest.mark.parametrize("depth", [1, 2, 4])
    def test_a_valid_tree_has_no_error(self, depth: int) -> None:
        assert _errors(_sr(_text(), depth)) == []

    def test_value_type_decides_at_depth(self) -> None:
        # A TEXT item needs no Measured Value Sequence, at depth 3 as at depth 1 (the
        # "included if" rules of the content item macros go down with the table).
        num = _broken("num-no-value")
        num.MeasuredValueSequence = Sequence()
        assert _errors(_sr(num, 3)) == []

    def test_empty_nested_content_sequence_is_reported(self) -> None:
        item = _container(_text())
        item.ContentSequence = Sequence()
        assert _errors(_sr(item, 2)) == [
            ("iod.type1c-empty", CS * 2 + "/ContentSequence(0040,A730)")
        ]

    def test_depth_is_bounded(self) -> None:
        ds = _sr(_broken("text-no-value"), MAX_CONTENT_DEPTH + 3)
        findings = validate_dataset(ds)
        deep = [f for f in findings if f.rule_id == "iod.content-depth"]
        assert len(deep) == 1 and deep[0].severity.value == "info"
        assert not any(f.rule_id == "iod.type1c-missing" for f in findings)

    def test_root_concept_name_required(self) -> None:
        ds = comprehensive_sr()
        del ds.ConceptNameCodeSequence
        assert ("iod.type1c-missing", "/ConceptNameCodeSequence(0040,A043)") in _errors(ds)

    def test_container_without_concept_name_is_not_reported(self) -> None:
        # "Required if ... CONTAINER and a heading is present": a container without a heading
        # needs none, and a heading cannot be told from the item.
        item = _container(_text())
        del item.ConceptNameCodeSequence
        assert _errors(_sr(item, 1)) == []


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy not installed")
class TestAgreesWithDciodvfy:
    @pytest.mark.parametrize("kind", sorted(CASES))
    def test_same_path_at_depth_2(self, kind: str, tmp_path: Path) -> None:
        ds = _sr(_broken(kind), 2)
        ours = {path.lower() for _, path in _errors(ds)}
        path = write(ds, tmp_path / f"{kind}.dcm")
        err = subprocess.run(["dciodvfy", "-new", str(path)], capture_output=True, text=True,
                             check=False).stderr
        theirs = {line.split("<", 1)[1].split(">", 1)[0].lower()
                  for line in err.splitlines() if line.startswith("Error") and "<" in line}
        assert ours == theirs


class TestByReference:
    def test_an_item_included_by_reference_has_no_value_type(self) -> None:
        # PS3.3 C.17.3.2.5: a by-reference item carries Relationship Type and Referenced Content
        # Item Identifier only (pydicom's test-SR.dcm has such items below depth 1).
        ref = Dataset()
        ref.RelationshipType = "INFERRED FROM"
        ref.ReferencedContentItemIdentifier = [1, 1]
        assert _errors(_sr(ref, 3)) == []
        del ref.ReferencedContentItemIdentifier
        assert _errors(_sr(ref, 3)) == [
            ("iod.type1-missing", CS * 3 + "/ValueType(0040,A040)")
        ]
