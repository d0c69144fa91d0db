"""``archivist find``: the C-FIND search from the command line.

Keys are ``KEY=VALUE`` with a keyword or an 8-hex-digit tag; a dotted path matches inside a Code
Sequence item as QIDO-RS does (``ProcedureCodeSequence.CodeValue=10200004``
``ProcedureCodeSequence.CodingSchemeDesignator=SCT``, PS3.18 8.3.4.1), through the same search.
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING

from archivist.config import Settings

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

_DEFAULT_KEYS = {
    "PATIENT": ["PatientName", "PatientID", "PatientBirthDate", "PatientSex",
                "NumberOfPatientRelatedStudies"],
    "STUDY": ["PatientName", "PatientID", "StudyDate", "AccessionNumber", "StudyDescription",
              "ModalitiesInStudy", "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances",
              "StudyInstanceUID"],
    "SERIES": ["StudyInstanceUID", "SeriesInstanceUID", "Modality", "SeriesNumber",
               "SeriesDescription", "NumberOfSeriesRelatedInstances"],
    "IMAGE": ["SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID", "InstanceNumber",
              "NumberOfFrames"],
}


def _code_text(item: Dataset) -> str:
    """One Code Sequence item as ``SCHEME:VALUE (meaning)``, as ``archivist codes`` writes it."""
    value = item.get("CodeValue") or item.get("LongCodeValue") or item.get("URNCodeValue") or ""
    text = f"{item.get('CodingSchemeDesignator', '')}:{value}"
    meaning = item.get("CodeMeaning")
    return f"{text} ({meaning})" if meaning else text


def _stdout_is_unicode() -> bool:
    """Whether standard output takes any character (a UTF encoding), as a latin-1 or cp1252
    console, or a file redirected on Windows, does not."""
    import codecs

    encoding = getattr(sys.stdout, "encoding", None) or "ascii"
    try:
        return codecs.lookup(encoding).name.startswith("utf")
    except LookupError:
        return False


def _is_text(arg: str) -> bool:
    """False for an argument with bytes the locale could not decode (Python keeps them as lone
    surrogates, PEP 383), which no index value matches and no database takes."""
    try:
        arg.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def run_find(settings: Settings, level_text: str, keys: list[str], *, json_out: bool,
             limit: int) -> int:
    from pydicom.sequence import Sequence

    from archivist.core.levels import STUDY_AGGREGATE_OF, QueryLevel
    from archivist.core.matching import resolve_keyword
    from archivist.errors import ArchivistError, QueryError

    try:
        level = QueryLevel.parse(level_text)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    pairs: list[tuple[str, str]] = []
    given: set[str] = set()
    for item in keys:
        key, sep, value = item.partition("=")
        key = key.strip()
        try:
            if not sep:
                raise QueryError("no '='")
            top = resolve_keyword(key.split(".")[0])
            if level is QueryLevel.STUDY and top in STUDY_AGGREGATE_OF and "." not in key:
                # Modality / SOP Class UID at STUDY level: the studies holding such a series
                # or instance, matched as Modalities / SOP Classes in Study, as C-FIND and
                # QIDO-RS match them (a hierarchical query would ignore the key).
                key = top = STUDY_AGGREGATE_OF[top]
            given.add(top)
            for part in key.split(".")[1:]:
                resolve_keyword(part)
        except QueryError:
            print(f"error: {item!r}: expected KEY=VALUE with a DICOM keyword or tag, or a dotted "
                  "code sequence path such as ProcedureCodeSequence.CodeValue", file=sys.stderr)
            return 2
        if not _is_text(item):
            raw = item.encode(sys.getfilesystemencoding(), "surrogateescape")
            print(f"error: {raw!r}: not valid text in the locale's encoding "
                  f"({sys.getfilesystemencoding()}): write the value in that encoding, or set "
                  "the locale (LANG) the terminal uses", file=sys.stderr)
            return 2
        pairs.append((key, value))
    pairs += [(k, "") for k in _DEFAULT_KEYS[level.value] if k not in given]
    if not settings.index_exists:
        print(f"error: no archive at {settings.data_dir} (run `archivist serve` or "
              "`archivist import` first, or pass --data)", file=sys.stderr)
        return 2
    from archivist.cli.main import open_archive

    archive = open_archive(settings)
    try:
        query = archive.search.query_from_pairs(level, pairs)
        results = archive.search.find(query, limit=limit)
        unicode_out = _stdout_is_unicode()
        if json_out:
            # One match at a time (a whole archive's studies made a list of gigabytes). Names in
            # any script: as \u escapes where the output cannot take them (the same JSON).
            sys.stdout.write("[")
            for n, ds in enumerate(results):
                sys.stdout.write(",\n" if n else "\n")
                sys.stdout.write(json.dumps(ds.to_json_dict(), indent=1,
                                            ensure_ascii=not unicode_out))
            sys.stdout.write("\n]\n")
            return 0
        from rich.table import Table

        from archivist.cli.output import stdout_console

        columns = list(query.return_keys)
        table = Table(title=f"{level.value.title()} matches", show_lines=False)
        for c in columns:
            table.add_column(c, overflow="fold")
        n = 0
        for ds in results:
            row = []
            for c in columns:
                v = ds.get(c)
                if v is None:
                    row.append("")
                elif isinstance(v, Sequence):
                    row.append("; ".join(_code_text(i) for i in v))
                elif isinstance(v, (list, tuple)) or type(v).__name__ == "MultiValue":
                    row.append("\\".join(str(x) for x in v))
                else:
                    row.append(str(v))
            table.add_row(*row)
            n += 1
        if not unicode_out and hasattr(sys.stdout, "reconfigure"):
            # A character the output cannot take becomes an escape rather than a traceback.
            sys.stdout.reconfigure(errors="backslashreplace")
        # Written to a file or a pipe (no terminal, no COLUMNS), the table keeps its natural
        # width: at rich's default of 80 columns a UID was folded into pieces over five lines.
        console = stdout_console()
        console.print(table)
        console.print(f"{n} match{'es' if n != 1 else ''}")
        return 0
    except ArchivistError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        archive.close()
