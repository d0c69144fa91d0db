"""Context group titles read as PS3.16 writes them (QA s20): pydicom's names glue lower-case
connectors to the word before them (``ReasonforRemovalfromOperationalUse``), and the title split
only at capitals kept them glued ("Reasonfor Removalfrom Operational Use")."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
from starlette.requests import Request

from archivist import terminology
from archivist.terminology.catalogue import default_terminology
from archivist.web.codes import get_cid


@pytest.mark.parametrize(
    ("cid", "title"),
    [
        (7031, "Reason for Removal from Operational Use"),
        (7009, "Purpose of Reference to Predecessor Report"),
        (3031, "Lead Location Near or in Muscle"),
        (6101, "Chest Finding or Feature"),
        (4030, "CT, MR and PET Anatomy Imaged"),
        (7551, "Generic Purpose of Reference to Images and Coordinates in Measurement"),
        (6085, "Therapies for Breast"),
        (12111, "Abdominopelvic Artery (Paired)"),
        (7030, "Institutional Department/Unit/Service"),
        (6304, "Prostate Sector Anatomy from PIRADS v2.1"),
        (6333, "mpMRI Assessment Type"),
        (4, "Anatomic Region"),
    ],
)
def test_title(cid: int, title: str) -> None:
    assert terminology.context_group(cid).title == title
    assert default_terminology().cid_title(cid) == title


class TestNoGluedConnector:
    def test_words_ending_like_a_connector_stay_whole(self) -> None:
        titles = {c: default_terminology().cid_title(c) or "" for c in (3730, 7101, 6301, 4031)}
        assert titles == {
            3730: "Insurance Payor",
            7101: "Brain Atlas Fiducial",
            6301: "Prostate Sector Anatomy from PIRADS v2",
            4031: "Common Anatomic Region",
        }

    def test_no_title_keeps_for_from_of_or_with_glued(self) -> None:
        term = default_terminology()
        glued = {
            word
            for cid in term.cid_numbers
            for word in re.findall(r"\b[A-Z][a-z]+(?:for|from|of|with)\b", term.cid_title(cid) or "")
        }
        assert glued == set()

    def test_unknown_cid(self) -> None:
        assert default_terminology().cid_title(3) is None


class TestShown:
    def test_cli(self) -> None:
        out = subprocess.run(
            [sys.executable, "-m", "archivist.cli.main", "codes", "cid", "7031", "--json"],
            check=False, capture_output=True, text=True, timeout=60,
            env={**os.environ, "PYTHONWARNINGS": "ignore"},
        )
        assert out.returncode == 0, out.stderr
        data = json.loads(out.stdout)
        assert data["title"] == "Reason for Removal from Operational Use"
        assert data["name"] == "ReasonforRemovalfromOperationalUse"

    def test_http(self) -> None:
        scope = {"type": "http", "method": "GET", "path": "/api/cids/7031", "query_string": b"",
                 "headers": [], "path_params": {"number": "7031"}}
        response = get_cid(Request(scope))
        assert response.status_code == 200
        body = json.loads(bytes(response.body))
        assert body["title"] == "Reason for Removal from Operational Use"
