"""Peers for the check-peer tests: a small pynetdicom Q/R SCP and DCMTK dcmqrscp (loopback only)."""

from __future__ import annotations

import fnmatch
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset

DCMQRSCP = shutil.which("dcmqrscp")

STORAGE = ["1.2.840.10008.5.1.4.1.1.7", "1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.4"]
FIND = ["1.2.840.10008.5.1.4.1.2.1.1", "1.2.840.10008.5.1.4.1.2.2.1"]
MOVE = ["1.2.840.10008.5.1.4.1.2.1.2", "1.2.840.10008.5.1.4.1.2.2.2"]
GET = ["1.2.840.10008.5.1.4.1.2.1.3", "1.2.840.10008.5.1.4.1.2.2.3"]
LEVEL_UID = {"PATIENT": "PatientID", "STUDY": "StudyInstanceUID",
             "SERIES": "SeriesInstanceUID", "IMAGE": "SOPInstanceUID"}


def free_port() -> int:
    """A TCP port free on the loopback interface right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for_port(port: int, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {port}")


def _matches(ds: Dataset, query: Dataset, honest: bool) -> bool:
    if not honest:
        return True
    for elem in query:
        if elem.keyword in ("QueryRetrieveLevel", "SpecificCharacterSet") or elem.VR == "SQ":
            continue
        value = str(elem.value or "")
        if not value:
            continue
        got = str(ds.get(elem.keyword, "") or "")
        if "*" in value or "?" in value:
            if not fnmatch.fnmatchcase(got, value):
                return False
        elif got != value:
            return False
    return True


@contextmanager
def pynetdicom_qr_scp(
    aet: str = "QRSCP", destinations: dict[str, int] | None = None, honest: bool = True
) -> Iterator[tuple[int, dict[str, Dataset]]]:
    """Run an in-memory Q/R SCP; yield (port, stored objects). ``honest=False`` ignores
    matching and drops return keys, to show that the probe notices."""
    from pynetdicom import AE, evt
    from pynetdicom.sop_class import Verification

    store: dict[str, Dataset] = {}
    destinations = destinations or {}

    def on_store(event: Any) -> int:
        ds = event.dataset
        ds.file_meta = event.file_meta
        store[str(ds.SOPInstanceUID)] = ds
        return 0x0000

    def on_find(event: Any) -> Iterator[tuple[int, Dataset | None]]:
        query = event.identifier
        level = str(query.QueryRetrieveLevel)
        seen: set[str] = set()
        for ds in list(store.values()):
            if not _matches(ds, query, honest):
                continue
            key = str(ds.get(LEVEL_UID[level], ""))
            if key in seen:
                continue
            seen.add(key)
            out = Dataset()
            out.QueryRetrieveLevel = level
            for elem in query:
                if elem.keyword == "QueryRetrieveLevel":
                    continue
                if not honest and elem.keyword not in ("PatientID", LEVEL_UID[level]):
                    continue
                setattr(out, elem.keyword, ds.get(elem.keyword, ""))
            yield 0xFF00, out
        yield 0x0000, None

    def _selected(query: Dataset) -> list[Dataset]:
        return [ds for ds in store.values() if _matches(ds, query, True)]

    def on_get(event: Any) -> Iterator[Any]:
        matches = _selected(event.identifier)
        yield len(matches)
        for ds in matches:
            yield 0xFF00, ds

    def on_move(event: Any) -> Iterator[Any]:
        port = destinations.get(event.move_destination.strip() if isinstance(
            event.move_destination, str) else event.move_destination.decode().strip())
        if port is None:
            yield None, None
            return
        yield "127.0.0.1", port
        matches = _selected(event.identifier)
        yield len(matches)
        for ds in matches:
            yield 0xFF00, ds

    ae = AE(ae_title=aet)
    ae.add_supported_context(Verification)
    for uid in STORAGE:
        ae.add_supported_context(uid, scu_role=True, scp_role=True)
    for uid in FIND + MOVE + GET:
        ae.add_supported_context(uid)
    for uid in STORAGE:
        ae.add_requested_context(uid)  # for the C-MOVE sub-associations
    port = free_port()
    handlers = [(evt.EVT_C_ECHO, lambda e: 0x0000), (evt.EVT_C_STORE, on_store),
                (evt.EVT_C_FIND, on_find), (evt.EVT_C_GET, on_get), (evt.EVT_C_MOVE, on_move)]
    server = ae.start_server(("127.0.0.1", port), block=False, evt_handlers=handlers)
    try:
        yield port, store
    finally:
        server.shutdown()


@contextmanager
def dcmqrscp(folder: Path, destinations: dict[str, int]) -> Iterator[int]:
    """Run DCMTK dcmqrscp with a configuration written into *folder*; yield its port."""
    assert DCMQRSCP
    port = free_port()
    db = folder / "db"
    db.mkdir()
    hosts = "\n".join(f"{aet.lower()} = ({aet}, 127.0.0.1, {p})" for aet, p in destinations.items())
    config = folder / "dcmqrscp.cfg"
    config.write_text(
        f"NetworkTCPPort = {port}\nMaxPDUSize = 16384\nMaxAssociations = 16\n\n"
        f"HostTable BEGIN\n{hosts}\nHostTable END\n\n"
        "VendorTable BEGIN\nVendorTable END\n\n"
        f"AETable BEGIN\nDCMQRSCP {db} RW (200, 1024mb) ANY\nAETable END\n"
    )
    proc = subprocess.Popen(
        [DCMQRSCP, "-c", str(config), str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for_port(port)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
