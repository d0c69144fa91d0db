"""The OHIF viewer, served at the origin root ``/``.

The OHIF build (npm ``@ohif/app``, fetched by ``tools/fetch_ohif.py`` into ``settings.viewer_dir``)
hard-codes ``/`` as its public path: chunks, workers, wasm and fonts are requested from the root, so
it cannot live under a prefix. It therefore takes ``/`` and every path no other route claimed, and
the archive's own routes keep their prefixes (``/dicomweb``, ``/wado``, ``/api``, ``/archive``). This
module must be the last of ``web.app._ROUTE_MODULES``.

Routes::

    GET /app-config.js   window.config generated from the settings (same-origin DICOMweb roots)
                         and a guard that turns a viewer crash's black page into a message
    GET /{path}          a file of the build, or index.html for the viewer's own client-side routes
                         (only to requests that accept HTML; others get a JSON 404)

Headers:

- Every response of the viewer carries ``Cross-Origin-Opener-Policy: same-origin`` and
  ``Cross-Origin-Embedder-Policy: require-corp`` (and its files
  ``Cross-Origin-Resource-Policy: same-origin``) so the page is cross-origin isolated and
  ``SharedArrayBuffer`` is available to the volume/MPR code where the browser allows it (a secure
  context: ``localhost``/``127.0.0.1`` or HTTPS). Everything the viewer loads is same-origin, so
  the isolation costs nothing here.
- Files whose name carries a content hash (``app.bundle.0f6159c501addfe9.js``,
  ``34b1e6b1deb5828e.wasm``) are immutable: ``Cache-Control: public, max-age=31536000, immutable``.
  Everything else (``index.html``, ``app-config.js``, un-hashed files) is ``no-cache`` and
  revalidated with its ETag (304 on ``If-None-Match``).
- Files that the fetch tool stored pre-compressed (``name.gz`` beside ``name``) are sent gzip'd
  to clients that accept it.

Request paths are never turned into file paths: the build's files are listed once (and again
when the folder changes) into a table keyed by URL path, and a request is a lookup in that table.
Without a build, ``/`` answers a plain page that says how to get one; the rest of the server works.
"""

from __future__ import annotations

import hashlib
import html
import json
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.status import HTTP_304_NOT_MODIFIED, HTTP_404_NOT_FOUND

from archivist.config import OHIF_VERSION, Settings
from archivist.web.dicomweb.common import accepts_gzip, parse_accept

__all__ = ["ViewerBundle", "app_config_js", "routes"]

#: Path prefixes owned by the server's APIs: an unknown path under them is a 404, never the viewer.
API_PREFIXES = ("/dicomweb", "/wado", "/api", "/archive", "/healthz")

#: A first path segment that is a misspelt DICOMweb root (Orthanc's ``/dicom-web``, Google's
#: ``/dicomWeb``, ``/DICOMweb``): never a viewer route.
_MISSPELT_ROOT = re.compile(r"^/dicom[-_]?web(?:[-_]?rs)?(?:/|$)", re.IGNORECASE)

#: A DICOMweb resource asked without the root (``/studies?PatientID=...``).
_ROOTLESS_RESOURCE = re.compile(r"^/(?:studies|series|instances|workitems)(?:/|$)",
                                re.IGNORECASE)

#: Media ranges under which the single-page-app fallback (an HTML page) is acceptable.
_HTML_RANGES = ("text/html", "application/xhtml+xml", "text/*", "*/*")

#: Files in the build that are deployment recipes for other servers, or replaced by ours.
_NOT_SERVED = {"app-config.js", "_headers", "_redirects", "serve.json"}

#: A content hash of 16+ hex digits as a name part: ``x.<hash>.js`` or ``<hash>.wasm``.
_HASHED = re.compile(r"(?:^|[./_-])[0-9a-f]{16,}\.[A-Za-z0-9]+$")

ISOLATION_HEADERS = {
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Embedder-Policy": "require-corp",
    "Cross-Origin-Resource-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
}
IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"

_MEDIA_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".json": "application/json",
    ".wasm": "application/wasm",
    ".svg": "image/svg+xml",
    ".woff2": "font/woff2",
    ".woff": "font/woff",
    ".ttf": "font/ttf",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".xml": "application/xml",
    ".map": "application/json",
    ".txt": "text/plain; charset=utf-8",
}


@dataclass(frozen=True)
class BundleFile:
    path: Path
    size: int
    mtime: float
    gzip_path: Path | None

    @property
    def etag(self) -> str:
        tag = hashlib.sha1(f"{self.path.name}-{self.size}-{self.mtime}".encode()).hexdigest()
        return f'"{tag[:20]}"'


