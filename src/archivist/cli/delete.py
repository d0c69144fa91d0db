"""``archivist delete`` and ``archivist purge-tombstones``: deletion with tombstones.

A delete removes a study, a series or an instance from the index in one transaction and then
its files; each removed record leaves a tombstone, so Repository Query and inventories report
it as Removed from Operational Use (Supplement 223) until ``purge-tombstones`` forgets it.
Works while ``archivist serve`` runs on the same data directory.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

DataOpt = typer.Option(None, "--data", help="Data directory. Default ./archivist-data.",
                       show_default=False)
ConfigOpt = typer.Option(None, "--config", help="TOML settings file.", exists=True,
                         dir_okay=False)


def _open(config: Path | None, data: Path | None):  # type: ignore[no-untyped-def]
    """The archive at the data directory; exit 2 when there is none (a mistyped --data must
    not create an empty archive there and then report that nothing is stored)."""
    from archivist.cli.main import _settings, open_archive

    settings = _settings(config, data_dir=data)
    if not settings.index_exists:
        typer.secho(f"error: no archive at {settings.data_dir} (pass --data)", fg="red",
                    err=True)
        raise typer.Exit(2)
    return open_archive(settings)


def _index_failed(exc: Exception | str) -> typer.Exit:
    """Exit status 3: the index could not be written (nothing changed)."""
    typer.secho(f"error: {exc}", fg="red", err=True)
    return typer.Exit(3)


def delete(
    study: str = typer.Option(..., "--study", help="Study Instance UID."),
    series: str | None = typer.Option(None, "--series", help="Series Instance UID (of the study)."),
    instance: str | None = typer.Option(
        None, "--instance", help="SOP Instance UID (of the study, and of --series if given)."),
    reason: str = typer.Option(
        "quality", "--reason",
        help="Reason for removal (CID 7031): quality, safety, worklist, retention, qc, "
        "inaccessible, kos, replaced."),
    json_out: bool = typer.Option(False, "--json", help="Print what was removed as JSON."),
    data: Path | None = DataOpt,
    config: Path | None = ConfigOpt,
) -> None:
    """Delete a study, a series or an instance (its files too), leaving tombstones.

    Exit status 0 when deleted, 1 when nothing by those UIDs is stored, 2 for a bad argument
    or no archive at the data directory, 3 when the index could not be written (for instance
    locked by another program for longer than the busy timeout; nothing was deleted).
    """
    from archivist.archive.delete import Deletion
    from archivist.errors import IndexError_, NotFound, QueryError
    from archivist.index.removal import reason_of

    try:
        why = reason_of(reason)
    except QueryError as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(2) from None
    archive = _open(config, data)
    try:
        removal = Deletion(archive.index, archive.blobs, archive.removals).delete(
            study, series, instance, reason=why)
    except NotFound as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(1) from None
    except QueryError as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(2) from None
    except IndexError_ as exc:
        raise _index_failed(exc) from None
    finally:
        archive.close()
    if json_out:
        typer.echo(json.dumps(removal.to_json(), indent=2))
        return
    typer.echo(f"deleted {len(removal.instances)} instances ({removal.size} bytes), "
               f"{len(removal.series)} series, {len(removal.studies)} studies; "
               f"reason {why.value} {why.meaning}")


def purge_tombstones(
    older_than: float | None = typer.Option(
        None, "--older-than", min=0,
        help="Only tombstones of records removed more than DAYS ago.", metavar="DAYS"),
    data: Path | None = DataOpt,
    config: Path | None = ConfigOpt,
) -> None:
    """Forget removed records: Repository Query and new inventories no longer report them.

    Exit status 0 when done, 2 for a bad argument or no archive at the data directory, 3 when
    the index could not be written (nothing was purged).
    """
    from archivist.archive.delete import Deletion
    from archivist.errors import IndexError_

    archive = _open(config, data)
    try:
        n = Deletion(archive.index, archive.blobs).purge(older_than)
    except IndexError_ as exc:
        raise _index_failed(exc) from None
    finally:
        archive.close()
    typer.echo(f"purged {n} tombstones")


def register(app: typer.Typer) -> None:
    """Add ``delete`` and ``purge-tombstones`` to the top-level CLI."""
    app.command("delete")(delete)
    app.command("purge-tombstones")(purge_tombstones)
