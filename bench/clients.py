"""The clients, identical for every target: DCMTK storescu/movescu/getscu, pynetdicom C-FIND,
and plain ``http.client`` for DICOMweb (one keep-alive connection per row)."""

from __future__ import annotations

import http.client
import os
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.targets import SCU_AET, dcmtk


def dcmtk_env() -> dict[str, str]:
    """Debian's DCMTK stalls on delayed ACKs without TCP_NODELAY=1 (performance-anchors.md)."""
    env = dict(os.environ)
    env["TCP_NODELAY"] = "1"
    return env


def split(files: list[Path], n: int) -> list[list[Path]]:
    """`files` in `n` contiguous chunks of near-equal size (whole studies stay together)."""
    size, extra = divmod(len(files), n)
    out: list[list[Path]] = []
    start = 0
    for i in range(n):
        end = start + size + (1 if i < extra else 0)
        if end > start:
            out.append(files[start:end])
        start = end
    return out


@dataclass
class StoreRun:
    seconds: float
    returncodes: list[int]
    errors: str


def storescu_parallel(files: list[Path], port: int, aet: str, n: int = 4,
                      log_dir: Path | None = None, timeout: float = 1800,
                      nodelay: bool = True) -> StoreRun:
    """Send `files` with `n` DCMTK storescu processes at once; wall time from first start to last
    exit. ``--no-halt`` so one refused object does not hide the rest (the count is checked).
    `nodelay` False: storescu as Debian runs it, without TCP_NODELAY."""
    env = dcmtk_env()
    if not nodelay:
        del env["TCP_NODELAY"]
    procs = []
    logs = []
    start = time.perf_counter()
    for i, chunk in enumerate(split(files, n)):
        log_path = (log_dir or Path("/tmp")) / f"storescu-{os.getpid()}-{i}.log"
        log = open(log_path, "wb")  # noqa: SIM115 - handed to the child, closed below
        logs.append(log_path)
        procs.append(subprocess.Popen(
            [dcmtk("storescu"), "--no-halt", "-aet", SCU_AET, "-aec", aet, "127.0.0.1", str(port),
             *map(str, chunk)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env))
        log.close()
    codes = [p.wait(timeout) for p in procs]
    seconds = time.perf_counter() - start
    errors = []
    for path in logs:
        text = path.read_text(errors="replace")
        errors += [line for line in text.splitlines() if line.startswith(("E:", "F:"))][:5]
        path.unlink(missing_ok=True)
    return StoreRun(seconds, codes, "\n".join(errors[:10]))


def storescu_dirs(dirs: list[Path], port: int, aet: str, timeout: float = 7200) -> StoreRun:
    """One storescu per folder (recursive scan), all at once: for populating large indexes."""
    procs = []
    start = time.perf_counter()
    for d in dirs:
        procs.append(subprocess.Popen(
            [dcmtk("storescu"), "--no-halt", "-q", "+sd", "+r", "-aet", SCU_AET, "-aec", aet,
             "127.0.0.1", str(port), str(d)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
            env=dcmtk_env()))
    codes = [p.wait(timeout) for p in procs]
    return StoreRun(time.perf_counter() - start, codes, "")


def retrieve(kind: str, port: int, aet: str, study_uid: str, dest: Path,
             move_destination: str = "STORESCP", timeout: float = 600) -> StoreRun:
    """C-MOVE (movescu, to `move_destination`) or C-GET (getscu, into `dest`) of one study."""
    common = ["-S", "-aet", SCU_AET, "-aec", aet, "-k", "QueryRetrieveLevel=STUDY",
              "-k", f"StudyInstanceUID={study_uid}"]
    if kind == "c_move":
        cmd = [dcmtk("movescu"), *common, "-aem", move_destination, "127.0.0.1", str(port)]
    elif kind == "c_get":
        cmd = [dcmtk("getscu"), *common, "-od", str(dest), "127.0.0.1", str(port)]
    else:
        raise ValueError(kind)
    start = time.perf_counter()
    out = subprocess.run(cmd, check=False, capture_output=True, text=True, env=dcmtk_env(),
                         timeout=timeout)
    seconds = time.perf_counter() - start
    errors = [line for line in (out.stdout + out.stderr).splitlines()
              if line.startswith(("E:", "F:"))]
    return StoreRun(seconds, [out.returncode], "\n".join(errors[:10]))


# -- C-FIND --------------------------------------------------------------------------------------

RETURN_KEYS = ("StudyInstanceUID", "PatientName", "PatientID", "StudyDate", "StudyTime",
               "AccessionNumber", "StudyDescription", "ModalitiesInStudy",
               "NumberOfStudyRelatedInstances")


def _find_identifier(keys: dict[str, str]):  # type: ignore[no-untyped-def]
    from pydicom.dataset import Dataset

    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    for keyword in RETURN_KEYS:
        setattr(ds, keyword, "")
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


def _ae():  # type: ignore[no-untyped-def]
    from pynetdicom import AE
    from pynetdicom.sop_class import (  # type: ignore[attr-defined]
        StudyRootQueryRetrieveInformationModelFind,
        Verification,
    )

    ae = AE(ae_title=SCU_AET)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 120
    return ae


def cfind(port: int, aet: str, keys: dict[str, str]) -> tuple[float, int, list[str]]:
    """One STUDY-level C-FIND over a new association: (milliseconds, matches, study UIDs).

    Raises
    ------
    RuntimeError
        When the association is refused or the final status is not Success.
    """
    from pynetdicom.sop_class import (  # type: ignore[attr-defined]
        StudyRootQueryRetrieveInformationModelFind,
    )

    ae = _ae()
    identifier = _find_identifier(keys)
    start = time.perf_counter()
    assoc = ae.associate("127.0.0.1", port, ae_title=aet)
    if not assoc.is_established:
        raise RuntimeError(f"C-FIND association to {aet} refused or aborted")
    uids: list[str] = []
    final = None
    try:
        for status, answer in assoc.send_c_find(identifier,
                                                StudyRootQueryRetrieveInformationModelFind):
            if status is None:
                raise RuntimeError("C-FIND: no response (timeout or abort)")
            if status.Status in (0xFF00, 0xFF01):
                uids.append(str(answer.StudyInstanceUID) if answer is not None else "")
            else:
                final = int(status.Status)
    finally:
        assoc.release()
    ms = (time.perf_counter() - start) * 1000
    if final != 0x0000:
        raise RuntimeError(f"C-FIND final status 0x{final or 0:04X}")
    return ms, len(uids), uids


def echo_ms(port: int, aet: str) -> float:
    """Associate, C-ECHO, release: the fixed cost every C-FIND row pays."""
    ae = _ae()
    start = time.perf_counter()
    assoc = ae.associate("127.0.0.1", port, ae_title=aet)
    if not assoc.is_established:
        raise RuntimeError(f"association to {aet} refused")
    status = assoc.send_c_echo()
    assoc.release()
    if status is None or status.Status != 0:
        raise RuntimeError("C-ECHO failed")
    return (time.perf_counter() - start) * 1000


# -- HTTP ----------------------------------------------------------------------------------------


@dataclass
class HttpResult:
    status: int
    ms: float
    body: bytes
    content_type: str


class Http:
    """One keep-alive HTTP/1.1 connection to 127.0.0.1:port (reconnects once if it was closed)."""

    def __init__(self, port: int, timeout: float = 600) -> None:
        self.port = port
        self.timeout = timeout
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)

    def request(self, method: str, path: str, headers: dict[str, str] | None = None,
                body: bytes | None = None) -> HttpResult:
        for attempt in (1, 2):
            start = time.perf_counter()
            try:
                self.conn.request(method, path, body=body, headers=headers or {})
                resp = self.conn.getresponse()
                data = resp.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self.conn.close()
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port,
                                                       timeout=self.timeout)
                if attempt == 2:
                    raise
                continue
            ms = (time.perf_counter() - start) * 1000
            if resp.getheader("Connection", "").lower() == "close":
                self.conn.close()
            return HttpResult(resp.status, ms, data, resp.getheader("Content-Type", ""))
        raise AssertionError("unreachable")

    def get(self, path: str, accept: str) -> HttpResult:
        return self.request("GET", path, {"Accept": accept})

    def close(self) -> None:
        self.conn.close()


