"""`archivist codes ...`: search and check DICOM coded terminology (PS3.16).

Only typer is imported here: the top-level CLI imports this module on every start. The
terminology package is imported inside the commands, and pydicom only by ``codes check``.

Start-up time: typer 0.29 imports pydantic (about 200 ms) the first time it coerces a
parameter that is not a boolean flag (and, in this version, for the ``--help`` flag of every
group it parses). The quick commands (``search``, ``show``, ``cid``, ``schemes``) are meant to
answer in well under 300 ms end to end, so they declare only boolean flags to typer and read
their other arguments with :mod:`argparse`; their ``--help`` lists those arguments, and
:func:`quick_main` runs them without typer's parser at all.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import typer

codes_app = typer.Typer(
    name="codes",
    help=(
        "DICOM coded terminology: search PS3.16 codes (SNOMED CT, DCM, LOINC, UCUM...), show a "
        "code or a context group (CID), and check the coded items of DICOM files."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",  # as the top-level app (main.py)
    context_settings={"help_option_names": ["-h", "--help"]},
)

JsonOpt = typer.Option(False, "--json", help="Print JSON instead of text.")
FilesArg = typer.Argument(..., help="DICOM files or folders (searched recursively) to check.",
                          exists=True)
_EXTRA_ARGS = {"allow_extra_args": True, "ignore_unknown_options": True}


def _parse(argv: list[str], prog: str, spec: list[tuple[tuple[str, ...], dict[str, Any]]]):  # type: ignore[no-untyped-def]
    """Parse the arguments of a quick command; exit 2 with a message on bad input."""
    import argparse

    parser = argparse.ArgumentParser(prog=f"archivist codes {prog}", add_help=False,
                                     exit_on_error=False)
    for flags, options in spec:
        parser.add_argument(*flags, **options)
    try:
        namespace, unknown = parser.parse_known_args(argv)
    except (argparse.ArgumentError, ValueError) as exc:
        raise _fail(str(exc)) from None
    if unknown:
        raise _fail(f"unexpected argument(s): {' '.join(unknown)}")
    return namespace


def register(app: typer.Typer) -> None:
    """Add the ``codes`` commands to the top-level CLI."""
    app.add_typer(codes_app, name="codes")


def _print_json(data: Any) -> None:
    import json

    typer.echo(json.dumps(data, indent=2, ensure_ascii=False))


def _fail(message: str, code: int = 2) -> typer.Exit:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code)


def _cids_text(cids: tuple[int, ...], most: int = 6) -> str:
    shown = ", ".join(str(c) for c in cids[:most])
    return shown + (f", ... (+{len(cids) - most})" if len(cids) > most else "")


@codes_app.command(context_settings=_EXTRA_ARGS)
def search(ctx: typer.Context, json_out: bool = JsonOpt) -> None:
    """Search codes by meaning, keyword or value; best match first (PS3.16).

    Usage: archivist codes search QUERY... [--scheme SCT] [--cid 4] [--limit 10] [--offset 0]
    [--json]

    QUERY: words of a meaning (any order, prefixes, small typos),
    a code value (36118008, T-62000), SCHEME:VALUE or a pydicom keyword (Liver).

    --scheme/-s SCHEME: only this coding scheme designator (SCT, DCM, LN, UCUM...).

    --cid/-c NUMBER: only members of this context group.

    --limit/-n N: at most N results (default 10; 0 for all).

    --offset N: skip the N best results first (paging).
    """
    _search(ctx.args, json_out)


def _search(argv: list[str], json_out: bool) -> None:
    args = _parse(argv, "search", [
        (("query",), {"nargs": "+"}),
        (("--scheme", "-s"), {"default": None}),
        (("--cid", "-c"), {"type": _cid_number, "default": None}),
        (("--limit", "-n"), {"type": int, "default": 10}),
        (("--offset",), {"type": int, "default": 0}),
    ])
    query, scheme, cid, limit = args.query, args.scheme, args.cid, args.limit
    offset = args.offset
    if limit < 0:
        raise _fail(f"--limit must be 0 (all) or more, got {limit}")
    if offset < 0:
        raise _fail(f"--offset must be 0 or more, got {offset}")
    text = " ".join(query)
    if not text.strip():
        raise _fail("the query is empty: give words of a meaning, a code value or a keyword")
    from archivist import terminology

    term = terminology.default_terminology()
    if cid is not None and term.cid_name(cid) is None:
        raise _fail(f"CID {cid} is not defined in PS3.16")
    if scheme is not None:
        problem = term.scheme_error(scheme)
        if problem is not None:
            raise _fail(problem)
    hits = terminology.search(text, scheme=scheme, cid=cid,
                              limit=offset + limit if limit else 0)[offset:]
    if json_out:
        _print_json({"query": text, "count": len(hits), "results": [h.to_dict() for h in hits]})
        if not hits:
            raise typer.Exit(1)  # nothing found: exit 1 as in text
        return
    if not hits:
        typer.echo(f"no code found for {text!r}")
        raise typer.Exit(1)
    width = max(len(h.concept.key) for h in hits)
    for hit in hits:
        c = hit.concept
        line = f"{c.key:<{width}}  {c.meaning}"
        if hit.matched not in (c.meaning, text):
            line += f"  (matched {hit.matched!r})"
        if c.cids:
            line += f"  [CID {_cids_text(c.cids)}]"
        if hit.note:
            line += "  (valid UCUM, not in PS3.16)"
        typer.echo(line)


@codes_app.command(context_settings=_EXTRA_ARGS)
def show(ctx: typer.Context, json_out: bool = JsonOpt) -> None:
    """Show a code: meaning, other meanings, keywords, CIDs, SNOMED-RT equivalent.

    Usage: archivist codes show SCHEME:VALUE [--json]   (e.g. SCT:36118008, SRT:T-62000)

    Any valid UCUM unit is shown, with its name, also one PS3.16 does not list (UCUM:mg/dL).
    """
    _show(ctx.args, json_out)


def _show(argv: list[str], json_out: bool) -> None:
    code = _parse(argv, "show", [(("code",), {})]).code
    from archivist import terminology

    try:
        scheme, value = terminology.parse_code(code)
    except ValueError as exc:
        raise _fail(str(exc)) from None
    term = terminology.default_terminology()
    concept = term.find(scheme, value)
    unit = None if concept is not None or term.canonical_scheme(scheme) != "UCUM" else (
        term.unlisted_unit(value)
    )
    if unit is not None:
        from archivist.terminology.ucum import UNLISTED_NOTE

        if json_out:
            _print_json({**term.concept_dict(unit), "note": UNLISTED_NOTE})
        else:
            typer.echo(f"{unit.key}  {unit.meaning}")
            typer.echo(f"  note: {UNLISTED_NOTE}")
        return
    if concept is None:
        message = f"{scheme}:{value} is not in the PS3.16 tables"
        if term.canonical_scheme(scheme) == "UCUM":
            from archivist.terminology.ucum import unlisted_unit_note

            message += "; " + unlisted_unit_note(value)
        else:
            message += term.other_schemes_hint(value)
        raise _fail(message, 1)
    scheme = term.canonical_scheme(scheme)
    if json_out:
        data = term.concept_dict(concept)
        if (scheme, value) != (concept.scheme, concept.value):
            data["retired"] = {"scheme": scheme, "value": value}
        _print_json(data)
        return
    typer.echo(f"{concept.key}  {concept.meaning}")
    if (scheme, value) != (concept.scheme, concept.value):
        typer.echo(f"  note: {scheme}:{value} is a retired SNOMED code; use {concept.key}")
    others = [m for m in concept.meanings if m != concept.meaning]
    if others:
        typer.echo("  also: " + "; ".join(others))
    typer.echo("  keywords: " + ", ".join(concept.keywords))
    if concept.srt:
        typer.echo(f"  SNOMED-RT (SRT, retired): {concept.srt}")
    if concept.cids:
        typer.echo(f"  in {len(concept.cids)} context group(s):")
        for c in concept.cids:
            typer.echo(f"    CID {c:<6} {term.cid_title(c) or term.cid_name(c)}")
    else:
        typer.echo("  in no context group")


@codes_app.command("cid", context_settings=_EXTRA_ARGS)
def cid_command(ctx: typer.Context, json_out: bool = JsonOpt) -> None:
    """Show a context group (CID) and its members (PS3.16 Annex B).

    Usage: archivist codes cid NUMBER [--search TEXT] [--json]   (e.g. 4 for CID 4)

    --search/-q TEXT: only the members matching TEXT (prefixes, typos), best first;
    exit status 1 when none does, as for codes search.
    """
    _cid(ctx.args, json_out)


def _cid(argv: list[str], json_out: bool) -> None:
    args = _parse(argv, "cid", [
        (("number",), {"type": _cid_number}),
        (("--search", "-q"), {"default": None, "dest": "search_text"}),
    ])
    number, search_text = args.number, args.search_text
    from archivist import terminology

    try:
        group = terminology.context_group(number)
    except terminology.UnknownContextGroup as exc:
        raise _fail(str(exc), 1) from None
    members = list(group.members)
    if search_text:
        wanted = {
            h.concept.key: i
            for i, h in enumerate(terminology.search(search_text, cid=number, limit=0))
        }
        members = sorted((m for m in members if m.key in wanted), key=lambda m: wanted[m.key])
    nothing_found = bool(search_text) and not members
    if json_out:
        _print_json(group.to_dict(members))
    else:
        typer.echo(f"CID {group.cid}  {group.title}  ({len(group.members)} members)")
        width = max((len(m.key) for m in members), default=0)
        for member in members:
            typer.echo(f"  {member.key:<{width}}  {member.meaning}")
        if nothing_found:
            typer.echo(f"no member of CID {group.cid} found for {search_text!r}")
    if nothing_found:
        raise typer.Exit(1)


def _cid_number(text: str) -> int:
    """A context group number as people write it: ``4``, ``CID4``, ``CID 4`` (as one argument)."""
    digits = text.strip()
    if digits[:3].upper() == "CID":
        digits = digits[3:].strip()
    if not (digits.isascii() and digits.isdigit()):
        raise ValueError(text)
    return int(digits)


_cid_number.__name__ = "CID number"  # argparse names the type in its message


@codes_app.command()
def schemes(json_out: bool = JsonOpt) -> None:
    """List the coding schemes (designators) with the number of codes known for each."""
    _schemes([], json_out)


def _schemes(argv: list[str], json_out: bool) -> None:
    _parse(argv, "schemes", [])
    from archivist import terminology

    found = terminology.schemes()
    if json_out:
        _print_json(
            [
                {"designator": s.designator, "name": s.name, "codes": s.codes,
                 "retired": s.retired}
                for s in found
            ]
        )
        return
    for s in found:
        flag = "  (retired)" if s.retired else ""
        typer.echo(f"{s.designator:<12} {s.codes:>6}  {s.name or ''}{flag}")


@codes_app.command()
def check(
    files: list[Path] = FilesArg,
    json_out: bool = JsonOpt,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only errors and warnings."),
) -> None:
    """Check every coded item in DICOM files (PS3.3 8.8, PS3.16).

    Exit status: 0 when no file has errors, 1 when some has, 2 when a file cannot be read.
    """
    import os
    import stat
    import sys

    from archivist import terminology
    from archivist.cli.importer import printable
    from archivist.terminology.check import CheckError

    if hasattr(sys.stdout, "reconfigure"):
        # A file name the output's encoding cannot take is escaped rather than a traceback.
        sys.stdout.reconfigure(errors="backslashreplace")
    report: list[dict[str, Any]] = []
    status = 0
    skipped = 0
    targets: list[tuple[Path, bool]] = []
    unreadable: list[tuple[Path, str]] = []

    def folder_error(exc: OSError) -> None:
        unreadable.append((Path(str(exc.filename)), exc.strerror or str(exc)))

    for given in files:
        if given.is_dir():
            found = [Path(d) / name
                     for d, dirs, names in os.walk(given, onerror=folder_error)
                     for name in names]
            targets += [(f, True) for f in sorted(found) if f.is_file()]
        else:
            targets.append((given, False))
    for path, reason in unreadable:
        status = 2
        report.append({"file": printable(str(path)), "error": reason, "findings": []})
        if not json_out:
            typer.secho(f"{printable(str(path))}: cannot read the folder: {reason}",
                        fg=typer.colors.RED, err=True)
    for path, found_in_folder in targets:
        try:
            if not found_in_folder and not stat.S_ISREG(path.stat().st_mode):
                # A FIFO would block the read, a device would feed it without end.
                raise CheckError(f"{path}: not a regular file")
            findings = terminology.check_file(path)
        except (CheckError, OSError) as exc:
            if (found_in_folder and not isinstance(exc.__cause__, PermissionError)
                    and not _has_dicom_prefix(path)):
                skipped += 1  # a folder may hold files that are not DICOM: skipped, counted
                continue
            status = 2
            report.append({"file": printable(str(path)), "error": printable(str(exc)),
                           "findings": []})
            if not json_out:
                typer.secho(f"{printable(str(path))}: cannot read: {printable(str(exc))}",
                            fg=typer.colors.RED, err=True)
            continue
        if quiet:
            findings = [f for f in findings if f.severity != terminology.Severity.INFO]
        if any(f.severity == terminology.Severity.ERROR for f in findings):
            status = max(status, 1)
        report.append({"file": printable(str(path)),
                       "findings": [f.to_dict() for f in findings]})
        if not json_out:
            typer.echo(f"{printable(str(path))}: {len(findings)} finding(s)")
            for finding in findings:
                typer.echo(f"  {finding}")
    if json_out:
        _print_json(report)
    elif skipped:
        typer.echo(f"{skipped} file(s) in the folders given were not DICOM and were skipped")
    raise typer.Exit(status)


def _has_dicom_prefix(path: Path) -> bool:
    """Whether `path` starts as a DICOM file does (the 128-byte preamble and ``DICM``): one that
    then cannot be read is broken (truncated, say) and reported, not skipped as not DICOM."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # never blocks on a FIFO
    except OSError:
        return False
    try:
        return os.pread(fd, 132, 0)[128:] == b"DICM"
    except OSError:
        return False
    finally:
        os.close(fd)


#: The commands :func:`quick_main` answers without typer's argument processing.
_QUICK = {"search": _search, "show": _show, "cid": _cid, "schemes": _schemes}


def quick_main(argv: list[str]) -> int | None:
    """Answer ``archivist codes search|show|cid|schemes ...`` without typer's parser.

    typer 0.29 imports pydantic (about 200 ms) to process even the ``--help`` flag of the
    groups and commands it parses, which puts ``archivist codes search`` at about 450 ms cold
    instead of about 250 ms. The entry point may call this first with the arguments after
    ``codes`` and fall back to typer when it returns None (help requested, or another
    command); the behaviour and output are the same as through typer.

    Returns
    -------
    int or None
        The exit status, or None when typer should handle the command.
    """
    if not argv or argv[0] not in _QUICK or any(a in ("-h", "--help") for a in argv):
        return None
    json_out = "--json" in argv[1:]
    rest = [a for a in argv[1:] if a != "--json"]
    try:
        _QUICK[argv[0]](rest, json_out)
    except typer.Exit as exc:
        return exc.exit_code
    return 0
