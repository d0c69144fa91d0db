"""Unified Procedure Steps, the rules and the store (archivist.archive.ups) on a real archive."""

from __future__ import annotations

import warnings

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid

from archivist.archive import ups as U
from archivist.archive.archive import Archive
from archivist.archive.ups import UpsError, Workitems
from archivist.testing.ups import completion, workitem


@pytest.fixture
def items(archive: Archive) -> Workitems:
    return Workitems(archive.index)


def _status(call, *args, **kwargs) -> int:  # type: ignore[no-untyped-def]
    with pytest.raises(UpsError) as caught:
        call(*args, **kwargs)
    return caught.value.status


def test_create_get_and_the_whole_life_of_a_workitem(items: Workitems) -> None:
    uid, changes = items.create(None, workitem(), "RIS")
    assert changes == []  # every Type 1 and 2 attribute given
    item = items.get(uid)
    assert item is not None and item.state == U.SCHEDULED
    assert item.dataset.SOPClassUID == U.UPS_PUSH and item.dataset.SOPInstanceUID == uid
    assert str(item.dataset.PatientName) == "Müller^Anna"
    assert "ScheduledProcedureStepModificationDateTime" in item.dataset

    tuid = generate_uid()
    item, status = items.change_state(uid, "IN PROGRESS", tuid)
    assert (item.state, status) == (U.IN_PROGRESS, 0)
    assert "TransactionUID" not in items.get(uid).dataset  # type: ignore[union-attr]
    assert _status(items.change_state, uid, "IN PROGRESS", generate_uid()) == 0xC302
    assert _status(items.set, uid, completion()) == 0xC301
    assert _status(items.set, uid, completion(), generate_uid()) == 0xC301
    assert _status(items.change_state, uid, "COMPLETED", tuid) == 0xC304  # final state unmet
    items.set(uid, completion(), tuid)
    assert _status(items.change_state, uid, "COMPLETED", generate_uid()) == 0xC301
    item, status = items.change_state(uid, "COMPLETED", tuid)
    assert (item.state, status) == (U.COMPLETED, 0)
    assert items.change_state(uid, "COMPLETED", tuid)[1] == 0xB306
    assert _status(items.change_state, uid, "CANCELED", tuid) == 0xC311
    assert _status(items.set, uid, Dataset(), tuid) == 0xC300
    assert _status(items.request_cancel, uid) == 0xC311


def test_create_refusals(items: Workitems) -> None:
    assert _status(items.create, None, workitem(ProcedureStepState="IN PROGRESS")) == 0xC309
    assert _status(items.create, None, workitem(ProcedureStepState=None)) == 0x0120
    assert _status(items.create, None, workitem(ProcedureStepLabel=None)) == 0x0120
    assert _status(items.create, None, workitem(ProcedureStepLabel="")) == 0x0121
    assert _status(items.create, None, workitem(ScheduledProcedureStepPriority="URGENT")) == 0x0106
    assert _status(items.create, None, workitem(InputReadinessState="MAYBE")) == 0x0106
    assert _status(items.create, "1.2.x", workitem()) == 0x0117
    uid, _ = items.create(None, workitem())
    assert _status(items.create, uid, workitem()) == 0x0111


def test_create_with_modifications(items: Workitems) -> None:
    uid, changes = items.create(None, workitem(WorklistLabel=None, TransactionUID=generate_uid(),
                                               PatientBirthDate=None))
    assert changes and any("Worklist Label" in c for c in changes)
    ds = items.get(uid).dataset  # type: ignore[union-attr]
    assert ds.WorklistLabel == "ARCHIVIST" and "TransactionUID" not in ds
    assert "PatientBirthDate" in ds and ds.PatientBirthDate in ("", None)


def test_state_machine_from_scheduled(items: Workitems) -> None:
    uid, _ = items.create(None, workitem())
    assert _status(items.change_state, uid, "COMPLETED", generate_uid()) == 0xC310
    assert _status(items.change_state, uid, "CANCELED", generate_uid()) == 0xC310
    assert _status(items.change_state, uid, "SCHEDULED", generate_uid()) == 0xC303
    assert _status(items.change_state, uid, "IN PROGRESS", "") == 0xC301
    assert _status(items.change_state, uid, "DONE", generate_uid()) == 0x0106
    assert _status(items.change_state, generate_uid(), "IN PROGRESS", generate_uid()) == 0xC307
    # A SCHEDULED workitem is updated without a Transaction UID; its state is not.
    mods = Dataset()
    mods.ProcedureStepLabel = "Relabelled"
    assert items.set(uid, mods).dataset.ProcedureStepLabel == "Relabelled"
    mods.ProcedureStepState = "IN PROGRESS"
    assert _status(items.set, uid, mods) == 0xC303
    mods = Dataset()
    mods.SOPInstanceUID = generate_uid()
    assert _status(items.set, uid, mods) == 0x0106


