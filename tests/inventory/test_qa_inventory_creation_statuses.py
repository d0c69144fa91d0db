# ruff: noqa: F811 - fixtures imported from inventory_helpers are parameters here
"""Inventory Creation N-ACTION statuses as a third-party pynetdicom SCU sees them against a real
``archivist serve`` (found by QA: an unknown Action Type ID with no Transaction UID was
answered 0x0120 "Transaction UID is missing" instead of 0x0123 No such action)."""

from __future__ import annotations

from typing import Any

import pytest
from inventory_helpers import make_server  # noqa: F401
from pydicom.dataset import Dataset
from pynetdicom import AE

from archivist.inventory import INVENTORY_CREATION, STORAGE_MANAGEMENT_INSTANCE


def _action(port: int, action_type: int, info: Dataset) -> int:
    ae = AE(ae_title="QASCU")
    ae.dimse_timeout = 30
    ae.add_requested_context(INVENTORY_CREATION)
    assoc = ae.associate("127.0.0.1", port, ae_title="ARCHIVIST")
    assert assoc.is_established
    try:
        status, _ = assoc.send_n_action(info, action_type, INVENTORY_CREATION,
                                        STORAGE_MANAGEMENT_INSTANCE)
    finally:
        assoc.release()
    assert status is not None and "Status" in status
    return int(status.Status)


def _info(**keys: Any) -> Dataset:
    ds = Dataset()
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


@pytest.fixture
def server(make_server):  # type: ignore[no-untyped-def]
    return make_server("--workers", "1")


@pytest.mark.parametrize("action_type", [0, 1, 10, 16, 99])
def test_unknown_action_without_information(server: Any, action_type: int) -> None:
    # pynetdicom sends no data set for an empty Dataset (the acceptor waits 2 s for it)
    assert _action(server.dicom_port, action_type, Dataset()) == 0x0123


def test_unknown_action_with_a_transaction_uid(server: Any) -> None:
    assert _action(server.dicom_port, 99, _info(TransactionUID="2.25.99")) == 0x0123


def test_known_actions_keep_their_statuses(server: Any) -> None:
    port = server.dicom_port
    assert _action(port, 12, _info(TransactionUID="2.25.404")) == 0x0112  # unknown job
    assert _action(port, 13, _info(TransactionUID="2.25.404")) == 0x0120  # no Retain Instances
    assert _action(port, 11, _info(TransactionUID="2.25.7")) == 0x0120  # no Inventory Level
    assert _action(port, 11, _info(InventoryLevel="STUDY")) == 0x0120  # no Transaction UID
    assert _action(port, 11, _info(TransactionUID="2.25.8", InventoryLevel="PATIENT")) == 0x0106
    assert _action(port, 11, _info(TransactionUID="2.25.9", InventoryLevel="STUDY")) == 0x0000
    assert _action(port, 11, _info(TransactionUID="2.25.9", InventoryLevel="STUDY")) == 0x0111
