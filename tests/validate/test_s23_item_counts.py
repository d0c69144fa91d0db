"""Item counts of sequences: "Only a single Item shall be included in this Sequence" (PS3.3
attribute descriptions, kept in ``validate/item_counts.py``) and one Per-frame Functional
Groups item per frame (PS3.3 C.7.6.16). Neither was checked (QA s23); dciodvfy reports both.
"""

from __future__ import annotations

import copy
import shutil
import subprocess
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from validation_cases import comprehensive_sr, ct, write

from archivist.testing.datasets import code_item
from archivist.validate import validate_dataset
from archivist.validate.item_counts import SINGLE_ITEM, SINGLE_ITEM_IN
from archivist.validate.standard import tables


def _counts(ds: Dataset) -> list[tuple[str, str]]:
    return [(f.path, f.reference) for f in validate_dataset(ds) if f.rule_id == "iod.item-count"]


def _segmentation() -> Dataset:
    return pydicom.dcmread(get_testdata_file("liver_1frame.dcm"))


def _one_frame_segmentation() -> Dataset:
    ds = _segmentation()
    ds.NumberOfFrames = 1
    del ds.PerFrameFunctionalGroupsSequence[1:]
    return ds


class TestPerFrameItems:
    def test_liver_1frame_has_three_items_for_one_frame(self) -> None:
        # pydicom's liver_1frame.dcm: no Number of Frames (one frame, PS3.3 C.7.6.6), 3 items.
        found = [f for f in validate_dataset(_segmentation()) if f.rule_id == "iod.item-count"]
        assert [(f.path, f.severity.value) for f in found] == [
            ("/PerFrameFunctionalGroupsSequence(5200,9230)", "error")
        ]
        assert "3 items" in found[0].message and "(1)" in found[0].message
        assert found[0].reference == "PS3.3 C.7.6.16"

    def test_as_many_items_as_frames(self) -> None:
        assert _counts(_one_frame_segmentation()) == []
        ds = _segmentation()
        ds.NumberOfFrames = 3
        assert _counts(ds) == []

    def test_more_frames_than_items(self) -> None:
        ds = _one_frame_segmentation()
        ds.NumberOfFrames = 2
        assert _counts(ds) == [("/PerFrameFunctionalGroupsSequence(5200,9230)",
                                "PS3.3 C.7.6.16")]


class TestSingleItem:
    def test_shared_functional_groups(self) -> None:
        ds = _one_frame_segmentation()
        ds.SharedFunctionalGroupsSequence.append(copy.deepcopy(ds.SharedFunctionalGroupsSequence[0]))
        assert _counts(ds) == [("/SharedFunctionalGroupsSequence(5200,9229)", "PS3.3 C.7.6.16")]

    def test_functional_group_macro(self) -> None:
        ds = _one_frame_segmentation()
        group = ds.PerFrameFunctionalGroupsSequence[0]
        group.PlanePositionSequence.append(copy.deepcopy(group.PlanePositionSequence[0]))
        assert _counts(ds) == [(
            "/PerFrameFunctionalGroupsSequence(5200,9230)[1]/PlanePositionSequence(0020,9113)",
            "PS3.3 C.7.6.16.2.3",
        )]

    def test_sr_root_concept_name(self) -> None:
        ds = comprehensive_sr()
        ds.ConceptNameCodeSequence.append(code_item("2", "99X", "Other"))
        assert _counts(ds) == [("/ConceptNameCodeSequence(0040,A043)", "PS3.3 C.17.3")]

    def test_sr_nested_concept_code(self) -> None:
        ds = comprehensive_sr()
        item = Dataset()
        item.RelationshipType = "CONTAINS"
        item.ValueType = "CODE"
        item.ConceptNameCodeSequence = Sequence([code_item("1", "99X", "a")])
        item.ConceptCodeSequence = Sequence([code_item("2", "99X", "b"), code_item("3", "99X", "c")])
        container = ds.ContentSequence[0]
        container.ValueType = "CONTAINER"
        container.ContinuityOfContent = "SEPARATE"
        del container.TextValue
        container.ContentSequence = Sequence([item])
        path = ("/ContentSequence(0040,A730)[1]/ContentSequence(0040,A730)[1]"
                "/ConceptCodeSequence(0040,A168)")
        assert _counts(ds) == [(path, "PS3.3 C.18.2")]

    def test_ct_anatomic_region(self) -> None:
        ds = ct()
        ds.AnatomicRegionSequence = Sequence([code_item("1", "SCT", "a")])
        assert _counts(ds) == []
        ds.AnatomicRegionSequence.append(code_item("2", "SCT", "b"))
        assert _counts(ds) == [("/AnatomicRegionSequence(0008,2218)", "PS3.3 10.5")]

    def test_sequences_with_more_items_are_not_reported(self) -> None:
        ds = ct()
        ds.ProcedureCodeSequence = Sequence([code_item("1", "99X", "a"), code_item("2", "99X", "b")])
        ds.AnatomicRegionSequence = Sequence([code_item("1", "SCT", "a")])
        assert _counts(ds) == []

    def test_the_list_names_real_keywords_and_modules(self) -> None:
        from pydicom.datadict import tag_for_keyword

        std = tables()
        for (module, keyword) in SINGLE_ITEM:
            assert tag_for_keyword(keyword) is not None, keyword
            assert module == "*" or std.has_module(module), module
        for (parent, keyword) in SINGLE_ITEM_IN:
            assert tag_for_keyword(parent) and tag_for_keyword(keyword)


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy not installed")
class TestAgreesWithDciodvfy:
    @pytest.mark.parametrize("case", ["per-frame", "shared", "sr-concept-name", "ct-anatomic"])
    def test_dciodvfy_reports_the_same_sequence(self, case: str, tmp_path: Path) -> None:
        if case == "per-frame":
            ds = _segmentation()
        elif case == "shared":
            ds = _one_frame_segmentation()
            ds.SharedFunctionalGroupsSequence.append(
                copy.deepcopy(ds.SharedFunctionalGroupsSequence[0]))
        elif case == "sr-concept-name":
            ds = comprehensive_sr()
            ds.ConceptNameCodeSequence.append(code_item("2", "99X", "Other"))
        else:
            ds = ct()
            ds.AnatomicRegionSequence = Sequence([code_item("1", "SCT", "a"),
                                                  code_item("2", "SCT", "b")])
        ours = {path.lower() for path, _ in _counts(ds)}
        if case == "per-frame" or case == "shared":
            path = tmp_path / "x.dcm"
            ds.save_as(path)
        else:
            path = write(ds, tmp_path / "x.dcm")
        err = subprocess.run(["dciodvfy", "-new", str(path)], capture_output=True, text=True,
                             check=False).stderr
        theirs = {line.split("<", 1)[1].split(">", 1)[0].lower() for line in err.splitlines()
                  if line.startswith("Error") and ("number of Items" in line
                                                   or "Number of items" in line)}
        assert ours and ours == theirs