@dataclass(frozen=True)
class ViewerBundle:
    """The files of one OHIF build, keyed by the URL path that serves them (``/index.html``)."""

    directory: Path
    version: str | None
    files: dict[str, BundleFile]
    stamp: float

    @classmethod
    def load(cls, directory: Path) -> ViewerBundle | None:
        """List `directory`; None when it holds no ``index.html``."""
        index = directory / "index.html"
        try:
            stamp = index.stat().st_mtime
        except OSError:
            return None
        version = None
        try:
            marker = json.loads((directory / ".archivist-ohif.json").read_text())
            version = str(marker.get("version")) if marker.get("version") else None
        except (OSError, ValueError):
            pass
        files: dict[str, BundleFile] = {}
        for root, dirs, names in os.walk(directory, followlinks=False):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            base = Path(root)
            for name in names:
                if name.startswith(".") or name.endswith(".gz"):
                    continue
                path = base / name
                rel = path.relative_to(directory).as_posix()
                if rel in _NOT_SERVED or path.is_symlink():
                    continue
                st = path.stat()
                gz = path.with_name(name + ".gz")
                try:
                    gz_ok = gz.stat().st_mtime >= st.st_mtime
                except OSError:
                    gz_ok = False
                files["/" + rel] = BundleFile(path, st.st_size, st.st_mtime,
                                              gz if gz_ok else None)
        return cls(directory, version, files, stamp)


_lock = threading.Lock()


def _bundle(request: Request) -> ViewerBundle | None:
    """The app's bundle listing, re-read when the folder appears or is replaced (a fetch)."""
    settings: Settings = request.app.state.settings
    directory = Path(settings.viewer_dir).expanduser()
    try:
        stamp: float | None = (directory / "index.html").stat().st_mtime
    except OSError:
        stamp = None
    current: ViewerBundle | None = getattr(request.app.state, "viewer_bundle", None)
    if current is not None and current.directory == directory and current.stamp == stamp:
        return current
    if stamp is None:
        return None
    with _lock:
        bundle = ViewerBundle.load(directory)
        request.app.state.viewer_bundle = bundle
    return bundle


def app_config_js(settings: Settings) -> str:
    """The ``window.config`` of OHIF for this archive.

    The data source is our own DICOMweb service on the page's origin (QIDO-RS and WADO-RS under
    ``/dicomweb``, WADO-URI at ``/wado``), so no CORS is involved. Thumbnails come from the
    WADO-RS ``/thumbnail`` resource (PS3.18 10.4.1.1.4); uploads in the study list go through
    STOW-RS. It ends with :data:`STOPPED_GUARD`.
    """
    friendly = json.dumps(f"Archivist {settings.aet}")
    return f"""/* Generated by archivist.web.viewer from the server's settings; not the build's file. */
window.config = {{
  name: 'archivist',
  routerBasename: '/',
  extensions: [],
  modes: [],
  customizationService: {{}},
  showStudyList: true,
  maxNumberOfWebWorkers: 3,
  showWarningMessageForCrossOrigin: true,
  showCPUFallbackMessage: true,
  showLoadingIndicator: true,
  strictZSpacingForVolumeViewport: true,
  maxNumRequests: {{ interaction: 100, thumbnail: 5, prefetch: 25 }},
  showErrorDetails: 'always',
  defaultDataSourceName: 'archivist',
  dataSources: [
    {{
      namespace: '@ohif/extension-default.dataSourcesModule.dicomweb',
      sourceName: 'archivist',
      configuration: {{
        friendlyName: {friendly},
        name: 'archivist',
        wadoUriRoot: window.location.origin + '/wado',
        qidoRoot: window.location.origin + '/dicomweb',
        wadoRoot: window.location.origin + '/dicomweb',
        qidoSupportsIncludeField: true,
        imageRendering: 'wadors',
        thumbnailRendering: 'thumbnail',
        thumbnailRequestStrategy: 'fetch',
        enableStudyLazyLoad: true,
        supportsFuzzyMatching: true,
        supportsWildcard: true,
        staticWado: false,
        dicomUploadEnabled: true,
        singlepart: 'bulkdata,video',
        bulkDataURI: {{ enabled: true }},
        omitQuotationForMultipartRequest: true,
      }},
    }},
  ],
}};
""" + STOPPED_GUARD


