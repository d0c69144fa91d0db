from pathlib import Path

import pytest

from archivist.config import Peer, load_settings
from archivist.errors import ConfigError


class TestLoadSettings:
    def test_defaults(self) -> None:
        s = load_settings(env={})
        assert s.aet == "ARCHIVIST"
        assert (s.dicom_port, s.http_port, s.host) == (11112, 8080, "127.0.0.1")
        assert s.data_dir == Path("./archivist-data")

    def test_precedence_file_env_flags(self, tmp_path: Path) -> None:
        cfg = tmp_path / "a.toml"
        cfg.write_text('aet = "FILEAET"\ndicom_port = 1000\nhttp_port = 2000\n'
                       '[peers]\nDEST = "127.0.0.1:4242"\n')
        s = load_settings(cfg, env={"ARCHIVIST_DICOM_PORT": "3000"}, overrides={"http_port": 5})
        assert s.aet == "FILEAET"
        assert s.dicom_port == 3000
        assert s.http_port == 5
        assert s.peers == (Peer("DEST", "127.0.0.1", 4242),)

    def test_env_lists(self) -> None:
        s = load_settings(env={"ARCHIVIST_PEERS": "A=h:1,B=k:2", "ARCHIVIST_ALLOW": "X@1.2.3.4"})
        assert [p.aet for p in s.peers] == ["A", "B"]
        assert s.is_allowed("X", "1.2.3.4") and not s.is_allowed("Y", "1.2.3.4")

    @pytest.mark.parametrize("env", [
        {"ARCHIVIST_DICOM_PORT": "70000"},
        {"ARCHIVIST_DICOM_PORT": "abc"},
        {"ARCHIVIST_AET": "WAY_TOO_LONG_AE_TITLE"},
        {"ARCHIVIST_DUPLICATE_POLICY": "sometimes"},
        {"ARCHIVIST_PEERS": "nonsense"},
    ])
    def test_bad_values(self, env: dict[str, str]) -> None:
        with pytest.raises(ConfigError):
            load_settings(env=env)

    def test_unknown_key_in_file(self, tmp_path: Path) -> None:
        cfg = tmp_path / "a.toml"
        cfg.write_text("colour = 'blue'\n")
        with pytest.raises(ConfigError, match="colour"):
            load_settings(cfg, env={})


def test_workers_default_is_one_per_core(monkeypatch: pytest.MonkeyPatch) -> None:
    from archivist.config import Settings

    for cores, expected in ((1, 1), (2, 2), (3, 3), (4, 4), (8, 4), (64, 4)):
        monkeypatch.setattr("os.sched_getaffinity", lambda _pid, n=cores: set(range(n)))
        assert Settings().worker_count == expected
    assert Settings(workers=3).worker_count == 3


def test_event_loop_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio
    import builtins
    import sys

    import uvloop

    from archivist.config import event_loop_kind
    from archivist.dimse.acceptor import new_event_loop

    settings = load_settings(env={})
    assert settings.event_loop == "auto"
    assert event_loop_kind(settings) == "uvloop"  # a dependency, so installed here
    asyncio_only = load_settings(env={"ARCHIVIST_EVENT_LOOP": "asyncio"})
    assert event_loop_kind(asyncio_only) == "asyncio"
    for chosen, kind in ((settings, uvloop.Loop), (asyncio_only, asyncio.BaseEventLoop)):
        loop = new_event_loop(chosen)
        try:
            assert isinstance(loop, kind)
            assert isinstance(loop, uvloop.Loop) == (kind is uvloop.Loop)
        finally:
            loop.close()
    with pytest.raises(ConfigError, match="event_loop"):
        load_settings(env={"ARCHIVIST_EVENT_LOOP": "trio"})

    # Without uvloop: "auto" falls back to asyncio, "uvloop" is a clear error.
    real_import = builtins.__import__

    def no_uvloop(name: str, *args, **kwargs):  # type: ignore[no-untyped-def]
        if name == "uvloop":
            raise ImportError("no uvloop")
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "uvloop")
    monkeypatch.setattr(builtins, "__import__", no_uvloop)
    assert event_loop_kind(settings) == "asyncio"
    with pytest.raises(ConfigError, match="not installed"):
        event_loop_kind(load_settings(env={"ARCHIVIST_EVENT_LOOP": "uvloop"}))
