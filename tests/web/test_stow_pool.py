"""STOW-RS parts are stored on a thread pool of its own: a cancelled request still waits for
the part being stored, so its file is not removed under a running store."""

from __future__ import annotations

import asyncio
import threading
import time

from archivist.web.dicomweb import stow


def test_a_cancelled_caller_waits_for_the_running_store() -> None:
    finished: list[float] = []
    started = threading.Event()

    def store() -> None:
        started.set()
        time.sleep(0.3)
        finished.append(time.monotonic())

    async def main() -> float:
        task = asyncio.ensure_future(stow._in_pool(store))
        while not started.is_set():
            await asyncio.sleep(0.01)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            return time.monotonic()
        raise AssertionError("the task was not cancelled")

    returned = asyncio.run(main())
    assert finished and finished[0] <= returned


def test_results_and_errors_come_back_from_the_pool() -> None:
    def fail() -> None:
        raise ValueError("boom")

    async def main() -> int:
        assert await stow._in_pool(sum, [1, 2, 3]) == 6
        try:
            await stow._in_pool(fail)
        except ValueError as exc:
            return len(str(exc))
        return -1

    assert asyncio.run(main()) == 4
