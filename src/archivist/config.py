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
import ipaddress
import math
import os
import re
import socket
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

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


def is_loopback(host: str) -> bool:
    """Whether `host` (``localhost`` or an address) is this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def canonical_address(host: str) -> str:
    """An IP address in one spelling: compressed IPv6, and an IPv4-mapped IPv6 address
    (``::ffff:10.0.0.7``, how a socket bound to ``::`` sees an IPv4 peer) as its IPv4 form.
    Anything that is not an address is returned as given."""
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


@dataclass(frozen=True)
class AllowRule:
    """One entry of the calling-AE allow-list: ``AET@HOST`` where either may be ``*``.

    `addresses` holds the addresses `host` stood for when the rule was read (a host name is
    resolved then); empty for ``*`` or a rule built by hand, which then compares `host` itself.
    """

    aet: str
    host: str
    addresses: frozenset[str] = field(default=frozenset(), compare=False)

    def matches(self, aet: str, host: str) -> bool:
        if self.aet != "*" and self.aet != aet:
            return False
        if self.host == "*":
            return True
        peer = canonical_address(host)
        return peer in (self.addresses or {canonical_address(self.host)})


@dataclass(frozen=True)
class Settings:
    """Everything configurable about one Archivist node."""

    data_dir: Path = Path("./archivist-data")
    aet: str = "ARCHIVIST"
    host: str = "127.0.0.1"
    dicom_port: int = 11112
    http_port: int = 8080
    peers: tuple[Peer, ...] = ()
    # The index in a PostgreSQL database instead of <data_dir>/index.sqlite:
    # postgresql://USER:PASSWORD@HOST:PORT/DATABASE (psycopg; the objects stay in data_dir)
    database_url: str = ""
    # The objects in an S3-compatible bucket instead of <data_dir>/blobs: endpoint URL, bucket,
    # region, credentials (else AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY), a key prefix, and
    # the size of the local read cache (bytes, under <data_dir>/cache/blobs)
    s3_endpoint: str = ""
    s3_bucket: str = ""
    s3_region: str = "us-east-1"
    s3_access_key: str = ""
    s3_secret_key: str = ""
    s3_prefix: str = ""
    s3_cache_bytes: int = 2 * 1024 * 1024 * 1024
    # Seconds a request to the object store may wait for it (a hung store fails the store
    # within this, before the modality gives up on its association)
    s3_timeout: float = 15.0
    # Peers (AE titles of `peers`) that every instance stored from now on is also sent to
    forward_to: tuple[str, ...] = ()
    # Peers (AE titles of `peers`) sent an Instance Availability Notification for each study
    # stored, once it has had no new instance for `ian_delay` seconds (dimse/ian.py)
    ian_to: tuple[str, ...] = ()
    ian_delay: float = 60.0
    # Modality Worklist: a folder of worklist files (one DICOM file per scheduled step) that
    # C-FIND on the Modality Worklist model answers from; empty = the service is not offered
    worklist_dir: str = ""
    # DICOM TLS (core/tls.py): our certificate and key (PEM; the DICOM port then speaks TLS
    # only), the authorities that sign callers' certificates (asked for when set), and the
    # peers that associations we open reach over TLS
    dicom_tls_cert: str = ""
    dicom_tls_key: str = ""
    dicom_tls_ca: str = ""
    dicom_tls_peers: tuple[str, ...] = ()
    allow: tuple[AllowRule, ...] = ()
    # DIMSE limits and timeouts (seconds)
    max_pdu: int = 16 * 1024 * 1024
    # An idle association costs no CPU and a few KB (issue 11: 200 idle ones and a new one
    # admitted); the limit counts across worker processes.
    max_associations: int = 256
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
    # Seconds a client has to send a whole request head after it connects or after the previous
    # response (then 408 and closed: slowloris), and seconds a request body may stop arriving
    http_head_timeout: float = 10.0
    http_body_timeout: float = 30.0
    cors_origins: tuple[str, ...] = ("*",)
    # Host names HTTP answers to besides IP addresses, localhost and names without a dot (lower
    # case, no port); a server on loopback refuses others (DNS rebinding: web/app.py _HostCheck),
    # and one on another address too when this is set; "*" turns the check off
    http_hosts: tuple[str, ...] = ()
    # HTTP Basic authentication: (user name, scrypt hash from `archivist hash-password`) pairs;
    # when set, every HTTP request but /healthz and CORS preflights needs one of them
    http_users: tuple[tuple[str, str], ...] = ()
    # HTTPS: a PEM certificate (chain) and its private key; both or neither (plain HTTP)
    http_tls_cert: str = ""
    http_tls_key: str = ""
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
        """The index's SQLAlchemy URL: `database_url` with psycopg as its driver, or the SQLite
        file in the data directory."""
        if self.database_url:
            scheme, _, rest = self.database_url.partition("://")
            return f"postgresql+psycopg://{rest}" if scheme in _POSTGRES_SCHEMES else \
                self.database_url
        return f"sqlite:///{self.index_path}"

    @property
    def index_exists(self) -> bool:
        """Whether there is an index to open (a database is assumed to exist)."""
        return bool(self.database_url) or self.index_path.exists()

    @property
    def index_location(self) -> str:
        """Where the index is, for messages: the SQLite file, or the database without its
        password."""
        if not self.database_url:
            return str(self.index_path)
        scheme, _, rest = self.database_url.partition("://")
        credentials, at, place = rest.rpartition("@")
        user = credentials.partition(":")[0]
        return f"{scheme}://{user}{at}{place}"

    @property
    def blob_location(self) -> str:
        """Where the blobs are, for messages: the data directory's ``blobs``, or the S3 bucket
        at its endpoint (without any user name or password in it)."""
        if not self.s3_bucket:
            return str(self.data_dir / "blobs")
        scheme, sep, rest = self.s3_endpoint.partition("://")
        host, slash, path = rest.partition("/")
        endpoint = f"{scheme}{sep}{host.rpartition('@')[2]}{slash}{path}" if sep \
            else self.s3_endpoint
        prefix = f" prefix {self.s3_prefix}" if self.s3_prefix else ""
        return f"s3 bucket {self.s3_bucket} at {endpoint}{prefix}"

    def peer(self, aet: str) -> Peer | None:
        for p in self.peers:
            if p.aet == aet:
                return p
        return None

    def is_allowed(self, aet: str, host: str) -> bool:
        """True when the allow-list is empty or one of its rules matches."""
        return not self.allow or any(rule.matches(aet, host) for rule in self.allow)

    def host_allowed(self, host: str) -> bool:
        """For HTTP, which names no AE title: True when the allow-list is empty, `host` is a
        loopback address (this machine), a rule names `host` (whatever its AE title), or a
        rule is ``*@*``. A rule that names an AE title but no host (``MOD@*``) restricts
        DIMSE callers by their AE title and admits no host over HTTP."""
        if not self.allow or is_loopback(canonical_address(host)):
            return True
        return any(rule.matches(rule.aet, host) for rule in self.allow
                   if rule.host != "*" or rule.aet == "*")


#: The URL schemes of `database_url` (a libpq-style URL gets psycopg as its driver).
_POSTGRES_SCHEMES = ("postgres", "postgresql", "postgresql+psycopg")
_ALIASES = {"data": "data_dir", "port": "dicom_port", "peer": "peers"}
_FIELDS = {f.name: f for f in dataclasses.fields(Settings)}


def parse_peer(text: str) -> Peer:
    """Parse ``AET=HOST:PORT``."""
    try:
        aet, addr = text.split("=", 1)
        host, port = addr.rsplit(":", 1)
        peer = Peer(aet.strip(), host.strip().strip("[]"), int(port))
    except ValueError:
        raise ConfigError(f"peer {text!r}: expected AET=HOST:PORT") from None
    if not peer.host:
        raise ConfigError(f"peer {text!r}: expected AET=HOST:PORT (the host is missing)")
    _check_aet(peer.aet, "peer")
    _check_port(peer.port, "peer port")
    return peer


def parse_allow(text: str) -> AllowRule:
    """Parse ``AET@HOST`` (``*`` for any), or a bare ``AET`` meaning any host.

    A host name is resolved now, to every address it has; the rule then admits callers from
    those addresses (an association's peer is known by its address only).

    Raises
    ------
    ConfigError
        No AE title, a bad AE title, a wildcard other than a whole ``*``, or a host name that
        does not resolve.
    """
    aet, _, host = text.partition("@")
    aet, host = aet.strip(), (host.strip() or "*")
    if not aet:
        raise ConfigError(f"allow {text!r}: expected AET@HOST")
    for part in (aet, host):
        if part != "*" and ("*" in part or "?" in part):
            raise ConfigError(f"allow {text!r}: a wildcard must be a whole '*' (any AE title "
                              "or any host)")
    if aet != "*":
        _check_aet(aet, f"allow {text!r}:")
    if host == "*":
        return AllowRule(aet, host)
    literal = canonical_address(host.strip("[]"))
    try:
        ipaddress.ip_address(literal)
    except ValueError:
        pass
    else:
        return AllowRule(aet, literal, frozenset({literal}))
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        raise ConfigError(f"allow {text!r}: cannot resolve host {host!r}") from None
    return AllowRule(aet, host, frozenset(canonical_address(str(i[4][0])) for i in infos))


def _check_aet(aet: str, what: str) -> None:
    """An AE title (PS3.5 6.2, VR AE): 1-16 characters of the default repertoire, no
    backslash and no control character."""
    if (not aet or len(aet) > 16 or not aet.isascii() or "\\" in aet or not aet.strip()
            or not aet.isprintable()):
        raise ConfigError(f"{what} AE title {aet!r}: 1-16 ASCII characters, no backslash or "
                          "control character")


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


def _split_list(name: str, value: Any) -> list[str]:
    if isinstance(value, str):
        return [v for v in (s.strip() for s in value.split(",")) if v]
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return list(value)
    raise ConfigError(f"setting {name}: expected a list of strings, got {value!r}")


def _coerce(name: str, value: Any) -> Any:
    """Turn a TOML, environment or CLI value into the field's type.

    Strings (the environment's) are parsed; other values must already have the field's type
    (an integer may be given as a float without a fraction): a TOML list where a string is
    expected, or ``1.7`` for a port, is an error, not converted.
    """
    if name == "peers":
        if isinstance(value, dict):
            return tuple(parse_peer(f"{k}={v}") if isinstance(v, str) else _bad(name, v)
                         for k, v in value.items())
        if isinstance(value, tuple) and all(isinstance(v, Peer) for v in value):
            return value
        return tuple(parse_peer(v) for v in _split_list(name, value))
    if name == "allow":
        if isinstance(value, tuple) and all(isinstance(v, AllowRule) for v in value):
            return value
        return tuple(parse_allow(v) for v in _split_list(name, value))
    if name == "cors_origins":
        return tuple(_split_list(name, value))
    if name in ("forward_to", "ian_to", "dicom_tls_peers"):
        return tuple(v.strip() for v in _split_list(name, value))
    if name == "http_hosts":
        return tuple(_host_name(v) for v in _split_list(name, value))
    if name == "http_users":
        return _http_users(value)
    default = _FIELDS[name].default
    try:
        if isinstance(default, bool):
            if isinstance(value, bool):
                return value
            if isinstance(value, str):
                low = value.strip().lower()
                if low in ("1", "true", "yes", "on"):
                    return True
                if low in ("0", "false", "no", "off"):
                    return False
            raise ValueError(value)
        if isinstance(default, int):
            if isinstance(value, int) and not isinstance(value, bool):
                return value
            if isinstance(value, float) and value.is_integer():
                return int(value)
            if isinstance(value, str):
                return int(value.strip())
            raise ValueError(value)
        if isinstance(default, float):
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                number = float(value)
            elif isinstance(value, str):
                number = float(value.strip())
            else:
                raise TypeError(value)
            if not math.isfinite(number):
                raise ValueError(value)
            return number
        if isinstance(default, Path):
            if isinstance(value, (str, Path)) and str(value).strip():
                return Path(value)
            raise ValueError(value)
        if isinstance(default, str):
            if isinstance(value, str):
                return value.strip()
            raise ValueError(value)
    except (TypeError, ValueError, OverflowError):
        _bad(name, value)
    return value


def _host_name(text: str) -> str:
    """An entry of ``http_hosts``: a host name as a Host header names it, without the port
    (lower case, no trailing dot), or ``*``."""
    name = text.strip().lower().rstrip(".")
    if name == "*":
        return name
    if not name or any(not (ch.isalnum() or ch in "-.") for ch in name) or not name.isascii():
        raise ConfigError(f"setting http_hosts: {text!r} is not a host name (letters, digits, "
                          "'-' and '.'; no scheme, no port), nor '*'")
    return name


#: The shape of a password hash (archivist.core.passwords.FORMAT; config imports no core).
_PASSWORD_HASH = re.compile(r"^scrypt\$\d{1,7}\$\d{1,3}\$\d{1,3}\$[A-Za-z0-9+/]{8,}\$"
                            r"[A-Za-z0-9+/]{16,}$")


def _http_users(value: Any) -> tuple[tuple[str, str], ...]:
    """``http_users``: a TOML table ``{name = "scrypt$..."}``, or ``name=hash`` pairs separated
    by commas (the environment's ``ARCHIVIST_HTTP_USERS``)."""
    if isinstance(value, Mapping):
        pairs = list(value.items())
    elif isinstance(value, tuple) and all(isinstance(v, tuple) and len(v) == 2 for v in value):
        pairs = list(value)
    else:
        pairs = []
        for item in _split_list("http_users", value):
            name, sep, hashed = item.partition("=")
            if not sep:
                raise ConfigError(f"setting http_users: {item[:40]!r} is not NAME=HASH")
            pairs.append((name, hashed))
    out: list[tuple[str, str]] = []
    for name, hashed in pairs:
        if not isinstance(name, str) or not isinstance(hashed, str):
            _bad("http_users", value)
        name, hashed = name.strip(), hashed.strip()
        if not name or ":" in name or not name.isprintable():
            raise ConfigError(f"setting http_users: user name {name[:40]!r} must be printable, "
                              "not empty, without ':'")
        if not _PASSWORD_HASH.match(hashed):
            raise ConfigError(f"setting http_users: the entry of {name!r} is not a password "
                              "hash (scrypt$...): make one with `archivist hash-password`")
        n, r, p = (int(v) for v in hashed.split("$")[1:4])
        # What archivist.core.passwords.verify_password can check; any other hash refused
        # every password, with nothing said.
        if (n < 2 or n > 1 << 20 or n & (n - 1) or not 1 <= r <= 32 or not 1 <= p <= 16
                or 128 * r * (n + p + 2) > 256 * 1024 * 1024):
            raise ConfigError(f"setting http_users: the hash of {name!r} has scrypt costs this "
                              f"server cannot check (N={n}, r={r}, p={p}: N a power of two, at "
                              "most 256 MiB of memory): make one with `archivist hash-password`")
        if any(name == known for known, _ in out):
            raise ConfigError(f"setting http_users: {name!r} is given twice")
        out.append((name, hashed))
    return tuple(out)


def _bad(name: str, value: Any) -> NoReturn:
    raise ConfigError(f"setting {name}: cannot use {value!r}")


def _normalise(raw: Mapping[str, Any], source: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    given_as: dict[str, str] = {}
    for key, value in raw.items():
        name = _ALIASES.get(key, key)
        shown = f"ARCHIVIST_{key.upper()}" if source == "environment" else key
        if name not in _FIELDS or name == "extra":
            raise ConfigError(f"{source}: unknown setting {shown!r}")
        coerced = _coerce(name, value)
        if name in out and out[name] != coerced:
            raise ConfigError(f"{source}: {given_as[name]} and {shown} both set, to different "
                              "values")
        out[name] = coerced
        given_as[name] = shown
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
        except UnicodeDecodeError as exc:
            raise ConfigError(f"config file {config_file}: not UTF-8 text (byte {exc.start})"
                              ) from None
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
    _check(settings)
    return settings


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_TIMEOUTS = ("artim_timeout", "acse_timeout", "dimse_timeout", "network_timeout",
             "inventory_lease_seconds", "s3_timeout")
#: Upper bounds: a larger timeout (1e300 s) overflowed the clock arithmetic of the threads that
#: use it, a larger count (1e20) the index's integers, each only when first used.
_MAX_SECONDS = 1e6
_MAX_COUNT = 1 << 62
_AT_LEAST_ONE = ("max_associations", "max_pending_connections", "http_max_body",
                 "max_object_size", "inventory_studies_per_instance")


def _check(settings: Settings) -> None:
    """Refuse settings the server could start with but not work with (every association
    refused, every request timed out at once, a log level that means nothing)."""
    _check_aet(settings.aet, "local")
    if not settings.host.strip():
        raise ConfigError("host is empty: give an address (0.0.0.0 listens on every IPv4 "
                          "interface)")
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
    if not 4096 <= settings.max_pdu <= 0xFFFFFFFF:
        raise ConfigError("max_pdu must be between 4096 and 4294967295 bytes (PS3.8 D.1)")
    if not 0 <= settings.workers <= 64:
        raise ConfigError("workers must be between 0 (automatic) and 64")
    for name in _TIMEOUTS:
        if not 0 < getattr(settings, name) <= _MAX_SECONDS:
            raise ConfigError(f"{name} must be a positive number of seconds, at most "
                              f"{_MAX_SECONDS:.0f}")
    for name in _AT_LEAST_ONE:
        if not 1 <= getattr(settings, name) <= _MAX_COUNT:
            raise ConfigError(f"{name} must be between 1 and {_MAX_COUNT}")
    if not 0 <= settings.find_max_results <= _MAX_COUNT:
        raise ConfigError(f"find_max_results must be 0 (no cap) or more, at most {_MAX_COUNT}")
    if not (0 < settings.http_head_timeout < 86400 and 0 < settings.http_body_timeout < 86400):
        raise ConfigError("http_head_timeout and http_body_timeout must be seconds above 0")
    if not 0 <= settings.ian_delay <= 86400:
        raise ConfigError("ian_delay must be between 0 and 86400 seconds")
    for name in ("forward_to", "ian_to", "dicom_tls_peers"):
        for aet in getattr(settings, name):
            if settings.peer(aet) is None:
                raise ConfigError(f"{name} names {aet!r}, which is not a configured peer: add "
                                  f"--peer {aet}=HOST:PORT (or a [peers] entry)")
    if bool(settings.dicom_tls_cert) != bool(settings.dicom_tls_key):
        raise ConfigError("dicom_tls_cert and dicom_tls_key go together: give both (DICOM "
                          "over TLS) or neither")
    if bool(settings.http_tls_cert) != bool(settings.http_tls_key):
        raise ConfigError("http_tls_cert and http_tls_key go together: give both (HTTPS) or "
                          "neither (HTTP)")
    if settings.database_url and \
            settings.database_url.partition("://")[0] not in _POSTGRES_SCHEMES:
        raise ConfigError("database_url must be a PostgreSQL URL: "
                          "postgresql://USER:PASSWORD@HOST:PORT/DATABASE")
    if bool(settings.s3_endpoint) != bool(settings.s3_bucket):
        raise ConfigError("s3_endpoint and s3_bucket go together: give both (objects in S3) "
                          "or neither (objects under data_dir)")
    if settings.s3_endpoint and \
            settings.s3_endpoint.partition("://")[0] not in ("http", "https"):
        raise ConfigError("s3_endpoint must be an http:// or https:// URL")
    if not 0 <= settings.s3_cache_bytes <= _MAX_COUNT:
        raise ConfigError(f"s3_cache_bytes must be between 0 and {_MAX_COUNT}")
    if settings.log_level.upper() not in LOG_LEVELS:
        raise ConfigError(f"log_level must be one of {', '.join(LOG_LEVELS)}")
    if not is_loopback(settings.host) and not settings.insecure and any(
            rule.aet == "*" and rule.host == "*" for rule in settings.allow):
        raise ConfigError(f"allow '*@*' admits every caller from every host: listening on "
                          f"{settings.host} with it is listening with no allow-list. Name the "
                          "hosts (AET@HOST), or pass --insecure if every host may store and "
                          "read patient data")
    aets = [p.aet for p in settings.peers]
    twice = sorted({a for a in aets if aets.count(a) > 1})
    if twice:
        raise ConfigError(f"peer {twice[0]} is defined more than once")
