"""Where inventories come from: this archive's index, files, or a live repository.

A live repository is read with Repository Query when it accepts that SOP Class (whole levels at
once, paged by record key), else with plain Study Root C-FIND level by level (studies, then the
series of each study, then the instances of each series), which every archive answers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from pydicom.dataset import Dataset

from archivist.core.levels import QueryLevel
from archivist.errors import ArchivistError
from archivist.inventory import REPOSITORY_QUERY, STUDY_ROOT_FIND, scope_by_level
from archivist.inventory.model import Inventory, removal_reason
from archivist.inventory.remote import (
    Remote,
    RemoteError,
    associate,
    find,
    repository_walk,
    supports,
)

STUDY_KEYS = ("StudyInstanceUID", "PatientID", "PatientName", "StudyDate", "AccessionNumber",
              "ModalitiesInStudy", "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances")
SERIES_KEYS = ("StudyInstanceUID", "SeriesInstanceUID", "Modality", "SeriesNumber",
               "NumberOfSeriesRelatedInstances")
INSTANCE_KEYS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID",
                 "InstanceNumber")
Progress = Callable[[str, int], None]


def of_archive(archive: Any, level: str = "INSTANCE",
               scope: Iterable[tuple[str, str]] = ()) -> Inventory:
    """This archive's inventory, from the index."""
    from archivist.inventory.builder import InventoryBuilder, InventorySpec

    built = InventoryBuilder(archive).build(InventorySpec(level=level, scope=list(scope)))
    inv = Inventory.from_datasets(built.instances, source="this archive")
    if inv.level == "INSTANCE":
        for st in inv.studies.values():
            for se in st.series.values():
                for uid, rec in se.instances.items():
                    row = archive.index.get_instance(uid)
                    rec.size = int(row["size"]) if row is not None else None
    return inv


def _identifier(level: str, keys: Iterable[str], scope: dict[str, str]) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for k in keys:
        setattr(ds, k, scope.get(k, ""))
    for k, v in scope.items():
        if k not in ds:
            setattr(ds, k, v)
    return ds


def of_remote(remote: Remote, level: str = "INSTANCE", scope: Iterable[tuple[str, str]] = (),
              *, method: str = "auto", page_size: int = 500,
              progress: Progress | None = None) -> Inventory:
    """The inventory of a live repository.

    Parameters
    ----------
    method
        ``auto`` (Repository Query when offered, else C-FIND), ``rq`` or ``find``.
    """
    depth = {"STUDY": 1, "SERIES": 2, "IMAGE": 3, "INSTANCE": 3}.get(level.upper())
    if depth is None:
        raise ArchivistError(f"level must be study, series or instance, not {level!r}")
    if method not in ("auto", "rq", "find"):
        raise ArchivistError(f"method must be auto, rq or find, not {method!r}")
    scope_map = dict(scope)
    assoc = None
    if method in ("auto", "rq"):
        # Proposed alone: some archives (DCMTK 3.6.7 dcmqrscp) drop an association that
        # proposes a SOP Class they do not know, instead of rejecting that one context.
        try:
            assoc = associate(remote, [REPOSITORY_QUERY])
        except RemoteError:
            if method == "rq":
                raise
        if assoc is not None and not supports(assoc, REPOSITORY_QUERY):
            assoc.release()
            assoc = None
            if method == "rq":
                raise RemoteError(f"{remote} does not offer Repository Query")
    use_rq = assoc is not None
    if assoc is None:
        assoc = associate(remote, [STUDY_ROOT_FIND])
    try:
        inv = Inventory(level=("STUDY", "SERIES", "INSTANCE")[depth - 1],
                        source=f"{remote} ({'Repository Query' if use_rq else 'C-FIND'})")
        if use_rq:
            _walk_rq(assoc, inv, depth, scope_map, page_size, progress)
        else:
            _walk_find(assoc, inv, depth, scope_map, progress)
        _scoped_aggregates(inv, scope_map)
        return inv
    finally:
        if assoc.is_established:
            assoc.release()


