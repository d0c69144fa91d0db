"""Two small WADO-RS points of QA s22: a frame list with an empty item (``1,,2``, ``1,2,``)
was read as ``1,2``, where ``1,1`` and ``1-3`` are 400s; and the Warning of a 206 cut its
reason at 200 characters in mid-word; WADO-URI took a repeated objectUID (a 404 rather than
a 400)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from archivist.web.dicomweb.wado import _left_out_warning, parse_frame_list
from archivist.web.errors import HTTPProblem


@pytest.mark.parametrize("text", ["1,,2", "1,2,", ",1"])
def test_an_empty_item_is_a_400(text: str) -> None:
    with pytest.raises(HTTPProblem) as caught:
        parse_frame_list(text)
    assert caught.value.status == 400


def test_a_well_formed_list_is_read_in_order() -> None:
    assert parse_frame_list("3,1, 2") == [3, 1, 2]
    assert parse_frame_list("1%2C2") == [1, 2]


def test_a_long_reason_is_cut_at_a_word() -> None:
    ref = SimpleNamespace(sop_instance_uid="1.2.3")
    request = SimpleNamespace(url=SimpleNamespace(hostname="archive"))
    reason = "word " * 60  # 300 characters
    text = _left_out_warning(request, [(ref, reason.strip())], 2, ["1.2.840.10008.1.2.4.80"])
    cut = text.split("(", 1)[1].split(");", 1)[0]
    assert cut.endswith("word ...") and len(cut) <= 204


def test_wado_uri_refuses_a_repeated_uid(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # QA s22: objectUID given twice was a 404; which one was meant is not ours to guess
    import urllib.error
    import urllib.request

    from archivist.testing.server import ServerProcess

    srv = ServerProcess(tmp_path / "data")
    srv.start()
    try:
        url = (f"{srv.url}/wado?requestType=WADO&studyUID=1.2.3&seriesUID=1.2.4"
               "&objectUID=1.2.5&objectUID=1.2.6")
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(url, timeout=20)
        assert caught.value.code == 400
        assert b"objectUID given more than once" in caught.value.read()
    finally:
        srv.stop()
