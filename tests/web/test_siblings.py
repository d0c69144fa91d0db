"""The STOW-RS part exchange between worker processes, over real Unix sockets in one process:
a part goes to a listening sibling and its outcome comes back; without one, the caller is told
to store the part itself."""

from __future__ import annotations

import asyncio
from pathlib import Path

from archivist.web.dicomweb.siblings import Calls, Siblings


def test_a_part_goes_to_the_sibling_and_its_outcome_comes_back(tmp_path: Path) -> None:
    seen: list[tuple[object, str | None, str | None]] = []

    async def store(body: bytes | Path, study: str | None, client: str | None) -> Calls:
        seen.append((body if isinstance(body, bytes) else body.name, study, client))
        return [("ok", ("1.2", "1.2.3", "1.2.3.4", "1.2.3.4.5", None))]

    async def run() -> tuple[Calls | None, Calls | None, Calls | None]:
        one, two = Siblings(tmp_path / "run", tmp_path, 1, 2), Siblings(tmp_path / "run", tmp_path, 0, 2)
        assert await one.start(store)
        part = tmp_path / "stow-abc_1.part"
        part.write_bytes(b"x" * 10)
        try:
            in_memory = await two.forward(b"DICM bytes", "1.2.3", "10.0.0.1")
            by_name = await two.forward(part, None, None)
            await one.close()
            after_close = await two.forward(b"more", None, None)
        finally:
            await two.close()
        assert two.forwarded == 2 and one.taken == 2
        assert not two.usable  # the closed sibling is left alone for a while
        return in_memory, by_name, after_close

    in_memory, by_name, after_close = asyncio.run(run())
    assert in_memory == [("ok", ("1.2", "1.2.3", "1.2.3.4", "1.2.3.4.5", None))]
    assert by_name == in_memory
    assert after_close is None  # the caller stores it
    assert seen == [(b"DICM bytes", "1.2.3", "10.0.0.1"), ("stow-abc_1.part", None, None)]


def test_no_sibling_listening_means_store_here(tmp_path: Path) -> None:
    async def run() -> Calls | None:
        alone = Siblings(tmp_path / "run", tmp_path, 0, 2)
        try:
            return await alone.forward(b"bytes", None, None)
        finally:
            await alone.close()

    assert asyncio.run(run()) is None


def test_a_socket_path_too_long_for_unix_sockets_turns_the_exchange_off(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 120)

    async def store(body: bytes | Path, study: str | None, client: str | None) -> Calls:
        return []

    async def run() -> bool:
        return await Siblings(deep, tmp_path, 0, 2).start(store)

    assert asyncio.run(run()) is False


def test_a_sibling_that_does_not_answer_in_time_means_store_here(tmp_path: Path) -> None:
    """A wedged sibling (stopped, swapping) does not hold the request for ever."""
    release = asyncio.Event()

    async def store(body: bytes | Path, study: str | None, client: str | None) -> Calls:
        await release.wait()
        return [("ok", ("1.2", "1.2.3", "1.2.3.4", "1.2.3.4.5", None))]

    async def run() -> tuple[Calls | None, bool]:
        one = Siblings(tmp_path / "run", tmp_path, 1, 2)
        two = Siblings(tmp_path / "run", tmp_path, 0, 2)
        two.answer_timeout = 0.5
        assert await one.start(store)
        try:
            got = await asyncio.wait_for(two.forward(b"bytes", None, None), 10)
            usable = two.usable
        finally:
            release.set()
            await one.close()
            await two.close()
        return got, usable

    got, usable = asyncio.run(run())
    assert got is None  # the caller stores it
    assert not usable