#: Appended to ``app-config.js``: when the viewer stops on an error in its own code, OHIF's
#: error boundary leaves only an invisible title in ``#root`` and the page stays black (OHIF
#: 3.13.2 does this for an SR whose content items have no Concept Name, which PS3.3 C.17.3
#: allows). The guard notices that state (``#root`` holds a title but shows no text) and puts
#: up a message with the error and links back to the study list and to the study's page on the
#: archive page. It only reads the DOM; it never changes what the viewer does.
STOPPED_GUARD = """
(function () {
  'use strict';
  var ID = 'archivist-viewer-stopped';
  function stopped() {
    var root = document.getElementById('root');
    if (!root || document.getElementById(ID)) return null;
    var title = root.querySelector(':scope > h2');
    if (!title || (root.innerText || '').trim() !== '') return null;
    return (title.textContent || '').trim() || 'unknown error';
  }
  function show(error) {
    var box = document.createElement('div');
    box.id = ID;
    box.setAttribute('role', 'alert');
    box.style.cssText = 'position:fixed;inset:0;z-index:2147483647;display:flex;' +
      'align-items:center;justify-content:center;background:#050b18;color:#dfe6f1;' +
      'font:16px/1.5 system-ui,sans-serif';
    var panel = document.createElement('div');
    panel.style.cssText = 'max-width:44em;padding:1.5em 2em;border:1px solid #3a4a66;' +
      'border-radius:10px;background:#0f1b2d';
    var h = document.createElement('h1');
    h.style.cssText = 'font-size:1.3em;margin:0 0 .6em';
    h.textContent = 'The viewer cannot display this study';
    var p = document.createElement('p');
    p.textContent = 'The OHIF viewer stopped with an error in its own code: ';
    var code = document.createElement('code');
    code.style.cssText = 'color:#ffb4a8';
    code.textContent = error;
    p.appendChild(code);
    var p2 = document.createElement('p');
    p2.textContent = 'The objects are stored unchanged; the archive page lists them with their ' +
      'validation findings, and DICOMweb serves them.';
    var links = document.createElement('p');
    function link(href, text) {
      var a = document.createElement('a');
      a.href = href;
      a.textContent = text;
      a.style.cssText = 'color:#7fb0ff;margin-right:1.5em';
      links.appendChild(a);
    }
    link('/', 'Back to the study list');
    var uids = new URLSearchParams(location.search).get('StudyInstanceUIDs') || '';
    if (/^[0-9.]+$/.test(uids)) link('/archive/studies/' + uids, 'This study on the archive page');
    else link('/archive/', 'The archive page');
    panel.append(h, p, p2, links);
    box.appendChild(panel);
    document.body.appendChild(box);
  }
  var timer = setInterval(function () {
    var error = stopped();
    if (error !== null) { clearInterval(timer); show(error); }
  }, 1000);
})();
"""


def _headers(cache: str) -> dict[str, str]:
    return {**ISOLATION_HEADERS, "Cache-Control": cache}


def serve_app_config(request: Request) -> Response:
    """``GET /app-config.js``."""
    body = app_config_js(request.app.state.settings)
    return Response(body, media_type=_MEDIA_TYPES[".js"], headers=_headers(REVALIDATE))


def _send(request: Request, url_path: str, item: BundleFile) -> Response:
    cache = IMMUTABLE if _HASHED.search(url_path) else REVALIDATE
    headers = _headers(cache)
    headers["Vary"] = "Accept-Encoding"
    gzipped = item.gzip_path is not None and accepts_gzip(request.headers.get("accept-encoding"))
    etag = item.etag[:-1] + '-gz"' if gzipped else item.etag
    headers["ETag"] = etag
    inm = request.headers.get("if-none-match", "")
    if inm.strip() == "*" or etag in (t.strip().removeprefix("W/") for t in inm.split(",")):
        return Response(status_code=HTTP_304_NOT_MODIFIED, headers=headers)
    media_type = _MEDIA_TYPES.get(Path(url_path).suffix.lower(), "application/octet-stream")
    if gzipped:
        assert item.gzip_path is not None
        headers["Content-Encoding"] = "gzip"
        return FileResponse(item.gzip_path, media_type=media_type, headers=headers)
    return FileResponse(item.path, media_type=media_type, headers=headers)


def _is_api_path(path: str) -> bool:
    return any(path == p or path.startswith(p + "/") for p in API_PREFIXES)