def multipart_dicom(files: list[Path], transform: Callable[[bytes], bytes] | None = None,
                    ) -> tuple[bytes, str]:
    """A STOW-RS request body of Part 10 files (each through `transform` when given) and its
    Content-Type (PS3.18 10.5)."""
    boundary = f"bench-{uuid.uuid4().hex}"
    parts = []
    for f in files:
        parts.append(f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode())
        data = f.read_bytes()
        parts.append(transform(data) if transform else data)
        parts.append(b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    content_type = f'multipart/related; type="application/dicom"; boundary={boundary}'
    return b"".join(parts), content_type


def stow_requests(port: int, root: str, bodies: list[tuple[bytes, str]],
                  ok: tuple[int, ...] = (200, 202)) -> tuple[float, HttpResult | None]:
    """POST each STOW-RS body (:func:`multipart_dicom`) to ``{root}/studies`` in turn, over one
    connection: (seconds the answers took, summed; the first answer whose status is not in
    `ok`, which ends the series, else None)."""
    http = Http(port)
    seconds = 0.0
    try:
        for body, ctype in bodies:
            r = http.request("POST", f"{root}/studies",
                             {"Content-Type": ctype, "Accept": "application/dicom+json"}, body)
            if r.status not in ok:
                return seconds, r
            seconds += r.ms / 1000
    finally:
        http.close()
    return seconds, None


def count_parts(body: bytes, content_type: str) -> int:
    """Number of parts of a multipart/related body (0 if it is not one)."""
    marker = "boundary="
    if marker not in content_type:
        return 0
    boundary = content_type.split(marker, 1)[1].split(";")[0].strip().strip('"')
    delimiter = b"--" + boundary.encode()
    n = body.count(delimiter)
    return max(0, n - 1)  # the closing delimiter is counted once too
