"""Instance Availability Notification SCU (``ian_to``, PS3.4 Annex R) from a real ``archivist
serve`` to a pynetdicom IAN SCP: a study stored with DCMTK ``storescu`` is notified once it is
quiet, with exactly its instances; more instances later are notified again with all of them; a
receiver that is down gets the notification once back, one that refuses it is given up on after
three tries; a study stored before a crash is notified after the restart."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE, evt
from pynetdicom.sop_class import ModalityPerformedProcedureStep  # type: ignore[attr-defined]

from archivist.archive.mpps import MPPS_SOP_CLASS
from archivist.config import ConfigError, load_settings
from archivist.dimse.ian import IAN_SOP_CLASS
from archivist.testing.datasets import make_instance, new_uid
from archivist.testing.mpps import in_progress
from archivist.testing.net import wait_listening
from archivist.testing.server import ServerProcess, free_port

STORESCU = "/usr/bin/storescu"
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
ENV = {**os.environ, "TCP_NODELAY": "1"}
#: The attributes of PS3.4 Table R.3.2-1 the archive sends, and no others (R.3.2.1.2).
TOP_LEVEL = {"ReferencedPerformedProcedureStepSequence", "StudyInstanceUID",
             "ReferencedSeriesSequence"}
SOP_ITEM = {"ReferencedSOPClassUID", "ReferencedSOPInstanceUID", "InstanceAvailability",
            "RetrieveAETitle"}

needs_dcmtk = pytest.mark.skipif(not os.path.exists(STORESCU), reason="DCMTK needed")


class Receiver:
    """An IAN SCP (pynetdicom) that records the N-CREATEs it gets and answers `status`."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.status = 0x0000
        self.received: list[Dataset] = []
        self._lock = threading.Lock()
        self._server: Any = None

    def _on_create(self, event: Any) -> tuple[int, Dataset | None]:
        assert str(event.request.AffectedSOPClassUID) == IAN_SOP_CLASS
        assert event.request.AffectedSOPInstanceUID
        with self._lock:
            self.received.append(event.attribute_list)
        return self.status, None

    def start(self) -> Receiver:
        ae = AE(ae_title="RIS")
        ae.add_supported_context(IAN_SOP_CLASS)
        self._server = ae.start_server(("127.0.0.1", self.port), block=False,
                                       evt_handlers=[(evt.EVT_N_CREATE, self._on_create)])
        wait_listening(self.port, what="the IAN receiver")
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    def of(self, study: str) -> list[Dataset]:
        with self._lock:
            return [ds for ds in self.received if ds.StudyInstanceUID == study]

    def wait(self, study: str, count: int = 1, timeout: float = 60) -> list[Dataset]:
        """The notifications of `study`, once there are `count` (or the timeout)."""
        deadline = time.monotonic() + timeout
        while len(self.of(study)) < count and time.monotonic() < deadline:
            time.sleep(0.1)
        got = self.of(study)
        assert len(got) >= count, f"{len(got)} IAN(s) for {study}, {count} expected"
        return got


