"""HTTP routes of the terminology service, served by a real uvicorn on a free local port."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette

from archivist.web.codes import routes


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = uvicorn.Config(Starlette(routes=routes()), host="127.0.0.1", port=port,
                            log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def get(base_url: str, path: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(base_url + path, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


class TestSearchRoute:
    def test_search(self, base_url: str) -> None:
        status, body = get(base_url, "/api/codes?q=pneumothorax")
        assert status == 200
        assert body["results"][0]["value"] == "36118008"
        assert body["results"][0]["cids"] == [6062, 6102, 6105]

    def test_filters_and_limit(self, base_url: str) -> None:
        status, body = get(base_url, "/api/codes?q=liv&cid=4&scheme=SCT&limit=5")
        assert status == 200
        assert [r["value"] for r in body["results"]] == ["10200004", "303270005"]
        status, body = get(base_url, "/api/codes?q=left&limit=3")
        assert body["count"] == 3

    def test_quoted_query(self, base_url: str) -> None:
        status, body = get(base_url, "/api/codes?q=H%C3%A9morrhage%20brain")
        assert status == 200 and body["query"] == "Hémorrhage brain"

    @pytest.mark.parametrize(
        "query", ["", "?q=", "?q=liver&cid=four", "?q=liver&limit=0", "?q=liver&cid=3"]
    )
    def test_bad_requests(self, base_url: str, query: str) -> None:
        status, body = get(base_url, "/api/codes" + query)
        assert status == 400
        assert body["error"] == "bad request" and body["detail"]


class TestCodeRoute:
    def test_code(self, base_url: str) -> None:
        status, body = get(base_url, "/api/codes/SCT/10200004")
        assert status == 200
        assert body["meaning"] == "Liver" and body["srt"] == "T-62000"
        assert body["cid_names"]["4"] == "AnatomicRegion"
        assert body["cid_titles"]["4"] == "Anatomic Region"

    def test_retired_code(self, base_url: str) -> None:
        status, body = get(base_url, "/api/codes/SRT/T-62000")
        assert status == 200
        assert body["value"] == "10200004"
        assert body["requested"] == {"scheme": "SRT", "value": "T-62000"}

    def test_value_with_slash(self, base_url: str) -> None:
        status, body = get(base_url, "/api/codes/UCUM/Bq/ml")
        assert status == 200 and body["value"] == "Bq/ml"

    def test_unknown(self, base_url: str) -> None:
        status, body = get(base_url, "/api/codes/SCT/12345678")
        assert status == 404
        assert body["error"] == "unknown code"


class TestCidRoute:
    def test_cid(self, base_url: str) -> None:
        status, body = get(base_url, "/api/cids/4")
        assert status == 200
        assert body["name"] == "AnatomicRegion" and body["count"] == 343
        assert len(body["members"]) == 343

    def test_cid_search(self, base_url: str) -> None:
        status, body = get(base_url, "/api/cids/CID4?search=liv")
        assert status == 200
        assert [m["value"] for m in body["members"]] == ["10200004", "303270005"]

    def test_errors(self, base_url: str) -> None:
        assert get(base_url, "/api/cids/3")[0] == 404
        status, body = get(base_url, "/api/cids/abc")
        assert status == 400 and "CID number" in body["detail"]
