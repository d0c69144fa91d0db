"""Values JSON has no number for (QA s22): an FL or FD NaN or infinity, a DS beyond a double
(``1e400``). WADO-RS metadata wrote them as bare ``NaN`` / ``Infinity``, which is not JSON
(RFC 8259): a browser's JSON.parse refused the whole series' metadata. They are strings now:
"NaN", "Infinity", "-Infinity" for FL and FD (as fo-dicom, dicom-rs and dcm4che read them), a
DS as its own text; finite values stay numbers."""

from __future__ import annotations

import json
import math

from pydicom.dataset import Dataset

from archivist.web.dicomweb.jsonmodel import dataset_to_json


def _json(ds: Dataset) -> dict:
    body = dataset_to_json(ds, "http://x")
    # allow_nan=False: what a strict parser (JSON.parse) accepts
    return json.loads(json.dumps(body, allow_nan=False))


def test_non_finite_floats_are_strings_and_the_rest_numbers() -> None:
    ds = Dataset()
    ds.add_new(0x00189089, "FD", [math.nan, 0.0, 1.0])
    ds.add_new(0x00189087, "FD", math.inf)
    ds.add_new(0x00720076, "FL", [-math.inf, -1.0])
    ds.add_new(0x00181063, "DS", "1e400")
    ds.add_new(0x00280030, "DS", ["0.5", "0.25"])
    ds.add_new(0x00180088, "DS", ["-1e400", "2"])
    body = _json(ds)
    assert body["00189089"] == {"vr": "FD", "Value": ["NaN", 0.0, 1.0]}
    assert body["00189087"] == {"vr": "FD", "Value": ["Infinity"]}
    assert body["00720076"] == {"vr": "FL", "Value": ["-Infinity", -1.0]}
    assert body["00181063"] == {"vr": "DS", "Value": ["1e400"]}
    assert body["00180088"] == {"vr": "DS", "Value": ["-1e400", 2]}
    assert body["00280030"] == {"vr": "DS", "Value": [0.5, 0.25]}


def test_inside_a_sequence_too() -> None:
    item = Dataset()
    item.add_new(0x00189087, "FD", -math.inf)
    ds = Dataset()
    ds.add_new(0x00540016, "SQ", [item])
    body = _json(ds)
    assert body["00540016"]["Value"][0]["00189087"] == {"vr": "FD", "Value": ["-Infinity"]}
