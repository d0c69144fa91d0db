"""``archivist migrate``: pull another archive into this one, resumably, and print the proof."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer


def migrate(
    source: str = typer.Option(..., "--from", help="The archive to pull from: AET@HOST:PORT."),
    scope: list[str] | None = typer.Option(
        None, "--scope", help="Only what matches KEY=VALUE (C-FIND matching); repeat."),
    via: str = typer.Option("get", "--via", help="get (C-GET) or move (C-MOVE to our AE)."),
    port: int = typer.Option(0, "--port",
                             help="With --via move: the port we receive on (the source must "
                             "know our AE title at this address)."),
    rate: float = typer.Option(0.0, "--rate", min=0.0,
                               help="At most this many instances per second (0: no limit)."),
    attempts: int = typer.Option(3, "--attempts", min=1, help="Retrieve attempts per study."),
    find_method: str = typer.Option("auto", "--query",
                                    help="How to inventory the source: auto, rq or find."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    json_out: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    data: Path | None = typer.Option(None, "--data", help="Data directory.",
                                        show_default=False),
    config: Path | None = typer.Option(None, "--config", help="TOML settings file.",
                                          exists=True, dir_okay=False),
) -> None:
    """Copy every instance of another archive here, then prove it with an inventory diff.

    Run it again after a crash or an interruption: what is already here is skipped. Exit status
    0 when every instance of the source is here, 1 when some are not (listed with the reason),
    2 on error.
    """
    from archivist.cli.inventory import _pairs
    from archivist.cli.main import _settings, open_archive

    settings = _settings(config, data_dir=data)
    from archivist.errors import ArchivistError
    from archivist.inventory.migrate import Migration
    from archivist.inventory.remote import Remote

    try:
        remote = Remote.parse(source, calling_aet=settings.aet)
        # The arguments are checked before the data directory is opened (and created), and,
        # when there is none yet, that something listens at the source: a down source left
        # an empty archive behind. An existing one is opened first (a lost index is said).
        _check_arguments(via, find_method, port)
        if not Path(settings.data_dir).exists():
            _check_reachable(remote)
    except ArchivistError as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(2) from None
    progress_cm = None
    progress_cb = None
    if not quiet and not json_out:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

        progress_cm = Progress("[progress.description]{task.description}", BarColumn(),
                               MofNCompleteColumn(), TimeRemainingColumn(),
                               console=None, transient=False)
        task = progress_cm.add_task("inventory of the source", total=None)

        def progress_cb(phase: str, done: int, total: int) -> None:
            names = {"inventory": "inventory of the source", "retrieve": "instances",
                     "verify": "verifying"}
            progress_cm.update(task, description=names[phase], completed=done,
                               total=total or None)

    try:
        archive = open_archive(settings)
        try:
            migration = Migration(archive, remote, method=via, scope=_pairs(scope),
                                  move_port=port, rate=rate, attempts=attempts,
                                  find_method=find_method, progress=progress_cb)
            if progress_cm is not None:
                with progress_cm:
                    report = migration.run()
            else:
                report = migration.run()
        finally:
            archive.close()
    except ArchivistError as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(2) from None
    proof = report.proof
    assert proof is not None
    if json_out:
        print(json.dumps({
            "complete": report.complete, "source": report.source_counts,
            "already_here": report.already_here, "retrieved": report.retrieved,
            "requests": report.requests, "retries": report.retries,
            "failures": report.failures, "seconds": round(report.seconds, 2),
            "proof": proof.to_json()}, indent=1))
    else:
        c = report.source_counts
        print(f"source {remote}: {c['studies']} studies, {c['series']} series, "
              f"{c['instances']} instances; {report.already_here} already here, "
              f"{report.retrieved} retrieved in {report.seconds:.1f} s "
              f"({report.requests} requests, {report.retries} retries)")
        for d in proof.differences:
            if d.kind == "extra":
                continue
            reason = report.failures.get(d.study_uid, "")
            print(d.line() + (f" [{reason}]" if reason else ""))
        print(proof.summary())
        print("PROOF: every instance of the source is here." if report.complete else
              "NOT COMPLETE: the instances listed above are not here.", file=sys.stdout)
        if via == "move" and report.failures and not report.retrieved:
            # Every C-MOVE failed and nothing came: most often the source does not know our
            # AE title at this address (Orthanc answers 0xC000, "Unknown modality").
            typer.secho(f"hint: with --via move the source sends to our AE title "
                        f"{settings.aet} at this machine's port {port}: check that "
                        f"{remote.aet} knows {settings.aet} at that address as a C-MOVE "
                        "destination (its log says why it failed)", fg="yellow", err=True)
    raise typer.Exit(0 if report.complete else 1)


def _check_reachable(remote: Any) -> None:
    """Raise a :class:`~archivist.inventory.remote.RemoteError` when nothing accepts a TCP
    connection at the source's address (:func:`~archivist.inventory.remote.unreachable`)."""
    from archivist.inventory.remote import RemoteError, unreachable

    why = unreachable(remote, timeout=10)
    if why is not None:
        raise RemoteError(why)


def _check_arguments(via: str, find_method: str, port: int) -> None:
    """Refuse bad option values before the data directory is opened (and created)."""
    from archivist.errors import ArchivistError

    if via not in ("get", "move"):
        raise ArchivistError(f"--via must be get or move, not {via!r}")
    if find_method not in ("auto", "rq", "find"):
        raise ArchivistError(f"--query must be auto, rq or find, not {find_method!r}")
    if via == "move" and not port:
        raise ArchivistError("C-MOVE needs --port: where the source sends to us")


def register(app: typer.Typer) -> None:
    """Add the ``migrate`` command to the top-level CLI."""
    app.command("migrate")(migrate)
