"""``archivist send``: C-STORE a stored study, series or instance to another DICOM node.

What Orthanc calls "send to DICOM modality": the objects go out as a C-MOVE to that node would
send them (one association, as stored when the node accepts their transfer syntax, else
decompressed). Works while ``archivist serve`` runs on the same data directory.
"""

from __future__ import annotations

from pathlib import Path

import typer

from archivist.cli.delete import ConfigOpt, DataOpt, _open


def send(
    destination: str = typer.Argument(
        ..., help="A configured peer's AE title (a [peers] entry of the settings file, or "
        "ARCHIVIST_PEERS; a running serve's --peer flags are its own), or AET@HOST:PORT."),
    study: str = typer.Option(..., "--study", help="Study Instance UID."),
    series: str | None = typer.Option(None, "--series", help="Series Instance UID (of the study)."),
    instance: str | None = typer.Option(
        None, "--instance", help="SOP Instance UID (of the study, and of --series if given)."),
    data: Path | None = DataOpt,
    config: Path | None = ConfigOpt,
) -> None:
    """Send a study, a series or an instance to another DICOM node (C-STORE).

    Prints one line per instance that was not stored there, with the reason, and a summary.
    Exit status 0 when every instance was stored (warnings included), 1 when some were not
    or the node could not be reached, 2 for a bad argument, an unknown destination or
    nothing stored under those UIDs.
    """
    from archivist.core.levels import QueryLevel
    from archivist.core.uids import is_valid_uid
    from archivist.dimse.requestor import AssociationRefused
    from archivist.dimse.send import send_instances
    from archivist.errors import ConfigError
    from archivist.inventory.remote import Remote, RemoteError

    for name, uid in (("--study", study), ("--series", series), ("--instance", instance)):
        if uid is not None and not is_valid_uid(uid):
            typer.secho(f"error: {name} {uid!r} is not a UID", fg="red", err=True)
            raise typer.Exit(2)
    archive = _open(config, data)
    try:
        peer = archive.settings.peer(destination.strip())
        if peer is not None:
            aet, host, port = peer.aet, peer.host, peer.port
        else:
            try:
                remote = Remote.parse(destination)
            except (RemoteError, ConfigError):
                known = ", ".join(p.aet for p in archive.settings.peers) or "none configured"
                typer.secho(f"error: {destination!r} is neither a configured peer ({known}) nor "
                            "AET@HOST:PORT", fg="red", err=True)
                raise typer.Exit(2) from None
            aet, host, port = remote.aet, remote.host, remote.port
        pairs = [("StudyInstanceUID", study)]
        if series:
            pairs.append(("SeriesInstanceUID", series))
        if instance:
            pairs.append(("SOPInstanceUID", instance))
        query = archive.search.query_from_pairs(QueryLevel.IMAGE, pairs)
        refs = list(archive.retrieve.instances(query))
        if not refs:
            typer.secho("error: nothing is stored under those UIDs", fg="red", err=True)
            raise typer.Exit(2)
        try:
            result = send_instances(archive, host, port, aet, refs)
        except (AssociationRefused, OSError, TimeoutError) as exc:
            reason = str(exc) or type(exc).__name__
            typer.secho(f"error: cannot associate with {aet} at {host}:{port}: {reason}",
                        fg="red", err=True)
            raise typer.Exit(1) from None
    finally:
        archive.close()
    for sop, reason in result.failed:
        typer.echo(f"  not stored {sop}: {reason}")
    warned = f" ({result.warnings} with a warning)" if result.warnings else ""
    typer.echo(f"sent {result.sent} of {len(refs)} instances to {aet} at {host}:{port}{warned}")
    if result.failed:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("send")(send)
