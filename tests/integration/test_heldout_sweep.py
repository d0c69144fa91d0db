"""Every DICOM file shipped with the installed packages, through a real ``archivist serve``.

pydicom's ``test_files`` and ``charset_files`` hold data the archive was not written against:
every compressed transfer syntax, big endian, deflate, multi-frame, RGB/YBR/palette, SR, RT,
waveforms, files without preamble or File Meta, odd character sets, truncated and broken files.
Each is stored with DCMTK ``storescu`` (``-R``: the file's own transfer syntax) and then, again,
with STOW-RS through dicomweb-client (``--duplicates replace``), and retrieved every way a user
would: C-FIND at each level (findscu, pynetdicom), C-GET (getscu), C-MOVE (movescu to a DCMTK
storescp), WADO-RS instance / metadata / frames / rendered / thumbnail, WADO-URI and QIDO-RS with
``includefield=all``.

Expected, per file: success with the right content (the retrieved data set equals the stored
one, a frame equals pydicom's frame), or a clear refusal (a DIMSE failure status, HTTP 4xx with a
readable JSON body). Never a 500, a hang, a server that stops answering or an object lost.
"""

from __future__ import annotations

import io
import json
import subprocess
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from pydicom.dataset import Dataset
from pydicom.uid import UID
from pynetdicom import AE
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
)

from archivist.testing.multipart import parts_of
from archivist.testing.server import ServerProcess, free_port
from conftest import dcmtk_tool

pytestmark = [pytest.mark.timeout(120), pytest.mark.usefixtures("dcmtk")]

DIRECTORY_SOP_CLASS = "1.2.840.10008.1.3.10"
REQUIRED_UIDS = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")


def _all_files() -> list[Path]:
    import pydicom.data

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        found = pydicom.data.get_testdata_files() + pydicom.data.get_charset_files()
    return sorted({Path(f) for f in found if Path(f).is_file()}, key=lambda p: (p.name, str(p)))


def _describe(path: Path) -> Dataset | None:
    """The data set of a file that names an object the archive can keep, else None."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path, force=True)
            if str(ds.get("SOPClassUID", "")) == DIRECTORY_SOP_CLASS:
                return None
            if not all(str(ds.get(k, "") or "").strip() for k in REQUIRED_UIDS):
                return None
            ds.get("PixelData")  # a truncated Pixel Data shows here
            return ds
    except Exception:  # noqa: BLE001 - not an object: it belongs to the refusal half
        return None


def _transfer_syntax(ds: Dataset) -> str:
    meta = getattr(ds, "file_meta", None)
    ts = str(meta.get("TransferSyntaxUID", "") or "") if meta is not None else ""
    return ts or "1.2.840.10008.1.2"


def _kind(path: Path) -> tuple[str, ...]:
    ds = _describe(path)
    assert ds is not None
    return tuple(str(ds.get(k, "")) for k in (
        "SOPClassUID", "PhotometricInterpretation", "BitsAllocated", "NumberOfFrames",
        "SpecificCharacterSet")) + (_transfer_syntax(ds),)


def _objects(files: list[Path]) -> list[Path]:
    """Every object, except that of the ~100 look-alike files of pydicom's DICOMDIR test tree
    (``dicomdirtests``) one per kind is kept, so the module stays within two minutes."""
    kept, kinds = [], set()
    for path in files:
        if _describe(path) is None:
            continue
        if "dicomdirtests" in path.parts:
            kind = _kind(path)
            if kind in kinds:
                continue
            kinds.add(kind)
        kept.append(path)
    return kept


FILES = _all_files()
OBJECTS = _objects(FILES)
OTHERS = [p for p in FILES if _describe(p) is None]


def _id(path: Path) -> str:
    return f"{path.parent.name}/{path.name}"


def _params() -> list[Any]:
    return [pytest.param(p, id=_id(p)) for p in OBJECTS]


def _check_problem(response: requests.Response, what: str) -> None:
    """A refusal: 4xx (never 5xx) with a JSON body a person can read."""
    assert response.status_code < 500, f"{what}: {response.status_code} {response.text[:300]}"
    assert 400 <= response.status_code < 500, f"{what}: {response.status_code}"
    body = response.json()
    assert isinstance(body.get("error"), str) and body["error"], f"{what}: {body}"


def _same_data_set(got: Dataset, want: Dataset, what: str, ignore: tuple[int, ...] = ()) -> None:
    """Element by element (group 0002 and group lengths aside), binary values as bytes."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # group 0002 is the sender's; DCMTK drops or recomputes group lengths (gggg,0000)
        want_tags = {int(t) for t in want.keys()  # noqa: SIM118
                     if t.group != 0x0002 and t.element != 0 and int(t) not in ignore}
        got_tags = {int(t) for t in got.keys()  # noqa: SIM118
                    if t.group != 0x0002 and t.element != 0 and int(t) not in ignore}
        assert got_tags == want_tags, f"{what}: tags differ {sorted(got_tags ^ want_tags)[:5]}"
        for tag in sorted(want_tags):
            a, b = got[tag], want[tag]
            if a.VR == "SQ" or b.VR == "SQ":
                assert len(a.value or []) == len(b.value or []), f"{what}: {b.keyword} items"
                continue
            if a.value != b.value:
                if _byte_order(got) != _byte_order(want) and a.VR in _WORDS:
                    # the same values in the other byte order (C-MOVE may re-encode)
                    if tag == 0x7FE00010:
                        assert (got.pixel_array == want.pixel_array).all(), f"{what}: pixels"
                    else:
                        assert _words(a.value, a.VR, got) == _words(b.value, b.VR, want), \
                            f"{what}: {b.keyword}"
                    continue
                assert bytes(a.value or b"") == bytes(b.value or b""), f"{what}: {b.keyword}"


