"""tools/fetch_ohif.py against a local stand-in for the npm registry (real HTTP on loopback)."""

from __future__ import annotations

import base64
import gzip
import hashlib
import importlib.util
import io
import json
import tarfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType

import pytest

TOOL = Path(__file__).resolve().parents[2] / "tools" / "fetch_ohif.py"
VERSION = "9.9.9"
APP_JS = b"console.log('ohif');\n" * 100


def _load_tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fetch_ohif_under_test", TOOL)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


fetch_ohif = _load_tool()


def make_tarball(extra: list[tarfile.TarInfo] | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in (("package/package.json", b"{}"),
                           ("package/dist/index.html", b"<html>ohif</html>"),
                           ("package/dist/app.bundle.0123456789abcdef.js", APP_JS),
                           ("package/dist/assets/logo.svg", b"<svg/>")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for info in extra or []:
            tar.addfile(info, io.BytesIO(b"x" * info.size) if info.isfile() else None)
    return buf.getvalue()


def sri(data: bytes) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()


class Registry:
    """Serves ``/@ohif%2Fapp/<version>`` metadata and the tarball; counts requests."""

    def __init__(self) -> None:
        self.tarball = make_tarball()
        self.integrity = sri(self.tarball)
        self.requests: list[str] = []
        registry = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                registry.requests.append(self.path)
                if self.path == f"/@ohif%2Fapp/{VERSION}":
                    body = json.dumps({"name": "@ohif/app", "version": VERSION, "dist": {
                        "tarball": f"{registry.url}/app.tgz", "integrity": registry.integrity,
                    }}).encode()
                elif self.path == "/app.tgz":
                    body = registry.tarball
                else:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[Registry]:
    reg = Registry()
    monkeypatch.setenv("npm_config_registry", reg.url)
    yield reg
    reg.server.shutdown()


class TestFetch:
    def test_fetches_verifies_and_unpacks_dist_only(self, registry: Registry,
                                                    tmp_path: Path) -> None:
        dest = tmp_path / "ohif" / VERSION
        fetch_ohif.fetch(dest, VERSION)
        assert (dest / "index.html").read_bytes() == b"<html>ohif</html>"
        assert (dest / "assets" / "logo.svg").exists()
        assert not (dest / "package.json").exists()
        assert gzip.decompress((dest / "app.bundle.0123456789abcdef.js.gz").read_bytes()) == APP_JS
        marker = json.loads((dest / ".archivist-ohif.json").read_text())
        assert marker["version"] == VERSION and marker["integrity"] == registry.integrity
        assert fetch_ohif.installed_version(dest) == VERSION
        assert [p.name for p in dest.parent.iterdir()] == [VERSION]  # no temporary left over

    def test_second_run_asks_nothing(self, registry: Registry, tmp_path: Path) -> None:
        dest = tmp_path / "ohif"
        fetch_ohif.fetch(dest, VERSION)
        asked = len(registry.requests)
        fetch_ohif.fetch(dest, VERSION)
        assert len(registry.requests) == asked == 2

    def test_integrity_mismatch_unpacks_nothing(self, registry: Registry,
                                                tmp_path: Path) -> None:
        registry.integrity = sri(b"something else")
        dest = tmp_path / "ohif"
        with pytest.raises(RuntimeError, match="integrity"):
            fetch_ohif.fetch(dest, VERSION)
        assert not dest.exists()
        assert list(tmp_path.iterdir()) == []

    @pytest.mark.parametrize("member", ["traversal", "symlink"])
    def test_hostile_tarball_is_refused(self, registry: Registry, tmp_path: Path,
                                        member: str) -> None:
        if member == "traversal":
            info = tarfile.TarInfo("package/dist/../../../evil.txt")
            info.size = 1
        else:
            info = tarfile.TarInfo("package/dist/link")
            info.type = tarfile.SYMTYPE
            info.linkname = "/etc/passwd"
        registry.tarball = make_tarball([info])
        registry.integrity = sri(registry.tarball)
        dest = tmp_path / "out" / "ohif"
        with pytest.raises(RuntimeError):
            fetch_ohif.fetch(dest, VERSION)
        assert not dest.exists()
        assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "out" / "evil.txt").exists()

    def test_main_exit_status(self, registry: Registry, tmp_path: Path,
                              capsys: pytest.CaptureFixture[str]) -> None:
        assert fetch_ohif.main(["--dest", str(tmp_path / "a"), "--version", VERSION]) == 0
        assert fetch_ohif.main(["--dest", str(tmp_path / "b"), "--version", "0.0.0"]) == 1
        assert "could not fetch @ohif/app@0.0.0" in capsys.readouterr().err
