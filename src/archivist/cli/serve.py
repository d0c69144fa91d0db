"""``archivist serve``: DIMSE and HTTP listeners in one process."""

from __future__ import annotations

import ipaddress
import logging
import sys
import warnings

from archivist.config import Settings


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # pydicom warnings can quote element values (patient names): keep them out of the logs.
    logging.getLogger("pydicom").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="pydicom")
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)


def _is_loopback(host: str) -> bool:
    if host in ("localhost",):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run_server(settings: Settings) -> int:
    """Run until SIGTERM/SIGINT; returns the exit code."""
    configure_logging(settings.log_level)
    log = logging.getLogger("archivist.serve")
    if not _is_loopback(settings.host) and not settings.allow and not settings.insecure:
        print(
            f"error: refusing to listen on {settings.host} with no --allow list: any host could "
            "store and read patient data. Add --allow AET@HOST (repeatable) or pass --insecure.",
            file=sys.stderr,
        )
        return 2

    import uvicorn

    from archivist.archive.archive import Archive
    from archivist.dimse.server import DimseServer
    from archivist.web.app import Health, create_app

    archive = Archive.open(settings)
    health = Health()
    dimse = DimseServer(archive)
    try:
        dimse.start()
    except OSError as exc:
        print(f"error: cannot listen for DICOM on {settings.host}:{settings.dicom_port}: "
              f"{exc.strerror}", file=sys.stderr)
        archive.close()
        return 1
    dimse.wait_listening()
    health.dimse_ready = True
    app = create_app(archive, health)

    config = uvicorn.Config(
        app, host=settings.host, port=settings.http_port, log_level="warning",
        lifespan="off", access_log=False, timeout_keep_alive=30,
        limit_concurrency=512,
    )
    server = uvicorn.Server(config)

    original_startup = server.startup

    async def startup(sockets=None):  # type: ignore[no-untyped-def]
        await original_startup(sockets=sockets)
        if server.started:
            health.http_ready = True
            print(
                f"Archivist is running.\n"
                f"  DICOM  {settings.aet}@{settings.host}:{dimse.port}\n"
                f"  HTTP   http://{settings.host}:{settings.http_port}/  "
                f"(health: /healthz)\n"
                f"  data   {settings.data_dir.resolve()}\n"
                f"Press Ctrl-C to stop.",
                flush=True,
            )
            log.info("listening dicom=%s:%d http=%s:%d", settings.host, dimse.port,
                     settings.host, settings.http_port)

    server.startup = startup  # type: ignore[method-assign]

    original_shutdown = server.shutdown

    async def shutdown(sockets=None):  # type: ignore[no-untyped-def]
        health.stopping = True
        await original_shutdown(sockets=sockets)
        # uvicorn re-raises the signal after its own shutdown, which would kill the process
        # before the DIMSE side has finished: we stop in order and exit 0 instead.
        server._captured_signals.clear()  # type: ignore[attr-defined]

    server.shutdown = shutdown  # type: ignore[method-assign]
    try:
        server.run()
    finally:
        health.stopping = True
        log.info("stopping: finishing running associations")
        dimse.stop()
        archive.close()
        log.info("stopped")
    if not server.started:
        print(f"error: cannot listen for HTTP on {settings.host}:{settings.http_port}",
              file=sys.stderr)
        return 1
    return 0
