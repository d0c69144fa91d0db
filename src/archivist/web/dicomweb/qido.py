"""QIDO-RS (PS3.18 10.6): search for studies, series and instances through the one search."""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from typing import Any

from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from archivist.archive.archive import Archive
from archivist.core.levels import KEYS, STUDY_AGGREGATE_OF, MatchKind, QueryLevel
from archivist.core.matching import EMPTY_VALUE, normalise_pn
from archivist.errors import QueryError
from archivist.index.repository import attrs_of
from archivist.index.schema import TABLES_AT_LEVEL
from archivist.web.dicomweb.common import DICOM_JSON, archive_of, base_url, check_uid, require_json
from archivist.web.errors import HTTPProblem

#: Default return attributes per level (PS3.18 Tables 10.6.3-3, -4, -5).
STUDY_DEFAULTS = [
    "SpecificCharacterSet", "StudyDate", "StudyTime", "AccessionNumber", "ModalitiesInStudy",
    "ReferringPhysicianName", "PatientName", "PatientID", "PatientBirthDate", "PatientSex",
    "StudyInstanceUID", "StudyID", "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances",
    "StudyDescription",
]
SERIES_DEFAULTS = [
    "Modality", "SeriesDescription", "SeriesInstanceUID", "SeriesNumber",
    "NumberOfSeriesRelatedInstances", "PerformedProcedureStepStartDate",
    "PerformedProcedureStepStartTime", "SeriesDate", "SeriesTime", "BodyPartExamined",
]
INSTANCE_DEFAULTS = [
    "SOPClassUID", "SOPInstanceUID", "InstanceNumber", "Rows", "Columns", "BitsAllocated",
    "NumberOfFrames",
]
_RESERVED = {"limit", "offset", "includefield", "fuzzymatching", "emptyvaluematching",
             "multiplevaluematching", "accept", "charset", "_", "callback"}
#: Parameters that take one value (PS3.18 Table 8.3.4-1); given twice they are a 400.
_SINGLE = ("limit", "offset", "fuzzymatching", "emptyvaluematching", "multiplevaluematching")
#: Parameters this server accepts but does not perform (PS3.18 8.3.4.6): when "true", the
#: search runs without them and the response says so in a Warning header. Empty Value Matching
#: (``emptyvaluematching``, 8.3.4.5) is performed.
_UNSUPPORTED = {
    "multiplevaluematching": ("The multiplevaluematching parameter is not supported. "
                              "Multiple Value Matching has not been performed."),
}
#: The Query/Retrieve level of each Information Entity of PS3.3 (Equipment and Frame of
#: Reference belong to the series); every other IE is of the instance.
_IE_LEVEL = {"Patient": QueryLevel.PATIENT, "Study": QueryLevel.STUDY,
             "Series": QueryLevel.SERIES, "Equipment": QueryLevel.SERIES,
             "Frame of Reference": QueryLevel.SERIES}
_TAG = re.compile(r"^[0-9A-Fa-f]{8}$")
_FUZZY_SPLIT = re.compile(r"[\^=\s,.\-]+")
DEFAULT_MAX_RESULTS = 10_000


def _keyword(token: str) -> str:
    """A keyword from a keyword or an 8-hex tag; QueryError when neither."""
    if _TAG.match(token):
        kw = keyword_for_tag(int(token, 16))
        if not kw:
            raise QueryError(f"unknown attribute tag {token}")
        return str(kw)
    if tag_for_keyword(token) is None:
        raise QueryError(f"unknown attribute {token[:64]!r}")
    return token


@functools.cache
def _ie_levels() -> dict[int, QueryLevel]:
    """The highest level at which each top-level attribute of PS3.3 appears in some IOD
    (Patient, Study, Series with Equipment and Frame of Reference, else the instance)."""
    from archivist.validate.standard import tables

    std = tables()
    out: dict[int, QueryLevel] = {}
    for key in std.iod_keys:
        for usage in std.iod(key).modules:
            if not std.has_module(usage.module):
                continue
            level = _IE_LEVEL.get(usage.ie, QueryLevel.IMAGE)
            for tag in std.module(usage.module).top_level_tags:
                if tag not in out or level.rank < out[tag].rank:
                    out[tag] = level
    return out


