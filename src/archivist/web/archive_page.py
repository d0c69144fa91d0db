"""The archive's own web page at ``/archive/``: what is stored, uploads, and where the APIs are.

Routes (HTML is rendered on the server; one small script adds uploads and findings)::

    GET /archive/                      counts, stored bytes, index and disk size, recent studies,
                                       drag-and-drop upload (STOW-RS), the server's HTTP routes;
                                       with search parameters (patient, id, accession,
                                       description, modality, from, to) or a page number, the
                                       matching studies instead, newest first, a page at a time
    GET /archive/studies/{study}       one study: its series and instances, validation counts, and
                                       the findings of an instance (GET /api/instances/{sop}/validation)
    GET /archive/workitems             the Unified Procedure Steps (UPS worklist), newest change
                                       first, ``?state=`` one of the four states, ``?page=``
    GET /archive/static/{name}         the page's script and style sheet (a fixed table of files)

Uploads are sent by the browser straight to ``POST /dicomweb/studies`` (STOW-RS, PS3.18 10.5),
one file per request so each file gets its own result; the page never stores anything itself.
Studies come from the one search (:class:`archivist.archive.search.Search`), with C-FIND's
matching (a text field without a wildcard matches anywhere in the value, as the viewer's study
list does; person names ignore case and accents), newest first by index order. Patient names appear on the page (it is the archive's UI); they are never logged.
"""

from __future__ import annotations

import html
import os
import re
import shutil
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.status import HTTP_400_BAD_REQUEST, HTTP_404_NOT_FOUND

from archivist.archive.archive import Archive
from archivist.archive.mpps import ProcedureSteps
from archivist.archive.ups import STATES, Workitems
from archivist.config import Settings
from archivist.core.levels import QueryLevel
from archivist.errors import QueryError

__all__ = ["routes"]

RECENT_STUDIES = 25
PAGE_SIZE = 50
MAX_INSTANCES_SHOWN = 2000
#: The search form: (query parameter, attribute keyword, label). Text values without a wildcard
#: match anywhere in the value (``*text*``); the modality is matched as typed (upper case).
SEARCH_FIELDS = (
    ("patient", "PatientName", "Patient name"),
    ("id", "PatientID", "Patient ID"),
    ("accession", "AccessionNumber", "Accession"),
    ("description", "StudyDescription", "Description"),
    ("modality", "ModalitiesInStudy", "Modality"),
)
_DATE_FIELD = re.compile(r"^(\d{4})-?(\d{2})-?(\d{2})$")
_UID = re.compile(r"[0-9]+(\.[0-9]+)*")
_STATIC = {  # URL name -> (resource name, media type); request text never becomes a path
    "archive.js": ("archive.js", "text/javascript; charset=utf-8"),
    "archive.css": ("archive.css", "text/css; charset=utf-8"),
}
_HEADERS = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
                                       "style-src 'self'; script-src 'self'; frame-ancestors 'none'"}

_e = html.escape


def _size(n: int | None) -> str:
    if n is None:
        return "?"
    value = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{n} B"


def _person_name(value: str | None) -> str:
    """``Family^Given`` as "Family Given"; the ideographic and phonetic groups in parentheses."""
    groups = [" ".join(p for p in g.split("^") if p) for g in (value or "").split("=")]
    groups = [g for g in groups if g]
    if len(groups) > 1:
        return f"{groups[0]} ({' · '.join(groups[1:])})"
    return groups[0] if groups else ""


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _date(value: str | None) -> str:
    v = value or ""
    return f"{v[:4]}-{v[4:6]}-{v[6:8]}" if len(v) == 8 and v.isdigit() else v


def _modalities(value: str | None) -> str:
    return ", ".join(m for m in (value or "").split("\\") if m)


def _viewer_link(study_uid: str) -> str:
    return f"/viewer?StudyInstanceUIDs={_e(study_uid)}"


# -- data (run in the thread pool) -------------------------------------------------------------


