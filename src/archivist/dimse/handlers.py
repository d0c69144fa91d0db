"""DIMSE service handlers: thin translators between pynetdicom events and the archive.

Each ``handle_*`` takes a pynetdicom :class:`~pynetdicom.events.Event` (or anything with the same
attributes) and calls the archive's one ingest, one search or one retrieve; they do not depend on
how associations are driven, so the acceptor can change underneath them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom.presentation import PresentationContext, build_context

from archivist.archive.archive import Archive
from archivist.archive.ingest import Origin
from archivist.archive.retrieve import InstanceRef, StoredInstance, check_unique_key
from archivist.core.levels import QueryLevel
from archivist.core.matching import value_matches
from archivist.dimse.charset import choose_charset
from archivist.dimse.services import (
    Service,
    load_services,
    names_context_class,
    negotiated_sop_class,
    request_sop_class,
)
from archivist.dimse.status import Status, query_failure, status_dataset, store_failure
from archivist.errors import ArchivistError, QueryError

log = logging.getLogger("archivist.dimse")

STUDY_ROOT = {
    "1.2.840.10008.5.1.4.1.2.2.1", "1.2.840.10008.5.1.4.1.2.2.2", "1.2.840.10008.5.1.4.1.2.2.3",
}


def _peer(event: Any) -> tuple[str, str]:
    requestor = event.assoc.requestor
    aet = requestor.ae_title
    if isinstance(aet, bytes):
        aet = aet.decode("ascii", "replace")
    return str(aet).strip(), str(requestor.address)


class Handlers:
    """The archive's DIMSE service handlers (bound to pynetdicom events by the server)."""

    def __init__(self, archive: Archive, extra: list[Service] | None = None) -> None:
        self.archive = archive
        self.settings = archive.settings
        self.extra = load_services(archive) if extra is None else extra
        self._extra = {(s.message, s.sop_class): s.handler for s in self.extra}

    def extra_handler(self, message: str, event: Any) -> Any:
        """The handler a feature registered for this message and SOP class, or None. A request
        naming the class of the instances its context's class operates on (UPS Push on a UPS
        Pull context, PS3.4 CC.3.1.1) goes to the negotiated class's handler."""
        named = request_sop_class(event)
        negotiated = negotiated_sop_class(event)
        if negotiated and negotiated != named and names_context_class(named, negotiated):
            return self._extra.get((message, negotiated))
        return self._extra.get((message, named))

    def handle_n(self, message: str, event: Any) -> Any:
        """N-* requests go to the registered service; anything else is No Such SOP Class."""
        handler = self.extra_handler(message, event)
        if handler is None:
            return Status.NO_SUCH_SOP_CLASS, None
        return handler(event)

    # -- Verification --------------------------------------------------------------------------

    def handle_echo(self, event: Any) -> int:
        """C-ECHO (PS3.4 A.4): always Success."""
        return Status.SUCCESS

    # -- Storage -------------------------------------------------------------------------------

    def handle_store(self, event: Any) -> Dataset | int:
        """C-STORE (PS3.4 B.2): one object through the ingest pipeline, Success only when durable."""
        req = event.request
        aet, address = _peer(event)
        checks = {"expected_sop_class": str(req.AffectedSOPClassUID),
                  "expected_sop_instance": str(req.AffectedSOPInstanceUID)}
        origin = Origin("dimse", aet, address)
        try:
            try:
                path = Path(event.dataset_path)
            except AttributeError:
                # Chunked reception is off (should not happen in the server): from memory.
                self.archive.ingest.store_bytes(event.encoded_dataset(include_meta=True),
                                                origin, **checks)
            else:
                self.archive.ingest.store_file(path, origin, consume=True, **checks)
        except ArchivistError as exc:
            # The reason without the values it quotes (a validation finding quotes patient data)
            log.warning("C-STORE from %s refused: %s", aet, str(exc).partition(": ")[0])
            return store_failure(exc)
        except Exception:  # last line of defence: a clear failure, never a crash
            log.exception("C-STORE from %s failed unexpectedly", aet)
            return status_dataset(Status.CANNOT_UNDERSTAND, "Internal error while storing")
        return Status.SUCCESS

    # -- Query ---------------------------------------------------------------------------------

    def _parse(self, event: Any, *, find: bool = False, identifier: Dataset | None = None
               ) -> tuple[QueryLevel, Any, str | list[str]]:
        model = str(event.request.AffectedSOPClassUID)
        if identifier is None:
            identifier = event.identifier
        level_text = identifier.get("QueryRetrieveLevel", "")
        try:
            level = QueryLevel.parse(level_text or "")
        except ValueError:
            raise QueryError("Query/Retrieve Level missing or unknown") from None
        if model in STUDY_ROOT and level is QueryLevel.PATIENT:
            raise QueryError("PATIENT level is not part of the Study Root model")
        query = self.archive.search.query_from_identifier(level, identifier,
                                                          study_aggregates=find)
        # Instance Availability and Retrieve AE Title (PS3.4 C.4.1.1.3.2) are the same for
        # everything stored here: a value that names them matches all, any other none.
        ours = {"InstanceAvailability": "ONLINE", "RetrieveAETitle": self.settings.aet}
        query.constraints = [c for c in query.constraints
                             if c.keyword not in ours or not value_matches(c, ours[c.keyword])]
        charset = identifier.get("SpecificCharacterSet") or ""
        return level, query, charset

    def _location(self, query: Any) -> dict[str, str]:
        """The location keys a C-FIND asked for, with this archive's values."""
        out = {}
        if "InstanceAvailability" in query.return_keys:
            out["InstanceAvailability"] = "ONLINE"
        if "RetrieveAETitle" in query.return_keys:
            out["RetrieveAETitle"] = self.settings.aet
        return out

    def handle_find(self, event: Any) -> Iterator[tuple[int, Dataset | None]]:
        """C-FIND (PS3.4 C.4.1): stream pending responses; honours C-CANCEL."""
        extra = self.extra_handler("C-FIND", event)
        if extra is not None:
            yield from extra(event)
            return
        aet, _ = _peer(event)
        try:
            level, query, charset = self._parse(event, find=True)
        except Exception as exc:  # noqa: BLE001
            status, comment = query_failure(exc)
            log.warning("C-FIND from %s refused: %s", aet, comment.partition(": ")[0])
            yield status_dataset(status, comment), None  # type: ignore[misc]
            return
        limit = self.settings.find_max_results
        count = 0
        location = self._location(query)
        try:
            for ds in self.archive.search.find(query):
                if event.is_cancelled:
                    yield Status.CANCEL, None
                    return
                for keyword, value in location.items():
                    setattr(ds, keyword, value)
                cs = choose_charset(ds, charset)
                if cs:
                    ds.SpecificCharacterSet = cs
                yield Status.PENDING, ds
                count += 1
                if limit and count >= limit:
                    log.info("C-FIND from %s cut at %d results", aet, limit)
                    break
        except Exception as exc:  # noqa: BLE001
            status, comment = query_failure(exc)
            log.warning("C-FIND from %s failed: %s", aet, comment.partition(": ")[0])
            yield status_dataset(status, comment), None  # type: ignore[misc]
            return
        log.info("C-FIND from %s level=%s matches=%d", aet, level.value, count)
        yield Status.SUCCESS, None

    # -- Retrieve ------------------------------------------------------------------------------

    def _refs(self, event: Any) -> list[InstanceRef]:
        """The instances a C-MOVE / C-GET names; an Identifier without the Unique Key of its
        level is refused (QueryError: 0xA900 with an Error Comment), as dcm4chee does. Only
        the Unique Keys identify what is retrieved (:func:`retrieve_keys`)."""
        model = str(event.request.AffectedSOPClassUID)
        _, query, _ = self._parse(event, identifier=retrieve_keys(event.identifier,
                                                                  model in STUDY_ROOT))
        check_unique_key(query)
        return list(self.archive.retrieve.instances(query))

    def _load(self, ref: InstanceRef) -> StoredInstance:
        """The instance, read when its sub-operation is sent (as stored when the peer accepts
        its transfer syntax); a read failure counts as a failed sub-operation there."""
        return self.archive.retrieve.stored(ref)

    def handle_move(self, event: Any) -> Iterator[Any]:
        """C-MOVE (PS3.4 C.4.2): to configured destinations only (unknown: 0xA801)."""
        extra = self.extra_handler("C-MOVE", event)
        if extra is not None:
            yield from extra(event)
            return
        aet, _ = _peer(event)
        dest = event.move_destination
        if isinstance(dest, bytes):
            dest = dest.decode("ascii", "replace")
        dest = str(dest).strip()
        peer = self.settings.peer(dest)
        if peer is None:
            log.warning("C-MOVE from %s to unknown destination %r", aet, dest)
            yield None, None
            return
        try:
            refs = self._refs(event)
        except Exception as exc:  # noqa: BLE001
            status, comment = query_failure(exc)
            log.warning("C-MOVE from %s refused: %s", aet, comment.partition(": ")[0])
            yield peer.host, peer.port
            yield status_dataset(status, comment), None
            return
        yield peer.host, peer.port, {"contexts": contexts_for(refs)}
        yield len(refs)
        log.info("C-MOVE from %s to %s: %d instances", aet, dest, len(refs))
        for ref in refs:
            if event.is_cancelled:
                yield Status.CANCEL, None
                return
            yield Status.PENDING, self._load(ref)

    def handle_get(self, event: Any) -> Iterator[Any]:
        """C-GET (PS3.4 C.4.3): sub-operations over the same association."""
        extra = self.extra_handler("C-GET", event)
        if extra is not None:
            yield from extra(event)
            return
        aet, _ = _peer(event)
        try:
            refs = self._refs(event)
        except Exception as exc:  # noqa: BLE001
            status, comment = query_failure(exc)
            log.warning("C-GET from %s refused: %s", aet, comment.partition(": ")[0])
            yield status_dataset(status, comment), None
            return
        yield len(refs)
        log.info("C-GET from %s: %d instances", aet, len(refs))
        for ref in refs:
            if event.is_cancelled:
                yield Status.CANCEL, None
                return
            yield Status.PENDING, self._load(ref)