_WORDS = {"OW": 2, "OL": 4, "OF": 4, "OD": 8, "OV": 8}


def _byte_order(ds: Dataset) -> str:
    return ">" if _transfer_syntax(ds) == "1.2.840.10008.1.2.2" else "<"


def _words(value: bytes, vr: str, ds: Dataset) -> list[int]:
    size = _WORDS[vr]
    raw = bytes(value or b"")
    return np.frombuffer(raw[:len(raw) - len(raw) % size],
                         dtype=f"{_byte_order(ds)}u{size}").tolist()


def _frames_of(ds: Dataset) -> int:
    try:
        return int(ds.get("NumberOfFrames", 1) or 1)
    except (TypeError, ValueError):
        return 1


def _frame(ds: Dataset, index: int) -> bytes:
    """Frame `index` (0-based) of a data set as stored: the fragment(s) or the native slice."""
    from pydicom.encaps import generate_frames

    ts = UID(str(ds.file_meta.TransferSyntaxUID))
    frames = _frames_of(ds)
    if ts.is_encapsulated:
        for i, frame in enumerate(generate_frames(ds.PixelData, number_of_frames=frames)):
            if i == index:
                return frame
        raise AssertionError("no such frame")
    samples = int(ds.SamplesPerPixel)
    if str(ds.PhotometricInterpretation).strip() == "YBR_FULL_422":
        samples = 2
    size = int(ds.Rows) * int(ds.Columns) * samples * int(ds.BitsAllocated) // 8
    return bytes(ds.PixelData[index * size:(index + 1) * size])


# DCMTK 3.6.7's storescu proposes uncompressed syntaxes unless told which other one to propose
# (it then converts, and cannot convert from a compressed one): the option for each file's own.
STORESCU_PROPOSE = {
    "1.2.840.10008.1.2": "-xi", "1.2.840.10008.1.2.1": "-xe", "1.2.840.10008.1.2.2": "-xb",
    "1.2.840.10008.1.2.1.99": "-xd", "1.2.840.10008.1.2.5": "-xr",
    "1.2.840.10008.1.2.4.50": "-xy", "1.2.840.10008.1.2.4.51": "-xx",
    "1.2.840.10008.1.2.4.70": "-xs", "1.2.840.10008.1.2.4.80": "-xt",
    "1.2.840.10008.1.2.4.81": "-xu", "1.2.840.10008.1.2.4.90": "-xv",
    "1.2.840.10008.1.2.4.91": "-xw",
}