def _stored_bytes(archive: Archive) -> int | None:
    """Sum of the stored objects' sizes, from the index (never by walking the blob folder)."""
    from sqlalchemy import func, select

    from archivist.index.schema import instance

    try:
        with archive.index.reader.connect() as conn:
            return int(conn.execute(select(func.coalesce(func.sum(instance.c.size), 0)))
                       .scalar_one())
    except Exception:  # noqa: BLE001 - a summary figure; the page still renders
        return None


def _index_bytes(settings: Settings) -> int | None:
    path = Path(settings.index_path)
    total, found = 0, False
    for suffix in ("", "-wal", "-shm"):
        try:
            total += os.stat(f"{path}{suffix}").st_size
            found = True
        except OSError:
            pass
    return total if found else None


def summary(archive: Archive) -> dict[str, Any]:
    """Counts, stored bytes, index size and the data folder's file system usage."""
    settings = archive.settings
    disk: dict[str, int | None]
    try:
        usage = shutil.disk_usage(settings.data_dir)
        disk = {"total": usage.total, "free": usage.free}
    except OSError:
        disk = {"total": None, "free": None}
    return {
        "counts": archive.index.counts(),
        "stored_bytes": _stored_bytes(archive),
        "index_bytes": _index_bytes(settings),
        "disk": disk,
    }


def recent_studies(archive: Archive, n: int = RECENT_STUDIES) -> list[dict[str, Any]]:
    """The last `n` studies in index order (the newest first).

    The index's study count includes the studies that hold only stored inventories, which the
    search does not list; the offset taken from it is then too far by their number, and one
    second read moved back by what was missing gets the last `n` listed studies.
    """
    total = archive.index.counts().get("study", 0)
    query = archive.search.query_from_pairs(QueryLevel.STUDY, [])
    offset = max(0, total - n)
    rows = list(archive.search.rows(query, limit=n, offset=offset))
    if len(rows) < n and offset > 0:
        offset = max(0, offset - (n - len(rows)))
        rows = list(archive.search.rows(query, limit=n, offset=offset))
    rows.reverse()
    return rows


def search_pairs(params: Mapping[str, str]) -> list[tuple[str, str]]:
    """The search form's query parameters as C-FIND ``(keyword, value)`` pairs.

    Raises
    ------
    QueryError
        A date that is not ``YYYY-MM-DD`` / ``YYYYMMDD``.
    """
    pairs: list[tuple[str, str]] = []
    for name, keyword, _label in SEARCH_FIELDS:
        value = (params.get(name) or "").strip()
        if not value:
            continue
        if keyword == "ModalitiesInStudy":
            value = value.upper()
        elif not any(ch in value for ch in "*?"):
            value = f"*{value}*"
        pairs.append((keyword, value))
    dates = []
    for name in ("from", "to"):
        value = (params.get(name) or "").strip()
        if value and not _DATE_FIELD.match(value):
            raise QueryError(f"{name!r} must be a date (YYYY-MM-DD), not {value!r}")
        dates.append(_DATE_FIELD.sub(r"\1\2\3", value) if value else "")
    if any(dates):
        low, high = dates
        pairs.append(("StudyDate", low if low == high else f"{low}-{high}"))
    return pairs


def matching_studies(archive: Archive, pairs: list[tuple[str, str]],
                     page: int) -> tuple[int, list[dict[str, Any]]]:
    """How many studies match `pairs`, and page `page` (from 1) of them, newest first."""
    query = archive.search.query_from_pairs(QueryLevel.STUDY, pairs)
    total = archive.search.count(query)
    end = total - (page - 1) * PAGE_SIZE
    if end <= 0:
        return total, []
    start = max(0, end - PAGE_SIZE)
    rows = list(archive.search.rows(query, limit=end - start, offset=start))
    rows.reverse()
    return total, rows


def study_instances(archive: Archive, study_uid: str) -> list[dict[str, Any]]:
    query = archive.search.query_from_pairs(QueryLevel.IMAGE, [("StudyInstanceUID", study_uid)])
    return list(archive.search.rows(query, limit=MAX_INSTANCES_SHOWN))