#: The Unique Key of each level (PS3.4 C.6.1.1 Patient Root, C.6.2.1 Study Root), top first.
_UNIQUE_KEYS = (("PatientID", QueryLevel.PATIENT), ("StudyInstanceUID", QueryLevel.STUDY),
                ("SeriesInstanceUID", QueryLevel.SERIES), ("SOPInstanceUID", QueryLevel.IMAGE))


def retrieve_keys(identifier: Dataset, study_root: bool) -> Dataset:
    """The part of a C-MOVE / C-GET Identifier that says what to retrieve: the Query/Retrieve
    Level, the Specific Character Set and the Unique Keys of that level and of the levels above
    it in the information model (PS3.4 C.4.2.2.1, C.4.3.2.1); with a Patient ID, its Issuer of
    Patient ID, which the patient's identity includes.

    The SCP identifies the entities to transfer "based upon the values in the Unique Keys"
    (PS3.4 C.4.2.3.1, C.4.3.3.1): other keys (Patient's Name, Modality, Study Date, the
    Patient ID of the Study Root model, the keys of lower levels, a C-FIND response used as the
    Identifier...) neither narrow the retrieve nor make it fail, as in Orthanc (Modality at
    STUDY level would otherwise be matched as C-FIND matches it, against the study's
    series). An Identifier whose level is missing or unknown is returned unchanged (it is
    refused when parsed).
    """
    try:
        level = QueryLevel.parse(str(identifier.get("QueryRetrieveLevel", "") or ""))
    except ValueError:
        return identifier
    keep = ["QueryRetrieveLevel", "SpecificCharacterSet"]
    keep += [keyword for keyword, key_level in _UNIQUE_KEYS
             if key_level.rank <= level.rank
             and not (study_root and key_level is QueryLevel.PATIENT)]
    if "PatientID" in keep:
        # A Patient ID is unique only within its issuer: C-FIND answers two patients for one
        # ID of two issuers, and a retrieve naming the issuer must not send the other's.
        keep.append("IssuerOfPatientID")
    out = Dataset()
    for keyword in keep:
        if keyword in identifier:
            out.add(identifier.data_element(keyword))  # type: ignore[arg-type]
    return out


