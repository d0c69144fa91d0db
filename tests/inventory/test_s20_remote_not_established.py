"""Why an association with another archive did not come about, as `migrate` and `inventory
diff` print it: nothing listening at the address (pynetdicom reports a refused connection as an
abort, and the message said "not accepted" as for a rejection) or a rejection of our titles."""

from __future__ import annotations

import pytest
from pynetdicom import AE, evt

from archivist.inventory.remote import Remote, RemoteError, associate
from archivist.testing.server import free_port

VERIFICATION = "1.2.840.10008.1.1"


def test_nothing_listening_says_the_connection_was_refused() -> None:
    remote = Remote(aet="ORTHANC", host="127.0.0.1", port=free_port(), acse_timeout=5)
    with pytest.raises(RemoteError) as failed:
        associate(remote, [VERIFICATION])
    message = str(failed.value)
    assert "could not be reached" in message and "refused" in message.lower(), message
    assert f"127.0.0.1:{remote.port}" in message


def test_a_rejection_names_the_titles() -> None:
    scp = AE(ae_title="LEGACY")
    scp.require_called_aet = True
    scp.add_supported_context(VERIFICATION)
    port = free_port()
    server = scp.start_server(("127.0.0.1", port), block=False, evt_handlers=[
        (evt.EVT_C_ECHO, lambda event: 0x0000)])
    try:
        remote = Remote(aet="NOTLEGACY", host="127.0.0.1", port=port, acse_timeout=5)
        with pytest.raises(RemoteError) as failed:
            associate(remote, [VERIFICATION])
        message = str(failed.value)
        assert "rejected" in message and "NOTLEGACY" in message, message
        assert associate(Remote(aet="LEGACY", host="127.0.0.1", port=port,
                                acse_timeout=5), [VERIFICATION]).release() is None
    finally:
        server.shutdown()