def test_cancel_request(items: Workitems) -> None:
    scheduled, _ = items.create(None, workitem())
    items.subscribe("WATCHER", scheduled)
    info = Dataset()
    info.ReasonForCancellation = "Patient left"
    item, status = items.request_cancel(scheduled, info, "RIS")
    assert (item.state, status) == (U.CANCELED, 0)
    progress = item.dataset.ProcedureStepProgressInformationSequence[0]
    assert progress.ReasonForCancellation == "Patient left"
    assert progress.ProcedureStepCancellationDateTime
    assert items.request_cancel(scheduled)[1] == 0xB304
    states = [e.info.ProcedureStepState for e in items.events_of("WATCHER")]
    assert states == ["SCHEDULED", "IN PROGRESS", "CANCELED"]

    busy, _ = items.create(None, workitem())
    tuid = generate_uid()
    items.change_state(busy, "IN PROGRESS", tuid)
    items.subscribe("PERFORMER", busy)
    item, status = items.request_cancel(busy, info, "RIS")
    assert (item.state, status) == (U.IN_PROGRESS, 0)
    events = items.events_of("PERFORMER")
    assert [e.event_type for e in events] == [U.STATE_REPORT, U.CANCEL_REQUESTED]
    assert events[-1].info.RequestingAE == "RIS"
    assert events[-1].info.ReasonForCancellation == "Patient left"
    item, status = items.change_state(busy, "CANCELED", tuid)
    assert item.state == U.CANCELED
    assert item.dataset.ProcedureStepProgressInformationSequence[0] \
        .ProcedureStepCancellationDateTime


def test_find_matches_like_c_find_and_never_answers_the_transaction_uid(items: Workitems) -> None:
    first, _ = items.create(None, workitem())
    second, _ = items.create(None, workitem(PatientID="P-UPS-2", ScheduledProcedureStepPriority="HIGH",
                                            ScheduledProcedureStepStartDateTime="20261208120000"))
    items.change_state(second, "IN PROGRESS", generate_uid())

    def found(**keys: object) -> list[str]:
        query = Dataset()
        for keyword, value in keys.items():
            setattr(query, keyword, value)
        return [i.sop_instance_uid for i in items.find(query)]

    assert found() == [first, second]
    assert found(ProcedureStepState="SCHEDULED") == [first]
    assert found(ScheduledProcedureStepPriority="HIGH") == [second]
    assert found(PatientName="müller*") == [first, second]  # case and accents folded
    assert found(ScheduledProcedureStepStartDateTime="20261208-") == [second]
    code = Dataset()
    code.CodeValue = "110005"
    assert found(ScheduledWorkitemCodeSequence=Sequence([code])) == [first, second]
    code.CodeValue = "999"
    assert found(ScheduledWorkitemCodeSequence=Sequence([code])) == []
    query = Dataset()
    query.SOPInstanceUID = second
    query.TransactionUID = ""
    query.ProcedureStepState = ""
    query.PatientName = ""
    (item,) = list(items.find(query))
    answer = Workitems.answer(query, item)
    assert "TransactionUID" not in answer
    assert answer.ProcedureStepState == "IN PROGRESS"
    assert [i.sop_instance_uid for i in items.find(Dataset(), limit=1, offset=1)] == [second]


def test_global_subscription_and_events(items: Workitems) -> None:
    before, _ = items.create(None, workitem())
    items.subscribe("GLOBAL", U.GLOBAL_SUBSCRIPTION, deletion_lock=True)
    after, _ = items.create(None, workitem())
    events = items.events_of("GLOBAL")
    assert [(e.ups_uid, e.event_type) for e in events] == [(before, 1), (after, 1)]
    # Progress and assignment reach the subscribers.
    tuid = generate_uid()
    items.change_state(after, "IN PROGRESS", tuid)
    mods = Dataset()
    progress = Dataset()
    progress.ProcedureStepProgress = 50
    mods.ProcedureStepProgressInformationSequence = Sequence([progress])
    items.set(after, mods, tuid)
    kinds = [e.event_type for e in items.events_of("GLOBAL", after=events[-1].pk)]
    assert kinds == [U.STATE_REPORT, U.PROGRESS_REPORT]
    # Suspending keeps the subscriptions to existing workitems, stops new ones.
    items.suspend_global("GLOBAL")
    third, _ = items.create(None, workitem())
    assert {s["ups_uid"] for s in items.subscriptions("GLOBAL")} == {before, after}
    assert items.subscribers(third) == []
    items.unsubscribe("GLOBAL", U.GLOBAL_SUBSCRIPTION)
    assert items.subscriptions("GLOBAL") == []
    assert _status(items.subscribe, "X", generate_uid()) == 0xC307


