"""``archive/instance_attributes.json`` (the attributes C-FIND does not match above IMAGE level)
is what the PS3.3 tables of the validator give: regenerate it with ``--write`` when they change.

An attribute is instance-only when no module that any IOD places in the Patient, Study, Series,
Equipment or Frame of Reference Information Entity holds it at its top level.
"""

from __future__ import annotations

import json
import sys
from importlib import resources
from pathlib import Path

JSON = Path(__file__).parents[2] / "src" / "archivist" / "archive" / "instance_attributes.json"
#: Information Entities above the instance, and so not instance-only.
ABOVE_INSTANCE = {"Patient", "Study", "Series", "Equipment", "Frame of Reference"}


def instance_only_tags() -> list[str]:
    raw = json.loads((resources.files("archivist.validate") / "_standard" / "standard.json")
                     .read_bytes())
    modules = raw["modules"]
    placed: dict[int, bool] = {}  # tag -> held by a module above the instance
    for iod in raw["iods"].values():
        for module, _usage, ie in iod["modules"]:
            if module not in modules:
                continue
            rows = modules[module]["attributes"]
            for row in json.loads(rows) if isinstance(rows, str) else rows:
                placed[row[0]] = placed.get(row[0], False) or ie in ABOVE_INSTANCE
    return [f"{tag:08X}" for tag in sorted(t for t, above in placed.items() if not above)]


def test_the_table_is_what_the_standard_gives() -> None:
    assert json.loads(JSON.read_text())["tags"] == instance_only_tags()


def test_examples() -> None:
    tags = set(json.loads(JSON.read_text())["tags"])
    assert {"00204000", "00080008"} <= tags  # Image Comments, Image Type
    assert not {"00100010", "00081030", "0008103E", "00081070"} & tags  # name, descriptions, operators


if __name__ == "__main__" and "--write" in sys.argv:
    doc = json.loads(JSON.read_text())
    doc["tags"] = instance_only_tags()
    JSON.write_text(json.dumps(doc, indent=0) + "\n")
    print(f"wrote {len(doc['tags'])} tags to {JSON}")