def level_of(keyword: str) -> QueryLevel | None:
    """The level an attribute belongs to: its indexed key's, else its Information Entity's in
    PS3.3; None when neither tells (private or unlisted attributes)."""
    if keyword in KEYS:
        return KEYS[keyword].level
    tag = tag_for_keyword(keyword)
    return _ie_levels().get(tag) if tag is not None else None


def returned_at(keyword: str, level: QueryLevel) -> bool:
    """Whether a return attribute belongs in a response at `level`: PS3.18 10.6.3.3.1 and
    10.6.3.3.2 leave out the attributes of lower levels (a study has no Rows, no Modality)."""
    found = level_of(keyword)
    return found is None or found.rank <= level.rank


def _attribute(key: str) -> str:
    """A QIDO attribute (keyword, tag, or dotted sequence path) as dotted keywords."""
    return ".".join(_keyword(part) for part in key.split("."))


def _is_private_tag(token: str) -> bool:
    """Whether `token` is an 8-hex tag of a private group (odd group number)."""
    return bool(_TAG.match(token)) and int(token[:4], 16) % 2 == 1


def _includefields(values: Iterable[str]) -> tuple[list[str], bool]:
    fields: list[str] = []
    include_all = False
    for value in values:
        for token in value.split(","):
            token = token.strip()
            if not token:
                continue
            if token.lower() == "all":
                include_all = True
                continue
            if any(_is_private_tag(part) for part in token.split(".")):
                # PS3.18 10.6.3.3: a Private Data Element asked for is returned when the origin
                # server supports it; the index keeps none, so it is left out, not a 400.
                continue
            fields.append(_attribute(token))
    return fields, include_all


def _int_param(request: Request, name: str) -> int | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = int(raw)
    except ValueError:
        raise HTTPProblem(400, f"{name} must be a non-negative integer, not {raw[:20]!r}") from None
    if value < 0:
        raise HTTPProblem(400, f"{name} must be a non-negative integer")
    # beyond any result; SQLite integers stop at 2**63 (a larger offset was an OverflowError)
    return min(value, 2**31 - 1)


def _bool_param(request: Request, name: str) -> bool:
    raw = request.query_params.get(name)
    if raw is None or raw.strip() == "":
        return False
    value = raw.strip().lower()
    if value not in ("true", "false"):
        raise HTTPProblem(400, f"{name} must be true or false, not {raw[:20]!r}")
    return value == "true"


def _lower_key_message(keyword: str, level: QueryLevel) -> str:
    """Why a key of a lower level cannot be matched by a study or series search."""
    kind = {QueryLevel.SERIES: "a series", QueryLevel.IMAGE: "an instance"}[KEYS[keyword].level]
    if level is QueryLevel.STUDY:
        hint = (f"match {STUDY_AGGREGATE_OF[keyword]} instead" if keyword in STUDY_AGGREGATE_OF
                else "search /series or /instances with it instead")
    else:
        hint = "search /instances with it instead"
    return (f"{keyword} is {kind}-level attribute, which a {level.value.lower()} search cannot "
            f"match (PS3.18 10.6.1.2); {hint}")


def _comma_is_a_separator(keyword: str) -> bool:
    """Whether a comma in a QIDO-RS value of `keyword` separates values: on Code String keys
    (``ModalitiesInStudy=CT,MR``, as OHIF's study list sends a choice of several modalities),
    whose repertoire has no comma, and on multi-valued study aggregates of UIDs (SOP Classes
    in Study). Elsewhere a comma may be part of the value (``Doe, John``)."""
    if keyword in KEYS and KEYS[keyword].kind is MatchKind.MULTI:
        return True
    tag = tag_for_keyword(keyword)
    try:
        return tag is not None and dictionary_VR(tag) == "CS"
    except KeyError:
        return False