def contexts_for(refs: list[InstanceRef]) -> list[PresentationContext]:
    """Presentation contexts to propose for sending `refs` (at most 128).

    One context per (SOP Class, stored transfer syntax); uncompressed ones also offer Explicit and
    Implicit VR Little Endian so any peer can take them, and a SOP Class stored compressed also
    gets a context of those two, so a peer that accepts only uncompressed syntaxes (DCMTK
    ``storescp`` by default) receives the objects decompressed.
    """
    native = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
    uncompressed = {ExplicitVRLittleEndian, ImplicitVRLittleEndian, "1.2.840.10008.1.2.2"}
    wanted: dict[tuple[str, tuple[str, ...]], None] = {}
    compressed: dict[str, None] = {}  # classes stored compressed, in the order first met
    plain: set[str] = set()  # classes that already have an uncompressed context
    for ref in refs:
        sop_class, ts = ref.sop_class_uid, ref.transfer_syntax_uid
        if ts in uncompressed:
            wanted[(sop_class, tuple(dict.fromkeys([ts, *native])))] = None
            plain.add(sop_class)
        else:
            wanted[(sop_class, (ts,))] = None
            compressed[sop_class] = None
    for sop_class in compressed:
        if sop_class not in plain:
            wanted[(sop_class, tuple(native))] = None
    if len(wanted) <= 128:
        return [build_context(UID(c), list(tss)) for c, tss in wanted]
    by_class: dict[str, list[str]] = {}
    for c, tss in wanted:
        merged = by_class.setdefault(c, [])
        merged.extend(s for s in tss if s not in merged)
    return [build_context(UID(c), tss) for c, tss in list(by_class.items())[:128]]
