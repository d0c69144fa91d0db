"""The viewer routes on a real ``archivist serve``: a small stand-in build, and no build at all.

The real OHIF build is exercised by tests/browser; here a tiny folder with the same shape (an
index.html, a content-hashed bundle with its pre-compressed twin, an un-hashed file, the fetch
tool's marker) checks routing, headers, caching and the SPA fallback without 200 MB on disk.
"""

from __future__ import annotations

import gzip
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from archivist.config import OHIF_VERSION, Settings
from archivist.testing.server import ServerProcess
from archivist.web.viewer import ViewerBundle, app_config_js

BUNDLE_JS = b"console.log('bundle');\n" * 200
INDEX = b"<!doctype html><html><head><script src='/app-config.js'></script></head><body>ohif</body></html>"


def _request(url: str, headers: dict[str, str] | None = None,
             method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, {k.lower(): v for k, v in err.headers.items()}, err.read()


def make_bundle(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "index.html").write_bytes(INDEX)
    (root / "app.bundle.0123456789abcdef.js").write_bytes(BUNDLE_JS)
    with gzip.open(root / "app.bundle.0123456789abcdef.js.gz", "wb") as out:
        out.write(BUNDLE_JS)
    (root / "1602.css").write_text("body{}")
    (root / "app-config.js").write_text("window.config = {dataSources: ['public demo']};")
    (root / "_redirects").write_text("/* /index.html 200")
    (root / "assets").mkdir()
    (root / "assets" / "logo.svg").write_text("<svg/>")
    (root / ".archivist-ohif.json").write_text(json.dumps({"version": OHIF_VERSION}))
    return root


@pytest.fixture(scope="module")
def viewer_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp("viewer")
    bundle = make_bundle(tmp / "ohif")
    srv = ServerProcess(tmp / "data", env={"ARCHIVIST_VIEWER_DIR": str(bundle)})
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def bare_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp("noviewer")
    srv = ServerProcess(tmp / "data", env={"ARCHIVIST_VIEWER_DIR": str(tmp / "absent")})
    srv.start()
    yield srv
    srv.stop()


class TestViewerRoutes:
    def test_root_is_index_with_isolation_headers(self, viewer_server: ServerProcess) -> None:
        status, headers, body = _request(viewer_server.url + "/")
        assert status == 200
        assert body == INDEX
        assert headers["cross-origin-opener-policy"] == "same-origin"
        assert headers["cross-origin-embedder-policy"] == "require-corp"
        assert headers["cache-control"] == "no-cache"
        assert headers["content-type"].startswith("text/html")

    @pytest.mark.parametrize("path", ["/viewer", "/viewer?StudyInstanceUIDs=1.2.3",
                                      "/segmentation/x", "/localbasic"])
    def test_client_side_routes_get_index(self, viewer_server: ServerProcess, path: str) -> None:
        status, headers, body = _request(viewer_server.url + path)
        assert (status, body) == (200, INDEX)
        assert headers["cross-origin-embedder-policy"] == "require-corp"

    def test_hashed_bundle_is_immutable_and_gzipped(self, viewer_server: ServerProcess) -> None:
        url = viewer_server.url + "/app.bundle.0123456789abcdef.js"
        status, headers, body = _request(url, {"Accept-Encoding": "gzip"})
        assert status == 200
        assert headers["content-encoding"] == "gzip"
        assert gzip.decompress(body) == BUNDLE_JS
        assert "immutable" in headers["cache-control"]
        assert headers["content-type"].startswith("text/javascript")
        status, headers2, body = _request(url)
        assert status == 200 and body == BUNDLE_JS and "content-encoding" not in headers2
        assert headers2["etag"] != headers["etag"]

    def test_etag_revalidation(self, viewer_server: ServerProcess) -> None:
        url = viewer_server.url + "/1602.css"
        status, headers, _ = _request(url)
        assert status == 200 and headers["cache-control"] == "no-cache"
        status, _, body = _request(url, {"If-None-Match": headers["etag"]})
        assert (status, body) == (304, b"")
        status, _, _ = _request(url, {"If-None-Match": '"something-else"'})
        assert status == 200

    def test_nested_file(self, viewer_server: ServerProcess) -> None:
        status, headers, body = _request(viewer_server.url + "/assets/logo.svg")
        assert (status, body) == (200, b"<svg/>")
        assert headers["content-type"] == "image/svg+xml"

    def test_generated_config_replaces_the_builds(self, viewer_server: ServerProcess) -> None:
        status, headers, body = _request(viewer_server.url + "/app-config.js")
        text = body.decode()
        assert status == 200 and headers["cache-control"] == "no-cache"
        assert "public demo" not in text
        assert "window.location.origin + '/dicomweb'" in text
        assert "thumbnailRendering: 'thumbnail'" in text
        assert '"Archivist ARCHIVIST"' in text

    @pytest.mark.parametrize("path", ["/missing.js", "/assets/nothing.png", "/serve.json",
                                      "/.archivist-ohif.json", "/app.bundle.0123456789abcdef.js.gz",
                                      "/assets/../../data/index.sqlite"])
    def test_unknown_files_are_404_not_index(self, viewer_server: ServerProcess,
                                             path: str) -> None:
        status, _, body = _request(viewer_server.url + path)
        assert status == 404
        assert body != INDEX

    def test_traversal_gets_no_file(self, viewer_server: ServerProcess) -> None:
        for path in ("/../../../../etc/passwd", "/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
                     "/assets/..%2f..%2f..%2fetc%2fpasswd"):
            status, _, body = _request(viewer_server.url + path)
            assert b"root:" not in body, path
            assert status == 404 or body == INDEX, path

    def test_deployment_recipes_are_not_served(self, viewer_server: ServerProcess) -> None:
        _, _, body = _request(viewer_server.url + "/_redirects")
        assert b"/index.html 200" not in body  # a client-side route: index.html, not the file

    @pytest.mark.parametrize("path", ["/dicomweb/no-such-resource", "/api/nothing-here",
                                      "/wado/x", "/archive/nope"])
    def test_api_prefixes_never_fall_back_to_the_viewer(self, viewer_server: ServerProcess,
                                                         path: str) -> None:
        status, _, body = _request(viewer_server.url + path)
        assert status == 404
        assert body != INDEX

    def test_other_routes_still_win(self, viewer_server: ServerProcess) -> None:
        status, _, body = _request(viewer_server.url + "/healthz")
        assert status == 200 and json.loads(body)["status"] == "ok"
        status, _, body = _request(viewer_server.url + "/archive/")
        assert status == 200 and b"Recent studies" in body

    def test_head(self, viewer_server: ServerProcess) -> None:
        status, headers, body = _request(viewer_server.url + "/", method="HEAD")
        assert status == 200 and body == b"" and int(headers["content-length"]) == len(INDEX)


class TestWithoutBundle:
    def test_root_explains_how_to_get_the_viewer(self, bare_server: ServerProcess) -> None:
        status, headers, body = _request(bare_server.url + "/")
        text = body.decode()
        assert status == 200
        assert "tools/fetch_ohif.py" in text and OHIF_VERSION in text
        assert "absent" in text  # names the folder it looked in
        assert headers["cache-control"] == "no-store"

    def test_other_paths_are_404_and_server_works(self, bare_server: ServerProcess) -> None:
        status, _, _ = _request(bare_server.url + "/viewer")
        assert status == 404
        status, _, body = _request(bare_server.url + "/archive/")
        assert status == 200 and b"Upload" in body


class TestBundleListing:
    def test_load(self, tmp_path: Path) -> None:
        bundle = ViewerBundle.load(make_bundle(tmp_path / "b"))
        assert bundle is not None
        assert bundle.version == OHIF_VERSION
        assert set(bundle.files) == {"/index.html", "/app.bundle.0123456789abcdef.js",
                                     "/1602.css", "/assets/logo.svg"}
        assert bundle.files["/app.bundle.0123456789abcdef.js"].gzip_path is not None
        assert bundle.files["/1602.css"].gzip_path is None

    def test_absent(self, tmp_path: Path) -> None:
        assert ViewerBundle.load(tmp_path / "nothing") is None

    def test_symlinks_are_not_served(self, tmp_path: Path) -> None:
        root = make_bundle(tmp_path / "b")
        secret = tmp_path / "secret.txt"
        secret.write_text("secret")
        (root / "leak.txt").symlink_to(secret)
        bundle = ViewerBundle.load(root)
        assert bundle is not None and "/leak.txt" not in bundle.files

    def test_config_names_the_node(self) -> None:
        assert '"Archivist PACS"' in app_config_js(Settings(aet="PACS"))
