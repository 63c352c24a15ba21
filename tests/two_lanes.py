"""Run two lanes of work on two threads started together (concurrency tests of the serving paths)."""
from __future__ import annotations

import threading
from typing import Callable, TypeVar

T = TypeVar("T")


def run_two_lanes(lane: Callable[[int], list[T]], timeout_s: float) -> dict[int, list[T]]:
    """`lane(0)` and `lane(1)` at the same moment on two threads; their results by lane, or the first error raised."""
    results: dict[int, list[T]] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def run(k: int) -> None:
        try:
            start.wait()
            results[k] = lane(k)
        except BaseException as e:  # noqa: BLE001 - re-raised below, in the test's thread
            errors.append(e)

    threads = [threading.Thread(target=run, args=(k,)) for k in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout_s)
    if errors:
        raise errors[0]
    assert set(results) == {0, 1}, "a lane did not finish in time"
    return results
