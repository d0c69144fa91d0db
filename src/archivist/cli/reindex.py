"""``archivist reindex``: rebuild parts of the index from the stored objects.

``--codes`` re-extracts the coded concepts used by query by code (objects stored before index
revision 0002 have none), reading each stored object's header once. Running it again gives the
same index; it works while ``archivist serve`` runs on the same data directory.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

DataOpt = typer.Option(None, "--data", help="Data directory. Default ./archivist-data.",
                       show_default=False)
ConfigOpt = typer.Option(None, "--config", help="TOML settings file.", exists=True,
                         dir_okay=False)


def reindex(
    codes: bool = typer.Option(
        False, "--codes",
        help="Index the coded concepts (query by code) of every stored object again."),
    json_out: bool = typer.Option(False, "--json", help="Print the counts as JSON."),
    data: Path | None = DataOpt,
    config: Path | None = ConfigOpt,
) -> None:
    """Rebuild parts of the index from the stored objects (the objects are never changed).

    Exit status 0 when done, 1 when some stored objects could not be read (they are listed in
    the log and left as they were; objects deleted or replaced while it ran are counted as
    changed meanwhile, not as unreadable), 2 when nothing to do was asked or the index is lost
    while stored objects remain (nothing is changed), 3 when the index could not be opened or
    written (for instance locked by another program for longer than the
    busy timeout; the batches written before stay, and running it again finishes the work).
    """
    if not codes:
        typer.secho("error: say what to reindex (--codes)", fg="red", err=True)
        raise typer.Exit(2)
    import warnings

    from sqlalchemy.exc import SQLAlchemyError

    from archivist.archive.coded import reindex_codes
    from archivist.cli.main import _settings, open_archive

    settings = _settings(config, data_dir=data)
    if not settings.index_exists and not settings.s3_bucket \
            and not (settings.data_dir / "blobs").is_dir():
        # A mistyped --data must not create an empty archive there and report 0 reindexed;
        # stored objects without an index go on to open_archive's lost-index message.
        typer.secho(f"error: no archive at {settings.data_dir} (pass --data)", fg="red",
                    err=True)
        raise typer.Exit(2)
    archive = open_archive(settings)
    try:
        with warnings.catch_warnings():
            # pydicom's remarks on the stored headers (an unexpected VR, ...) are not the
            # reindex's business: the objects were accepted at ingest and stay as they are.
            warnings.simplefilter("ignore", UserWarning)
            done = reindex_codes(archive.index, archive.blobs)
    except SQLAlchemyError as exc:
        typer.secho(f"error: the index could not be written ({getattr(exc, 'orig', exc)}); "
                    "run it again", fg="red", err=True)
        raise typer.Exit(3) from None
    finally:
        archive.close()
    if json_out:
        typer.echo(json.dumps(done.to_json(), indent=2))
    else:
        typer.echo(f"codes reindexed: {done.instances} instances read, {done.codes} codes in "
                   f"{done.with_codes} instances; {done.unreadable} unreadable, "
                   f"{done.changed} changed meanwhile")
    raise typer.Exit(1 if done.unreadable else 0)


def register(app: typer.Typer) -> None:
    """Add ``reindex`` to the top-level CLI."""
    app.command("reindex")(reindex)
