"""Modality Worklist SCP (PS3.4 Annex K) answered from a folder of worklist files, as Orthanc's
worklists plugin and DCMTK's ``wlmscpfs`` do: a RIS (or a script) writes one DICOM file per
scheduled procedure step into ``worklist_dir``; modalities query it with C-FIND on the Modality
Worklist Information Model - FIND SOP Class (1.2.840.10008.5.1.4.31).

Matching follows C-FIND's (PS3.4 C.2.2.2 and K.6.1.2): single values, ``*`` / ``?`` wildcards,
date and time ranges, UID lists, person names case- and accent-insensitive as configured,
Empty Value Matching; a Scheduled Procedure Step Sequence key (Scheduled Station AE Title,
Modality, Scheduled Procedure Step Start Date and Time, Scheduled Performing Physician's Name...)
matches a file when one of its Scheduled Procedure Step items matches every key of the
query's item (K.2.2.1.2). Each match is answered with the keys asked for, filled from the file
(sequence keys item by item; absent values empty), in the query's character set when it names
one that can carry every value, else in the file's.

When the archive is also the modality's MPPS SCP (:mod:`archivist.dimse.mpps`), a scheduled
step that a Performed Procedure Step names (same Study Instance UID and Scheduled Procedure Step
ID) is answered with the Scheduled Procedure Step Status that step implies, as dcm4chee does:
STARTED while it is IN PROGRESS, then COMPLETED or DISCONTINUED; a query for SCHEDULED steps no
longer lists it.

The folder is read again at each query; a file's parsed data set is kept while its size and
modification time stay the same. Files that are not DICOM are skipped (logged once each).
Without ``worklist_dir`` the SOP class is not offered.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.sequence import Sequence

from archivist.archive.mpps import COMPLETED, DISCONTINUED, IN_PROGRESS, ProcedureSteps
from archivist.core.dataset_query import NOT_MATCHED
from archivist.core.dataset_query import answer as _answer
from archivist.core.dataset_query import shallow as _shallow
from archivist.core.dataset_query import value_of as _value
from archivist.core.matching import Constraint, parse_constraint, value_matches
from archivist.dimse.charset import UTF8, choose_charset
from archivist.dimse.services import Service, peer_aet
from archivist.dimse.status import Status, query_failure, status_dataset
from archivist.errors import QueryError

if TYPE_CHECKING:
    from archivist.archive.archive import Archive

log = logging.getLogger("archivist.dimse.worklist")

MODALITY_WORKLIST_FIND = "1.2.840.10008.5.1.4.31"
SPS = "ScheduledProcedureStepSequence"
_SPS_TAG = 0x00400100
#: Keys that say how to answer, not what to match.
_NOT_MATCHED = NOT_MATCHED
#: The Scheduled Procedure Step Status (0040,0020) a Performed Procedure Step's status implies.
_SPS_STATUS = {IN_PROGRESS: "STARTED", COMPLETED: "COMPLETED", DISCONTINUED: "DISCONTINUED"}
#: At most this many files are read from the folder per query.
MAX_FILES = 100_000


class WorklistHandler:
    """C-FIND on the Modality Worklist Information Model."""

    def __init__(self, folder: Path, pn_fold: bool = True,
                 steps: ProcedureSteps | None = None) -> None:
        self.folder = folder
        self.pn_fold = pn_fold
        self.steps = steps
        # name -> (modification time, size, inode, parsed data set); queries of several
        # associations read and update it at once (entries are replaced whole, never edited).
        self._cache: dict[str, tuple[int, int, int, Dataset | None]] = {}

    def __call__(self, event: Any) -> Iterator[tuple[Any, Dataset | None]]:
        identifier: Dataset = event.identifier
        try:
            top, items = self._constraints(identifier)
        except (QueryError, ValueError) as exc:
            status, comment = query_failure(exc if isinstance(exc, QueryError)
                                            else QueryError(str(exc)))
            yield status_dataset(status, comment), None
            return
        count = 0
        for ds in self._entries():
            ds = self._performed(ds)
            if event.is_cancelled:
                yield Status.CANCEL, None
                return
            # A worklist item is one scheduled step (K.6.1.2.2: the answer's Scheduled
            # Procedure Step Sequence holds one item): an entry with several is answered once
            # per step that matches, each answer with that step alone.
            for step in self._matching_steps(ds, top, items):
                yield Status.PENDING, in_query_charset(_answer(identifier, step),
                                                  identifier.get("SpecificCharacterSet"))
                count += 1
        log.info("worklist query from %s: %d scheduled steps", peer_aet(event), count)
        yield Status.SUCCESS, None

    # -- matching ------------------------------------------------------------------------------

    def _constraints(self, identifier: Dataset
                     ) -> tuple[list[Constraint], list[list[Constraint]]]:
        top: list[Constraint] = []
        items: list[list[Constraint]] = []
        for elem in identifier:
            keyword = elem.keyword
            if not keyword or keyword in _NOT_MATCHED:
                continue
            if elem.VR == "SQ":
                if keyword == SPS:
                    if len(elem.value or []) > 1:
                        # A sequence key holds a single item (PS3.4 C.2.2.2.6); two were
                        # matched as both at once, and found nothing without a word.
                        raise QueryError("Scheduled Procedure Step Sequence key: one item only")
                    for item in elem.value or []:
                        items.append(self._item_constraints(item))
                continue  # other sequences are return keys only
            c = parse_constraint(keyword, elem.value, empty_value_matching=True)
            if c is not None:
                top.append(c)
        return top, items

    @staticmethod
    def _item_constraints(item: Dataset) -> list[Constraint]:
        out = []
        for elem in item:
            if elem.keyword and elem.VR != "SQ":
                c = parse_constraint(elem.keyword, elem.value, empty_value_matching=True)
                if c is not None:
                    out.append(c)
        return out

    def _matching_steps(self, ds: Dataset, top: list[Constraint],
                        items: list[list[Constraint]]) -> list[Dataset]:
        """`ds` once per scheduled step of it that the query matches, with that step alone
        in its sequence (`ds` itself when it has at most one)."""
        if not all(value_matches(c, _value(ds, c.keyword), pn_fold=self.pn_fold) for c in top):
            return []
        steps = list(ds.get(SPS) or [])
        wanted = [w for w in items if w]
        matching = [step for step in steps or [Dataset()]
                    if all(all(value_matches(c, _value(step, c.keyword), pn_fold=self.pn_fold)
                               for c in w) for w in wanted)]
        if len(steps) <= 1:
            return [ds] if matching else []
        out = []
        for step in matching:
            # Without the whole sequence: copying it costs every answer a walk of every step.
            one = _shallow(ds, leave_out=_SPS_TAG)
            setattr(one, SPS, Sequence([step]))
            out.append(one)
        return out

    def _performed(self, ds: Dataset) -> Dataset:
        """`ds` with the status of its scheduled steps that were performed (MPPS), as a copy."""
        study = str(ds.get("StudyInstanceUID", "") or "").strip()
        if self.steps is None or not study or not ds.get(SPS):
            return ds
        try:
            states = self.steps.scheduled_step_states(study)
        except Exception:  # the worklist is still answered from its files
            log.exception("performed procedure steps of a worklist entry could not be read")
            return ds
        if not states:
            return ds
        out = _shallow(ds, leave_out=_SPS_TAG)
        items = []
        for item in ds[SPS].value:
            state = _SPS_STATUS.get(states.get(str(item.get("ScheduledProcedureStepID", "")
                                                   or "").strip(), ""))
            if state:
                item = _shallow(item)
                item.ScheduledProcedureStepStatus = state
            items.append(item)
        setattr(out, SPS, Sequence(items))
        return out

    # -- the folder ----------------------------------------------------------------------------

    def _entries(self) -> Iterator[Dataset]:
        try:
            names = sorted(os.listdir(self.folder))[:MAX_FILES]
        except OSError as exc:
            log.warning("worklist folder %s cannot be read: %s", self.folder, exc.strerror)
            return
        seen = set()
        for name in names:
            path = self.folder / name
            try:
                st = path.stat()
            except OSError:
                continue
            if not path.is_file() or st.st_size == 0:
                continue  # (an empty file: DCMTK's wlmscpfs keeps a "lockfile" there)
            seen.add(name)
            cached = self._cache.get(name)
            stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
            if cached is None or cached[:3] != stamp:
                ds = self._read(path)
                self._cache[name] = (*stamp, ds)
            else:
                ds = cached[3]
            if ds is not None:
                yield ds
        for gone in set(self._cache) - seen:
            self._cache.pop(gone, None)  # another query may have removed it already

    @staticmethod
    def _read(path: Path) -> Dataset | None:
        try:
            # Not the pixel data of an image someone left there (it would be kept in memory).
            ds = pydicom.dcmread(path, force=path.suffix.lower() == ".wl",
                                 stop_before_pixels=True)
            ds.decode()  # the character set applied once, here
            if SPS not in ds and "PatientName" not in ds and "PatientID" not in ds:
                raise InvalidDicomError("no worklist attributes")
            return ds
        except (InvalidDicomError, OSError, ValueError, TypeError, AttributeError,
                KeyError, EOFError) as exc:
            log.warning("worklist file %s skipped: %s", path.name, type(exc).__name__)
            return None


def in_query_charset(answer: Dataset, requested: Any) -> Dataset:
    """`answer` (in its file's character set) in the query's character set instead, when the
    query names one that can carry every value, as C-FIND of the archive answers (PS3.4
    C.4.1.1.3.2): a modality that asked in ISO_IR 100 gets ``Müller`` in Latin-1, not in the
    UTF-8 its worklist file was written in. Otherwise the file's character set."""
    if not requested:
        return answer
    chosen = choose_charset(answer, requested)
    terms = [requested] if isinstance(requested, str) else [str(t) for t in requested]
    if chosen == UTF8 and UTF8 not in terms:
        return answer  # the query's set cannot carry them: the file's
    if chosen:
        answer.SpecificCharacterSet = chosen
    elif "SpecificCharacterSet" in answer:
        del answer.SpecificCharacterSet
    return answer


def services(archive: Archive) -> list[Service]:
    """Modality Worklist FIND when ``worklist_dir`` is set (see :mod:`archivist.dimse.services`)."""
    folder = archive.settings.worklist_dir
    if not folder:
        return []
    handler = WorklistHandler(Path(folder), archive.settings.pn_case_insensitive,
                              ProcedureSteps(archive.index))
    return [Service(MODALITY_WORKLIST_FIND, "C-FIND", handler)]


__all__ = ["MODALITY_WORKLIST_FIND", "WorklistHandler", "in_query_charset", "services"]