def _wait_log(srv: ServerProcess, text: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while text not in srv.log() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert text in srv.log(), srv.log()[-3000:]


def _store(srv: ServerProcess, folder: Path,
           instances: list[tuple[str, str]]) -> dict[str, set[str]]:
    """Store (study, series) pairs, one instance each, with storescu; returns series -> SOPs."""
    folder.mkdir()
    by_series: dict[str, set[str]] = {}
    for n, (study, series) in enumerate(instances):
        sop = new_uid()
        make_instance(folder / f"{n}.dcm", study_uid=study, series_uid=series, sop_uid=sop,
                      instance_number=n + 1)
        by_series.setdefault(series, set()).add(sop)
    done = subprocess.run([STORESCU, "-aec", "ARCHIVIST", "127.0.0.1", str(srv.dicom_port),
                           *sorted(map(str, folder.iterdir()))], env=ENV, capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return by_series


def _listed(ian: Dataset) -> dict[str, set[str]]:
    """Series -> SOP Instance UIDs of a notification, after checking its attributes."""
    assert set(ian.dir()) == TOP_LEVEL
    out: dict[str, set[str]] = {}
    for series in ian.ReferencedSeriesSequence:
        assert set(series.dir()) == {"SeriesInstanceUID", "ReferencedSOPSequence"}
        sops = out.setdefault(str(series.SeriesInstanceUID), set())
        for item in series.ReferencedSOPSequence:
            assert set(item.dir()) == SOP_ITEM
            assert item.ReferencedSOPClassUID == CT_IMAGE_STORAGE
            assert item.InstanceAvailability == "ONLINE"
            assert item.RetrieveAETitle == "ARCHIVIST"
            sops.add(str(item.ReferencedSOPInstanceUID))
    return out


def _server(data: Path, port: int, delay: str = "1") -> ServerProcess:
    return ServerProcess(data, env={"ARCHIVIST_PEERS": f"RIS=127.0.0.1:{port}",
                                    "ARCHIVIST_IAN_TO": "RIS", "ARCHIVIST_IAN_DELAY": delay})


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    if not os.path.exists(STORESCU):
        pytest.skip("DCMTK needed")
    tmp = tmp_path_factory.mktemp("ian")
    receiver = Receiver(free_port()).start()
    srv = _server(tmp / "data", receiver.port).start()
    yield {"srv": srv, "receiver": receiver, "tmp": tmp}
    srv.stop()
    receiver.stop()


@needs_dcmtk
class TestNotification:
    def test_a_quiet_study_is_notified_once_with_exactly_its_instances(
            self, setup: dict[str, Any]) -> None:
        srv, receiver, tmp = setup["srv"], setup["receiver"], setup["tmp"]
        study, series = new_uid(), new_uid()
        stored = _store(srv, tmp / "once", [(study, series)] * 3)
        (ian,) = receiver.wait(study)
        assert _listed(ian) == stored
        assert ian.ReferencedPerformedProcedureStepSequence == []
        # A study stored after it is notified after it: by then a second IAN of the first
        # would have gone (the studies due go oldest first).
        later = new_uid()
        _store(srv, tmp / "once-later", [(later, new_uid())])
        receiver.wait(later)
        assert len(receiver.of(study)) == 1
        _wait_log(srv, f"IAN for study {study} (1 series, 3 instances) sent to RIS")

    def test_more_instances_later_are_notified_again_with_all(
            self, setup: dict[str, Any]) -> None:
        srv, receiver, tmp = setup["srv"], setup["receiver"], setup["tmp"]
        study, first, second = new_uid(), new_uid(), new_uid()
        stored = _store(srv, tmp / "more-1", [(study, first)] * 2)
        (ian,) = receiver.wait(study)
        assert _listed(ian) == stored
        more = _store(srv, tmp / "more-2", [(study, first), (study, second), (study, second)])
        _, again = receiver.wait(study, 2)
        assert _listed(again) == {first: stored[first] | more[first], second: more[second]}

    def test_two_studies_get_one_notification_each(self, setup: dict[str, Any]) -> None:
        srv, receiver, tmp = setup["srv"], setup["receiver"], setup["tmp"]
        a, b = new_uid(), new_uid()
        stored = _store(srv, tmp / "two", [(a, new_uid()), (b, new_uid()), (b, new_uid())])
        (ian_a,) = receiver.wait(a)
        (ian_b,) = receiver.wait(b)
        assert _listed(ian_a) | _listed(ian_b) == stored
        assert len(_listed(ian_a)) == 1 and len(_listed(ian_b)) == 2

    def test_the_mpps_of_the_study_is_referenced(self, setup: dict[str, Any]) -> None:
        srv, receiver, tmp = setup["srv"], setup["receiver"], setup["tmp"]
        study, step = new_uid(), new_uid()
        modality = AE(ae_title="MODALITY")
        modality.add_requested_context(ModalityPerformedProcedureStep)
        assoc = modality.associate("127.0.0.1", srv.dicom_port, ae_title="ARCHIVIST")
        assert assoc.is_established
        try:
            status, _ = assoc.send_n_create(in_progress(study), ModalityPerformedProcedureStep,
                                            step)
        finally:
            assoc.release()
        assert status.Status == 0x0000
        stored = _store(srv, tmp / "mpps", [(study, new_uid())] * 2)
        (ian,) = receiver.wait(study)
        assert _listed(ian) == stored
        (ref,) = ian.ReferencedPerformedProcedureStepSequence
        assert ref.ReferencedSOPClassUID == MPPS_SOP_CLASS
        assert ref.ReferencedSOPInstanceUID == step
        assert ref.PerformedWorkitemCodeSequence == []

    def test_a_receiver_that_was_down_gets_it_once_back(self, setup: dict[str, Any]) -> None:
        srv, receiver, tmp = setup["srv"], setup["receiver"], setup["tmp"]
        receiver.stop()
        try:
            before = srv.log().count("IAN to RIS: ")
            study = new_uid()
            stored = _store(srv, tmp / "down", [(study, new_uid())] * 2)
            deadline = time.monotonic() + 60  # a failed attempt, logged (then it is retried)
            while srv.log().count("IAN to RIS: ") <= before and time.monotonic() < deadline:
                time.sleep(0.1)
            assert srv.log().count("IAN to RIS: ") > before, srv.log()[-3000:]
        finally:
            receiver.start()
        (ian,) = receiver.wait(study, timeout=90)
        assert _listed(ian) == stored

    def test_a_refused_notification_is_given_up_after_three_tries(
            self, setup: dict[str, Any]) -> None:
        srv, receiver, tmp = setup["srv"], setup["receiver"], setup["tmp"]
        receiver.status = 0x0110  # Processing failure
        try:
            study = new_uid()
            _store(srv, tmp / "refused", [(study, new_uid())])
            _wait_log(srv, f"IAN for study {study} not delivered to RIS after 3 attempts: "
                      "status 0x0110")
        finally:
            receiver.status = 0x0000
        assert len(receiver.of(study)) == 3
        # Given up: a study stored after it is notified, and that one is not sent again.
        later = new_uid()
        _store(srv, tmp / "refused-later", [(later, new_uid())])
        receiver.wait(later)
        assert len(receiver.of(study)) == 3


@needs_dcmtk
@pytest.mark.slow
def test_a_study_stored_before_a_crash_is_notified_after_the_restart(tmp_path: Path) -> None:
    receiver = Receiver(free_port()).start()
    srv = _server(tmp_path / "data", receiver.port, delay="3600").start()
    try:
        study = new_uid()
        stored = _store(srv, tmp_path / "files", [(study, new_uid())] * 2)
        # Wait until the notifier has taken the study in (it is then only in its file),
        # then crash.
        state = tmp_path / "data" / "ian"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any(
                study in p.read_text() for p in state.glob("*.json")):
            time.sleep(0.1)
        assert any(study in p.read_text() for p in state.glob("*.json"))
        srv.kill()
        assert receiver.of(study) == []
        srv.env["ARCHIVIST_IAN_DELAY"] = "1"
        srv.start()
        (ian,) = receiver.wait(study)
        assert _listed(ian) == stored
    finally:
        srv.stop()
        receiver.stop()


class TestSettings:
    def test_ian_to_and_delay_from_the_environment(self) -> None:
        settings = load_settings(env={"ARCHIVIST_PEERS": "RIS=127.0.0.1:104,WF=h:105",
                                      "ARCHIVIST_IAN_TO": "RIS, WF",
                                      "ARCHIVIST_IAN_DELAY": "1.5"})
        assert settings.ian_to == ("RIS", "WF")
        assert settings.ian_delay == 1.5
        assert load_settings(env={}).ian_to == ()
        assert load_settings(env={}).ian_delay == 60.0

    def test_ian_to_from_toml(self, tmp_path: Path) -> None:
        config = tmp_path / "archivist.toml"
        config.write_text('ian_to = ["RIS"]\nian_delay = 5\n[peers]\nRIS = "127.0.0.1:104"\n')
        settings = load_settings(config, env={})
        assert settings.ian_to == ("RIS",) and settings.ian_delay == 5.0

    @pytest.mark.parametrize(("env", "message"), [
        ({"ARCHIVIST_IAN_TO": "NOWHERE"}, "ian_to names 'NOWHERE'"),
        ({"ARCHIVIST_IAN_DELAY": "-1"}, "ian_delay must be"),
    ], ids=["unknown-peer", "negative-delay"])
    def test_refused(self, env: dict[str, str], message: str) -> None:
        with pytest.raises(ConfigError, match=message):
            load_settings(env=env)

    def test_serve_refuses_an_unknown_peer(self, tmp_path: Path) -> None:
        done = subprocess.run([sys.executable, "-m", "archivist.cli.main", "serve", "--data",
                               str(tmp_path / "d")],
                              env={**os.environ, "ARCHIVIST_IAN_TO": "NOWHERE"},
                              capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 2
        assert "ian_to names 'NOWHERE'" in done.stderr


def test_pydicom_names_the_sop_class() -> None:
    assert pydicom.uid.UID(IAN_SOP_CLASS).name == "Instance Availability Notification SOP Class"
