"""check-peer's second reading of a refusal on a plain socket (``_raw_rejection``): what a
real server answers, read byte for byte, whatever pynetdicom's requestor made of it."""

from __future__ import annotations

from pathlib import Path

from archivist.testing.server import ServerProcess
from archivist.validate.peer import _raw_rejection, _rejection


def test_the_refusal_and_its_reason_are_read_on_a_plain_socket(tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path / "data", extra_args=["--allow", "GOODAE@127.0.0.1"]).start()
    try:
        rj = _raw_rejection("127.0.0.1", srv.dicom_port, "ARCHIVIST", "BADAE", 30)
        assert rj is not None
        assert (rj.result, rj.result_source, rj.diagnostic) == (1, 1, 3)
        assert "Calling AE title not recognised" in _rejection(rj)
        # An association it accepts is not a refusal (and is ended, not left open).
        assert _raw_rejection("127.0.0.1", srv.dicom_port, "ARCHIVIST", "GOODAE", 30) is None
    finally:
        srv.stop()