# -- pages ---------------------------------------------------------------------------------------


def _page(title: str, body: str, settings: Settings) -> HTMLResponse:
    doc = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1">
<title>{_e(title)}</title><link rel="icon" href="data:,"><link rel="stylesheet" href="/archive/static/archive.css"></head>
<body>
<header><a class="brand" href="/archive/">Archivist</a>
<span class="node">AE <b>{_e(settings.aet)}</b> · DIMSE port {settings.dicom_port}</span>
<nav><a href="/">Viewer (study list)</a><a href="/archive/">Archive</a>
<a href="/archive/workitems">Worklist (UPS)</a>
<a href="/archive/#api">HTTP API</a></nav></header>
<main>
{body}
</main>
<script src="/archive/static/archive.js"></script>
</body></html>
"""
    return HTMLResponse(doc, headers=_HEADERS)


def _summary_html(s: dict[str, Any]) -> str:
    c = s["counts"]
    disk = s["disk"]
    cards = [
        ("Patients", f"{c.get('patient', 0):,}"), ("Studies", f"{c.get('study', 0):,}"),
        ("Series", f"{c.get('series', 0):,}"), ("Instances", f"{c.get('instance', 0):,}"),
        ("Stored objects", _size(s["stored_bytes"])), ("Index", _size(s["index_bytes"])),
        ("Disk free", f"{_size(disk['free'])} of {_size(disk['total'])}"),
    ]
    items = "".join(f'<div class="card" data-key="{_e(k)}"><div class="v">{_e(v)}</div>'
                    f'<div class="k">{_e(k)}</div></div>' for k, v in cards)
    return f'<section id="summary" class="cards">{items}</section>'


def _recent_html(rows: list[dict[str, Any]], heading: str = "Recent studies",
                 empty: str | None = None, after: str = "") -> str:
    if not rows:
        body = empty or ('<p class="empty">No studies yet. Drop DICOM files above, or send them '
                         "with C-STORE (<code>storescu</code>) or <code>archivist import</code>."
                         "</p>")
    else:
        trs = []
        for r in rows:
            uid = r.get("study.study_instance_uid") or ""
            name = _e(_person_name(r.get("patient.patient_name")))
            patient_id = _e(r.get("patient.patient_id") or "")
            description = _e(r.get("study.study_description") or "")
            trs.append(
                f'<tr data-study="{_e(uid)}">'
                f"<td class=date>{_e(_date(r.get('study.study_date')))}</td>"
                # A long word (64 characters without a space are legal) is cut short with an
                # ellipsis by the style sheet (td.clip); the title holds the whole value.
                f'<td class=clip title="{name}">{name}</td>'
                f'<td class=clip title="{patient_id}">{patient_id}</td>'
                f'<td class=clip title="{description}">{description}</td>'
                f"<td>{_e(_modalities(r.get('study.modalities_in_study')))}</td>"
                f"<td class=n>{r.get('study.number_of_study_related_series') or 0}</td>"
                f"<td class=n>{r.get('study.number_of_study_related_instances') or 0}</td>"
                f'<td><a class="open" href="{_viewer_link(uid)}">Open in viewer</a> · '
                f'<a href="/archive/studies/{_e(uid)}">Details</a></td></tr>'
            )
        body = ("<table><thead><tr><th>Date</th><th>Patient</th><th>ID</th><th>Description</th>"
                "<th>Modalities</th><th>Series</th><th>Instances</th><th></th></tr></thead>"
                f"<tbody>{''.join(trs)}</tbody></table>")
    return f'<section id="recent"><h2>{heading}</h2>{body}{after}</section>'


def _search_html(params: Mapping[str, str]) -> str:
    fields = []
    for name, _keyword, label in SEARCH_FIELDS:
        fields.append(f'<label>{_e(label)}<input name="{name}" type="search" '
                      f'value="{_e(params.get(name) or "")}"></label>')
    for name, label in (("from", "Date from"), ("to", "to")):
        fields.append(f'<label>{label}<input name="{name}" type="date" '
                      f'value="{_e(params.get(name) or "")}"></label>')
    return ('<section id="search"><h2>Find studies</h2><form method="get" action="/archive/">'
            f"{''.join(fields)}<button type=submit>Search</button>"
            '<a href="/archive/?page=1">all studies</a> · <a href="/archive/">clear</a>'
            '</form><p class="hint">Matched as C-FIND and QIDO-RS match: text anywhere in the '
            "value unless it has a <code>*</code> or <code>?</code> wildcard; patient names "
            "ignore case and accents, the other fields are matched as typed.</p></section>")


def _results_html(params: Mapping[str, str], total: int, rows: list[dict[str, Any]],
                  page: int) -> str:
    """The matching studies of a search, with links to the neighbouring pages."""
    last_page = max(1, -(-total // PAGE_SIZE))
    first = (page - 1) * PAGE_SIZE + 1
    shown = f"{first}–{first + len(rows) - 1} of {total}" if rows else f"0 of {total}"
    keep = {k: v for k, v in params.items() if k != "page" and v}

    def link(p: int, text: str) -> str:
        return f'<a rel="{text.lower()}" href="/archive/?{_e(urlencode({**keep, "page": p}))}">' \
               f"{text}</a>"

    nav = [link(min(page - 1, last_page), "Previous")] if page > 1 else []
    if page < last_page:
        nav.append(link(page + 1, "Next"))
    after = f'<p class="pages">Page {page} of {last_page} {" · ".join(nav)}</p>'
    heading = f'Studies found <span class="count">{_e(shown)}</span>'
    empty = '<p class="empty">No study matches this search.</p>'
    return _recent_html(rows, heading, empty, after)


_UPLOAD_HTML = """<section id="upload"><h2>Upload</h2>
<div id="dropzone" tabindex="0" role="button" aria-describedby="dropzone-hint"
 aria-label="Upload DICOM files: drop files or a folder here, or press Enter to choose files">
