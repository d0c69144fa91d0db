"""``archivist inventory``: create, list, export and compare Supplement 223 inventories."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

inventory_app = typer.Typer(
    name="inventory",
    help="Inventories of what a repository holds (DICOM Supplement 223): create, list, export, "
    "diff.",
    no_args_is_help=True,
    rich_markup_mode="markdown",  # as the top-level app (main.py)
)

DataOpt = typer.Option(None, "--data", help="Data directory. Default ./archivist-data.",
                       show_default=False)
ConfigOpt = typer.Option(None, "--config", help="TOML settings file.", exists=True,
                         dir_okay=False)
ScopeOpt = typer.Option(None, "--scope",
                        help="Scope as KEY=VALUE with C-FIND matching (repeat), e.g. "
                        "StudyDate=20240101-20241231 ModalitiesInStudy=CT.")


def _settings(config: Path | None, data: Path | None):  # type: ignore[no-untyped-def]
    from archivist.cli.main import _settings as load

    return load(config, data_dir=data)


def _open(settings, *, existing: bool = False):  # type: ignore[no-untyped-def]
    """The archive at the data directory; exit 2 when its index is lost (see
    ``open_archive``), or, for `existing`, when there is none: an inventory of a mistyped
    --data must not create an empty archive there (and report that it holds nothing)."""
    from archivist.cli.main import open_archive

    if existing and not settings.index_exists:
        raise _fail(f"no archive at {settings.data_dir} (pass --data)", 2)
    return open_archive(settings)


def _pairs(items: list[str] | None) -> list[tuple[str, str]]:
    from pydicom.datadict import tag_for_keyword

    pairs = []
    for item in items or []:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or tag_for_keyword(key) is None:
            typer.secho(f"error: {item!r} is not KEY=VALUE with a DICOM keyword", fg="red",
                        err=True)
            raise typer.Exit(2)
        pairs.append((key, value))
    return pairs


def _fail(message: str, code: int = 1) -> typer.Exit:
    typer.secho(f"error: {message}", fg="red", err=True)
    return typer.Exit(code)


@inventory_app.command("create")
def create(
    level: str = typer.Option("study", "--level", "-l", help="study, series or instance."),
    scope: list[str] | None = ScopeOpt,
    per_instance: int | None = typer.Option(
        None, "--studies-per-instance", show_default=False,
        help="Split into chained instances over this many studies. Default: the "
        "inventory_studies_per_instance setting (1000).",
    ),
    purpose: str = typer.Option("", "--purpose", help="Inventory Purpose (0008,0401)."),
    data: Path | None = DataOpt,
    config: Path | None = ConfigOpt,
) -> None:
    """Build an inventory from the index and store it in the archive (as Inventory objects).

    Prints the SOP Instance UID of the root instance; retrieve it with C-MOVE/C-GET or
    `archivist inventory export`.
    """
    settings = _settings(config, data)
    from archivist.errors import ArchivistError
    from archivist.inventory.builder import InventoryBuilder, InventorySpec

    try:
        if per_instance is None:
            per_instance = settings.inventory_studies_per_instance
        spec = InventorySpec(level=level, scope=_pairs(scope), studies_per_instance=per_instance,
                             purpose=purpose, retrieve_aet=settings.aet)
        archive = _open(settings, existing=True)
        try:
            built, _ = InventoryBuilder(archive).create(spec)
        finally:
            archive.close()
    except ArchivistError as exc:
        raise _fail(str(exc)) from None
    print(f"inventory {built.root.SOPInstanceUID}: level {spec.level}, {built.total_studies} "
          f"studies, {len(built.instances)} instance(s)")


@inventory_app.command("list")
def list_(
    json_out: bool = typer.Option(False, "--json", help="JSON instead of a table."),
    data: Path | None = DataOpt,
    config: Path | None = ConfigOpt,
) -> None:
    """List the inventories stored in the archive (root instances)."""
    settings = _settings(config, data)
    from archivist.inventory.catalogue import Catalogue

    archive = _open(settings, existing=True)
    try:
        roots = [r.summary() for r in Catalogue(archive).roots()]
    finally:
        archive.close()
    if json_out:
        print(json.dumps(roots, indent=2, default=str))
        return
    for r in roots:
        print(f"{r['SOPInstanceUID']}  {r['ContentDate']} {str(r['ContentTime'])[:6]}  "
              f"{r['InventoryLevel']:8} {r['InventoryCompletionStatus']:9} "
              f"{r['TotalNumberOfStudyRecords']} studies")


@inventory_app.command("export")
def export(
    output: Path = typer.Argument(
        ..., help="File to write (- for standard output, JSON/CSV)."),
    fmt: str = typer.Option("", "--format", "-f",
                            help="dicom, json or csv (default: from the file name, else json)."),
    uid: str | None = typer.Option(None, "--inventory",
                                      help="Root SOP Instance UID of a stored inventory "
                                      "(default: the newest)."),
    fresh: bool = typer.Option(False, "--fresh",
                               help="Build from the index now instead of a stored inventory."),
    level: str = typer.Option("instance", "--level", "-l",
                              help="With --fresh: study, series or instance."),
    scope: list[str] | None = ScopeOpt,
    data: Path | None = DataOpt,
    config: Path | None = ConfigOpt,
) -> None:
    """Write an inventory as DICOM (root + leaves), JSON or CSV.

    DICOM: the root goes to OUTPUT and each further instance beside it (OUTPUT-0002.dcm, ...).
    """
    settings = _settings(config, data)
    from archivist.errors import ArchivistError
    from archivist.inventory.builder import InventoryBuilder, InventorySpec, to_part10
    from archivist.inventory.catalogue import Catalogue
    from archivist.inventory.model import Inventory

    kind = fmt.lower() or {".dcm": "dicom", ".csv": "csv", ".json": "json"}.get(
        output.suffix.lower(), "json")
    if kind not in ("dicom", "json", "csv"):
        raise _fail(f"unknown format {fmt!r}", 2)
    try:
        archive = _open(settings, existing=True)
        try:
            if fresh or scope:
                spec = InventorySpec(level=level, scope=_pairs(scope), retrieve_aet=settings.aet)
                datasets = InventoryBuilder(archive).build(spec).instances
            else:
                cat = Catalogue(archive)
                latest = cat.latest()
                root = uid or (latest.ref.sop_instance_uid if latest is not None else None)
                if root is None:
                    raise _fail("no inventory is stored; run `archivist inventory create` or "
                                "use --fresh")
                if uid:
                    named = [st for st in cat.tree(uid) if st.ref.sop_instance_uid == uid]
                    if named and not named[0].is_root:
                        # A leaf names its inventory, which is exported whole (from its root)
                        raise _fail(f"{uid} is instance {named[0].get('InstanceNumber')} of a "
                                    "stored inventory, not its root: --inventory takes the "
                                    "root's SOP Instance UID (see `archivist inventory list`)",
                                    2)
                datasets = cat.datasets(root)
                if not datasets:
                    raise _fail(f"no stored inventory {root}")
        finally:
            archive.close()
    except ArchivistError as exc:
        raise _fail(str(exc)) from None
    if kind == "dicom":
        if str(output) == "-":
            raise _fail("DICOM output needs a file name", 2)
        output.write_bytes(to_part10(datasets[0]))
        for n, ds in enumerate(datasets[1:], 2):
            output.with_name(f"{output.stem}-{n:04d}{output.suffix or '.dcm'}").write_bytes(
                to_part10(ds))
        print(f"wrote {len(datasets)} instance(s) to {output}", file=sys.stderr)
        return
    inv = Inventory.from_datasets(datasets, source=str(datasets[0].SOPInstanceUID))
    text = (json.dumps(inv.to_json(), indent=1, ensure_ascii=False) + "\n" if kind == "json"
            else inv.to_csv())
    if str(output) == "-":
        sys.stdout.write(text)
    else:
        output.write_text(text, encoding="utf-8")
        counts = inv.counts()
        print(f"wrote {counts['studies']} studies, {counts['series']} series, "
              f"{counts['instances']} instances to {output}", file=sys.stderr)


def load_side(text: str, *, level: str, scope: list[tuple[str, str]], method: str,
              calling_aet: str, settings_loader=None):  # type: ignore[no-untyped-def]
    """An inventory from ``archive`` (this one), ``AET@HOST:PORT`` or files."""
    from archivist.inventory import sources
    from archivist.inventory.model import Inventory
    from archivist.inventory.remote import Remote

    if text in ("archive", "local", "."):
        archive = _open(settings_loader(), existing=True)
        try:
            return sources.of_archive(archive, level, scope)
        finally:
            archive.close()
    if "@" in text and ":" in text and not Path(text).exists():
        return sources.of_remote(Remote.parse(text, calling_aet=calling_aet), level, scope,
                                 method=method)
    return Inventory.from_files([Path(p) for p in text.split(",")])


@inventory_app.command("diff")
def diff_cmd(
    a: str = typer.Argument(..., help="Reference: inventory file(s)/folder, JSON export, "
                            "AET@HOST:PORT (live), or 'archive' (this archive's index)."),
    b: str = typer.Argument(..., help="The other side, same forms."),
    level: str = typer.Option("instance", "--level", "-l",
                              help="How deep to read live repositories: study, series, instance."),
    scope: list[str] | None = ScopeOpt,
    method: str = typer.Option("auto", "--method",
                               help="Live repositories: auto, rq (Repository Query) or find."),
    aet: str | None = typer.Option(None, "--aet", help="Our calling AE title (default: the "
                                   "aet setting, as for migrate; ARCHIVIST unless set)."),
    json_out: bool = typer.Option(False, "--json", help="JSON report."),
    data: Path | None = DataOpt,
    config: Path | None = ConfigOpt,
) -> None:
    """Compare two inventories: missing, extra and different studies, series and instances.

    Exit status 0 when identical, 1 when they differ, 2 on error.
    """
    from archivist.errors import ArchivistError
    from archivist.inventory.diff import diff

    pairs = _pairs(scope)
    try:
        if aet is None:
            aet = _settings(config, data).aet
        left = load_side(a, level=level, scope=pairs, method=method, calling_aet=aet,
                         settings_loader=lambda: _settings(config, data))
        right = load_side(b, level=level, scope=pairs, method=method, calling_aet=aet,
                          settings_loader=lambda: _settings(config, data))
    except ArchivistError as exc:
        raise _fail(str(exc), 2) from None
    result = diff(left, right)
    if json_out:
        print(json.dumps(result.to_json(), indent=1))
    else:
        for d in result.differences:
            print(d.line())
        print(result.summary())
    raise typer.Exit(0 if result.identical else 1)


def register(app: typer.Typer) -> None:
    """Add the ``inventory`` command group to the top-level CLI."""
    app.add_typer(inventory_app, name="inventory")