def _fuzzy_tokens(text: str) -> list[str]:
    return [t for t in _FUZZY_SPLIT.split(normalise_pn(text.replace("*", " ").replace("?", " ")))
            if t]


def fuzzy_match(query_value: str, stored: str | None) -> bool:
    """Each name word of the query is the start of some word of the stored name (any order).

    Case- and accent-insensitive: "jose" finds "JOSÉ^Núñez", "nun jo" finds it too.
    """
    wanted = _fuzzy_tokens(query_value)
    if not wanted:
        return True
    have = _fuzzy_tokens(stored or "")
    return all(any(h.startswith(w) for h in have) for w in wanted)


class QidoRequest:
    """One QIDO-RS request, parsed: level, scope, keys, paging and return attributes."""

    def __init__(self, request: Request, level: QueryLevel, scope: dict[str, str]) -> None:
        self.level = level
        self.scope = scope
        params = request.query_params
        for name in _SINGLE:
            if len(params.getlist(name)) > 1:
                raise HTTPProblem(400, f"{name} is given more than once")
        self.limit = _int_param(request, "limit")
        self.offset = _int_param(request, "offset") or 0
        self.fuzzy = _bool_param(request, "fuzzymatching")
        #: Empty Value Matching (PS3.18 8.3.4.5): a value of "" matches an absent or empty
        #: attribute; without it, "" is the literal value.
        self.empty_value_matching = _bool_param(request, "emptyvaluematching")
        self.warnings = [text for name, text in _UNSUPPORTED.items()
                         if _bool_param(request, name)]
        self.include, self.include_all = _includefields(params.getlist("includefield"))
        self.include = [k for k in self.include if returned_at(k.split(".")[0], level)]
        self.constraints: list[tuple[str, str]] = []
        self.fuzzy_names: list[tuple[str, str]] = []
        uid_lists: dict[str, int] = {}
        seen: set[str] = set()
        for key, value in params.multi_items():
            if key in _RESERVED or key.lower() in _RESERVED:
                continue
            attr = _attribute(key)
            top = attr.split(".")[0]
            if level is QueryLevel.STUDY and attr in STUDY_AGGREGATE_OF:
                # /studies?Modality=CT: the studies with a series of that modality, which is
                # what ModalitiesInStudy matches (likewise SOP Class UID).
                attr = top = STUDY_AGGREGATE_OF[attr]
            if top in KEYS and KEYS[top].level.rank > level.rank:
                raise HTTPProblem(400, _lower_key_message(top, level))
            kind = KEYS[attr].kind if attr in KEYS else None
            if kind is MatchKind.UID:
                value = "\\".join(v.strip() for v in value.replace("\\", ",").split(",")
                                   if v.strip())
                if attr in uid_lists:  # StudyInstanceUID=a&StudyInstanceUID=b: a UID list
                    index = uid_lists[attr]
                    self.constraints[index] = (attr, self.constraints[index][1] + "\\" + value)
                    continue
                uid_lists[attr] = len(self.constraints)
            elif attr in seen and _comma_is_a_separator(attr):
                # Modality=CT&Modality=MR (dicomweb-client's way with a list) is CT,MR.
                index = next(i for i, (a, _) in enumerate(self.constraints) if a == attr)
                more = "\\".join(v.strip() for v in value.split(",") if v.strip())
                self.constraints[index] = (attr, self.constraints[index][1] + "\\" + more)
                continue
            elif attr in seen:
                raise HTTPProblem(400, f"{key[:64]} is given more than once; a value list is "
                                  "only defined for UIDs and code strings (PS3.18 8.3.4.1)")
            elif "," in value and _comma_is_a_separator(attr):
                # CT,MR: any of the values, as CT\MR (a list in C-FIND) matches.
                value = "\\".join(v.strip() for v in value.split(",") if v.strip())
            seen.add(attr)
            if (self.fuzzy and kind is MatchKind.PN and value.strip()
                    and not (self.empty_value_matching and value.strip() == EMPTY_VALUE)):
                self.fuzzy_names.append((attr, value))
                continue
            self.constraints.append((attr, value))
        #: The query's own key contradicts the resource of the path (/studies/A/series?
        #: StudyInstanceUID=B): nothing in A matches, and nothing outside A may be answered.
        self.outside_scope = False
        for keyword, uid in scope.items():
            check_uid(uid, keyword)
            given = next((i for i, (a, _) in enumerate(self.constraints) if a == keyword), None)
            if given is not None:
                values = self.constraints.pop(given)[1]
                if values.strip() and uid not in values.split("\\"):
                    self.outside_scope = True
            self.constraints.append((keyword, uid))

    def return_keys(self) -> list[str]:
        keys: list[str] = []
        unscoped_study = "StudyInstanceUID" not in self.scope
        if self.level is QueryLevel.STUDY or unscoped_study:
            keys += STUDY_DEFAULTS
        if self.level in (QueryLevel.SERIES, QueryLevel.IMAGE):
            if self.level is QueryLevel.SERIES or "SeriesInstanceUID" not in self.scope:
                keys += SERIES_DEFAULTS
            keys.append("StudyInstanceUID")
        if self.level is QueryLevel.IMAGE:
            keys += INSTANCE_DEFAULTS
            keys.append("SeriesInstanceUID")
        keys += [k for k in self.include if "." not in k]
        if self.include_all:
            # Every key of the level, less the File Meta's Transfer Syntax UID (a C-FIND key
            # here; QIDO-RS names the stored syntax Available Transfer Syntax UID).
            keys += [k for k, d in KEYS.items()
                     if d.level.rank <= self.level.rank and k != "TransferSyntaxUID"]
            if self.level is QueryLevel.IMAGE:
                keys.append("AvailableTransferSyntaxUID")
        return list(dict.fromkeys(k for k in keys if k != "SpecificCharacterSet"))