<p><b>Drop DICOM files or a folder here</b>, or choose
<label class="button">files<input id="file-input" class="visually-hidden" type="file" multiple></label>
<label class="button">a folder<input id="folder-input" class="visually-hidden" type="file" webkitdirectory></label></p>
<p class="hint" id="dropzone-hint">Each file is sent with STOW-RS (<code>POST /dicomweb/studies</code>) and stored
through the same checks as C-STORE.</p></div>
<div id="progress" hidden><progress id="progress-bar" max="1" value="0" aria-label="Upload progress"></progress>
<span id="progress-text" role="status" aria-live="polite"></span></div>
<table id="results" hidden><thead><tr><th>File</th><th>Size</th><th>Result</th></tr></thead>
<tbody></tbody></table></section>"""


def _route_lines(routes: list[Any], prefix: str = "") -> list[str]:
    items = []
    for route in routes:
        path = prefix + (getattr(route, "path", "") or "")
        children = getattr(route, "routes", None)
        if children:  # a Mount: list what it holds
            items.extend(_route_lines(list(children), path))
            continue
        if not path or path in ("/{path:path}", "/archive"):
            continue
        methods = sorted(m for m in (getattr(route, "methods", None) or []) if m != "HEAD")
        if children is not None:  # a mounted application that does not list its routes
            items.append(f"<li><code>*</code> {_e(path)}/&hellip;</li>")
            continue
        label = _e(path)
        if "{" not in path and "GET" in methods:
            label = f'<a href="{_e(path)}">{_e(path)}</a>'
        items.append(f"<li><code>{' '.join(methods) or 'ANY'}</code> {label}</li>")
    return items


def _api_html(request: Request) -> str:
    items = _route_lines(list(request.app.routes))
    return f"""<section id="api"><h2>HTTP API</h2>