def test_filtered_global_subscription(items: Workitems) -> None:
    keys = Dataset()
    keys.ScheduledProcedureStepPriority = "HIGH"
    items.subscribe("HIGHONLY", U.FILTERED_GLOBAL_SUBSCRIPTION, matching=keys)
    items.create(None, workitem())
    high, _ = items.create(None, workitem(ScheduledProcedureStepPriority="HIGH"))
    assert [e.ups_uid for e in items.events_of("HIGHONLY")] == [high]


def test_event_delivery_bookkeeping(items: Workitems) -> None:
    uid, _ = items.create(None, workitem())
    items.subscribe("A", uid)
    items.subscribe("B", uid)
    items.change_state(uid, "IN PROGRESS", generate_uid())
    due = items.due_events()
    assert [(e.aet, e.info.ProcedureStepState) for e in due] == [
        ("A", "SCHEDULED"), ("B", "SCHEDULED"), ("A", "IN PROGRESS"), ("B", "IN PROGRESS")]
    items.retry_later(due[0].pk, 60)  # A's first waits: A's later ones wait behind it
    assert [e.aet for e in items.due_events()] == ["B", "B"]
    items.delivered(due[1].pk)
    assert [e.aet for e in items.due_events({"B"})] == ["B"]
    assert items.due_events(set()) == []


def test_an_event_is_claimed_by_one_sender(items: Workitems) -> None:
    uid, _ = items.create(None, workitem())
    items.subscribe("A", uid)
    (event,) = items.due_events()
    assert items.claim(event.pk, 60) is True
    assert items.claim(event.pk, 60) is False  # another worker, or node
    assert items.due_events() == []  # held while claimed
    items.retry_later(event.pk, 0)
    assert items.claim(event.pk, 60) is True


def _raw(ds: Dataset) -> Dataset:
    """`ds` as a peer sends it: encoded in its character set, read back undecoded."""
    from io import BytesIO

    from pydicom.filebase import DicomBytesIO
    from pydicom.filereader import read_dataset
    from pydicom.filewriter import write_dataset

    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, False
    write_dataset(buffer, ds)
    return read_dataset(BytesIO(buffer.getvalue()), is_implicit_VR=False, is_little_endian=True)


def test_values_in_several_character_sets_are_stored_rightly(items: Workitems) -> None:
    latin1 = workitem(SpecificCharacterSet="ISO_IR 100", PatientName="Müller^Anna")
    uid, _ = items.create(None, _raw(latin1))
    mods = Dataset()
    mods.SpecificCharacterSet = "ISO_IR 192"
    mods.ProcedureStepLabel = "Ωmega review"
    items.set(uid, _raw(mods))
    ds = items.get(uid).dataset  # type: ignore[union-attr]
    assert str(ds.PatientName) == "Müller^Anna"
    assert ds.ProcedureStepLabel == "Ωmega review"
    assert ds.SpecificCharacterSet == "ISO_IR 192"
    # An event's text goes with its character set.
    items.subscribe("W", uid)
    tuid = generate_uid()
    items.change_state(uid, "IN PROGRESS", tuid)
    info = Dataset()
    info.ReasonForCancellation = "Gerät defekt"
    items.request_cancel(uid, info)  # no AE title (an HTTP client)
    event = items.events_of("W")[-1]
    assert event.event_type == U.CANCEL_REQUESTED
    assert event.info.ReasonForCancellation == "Gerät defekt"
    assert event.info.SpecificCharacterSet == "ISO_IR 192"
    assert "RequestingAE" not in event.info


def test_the_uid_may_come_in_the_data_set(items: Workitems) -> None:
    wanted = generate_uid()
    uid, _ = items.create(None, workitem(SOPInstanceUID=wanted))
    assert uid == wanted
    assert _status(items.create, None, workitem(SOPInstanceUID="1.2.x")) == 0x0117


def test_malformed_date_times_and_labels_are_refused(items: Workitems) -> None:
    with warnings.catch_warnings():  # (pydicom's, on setting the bad values)
        warnings.simplefilter("ignore")
        bad_start = workitem(ScheduledProcedureStepStartDateTime="2026-12-07 09:00")
        long_label = workitem(ProcedureStepLabel="x" * 65)
    assert _status(items.create, None, bad_start) == 0x0106
    assert _status(items.create, None, long_label) == 0x0106
    uid, _ = items.create(None, workitem(ExpectedCompletionDateTime="20261207120000.5+0100"))
    mods = Dataset()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mods.ExpectedCompletionDateTime = "tomorrow"
    assert _status(items.set, uid, mods) == 0x0106
    assert items.get(uid).dataset.ExpectedCompletionDateTime == "20261207120000.5+0100"  # type: ignore[union-attr]