def _not_found(path: str) -> JSONResponse:
    """The JSON 404 of a path that is neither an API resource nor a file of the build."""
    detail = f"no resource at {path}"
    if _MISSPELT_ROOT.match(path) or _ROOTLESS_RESOURCE.match(path):
        detail += ("; this server's DICOMweb services (QIDO-RS, WADO-RS, STOW-RS) are under "
                   "/dicomweb, e.g. /dicomweb/studies")
    return JSONResponse({"status": HTTP_404_NOT_FOUND, "error": "not found", "detail": detail},
                        status_code=HTTP_404_NOT_FOUND, headers={"Vary": "Accept"})


def _accepts_html(request: Request) -> bool:
    """Whether the request accepts an HTML page: a browser's navigation names ``text/html``;
    an API client naming only ``application/dicom+json`` (say) does not. No Accept header
    accepts anything (RFC 9110 12.5.1)."""
    return any(r.type in _HTML_RANGES for r in parse_accept(request.headers.get("accept")))


def serve_viewer(request: Request) -> Response:
    """``GET /{path}``: a file of the build, or the viewer's index.html for its own routes.

    The index.html fallback is for the viewer's client-side routes (``/viewer?...``), which a
    browser navigates to: a request that does not accept HTML (a DICOMweb client with a wrong
    base URL) gets a JSON 404 instead of a misleading 200 page, and so does a misspelt DICOMweb
    root such as Orthanc's ``/dicom-web/...``, which is never a viewer route; that answer names
    ``/dicomweb``."""
    path = request.url.path
    if _is_api_path(path):
        return JSONResponse({"status": HTTP_404_NOT_FOUND, "error": "not found",
                             "detail": f"no resource at {path}"},
                            status_code=HTTP_404_NOT_FOUND)
    if _MISSPELT_ROOT.match(path):
        return _not_found(path)
    bundle = _bundle(request)
    root = path in ("/", "/index.html")
    if bundle is None and not root and not _accepts_html(request):
        return _not_found(path)
    if bundle is None:
        status = 200 if root else HTTP_404_NOT_FOUND
        return HTMLResponse(_missing_page(request.app.state.settings), status_code=status,
                            headers={"Cache-Control": "no-store",
                                     "Content-Security-Policy": _MISSING_PAGE_CSP})
    if path == "/":
        path = "/index.html"
    item = bundle.files.get(path)
    if item is not None:
        return _send(request, path, item)
    last = path.rsplit("/", 1)[-1]
    if "." in last:  # a missing asset: never answer a script or image request with HTML
        return Response(f"not found: {path}\n", status_code=HTTP_404_NOT_FOUND,
                        media_type="text/plain", headers=_headers(REVALIDATE))
    if not _accepts_html(request):
        return _not_found(path)
    response = _send(request, "/index.html", bundle.files["/index.html"])
    response.headers["Vary"] = "Accept-Encoding, Accept"
    return response


#: The page that says how to get the viewer runs no script and loads nothing.
_MISSING_PAGE_CSP = ("default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
                     "frame-ancestors 'none'; form-action 'none'; base-uri 'none'")


def _missing_page(settings: Settings) -> str:
    where = html.escape(str(settings.viewer_dir))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Archivist: viewer not installed</title>
<style>body{{font:16px/1.5 system-ui,sans-serif;max-width:46em;margin:3em auto;padding:0 1em}}
code,pre{{background:#f2f2f2;padding:.1em .3em}}pre{{padding:.6em}}</style></head>
<body>
<h1>Archivist is running; the viewer is not installed</h1>
<p>The web viewer (OHIF {OHIF_VERSION}, npm package <code>@ohif/app</code>) is served from
<code>{where}</code>, which holds no build yet. It is fetched once from the npm registry,
checked against the registry's SHA-512 and kept there (about 50 MB to download, 200 MB unpacked):</p>
<pre>make serve                          # fetches it, then starts the archive
uv run python tools/fetch_ohif.py   # or fetch it only (the running server picks it up)</pre>
<p>On a machine without access to the registry, copy the <code>package/dist/</code> folder of
<code>@ohif/app@{OHIF_VERSION}</code> there, or point the <code>viewer_dir</code> setting
(<code>ARCHIVIST_VIEWER_DIR</code>) at an OHIF build.</p>
<p>Meanwhile everything else works: the <a href="/archive/">archive page</a> (counts, upload,
recent studies), DICOMweb at <code>/dicomweb</code>, and DIMSE on port {settings.dicom_port}
(AE title <code>{html.escape(settings.aet)}</code>).</p>
</body></html>
"""


def routes() -> list[BaseRoute]:
    return [
        Route("/app-config.js", serve_app_config, methods=["GET"]),
        Route("/{path:path}", serve_viewer, methods=["GET"]),
    ]
