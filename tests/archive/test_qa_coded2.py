"""Query by code, second QA pass: wildcard items match a stored code as a (scheme, value) pair,
and the anatomy of each frame (Per-frame Functional Groups > Frame Anatomy) is indexed.

Objects are sent with DCMTK storescu to a real ``archivist serve`` and asked for over QIDO-RS
and C-FIND (pynetdicom).

- A wildcard item paired the normalised designator with the value as stored: Code Value
  ``T-32*`` with designator ``SCT`` found an object coded SRT T-32000, although no SCT code
  starts with ``T-32`` (PS3.4 C.2.2.2.6: an item matches when all its keys match one code).
- An Anatomic Region in a frame's Frame Anatomy Sequence (PS3.3 C.7.6.16.2.8) was not indexed:
  only the Shared Functional Groups were read.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind

from archivist.archive.coded import MAX_CODES_PER_INSTANCE, extract_codes
from archivist.testing.datasets import code_item as code
from archivist.testing.datasets import make_instance, new_uid
from archivist.testing.server import ServerProcess

AET = "ARCHIVIST"
ENHANCED_CT = "1.2.840.10008.5.1.4.1.1.2.1"


def storescu() -> str:
    """DCMTK's storescu (pynetdicom installs a Python app of the same name in the venv)."""
    venv_bin = os.path.dirname(sys.executable)
    dirs = [d for d in os.environ.get("PATH", "").split(os.pathsep)
            if d and os.path.abspath(d) != venv_bin]
    found = shutil.which("storescu", path=os.pathsep.join(dirs))
    if found is None:
        pytest.fail("storescu (DCMTK) is required: apt-get install dcmtk")
    return found


def frame_anatomy(item: Dataset) -> Dataset:
    """One functional group item whose Frame Anatomy carries `item` as its Anatomic Region."""
    anatomy = Dataset()
    anatomy.AnatomicRegionSequence = [item]
    anatomy.FrameLaterality = "U"
    group = Dataset()
    group.FrameAnatomySequence = [anatomy]
    return group


def per_frame(groups: list[Dataset]) -> dict[str, Any]:
    return {"PerFrameFunctionalGroupsSequence": groups, "NumberOfFrames": len(groups)}


@pytest.fixture(scope="module")
def stored(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[ServerProcess, dict[str, str]]]:
    root = tmp_path_factory.mktemp("coded2")
    specs: dict[str, dict[str, Any]] = {
        "srt_heart": {"extra": {"AnatomicRegionSequence": [code("T-32000", "SRT", "Heart")]}},
        "sct_heart": {"extra": {"AnatomicRegionSequence": [code("80891009", "SCT", "Heart")]}},
        # Three frames of liver (coded SRT), two of kidney; nothing in the shared groups.
        "frames": {"frames": 5, "sop_class_uid": ENHANCED_CT, "extra": per_frame(
            [frame_anatomy(code("T-62000", "SRT", "Liver")) for _ in range(3)]
            + [frame_anatomy(code("64033007", "SCT", "Kidney")) for _ in range(2)])},
    }
    studies: dict[str, str] = {}
    paths: list[str] = []
    for name, spec in specs.items():
        studies[name] = new_uid()
        path = root / f"{name}.dcm"
        make_instance(path, study_uid=studies[name], patient_id=f"QA-{name}", **spec)
        paths.append(str(path))
    srv = ServerProcess(root / "data").start()
    try:
        sent = subprocess.run([storescu(), "-aec", AET, "127.0.0.1", str(srv.dicom_port), *paths],
                              capture_output=True, text=True, timeout=120, check=False)
        assert sent.returncode == 0, sent.stdout + sent.stderr
        yield srv, studies
    finally:
        srv.stop()