def _row_attrs(row: dict[str, Any], level: QueryLevel) -> dict[str, Any]:
    """The attributes kept at ingest for the matched entity, as DICOM JSON.

    They come from the entity's own row (a study's and a series' are those of their first
    instance, an instance's its own), never from the rows above it: a patient's row holds the
    first instance of its first study, which is not this study's nor this instance's. The
    attributes of levels below `level` are left out (PS3.18 10.6.3.3).
    """
    own = attrs_of(row, TABLES_AT_LEVEL[level.value][0].name)
    # Group lengths (gggg,0000), kept at ingest before session 22, are no attributes: they
    # describe the encoding they were read from (PS3.5 7.2), and are retired.
    if level is QueryLevel.IMAGE:
        return {tag: item for tag, item in own.items() if not tag.endswith("0000")}
    out = {}
    for tag, item in own.items():
        if tag.endswith("0000"):
            continue
        try:
            keyword = keyword_for_tag(int(tag, 16))
        except ValueError:
            continue
        if not keyword or returned_at(str(keyword), level):
            out[tag] = item
    return out


def run_qido(archive: Archive, q: QidoRequest, root: str) -> tuple[list[dict[str, Any]], bool]:
    """Matches as DICOM JSON, and whether a server limit cut the result."""
    pairs = list(q.constraints) + [(k, "") for k in q.return_keys()]
    pairs += [(k, "") for k, _ in q.fuzzy_names]
    query = archive.search.query_from_pairs(q.level, pairs,
                                            empty_value_matching=q.empty_value_matching)
    settings = archive.settings
    server_max = int(getattr(settings, "qido_max_results", 0) or settings.find_max_results
                     or DEFAULT_MAX_RESULTS)
    if q.limit == 0:
        # limit is a uint, the maximum number of results (PS3.18 Table 8.3.4-1, 8.3.4.4):
        # 0 asks for none (Orthanc answers every match, dcm4chee refuses it with a 400).
        return [], False
    wanted = min(q.limit, server_max) if q.limit is not None else server_max
    out: list[dict[str, Any]] = []
    truncated = False
    skipped = 0
    if q.fuzzy_names:
        rows = archive.search.rows(query)
    else:
        rows = archive.search.rows(query, limit=wanted + 1, offset=q.offset)
        skipped = q.offset
    for row in rows:
        if q.fuzzy_names:
            ds = archive.search.identifier(query, row)
            if not all(fuzzy_match(value, str(ds.get(keyword) or ""))
                       for keyword, value in q.fuzzy_names):
                continue
            if skipped < q.offset:
                skipped += 1
                continue
        if len(out) >= wanted:
            truncated = q.limit is None or q.limit > server_max
            break
        # DICOM JSON straight from the row (Query/Retrieve Level belongs to DIMSE: left out).
        body = archive.search.json_identifier(query, row)
        if q.include_all:
            for tag, item in _row_attrs(row, q.level).items():
                body.setdefault(tag, item)
        else:
            attrs = None
            for keyword in q.include:
                tag = f"{tag_for_keyword(keyword.split('.')[0]):08X}"
                if tag not in body or not body[tag].get("Value"):
                    attrs = attrs if attrs is not None else _row_attrs(row, q.level)
                    if tag in attrs:
                        body[tag] = attrs[tag]
        modalities = body.get(_MODALITIES_IN_STUDY)
        if modalities is not None and not modalities.get("Value"):
            # A study whose objects carry no Modality: the empty attribute ({"vr": "CS"}) is
            # left out, since the bundled OHIF (3.13) reads ModalitiesInStudy.Value.length
            # and its whole study list fails on one such study.
            del body[_MODALITIES_IN_STUDY]
        _add_urls(body, root, q.level)
        out.append(dict(sorted(body.items())))
    return out, truncated


