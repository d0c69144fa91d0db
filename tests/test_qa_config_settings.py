"""Settings that cannot work are refused when they are read, with one line naming the setting;
allow-list rules match the address a caller really has (found by QA, config)."""

from __future__ import annotations

from pathlib import Path

import pytest

from archivist.config import AllowRule, load_settings, parse_allow
from archivist.errors import ConfigError


def _from_toml(tmp_path: Path, text: str):  # type: ignore[no-untyped-def]
    cfg = tmp_path / "archivist.toml"
    cfg.write_text(text)
    return load_settings(cfg, env={})


class TestWrongTypesInTheFile:
    @pytest.mark.parametrize("text", [
        "dicom_port = 1.7",           # was truncated to port 1
        "aet = 123",                  # was the AE title "123"
        'aet = ["A", "B"]',           # was the AE title "['A', 'B']"
        "insecure = 5",               # was True
        "pn_case_insensitive = 0",
        "artim_timeout = true",       # was 1.0 s
        'data_dir = ["x"]',
        "allow = [1, 2]",
        "cors_origins = 5",
        "[peers]\nA = 104",
    ])
    def test_refused_with_the_setting_named(self, tmp_path: Path, text: str) -> None:
        name = text.split()[0].strip("[]")
        with pytest.raises(ConfigError, match="peer" if name == "peers" else name):
            _from_toml(tmp_path, text)

    def test_right_types_still_read(self, tmp_path: Path) -> None:
        s = _from_toml(tmp_path, 'dicom_port = 104\nartim_timeout = 5\nhttp_max_body = 1e6\n'
                                 'insecure = true\ncors_origins = ["http://a.example"]\n'
                                 'allow = "A@10.0.0.1, B@10.0.0.2"\n')
        assert (s.dicom_port, s.artim_timeout, s.http_max_body, s.insecure) == (104, 5.0,
                                                                                1_000_000, True)
        assert s.cors_origins == ("http://a.example",)
        assert [r.aet for r in s.allow] == ["A", "B"]

    def test_not_utf8(self, tmp_path: Path) -> None:
        cfg = tmp_path / "latin1.toml"
        cfg.write_bytes('aet = "ÄRCHIV"\n'.encode("latin-1"))
        with pytest.raises(ConfigError, match="UTF-8"):
            load_settings(cfg, env={})

    def test_alias_and_name_both_given(self, tmp_path: Path) -> None:
        with pytest.raises(ConfigError, match="data_dir"):
            _from_toml(tmp_path, 'data = "/a"\ndata_dir = "/b"\n')
        with pytest.raises(ConfigError, match="ARCHIVIST_DATA"):
            load_settings(env={"ARCHIVIST_DATA": "/a", "ARCHIVIST_DATA_DIR": "/b"})
        same = load_settings(env={"ARCHIVIST_DATA": "/a", "ARCHIVIST_DATA_DIR": "/a"})
        assert same.data_dir == Path("/a")


class TestOutOfRange:
    @pytest.mark.parametrize(("name", "value"), [
        ("MAX_ASSOCIATIONS", "0"),      # every association refused
        ("MAX_ASSOCIATIONS", "-5"),
        ("ARTIM_TIMEOUT", "-1"),        # every connection closed at once
        ("ARTIM_TIMEOUT", "0"),
        ("ARTIM_TIMEOUT", "nan"),
        ("NETWORK_TIMEOUT", "inf"),
        ("DIMSE_TIMEOUT", "0"),
        ("ACSE_TIMEOUT", "-3"),
        ("FIND_MAX_RESULTS", "-1"),
        ("HTTP_MAX_BODY", "-1"),
        ("HTTP_MAX_BODY", "0"),
        ("MAX_PDU", "99999999999"),     # does not fit the 32-bit Maximum Length
        ("LOG_LEVEL", "LOUD"),          # was INFO without a word
        ("HOST", ""),
        ("AET", "AR\tCH"),
        ("AET", "AR\nCH"),
    ])
    def test_refused(self, name: str, value: str) -> None:
        with pytest.raises(ConfigError):
            load_settings(env={f"ARCHIVIST_{name}": value})

    def test_aet_spaces_are_not_significant(self) -> None:
        # The called AE title is compared stripped: "ARCH " would have refused every caller.
        assert load_settings(env={"ARCHIVIST_AET": " ARCH  "}).aet == "ARCH"

    def test_log_level_any_case(self) -> None:
        assert load_settings(env={"ARCHIVIST_LOG_LEVEL": "debug"}).log_level == "debug"


class TestPeers:
    def test_duplicate_aet(self) -> None:
        with pytest.raises(ConfigError, match="more than once"):
            load_settings(env={}, overrides={"peers": ["A=h:1", "A=k:2"]})

    def test_missing_host(self) -> None:
        with pytest.raises(ConfigError, match="host"):
            load_settings(env={"ARCHIVIST_PEERS": "A=:104"})

    def test_ipv6_host_in_brackets(self) -> None:
        (peer,) = load_settings(env={"ARCHIVIST_PEERS": "A=[::1]:104"}).peers
        assert (peer.host, peer.port) == ("::1", 104)


class TestAllowRules:
    def test_ipv4_caller_on_a_dual_stack_socket(self) -> None:
        # Bound to "::", an IPv4 caller's address reads ::ffff:127.0.0.1.
        rule = parse_allow("MOD@127.0.0.1")
        assert rule.matches("MOD", "::ffff:127.0.0.1")
        assert rule.matches("MOD", "127.0.0.1")
        assert not rule.matches("MOD", "::ffff:127.0.0.2")
        assert not rule.matches("OTHER", "127.0.0.1")

    def test_ipv6_spellings(self) -> None:
        rule = parse_allow("MOD@0:0:0:0:0:0:0:1")
        assert rule.matches("MOD", "::1")

    def test_host_name_resolved(self) -> None:
        rule = parse_allow("MOD@localhost")
        assert rule.matches("MOD", "127.0.0.1")

    def test_unresolvable_host(self) -> None:
        with pytest.raises(ConfigError, match="resolve"):
            parse_allow("MOD@no-such-host.invalid")

    @pytest.mark.parametrize("text", ["MOD*@127.0.0.1", "MOD@10.0.0.*", "M?D@*"])
    def test_partial_wildcards_refused(self, text: str) -> None:
        # Only a whole "*" is a wildcard; these were taken literally and matched nobody.
        with pytest.raises(ConfigError, match="wildcard"):
            parse_allow(text)

    def test_bad_aet(self) -> None:
        with pytest.raises(ConfigError, match="AE title"):
            parse_allow("WAY_TOO_LONG_AE_TITLE@127.0.0.1")

    def test_wildcards(self) -> None:
        assert parse_allow("*@127.0.0.1").matches("ANY", "::ffff:127.0.0.1")
        assert parse_allow("MOD@*").matches("MOD", "192.0.2.7")
        assert parse_allow("MOD").matches("MOD", "192.0.2.7")

    def test_rule_built_by_hand(self) -> None:
        assert AllowRule("MOD", "127.0.0.1").matches("MOD", "::ffff:127.0.0.1")

    def test_settings_survive_pickling(self) -> None:
        # The lean supervisor receives the settings pickled.
        import pickle

        s = load_settings(env={"ARCHIVIST_ALLOW": "MOD@localhost,*@10.0.0.7"})
        assert pickle.loads(pickle.dumps(s)).allow == s.allow
        assert pickle.loads(pickle.dumps(s)).is_allowed("MOD", "127.0.0.1")
