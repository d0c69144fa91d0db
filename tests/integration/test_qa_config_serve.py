"""`archivist serve` with bad settings stops at once with one line and exit status 2; an
allow-list admits IPv4 callers when the server listens on "::" (found by QA, config)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from archivist.testing.server import free_port
from conftest import dcmtk_tool

AET = "ARCHIVIST"


def _serve(tmp_path: Path, *args: str, env: dict[str, str] | None = None,
           ) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("ARCHIVIST_")}
    environ.update(env or {})
    cmd = [sys.executable, "-m", "archivist.cli.main", "serve", "--data",
           str(tmp_path / "data"), "--dicom-port", str(free_port()), "--http-port",
           str(free_port()), *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=environ, timeout=60,
                          check=False)


class TestBadSettingsStopAtOnce:
    @pytest.mark.parametrize(("content", "words"), [
        ('aet = "\xc4RCHIV"\n'.encode("latin-1"), "UTF-8"),
        (b"max_associations = 0\n", "max_associations"),
        (b"artim_timeout = -1\n", "artim_timeout"),
        (b'log_level = "LOUD"\n', "log_level"),
        (b"dicom_port = 1.5\n", "dicom_port"),
        (b'allow = ["MOD@10.0.0.*"]\n', "wildcard"),
    ])
    def test_config_file(self, tmp_path: Path, content: bytes, words: str) -> None:
        cfg = tmp_path / "archivist.toml"
        cfg.write_bytes(content)
        for how in ("flag", "env"):
            done = (_serve(tmp_path, "--config", str(cfg)) if how == "flag"
                    else _serve(tmp_path, env={"ARCHIVIST_CONFIG": str(cfg)}))
            assert done.returncode == 2, (how, done.stderr)
            assert "Traceback" not in done.stderr
            lines = done.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], lines

    def test_missing_config_file_one_line(self, tmp_path: Path) -> None:
        done = _serve(tmp_path, "--config", str(tmp_path / "absent.toml"))
        assert done.returncode == 2
        absent = tmp_path / "absent.toml"
        assert done.stderr.strip().splitlines() == [
            f"error: cannot read config file {absent}: No such file or directory"]

    def test_duplicate_peer(self, tmp_path: Path) -> None:
        done = _serve(tmp_path, "--peer", "DEST=127.0.0.1:104", "--peer", "DEST=10.0.0.1:104")
        assert done.returncode == 2
        assert done.stderr.strip() == "error: peer DEST is defined more than once"


def test_allow_list_on_dual_stack_host(make_server, dcmtk) -> None:  # type: ignore[no-untyped-def]
    # Listening on "::", an IPv4 caller's address is ::ffff:127.0.0.1: the rule for
    # 127.0.0.1 refused it (A-ASSOCIATE-RJ, calling AE title not recognized).
    # Two workers: with one, uvicorn listens for HTTP on IPv6 only (left, in the report).
    srv = make_server("--host", "::", "--allow", "MOD@127.0.0.1", "--workers", "2")
    env = {**os.environ, "TCP_NODELAY": "1"}

    def echo(calling: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([dcmtk_tool("echoscu"), "-aet", calling, "-aec", AET,
                               "127.0.0.1", str(srv.dicom_port)], capture_output=True,
                              text=True, env=env, timeout=30, check=False)

    allowed = echo("MOD")
    assert allowed.returncode == 0 and "Rejected" not in allowed.stdout + allowed.stderr
    refused = echo("OTHER")
    assert "Calling AE Title Not Recognized" in refused.stdout + refused.stderr