<p>DICOMweb (QIDO-RS, WADO-RS, STOW-RS) lives under <code>/dicomweb</code>, WADO-URI at
<code>/wado</code>; the archive's JSON API under <code>/api</code>. The DICOMweb conformance
statement is <code>docs/conformance.md</code> in the source tree. Routes of this server:</p>
<ul class="routes">{''.join(items)}</ul></section>"""


async def archive_home(request: Request) -> Response:
    """``GET /archive/``: the summary and recent studies, or the studies a search finds."""
    archive: Archive = request.app.state.archive
    params = request.query_params
    s = await run_in_threadpool(summary, archive)
    status = 200
    try:
        pairs = search_pairs(params)
        page_text = params.get("page") or ""
        if page_text and (not (page_text.isascii() and page_text.isdigit())
                          or int(page_text) < 1):
            raise QueryError(f"'page' must be a page number from 1, not {page_text!r}")
        if pairs or page_text:
            page = int(page_text or 1)
            total, rows = await run_in_threadpool(matching_studies, archive, pairs, page)
            studies = _results_html(params, total, rows, page)
        else:
            studies = _recent_html(await run_in_threadpool(recent_studies, archive))
    except QueryError as exc:
        status = HTTP_400_BAD_REQUEST
        studies = (f'<section id="recent"><h2>Studies found</h2><p class="failed">'
                   f"This search cannot be run: {_e(str(exc))}</p></section>")
    body = (_summary_html(s) + _UPLOAD_HTML + _search_html(params) + studies
            + _api_html(request))
    response = _page("Archivist", body, archive.settings)
    response.status_code = status
    return response


def _send_form(settings: Settings, study_uid: str) -> str:
    """A form sending the study to a configured peer (none: no form)."""
    if not settings.peers:
        return ""
    options = "".join(f'<option value="{_e(p.aet)}">{_e(p.aet)} ({_e(p.host)}:{p.port})</option>'
                      for p in settings.peers)
    return (f'<form class="send" data-url="/api/studies/{_e(study_uid)}/send">'
            f'<label>Send to <select name="to">{options}</select></label> '
            '<button type="submit">Send</button> <span class="send-status"></span></form>')


async def study_page(request: Request) -> Response:
    """``GET /archive/studies/{study}``: series and instances, validation counts and findings."""
    archive: Archive = request.app.state.archive
    study_uid = request.path_params["study"]
    if not _UID.fullmatch(study_uid) or len(study_uid) > 64:
        return _not_found(archive.settings, "That is not a Study Instance UID.")
    rows = await run_in_threadpool(study_instances, archive, study_uid)
    if not rows:
        return _not_found(archive.settings, "No study with that Study Instance UID is stored.")
    first = rows[0]
    head = (f"<h1>{_e(first.get('study.study_description') or 'Study')}</h1>"
            f"<p class=meta>{_e(_person_name(first.get('patient.patient_name')))} · "
            f"{_e(first.get('patient.patient_id') or '')} · "
            f"{_e(_date(first.get('study.study_date')))} · <code>{_e(study_uid)}</code> · "
            f'<a class="open" href="{_viewer_link(study_uid)}">Open in viewer</a> · '
            f'<a class="download" href="/api/studies/{_e(study_uid)}/archive" download>'
            "Download ZIP</a> · "
            f'<button class="delete-study" data-url="/api/studies/{_e(study_uid)}">'
            "Delete study</button></p>" + _send_form(archive.settings, study_uid))
    rows.sort(key=lambda r: (r.get("series.series_number") or 0,
                             r.get("series.series_instance_uid") or "",
                             r.get("instance.instance_number") or 0))
    trs = []
    last_series = None
    for r in rows:
        se = r.get("series.series_instance_uid")
        if se != last_series:
            last_series = se
            trs.append(f'<tr class="series"><td colspan=7>Series {r.get("series.series_number") or ""}'
                       f" · {_e(r.get('series.modality') or '')} · "
                       f"{_e(r.get('series.series_description') or '')} · <code>{_e(se or '')}</code>"
                       f' · <a class="download" href="/api/studies/{_e(study_uid)}/series/'
                       f'{_e(se or "")}/archive" download>ZIP</a></td></tr>')
        sop = r.get("instance.sop_instance_uid") or ""
        errors, warnings = r.get("instance.validation_errors"), r.get("instance.validation_warnings")
        checked = "not checked" if errors is None and warnings is None else \
            f"{_plural(errors or 0, 'error')}, {_plural(warnings or 0, 'warning')}"
        trs.append(
            f'<tr data-sop="{_e(sop)}"><td class=n>{r.get("instance.instance_number") or ""}</td>'
            f"<td><code>{_e(sop)}</code></td>"
            f"<td><code>{_e(r.get('instance.transfer_syntax_uid') or '')}</code></td>"
            f"<td class=n>{r.get('instance.number_of_frames') or 1}</td>"
            f"<td class=n>{_e(_size(r.get('instance.size')))}</td>"
            f"<td>{_e(checked)}</td>"
            f'<td><button class="findings" data-sop="{_e(sop)}" aria-expanded="false" '
            f'aria-controls="findings-{_e(sop)}">Findings</button></td></tr>'
            f'<tr class="findings-row" id="findings-{_e(sop)}" hidden data-for="{_e(sop)}">'
            '<td colspan=7 aria-live="polite"></td></tr>')
    table = ("<table id=instances><thead><tr><th>#</th><th>SOP Instance UID</th>"
             "<th>Transfer syntax</th><th>Frames</th><th>Size</th><th>Validation</th><th></th>"
             f"</tr></thead><tbody>{''.join(trs)}</tbody></table>")
    steps = await run_in_threadpool(_performed_steps, archive, study_uid)
    return _page("Archivist: study", head + table + steps, archive.settings)


def _performed_steps(archive: Archive, study_uid: str) -> str:
    """The study's Modality Performed Procedure Steps (newest first), with how many of the
    images each lists are stored; nothing when there are none."""
    steps = ProcedureSteps(archive.index)
    found = steps.list(study=study_uid, limit=50)
    if not found:
        return ""
    trs = []
    for step in found:
        arrival = steps.arrival(step)
        trs.append(
            f"<tr><td>{_e(step.status)}</td><td>{_e(step.performed_procedure_step_id)}</td>"
            f"<td>{_e(step.modality)}</td><td>{_e(step.performed_station_ae_title)}</td>"
            f"<td>{_e(step.start)}</td><td>{_e(step.end)}</td>"
            f"<td class=n>{arrival['stored']} of {arrival['referenced']}</td>"
            f'<td><a href="/api/mpps/{_e(step.sop_instance_uid)}">'
            f"<code>{_e(step.sop_instance_uid)}</code></a></td></tr>")
    return ("<h2>Performed procedure steps (MPPS)</h2><table id=mpps><thead><tr>"
            "<th>Status</th><th>Step ID</th><th>Modality</th><th>Station</th><th>Started</th>"
            "<th>Ended</th><th>Images stored</th><th>SOP Instance UID</th></tr></thead>"
            f"<tbody>{''.join(trs)}</tbody></table>")


def _workitems_html(items: list[Any], state: str, page: int, more: bool) -> str:
    tabs = " · ".join(
        f"<b>{_e(label)}</b>" if value == state else
        f'<a href="/archive/workitems?{urlencode({"state": value} if value else {})}">'
        f"{_e(label)}</a>"
        for value, label in (("", "All"), *((v, v.title()) for v in STATES)))
    if not items:
        table = ('<p class="empty">No workitems. Create them with UPS-RS '
                 "(<code>POST /dicomweb/workitems</code>) or N-CREATE on UPS Push.</p>")
    else:
        trs = []
        for item in items:
            ds = item.dataset
            name = _e(_person_name(str(ds.get("PatientName", "") or "")))
            trs.append(
                f'<tr data-workitem="{_e(item.sop_instance_uid)}">'
                f"<td>{_e(item.state)}</td>"
                f"<td>{_e(str(ds.get('ScheduledProcedureStepPriority', '') or ''))}</td>"
                f'<td class=clip>{_e(str(ds.get("ProcedureStepLabel", "") or ""))}</td>'
                f'<td class=clip>{_e(str(ds.get("WorklistLabel", "") or ""))}</td>'
                f"<td>{_e(str(ds.get('ScheduledProcedureStepStartDateTime', '') or ''))}</td>"
                f'<td class=clip title="{name}">{name}</td>'
                f"<td class=clip>{_e(str(ds.get('PatientID', '') or ''))}</td>"
                f"<td>{_e(str(ds.get('InputReadinessState', '') or ''))}</td>"
                f"<td>{_e(item.updated_at.strftime('%Y-%m-%d %H:%M:%S'))}</td>"
                f'<td><a href="/dicomweb/workitems/{_e(item.sop_instance_uid)}">'
                f"<code>{_e(item.sop_instance_uid)}</code></a></td></tr>")
        table = ("<table id=workitems><thead><tr><th>State</th><th>Priority</th><th>Label</th>"
                 "<th>Worklist</th><th>Scheduled</th><th>Patient</th><th>ID</th>"
                 "<th>Input</th><th>Changed (UTC)</th><th>SOP Instance UID</th></tr></thead>"
                 f"<tbody>{''.join(trs)}</tbody></table>")
    pages = []
    query = {"state": state} if state else {}
    if page > 1:
        pages.append(f'<a href="/archive/workitems?{urlencode({**query, "page": page - 1})}">'
                     "Newer</a>")
    if more:
        pages.append(f'<a href="/archive/workitems?{urlencode({**query, "page": page + 1})}">'
                     "Older</a>")
    nav = f'<p class="pages">{" · ".join(pages)}</p>' if pages else ""
    return (f'<section id="worklist"><h2>Workitems (Unified Procedure Steps)</h2>'
            f"<p>{tabs}</p>{table}{nav}</section>")


async def workitems_page(request: Request) -> Response:
    """``GET /archive/workitems``: the UPS worklist, newest change first, a page at a time."""
    archive: Archive = request.app.state.archive
    params = request.query_params
    state = (params.get("state") or "").strip().upper()
    page_text = params.get("page") or "1"
    if ((state and state not in STATES) or not (page_text.isascii() and page_text.isdigit())
            or int(page_text) < 1):
        resp = _page("Archivist: workitems", "<h1>Bad request</h1><p>state must be one of "
                     f"{_e(', '.join(STATES))}, and page a page number from 1</p>",
                     archive.settings)
        resp.status_code = HTTP_400_BAD_REQUEST
        return resp
    page = min(int(page_text), 100_000)
    items = Workitems(archive.index)
    found = await run_in_threadpool(items.recent, state=state or None, limit=PAGE_SIZE + 1,
                                    offset=(page - 1) * PAGE_SIZE)
    body = _workitems_html(found[:PAGE_SIZE], state, page, len(found) > PAGE_SIZE)
    return _page("Archivist: workitems", body, archive.settings)


def _not_found(settings: Settings, message: str) -> HTMLResponse:
    resp = _page("Archivist: not found", f"<h1>Not found</h1><p>{_e(message)}</p>", settings)
    resp.status_code = HTTP_404_NOT_FOUND
    return resp


async def static_file(request: Request) -> Response:
    """``GET /archive/static/{name}`` from the fixed table :data:`_STATIC`."""
    entry = _STATIC.get(request.path_params["name"])
    if entry is None:
        return Response("not found\n", status_code=HTTP_404_NOT_FOUND, media_type="text/plain")
    resource, media_type = entry
    data = resources.files("archivist.web").joinpath("archive_static", resource).read_bytes()
    return Response(data, media_type=media_type, headers=_HEADERS)


async def redirect_home(request: Request) -> Response:
    return RedirectResponse("/archive/", status_code=308)


def routes() -> list[BaseRoute]:
    return [
        Route("/archive", redirect_home, methods=["GET"]),
        Route("/archive/", archive_home, methods=["GET"]),
        Route("/archive/studies/{study}", study_page, methods=["GET"]),
        Route("/archive/workitems", workitems_page, methods=["GET"]),
        Route("/archive/static/{name}", static_file, methods=["GET"]),
    ]
