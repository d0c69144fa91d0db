# ruff: noqa: F811 - fixtures imported from inventory_helpers are parameters here
"""Inventory Query/Retrieve (PS3.4 Annex JJ) over loopback: FIND, GET and MOVE of stored
inventories from a real ``archivist serve``, with pynetdicom as the SCU and storage SCP."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from inventory_helpers import fill, make_server, open_archive  # noqa: F401
from pydicom.dataset import Dataset
from pynetdicom import AE, build_role, evt

from archivist.inventory import INVENTORY_FIND, INVENTORY_GET, INVENTORY_MOVE, INVENTORY_STORAGE
from archivist.inventory.builder import InventoryBuilder, InventorySpec
from archivist.inventory.model import Inventory
from archivist.testing.server import free_port


@pytest.fixture
def inv_server(open_archive, make_server, tmp_path: Path):  # type: ignore[no-untyped-def]
    data = tmp_path / "srv"
    archive = open_archive(data)
    fill(archive, tmp_path / "in", studies=5, series=1, instances=2)
    builder = InventoryBuilder(archive)
    big, _ = builder.create(InventorySpec(level="INSTANCE", studies_per_instance=2,
                                          purpose="monthly"))
    small, _ = builder.create(InventorySpec(level="STUDY", purpose="weekly"))
    archive.close()
    port = free_port()
    srv = make_server("--peer", f"INVDEST=127.0.0.1:{port}", data=data)
    return srv, big, small, port


def _q(**keys: Any) -> Dataset:
    ds = Dataset()
    for k, v in keys.items():
        setattr(ds, k, v)
    return ds


def test_find_get_move(inv_server) -> None:  # type: ignore[no-untyped-def]
    srv, big, small, dest_port = inv_server
    received: list[Dataset] = []

    def on_store(event: Any) -> int:
        received.append(event.dataset)
        return 0x0000

    ae = AE(ae_title="INVSCU")
    ae.dimse_timeout = 10
    for uid in (INVENTORY_FIND, INVENTORY_MOVE, INVENTORY_GET):
        ae.add_requested_context(uid)
    ae.add_requested_context(INVENTORY_STORAGE)
    assoc = ae.associate("127.0.0.1", srv.dicom_port, ae_title="ARCHIVIST",
                         ext_neg=[build_role(INVENTORY_STORAGE, scp_role=True)],
                         evt_handlers=[(evt.EVT_C_STORE, on_store)])
    assert assoc.is_established
    try:
        # FIND: every stored instance is a record; match on purpose and level.
        found = [ds for st, ds in assoc.send_c_find(
            _q(SOPInstanceUID="", InventoryLevel="", InventoryPurpose="", ContentDate="",
               TotalNumberOfStudyRecords=None, InstanceNumber=""), INVENTORY_FIND) if ds]
        assert len(found) == 4 + 1  # root + 3 leaves, and the single STUDY-level one
        roots = [ds for ds in found if ds.InstanceNumber == 1]
        assert {ds.InventoryPurpose for ds in roots} == {"monthly", "weekly"}
        weekly = [ds for st, ds in assoc.send_c_find(
            _q(SOPInstanceUID="", InventoryPurpose="week*", InventoryLevel="STUDY"),
            INVENTORY_FIND) if ds]
        assert [ds.SOPInstanceUID for ds in weekly] == [small.root.SOPInstanceUID]
        bad = _q(SOPInstanceUID="")
        bad.add_new(0x00080023, "DA", b"2024x")  # ContentDate, malformed on purpose
        statuses = [int(st.Status) for st, _ in assoc.send_c_find(bad, INVENTORY_FIND)]
        assert statuses[-1] >= 0xA000
        # GET: the whole tree of the big inventory, by its container Study Instance UID.
        results = list(assoc.send_c_get(_q(StudyInstanceUID=big.root.StudyInstanceUID),
                                        INVENTORY_GET))
        assert int(results[-1][0].Status) == 0
        assert sorted(ds.SOPInstanceUID for ds in received) == sorted(
            ds.SOPInstanceUID for ds in big.instances)
        inv = Inventory.from_datasets(received)
        assert inv.counts() == {"studies": 5, "series": 5, "instances": 10}
        # MOVE: the small one to a configured destination.
        dest_received: list[Dataset] = []
        dest = AE(ae_title="INVDEST")
        dest.add_supported_context(INVENTORY_STORAGE)
        scp = dest.start_server(("127.0.0.1", dest_port), block=False, evt_handlers=[
            (evt.EVT_C_STORE, lambda e: (dest_received.append(e.dataset), 0)[1])])
        try:
            results = list(assoc.send_c_move(_q(SOPInstanceUID=small.root.SOPInstanceUID),
                                             "INVDEST", INVENTORY_MOVE))
            assert int(results[-1][0].Status) == 0
            assert [ds.SOPInstanceUID for ds in dest_received] == [small.root.SOPInstanceUID]
            results = list(assoc.send_c_move(_q(SOPInstanceUID=small.root.SOPInstanceUID),
                                             "NOWHERE", INVENTORY_MOVE))
            assert int(results[-1][0].Status) == 0xA801
        finally:
            scp.shutdown()
    finally:
        assoc.release()