# ... and getscu accepts what it is told to prefer (else uncompressed only).
GETSCU_PREFER = {ts: "+" + option[1:] for ts, option in STORESCU_PROPOSE.items()
                 if ts != "1.2.840.10008.1.2"}
GETSCU_PREFER["1.2.840.10008.1.2"] = "+xi"

# What DCMTK says when it cannot read or send a file itself (the archive never saw it).
DCMTK_CANNOT_SEND = ("No presentation context for", "than remaining bytes",
                     "missing SOP class (or instance)", "Inappropriate data for message",
                     "premature end of stream", "Invalid stream")


NATIVE = ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2",
          "1.2.840.10008.1.2.1.99")


# -- the server ------------------------------------------------------------------------------------


class Harness:
    def __init__(self, srv: ServerProcess, scp_dir: Path, work: Path) -> None:
        self.srv = srv
        self.scp_dir = scp_dir
        self.work = work
        self.http = requests.Session()
        self.client = DICOMwebClient(f"{srv.url}/dicomweb")
        self.plain_dir = work

    def dcmtk(self, tool: str, *args: str, files: tuple[str, ...] = ()
              ) -> subprocess.CompletedProcess[str]:
        run = subprocess.run([dcmtk_tool(tool), "-aec", "ARCHIVIST", *args, "127.0.0.1",
                              str(self.srv.dicom_port), *files], check=False, capture_output=True,
                             text=True,
                             timeout=60)
        assert self.srv.proc is not None and self.srv.proc.poll() is None, "server died"
        return run

    def get(self, path: str, **headers: str) -> requests.Response:
        r = self.http.get(f"{self.srv.url}{path}", headers=headers, timeout=60)
        assert r.status_code < 500, f"GET {path}: {r.status_code} {r.text[:300]}"
        return r


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    base = tmp_path_factory.mktemp("heldout")
    scp_dir = base / "storescp"
    scp_dir.mkdir()
    scp_port = free_port()
    scp = subprocess.Popen([dcmtk_tool("storescp"), "-aet", "STORESCP", "-od", str(scp_dir),
                            "+xa", "-uf", str(scp_port)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    plain_dir = base / "plainscp"
    plain_dir.mkdir()
    plain_port = free_port()
    plain = subprocess.Popen([dcmtk_tool("storescp"), "-aet", "PLAINSCP", "-od", str(plain_dir),
                              "-uf", str(plain_port)],  # uncompressed syntaxes only
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    srv = ServerProcess(base / "data", extra_args=[
        "--peer", f"STORESCP=127.0.0.1:{scp_port}", "--peer", f"PLAINSCP=127.0.0.1:{plain_port}",
        "--duplicates", "replace"])
    srv.start()
    try:
        h = Harness(srv, scp_dir, base)
        h.plain_dir = plain_dir
        yield h
    finally:
        plain.terminate()
        plain.wait(10)
        log = srv.log()
        srv.stop()
        scp.terminate()
        scp.wait(10)
        # a 500 is logged by archivist.web at ERROR with its trace; uvicorn logs what escaped;
        # a decoder that fails on a bad image is a one-line warning
        bad = [line for line in log.splitlines() if " ERROR " in line
               or "Exception in ASGI application" in line or line.startswith("Traceback")]
        assert not bad, bad[:10]


# -- DIMSE ---------------------------------------------------------------------------------------


def _c_find(port: int, level: str, keys: dict[str, str],
            model: Any = StudyRootQueryRetrieveInformationModelFind) -> list[Dataset]:
    ae = AE(ae_title="HELDOUT")
    ae.add_requested_context(model)
    assoc = ae.associate("127.0.0.1", port, ae_title="ARCHIVIST")
    assert assoc.is_established
    ident = Dataset()
    ident.QueryRetrieveLevel = level
    for k, v in keys.items():
        setattr(ident, k, v)
    found = []
    try:
        for status, answer in assoc.send_c_find(ident, model):
            assert status is not None, "no C-FIND response"
            assert status.Status in (0x0000, 0xFF00, 0xFF01), hex(status.Status)
            if status.Status in (0xFF00, 0xFF01):
                found.append(answer)
    finally:
        assoc.release()
    return found


def _dimse_retrieve(h: Harness, ds: Dataset, work: Path) -> Dataset:
    """C-FIND at every level, C-GET and C-MOVE of the instance; returns what C-GET brought."""
    study, series, sop = (str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID),
                          str(ds.SOPInstanceUID))
    port = h.srv.dicom_port
    assert len(_c_find(port, "STUDY", {"StudyInstanceUID": study, "PatientName": "",
                                       "NumberOfStudyRelatedInstances": "",
                                       "ModalitiesInStudy": ""})) == 1
    assert len(_c_find(port, "SERIES", {"StudyInstanceUID": study, "SeriesInstanceUID": series,
                                        "Modality": ""})) == 1
    if str(ds.get("PatientID", "")).strip():
        patients = _c_find(port, "PATIENT", {"PatientID": str(ds.PatientID), "PatientName": ""},
                           PatientRootQueryRetrieveInformationModelFind)
        assert patients, "patient level"
    run = h.dcmtk("findscu", "-S", "-k", "QueryRetrieveLevel=IMAGE",
                  "-k", f"StudyInstanceUID={study}", "-k", f"SeriesInstanceUID={series}",
                  "-k", f"SOPInstanceUID={sop}", "-k", "SpecificCharacterSet",
                  "-k", "InstanceNumber", "-k", "PatientName")
    assert run.returncode == 0, run.stderr
    assert run.stderr.count("Find Response:") == 1, run.stderr[-2000:]
    keys = ["-k", "QueryRetrieveLevel=IMAGE", "-k", f"StudyInstanceUID={study}",
            "-k", f"SeriesInstanceUID={series}", "-k", f"SOPInstanceUID={sop}"]
    out = work / "getscu"
    out.mkdir()
    run = h.dcmtk("getscu", "-S", GETSCU_PREFER[_transfer_syntax(ds)], "-od", str(out), *keys)
    got = list(out.iterdir())
    assert run.returncode == 0 and len(got) == 1, (run.stderr[-2000:], got)
    run = h.dcmtk("movescu", "-S", "-aem", "STORESCP", *keys)
    assert run.returncode == 0, run.stderr[-2000:]
    moved = list(h.scp_dir.glob(f"*{sop}*"))
    assert moved, run.stderr[-2000:]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fetched = pydicom.dcmread(got[0])
        _same_data_set(pydicom.dcmread(moved[0]), fetched, "C-MOVE vs C-GET")
    for f in moved:
        f.unlink()
    return fetched


# -- DICOMweb ------------------------------------------------------------------------------------


def _http_retrieve(h: Harness, ds: Dataset, what: str) -> Dataset:
    """Every HTTP way to the instance; returns the object WADO-RS sent as stored."""
    study, series, sop = (str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID),
                          str(ds.SOPInstanceUID))
    base = f"/dicomweb/studies/{study}/series/{series}/instances/{sop}"
    # QIDO-RS, every level, includefield=all
    for path in (f"/dicomweb/studies?StudyInstanceUID={study}&includefield=all",
                 f"/dicomweb/studies/{study}/series?includefield=all",
                 f"/dicomweb/studies/{study}/series/{series}/instances?includefield=all",
                 f"/dicomweb/instances?SOPInstanceUID={sop}&includefield=all"):
        r = h.get(path)
        assert r.status_code == 200, (path, r.text[:300])
        assert r.json(), path
    # WADO-RS instance, as stored
    r = h.get(base, Accept='multipart/related; type="application/dicom"; transfer-syntax=*')
    assert r.status_code == 200, r.text[:300]
    parts = parts_of(r)
    assert len(parts) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stored = pydicom.dcmread(pydicom.filebase.DicomBytesIO(parts[0][1]))
    # ... and in the default (Explicit VR Little Endian) or a clear 406
    r = h.get(base, Accept='multipart/related; type="application/dicom"')
    native = _transfer_syntax(stored) in NATIVE
    if r.status_code != 200:
        assert not native, f"{what}: a native object must come in Explicit VR Little Endian"
        _check_problem(r, f"{what} WADO-RS default syntax")
    elif native and "PixelData" in stored and stored.get("BitsAllocated") != 1:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            le = pydicom.dcmread(io.BytesIO(parts_of(r)[0][1]))
            assert le.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
            try:
                want = stored.pixel_array
            except Exception:  # noqa: BLE001 - pydicom cannot read the stored pixels either
                want = None
            if want is not None:
                assert (le.pixel_array == want).all(), f"{what}: pixels changed"
    # metadata: instance and series
    r = h.get(f"{base}/metadata")
    assert r.status_code == 200, r.text[:300]
    meta = r.json()
    assert meta[0]["00080018"]["Value"] == [sop]
    r = h.get(f"/dicomweb/studies/{study}/series/{series}/metadata")
    assert r.status_code == 200, r.text[:300]
    assert sop in json.dumps(r.json())
    # frames, rendered, thumbnail
    if "PixelData" in stored:
        _frames(h, base, stored, what)
    for path in (f"{base}/rendered", f"{base}/thumbnail", f"/dicomweb/studies/{study}/thumbnail",
                 f"/dicomweb/studies/{study}/series/{series}/rendered"):
        suffix = path.rsplit("/", 1)[1]
        r = h.get(path, Accept="image/jpeg")
        if r.status_code == 200:
            assert r.headers["content-type"].startswith(("image/", "application/pdf")), suffix
            assert len(r.content) > 0
        else:
            _check_problem(r, f"{what} {suffix}")
    # WADO-URI
    wado = f"/wado?requestType=WADO&studyUID={study}&seriesUID={series}&objectUID={sop}"
    r = h.get(f"{wado}&contentType=application/dicom")
    assert r.status_code == 200, r.text[:300]
    assert r.content == parts[0][1], f"{what}: WADO-URI and WADO-RS differ"
    r = h.get(f"{wado}&contentType=image/jpeg")
    if r.status_code == 200:
        assert r.content[:2] == b"\xff\xd8", f"{what}: not a JPEG"
    else:
        _check_problem(r, f"{what} WADO-URI image/jpeg")
    return stored


def _stored(h: Harness, ds: Dataset) -> Dataset:
    """The instance by WADO-RS, as stored."""
    r = h.get(f"/dicomweb/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
              f"/instances/{ds.SOPInstanceUID}",
              Accept='multipart/related; type="application/dicom"; transfer-syntax=*')
    assert r.status_code == 200, r.text[:300]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(pydicom.filebase.DicomBytesIO(parts_of(r)[0][1]))


def _frames(h: Harness, base: str, stored: Dataset, what: str) -> None:
    frames = _frames_of(stored)
    as_stored = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'
    wanted = [1] if frames == 1 else [1, frames]
    r = h.get(f"{base}/frames/{','.join(map(str, wanted))}", Accept=as_stored)
    if r.status_code != 200:
        _check_problem(r, f"{what} frames as stored")
        return
    parts = parts_of(r)
    assert len(parts) == len(wanted)
    native_be = _transfer_syntax(stored) == "1.2.840.10008.1.2.2"  # frames come little endian
    if stored.get("BitsAllocated") != 1 and not native_be:
        for number, (_, payload) in zip(wanted, parts, strict=True):
            assert payload == _frame(stored, number - 1), f"{what}: frame {number} differs"
    r = h.get(f"{base}/frames/1", Accept='multipart/related; type="application/octet-stream"')
    if r.status_code != 200:
        _check_problem(r, f"{what} frame decoded")
    r = h.get(f"{base}/frames/{frames + 1}", Accept=as_stored)
    assert r.status_code == 404, f"{what}: frame {frames + 1} of {frames}: {r.status_code}"


# -- the tests -----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", _params())
def test_object_round_trips(harness: Harness, path: Path, tmp_path: Path) -> None:
    original = _describe(path)
    assert original is not None
    what = _id(path)
    # 1. C-STORE with DCMTK storescu, the file's own transfer syntax
    propose = STORESCU_PROPOSE.get(_transfer_syntax(original))
    dcmtk_sent = False
    if propose is not None:
        run = harness.dcmtk("storescu", propose, files=(str(path),))
        dcmtk_sent = not any(m in run.stderr for m in DCMTK_CANNOT_SEND)
        if dcmtk_sent:
            assert run.returncode == 0, run.stderr[-2000:]
            fetched = _dimse_retrieve(harness, original, tmp_path)
            stored = _http_retrieve(harness, original, what)
            _same_data_set(stored, fetched, f"{what}: WADO-RS vs C-GET")
            # DCMTK drops Data Set Trailing Padding when it sends
            _same_data_set(stored, original, f"{what}: storescu", ignore=(0xFFFCFFFC,))
    # 2. STOW-RS with dicomweb-client (replaces the copy stored above); the file's own bytes
    #    when pydicom cannot encode what it read (dicomweb-client encodes with pydicom)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(path, force=True)
        try:
            pydicom.dcmwrite(io.BytesIO(), ds)
            response = None
        except Exception:  # noqa: BLE001 - a broken file: send it as it is
            response = _stow_raw(harness, path.read_bytes())
    try:
        if response is None:
            result = harness.client.store_instances([ds])
        else:
            response.raise_for_status()
            assert response.status_code == 200, response.text[:500]
            result = Dataset.from_json(response.json())
    except requests.HTTPError as exc:
        # refused: only what DCMTK could not send either, or a bare data set (no File Meta),
        # and always with a reason a person can read
        assert exc.response.status_code == 409, exc.response.text[:500]
        failed = exc.response.json()["00081198"]["Value"][0]
        assert failed["00081197"]["Value"][0] == 0xC000
        assert failed["00000902"]["Value"][0]
        assert not dcmtk_sent or not getattr(original, "file_meta", None), failed
        assert harness.srv.healthy()
        return
    assert "FailedSOPSequence" not in result, result
    assert len(result.ReferencedSOPSequence) == 1
    if not dcmtk_sent:
        stored = _http_retrieve(harness, original, what)
    else:  # everything else was retrieved above
        stored = _stored(harness, original)
    _same_data_set(stored, original, f"{what}: STOW-RS")


def _stow_raw(h: Harness, data: bytes) -> requests.Response:
    boundary = "heldout-boundary"
    body = (f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + data
            + f"\r\n--{boundary}--\r\n".encode())
    return h.http.post(f"{h.srv.url}/dicomweb/studies", data=body, timeout=60, headers={
        "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
        "Accept": "application/dicom+json"})


@pytest.mark.parametrize("path", OTHERS, ids=[_id(p) for p in OTHERS])
def test_non_object_is_refused_cleanly(harness: Harness, path: Path) -> None:
    """Files that are no object to archive: refused by STOW-RS with a reason, server unharmed."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ds = pydicom.dcmread(path, force=True, stop_before_pixels=True)
        except Exception:  # noqa: BLE001 - not even parsable: STOW-RS only
            ds = None
    if ds is not None and ds.get("SOPClassUID") and ds.get("SOPInstanceUID") and \
            str(ds.SOPClassUID) != DIRECTORY_SOP_CLASS:
        # an object without its Study/Series UIDs: C-STORE is refused with a status
        propose = STORESCU_PROPOSE.get(_transfer_syntax(ds), "-xe")
        run = harness.dcmtk("storescu", propose, files=(str(path),))
        assert run.returncode != 0, run.stderr[-1500:]  # DCMTK exits non-zero on a failed store
        found = _c_find(harness.srv.dicom_port, "IMAGE", {"SOPInstanceUID": str(ds.SOPInstanceUID),
                                                          "StudyInstanceUID": ""})
        assert found == [], "a refused object was indexed"
    r = _stow_raw(harness, path.read_bytes())
    assert r.status_code < 500, r.text[:300]
    if r.status_code == 409:
        failed = r.json()["00081198"]["Value"]
        assert failed[0]["00081197"]["Value"][0] in (0xC000, 0xA900), failed
    else:
        assert r.status_code in (200, 400), r.text[:300]
    assert harness.srv.healthy()


def test_study_mixing_syntaxes_is_sent_whole(harness: Harness, tmp_path: Path) -> None:
    """A study holding big endian, 12-bit JPEG Extended and little endian instances, retrieved
    whole: by default each in Explicit VR Little Endian (the 12-bit JPEG decoded with
    imagecodecs); with a syntax asked for, every one that can be produced. The body is never cut
    short by an instance failing mid-stream (those that cannot be sent at all are left out with a
    206 and a Warning: tests/integration/test_qa_wado2.py)."""
    from pydicom.uid import generate_uid

    study, series = generate_uid(), generate_uid()
    originals = {}
    for name in ("MR_small_bigendian.dcm", "JPGExtended.dcm", "CT_small.dcm"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(pydicom.data.get_testdata_file(name, download=False))
            ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            ds.PatientID = "HELDOUT-MIX"  # one patient: a study's objects naming another are
            ds.save_as(tmp_path / name)   # stored with a warning (202), not what this checks
        originals[str(ds.SOPInstanceUID)] = ds
        r = _stow_raw(harness, (tmp_path / name).read_bytes())
        assert r.status_code == 200, r.text[:300]
    url = f"/dicomweb/studies/{study}"
    r = harness.get(url, Accept='multipart/related; type="application/dicom"')
    assert r.status_code == 200, r.text[:300]
    parts = parts_of(r)  # raises if the body was cut
    assert len(parts) == 3
    syntaxes = {}
    for headers, payload in parts:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            got = pydicom.dcmread(io.BytesIO(payload))
        want = originals[str(got.SOPInstanceUID)]
        syntaxes[str(want.file_meta.TransferSyntaxUID)] = str(got.file_meta.TransferSyntaxUID)
        assert headers["content-type"].endswith(str(got.file_meta.TransferSyntaxUID))
        if str(want.file_meta.TransferSyntaxUID) != "1.2.840.10008.1.2.4.51":
            assert (got.pixel_array == want.pixel_array).all()
    assert syntaxes == {"1.2.840.10008.1.2.2": "1.2.840.10008.1.2.1",
                        "1.2.840.10008.1.2.4.51": "1.2.840.10008.1.2.1",
                        "1.2.840.10008.1.2.1": "1.2.840.10008.1.2.1"}
    r = harness.get(url, Accept='multipart/related; type="application/dicom"; '
                               'transfer-syntax=1.2.840.10008.1.2.1')
    assert r.status_code == 200, r.text[:300]
    assert len(parts_of(r)) == 3  # the 12-bit JPEG decoded with imagecodecs
    client_copies = harness.client.retrieve_study(study)
    assert len(client_copies) >= 2


@pytest.mark.parametrize("name", ["MR_small_bigendian.dcm", "rtdose_expb.dcm",
                                  "SC_rgb_small_odd_big_endian.dcm", "J2K_pixelrep_mismatch.dcm",
                                  "examples_palette.dcm", "CT_small.dcm"])
@pytest.mark.parametrize("target", ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2",
                                    "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99"])
def test_transcoding_keeps_the_pixels(name: str, target: str) -> None:
    """Between byte orders, and from a JPEG 2000 pydicom's decompress() trips on."""
    from archivist.web.dicomweb import pixels

    path = Path(pydicom.data.get_testdata_file(name, download=False))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = pydicom.dcmread(io.BytesIO(pixels.transcode(path, target)))
        want = pydicom.dcmread(path)
        assert got.file_meta.TransferSyntaxUID == target
        assert (got.pixel_array == want.pixel_array).all()
        if "GridFrameOffsetVector" in want:
            assert list(got.GridFrameOffsetVector) == list(want.GridFrameOffsetVector)
        if "RedPaletteColorLookupTableData" in want:  # OW: bytes in each file's byte order
            def words(ds: Dataset) -> list[int]:
                order = ">" if ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.2" else "<"
                return np.frombuffer(ds.RedPaletteColorLookupTableData,
                                     dtype=f"{order}u2").tolist()
            assert words(got) == words(want)


def test_truncated_pixel_data_is_refused(harness: Harness) -> None:
    path = Path(pydicom.data.get_testdata_file("MR_truncated.dcm", download=False))
    """The file as it is (dicomweb-client re-encodes what pydicom read: a whole file whose
    Pixel Data is merely short, which is kept with a finding)."""
    r = _stow_raw(harness, path.read_bytes())  # 8130 of 8192 bytes of Pixel Data
    assert r.status_code == 409, r.text[:300]
    assert "truncated" in r.json()["00081198"]["Value"][0]["00000902"]["Value"][0]


def test_c_move_of_a_compressed_object_to_an_uncompressed_only_peer(harness: Harness) -> None:
    path = Path(pydicom.data.get_testdata_file("JPEG2000.dcm", download=False))
    ds = _describe(path)
    assert ds is not None
    assert harness.dcmtk("storescu", "-xw", files=(str(path),)).returncode == 0
    run = harness.dcmtk("movescu", "-S", "-aem", "PLAINSCP", "-k", "QueryRetrieveLevel=IMAGE",
                        "-k", f"StudyInstanceUID={ds.StudyInstanceUID}",
                        "-k", f"SeriesInstanceUID={ds.SeriesInstanceUID}",
                        "-k", f"SOPInstanceUID={ds.SOPInstanceUID}")
    assert run.returncode == 0, run.stderr[-1000:]
    (received,) = harness.plain_dir.glob(f"*{ds.SOPInstanceUID}*")
    _assert_decompressed_copy(received, path)


def _assert_decompressed_copy(received: Path, original: Path) -> None:
    """`received` is `original` in an uncompressed syntax: same UIDs, same pixels."""
    got, want = pydicom.dcmread(received), pydicom.dcmread(original)
    assert got.file_meta.TransferSyntaxUID in ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2")
    assert got.SOPInstanceUID == want.SOPInstanceUID
    assert got.SOPClassUID == want.SOPClassUID
    assert (got.pixel_array == want.pixel_array).all()


def test_c_get_of_a_compressed_object_by_a_default_getscu(harness: Harness,
                                                          tmp_path: Path) -> None:
    path = Path(pydicom.data.get_testdata_file("JPEG2000.dcm", download=False))
    ds = _describe(path)
    assert ds is not None
    assert harness.dcmtk("storescu", "-xw", files=(str(path),)).returncode == 0
    run = harness.dcmtk("getscu", "-S", "-od", str(tmp_path), "-k", "QueryRetrieveLevel=IMAGE",
                        "-k", f"StudyInstanceUID={ds.StudyInstanceUID}",
                        "-k", f"SeriesInstanceUID={ds.SeriesInstanceUID}",
                        "-k", f"SOPInstanceUID={ds.SOPInstanceUID}")
    assert run.returncode == 0, run.stderr[-1000:]
    (received,) = tmp_path.iterdir()
    _assert_decompressed_copy(received, path)