_MODALITIES_IN_STUDY = "00080061"


def _value(body: dict[str, Any], tag: str) -> str | None:
    item = body.get(tag)
    if isinstance(item, dict) and item.get("Value"):
        return str(item["Value"][0])
    return None


def _add_urls(body: dict[str, Any], root: str, level: QueryLevel) -> None:
    study = _value(body, "0020000D")
    series = _value(body, "0020000E")
    sop = _value(body, "00080018")
    url = None
    if level is QueryLevel.STUDY and study:
        url = f"{root}/studies/{study}"
    elif level is QueryLevel.SERIES and study and series:
        url = f"{root}/studies/{study}/series/{series}"
    elif level is QueryLevel.IMAGE and study and series and sop:
        url = f"{root}/studies/{study}/series/{series}/instances/{sop}"
    if url:
        body["00081190"] = {"vr": "UR", "Value": [url]}
    body.setdefault("00080056", {"vr": "CS", "Value": ["ONLINE"]})


def _json_response(items: list[dict[str, Any]], headers: dict[str, str]) -> Response:
    import json

    data = json.dumps(items, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return Response(data, media_type=DICOM_JSON, headers=headers)


async def search(request: Request, level: QueryLevel, scope: dict[str, str]) -> Response:
    require_json(request, "QIDO-RS")
    archive = archive_of(request)
    try:
        q = QidoRequest(request, level, scope)
    except QueryError as exc:
        raise HTTPProblem(400, str(exc)) from None
    if q.outside_scope:
        return _json_response([], {})
    root = base_url(request)
    try:
        items, truncated = await run_in_threadpool(run_qido, archive, q, root)
    except QueryError as exc:
        raise HTTPProblem(400, str(exc)) from None
    headers: dict[str, str] = {}
    host = request.url.hostname or "archivist"
    warnings = list(q.warnings)
    if truncated:
        warnings.append("The number of results exceeded the maximum supported by the server. "
                        "Additional results can be requested.")
    if warnings:
        # One Warning header, its warning-values comma-separated (RFC 7234 5.5).
        headers["Warning"] = ", ".join(f'299 {host}: "{text}"' for text in warnings)
    return _json_response(items, headers)

