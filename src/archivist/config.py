"""Settings: built once (in the CLI) and passed down; no module globals.

Precedence, lowest first: defaults <- TOML file (``--config``) <- ``ARCHIVIST_*`` environment
variables <- command-line flags. Every field is a TOML key of the same name and an environment
variable ``ARCHIVIST_<FIELD>`` (upper case); a few have short aliases (``data`` for ``data_dir``).

List- and map-valued settings in the environment are comma-separated:
``ARCHIVIST_PEERS="STORESCP=127.0.0.1:11113,VIEWER=10.0.0.5:104"``,
``ARCHIVIST_ALLOW="MODALITY@127.0.0.1,*@10.0.0.7"``.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from archivist.errors import ConfigError

DUPLICATE_POLICIES = ("keep", "replace", "reject")
VALIDATION_POLICIES = ("off", "warn", "reject")
DIMSE_ENGINES = ("asyncio",)  # pynetdicom's threaded (polling) acceptor was removed
EVENT_LOOPS = ("auto", "uvloop", "asyncio")
# The OHIF viewer release served at "/" (npm @ohif/app, fetched by tools/fetch_ohif.py).
OHIF_VERSION = "3.13.2"


@dataclass(frozen=True)
class Peer:
    """A remote DICOM node: an AE title at a host and port (a C-MOVE destination)."""

    aet: str
    host: str
    port: int


@dataclass(frozen=True)
class AllowRule:
    """One entry of the calling-AE allow-list: ``AET@HOST`` where either may be ``*``."""

    aet: str
    host: str

    def matches(self, aet: str, host: str) -> bool:
        return (self.aet == "*" or self.aet == aet) and (self.host == "*" or self.host == host)


@dataclass(frozen=True)
class Settings:
    """Everything configurable about one Archivist node."""

    data_dir: Path = Path("./archivist-data")
    aet: str = "ARCHIVIST"
    host: str = "127.0.0.1"
    dicom_port: int = 11112
    http_port: int = 8080
    peers: tuple[Peer, ...] = ()
    allow: tuple[AllowRule, ...] = ()
    # DIMSE limits and timeouts (seconds)
    max_pdu: int = 16 * 1024 * 1024
    max_associations: int = 64
    max_pending_connections: int = 2000
    artim_timeout: float = 10.0
    acse_timeout: float = 30.0
    dimse_timeout: float = 120.0
    network_timeout: float = 120.0
    # Worker processes of `serve`, sharing the DICOM and HTTP listening sockets (0 = one per
    # CPU core, 1 to 4; 1 = everything in one process)
    workers: int = 0
    # DIMSE acceptor: "asyncio", the event-driven one of dimse/acceptor.py (the only one left)
    dimse_engine: str = "asyncio"
    # The event loops of the DIMSE acceptor and the HTTP server: "uvloop" (libuv, the default
    # when installed: "auto"), or the standard library's "asyncio"
    event_loop: str = "auto"
    # Ingest
    duplicate_policy: str = "keep"
    validation_policy: str = "warn"
    max_object_size: int = 4 * 1024 * 1024 * 1024
    # Query
    pn_case_insensitive: bool = True
    find_max_results: int = 0  # 0 = unlimited (results stream)
    # Inventory Creation (Supplement 223): study records per inventory instance (a job commits
    # its progress after each), and the seconds after which a job whose worker stopped renewing
    # its lease (a crash) is resumed by another worker or the next process
    inventory_studies_per_instance: int = 1000
    inventory_lease_seconds: float = 30.0
    # HTTP
    http_max_body: int = 2 * 1024 * 1024 * 1024
    cors_origins: tuple[str, ...] = ("*",)
    # Folder holding the OHIF build (its index.html at the top); absent = "/" explains how to get it
    viewer_dir: Path = Path(f"./.cache/ohif/{OHIF_VERSION}")
    log_level: str = "INFO"
    insecure: bool = False
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def worker_count(self) -> int:
        """How many processes `serve` runs: `workers`, or one per CPU core (1 to 4).

        One Python process spends most of an ingest holding its GIL, so a second process on a
        2-core machine took tiny ingest from ~160 to ~260 inst/s and CT from ~135 to ~170-200
        (4 storescu), once each worker took connections one at a time instead of one worker
        taking a whole burst of clients. The workers share the modules loaded before the fork:
        ~60 MB of PSS each beyond the first (docs/performance.md).
        """
        if self.workers:
            return self.workers
        try:
            cores = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):
            cores = os.cpu_count() or 1
        return max(1, min(4, cores))

    @property
    def blob_dir(self) -> Path:
        return self.data_dir / "blobs"

    @property
    def tmp_dir(self) -> Path:
        return self.data_dir / "tmp"

    @property
    def index_path(self) -> Path:
        return self.data_dir / "index.sqlite"

    @property
    def index_url(self) -> str:
        return f"sqlite:///{self.index_path}"

    def peer(self, aet: str) -> Peer | None:
        for p in self.peers:
            if p.aet == aet:
                return p
        return None

    def is_allowed(self, aet: str, host: str) -> bool:
        """True when the allow-list is empty or one of its rules matches."""
        return not self.allow or any(rule.matches(aet, host) for rule in self.allow)


_ALIASES = {"data": "data_dir", "port": "dicom_port", "peer": "peers"}
_FIELDS = {f.name: f for f in dataclasses.fields(Settings)}


def parse_peer(text: str) -> Peer:
    """Parse ``AET=HOST:PORT``."""
    try:
        aet, addr = text.split("=", 1)
        host, port = addr.rsplit(":", 1)
        peer = Peer(aet.strip(), host.strip(), int(port))
    except ValueError:
        raise ConfigError(f"peer {text!r}: expected AET=HOST:PORT") from None
    _check_aet(peer.aet, "peer")
    _check_port(peer.port, "peer port")
    return peer


def parse_allow(text: str) -> AllowRule:
    """Parse ``AET@HOST`` (``*`` for any), or a bare ``AET`` meaning any host."""
    aet, _, host = text.partition("@")
    aet, host = aet.strip(), (host.strip() or "*")
    if not aet:
        raise ConfigError(f"allow {text!r}: expected AET@HOST")
    return AllowRule(aet, host)


def _check_aet(aet: str, what: str) -> None:
    if not aet or len(aet) > 16 or not aet.isascii() or "\\" in aet or not aet.strip():
        raise ConfigError(f"{what} AE title {aet!r}: 1-16 ASCII characters, no backslash")


def event_loop_kind(settings: Settings) -> str:
    """The event loop `settings` ask for: "uvloop" or "asyncio" ("auto": uvloop when it can
    be imported).

    Raises
    ------
    ConfigError
        "uvloop" was asked for and is not installed.
    """
    if settings.event_loop == "asyncio":
        return "asyncio"
    try:
        import uvloop  # noqa: F401
    except ImportError:
        if settings.event_loop == "uvloop":
            raise ConfigError("event_loop = uvloop, but uvloop is not installed") from None
        return "asyncio"
    return "uvloop"


def _check_port(port: int, what: str) -> None:
    if not 0 <= port <= 65535:
        raise ConfigError(f"{what} {port}: must be between 0 and 65535")


def _split_list(value: Any) -> list[str]:
    if isinstance(value, str):
        return [v for v in (s.strip() for s in value.split(",")) if v]
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    raise ConfigError(f"expected a list, got {value!r}")


def _coerce(name: str, value: Any) -> Any:
    """Turn a TOML, environment or CLI value into the field's type."""
    if name == "peers":
        if isinstance(value, dict):
            return tuple(parse_peer(f"{k}={v}") for k, v in value.items())
        return tuple(parse_peer(v) if isinstance(v, str) else v for v in _split_list(value))
    if name == "allow":
        return tuple(parse_allow(v) for v in _split_list(value))
    if name == "cors_origins":
        return tuple(_split_list(value))
    default = _FIELDS[name].default
    try:
        if isinstance(default, bool):
            if isinstance(value, str):
                low = value.strip().lower()
                if low in ("1", "true", "yes", "on"):
                    return True
                if low in ("0", "false", "no", "off"):
                    return False
                raise ValueError(value)
            return bool(value)
        if isinstance(default, int):
            if isinstance(value, bool):
                raise ValueError(value)
            return int(value)
        if isinstance(default, float):
            return float(value)
        if isinstance(default, Path):
            return Path(value)
        if isinstance(default, str):
            return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"setting {name}: cannot use {value!r}") from None
    return value