def qido(srv: ServerProcess, sequence: str, value: str | None, scheme: str | None,
         level: str = "studies") -> list[str]:
    params = [("includefield", "0020000D")]
    if value is not None:
        params.append((f"{sequence}.CodeValue", value))
    if scheme is not None:
        params.append((f"{sequence}.CodingSchemeDesignator", scheme))
    url = f"{srv.url}/dicomweb/{level}?{urllib.parse.urlencode(params)}"
    request = urllib.request.Request(url, headers={"Accept": "application/dicom+json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        body = response.read()
        assert response.status in (200, 204), response.status
    found = json.loads(body) if body else []
    return sorted(str(r["0020000D"]["Value"][0]) for r in found)


def cfind(srv: ServerProcess, value: str, scheme: str) -> list[str]:
    ae = AE(ae_title="QA")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = ae.associate("127.0.0.1", srv.dicom_port, ae_title=AET)
    assert assoc.is_established
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "STUDY"
    identifier.StudyInstanceUID = ""
    identifier.AnatomicRegionSequence = [code(value, scheme, "")]
    found: list[str] = []
    try:
        for status, ds in assoc.send_c_find(identifier, StudyRootQueryRetrieveInformationModelFind):
            assert status.Status in (0x0000, 0xFF00, 0xFF01), hex(status.Status)
            if ds is not None and status.Status in (0xFF00, 0xFF01):
                found.append(str(ds.StudyInstanceUID))
    finally:
        assoc.release()
    return sorted(found)


ARS = "AnatomicRegionSequence"


class TestWildcardMatchesThePair:
    def test_sct_with_an_srt_pattern_finds_nothing(
        self, stored: tuple[ServerProcess, dict[str, str]]
    ) -> None:
        srv, _ = stored
        assert qido(srv, ARS, "T-32*", "SCT") == []
        assert cfind(srv, "T-32*", "SCT") == []

    def test_each_scheme_with_its_own_pattern(
        self, stored: tuple[ServerProcess, dict[str, str]]
    ) -> None:
        srv, ids = stored
        assert qido(srv, ARS, "T-32*", "SRT") == [ids["srt_heart"]]
        assert cfind(srv, "T-32*", "SRT") == [ids["srt_heart"]]
        # The SCT pattern finds the SRT object too, on its normalised code.
        both = sorted([ids["srt_heart"], ids["sct_heart"]])
        assert qido(srv, ARS, "8089*", "SCT") == both
        assert cfind(srv, "8089100?", "SCT") == both
        assert qido(srv, ARS, "8089*", "SRT") == []

    def test_one_key_alone_still_matches_either_form(
        self, stored: tuple[ServerProcess, dict[str, str]]
    ) -> None:
        srv, ids = stored
        assert qido(srv, ARS, "T-32*", None) == [ids["srt_heart"]]
        assert ids["srt_heart"] in qido(srv, ARS, "8089*", None)
        assert qido(srv, ARS, None, "SRT") == sorted([ids["srt_heart"], ids["frames"]])
        assert qido(srv, ARS, "T-32000", "SRT\\SCT") == [ids["srt_heart"]]


class TestPerFrameAnatomy:
    def test_each_frames_region_is_found(
        self, stored: tuple[ServerProcess, dict[str, str]]
    ) -> None:
        srv, ids = stored
        assert qido(srv, ARS, "10200004", "SCT") == [ids["frames"]]
        assert qido(srv, ARS, "T-62000", "SRT") == [ids["frames"]]
        assert qido(srv, ARS, "64033007", "SCT", level="series") == [ids["frames"]]
        assert cfind(srv, "64033007", "SCT") == [ids["frames"]]

    def test_each_code_once_and_capped(self) -> None:
        ds = Dataset()
        ds.PerFrameFunctionalGroupsSequence = [frame_anatomy(code("T-62000", "SRT", "Liver"))
                                               for _ in range(500)]
        rows = extract_codes(ds)
        assert [(r.attribute, r.scheme, r.value, r.original_scheme) for r in rows] == [
            (ARS, "SCT", "10200004", "SRT")]
        ds.PerFrameFunctionalGroupsSequence = [frame_anatomy(code(f"Z{n}", "99QA", f"R{n}"))
                                               for n in range(200)]
        assert len(extract_codes(ds)) == MAX_CODES_PER_INSTANCE

    def test_shared_and_per_frame_together(self) -> None:
        ds = Dataset()
        ds.SharedFunctionalGroupsSequence = [frame_anatomy(code("80891009", "SCT", "Heart"))]
        ds.PerFrameFunctionalGroupsSequence = [frame_anatomy(code("80891009", "SCT", "Heart")),
                                               Dataset(),
                                               frame_anatomy(code("10200004", "SCT", "Liver"))]
        assert sorted(r.value for r in extract_codes(ds)) == ["10200004", "80891009"]