def _walk_rq(assoc: Any, inv: Inventory, depth: int, scope: dict[str, str], page_size: int,
             progress: Progress | None) -> None:
    """Studies, series and instances, one Repository Query walk a level, each with the scope
    keys of its level and the levels above; with series or instance keys in the scope, the
    levels below are walked too and a study is kept only when some of it matches them, as in
    :func:`_walk_find`."""
    levels = scope_by_level(scope.items())
    study_scope = dict(levels[QueryLevel.STUDY])
    series_scope = {**study_scope, **dict(levels[QueryLevel.SERIES])}
    image_scope = {**series_scope, **dict(levels[QueryLevel.IMAGE])}
    deeper = 3 if levels[QueryLevel.IMAGE] else 2 if levels[QueryLevel.SERIES] else 1
    walk = max(depth, deeper)

    def keys(names: tuple[str, ...], level_scope: dict[str, str]) -> dict[str, Any]:
        # Removed from Operational Use (universal) asks for records removed and not yet
        # purged too (PS3.4 C.6.4.1.1.3): they are not held, and the diff names them as
        # removed with their Reason for Removal. A peer that does not support the key ignores
        # it and returns the records in operational use only.
        out: dict[str, Any] = {k: "" for k in names}
        out["RemovedFromOperationalUse"] = ""
        out["ReasonForRemovalCodeSequence"] = []
        out.update(level_scope)
        return out

    def removed(ds: Dataset, uid_keyword: str, level: str) -> bool:
        if str(ds.get("RemovedFromOperationalUse", "") or "").upper() != "YES":
            return False
        inv.mark_removed(str(ds.get(uid_keyword, "")), level, str(ds.get("StudyInstanceUID", "")),
                         removal_reason(ds))
        return True

    for ds in repository_walk(assoc, "STUDY", keys(STUDY_KEYS, study_scope),
                              page_size=page_size):
        if not removed(ds, "StudyInstanceUID", "STUDY"):
            inv.add_study(ds)
        if progress:
            progress("STUDY", len(inv.studies))
    if walk >= 2:
        for n, ds in enumerate(repository_walk(assoc, "SERIES", keys(SERIES_KEYS, series_scope),
                                               page_size=page_size), 1):
            if not removed(ds, "SeriesInstanceUID", "SERIES") \
                    and str(ds.StudyInstanceUID) in inv.studies:
                inv.add_series(ds)
            if progress:
                progress("SERIES", n)
    if walk >= 3:
        for n, ds in enumerate(repository_walk(assoc, "IMAGE", keys(INSTANCE_KEYS, image_scope),
                                               page_size=page_size), 1):
            if not removed(ds, "SOPInstanceUID", "INSTANCE") \
                    and str(ds.StudyInstanceUID) in inv.studies:
                inv.add_instance(ds)
            if progress:
                progress("IMAGE", n)
    for study_uid in list(inv.studies):
        _keep_in_scope(inv, study_uid, depth, deeper)


def _keep_in_scope(inv: Inventory, study_uid: str, depth: int, deeper: int) -> None:
    """A study walked `deeper` than `depth` for a scope with series (2) or instance (3) keys:
    its series without a matching instance go, then the study when no series is left; what
    was walked below `depth` for the scope only is then dropped."""
    study = inv.studies[study_uid]
    if deeper > 2:
        for series_uid in [uid for uid, se in study.series.items() if not se.instances]:
            del study.series[series_uid]  # none of it in scope
    if deeper > 1 and not study.series:
        del inv.studies[study_uid]  # nothing of it in scope
        return
    if depth < 3:
        for se in study.series.values():
            se.instances.clear()
    if depth < 2:
        study.series.clear()


def _scoped_aggregates(inv: Inventory, scope: dict[str, str]) -> None:
    """With scope keys below STUDY level, a study's counts and modalities (and, with IMAGE
    keys, a series' count) are the source's for the whole study (series), not for what of it
    is in scope: left unknown, so a diff does not compare them with a copy of the scope."""
    by_level = scope_by_level(scope.items())
    if not (by_level[QueryLevel.SERIES] or by_level[QueryLevel.IMAGE]):
        return
    for st in inv.studies.values():
        st.number_of_series = st.number_of_instances = None
        st.modalities = ""
        if by_level[QueryLevel.IMAGE]:
            for se in st.series.values():
                se.number_of_instances = None


def _walk_find(assoc: Any, inv: Inventory, depth: int, scope: dict[str, str],
               progress: Progress | None) -> None:
    """Studies, then the series of each, then the instances of each series, each query with
    the scope keys of its level; with series or instance keys in the scope, a study is in
    the inventory only when some of its series (instances) match them, as in this archive's
    own inventories (:func:`~archivist.inventory.scope_by_level`)."""
    levels = scope_by_level(scope.items())
    study_scope, series_scope, image_scope = (
        dict(levels[level]) for level in (QueryLevel.STUDY, QueryLevel.SERIES, QueryLevel.IMAGE))
    deeper = 3 if image_scope else 2 if series_scope else 1
    for ds in find(assoc, _identifier("STUDY", STUDY_KEYS, study_scope)):
        inv.add_study(ds)
    if progress:
        progress("STUDY", len(inv.studies))
    walk = max(depth, deeper)
    if walk < 2:
        return
    n_series = n_instances = 0
    for study_uid in list(inv.studies):
        ident = _identifier("SERIES", SERIES_KEYS,
                            {**series_scope, "StudyInstanceUID": study_uid})
        for ds in find(assoc, ident):
            inv.add_series(ds, study_uid)
            n_series += 1
        if progress:
            progress("SERIES", n_series)
        if walk >= 3:
            for series_uid in list(inv.studies[study_uid].series):
                ident = _identifier("IMAGE", INSTANCE_KEYS,
                                    {**image_scope, "StudyInstanceUID": study_uid,
                                     "SeriesInstanceUID": series_uid})
                for ds in find(assoc, ident):
                    inv.add_instance(ds, study_uid, series_uid)
                    n_instances += 1
                if progress:
                    progress("IMAGE", n_instances)
        _keep_in_scope(inv, study_uid, depth, deeper)
