"""The ``archivist`` command line.

Heavy modules (pydicom, pynetdicom, SQLAlchemy) are imported inside the commands, so that
``archivist --help`` and quick commands start fast.
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from archivist.config import Settings

from archivist.cli import codes as codes_cli
from archivist.cli import delete as delete_cli
from archivist.cli import inventory as inventory_cli
from archivist.cli import migrate as migrate_cli
from archivist.cli import reindex as reindex_cli
from archivist.cli import send as send_cli
from archivist.cli import users as users_cli
from archivist.cli import validate as validate_cli

app = typer.Typer(
    name="archivist",
    help=(
        "Archivist: a DICOM archive (PACS). Receives images over DIMSE (C-STORE), answers "
        "C-FIND/C-MOVE/C-GET, and keeps every object byte for byte under a data directory "
        "(files + SQLite by default)."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    # Help texts are Markdown, not Rich markup: "[peers]" and "[http_users]" are words (Rich
    # took them for style tags and dropped them), and a docstring's paragraphs are reflowed to
    # the terminal (Rich kept each source line break, cutting sentences in two).
    rich_markup_mode="markdown",
)

DataOpt = typer.Option(
    None, "--data", help="Data directory (blobs and index). Default ./archivist-data.",
    envvar=None, show_default=False,
)
ConfigOpt = typer.Option(
    None, "--config",
    help="TOML settings file (keys and environment variables: the README's Configuration "
         "section). Also ARCHIVIST_CONFIG.",
    show_default=False,
)


def _settings(config: Path | None, **flags: object):  # type: ignore[no-untyped-def]
    from archivist.config import load_settings
    from archivist.errors import ConfigError

    try:
        return load_settings(config, overrides=flags)
    except ConfigError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None


def index_trouble(exc: Exception) -> str:
    """A message for an index that could not be opened or written (SQLAlchemy's error):
    locked or busy is worth another try, a damaged file is not."""
    from sqlalchemy.exc import OperationalError

    cause = getattr(exc, "orig", exc)
    if isinstance(exc, OperationalError):
        return f"the index could not be used ({cause}); try again"
    return (f"the index is damaged ({cause}): restore it from a backup, or move the data "
            "directory's blobs folder aside and `archivist import` it into a new one")


def open_archive(settings: Settings):  # type: ignore[no-untyped-def]
    """The archive at `settings` for a command; exit 2 when its index was lost while objects
    are stored (:func:`archivist.archive.archive.lost_index`), 3 when the index cannot be
    opened."""
    from sqlalchemy.exc import SQLAlchemyError

    from archivist.archive.archive import Archive
    from archivist.errors import IndexLost

    try:
        return Archive.open(settings)
    except IndexLost as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None
    except SQLAlchemyError as exc:
        typer.secho(f"error: {index_trouble(exc)}", fg=typer.colors.RED, err=True)
        raise typer.Exit(3) from None


@app.command()
def serve(
    data: Path | None = DataOpt,
    aet: str | None = typer.Option(None, "--aet", help="Our AE title. Default ARCHIVIST."),
    dicom_port: int | None = typer.Option(
        None, "--dicom-port", help="DIMSE listening port. Default 11112."
    ),
    http_port: int | None = typer.Option(
        None, "--http-port", help="HTTP listening port (health, DICOMweb, API). Default 8080."
    ),
    host: str | None = typer.Option(
        None, "--host",
        help="Address to listen on. Default 127.0.0.1 (this machine only); any other address "
             "needs --allow or --insecure.",
    ),
    peer: list[str] | None = typer.Option(
        None, "--peer", help="C-MOVE destination AET=HOST:PORT; repeat for several."
    ),
    allow: list[str] | None = typer.Option(
        None, "--allow",
        help="Accept associations only from AET@HOST (either may be *; a host name is "
             "resolved at start); repeat for several. HTTP requests are then answered only "
             "from those hosts and this machine (others get 403).",
    ),
    duplicate_policy: str | None = typer.Option(
        None, "--duplicates", help="Duplicate SOP Instance UID: keep (default), replace, reject."
    ),
    insecure: bool | None = typer.Option(
        None, "--insecure/--secure",
        help="Allow listening on a non-loopback address with no --allow list.",
    ),
    workers: int | None = typer.Option(
        None, "--workers",
        help="Worker processes sharing the ports. Default 0: one per CPU core (1 to 4).",
    ),
    config: Path | None = ConfigOpt,
) -> None:
    """Run the archive: DIMSE and HTTP listeners (one or more worker processes) until SIGTERM.

    Ctrl-C stops it too. Prints where it listens.

    GET /healthz answers 200 once both listeners accept connections.
    """
    settings = _settings(
        config, data_dir=data, aet=aet, dicom_port=dicom_port, http_port=http_port,
        host=host, peers=peer or None, allow=allow or None, duplicate_policy=duplicate_policy,
        insecure=insecure, workers=workers,
    )
    from archivist.cli.serve import run_server

    raise typer.Exit(run_server(settings))


@app.command("import")
def import_(
    paths: list[Path] = typer.Argument(
        ..., help="Files or folders (recursive); DICOMDIR and .zip files too.", exists=True
    ),
    data: Path | None = DataOpt,
    config: Path | None = ConfigOpt,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Import DICOM files into the archive through the same ingest pipeline as C-STORE.

    Works while `archivist serve` runs on the same data directory. Non-DICOM files are skipped
    and counted; each rejected file is listed with its reason.
    """
    settings = _settings(config, data_dir=data)
    from archivist.cli.importer import run_import

    raise typer.Exit(run_import(settings, paths, quiet=quiet))


@app.command()
def find(
    keys: list[str] | None = typer.Argument(
        None,
        help="Matching keys as KEY=VALUE with DICOM keywords, e.g. PatientName='DOE*' "
        "StudyDate=20200101-20201231 ModalitiesInStudy=CT. KEY= (empty) asks for a return key. "
        "Code sequences by item: ProcedureCodeSequence.CodeValue=10200004 "
        "ProcedureCodeSequence.CodingSchemeDesignator=SCT.",
    ),
    level: str = typer.Option(
        "study", "--level", "-l", help="patient, study, series or instance."
    ),
    json_out: bool = typer.Option(False, "--json", help="Print DICOM JSON instead of a table."),
    limit: int = typer.Option(0, "--limit", help="At most this many results (0: all)."),
    data: Path | None = DataOpt,
    config: Path | None = ConfigOpt,
) -> None:
    """Search the archive with the same matching as C-FIND (PS3.4 C.2.2.2)."""
    settings = _settings(config, data_dir=data)
    from archivist.cli.find import run_find

    raise typer.Exit(run_find(settings, level, keys or [], json_out=json_out, limit=limit))


codes_cli.register(app)
validate_cli.register(app)
inventory_cli.register(app)
migrate_cli.register(app)
delete_cli.register(app)
send_cli.register(app)
users_cli.register(app)
reindex_cli.register(app)


def main() -> None:
    # pydicom's warnings about the files a command reads quote element values (patient data)
    # and are not the command's answer: `validate` reports them as findings instead.
    warnings.filterwarnings("ignore", module="pydicom")
    try:
        if sys.argv[1:2] == ["codes"]:
            status = codes_cli.quick_main(sys.argv[2:])  # type: ignore[attr-defined]
            if status is not None:
                raise SystemExit(status)
        app()
    except BrokenPipeError:
        # The reader went away (`archivist codes cid 4 | head`): stop quietly, as Click does for
        # its own commands. Python flushes stdout at exit, which would raise again, so it is
        # pointed at /dev/null first.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise SystemExit(1) from None
    except OSError as exc:
        # What the system refused (a file to write in a folder that does not exist, a port in
        # use): one line, exit 2, not a traceback (QA s22: inventory export, validate --html,
        # migrate --port).
        where = f": {exc.filename}" if exc.filename else ""
        print(f"error: {exc.strerror or exc}{where}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
