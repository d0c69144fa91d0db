"""A self-contained HTML report of a validation run, for sharing (no scripts, no external files)."""

from __future__ import annotations

import datetime as _dt
from html import escape

from archivist.validate.findings import Finding
from archivist.validate.validator import BatchResult

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222}
h1{font-size:1.4em}h2{font-size:1.1em;margin-top:1.6em;word-break:break-all}
table{border-collapse:collapse;width:100%;font-size:.9em}
th,td{border:1px solid #ccc;padding:.3em .5em;text-align:left;vertical-align:top}
th{background:#f3f3f3}code{font-size:.95em;word-break:break-all}
.error{color:#b00020;font-weight:bold}.warning{color:#a15c00}.info{color:#555}
.ok{color:#1b7f3b;font-weight:bold}.summary td{border:none;padding:.1em 1em .1em 0}
"""


def _rows(findings: list[Finding]) -> str:
    out = []
    for f in findings:
        out.append(
            "<tr>"
            f'<td class="{f.severity.value}">{escape(f.severity.value)}</td>'
            f"<td><code>{escape(f.rule_id)}</code></td>"
            f"<td><code>{escape(f.path)}</code></td>"
            f"<td>{escape(f.module)}</td>"
            f"<td>{escape(f.message)}</td>"
            f"<td>{escape(f.reference)}</td>"
            "</tr>"
        )
    return "\n".join(out)


_HEAD = (
    "<tr><th>Severity</th><th>Rule</th><th>Path</th><th>Module</th><th>Message</th>"
    "<th>Reference</th></tr>"
)


def render_html(result: BatchResult, title: str = "Archivist validation report") -> str:
    """Render a :class:`BatchResult` as one HTML page."""
    counts = result.counts()
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
        '<table class="summary">',
        f"<tr><td>Generated</td><td>{_dt.datetime.now(_dt.UTC).isoformat(timespec='seconds')}</td></tr>",
        f"<tr><td>Files</td><td>{len(result.reports)}</td></tr>",
        f"<tr><td>Non-DICOM files skipped</td><td>{len(result.skipped)}</td></tr>",
        f"<tr><td>Files with errors</td><td>{sum(1 for r in result.reports if not r.ok)}</td></tr>",
        f'<tr><td>Errors</td><td class="error">{counts["error"]}</td></tr>',
        f'<tr><td>Warnings</td><td class="warning">{counts["warning"]}</td></tr>',
        f"<tr><td>Infos</td><td>{counts['info']}</td></tr>",
        "</table>",
    ]
    for report in result.reports:
        status = '<span class="ok">OK</span>' if report.ok else '<span class="error">ERRORS</span>'
        parts.append(f"<h2>{escape(report.path)} &mdash; {status}</h2>")
        parts.append(
            f"<p>IOD: {escape(report.iod or 'unknown')}; SOP Class "
            f"<code>{escape(report.sop_class_uid)}</code>; Transfer Syntax "
            f"<code>{escape(report.transfer_syntax_uid)}</code></p>"
        )
        if report.findings:
            parts.append(f"<table>{_HEAD}\n{_rows(report.findings)}</table>")
        else:
            parts.append("<p>No findings.</p>")
    if result.consistency:
        parts.append("<h2>Consistency across files</h2>")
        parts.append(f"<table>{_HEAD}\n{_rows(result.consistency)}</table>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
