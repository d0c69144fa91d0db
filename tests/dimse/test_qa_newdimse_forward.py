"""Forwarding (``forward_to``) to destinations that misbehave, from a real ``archivist serve``:
one that aborts its association every few stores (as a gateway restarting, or one with a cap
on objects per association) and one that takes CT only and refuses one store. Both are down
while the instances are stored, so each gets them as one batch once it is up.

Nothing may be lost to the aborts (instances a batch never offered are not "refused"), and
what a destination already stored is not sent again because another instance was refused.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

from archivist.testing.datasets import make_instance, new_uid
from archivist.testing.server import ServerProcess, free_port

STORESCU = "/usr/bin/storescu"
pytestmark = pytest.mark.skipif(not os.path.exists(STORESCU), reason="DCMTK storescu needed")
MR = "1.2.840.10008.5.1.4.1.1.4"
COUNT, MR_EVERY = 30, 10


class Peer:
    """A pynetdicom Storage SCP counting every C-STORE it is offered."""

    def __init__(self, aet: str, port: int, *, abort_every: int = 0, refuse: int = 0,
                 ct_only: bool = False) -> None:
        self.aet, self.port = aet, port
        self.abort_every, self.refuse, self.ct_only = abort_every, refuse, ct_only
        self.offered: Counter[str] = Counter()
        self.stored: set[str] = set()
        self._n = 0
        self._lock = threading.Lock()
        self.server: Any = None

    def start(self) -> None:
        ae = AE(ae_title=self.aet)
        if self.ct_only:
            ae.add_supported_context(CTImageStorage)
        else:
            for cx in AllStoragePresentationContexts:
                ae.add_supported_context(str(cx.abstract_syntax))
        self.server = ae.start_server(("127.0.0.1", self.port), block=False,
                                      evt_handlers=[(evt.EVT_C_STORE, self._on_store)])

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()

    def _on_store(self, event: Any) -> int:
        sop = str(event.request.AffectedSOPInstanceUID)
        with self._lock:
            self._n += 1
            n = self._n
            self.offered[sop] += 1
        if self.abort_every and n % self.abort_every == 0:
            event.assoc.abort()
            return 0xA700
        if n == self.refuse:
            return 0xA700  # Out of Resources, this once
        self.stored.add(sop)
        return 0x0000


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("qa_forward")
    flaky = Peer("FLAKY", free_port(), abort_every=7)
    ct_only = Peer("CTONLY", free_port(), refuse=5, ct_only=True)
    srv = ServerProcess(tmp / "data", extra_args=["--workers", "1"], env={
        "ARCHIVIST_PEERS": f"FLAKY=127.0.0.1:{flaky.port},CTONLY=127.0.0.1:{ct_only.port}",
        "ARCHIVIST_FORWARD_TO": "FLAKY,CTONLY"})
    srv.start()
    folder = tmp / "in"
    folder.mkdir()
    study, ct_series, mr_series = new_uid(), new_uid(), new_uid()
    sops: dict[str, str] = {}
    for n in range(COUNT):
        mr = n % MR_EVERY == MR_EVERY - 1
        sop = new_uid()
        make_instance(folder / f"{n:03d}.dcm", study_uid=study, sop_uid=sop,
                      series_uid=mr_series if mr else ct_series, instance_number=n + 1,
                      modality="MR" if mr else "CT", sop_class_uid=MR if mr else None,
                      series_number=2 if mr else 1)
        sops[sop] = "MR" if mr else "CT"
    # Both destinations are down while the instances are stored: one batch each, later.
    done = subprocess.run([STORESCU, "-aec", "ARCHIVIST", "127.0.0.1", str(srv.dicom_port),
                           *sorted(map(str, folder.iterdir()))],
                          env={**os.environ, "TCP_NODELAY": "1"}, capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    flaky.start()
    ct_only.start()
    cts = {sop for sop, kind in sops.items() if kind == "CT"}
    # Generous: the forwarder's pause grows (1, 2, 4, 8 s...) while both are down, longer when
    # a loaded machine makes the storescu run above slow; the loops end as soon as it is done.
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (set(sops) <= flaky.stored
                                               and cts <= ct_only.stored):
        time.sleep(0.2)
    # The MR ones are given up after three tries (1 s, then 2 s apart).
    while (time.monotonic() < deadline
           and srv.log().count("not forwarded to CTONLY") < COUNT // MR_EVERY):
        time.sleep(0.2)
    time.sleep(1.0)  # what would be sent again, would be by now
    yield {"srv": srv, "sops": sops, "flaky": flaky, "ct_only": ct_only}
    flaky.stop()
    ct_only.stop()
    srv.stop()


def test_aborted_associations_lose_nothing(setup: dict[str, Any]) -> None:
    flaky: Peer = setup["flaky"]
    assert set(setup["sops"]) - flaky.stored == set()
    assert "not forwarded to FLAKY" not in setup["srv"].log()
    # Each instance is offered again only when its association was cut at it.
    assert sum(flaky.offered.values()) <= COUNT + COUNT // flaky.abort_every + 1


def test_refusals_do_not_resend_what_was_stored(setup: dict[str, Any]) -> None:
    ct_only: Peer = setup["ct_only"]
    cts = {sop for sop, kind in setup["sops"].items() if kind == "CT"}
    assert cts - ct_only.stored == set()
    assert max(ct_only.offered.values()) == 2  # the refused one, sent again once
    assert sum(ct_only.offered.values()) == len(cts) + 1
    log = setup["srv"].log()
    mrs = [sop for sop, kind in setup["sops"].items() if kind == "MR"]
    for sop in mrs:  # no presentation context for MR there: given up, once each
        assert log.count(f"sop={sop} not forwarded to CTONLY after 3 attempts") == 1
