
"""``archivist validate`` and ``archivist check-peer``: object and network conformance checks.

Only typer is imported here at module level; the validator, rich and pynetdicom are imported
inside the commands so that ``archivist --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import typer

if TYPE_CHECKING:
    from archivist.validate.peer import PeerReport
    from archivist.validate.validator import BatchResult

_SEVERITY_STYLE = {"error": "bold red", "warning": "yellow", "info": "dim"}


def validate(
    paths: list[Path] | None = typer.Argument(None, help="Files or folders (searched recursively).",
                                              exists=True),
    stored: list[str] | None = typer.Option(
        None, "--stored", metavar="SOP_UID",
        help="Show the findings the archive kept when it stored this instance (validation on "
        "ingest); repeat for several.",
    ),
    data: Path | None = typer.Option(
        None, "--data", help="Data directory of the archive, for --stored. Default ./archivist-data.",
        show_default=False,
    ),
    config: Path | None = typer.Option(
        None, "--config", help="TOML settings file, for --stored.", exists=True, dir_okay=False,
    ),
    json_out: bool = typer.Option(False, "--json", help="Print the results as JSON."),
    html: Path | None = typer.Option(
        None, "--html", help="Also write a shareable HTML report to this file.", dir_okay=False
    ),
    errors_only: bool = typer.Option(False, "--errors-only", help="Show only errors."),
    no_extended: bool = typer.Option(
        False, "--no-extended",
        help="Do not report attributes outside the IOD (Standard Extended SOP Class).",
    ),
) -> None:
    """Validate DICOM files like dciodvfy/DVTk: Part 10 encoding, data dictionary (VR, VM,
    length, characters), IOD modules (Type 1/2/1C/2C, enumerated values) and consistency of
    patient/study/series attributes across files.

    With --stored SOP_UID, show instead what the archive found when it stored that instance
    (the same findings as GET /api/instances/{sop}/validation).

    Exit status 1 when any file has an error, 0 otherwise (warnings allowed); 2 for a usage
    error or an unknown SOP Instance UID; 3 when the archive's index cannot be opened.
    """
    if stored:
        if paths:
            typer.secho("error: give files or --stored, not both", fg=typer.colors.RED, err=True)
            raise typer.Exit(2)
        raise typer.Exit(_show_stored(stored, data, config, json_out=json_out,
                                      errors_only=errors_only, html=html))
    if not paths:
        typer.secho("error: name files or folders to validate, or --stored SOP_UID",
                    fg=typer.colors.RED, err=True)
        raise typer.Exit(2)
    from archivist.validate import ValidationOptions, validate_paths

    options = ValidationOptions(report_extended=not no_extended)
    result = validate_paths(paths, options=options)
    if html is not None:
        from archivist.validate.html import render_html

        html.write_text(render_html(result), encoding="utf-8")
    if json_out:
        import json

        typer.echo(json.dumps(result.to_dict(), indent=2))
    else:
        _print_text(result, errors_only=errors_only)
        if html is not None:
            typer.echo(f"HTML report written to {html}")
    raise typer.Exit(0 if result.ok else 1)


def _print_text(result: BatchResult, *, errors_only: bool) -> None:
    from rich.markup import escape

    from archivist.cli.output import stdout_console

    console = stdout_console(highlight=False)
    for report in result.reports:
        findings = [f for f in report.findings if not errors_only or f.severity.value == "error"]
        status = "[bold green]OK[/]" if report.ok else "[bold red]ERRORS[/]"
        counts = report.counts()
        console.print(
            f"{status} [bold]{escape(report.path)}[/]  {escape(report.iod or 'unknown IOD')}  "
            f"[red]{counts['error']} error(s)[/], [yellow]{counts['warning']} warning(s)[/]"
        )
        for module in _ordered_modules(findings):
            console.print(f"  [bold cyan]{escape(module or 'Whole object')}[/]")
            for f in findings:
                if f.module != module:
                    continue
                style = _SEVERITY_STYLE[f.severity.value]
                console.print(
                    f"    [{style}]{f.severity.value:<7}[/] {f.rule_id}  {escape(f.path)}"
                )
                console.print(f"            {escape(f.message)} [dim]\\[{f.reference}][/]")
    if result.consistency:
        console.print("[bold]Consistency across files[/]")
        for f in result.consistency:
            style = _SEVERITY_STYLE[f.severity.value]
            console.print(f"    [{style}]{f.severity.value:<7}[/] {f.rule_id}  {escape(f.path)}")
            console.print(f"            {escape(f.message)} [dim]\\[{f.reference}][/]")
    counts = result.counts()
    bad = sum(1 for r in result.reports if not r.ok)
    skipped = f", {len(result.skipped)} non-DICOM skipped" if result.skipped else ""
    console.print(
        f"[bold]Summary:[/] {len(result.reports)} file(s){skipped}, {bad} with errors; "
        f"[red]{counts['error']} error(s)[/], [yellow]{counts['warning']} warning(s)[/], "
        f"{counts['info']} info(s)."
    )


def _show_stored(sop_uids: list[str], data: Path | None, config: Path | None, *,
                 json_out: bool, errors_only: bool, html: Path | None = None) -> int:
    """Print the stored validation of instances (and write the HTML report when asked); the
    exit status of ``validate --stored``."""
    from archivist.archive.archive import Archive
    from archivist.config import load_settings
    from archivist.errors import ConfigError
    from archivist.validate import BatchResult, Finding, Report, Severity

    try:
        settings = load_settings(config, overrides={"data_dir": data})
    except ConfigError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        return 2
    if not settings.index_exists:
        typer.secho(f"error: no archive at {settings.data_dir} (pass --data)",
                    fg=typer.colors.RED, err=True)
        return 2
    from sqlalchemy.exc import SQLAlchemyError

    from archivist.errors import ArchivistError

    try:
        archive = Archive.open(settings)
    except ArchivistError as exc:  # a lost index, or one of a newer version (IndexLost)
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        return 2
    except SQLAlchemyError as exc:
        typer.secho(f"error: the index could not be opened ({getattr(exc, 'orig', exc)}); "
                    "try again", fg=typer.colors.RED, err=True)
        return 3
    try:
        records = [archive.index.validation_of(uid.strip()) for uid in sop_uids]
    finally:
        archive.close()
    unknown = [uid for uid, r in zip(sop_uids, records) if r is None]
    if unknown:
        typer.secho(f"error: not stored in {settings.data_dir}: {', '.join(unknown)}",
                    fg=typer.colors.RED, err=True)
        return 2
    found = [r for r in records if r is not None]
    result = BatchResult()
    for record in found:
        findings = [Finding(Severity(f["severity"]), f["rule_id"], f["path"], f["module"],
                            f["iod"], f["message"], f["reference"]) for f in record["findings"]]
        state = "" if record["validated"] else " (stored with validation off: not checked)"
        result.reports.append(Report(
            path=f"stored {record['sop_instance_uid']}{state}", findings=findings,
            sop_class_uid=record["sop_class_uid"],
            sop_instance_uid=record["sop_instance_uid"],
            iod=next((f.iod for f in findings if f.iod), "") or _iod_name(record["sop_class_uid"]),
        ))
    if html is not None:
        from archivist.validate.html import render_html

        html.write_text(render_html(result), encoding="utf-8")
    if json_out:
        import json

        typer.echo(json.dumps(found[0] if len(found) == 1 else found, indent=2))
    else:
        _print_text(result, errors_only=errors_only)
        if html is not None:
            typer.echo(f"HTML report written to {html}")
    return 1 if any(r["errors"] for r in found) else 0


def _ordered_modules(findings: list) -> list[str]:  # type: ignore[type-arg]
    seen: list[str] = []
    for f in findings:
        if f.module not in seen:
            seen.append(f.module)
    return seen


def check_peer(
    host: str = typer.Argument(..., help="Host name or address of the remote DICOM node."),
    port: int = typer.Argument(..., help="Its DIMSE port.", min=1, max=65535),
    aet: str = typer.Option(..., "--aet", help="The remote node's AE title (called AE)."),
    calling_aet: str = typer.Option("ARCHIVIST", "--calling-aet", help="Our AE title."),
    json_out: bool = typer.Option(False, "--json", help="Print the results as JSON."),
    store: bool = typer.Option(
        True, "--store/--no-store", help="Send a generated test object with C-STORE."
    ),
    move_aet: str | None = typer.Option(
        None, "--move-aet",
        help="C-MOVE destination the peer knows for us (our listener is started on a free port "
        "unless --move-port is given).",
    ),
    move_port: int = typer.Option(0, "--move-port", help="Port for our C-MOVE listener.",
                                  min=0, max=65535),
    timeout: float = typer.Option(
        10.0, "--timeout",
        help="Seconds to wait for the TCP connection, each PDU and each response.",
    ),
) -> None:
    """Probe a remote DICOM node and report its conformance: association negotiation (SOP
    classes, transfer syntaxes, maximum PDU), C-ECHO, C-FIND at each level with the identifiers
    checked, C-STORE of a test object and C-MOVE/C-GET of it back, statuses against PS3.4.

    Unless --no-store is given, one generated test object (Patient ID ARCHIVIST-PROBE-...)
    is stored on the peer and stays there.

    Exit status 1 when a check fails (the peer unreachable included), 0 otherwise; 2 for a
    usage error.
    """
    import math

    from archivist.validate.peer import PeerOptions, probe_peer

    for option, value in (("--aet", aet), ("--calling-aet", calling_aet),
                          ("--move-aet", move_aet)):
        if value is not None and (problem := _ae_title_problem(value)):
            _usage_error(f"{option} {value!r}: {problem}")
    if not (math.isfinite(timeout) and timeout > 0):
        _usage_error(f"--timeout must be a positive number of seconds, not {timeout}")
    if store and not json_out:  # JSON readers find it in stored_object
        typer.secho(f"note: check-peer stores one test object (Patient ID ARCHIVIST-PROBE-...) "
                    f"on {aet} and leaves it there; --no-store probes without writing",
                    fg=typer.colors.YELLOW, err=True)
    report = probe_peer(
        PeerOptions(
            host=host, port=port, called_aet=aet, calling_aet=calling_aet, store=store,
            move_aet=move_aet, move_port=move_port, timeout=timeout,
        )
    )
    if json_out:
        import json

        typer.echo(json.dumps(report.to_dict(), indent=2))
    else:
        _print_peer(report)
    raise typer.Exit(0 if report.ok else 1)


def _usage_error(message: str) -> NoReturn:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


def _ae_title_problem(value: str) -> str:
    """Why *value* cannot be an AE title (PS3.5 6.2, VR AE), or "" when it can."""
    text = value.strip(" ")
    if not text:
        return "an AE title cannot be empty"
    if len(text) > 16:
        return f"an AE title has at most 16 characters, this has {len(text)}"
    if "\\" in text or not all(" " <= c <= "~" for c in text):
        return "an AE title is printable ASCII without backslashes"
    return ""


def _print_peer(report: PeerReport) -> None:
    from rich.markup import escape

    from archivist.cli.output import stdout_console

    console = stdout_console(highlight=False)
    console.print(f"[bold]Peer {escape(report.called_aet)} at {report.host}:{report.port}[/]")
    styles = {"pass": "green", "fail": "bold red", "warn": "yellow", "skip": "dim", "info": "cyan"}
    for check in report.checks:
        style = styles.get(check.outcome, "")
        console.print(f"  [{style}]{check.outcome:<4}[/] {check.name}: {escape(check.detail)}"
                      + (f"  [dim]({check.reference})[/]" if check.reference else ""))
    console.print(
        f"[bold]Summary:[/] {report.counts()['pass']} passed, {report.counts()['fail']} failed, "
        f"{report.counts()['warn']} warning(s), {report.counts()['skip']} skipped."
    )


def register(app: typer.Typer) -> None:
    """Add the ``validate`` and ``check-peer`` commands to the top-level CLI."""
    app.command("validate")(validate)
    app.command("check-peer")(check_peer)


def _iod_name(sop_class_uid: str) -> str:
    """The IOD a SOP Class stores (PS3.4 B.5), for a stored instance without findings."""
    from archivist.validate.standard import tables

    iod = tables().iod_for_sop_class(sop_class_uid or "")
    return iod.name if iod else ""
