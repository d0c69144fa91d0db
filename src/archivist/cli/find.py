"""``archivist find``: the C-FIND search from the command line."""

from __future__ import annotations

import json
import sys

from archivist.config import Settings

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


def run_find(settings: Settings, level_text: str, keys: list[str], *, json_out: bool,
             limit: int) -> int:
    from pydicom.datadict import tag_for_keyword

    from archivist.archive.archive import Archive
    from archivist.core.levels import QueryLevel
    from archivist.errors import ArchivistError

    try:
        level = QueryLevel.parse(level_text)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    pairs: list[tuple[str, str]] = []
    for item in keys:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or tag_for_keyword(key) is None:
            print(f"error: {item!r}: expected KEYWORD=VALUE with a DICOM keyword", file=sys.stderr)
            return 2
        pairs.append((key, value))
    given = {k for k, _ in pairs}
    pairs += [(k, "") for k in _DEFAULT_KEYS[level.value] if k not in given]
    if not settings.index_path.exists():
        print(f"error: no archive at {settings.data_dir} (run `archivist serve` or "
              "`archivist import` first, or pass --data)", file=sys.stderr)
        return 2
    archive = Archive.open(settings)
    try:
        query = archive.search.query_from_pairs(level, pairs)
        results = archive.search.find(query, limit=limit)
        if json_out:
            out = [ds.to_json_dict() for ds in results]
            json.dump(out, sys.stdout, indent=1, ensure_ascii=False)
            sys.stdout.write("\n")
            return 0
        from rich.console import Console
        from rich.table import Table

        columns = [k for k, _ in pairs]
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
                elif isinstance(v, (list, tuple)) or type(v).__name__ == "MultiValue":
                    row.append("\\".join(str(x) for x in v))
                else:
                    row.append(str(v))
            table.add_row(*row)
            n += 1
        console = Console()
        console.print(table)
        console.print(f"{n} match{'es' if n != 1 else ''}")
        return 0
    except ArchivistError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        archive.close()
