"""Verified migration: pull another archive into this one, then prove nothing was lost.

Order of work:

1. Inventory the source (Repository Query when it offers it, else C-FIND study by study, series
   by series) down to instances.
2. Compare with this archive's index: what is already here is skipped. That comparison *is* the
   resume point, so a migration interrupted by a crash, a restart or a dropped association is
   continued by running it again; nothing else is kept between runs.
3. Retrieve what is missing, a study at a time (the whole study when none of it is here, else
   the missing series, else the missing instances) by C-GET over the same association, or by
   C-MOVE to our own AE title (a receiver is started for the duration). Every object goes through
   the one ingest. A retrieve that fails (the association dropped, a failure status) is retried
   on a new association, up to ``attempts`` times per study.
4. Inventory the source again and diff it against this archive: the proof. Every instance of the
   source is here, or the list of what is not and the last reason seen for its study.

The rate limit counts instances per second, applied between retrieve requests.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydicom.dataset import Dataset

from archivist.archive.archive import Archive
from archivist.core.levels import QueryLevel
from archivist.core.pynetdicom_race import install as install_scu_guard
from archivist.errors import ArchivistError
from archivist.inventory import STUDY_ROOT_FIND, STUDY_ROOT_GET, STUDY_ROOT_MOVE, scope_by_level
from archivist.inventory.diff import DiffResult, diff
from archivist.inventory.model import Inventory, StudyRecord
from archivist.inventory.remote import Remote, RemoteError, associate, get, move
from archivist.inventory.sources import of_remote

log = logging.getLogger("archivist.migrate")

#: Storage SOP Classes offered for C-GET when the source does not report SOP Class UIDs.
COMMON_STORAGE = [
    "1.2.840.10008.5.1.4.1.1.1", "1.2.840.10008.5.1.4.1.1.1.1", "1.2.840.10008.5.1.4.1.1.1.1.1",
    "1.2.840.10008.5.1.4.1.1.1.2", "1.2.840.10008.5.1.4.1.1.1.2.1", "1.2.840.10008.5.1.4.1.1.2",
    "1.2.840.10008.5.1.4.1.1.2.1", "1.2.840.10008.5.1.4.1.1.3.1", "1.2.840.10008.5.1.4.1.1.4",
    "1.2.840.10008.5.1.4.1.1.4.1", "1.2.840.10008.5.1.4.1.1.6.1", "1.2.840.10008.5.1.4.1.1.6.2",
    "1.2.840.10008.5.1.4.1.1.7", "1.2.840.10008.5.1.4.1.1.7.1", "1.2.840.10008.5.1.4.1.1.7.2",
    "1.2.840.10008.5.1.4.1.1.7.3", "1.2.840.10008.5.1.4.1.1.7.4", "1.2.840.10008.5.1.4.1.1.12.1",
    "1.2.840.10008.5.1.4.1.1.12.2", "1.2.840.10008.5.1.4.1.1.20", "1.2.840.10008.5.1.4.1.1.128",
    "1.2.840.10008.5.1.4.1.1.130", "1.2.840.10008.5.1.4.1.1.481.1",
    "1.2.840.10008.5.1.4.1.1.481.2", "1.2.840.10008.5.1.4.1.1.481.3",
    "1.2.840.10008.5.1.4.1.1.481.5", "1.2.840.10008.5.1.4.1.1.88.11",
    "1.2.840.10008.5.1.4.1.1.88.22", "1.2.840.10008.5.1.4.1.1.88.33",
    "1.2.840.10008.5.1.4.1.1.88.59", "1.2.840.10008.5.1.4.1.1.104.1",
    "1.2.840.10008.5.1.4.1.1.66", "1.2.840.10008.5.1.4.1.1.66.4", "1.2.840.10008.5.1.4.1.1.11.1",
    "1.2.840.10008.5.1.4.1.1.77.1.4", "1.2.840.10008.5.1.4.1.1.13.1.3",
    "1.2.840.10008.5.1.4.1.1.201.1",
]

#: Transfer syntaxes a C-GET offers for each SOP Class, best first. Each gets a presentation
#: context of its own: the source accepts one transfer syntax per context (and Archivist, like
#: most, the first one the requestor lists), so a single context listing them all made every
#: object arrive in that one syntax, decompressed and re-encoded by the source (or failed where it
#: cannot decompress, e.g. 12-bit JPEG). The uncompressed ones come first, so when a class's
#: own syntax did not fit in the 128 contexts its objects can still be sent re-encoded.
GET_TRANSFER_SYNTAXES = [
    "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
    "1.2.840.10008.1.2",  # Implicit VR Little Endian
    "1.2.840.10008.1.2.4.50",  # JPEG Baseline
    "1.2.840.10008.1.2.4.70",  # JPEG Lossless SV1
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 lossless
    "1.2.840.10008.1.2.4.91",  # JPEG 2000
    "1.2.840.10008.1.2.5",  # RLE Lossless
    "1.2.840.10008.1.2.4.80",  # JPEG-LS lossless
    "1.2.840.10008.1.2.4.51",  # JPEG Extended (12-bit)
    "1.2.840.10008.1.2.4.81",  # JPEG-LS near-lossless
    "1.2.840.10008.1.2.4.57",  # JPEG Lossless
    "1.2.840.10008.1.2.1.99",  # Deflated Explicit VR Little Endian
    "1.2.840.10008.1.2.2",  # Explicit VR Big Endian
    "1.2.840.10008.1.2.4.201",  # HTJ2K lossless
    "1.2.840.10008.1.2.4.202",  # HTJ2K lossless RPCL
    "1.2.840.10008.1.2.4.203",  # HTJ2K
]

#: Presentation contexts an association may carry (PS3.8 9.3.2.2: odd IDs 1 to 255), less the
#: C-GET and C-FIND contexts of the migration's own association.
_STORAGE_CONTEXT_BUDGET = 128 - 2


def get_storage_contexts(classes: list[str]) -> list[Any]:
    """Storage contexts (with us as SCP) for a C-GET of objects of `classes`, so the source
    can send each as it stores it: one context per (SOP Class, transfer syntax), the syntaxes
    of :data:`GET_TRANSFER_SYNTAXES` taken in turn for every class while the 126 contexts last,
    then every other syntax pynetdicom knows when room is left (PS3.4 C.4.3: the C-GET SCP
    sends each sub-operation on a context the requestor proposed for its SOP Class)."""
    from pynetdicom import ALL_TRANSFER_SYNTAXES
    from pynetdicom.presentation import build_context

    classes = classes[:_STORAGE_CONTEXT_BUDGET]
    syntaxes = GET_TRANSFER_SYNTAXES + [ts for ts in ALL_TRANSFER_SYNTAXES
                                        if ts not in GET_TRANSFER_SYNTAXES]
    contexts: list[Any] = []
    # A video is stored in an MPEG or HEVC syntax and cannot be decoded to another: those
    # syntaxes come first for the video classes (in turn they came too late to be proposed
    # once the source held 7 classes or more).
    video = [ts for ts in ALL_TRANSFER_SYNTAXES if ts.startswith(_VIDEO_SYNTAX_PREFIXES)]
    for sop_class in (c for c in classes if c in VIDEO_CLASSES):
        for ts in video:
            if len(contexts) < _STORAGE_CONTEXT_BUDGET // 2:
                contexts.append(build_context(sop_class, [ts]))
    for ts in syntaxes:
        for sop_class in classes:
            if len(contexts) == _STORAGE_CONTEXT_BUDGET:
                return contexts
            if sop_class in VIDEO_CLASSES and ts in video:
                continue  # proposed above
            contexts.append(build_context(sop_class, [ts]))
    return contexts


#: Video Endoscopic, Microscopic and Photographic Image Storage.
VIDEO_CLASSES = frozenset({"1.2.840.10008.5.1.4.1.1.77.1.1.1", "1.2.840.10008.5.1.4.1.1.77.1.2.1",
                           "1.2.840.10008.5.1.4.1.1.77.1.4.1"})
#: MPEG-2, MPEG-4 AVC/H.264 and HEVC/H.265 (PS3.5 A.4.5-A.4.7; 1.2.840.10008.1.2.4.100-108).
_VIDEO_SYNTAX_PREFIXES = tuple(f"1.2.840.10008.1.2.4.10{n}" for n in range(9))


#: Progress callback: (phase, done, total) with phase "inventory", "retrieve" or "verify".
Progress = Callable[[str, int, int], None]


@dataclass
class MigrationReport:
    """What a migration did, and the proof."""

    source_counts: dict[str, int] = field(default_factory=dict)
    already_here: int = 0
    retrieved: int = 0
    requests: int = 0
    retries: int = 0
    failures: dict[str, str] = field(default_factory=dict)  # study UID -> last reason
    proof: DiffResult | None = None
    seconds: float = 0.0

    @property
    def complete(self) -> bool:
        return self.proof is not None and self.proof.count("missing") == 0 \
            and self.proof.count("different") == 0


def _present(archive: Archive, uids: list[str]) -> dict[str, str]:
    """The SOP Instance UIDs among `uids` that this archive's index holds, with their storage
    keys."""
    from sqlalchemy import select

    from archivist.index.schema import instance

    found: dict[str, str] = {}
    with archive.index.reader.connect() as conn:
        for i in range(0, len(uids), 500):
            chunk = uids[i:i + 500]
            found.update((r[0], r[1]) for r in conn.execute(
                select(instance.c.sop_instance_uid, instance.c.storage_key)
                .where(instance.c.sop_instance_uid.in_(chunk))))
    return found


def _bytes_gone(archive: Archive, uids: list[str]) -> set[str]:
    """The SOP Instance UIDs among `uids` that this archive's index holds but whose stored
    bytes are gone (a file removed behind its back): indexed is not servable, and the proof
    must not count them."""
    listed: set[str] | None = None  # a store without files (S3): its keys, listed once
    gone: set[str] = set()
    for sop, key in _present(archive, uids).items():
        path = archive.blobs.path(key)
        if path is not None:
            if not path.exists():
                gone.add(sop)
            continue
        if listed is None:
            listed = set(archive.blobs.keys())
        if key not in listed:
            gone.add(sop)
    return gone


class StoreHandler:
    """C-STORE sub-operations (of our C-GET, or sent to our receiver by the source's C-MOVE)
    into the archive's one ingest; success only once the object is durable and indexed."""

    def __init__(self, archive: Archive) -> None:
        self.archive = archive
        self.stored = 0

    def __call__(self, event: Any) -> int:
        from pathlib import Path

        from archivist.archive.ingest import Origin

        requestor = event.assoc.requestor
        aet = requestor.ae_title
        aet = (aet.decode("ascii", "replace") if isinstance(aet, bytes) else str(aet)).strip()
        origin = Origin("migrate", aet, str(requestor.address))
        expected = str(event.request.AffectedSOPClassUID)
        try:
            # pynetdicom configured to stream data sets to a file (as archivist serve does):
            # that file is the Part 10 object.
            received = event.dataset_path
        except AttributeError:
            received = None
        try:
            if received:
                self.archive.ingest.store_file(Path(received), origin,
                                               expected_sop_class=expected, consume=True)
            else:
                self.archive.ingest.store_bytes(event.encoded_dataset(include_meta=True), origin,
                                                expected_sop_class=expected)
        except ArchivistError as exc:
            log.warning("migration: object from %s refused: %s", aet,
                        str(exc).partition(": ")[0])  # no values (patient data)
            return 0xC000
        except Exception:
            log.exception("migration: storing an object from %s failed", aet)
            return 0xC000
        self.stored += 1
        return 0x0000


class _Receiver:
    """A Storage SCP for C-MOVE sub-operations, storing through the archive's one ingest."""

    def __init__(self, archive: Archive, port: int) -> None:
        from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, evt
        from pynetdicom.sop_class import _STORAGE_CLASSES  # type: ignore[attr-defined]

        self.handler = StoreHandler(archive)
        install_scu_guard()  # pynetdicom's lost-response race
        ae = AE(ae_title=archive.settings.aet)
        ae.maximum_pdu_size = archive.settings.max_pdu
        ae.network_timeout = archive.settings.network_timeout
        for uid in _STORAGE_CLASSES.values():
            ae.add_supported_context(uid, ALL_TRANSFER_SYNTAXES)
        host = "127.0.0.1" if archive.settings.host in ("", "0.0.0.0") else archive.settings.host
        try:
            self.server = ae.start_server((host, port), block=False,
                                          evt_handlers=[(evt.EVT_C_STORE, self.handler)])
        except OSError as exc:
            raise ArchivistError(
                f"cannot listen on {host}:{port} for the C-MOVE sub-operations "
                f"(--port): {exc.strerror or exc}") from None

    def close(self) -> None:
        if self.server is not None:
            self.server.shutdown()


def _scope_below_study(scope: list[tuple[str, str]]) -> str:
    """The deepest level of a scope's keys below STUDY ("SERIES", "IMAGE"), else "": a study
    or series is then retrieved by what of it is in scope (its series, its instances), never
    whole (a scope of Modality=CT copied the study's other series too)."""
    levels = scope_by_level(scope)
    return "IMAGE" if levels[QueryLevel.IMAGE] else "SERIES" if levels[QueryLevel.SERIES] else ""


class Migration:
    """Pull `remote` (or the `scope` of it) into `archive`.

    Parameters
    ----------
    method
        ``get`` (C-GET, no listener needed) or ``move`` (C-MOVE to our AE title, received on
        `move_port`, which the source must know as our address).
    rate
        At most this many instances per second (0: no limit).
    """

    def __init__(self, archive: Archive, remote: Remote, *, method: str = "get",
                 scope: list[tuple[str, str]] | None = None, move_port: int = 0,
                 rate: float = 0.0, attempts: int = 3, find_method: str = "auto",
                 progress: Progress | None = None) -> None:
        if method not in ("get", "move"):
            raise ArchivistError(f"retrieve method must be get or move, not {method!r}")
        if find_method not in ("auto", "rq", "find"):
            raise ArchivistError(f"how to inventory the source must be auto, rq or find, "
                                 f"not {find_method!r}")
        if method == "move" and not move_port:
            raise ArchivistError("C-MOVE needs --port: where the source sends to us")
        self.archive = archive
        self.remote = remote
        self.method = method
        self.scope = scope or []
        self.move_port = move_port
        self.rate = rate
        self.attempts = max(1, attempts)
        self.find_method = find_method
        self.progress = progress or (lambda phase, done, total: None)
        self._assoc: Any = None
        self._contexts: list[Any] = []

    # -- association -----------------------------------------------------------------------

    def _storage_contexts(self, inv: Inventory) -> list[Any]:
        """The storage contexts our C-GET proposes: see :func:`get_storage_contexts`."""
        found = [i.sop_class_uid for st in inv.studies.values()
                 for se in st.series.values() for i in se.instances.values()]
        classes = sorted({c for c in found if c})
        if len(classes) < len(set(found)) or not found:
            # The source did not say (dcmqrscp returns no SOP Class UID): offer the usual ones.
            classes += [c for c in COMMON_STORAGE if c not in classes]
        return get_storage_contexts(classes)

    def _open(self) -> Any:
        if self._assoc is not None and self._assoc.is_established:
            return self._assoc
        if self.method == "get":
            from pynetdicom import evt

            self._assoc = associate(self.remote, [STUDY_ROOT_GET, STUDY_ROOT_FIND],
                                    storage=self._contexts,
                                    evt_handlers=[(evt.EVT_C_STORE, self._store)])
        else:
            self._assoc = associate(self.remote, [STUDY_ROOT_MOVE, STUDY_ROOT_FIND])
        return self._assoc

    def _close(self) -> None:
        if self._assoc is not None:
            try:
                if self._assoc.is_established:
                    self._assoc.release()
            except Exception as exc:  # noqa: BLE001 - a broken association is dropped anyway
                log.debug("release failed: %s", type(exc).__name__)
            self._assoc = None

    # -- work ------------------------------------------------------------------------------

    def _plan(self, study: StudyRecord) -> tuple[list[Dataset], int]:
        """Retrieve identifiers for what of `study` is missing here, and how many instances."""
        uids = [i for se in study.series.values() for i in se.instances]
        here = _present(self.archive, uids)
        missing = len(uids) - len(here)
        if missing == 0:
            return [], 0
        below = _scope_below_study(self.scope)
        if not here and not below:
            ds = Dataset()
            ds.QueryRetrieveLevel = "STUDY"
            ds.StudyInstanceUID = study.study_instance_uid
            return [ds], missing
        out: list[Dataset] = []
        for se in study.series.values():
            gone = [u for u in se.instances if u not in here]
            if not gone:
                continue
            if len(gone) == len(se.instances) and below != "IMAGE":
                ds = Dataset()
                ds.QueryRetrieveLevel = "SERIES"
                ds.StudyInstanceUID = study.study_instance_uid
                ds.SeriesInstanceUID = se.series_instance_uid
                out.append(ds)
                continue
            for uid in gone:
                ds = Dataset()
                ds.QueryRetrieveLevel = "IMAGE"
                ds.StudyInstanceUID = study.study_instance_uid
                ds.SeriesInstanceUID = se.series_instance_uid
                ds.SOPInstanceUID = uid
                out.append(ds)
        return out, missing

    def _retrieve(self, ident: Dataset) -> None:
        assoc = self._open()
        if self.method == "get":
            result = get(assoc, ident)
        else:
            result = move(assoc, ident, self.archive.settings.aet)
        if result.status not in (0x0000, 0xB000):
            raise RemoteError(f"retrieve ended with status 0x{result.status:04X} "
                              f"({result.failed} failed)")
        if result.failed:
            raise RemoteError(f"{result.failed} sub-operations failed")

    def run(self) -> MigrationReport:
        report = MigrationReport()
        started = time.monotonic()
        self.progress("inventory", 0, 0)
        source = of_remote(self.remote, "INSTANCE", self.scope, method=self.find_method)
        report.source_counts = source.counts()
        total = report.source_counts["instances"]
        self._contexts = self._storage_contexts(source)
        self._store = StoreHandler(self.archive)
        receiver = _Receiver(self.archive, self.move_port) if self.method == "move" else None
        done = 0
        window_start = time.monotonic()
        window_count = 0
        try:
            for study in source.studies.values():
                attempt = 0
                while True:
                    plan, missing = self._plan(study)
                    if attempt == 0:
                        report.already_here += sum(len(se.instances)
                                                   for se in study.series.values()) - missing
                    if not plan:
                        break
                    if attempt >= self.attempts:
                        report.failures.setdefault(study.study_instance_uid,
                                                   "gave up after retries")
                        break
                    attempt += 1
                    try:
                        for ident in plan:
                            report.requests += 1
                            self._retrieve(ident)
                            if self.rate:
                                window_count += _count(ident, study)
                                ahead = window_count / self.rate - (time.monotonic() - window_start)
                                if ahead > 0:
                                    time.sleep(ahead)
                        report.failures.pop(study.study_instance_uid, None)
                    except (RemoteError, OSError) as exc:
                        report.retries += 1
                        report.failures[study.study_instance_uid] = str(exc)
                        log.warning("migration: study %s: %s (attempt %d)",
                                    study.study_instance_uid, exc, attempt)
                        self._close()
                        continue
                    after, _ = self._plan(study)
                    if not after:
                        break
                done += sum(len(se.instances) for se in study.series.values())
                self.progress("retrieve", done, total)
        finally:
            self._close()
            if receiver is not None:
                receiver.close()
        report.retrieved = max(0, total - report.already_here
                               - _missing_after(self.archive, source))
        self.progress("verify", 0, 0)
        report.proof = self.verify(source)
        report.seconds = time.monotonic() - started
        return report

    def verify(self, source: Inventory | None = None) -> DiffResult:
        """Diff the source (inventoried again) against this archive's records of its studies."""
        from archivist.inventory.sources import of_archive

        again = of_remote(self.remote, "INSTANCE", self.scope, method=self.find_method)
        here = of_archive(self.archive, "INSTANCE")
        here.studies = {uid: rec for uid, rec in here.studies.items() if uid in again.studies}
        if _scope_below_study(self.scope):
            # Only the series in scope are compared (the study's others are not the source's
            # concern here), and their studies' counts are the source's whole study's.
            for uid, rec in here.studies.items():
                keep = again.studies[uid].series
                rec.series = {s: se for s, se in rec.series.items() if s in keep}
        # An instance indexed here whose bytes are gone is not here: the diff names it missing.
        gone = _bytes_gone(self.archive, [i for st in here.studies.values()
                                          for se in st.series.values() for i in se.instances])
        for st in here.studies.values():
            for se in st.series.values():
                for uid in gone & se.instances.keys():
                    del se.instances[uid]
        return diff(again, here)


def _count(ident: Dataset, study: StudyRecord) -> int:
    level = ident.QueryRetrieveLevel
    if level == "STUDY":
        return sum(len(se.instances) for se in study.series.values())
    if level == "SERIES":
        se = study.series.get(str(ident.SeriesInstanceUID))
        return len(se.instances) if se else 1
    return 1


def _missing_after(archive: Archive, source: Inventory) -> int:
    uids = [i for st in source.studies.values() for se in st.series.values() for i in se.instances]
    return len(uids) - len(_present(archive, uids))
