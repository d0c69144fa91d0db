"""Sequence keys of Inventory FIND / GET / MOVE (PS3.4 Annex JJ; QA s23), over loopback against a
real ``archivist serve`` with pynetdicom as the SCU.

Before: a FIND asking for Scope of Inventory Sequence (0008,0400) or Incorporated Inventory
Instance Sequence (0008,0422) got them empty whatever the stored inventory held (an empty scope
says "all studies", and a client walking the tree by FIND found no leaves); a sequence with values
was not matched (ignored); and a GET or MOVE whose only key was an empty sequence retrieved every
stored inventory, while an empty identifier is refused. Now the stored items are returned
(restricted to the sub-keys the request's item names), a sequence with values is matched by
Sequence Matching (PS3.4 C.2.2.2.6), and an empty sequence is no matching key for a retrieve.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from inventory_helpers import fill
from pydicom.dataset import Dataset
from pynetdicom import AE, build_role, evt

from archivist.archive.archive import Archive
from archivist.config import load_settings
from archivist.inventory import INVENTORY_FIND, INVENTORY_GET, INVENTORY_MOVE, INVENTORY_STORAGE
from archivist.inventory.builder import InventoryBuilder, InventorySpec
from archivist.testing.server import ServerProcess, free_port

pytestmark = pytest.mark.timeout(300)


class Setup:
    def __init__(self, srv: ServerProcess, split: Any, scoped: Any, plain: Any, named: Any,
                 dest_port: int) -> None:
        self.srv, self.split, self.scoped, self.plain = srv, split, scoped, plain
        self.named, self.dest_port = named, dest_port
        self.leaves = [ds.SOPInstanceUID for ds in split.instances[1:]]
        self.every = [ds.SOPInstanceUID for inv in (split, scoped, plain, named)
                      for ds in inv.instances]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    tmp = tmp_path_factory.mktemp("s23cat")
    data = tmp / "srv"
    archive = Archive.open(load_settings(env={}, overrides={"data_dir": data}))
    try:
        fill(archive, tmp / "in", studies=5, series=1, instances=2)
        builder = InventoryBuilder(archive)
        split, _ = builder.create(InventorySpec(level="INSTANCE", studies_per_instance=2,
                                                purpose="split"))
        scoped, _ = builder.create(InventorySpec(level="SERIES", scope=[("PatientID", "P1")],
                                                 purpose="scoped"))
        plain, _ = builder.create(InventorySpec(level="STUDY", purpose="plain"))
        named, _ = builder.create(InventorySpec(level="INSTANCE", purpose="named",
                                                scope=[("PatientName", "Müller*")]))
    finally:
        archive.close()
    assert len(split.instances) == 4  # the root and three leaves
    dest_port = free_port()
    srv = ServerProcess(data, extra_args=["--peer", f"INVDEST=127.0.0.1:{dest_port}"]).start()
    try:
        yield Setup(srv, split, scoped, plain, named, dest_port)
    finally:
        srv.stop()


@pytest.fixture
def assoc(setup: Setup) -> Iterator[Any]:
    ae = AE(ae_title="INVSCU")
    ae.dimse_timeout = 30
    for uid in (INVENTORY_FIND, INVENTORY_MOVE, INVENTORY_GET, INVENTORY_STORAGE):
        ae.add_requested_context(uid)
    received: list[Dataset] = []

    def on_store(event: Any) -> int:
        received.append(event.dataset)
        return 0x0000

    assoc = ae.associate("127.0.0.1", setup.srv.dicom_port, ae_title="ARCHIVIST",
                         ext_neg=[build_role(INVENTORY_STORAGE, scp_role=True)],
                         evt_handlers=[(evt.EVT_C_STORE, on_store)])
    assert assoc.is_established
    assoc.received = received
    yield assoc
    if assoc.is_established:
        assoc.release()


def _find(assoc: Any, q: Dataset) -> tuple[list[Dataset], int]:
    found, last = [], None
    for status, ds in assoc.send_c_find(q, INVENTORY_FIND):
        assert status is not None and "Status" in status, "no response"
        last = int(status.Status)
        if last in (0xFF00, 0xFF01):
            found.append(ds)
    assert last is not None
    return found, last


def _item(**keys: Any) -> Dataset:
    ds = Dataset()
    for k, v in keys.items():
        setattr(ds, k, v)
    return ds


def _by_uid(found: list[Dataset]) -> dict[str, Dataset]:
    return {ds.SOPInstanceUID: ds for ds in found}


# -- FIND: sequences as return keys -------------------------------------------------------------


def test_find_returns_the_stored_sequences(setup: Setup, assoc: Any) -> None:
    found, status = _find(assoc, _item(SOPInstanceUID="", InventoryPurpose="",
                                       IncorporatedInventoryInstanceSequence=[],
                                       ScopeOfInventorySequence=[]))
    assert status == 0
    by_uid = _by_uid(found)
    assert sorted(by_uid) == sorted(setup.every)
    root = by_uid[setup.split.root.SOPInstanceUID]
    refs = root.IncorporatedInventoryInstanceSequence
    assert [ref.ReferencedSOPInstanceUID for ref in refs] == setup.leaves
    assert {ref.ReferencedSOPClassUID for ref in refs} == {INVENTORY_STORAGE}
    assert len(root.ScopeOfInventorySequence) == 0  # made without a scope: all studies
    for leaf in setup.leaves:
        assert len(by_uid[leaf].IncorporatedInventoryInstanceSequence) == 0
    scoped = by_uid[setup.scoped.root.SOPInstanceUID]
    (scope,) = scoped.ScopeOfInventorySequence
    assert scope.QueryRetrieveLevel == "SERIES"
    assert scope.GeneralMatchingSequence[0].PatientID == "P1"
    assert len(scoped.IncorporatedInventoryInstanceSequence) == 0
    assert len(by_uid[setup.plain.root.SOPInstanceUID].ScopeOfInventorySequence) == 0


def test_find_returns_the_sub_keys_named(setup: Setup, assoc: Any) -> None:
    q = _item(SOPInstanceUID=setup.split.root.SOPInstanceUID,
              IncorporatedInventoryInstanceSequence=[_item(ReferencedSOPInstanceUID="")])
    (root,), status = _find(assoc, q)
    assert status == 0
    refs = root.IncorporatedInventoryInstanceSequence
    assert [ref.ReferencedSOPInstanceUID for ref in refs] == setup.leaves
    assert all("ReferencedSOPClassUID" not in ref for ref in refs)
    # A nested sequence named with a sub-key of its own; a sub-key the item does not hold.
    q = _item(SOPInstanceUID=setup.scoped.root.SOPInstanceUID, ScopeOfInventorySequence=[
        _item(GeneralMatchingSequence=[_item(PatientID="")], InventoryPurpose="")])
    (scoped,), status = _find(assoc, q)
    assert status == 0
    (scope,) = scoped.ScopeOfInventorySequence
    assert "QueryRetrieveLevel" not in scope
    assert [e.keyword for e in scope.GeneralMatchingSequence[0]] == ["PatientID"]
    assert scope.GeneralMatchingSequence[0].PatientID == "P1"
    assert "InventoryPurpose" in scope and not scope.InventoryPurpose


def test_find_returns_scope_values_in_their_character_set(setup: Setup, assoc: Any) -> None:
    found, status = _find(assoc, _item(ScopeOfInventorySequence=[
        _item(GeneralMatchingSequence=[_item(PatientName="Mü*")], QueryRetrieveLevel="")]))
    assert status == 0 and [ds.SOPInstanceUID for ds in found] == [setup.named.root.SOPInstanceUID]
    (scope,) = found[0].ScopeOfInventorySequence
    assert scope.QueryRetrieveLevel == "IMAGE"
    assert str(scope.GeneralMatchingSequence[0].PatientName) == "Müller*"


def test_find_leaves_out_the_inventoried_studies(setup: Setup, assoc: Any) -> None:
    """Not answered (the whole inventory): left out, not claimed empty."""
    found, status = _find(assoc, _item(SOPInstanceUID=setup.plain.root.SOPInstanceUID,
                                       InventoriedStudiesSequence=[]))
    assert status == 0 and len(found) == 1
    assert "InventoriedStudiesSequence" not in found[0]
    q = _item(SOPInstanceUID="", InventoriedStudiesSequence=[_item(StudyInstanceUID="1.2.3")])
    found, status = _find(assoc, q)
    assert found == [] and status == 0xA900


# -- FIND: sequence matching ------------------------------------------------------------------


def test_find_matches_sequences(setup: Setup, assoc: Any) -> None:
    root_uid = setup.split.root.SOPInstanceUID
    # Walking the tree upwards: which inventory incorporates this leaf?
    for leaf in setup.leaves:
        found, status = _find(assoc, _item(SOPInstanceUID="", InventoryPurpose="",
                                           IncorporatedInventoryInstanceSequence=[
                                               _item(ReferencedSOPInstanceUID=leaf)]))
        assert status == 0 and [ds.SOPInstanceUID for ds in found] == [root_uid]
        # the items returned are all of the stored sequence's (the request's names one)
        refs = found[0].IncorporatedInventoryInstanceSequence
        assert [ref.ReferencedSOPInstanceUID for ref in refs] == setup.leaves
    found, _ = _find(assoc, _item(SOPInstanceUID="", IncorporatedInventoryInstanceSequence=[
        _item(ReferencedSOPInstanceUID="1.2.3.4")]))
    assert found == []
    # Wildcard and list matching inside the item; an empty key beside them is universal.
    found, _ = _find(assoc, _item(SOPInstanceUID="", IncorporatedInventoryInstanceSequence=[
        _item(ReferencedSOPClassUID=INVENTORY_STORAGE, ReferencedSOPInstanceUID="")]))
    assert [ds.SOPInstanceUID for ds in found] == [root_uid]
    found, _ = _find(assoc, _item(SOPInstanceUID="", IncorporatedInventoryInstanceSequence=[
        _item(ReferencedSOPInstanceUID=["1.2.3.4", setup.leaves[1]])]))
    assert [ds.SOPInstanceUID for ds in found] == [root_uid]
    # Scope, through its nested matching sequence.
    scope = _item(GeneralMatchingSequence=[_item(PatientID="P1")])
    found, _ = _find(assoc, _item(SOPInstanceUID="", ScopeOfInventorySequence=[scope]))
    assert [ds.SOPInstanceUID for ds in found] == [setup.scoped.root.SOPInstanceUID]
    scope = _item(GeneralMatchingSequence=[_item(PatientID="P*")], QueryRetrieveLevel="SERIES")
    found, _ = _find(assoc, _item(SOPInstanceUID="", ScopeOfInventorySequence=[scope]))
    assert [ds.SOPInstanceUID for ds in found] == [setup.scoped.root.SOPInstanceUID]
    for scope in (_item(GeneralMatchingSequence=[_item(PatientID="P2")]),
                  _item(QueryRetrieveLevel="STUDY")):
        found, status = _find(assoc, _item(SOPInstanceUID="", ScopeOfInventorySequence=[scope]))
        assert found == [] and status == 0
    # With another key: both must match.
    found, _ = _find(assoc, _item(InventoryPurpose="plain", IncorporatedInventoryInstanceSequence=[
        _item(ReferencedSOPInstanceUID=setup.leaves[0])]))
    assert found == []


def test_find_sequence_of_empty_keys_is_a_return_key(setup: Setup, assoc: Any) -> None:
    found, status = _find(assoc, _item(SOPInstanceUID="", ScopeOfInventorySequence=[
        _item(GeneralMatchingSequence=[_item(PatientID="")])]))
    assert status == 0 and sorted(ds.SOPInstanceUID for ds in found) == sorted(setup.every)


def test_find_refuses_two_items(setup: Setup, assoc: Any) -> None:
    q = _item(SOPInstanceUID="", IncorporatedInventoryInstanceSequence=[
        _item(ReferencedSOPInstanceUID=setup.leaves[0]),
        _item(ReferencedSOPInstanceUID=setup.leaves[1])])
    found, status = _find(assoc, q)
    assert found == [] and status == 0xA900


# -- GET / MOVE ---------------------------------------------------------------------------------


def _get(assoc: Any, q: Dataset) -> tuple[int, list[str]]:
    assoc.received.clear()
    results = list(assoc.send_c_get(q, INVENTORY_GET))
    return int(results[-1][0].Status), [ds.SOPInstanceUID for ds in assoc.received]


def test_get_refuses_an_empty_sequence_as_only_key(setup: Setup, assoc: Any) -> None:
    for q in (Dataset(), _item(IncorporatedInventoryInstanceSequence=[]),
              _item(ScopeOfInventorySequence=[_item(QueryRetrieveLevel="")]),
              _item(IncorporatedInventoryInstanceSequence=[], ScopeOfInventorySequence=[])):
        status, sent = _get(assoc, q)
        assert (status, sent) == (0xA900, []), q


def test_get_matches_a_sequence(setup: Setup, assoc: Any) -> None:
    status, sent = _get(assoc, _item(IncorporatedInventoryInstanceSequence=[
        _item(ReferencedSOPInstanceUID=setup.leaves[2])]))
    assert (status, sent) == (0, [setup.split.root.SOPInstanceUID])
    scope = _item(GeneralMatchingSequence=[_item(PatientID="P1")])
    status, sent = _get(assoc, _item(ScopeOfInventorySequence=[scope]))
    assert (status, sent) == (0, [setup.scoped.root.SOPInstanceUID])
    status, sent = _get(assoc, _item(ScopeOfInventorySequence=[
        _item(GeneralMatchingSequence=[_item(PatientID="NOBODY")])]))
    assert (status, sent) == (0, [])


def test_move_refuses_an_empty_sequence_as_only_key(setup: Setup, assoc: Any) -> None:
    received: list[str] = []
    dest = AE(ae_title="INVDEST")
    dest.add_supported_context(INVENTORY_STORAGE)
    scp = dest.start_server(("127.0.0.1", setup.dest_port), block=False, evt_handlers=[
        (evt.EVT_C_STORE, lambda e: (received.append(e.dataset.SOPInstanceUID), 0)[1])])
    try:
        results = list(assoc.send_c_move(_item(IncorporatedInventoryInstanceSequence=[]),
                                         "INVDEST", INVENTORY_MOVE))
        assert int(results[-1][0].Status) == 0xA900 and received == []
        results = list(assoc.send_c_move(_item(IncorporatedInventoryInstanceSequence=[
            _item(ReferencedSOPInstanceUID=setup.leaves[0])]), "INVDEST", INVENTORY_MOVE))
        assert int(results[-1][0].Status) == 0
        assert received == [setup.split.root.SOPInstanceUID]
    finally:
        scp.shutdown()
