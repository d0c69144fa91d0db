"""A bare pynetdicom storage SCP: the Python ceiling for one process.

It writes ``event.encoded_dataset()`` (the dataset exactly as received) to a numbered file, fsyncs
it and answers Success; nothing is parsed, indexed or checked. pynetdicom's defaults otherwise
(16 KiB maximum PDU, one thread per association). Run by the harness as
``python -m bench.pynetdicom_scp PORT OUTDIR``; stops on SIGTERM.
"""

from __future__ import annotations

import itertools
import os
import signal
import sys
import threading
from pathlib import Path

from pynetdicom import AE, StoragePresentationContexts, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]


def main(argv: list[str]) -> int:
    port = int(argv[0])
    out = Path(argv[1])
    out.mkdir(parents=True, exist_ok=True)
    counter = itertools.count(1)
    lock = threading.Lock()

    def on_store(event: evt.Event) -> int:
        with lock:
            n = next(counter)
        # A counter, never a UID, names the file.
        path = out / f"{n:08d}.dcm"
        with open(path, "wb") as f:
            f.write(event.encoded_dataset())
            f.flush()
            os.fsync(f.fileno())
        return 0x0000

    ae = AE(ae_title="PYNETDICOM")
    # pynetdicom's 120 commonest storage SOP classes (the corpus uses CT, MR and multi-frame
    # word Secondary Capture, all among them) and Verification.
    ae.supported_contexts = list(StoragePresentationContexts)
    ae.add_supported_context(Verification)
    ae.maximum_associations = 64
    server = ae.start_server(("127.0.0.1", port), block=False,
                             evt_handlers=[(evt.EVT_C_STORE, on_store)])
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print(f"pynetdicom storage SCP on 127.0.0.1:{port}", flush=True)
    stop.wait()
    server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
