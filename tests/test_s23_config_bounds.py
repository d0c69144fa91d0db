"""Settings with an upper bound (QA s23): a value the server started with but could not use,
each failing only when first used, with a traceback: inventory_lease_seconds=1e300 (the
creation worker's clock overflowed, in a loop), inventory_studies_per_instance=1e20 (500 on
POST /api/inventories), find_max_results=1e20 (every QIDO-RS 500). One line at start now."""

from __future__ import annotations

import pytest

from archivist.config import ConfigError, load_settings


@pytest.mark.parametrize("env", [
    {"ARCHIVIST_INVENTORY_LEASE_SECONDS": "1e300"},
    {"ARCHIVIST_NETWORK_TIMEOUT": "1e12"},
    {"ARCHIVIST_INVENTORY_STUDIES_PER_INSTANCE": "99999999999999999999"},
    {"ARCHIVIST_FIND_MAX_RESULTS": "99999999999999999999"},
    {"ARCHIVIST_MAX_OBJECT_SIZE": "99999999999999999999"},
    {"ARCHIVIST_S3_CACHE_BYTES": "99999999999999999999"},
], ids=["lease", "network-timeout", "studies-per-instance", "find-max", "object-size",
        "s3-cache"])
def test_out_of_range_is_refused_at_start(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(env=env)
    assert "at most" in str(caught.value) or "between" in str(caught.value)


@pytest.mark.parametrize("env", [
    {"ARCHIVIST_INVENTORY_LEASE_SECONDS": "600"},
    {"ARCHIVIST_FIND_MAX_RESULTS": "0"},
    {"ARCHIVIST_MAX_OBJECT_SIZE": str(64 << 30)},
], ids=["lease", "find-max", "object-size"])
def test_large_but_usable_values_are_taken(env: dict[str, str]) -> None:
    load_settings(env=env)
