"""Group commit: every item flushed exactly once, concurrent items share flushes, errors reach their waiters."""

from __future__ import annotations

import threading
import time

import pytest

from cubepacs._group import GroupCommit


def test_concurrent_items_share_flushes_and_each_is_flushed_once() -> None:
    batches: list[list[int]] = []

    def flush(items: list[int]) -> None:
        time.sleep(0.01)  # an fsync's worth: others arrive meanwhile
        batches.append(items)

    group: GroupCommit[int] = GroupCommit(flush)
    returned: list[int] = []

    def writer(n: int) -> None:
        group.run(n)
        assert any(n in b for b in batches)  # returned only after its flush
        returned.append(n)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    flushed = [n for b in batches for n in b]
    assert sorted(flushed) == list(range(32)) and sorted(returned) == list(range(32))
    assert len(batches) < 32  # shared


def test_a_failed_flush_raises_in_every_thread_of_its_batch() -> None:
    def flush(items: list[int]) -> None:
        raise OSError("disk full")

    group: GroupCommit[int] = GroupCommit(flush)
    with pytest.raises(OSError, match="disk full"):
        group.run(1)
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            group.run(2)
        except OSError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(errors) == 8
