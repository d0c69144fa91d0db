"""The S3 blob store's request signing against the Signature Version 4 examples AWS publishes
for S3 (GET Object with a Range, and GET Bucket with a query): the same canonical request
gives the same signature, or a real store refuses every request."""

from __future__ import annotations

import datetime
from pathlib import Path

from archivist.store.s3 import _EMPTY_SHA256, S3BlobStore

_WHEN = datetime.datetime(2013, 5, 24, 0, 0, 0, tzinfo=datetime.UTC)


def _store(tmp_path: Path) -> S3BlobStore:
    return S3BlobStore("https://examplebucket.s3.amazonaws.com", "examplebucket",
                       region="us-east-1", access_key="AKIAIOSFODNN7EXAMPLE",
                       secret_key="wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
                       cache=tmp_path / "cache", tmp=tmp_path / "tmp")


def test_get_object_with_a_range(tmp_path: Path) -> None:
    headers = _store(tmp_path)._headers("GET", "/test.txt", {}, _EMPTY_SHA256,
                                        {"Range": "bytes=0-9"}, now=_WHEN)
    assert headers["authorization"] == (
        "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, "
        "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, "
        "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41")


def test_list_with_a_query(tmp_path: Path) -> None:
    headers = _store(tmp_path)._headers("GET", "/", {"max-keys": "2", "prefix": "J"},
                                        _EMPTY_SHA256, {}, now=_WHEN)
    assert headers["authorization"].endswith(
        "Signature=34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7")
