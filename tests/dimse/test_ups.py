"""Unified Procedure Step SCP (PS3.4 Annex CC) on a real ``archivist serve``, driven by
pynetdicom as the SCU: UPS Push (N-CREATE, N-ACTION Request Cancellation, N-GET), UPS Pull
(C-FIND, N-GET, N-SET, N-ACTION Change State), UPS Watch (subscriptions, N-GET, C-FIND) and UPS
Query (C-FIND), with the statuses of Annex CC. Events are in test_ups_events.py."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from archivist.archive.ups import (
    FILTERED_GLOBAL_SUBSCRIPTION,
    GLOBAL_SUBSCRIPTION,
    UPS_PULL,
    UPS_PUSH,
    UPS_QUERY,
    UPS_WATCH,
)
from archivist.testing.datasets import new_uid
from archivist.testing.server import ServerProcess, free_port
from archivist.testing.ups import Scu, completion, workitem


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp("ups")
    # WATCHER has an address (nobody listens there: its events wait); STRANGER has none.
    srv = ServerProcess(tmp / "data", extra_args=["--peer", f"WATCHER=127.0.0.1:{free_port()}"])
    srv.start()
    yield srv
    srv.stop()


def _code(status: Dataset) -> int:
    return int(status.Status)


class TestPush:
    def test_create_with_and_without_a_uid(self, server: ServerProcess) -> None:
        with Scu(server) as scu:
            uid = new_uid()
            status, got = scu.create(workitem(), uid)
            assert (_code(status), got) == (0x0000, uid)
            status, assigned = scu.create(workitem())
            assert _code(status) == 0x0000 and assigned and assigned != uid
            status, ds = scu.get(assigned)
            assert _code(status) == 0x0000
            assert ds.SOPInstanceUID == assigned and ds.SOPClassUID == UPS_PUSH
            assert ds.ProcedureStepState == "SCHEDULED"

    def test_created_with_modifications_is_a_warning_naming_them(
            self, server: ServerProcess) -> None:
        with Scu(server) as scu:
            status, uid = scu.create(workitem(WorklistLabel=None, PatientBirthDate=None))
            assert _code(status) == 0xB300, status
            assert "Worklist Label" in status.ErrorComment
            _, ds = scu.get(uid, [0x00741202])  # Worklist Label
            assert ds.WorklistLabel == "ARCHIVIST"
            status, _ = scu.create(workitem(TransactionUID=new_uid()))
            assert _code(status) == 0xB300, status
            assert "Transaction UID dropped" in status.ErrorComment

    @pytest.mark.parametrize(("changes", "expected"), [
        ({"ProcedureStepState": "IN PROGRESS"}, 0xC309),
        ({"ProcedureStepState": None}, 0x0120),
        ({"ProcedureStepLabel": None}, 0x0120),
        ({"ScheduledProcedureStepPriority": "URGENT"}, 0x0106),
    ], ids=["not-scheduled", "no-state", "no-label", "bad-priority"])
    def test_create_refusals(self, server: ServerProcess, changes: dict[str, Any],
                             expected: int) -> None:
        with Scu(server) as scu:
            uid = new_uid()
            status, _ = scu.create(workitem(**changes), uid)
            assert _code(status) == expected, status
            assert _code(scu.get(uid)[0]) == 0xC307  # nothing created

    def test_a_uid_created_already_is_0111(self, server: ServerProcess) -> None:
        with Scu(server) as scu:
            uid = new_uid()
            assert _code(scu.create(workitem(), uid)[0]) == 0x0000
            assert _code(scu.create(workitem(), uid)[0]) == 0x0111

    def test_request_cancellation(self, server: ServerProcess) -> None:
        with Scu(server) as scu:
            _, uid = scu.create(workitem())
            assert _code(scu.cancel(uid, "Patient left")) == 0x0000
            _, ds = scu.get(uid, [0x00741000, 0x00741002])
            assert ds.ProcedureStepState == "CANCELED"
            progress = ds.ProcedureStepProgressInformationSequence[0]
            assert progress.ReasonForCancellation == "Patient left"
            assert _code(scu.cancel(uid)) == 0xB304  # canceled already
            assert _code(scu.cancel(new_uid())) == 0xC307
            # On UPS Watch too (Table CC.2-3).
            _, other = scu.create(workitem())
            assert _code(scu.cancel(other, via=UPS_WATCH)) == 0x0000


class TestGet:
    def test_one_attribute_and_the_character_set_that_goes_with_it(
            self, server: ServerProcess) -> None:
        with Scu(server) as scu:
            _, uid = scu.create(workitem())
            status, ds = scu.get(uid, [0x00100010])  # one tag: VM 1 on the wire
            assert _code(status) == 0x0000
            assert set(ds.keys()) == {0x00080005, 0x00100010}
            assert ds.SpecificCharacterSet == "ISO_IR 192"
            assert str(ds.PatientName) == "Müller^Anna"

    def test_the_transaction_uid_is_never_returned(self, server: ServerProcess) -> None:
        with Scu(server) as scu:
            _, uid = scu.create(workitem())
            assert _code(scu.state(uid, "IN PROGRESS", new_uid())) == 0x0000
            for tags in ([0x00081195, 0x00741000], None):
                status, ds = scu.get(uid, tags, via=UPS_PULL)
                assert _code(status) == 0x0000
                assert "TransactionUID" not in ds and ds.ProcedureStepState == "IN PROGRESS"

    def test_unknown_workitem_is_c307(self, server: ServerProcess) -> None:
        with Scu(server) as scu:
            assert _code(scu.get(new_uid(), via=UPS_WATCH)[0]) == 0xC307

    def test_a_request_may_name_the_negotiated_class(self, server: ServerProcess) -> None:
        with Scu(server, (UPS_PUSH, UPS_PULL)) as scu:
            _, uid = scu.create(workitem())
            status, ds = scu.assoc.send_n_get([0x00741000], UPS_PULL, uid)
            assert _code(status) == 0x0000 and ds.ProcedureStepState == "SCHEDULED"


class TestPull:
    def test_a_whole_life_cycle(self, server: ServerProcess) -> None:
        with Scu(server) as scu:
            _, uid = scu.create(workitem())
            transaction = new_uid()
            assert _code(scu.state(uid, "IN PROGRESS", transaction)) == 0x0000
            progress = Dataset()
            progress.ProcedureStepProgress = 50
            progress.ProcedureStepProgressDescription = "half way"
            mods = Dataset()
            mods.ProcedureStepProgressInformationSequence = Sequence([progress])
            assert _code(scu.set(uid, mods, transaction)) == 0x0000
            assert _code(scu.state(uid, "COMPLETED", transaction)) == 0xC304  # final unmet
            assert _code(scu.set(uid, completion(), transaction)) == 0x0000
            assert _code(scu.state(uid, "COMPLETED", transaction)) == 0x0000
            _, ds = scu.get(uid, via=UPS_PULL)
            assert ds.ProcedureStepState == "COMPLETED"
            assert ds.ProcedureStepProgressInformationSequence[0].ProcedureStepProgress == 50
            assert _code(scu.state(uid, "COMPLETED", transaction)) == 0xB306
            assert _code(scu.state(uid, "CANCELED", transaction)) == 0xC311
            assert _code(scu.cancel(uid)) == 0xC311
            assert _code(scu.set(uid, Dataset(), transaction)) == 0xC300

    def test_state_refusals(self, server: ServerProcess) -> None:
        with Scu(server) as scu:
            _, uid = scu.create(workitem())
            assert _code(scu.state(uid, "COMPLETED", new_uid())) == 0xC310
            assert _code(scu.state(uid, "SCHEDULED", new_uid())) == 0xC303
            assert _code(scu.state(uid, "IN PROGRESS", None)) == 0xC301
            assert _code(scu.action(uid, 1, None, UPS_PULL)) == 0x0120  # no state
            assert _code(scu.state(new_uid(), "IN PROGRESS", new_uid())) == 0xC307
            transaction = new_uid()
            assert _code(scu.state(uid, "IN PROGRESS", transaction)) == 0x0000
            assert _code(scu.state(uid, "IN PROGRESS", new_uid())) == 0xC302
            assert _code(scu.state(uid, "CANCELED", new_uid())) == 0xC301
            label = Dataset()
            label.ProcedureStepLabel = "Relabelled"
            assert _code(scu.set(uid, label)) == 0xC301  # no Transaction UID
            assert _code(scu.set(uid, label, new_uid())) == 0xC301
            state = Dataset()
            state.ProcedureStepState = "COMPLETED"
            assert _code(scu.set(uid, state, transaction)) == 0xC303
            assert _code(scu.state(uid, "CANCELED", transaction)) == 0x0000
            assert _code(scu.state(uid, "CANCELED", transaction)) == 0xB304

    def test_an_action_of_another_sop_class_is_refused(self, server: ServerProcess) -> None:
        with Scu(server) as scu:
            _, uid = scu.create(workitem())
            info = Dataset()
            info.ProcedureStepState = "IN PROGRESS"
            info.TransactionUID = new_uid()
            assert _code(scu.action(uid, 1, info, UPS_PUSH)) == 0x0123  # Change State: Pull
            assert _code(scu.action(uid, 1, info, UPS_WATCH)) == 0x0123
            info = Dataset()
            info.ReceivingAE, info.DeletionLock = "WATCHER", "FALSE"
            assert _code(scu.action(uid, 3, info, UPS_PULL)) == 0x0123  # Subscribe: Watch
            assert _code(scu.action(uid, 2, None, UPS_PULL)) == 0x0123


class TestFind:
    @pytest.mark.parametrize("model", [UPS_PULL, UPS_WATCH, UPS_QUERY],
                             ids=["pull", "watch", "query"])
    def test_matching_on_each_model(self, server: ServerProcess, model: str) -> None:
        label = "find-" + new_uid()[-12:]
        with Scu(server) as scu:
            _, first = scu.create(workitem(ProcedureStepLabel=label))
            _, second = scu.create(workitem(ProcedureStepLabel=label,
                                            ScheduledProcedureStepPriority="HIGH"))
            assert _code(scu.state(second, "IN PROGRESS", new_uid())) == 0x0000
            query = Dataset()
            query.ProcedureStepLabel = label
            query.SOPInstanceUID = ""
            query.ProcedureStepState = ""
            query.TransactionUID = ""
            final, found = scu.find(query, model)
            assert final == 0x0000
            assert [(d.SOPInstanceUID, d.ProcedureStepState) for d in found] == [
                (first, "SCHEDULED"), (second, "IN PROGRESS")]
            assert all("TransactionUID" not in d for d in found)
            query.ProcedureStepState = "SCHEDULED"
            assert [d.SOPInstanceUID for d in scu.find(query, model)[1]] == [first]

    def test_answers_in_the_query_character_set(self, server: ServerProcess) -> None:
        label = "charset-" + new_uid()[-12:]
        with Scu(server) as scu:
            scu.create(workitem(ProcedureStepLabel=label))
            query = Dataset()
            query.SpecificCharacterSet = "ISO_IR 100"
            query.ProcedureStepLabel = label
            query.PatientName = ""
            final, (found,) = scu.find(query)
            assert final == 0x0000
            assert found.SpecificCharacterSet == "ISO_IR 100"
            assert str(found.PatientName) == "Müller^Anna"

    def test_a_query_error_is_a_failure_with_a_comment(self, server: ServerProcess) -> None:
        with Scu(server) as scu:
            query = Dataset()
            with warnings.catch_warnings():  # (pydicom's, on the SCU side)
                warnings.simplefilter("ignore")
                query.ScheduledProcedureStepStartDateTime = "2026-12-07"  # not a DT
            statuses = []
            for status, _ in scu.assoc.send_c_find(query, UPS_PULL):
                statuses.append(status)
            final = statuses[-1]
            assert _code(final) in (0xA900, 0xC000), final
            assert final.ErrorComment

    def test_c_cancel_is_honoured(self, server: ServerProcess) -> None:
        label = "cancel-" + new_uid()[-12:]
        count = 150
        with Scu(server) as scu:
            for _ in range(count):
                scu.create(workitem(ProcedureStepLabel=label))
            query = Dataset()
            query.ProcedureStepLabel = label
            query.SOPInstanceUID = ""
            context = next(cx.context_id for cx in scu.assoc.accepted_contexts
                           if cx.abstract_syntax == UPS_PULL)
            pending, final = 0, None
            for status, _ in scu.assoc.send_c_find(query, UPS_PULL, msg_id=7):
                if status is None:
                    break
                if status.Status == 0xFF00:
                    pending += 1
                    if pending == 1:
                        scu.assoc.send_c_cancel(7, context)
                else:
                    final = int(status.Status)
        # On a loaded machine every match may be out before the C-CANCEL arrives.
        assert (final, pending < count) == (0xFE00, True) or (final, pending) == (0, count)


class TestWatch:
    def test_subscribe_and_unsubscribe(self, server: ServerProcess) -> None:
        with Scu(server) as scu:
            _, uid = scu.create(workitem())
            assert _code(scu.subscribe(uid, lock="TRUE")) == 0x0000
            info = Dataset()
            info.ReceivingAE = "WATCHER"
            assert _code(scu.action(uid, 4, info, UPS_WATCH)) == 0x0000
            assert _code(scu.action(new_uid(), 4, info, UPS_WATCH)) == 0xC307

    def test_global_subscriptions(self, server: ServerProcess) -> None:
        with Scu(server) as scu:
            assert _code(scu.subscribe(GLOBAL_SUBSCRIPTION)) == 0x0000
            info = Dataset()
            info.ReceivingAE = "WATCHER"
            assert _code(scu.action(GLOBAL_SUBSCRIPTION, 5, info, UPS_WATCH)) == 0x0000
            assert _code(scu.subscribe(FILTERED_GLOBAL_SUBSCRIPTION,
                                       ScheduledProcedureStepPriority="HIGH")) == 0x0000
            assert _code(scu.action(GLOBAL_SUBSCRIPTION, 4, info, UPS_WATCH)) == 0x0000
            _, uid = scu.create(workitem())
            assert _code(scu.action(uid, 5, info, UPS_WATCH)) == 0xC307  # only global

    @pytest.mark.parametrize(("receiving", "lock", "expected"), [
        ("STRANGER", "FALSE", 0xC308),  # no address: its events could never be sent
        (None, "FALSE", 0x0120),
        ("WATCHER", None, 0x0120),
        ("WATCHER", "MAYBE", 0x0106),
    ], ids=["unknown-ae", "no-receiving-ae", "no-lock", "bad-lock"])
    def test_subscribe_refusals(self, server: ServerProcess, receiving: str | None,
                                lock: str | None, expected: int) -> None:
        with Scu(server) as scu:
            _, uid = scu.create(workitem())
            assert _code(scu.subscribe(uid, receiving, lock)) == expected

    def test_subscribing_to_an_unknown_workitem_is_c307(self, server: ServerProcess) -> None:
        with Scu(server) as scu:
            assert _code(scu.subscribe(new_uid())) == 0xC307


def test_nothing_of_the_patient_is_logged(server: ServerProcess) -> None:
    with Scu(server) as scu:
        scu.create(workitem())
    log = server.log()
    assert "Müller" not in log and "UPS-PID-1" not in log