def _normalise(raw: Mapping[str, Any], source: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in raw.items():
        name = _ALIASES.get(key, key)
        if name not in _FIELDS or name == "extra":
            raise ConfigError(f"{source}: unknown setting {key!r}")
        out[name] = _coerce(name, value)
    return out


def load_settings(
    config_file: Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Build :class:`Settings` from defaults, a TOML file, the environment and flag overrides.

    Parameters
    ----------
    config_file
        A TOML file; ``ARCHIVIST_CONFIG`` in `env` names one when this is None.
    env
        Environment variables (``os.environ`` when None); only ``ARCHIVIST_*`` are read.
    overrides
        Values from command-line flags; ``None`` values are ignored.

    Raises
    ------
    ConfigError
        An unknown key, a value of the wrong type, a port out of range or a bad AE title.
    """
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    if config_file is None and env.get("ARCHIVIST_CONFIG"):
        config_file = Path(env["ARCHIVIST_CONFIG"])
    if config_file is not None:
        try:
            with open(config_file, "rb") as fh:
                raw = tomllib.load(fh)
        except OSError as exc:
            raise ConfigError(f"cannot read config file {config_file}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {config_file}: {exc}") from None
        values.update(_normalise(raw, str(config_file)))
    env_raw: dict[str, Any] = {}
    for key, value in env.items():
        if key.startswith("ARCHIVIST_") and key != "ARCHIVIST_CONFIG":
            name = key[len("ARCHIVIST_"):].lower()
            if _ALIASES.get(name, name) in _FIELDS:
                env_raw[name] = value
    values.update(_normalise(env_raw, "environment"))
    if overrides:
        values.update(_normalise({k: v for k, v in overrides.items() if v is not None}, "flags"))
    settings = Settings(**values)
    _check_aet(settings.aet, "local")
    _check_port(settings.dicom_port, "dicom_port")
    _check_port(settings.http_port, "http_port")
    if settings.duplicate_policy not in DUPLICATE_POLICIES:
        raise ConfigError(f"duplicate_policy must be one of {', '.join(DUPLICATE_POLICIES)}")
    if settings.validation_policy not in VALIDATION_POLICIES:
        raise ConfigError(f"validation_policy must be one of {', '.join(VALIDATION_POLICIES)}")
    if settings.dimse_engine not in DIMSE_ENGINES:
        raise ConfigError(f"dimse_engine must be one of {', '.join(DIMSE_ENGINES)}")
    if settings.event_loop not in EVENT_LOOPS:
        raise ConfigError(f"event_loop must be one of {', '.join(EVENT_LOOPS)}")
    if settings.max_pdu < 4096:
        raise ConfigError("max_pdu must be at least 4096 bytes")
    if not 0 <= settings.workers <= 64:
        raise ConfigError("workers must be between 0 (automatic) and 64")
    if settings.inventory_studies_per_instance < 1 or settings.inventory_lease_seconds <= 0:
        raise ConfigError("inventory_studies_per_instance and inventory_lease_seconds must be "
                          "positive")
    return settings
