"""The PS3.3 tables keep each module's rows as text until the module is first used."""

from __future__ import annotations

import json

from archivist.validate import standard


def test_every_module_built_from_text_matches_the_file() -> None:
    with standard._TABLE.open("rb") as fh:
        raw = json.load(fh)
    loaded = standard.StandardTables(json.loads(standard._TABLE.read_bytes(),
                                                object_hook=standard._rows_as_text))
    for key, module in raw["modules"].items():
        assert isinstance(loaded._modules_raw[key]["attributes"], str)
        assert loaded.module(key).attributes == standard._build(module["attributes"])
        assert loaded.module(key).name == module["name"]


def test_shared_tables_hold_rows_as_text_until_asked() -> None:
    tables = standard.tables()
    unbuilt = [k for k in tables._modules_raw if k not in tables._modules]
    assert unbuilt, "some module is still unbuilt in a test process"
    assert all(isinstance(tables._modules_raw[k]["attributes"], str) for k in unbuilt)
