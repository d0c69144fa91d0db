"""``archivist serve``: DIMSE and HTTP listeners, in one process or in several workers."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import os
import signal
import socket
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any, ClassVar, NoReturn

from archivist.config import Settings, event_loop_kind, is_loopback


def configure_logging(level: str, *, workers: int = 1) -> None:
    """Log to stderr; with several worker processes each line names its process."""
    who = "[%(process)d]" if workers > 1 else ""
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format=f"%(asctime)s %(levelname)s %(name)s{who}: %(message)s",
    )
    for handler in logging.getLogger().handlers:
        if type(handler.formatter) is logging.Formatter:
            handler.setFormatter(OneLineFormatter(handler.formatter._fmt))
    quiet_libraries()
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)


class OneLineFormatter(logging.Formatter):
    """A log record's message on one line: control characters a peer put in a value the
    message quotes (a UID holding a line feed, quoted by pynetdicom's check) are escaped, so a
    client cannot forge log lines. A traceback after the message keeps its lines."""

    _ESCAPES: ClassVar[dict[int, str]] = {i: f"\\x{i:02x}" for i in range(32) if i != 9}

    def formatMessage(self, record: logging.LogRecord) -> str:
        text = super().formatMessage(record)
        return text.translate(self._ESCAPES) if not text.isprintable() else text


def quiet_libraries() -> None:
    """Keep the libraries' chatter, which can quote element values (patient data), out of the
    logs. Called again once pydicom is imported: importing it sets its logger back to WARNING
    (``pydicom.config.debug(False)``), so in the worker processes, which import it after the
    logging is set up, its warnings were logged with the values they quote."""
    logging.getLogger("pydicom").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="pydicom")
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)


def run_server(settings: Settings) -> int:
    """Run until SIGTERM/SIGINT; returns the exit code.

    With more than one worker (``workers``; by default one per CPU core, 1 to 4) this
    process binds the DICOM and HTTP ports and forks the workers, which all accept on both
    sockets (the kernel hands each connection to one of them): each worker is a whole archive
    node (DIMSE acceptor, HTTP, its own index connections), so the cores share the work that
    one Python process would do under one GIL. The parent only supervises: it restarts a
    worker that dies, and on SIGTERM stops them all and exits 0.
    """
    configure_logging(settings.log_level, workers=settings.worker_count)
    # Everything the archive creates (the index holds every patient's name, the blobs their
    # images) is for its own user only, even in a data directory created beforehand as 0755.
    os.umask(0o077)
    if not is_loopback(settings.host) and not settings.allow and not settings.insecure:
        print(
            f"error: refusing to listen on {settings.host} with no --allow list: any host could "
            "store and read patient data. Add --allow AET@HOST (repeatable) or pass --insecure.",
            file=sys.stderr,
        )
        return 2
    if settings.http_tls_cert:
        problem = _tls_problem(settings.http_tls_cert, settings.http_tls_key)
        if problem:  # before any worker: each would fail with it
            print(f"error: HTTPS: {problem}", file=sys.stderr)
            return 2
    if settings.http_users and not settings.http_tls_cert and not is_loopback(settings.host):
        print(f"warning: HTTP logins (http_users) on {settings.host} without http_tls_cert: "
              "passwords cross the network readable by anyone on the way (HTTP Basic); set "
              "http_tls_cert/http_tls_key or put a TLS proxy in front", file=sys.stderr)
    from archivist.core.tls import tls_problem as dicom_tls_problem

    problem = dicom_tls_problem(settings)
    if problem:  # before any worker: each would fail with it
        print(f"error: DICOM TLS: {problem}", file=sys.stderr)
        return 2
    if not _data_dir_usable(settings.data_dir):
        return 1
    from archivist.archive.archive import lost_index
    from archivist.errors import IndexLost

    try:
        problem = lost_index(settings)
    except IndexLost as exc:  # the database or the bucket cannot be used
        problem = str(exc)
    if problem:  # before any worker: each would stop with it, and be started again
        print(f"error: {problem}", file=sys.stderr)
        return 1
    workers = settings.worker_count
    if workers <= 1:
        if not _hold_data_dir(settings.data_dir):
            return 1
        _log_and_ignore_hangups()
        code = _serve(settings)
        _leave_blocked_threads(code)
        _exit_now(code)
    _become_lean_supervisor(settings)  # returns only when it cannot
    return _supervise(settings, workers)


def _tls_problem(cert: str, key: str) -> str | None:
    """Why the certificate and key cannot serve HTTPS, or None. A certificate that has expired
    (or is not valid yet) is served, with a warning: every client will refuse it."""
    import ssl
    import time

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    asked: list[bool] = []

    def no_passphrase() -> bytes:
        # OpenSSL's default asked for one on the terminal, at start and again in each worker.
        asked.append(True)
        return b""

    try:
        context.load_cert_chain(cert, key, password=no_passphrase)
    except FileNotFoundError as exc:
        return f"no file {exc.filename or cert}"
    except PermissionError as exc:
        return f"cannot read {exc.filename or cert}"
    except (ssl.SSLError, OSError, ValueError) as exc:
        if asked:
            return (f"the private key {key} is encrypted (it needs a passphrase, which the "
                    f"server cannot ask for): give it unencrypted, readable by this user only "
                    f"(openssl pkey -in {key} -out PLAIN.pem)")
        return (f"{cert} and {key} are not a PEM certificate and its private key "
                f"({getattr(exc, 'reason', None) or exc})")
    try:
        decoded = ssl._ssl._test_decode_cert(cert)  # type: ignore[attr-defined]
        not_before = ssl.cert_time_to_seconds(decoded["notBefore"])
        not_after = ssl.cert_time_to_seconds(decoded["notAfter"])
    except (AttributeError, KeyError, ValueError, OSError, ssl.SSLError):
        return None  # its dates cannot be read here: nothing to warn about
    now = time.time()
    if not not_before <= now <= not_after:
        when = decoded["notAfter"] if now > not_after else decoded["notBefore"]
        state = "expired on" if now > not_after else "is not valid before"
        print(f"warning: HTTPS: the certificate {cert} {state} {when}: browsers and other "
              "clients will refuse it", file=sys.stderr)
    return None


def _become_lean_supervisor(settings: Settings) -> None:
    """Replace this process by a fresh interpreter that only supervises (``python -m
    archivist.cli.serve``; same PID, same standard streams). The command-line parser loaded
    typer and, through it, pydantic: ~20 MB that the supervisor would hold for the server's
    whole life. The settings go over an inherited pipe. Returns when the exec fails."""
    import pickle

    try:
        data = pickle.dumps(settings)
    except (pickle.PicklingError, TypeError, AttributeError):  # an unusual setting: stay
        return
    if len(data) > 60_000:  # more than a pipe holds without a reader: stay as we are
        return
    readable, writable = os.pipe()
    os.write(writable, data)
    os.close(writable)
    os.set_inheritable(readable, True)
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        # The original command line follows "--", for ps and top only.
        os.execv(sys.executable, [sys.executable, "-m", "archivist.cli.serve",
                                  "--supervise-fd", str(readable), "--", *sys.argv])
    except OSError:
        os.close(readable)


def _data_dir_usable(data_dir: Path) -> bool:
    """Whether the archive can write in `data_dir` (created if missing); False with the reason
    printed. A read-only or foreign data directory made every worker fail with a traceback,
    started again and again until the supervisor gave up."""
    probe = Path(data_dir) / f".archivist-probe-{os.getpid()}"
    try:
        Path(data_dir).mkdir(parents=True, exist_ok=True, mode=0o700)
        probe.touch(mode=0o600)
        probe.unlink()
    except OSError as exc:
        print(f"error: cannot write in the data directory {data_dir}: "
              f"{exc.strerror or exc}", file=sys.stderr)
        return False
    return True


#: The lock file ``serve`` holds for its whole life, its workers too (they inherit it).
_SERVE_LOCK = "serve.lock"
_held: list[int] = []


def _hold_data_dir(data_dir: Path) -> bool:
    """Take the data directory for this ``serve`` (an exclusive lock its workers inherit and
    hold with it); False, the reason printed, when another ``serve`` has it. Two servers on one
    data directory handed each other's STOW-RS parts through the same exchange sockets, each
    storing the other's with its own settings, and the one that stopped first took the
    other's sockets away. ``archivist import``, ``find``, ``delete`` ... still work while the
    server runs."""
    import fcntl

    from archivist.core.processes import alive

    path = Path(data_dir) / _SERVE_LOCK
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        print(f"error: cannot write in the data directory {data_dir}: "
              f"{exc.strerror or exc}", file=sys.stderr)
        return False
    deadline = time.monotonic() + 10
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except OSError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
        # A serve whose supervisor is gone (killed) holds it until its workers have exited,
        # which they do at once (they die with their parent): wait for them.
        if (holder.isdigit() and not alive(int(holder))
                and time.monotonic() < deadline):
            time.sleep(0.05)
            continue
        os.close(fd)
        who = f" (pid {holder})" if holder.isdigit() else ""
        print(f"error: another 'archivist serve'{who} is using the data directory "
              f"{data_dir}; stop it first, or give this one another --data", file=sys.stderr)
        return False
    with contextlib.suppress(OSError):  # who holds it, for the message above (a full disk)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    _held.append(fd)
    return True


def _log_and_ignore_hangups() -> None:
    """SIGHUP (a terminal that hangs up, ``logrotate``'s ``kill -HUP``) killed the archive in
    the middle of its work without a word in its log; the archive has nothing to reload or
    reopen (it logs to its standard error), so it is logged and ignored. SIGTERM or SIGINT
    stop the archive."""
    log = logging.getLogger("archivist.serve")

    def on_hangup(_signum: int, _frame: object) -> None:
        log.warning("SIGHUP ignored: nothing to reload; SIGTERM or Ctrl-C stops the archive")

    signal.signal(signal.SIGHUP, on_hangup)


def _leave_blocked_threads(code: int, wait: float = 1.0) -> None:
    """Exit now with `code` if threads other than daemons are still running after `wait`
    seconds; return when none are.

    Everything durable is closed by then (associations drained, the archive closed). What can
    be left is a thread waiting on a peer that does not answer (a UPS event, an IAN or a C-MOVE
    sub-operation association to a host that takes the connection and never replies), which
    the interpreter would wait for at exit, up to the ACSE timeout (30 s): a stop must not
    depend on another node. What it was sending is still due in its outbox and is sent after
    the restart. (Worker processes of ``--workers N`` end with ``os._exit`` already.)
    """
    deadline = time.monotonic() + wait
    while True:
        left = [t for t in threading.enumerate()
                if t is not threading.main_thread() and not t.daemon and t.is_alive()]
        if not left or time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    if not left:
        return
    logging.getLogger("archivist.serve").info(
        "stopped; not waiting for %d thread(s) still waiting on the network (%s)", len(left),
        ", ".join(sorted({t.name for t in left})))
    with contextlib.suppress(Exception):
        sys.stdout.flush()
        sys.stderr.flush()
    logging.shutdown()
    os._exit(code)


def _exit_now(code: int) -> NoReturn:
    """End the process with `code` once the archive is closed: the exit handlers run (they
    release what a process holds, such as inventory jobs, and flush the logs), the
    interpreter's teardown of every module does not (~0.7 s of a stop, for nothing)."""
    with contextlib.suppress(Exception):
        sys.stdout.flush()
        sys.stderr.flush()
    atexit._run_exitfuncs()  # logging's shutdown among them (registered at its import)
    os._exit(code)


def _lean_main(argv: list[str]) -> int:
    """Entry point of the lean supervisor (see :func:`_become_lean_supervisor`)."""
    import pickle

    if len(argv) < 2 or argv[0] != "--supervise-fd" or argv[2:3] not in ([], ["--"]):
        print("usage: python -m archivist.cli.serve --supervise-fd FD (started by "
              "'archivist serve')", file=sys.stderr)
        return 2
    with os.fdopen(int(argv[1]), "rb") as fh:
        settings = pickle.load(fh)
    if not isinstance(settings, Settings):
        return 2
    configure_logging(settings.log_level, workers=settings.worker_count)
    return _supervise(settings, settings.worker_count)


def _listen(settings: Settings) -> tuple[socket.socket, socket.socket] | int:
    dimse = _listen_on("DICOM", settings.host, settings.dicom_port)
    if dimse is None:
        return 1
    http = _listen_on("HTTP", settings.host, settings.http_port)
    if http is None:
        dimse.close()
        return 1
    return dimse, http


def _listen_on(what: str, host: str, port: int) -> socket.socket | None:
    """A listening socket, or None with the reason printed ("cannot listen for HTTP on ...")."""
    from archivist.dimse.listen import listen

    try:
        return listen(host, port)
    except OSError as exc:
        print(f"error: cannot listen for {what} on {host}:{port}: {exc.strerror}",
              file=sys.stderr)
        return None


def _prctl(option: int, value: int) -> bool:
    """prctl(2) on Linux; False where it is missing or refused."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(option, value, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36


def _die_with_parent() -> None:
    """Ask the kernel to SIGKILL this worker when its parent dies (Linux), so a supervisor
    killed with SIGKILL leaves no worker holding the ports."""
    _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _supervise(settings: Settings, workers: int) -> int:
    """Start `workers` worker processes, restart any that dies, stop them all on SIGTERM.

    The workers come from a short-lived *zygote* process: it imports and loads what a worker
    runs, forks the workers (which share those pages, copy-on-write) and exits; this process,
    a child subreaper, inherits them. So the supervisor never holds the ~100 MB of modules and
    tables itself: the tree's memory is the workers' plus a small supervisor. Where a process
    cannot be a subreaper (not Linux), the supervisor loads them and forks the workers itself.
    """
    import multiprocessing

    log = logging.getLogger("archivist.serve")
    if not _hold_data_dir(settings.data_dir):
        return 1
    bound = _listen(settings)
    if isinstance(bound, int):
        return bound
    dimse_sock, http_sock = bound
    via_zygote = _prctl(_PR_SET_CHILD_SUBREAPER, 1)
    if not via_zygote:
        _preload(settings)
    cells = multiprocessing.Array("i", 2 * workers, lock=False)  # associations, connections
    stamps = multiprocessing.Array("d", workers, lock=False)  # when each count last changed
    http = multiprocessing.Array("d", 2 * workers, lock=False)  # HTTP: last request, open ones
    for number in range(workers):
        cells[workers + number] = -1  # not accepting yet
    parent = os.getpid()
    children: dict[int, int] = {}  # pid -> worker number
    started: dict[int, float] = {}
    stopping = False

    def worker(number: int, zygote: bool) -> None:
        """The worker process: serve, then exit (never returns)."""
        code = 1
        try:
            if zygote:  # wait until the zygote has gone and this process is the supervisor's
                # (the zygote may be gone already: then the parent is the supervisor at once;
                # waiting for the parent to change from what it was first waited 30 s then)
                deadline = time.monotonic() + 30
                while os.getppid() != parent and time.monotonic() < deadline:
                    time.sleep(0.002)
            _die_with_parent()
            if os.getppid() != parent:
                os._exit(1)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            signal.signal(signal.SIGHUP, signal.SIG_IGN)  # the supervisor's to log
            code = _serve(settings, dimse_sock=dimse_sock, http_sock=http_sock,
                          worker=(number, workers, cells, stamps, http))
        except BaseException:
            logging.getLogger("archivist.serve").exception("worker %d failed", number)
        finally:
            _exit_now(code)  # the exit handlers too: they release the worker's inventory jobs

    def spawn(numbers: list[int]) -> int:
        """Start the workers `numbers`; returns how many started."""
        before = len(children)
        if not via_zygote:
            for number in numbers:
                pid = os.fork()
                if pid == 0:
                    worker(number, zygote=False)
                children[pid] = number
                started[number] = time.monotonic()
            return len(children) - before
        readable, writable = os.pipe()
        zygote = os.fork()
        if zygote == 0:
            code = 1
            try:
                os.close(readable)
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                signal.signal(signal.SIGHUP, signal.SIG_IGN)
                _preload(settings)
                for number in numbers:
                    pid = os.fork()
                    if pid == 0:
                        os.close(writable)
                        worker(number, zygote=True)
                    os.write(writable, f"{number} {pid}\n".encode())
                code = 0
            except BaseException:
                logging.getLogger("archivist.serve").exception("starting workers failed")
            finally:
                os._exit(code)
        os.close(writable)
        with os.fdopen(readable, "rb") as fh:
            told = fh.read().split()
        with contextlib.suppress(ChildProcessError):
            os.waitpid(zygote, 0)
        for number_s, pid_s in zip(told[::2], told[1::2]):
            pid = int(pid_s)
            children[pid] = int(number_s)
            started[int(number_s)] = time.monotonic()
            if stopping:  # a SIGTERM came while the zygote worked: this one stops too
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
        return len(children) - before

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        if not stopping:
            log.info("stopping %d workers", len(children))
            signal.alarm(STOP_DEADLINE)
        stopping = True
        for pid in list(children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    worst = 0  # the exit status: 1 when a worker failed or had to be killed

    def on_deadline(_signum: int, _frame: object) -> None:
        """Workers still running long after they were asked to stop (a thread stuck in I/O)
        are killed: the supervisor must end, and their ports with it (exit status 1)."""
        nonlocal worst
        if children:
            worst = 1
            log.error("%d workers still running %d s after SIGTERM; killing them",
                      len(children), STOP_DEADLINE)
        for pid in list(children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGALRM, on_deadline)
    _log_and_ignore_hangups()
    if spawn(list(range(workers))) == 0 and not stopping:
        log.error("no worker process could start; stopping")
        worst = 1
    quick_deaths = 0
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        number = children.pop(pid, None)
        if number is None:
            continue
        cells[number], cells[workers + number] = 0, -1
        code = os.waitstatus_to_exitcode(status)
        _sweep_temp_of(settings, pid)
        if stopping:
            worst = max(worst, max(0, code))
            continue
        lived = time.monotonic() - started[number]
        log.error("worker %d (pid %d) ended with %s after %.0f s; starting it again", number,
                  pid, code, lived)
        quick_deaths = quick_deaths + 1 if lived < 10 else 0
        if quick_deaths >= 3:
            log.error("workers keep failing at start; stopping")
            on_signal(signal.SIGTERM, None)
            worst = 1
            continue
        time.sleep(min(5.0, 0.5 * (quick_deaths + 1)))
        # A SIGTERM during the pause: no new worker that nobody would stop.
        if not stopping and spawn([number]) == 0 and not children:
            log.error("worker %d could not be started again; stopping", number)
            worst = 1
    dimse_sock.close()
    http_sock.close()
    log.info("stopped")
    return worst


#: Seconds the supervisor waits for its workers after passing on SIGTERM, then kills them; a
#: worker itself stops within about :data:`STOP_GRACE` plus the DIMSE side's own grace.
STOP_DEADLINE = 60


def _sweep_temp_of(settings: Settings, pid: int) -> None:
    """Remove what the worker `pid`, which has ended, left in the ``tmp`` folder (a C-STORE
    data set or a blob part it was writing when it was killed); the start-up sweep only runs
    when no process uses the data directory, so they stayed until the archive restarted."""
    from archivist.store.blob import sweep_temp_of

    removed = sweep_temp_of(settings.tmp_dir, pid)
    if removed:
        logging.getLogger("archivist.serve").warning(
            "removed %d temporary files of worker process %d", removed, pid)


def _import_pydicom() -> None:
    """Import pydicom without letting it import `requests` (~5 MB of RSS in every worker, with
    urllib3, charset_normalizer and idna): pydicom only wants it to download its own test
    files, and falls back to urllib without it. `requests` stays importable afterwards."""
    if "requests" in sys.modules or "pydicom" in sys.modules:
        return
    sys.modules["requests"] = None  # type: ignore[assignment]  # import requests -> ImportError
    try:
        import pydicom
        import pydicom.data  # noqa: F401  (where `requests` is tried)
    finally:
        del sys.modules["requests"]


def _preload(settings: Settings) -> None:
    """Import what a worker runs (and load the validator's tables) before forking the workers,
    then freeze the garbage collector's view of it: the workers share those pages instead of
    each loading its own copy (~90 MB of modules and tables per worker). No thread is started
    here, so forking stays safe."""
    import gc

    import uvicorn  # noqa: F401

    _import_pydicom()
    import archivist.archive.archive
    import archivist.dimse.server
    import archivist.web.app  # noqa: F401

    # The event loop and HTTP parser uvicorn picks when they are installed.
    for optional in ("uvloop", "uvicorn.protocols.http.httptools_impl"):
        with contextlib.suppress(ImportError):
            __import__(optional)
    if settings.validation_policy != "off":
        from archivist.validate.standard import tables

        tables()
    gc.collect()
    gc.freeze()


# Settings ``http_head_timeout`` (10 s): the seconds a client has to send a whole request head
# (request line and headers) after it connects or after the previous response on the
# connection ended; then the connection is closed (408 when part of a head came). Without it a
# connection that never finished its headers (slowloris), or sent nothing at all, was held open
# for ever. ``http_body_timeout`` (30 s): the seconds a request body may stop arriving (no byte
# while the server is ready to read); then the connection is closed (408 when no response has
# started) and the application sees the client gone. Without it a request that announced a
# body and sent none held its place among the requests in flight for ever: enough of them
# answered everybody else 503.
#: Bytes a request head (request line and headers) may take; a longer one gets 431 and the
#: connection is closed (httptools has no limit of its own: a client could send headers
#: without end, all kept in memory until the deadline).
MAX_REQUEST_HEAD = 64 * 1024
#: HTTP requests one worker runs at a time; more get 503 until one ends.
MAX_HTTP_REQUESTS_IN_FLIGHT = 512
#: Seconds the HTTP requests running when the archive is asked to stop get to finish (the
#: DICOM associations get as long, at the same time); then they are cancelled. Without a limit
#: one client that stopped reading a response kept the archive stopping for ever.
STOP_GRACE = 10.0

def _timeout_408(message: str) -> bytes:
    """A whole 408 response whose JSON body says `message` (written to the transport as is:
    there is no request cycle to answer through)."""
    body = f'{{"status":408,"error":"{message}"}}'.encode()
    return (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
            b"connection: close\r\ncontent-length: " + str(len(body)).encode() + b"\r\n\r\n"
            + body)


_HEAD_LATE_408 = _timeout_408("the request head did not arrive in time")
_HEAD_TOO_LARGE_BODY = (b'{"status":431,"error":"the request head is larger than '
                        + str(MAX_REQUEST_HEAD).encode() + b' bytes"}')
_HEAD_TOO_LARGE_431 = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
    b"connection: close\r\ncontent-length: " + str(len(_HEAD_TOO_LARGE_BODY)).encode()
    + b"\r\n\r\n" + _HEAD_TOO_LARGE_BODY
)
_BODY_STALLED_408 = _timeout_408("the request body stopped arriving")


def _http_protocol(head_timeout: float, body_timeout: float) -> type[Any]:
    """uvicorn's HTTP protocol (httptools' when installed, else h11's, as uvicorn picks it)
    with a deadline and a size limit for each request head, and a limit to how long a body
    may stall.

    The deadline is armed when the connection is made (`head_timeout`) and when a response
    ends (the keep-alive timeout, at least `head_timeout`); a request whose head arrives in
    time (uvicorn then starts a new request cycle) disarms it. uvicorn itself only times out a
    keep-alive connection that stays silent, and cancels that on the first byte, so one byte
    now and then kept a connection and its descriptor for ever.

    While a request's body is being received, no byte for `body_timeout` seconds closes the
    connection, unless uvicorn itself stopped reading (the application is busy with what came).
    """
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    class GuardedHTTPProtocol(AutoHTTPProtocol):  # type: ignore[misc, valid-type]
        _head_timer: asyncio.TimerHandle | None = None
        _armed_cycle: Any = None
        _head_started = False
        _head_bytes = 0
        _body_timer: asyncio.TimerHandle | None = None
        _last_data = 0.0

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._arm_head_deadline(head_timeout)

        def data_received(self, data: bytes) -> None:
            self._head_started = True
            self._last_data = self.loop.time()
            super().data_received(data)
            cycle: Any = self.cycle
            if (cycle is self._armed_cycle and self._head_timer is not None
                    and (cycle is None or cycle.response_complete)):
                # still no complete head since the deadline was armed
                self._head_bytes += len(data)
                if self._head_bytes > MAX_REQUEST_HEAD and not self.transport.is_closing():
                    self.transport.write(_HEAD_TOO_LARGE_431)
                    self.transport.close()
                return
            if (self._body_timer is None and cycle is not None and cycle.more_body
                    and not cycle.response_complete):
                self._body_timer = self.loop.call_later(body_timeout, self._body_check)

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm_head_deadline(max(head_timeout, self.timeout_keep_alive))

        def shutdown(self) -> None:
            # An idle keep-alive connection is closed at once when the server stops; over TLS
            # close() waits for the client's close_notify, which an idle client never sends,
            # so the stop waited out its whole grace: such a connection is aborted instead.
            idle = self.cycle is None or self.cycle.response_complete
            if idle and self.transport.get_extra_info("sslcontext") is not None:
                self.transport.abort()
                return
            super().shutdown()

        def connection_lost(self, exc: Exception | None) -> None:
            self._cancel_timers()
            super().connection_lost(exc)

        def handle_websocket_upgrade(self, *args: Any) -> None:
            # The connection becomes a WebSocket (the UPS-RS event channel), open for as long
            # as its subscriber likes: the deadlines of HTTP requests are not for it (the head
            # deadline wrote a 408 into the WebSocket and closed it).
            self._cancel_timers()
            super().handle_websocket_upgrade(*args)

        def _cancel_timers(self) -> None:
            for timer in (self._head_timer, self._body_timer):
                if timer is not None:
                    timer.cancel()
            self._head_timer = self._body_timer = None

        def _arm_head_deadline(self, seconds: float) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None
            if self.transport.is_closing():
                return
            self._armed_cycle = self.cycle
            self._head_started = False
            self._head_bytes = 0
            self._head_timer = self.loop.call_later(seconds, self._head_late)

        def _head_late(self) -> None:
            self._head_timer = None
            cycle: Any = self.cycle
            if (cycle is not self._armed_cycle or self.transport.is_closing()
                    or (cycle is not None and not cycle.response_complete)):
                return  # a request came in time (or a pipelined one runs): its end re-arms
            if self._head_started:
                self.transport.write(_HEAD_LATE_408)
            self.transport.close()

        def _body_check(self) -> None:
            self._body_timer = None
            cycle: Any = self.cycle
            if (cycle is None or self.transport.is_closing() or cycle.response_complete
                    or not cycle.more_body):
                return  # the body is all here (data_received arms the next request's check)
            quiet = self.loop.time() - self._last_data
            if self.flow.read_paused or quiet < body_timeout:
                wait = body_timeout if self.flow.read_paused else body_timeout - quiet
                self._body_timer = self.loop.call_later(wait, self._body_check)
                return
            if not cycle.response_started:
                self.transport.write(_BODY_STALLED_408)
            self.transport.close()

    return GuardedHTTPProtocol


def _only_allowed_hosts(app: Any, settings: Settings) -> Any:
    """`app` answering 403 to HTTP requests from an address the ``--allow`` list does not name
    (this machine is always allowed; ``/healthz`` to anybody). Without it, ``--allow`` guarded
    DIMSE only: a server listening on a network address served every study to any host over
    DICOMweb and let it delete over ``/api``."""
    if not settings.allow:
        return app
    from archivist.web.errors import problem_response

    async def guarded(scope: Any, receive: Any, send: Any) -> None:
        client = scope.get("client")
        if (scope["type"] not in ("http", "websocket") or scope.get("path") == "/healthz"
                or (client and settings.host_allowed(str(client[0])))):
            await app(scope, receive, send)
            return
        await problem_response(403, "this address is not in the server's --allow list")(
            scope, receive, send)

    return guarded


def _limit_in_flight(app: Any, limit: int) -> Any:
    """`app` answering 503 (JSON body) to HTTP requests over `limit` running at once."""
    from archivist.web.errors import problem_response

    running = 0

    async def limited(scope: Any, receive: Any, send: Any) -> None:
        nonlocal running
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        if running >= limit:
            await problem_response(503, "too many requests at once; try again shortly",
                                   {"Retry-After": "1"})(scope, receive, send)
            return
        running += 1
        try:
            await app(scope, receive, send)
        finally:
            running -= 1

    return limited


def _unavailable_once_stopped(app: Any, health: Any) -> Any:
    """`app` answering 503 (JSON body, Retry-After) to a request the archive's stop cancelled
    before its response started (after :data:`STOP_GRACE`): uvicorn answered it 500 Internal
    Server Error, which reads as a bug in the archive rather than "try again". What such a
    request had stored (STOW-RS parts) is stored; sent again, those parts are found stored."""
    from archivist.web.errors import problem_response

    async def guarded(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        started = False

        async def watched_send(message: Any) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await app(scope, receive, watched_send)
        except asyncio.CancelledError:
            if started or not health.stopping:
                raise
            await problem_response(503, "the archive is stopping; try again shortly",
                                   {"Retry-After": "5", "Connection": "close"})(
                scope, receive, send)

    return guarded


def _serve(settings: Settings, *, dimse_sock: socket.socket | None = None,
           http_sock: socket.socket | None = None,
           worker: tuple[int, int, Any, Any, Any] | None = None) -> int:
    """One archive node: the DIMSE acceptor and the HTTP server, in this process.

    `worker` is (number, how many, the shared association counts, their time stamps, the
    shared HTTP activity cells: :class:`~archivist.web.app.HttpActivity`) when this
    process is one of several sharing `dimse_sock` and `http_sock`; worker 0 also runs the
    background work that one node is enough for (the metadata warmer) and prints where the
    archive listens.
    """
    log = logging.getLogger("archivist.serve")
    import uvicorn

    _import_pydicom()
    from archivist.archive.archive import Archive
    from archivist.dimse.acceptor import AssociationCount
    from archivist.dimse.server import DimseServer
    from archivist.web.app import Health, HttpActivity, create_app

    quiet_libraries()  # pydicom is imported now (see quiet_libraries)
    number, total = (worker[0], worker[1]) if worker else (0, 1)
    if http_sock is None:
        # Bound here as the supervisor binds it for several workers: uvicorn's own socket for
        # --host :: took IPv6 only, while the DICOM port took IPv4 callers too.
        http_sock = _listen_on("HTTP", settings.host, settings.http_port)
        if http_sock is None:
            return 1
    try:
        archive = Archive.open(settings)
    except Exception as exc:  # the index or the data directory cannot be used
        log.debug("opening the archive failed", exc_info=True)
        print(f"error: cannot open the archive in {settings.data_dir}: "
              f"{_open_failure(exc, settings.data_dir)}", file=sys.stderr, flush=True)
        return 1
    if settings.validation_policy != "off":
        # The standard's tables (~0.1 s to load): before the first object, not during it.
        from archivist.validate.standard import tables

        tables()
    health = Health(http_activity=HttpActivity(worker[4], number, total) if worker else None)
    count = AssociationCount(worker[2], number, total, stamps=worker[3]) if worker else None
    dimse = DimseServer(archive, listen_socket=dimse_sock, count=count)
    try:
        dimse.start()
    except OSError as exc:
        print(f"error: cannot listen for DICOM on {settings.host}:{settings.dicom_port}: "
              f"{exc.strerror}", file=sys.stderr)
        archive.close()
        return 1
    dimse.wait_listening()
    health.dimse_quiet_for = dimse.quiet_for
    health.dimse_ready = True
    app = create_app(archive, health, background=number == 0)
    from archivist.dimse.forward import start_forwarders
    from archivist.dimse.ian import start_notifiers
    from archivist.dimse.send_jobs import SendJobRunner

    forwarders = start_forwarders(archive)  # one process per destination forwards (a lock)
    notifiers = start_notifiers(archive)  # Instance Availability Notifications (ian_to), alike
    send_jobs = SendJobRunner(archive).start()  # sends asked for over HTTP (a lock per job)

    # uvicorn's own limit_concurrency counts open connections, idle ones too: a client holding
    # 512 connections open locked everybody else out (503) for as long as it liked. Requests
    # in flight are capped instead, and a connection must send its request head in time.
    config = uvicorn.Config(
        _only_allowed_hosts(_limit_in_flight(_unavailable_once_stopped(app, health),
                                              MAX_HTTP_REQUESTS_IN_FLIGHT),
                            settings),
        host=settings.host,
        port=settings.http_port, log_level="warning", lifespan="off", access_log=False,
        timeout_keep_alive=30, ws_max_size=1 << 16,  # the event channel reads nothing
        http=_http_protocol(settings.http_head_timeout, settings.http_body_timeout),
        loop=event_loop_kind(settings), timeout_graceful_shutdown=STOP_GRACE,  # type: ignore[arg-type]
        ssl_certfile=settings.http_tls_cert or None, ssl_keyfile=settings.http_tls_key or None,
    )
    logging.getLogger("uvicorn.error").addFilter(_no_traceback_for_cancelled_at_stop)
    server = uvicorn.Server(config)

    original_startup = server.startup

    async def startup(sockets=None):  # type: ignore[no-untyped-def]
        await original_startup(sockets=sockets)
        if server.started:
            health.http_ready = True
            if number == 0:
                workers = f" ({total} worker processes)" if total > 1 else ""
                # An IPv6 address goes in brackets before a port (RFC 3986 3.2.2).
                host = f"[{settings.host}]" if ":" in settings.host else settings.host
                scheme = "https" if settings.http_tls_cert else "http"
                print(
                    f"Archivist is running{workers}.\n"
                    f"  DICOM  {settings.aet}@{host}:{dimse.port}\n"
                    f"  HTTP   {scheme}://{host}:{settings.http_port}/  "
                    f"(health: /healthz)\n"
                    f"  data   {settings.data_dir.resolve()}\n"
                    + (f"  index  {settings.index_location}\n" if settings.database_url
                       else "")
                    + (f"  blobs  {settings.blob_location}\n" if settings.s3_bucket else "")
                    + "Press Ctrl-C to stop.",
                    flush=True,
                )
            log.info("listening dicom=%s:%d http=%s:%d worker=%d/%d", settings.host,
                     dimse.port, settings.host, settings.http_port, number + 1, total)

    server.startup = startup  # type: ignore[method-assign]
    siblings = None
    if total > 1:
        # STOW-RS parts of one request stored by the other workers too (web.dicomweb.siblings).
        import functools

        from archivist.web.dicomweb import stow
        from archivist.web.dicomweb.siblings import Siblings

        siblings = Siblings(settings.data_dir / "run", settings.tmp_dir, number, total)
        take_part = functools.partial(stow.store_for_sibling, archive)

        async def startup_with_siblings(sockets=None):  # type: ignore[no-untyped-def]
            await startup(sockets=sockets)
            if server.started and await siblings.start(take_part):
                stow.use_siblings(siblings)

        server.startup = startup_with_siblings  # type: ignore[method-assign]

    original_shutdown = server.shutdown
    stop_dimse = _once(lambda: dimse.stop(STOP_GRACE))

    async def shutdown(sockets=None):  # type: ignore[no-untyped-def]
        health.stopping = True
        # The DIMSE side stops taking associations now and drains while HTTP does (it went
        # on accepting new ones for as long as the HTTP requests took).
        dimse_stopped = asyncio.get_running_loop().run_in_executor(None, stop_dimse)
        await original_shutdown(sockets=sockets)
        await dimse_stopped
        if siblings is not None:
            stow.use_siblings(None)
            await siblings.close()
        # uvicorn re-raises the signal after its own shutdown, which would kill the process
        # before the DIMSE side has finished: we stop in order and exit 0 instead.
        server._captured_signals.clear()  # type: ignore[attr-defined]

    server.shutdown = shutdown  # type: ignore[method-assign]
    try:
        server.run(sockets=[http_sock] if http_sock is not None else None)
    finally:
        health.stopping = True
        log.info("stopping: finishing running associations")
        stop_dimse()
        for forwarder in forwarders:
            forwarder.stop()
        for notifier in notifiers:
            notifier.stop()
        send_jobs.stop()
        archive.close()
        if worker is None:
            log.info("stopped")
    if not server.started:
        print(f"error: cannot listen for HTTP on {settings.host}:{settings.http_port}",
              file=sys.stderr)
        return 1
    return 0


def _open_failure(exc: Exception, data_dir: Path) -> str:
    """Why the archive could not be opened, in one line (a full disk, a broken index...): a
    traceback per worker and per attempt buried it, and SQLAlchemy's text can quote SQL."""
    import shutil

    cause = getattr(exc, "orig", None) or exc
    if isinstance(cause, OSError) and cause.strerror:
        text = f"{cause.strerror}: {cause.filename}" if cause.filename else cause.strerror
    else:
        text = (str(cause).splitlines() or [type(cause).__name__])[0]
    with contextlib.suppress(OSError):
        if shutil.disk_usage(data_dir).free < 1024 * 1024:
            text += " (its file system is full)"
    return text


def _no_traceback_for_cancelled_at_stop(record: logging.LogRecord) -> bool:
    """Drop uvicorn's "Exception in ASGI application" for a request cancelled because the
    archive stopped (its own line "Cancel N running task(s) ..." says so): a traceback per
    such request read like a crash."""
    exc = record.exc_info[1] if record.exc_info else None
    return not isinstance(exc, asyncio.CancelledError)


def _once(fn: Any) -> Any:
    """`fn` run by the first call only; a call while it runs waits for it to end."""
    lock = threading.Lock()
    done = False

    def call() -> None:
        nonlocal done
        with lock:
            if not done:
                done = True
                fn()

    return call


if __name__ == "__main__":
    sys.exit(_lean_main(sys.argv[1:]))
