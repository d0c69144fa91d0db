"""Deleting from a running archive as an administrator does (QA, third-party walk through the
README's "Deleting, with tombstones"): what a delete promises to every client, and what the
HTTP delete answers when the index cannot be written.

Found by hand: with the index refusing the write (SQLite "database is locked" after the busy
timeout, or an I/O error), ``DELETE /api/studies/...`` answered a bare ``500 Internal Server
Error`` in text/plain. It is now 503 with a JSON body and ``Retry-After``, and nothing is
deleted. The failure is produced by the database itself (a trigger that aborts the write).
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from archivist.testing.datasets import make_instance, new_uid

from .conftest import dcmtk_tool

AET = "ARCHIVIST"


def _lower(headers: Any) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


def http(method: str, url: str) -> tuple[int, dict[str, str], Any]:
    req = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            body = resp.read()
            return resp.status, _lower(resp.headers), json.loads(body) if body else None
    except urllib.error.HTTPError as exc:
        body = exc.read()
        try:
            parsed = json.loads(body) if body else None
        except ValueError:
            parsed = body.decode(errors="replace")
        return exc.code, _lower(exc.headers), parsed


def make_study(folder: Path, *, series: int = 2, instances: int = 3) -> dict[str, Any]:
    """One study on disk: `series` series of `instances` instances each (CT then MR)."""
    folder.mkdir(parents=True, exist_ok=True)
    study = new_uid()
    made: dict[str, Any] = {"study": study, "series": [], "files": {}}
    for s in range(series):
        se = new_uid()
        sops = []
        for n in range(1, instances + 1):
            path = folder / f"{s}-{n}.dcm"
            ds = make_instance(path, study_uid=study, series_uid=se, series_number=s + 1,
                               instance_number=n, modality="CT" if s == 0 else "MR",
                               patient_id="QA-ADMIN")
            sops.append(str(ds.SOPInstanceUID))
            made["files"][str(ds.SOPInstanceUID)] = path
        made["series"].append((se, sops))
    return made


def storescu(port: int, *files: Path) -> None:
    run = subprocess.run([dcmtk_tool("storescu"), "-aec", AET, "127.0.0.1", str(port),
                          *map(str, files)], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "TCP_NODELAY": "1"}, check=False)
    assert run.returncode == 0, run.stderr


def findscu_counts(port: int, study: str) -> dict[str, str]:
    """NumberOfStudyRelated{Series,Instances} and ModalitiesInStudy as DCMTK findscu reads
    them."""
    run = subprocess.run([dcmtk_tool("findscu"), "-S", "-aec", AET,
                          "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study}",
                          "-k", "NumberOfStudyRelatedSeries=",
                          "-k", "NumberOfStudyRelatedInstances=", "-k", "ModalitiesInStudy=",
                          "127.0.0.1", str(port)], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "TCP_NODELAY": "1"}, check=False)
    assert run.returncode == 0, run.stderr
    out: dict[str, str] = {}
    for line in run.stdout.splitlines() + run.stderr.splitlines():
        m = re.search(r"\[([^\]]*)\]\s+#.*\s(NumberOfStudyRelatedSeries|"
                      r"NumberOfStudyRelatedInstances|ModalitiesInStudy)$", line.strip())
        if m:
            out[m.group(2)] = m.group(1).strip().rstrip("\x00")
    return out


def sops_of(metadata: list[dict[str, Any]]) -> set[str]:
    return {item["00080018"]["Value"][0] for item in metadata}


class TestDeleteSeenByEveryClient:
    def test_a_deleted_instance_leaves_warm_metadata_counts_retrieval_and_store(
            self, make_server, tmp_path: Path, dcmtk) -> None:  # type: ignore[no-untyped-def]
        srv = make_server(data=tmp_path / "data")
        made = make_study(tmp_path / "in")
        storescu(srv.dicom_port, *made["files"].values())
        study = made["study"]
        (series, sops), (_, mr_sops) = made["series"]
        gone = sops[1]
        base = f"{srv.url}/dicomweb/studies/{study}"
        # Warm the series and study metadata (built, cached in memory and on disk).
        for _ in range(2):
            assert sops_of(http("GET", f"{base}/series/{series}/metadata")[2]) == set(sops)
            assert len(http("GET", f"{base}/metadata")[2]) == 6
        time.sleep(3)  # the background warmer runs once the archive has been quiet for 2 s
        assert findscu_counts(srv.dicom_port, study) == {
            "NumberOfStudyRelatedSeries": "2", "NumberOfStudyRelatedInstances": "6",
            "ModalitiesInStudy": "CT\\MR"}

        key = self._storage_key(srv.data_dir, gone)
        status, _, body = http("DELETE", f"{srv.url}/api/studies/{study}/series/{series}"
                                         f"/instances/{gone}?reason=safety")
        assert status == 200 and body["removed"]["instances"] == 1

        # Several requests, so that both workers' caches answer.
        for _ in range(4):
            assert sops_of(http("GET", f"{base}/series/{series}/metadata")[2]) == \
                set(sops) - {gone}
            assert sops_of(http("GET", f"{base}/metadata")[2]) == set(sops + mr_sops) - {gone}
        one = f"/series/{series}/instances/{gone}"
        for path in (one, f"{one}/metadata", f"{one}/frames/1", f"{one}/rendered"):
            assert http("GET", base + path)[0] == 404, path
        assert http("GET", f"{srv.url}/wado?requestType=WADO&studyUID={study}&seriesUID="
                           f"{series}&objectUID={gone}&contentType=application/dicom")[0] == 404
        qido = http("GET", f"{base}/series/{series}/instances")[2]
        assert sops_of(qido) == set(sops) - {gone}
        assert findscu_counts(srv.dicom_port, study)["NumberOfStudyRelatedInstances"] == "5"
        assert not list((srv.data_dir / "blobs").rglob(key))

        # Deleting the CT series takes CT out of Modalities in Study.
        status, _, body = http("DELETE", f"{srv.url}/api/studies/{study}/series/{series}")
        assert status == 200 and body["removed"]["instances"] == 2
        assert findscu_counts(srv.dicom_port, study) == {
            "NumberOfStudyRelatedSeries": "1", "NumberOfStudyRelatedInstances": "3",
            "ModalitiesInStudy": "MR"}
        assert http("GET", f"{base}/series/{series}/metadata")[0] == 404
        assert sops_of(http("GET", f"{base}/metadata")[2]) == set(mr_sops)

        # Sending the deleted objects again brings them back, metadata included.
        storescu(srv.dicom_port, *(made["files"][s] for s in sops))
        assert sops_of(http("GET", f"{base}/series/{series}/metadata")[2]) == set(sops)
        assert findscu_counts(srv.dicom_port, study)["NumberOfStudyRelatedInstances"] == "6"

    @staticmethod
    def _storage_key(data: Path, sop: str) -> str:
        with sqlite3.connect(f"file:{data / 'index.sqlite'}?mode=ro", uri=True) as con:
            row = con.execute("SELECT storage_key FROM instance WHERE sop_instance_uid = ?",
                              (sop,)).fetchone()
        assert row is not None
        return str(row[0])


class TestIndexRefusingTheDelete:
    def test_http_delete_answers_503_json_and_deletes_nothing(
            self, make_server, tmp_path: Path, dcmtk) -> None:  # type: ignore[no-untyped-def]
        data = tmp_path / "data"
        srv = make_server(data=data)
        made = make_study(tmp_path / "in", series=1, instances=2)
        storescu(srv.dicom_port, *made["files"].values())
        study = made["study"]
        series, sops = made["series"][0]
        with sqlite3.connect(data / "index.sqlite") as con:
            con.execute("CREATE TRIGGER qa_refuse BEFORE INSERT ON tombstone "
                        "BEGIN SELECT RAISE(ABORT, 'disk I/O error'); END")
        for url in (f"{srv.url}/api/studies/{study}",
                    f"{srv.url}/api/studies/{study}/series/{series}/instances/{sops[0]}"):
            status, headers, body = http("DELETE", url)
            assert status == 503, (status, body)
            assert isinstance(body, dict) and "nothing was deleted" in body["detail"]
            assert headers.get("retry-after") == "5"
        for sop in sops:
            assert http("GET", f"{srv.url}/dicomweb/studies/{study}/series/{series}/instances/"
                               f"{sop}/metadata")[0] == 200
        # The server goes on serving, and deletes once the index takes writes again.
        with sqlite3.connect(data / "index.sqlite") as con:
            con.execute("DROP TRIGGER qa_refuse")
        assert http("DELETE", f"{srv.url}/api/studies/{study}")[0] == 200
        assert http("GET", f"{srv.url}/dicomweb/studies/{study}/metadata")[0] == 404
