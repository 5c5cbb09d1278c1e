"""Read-ahead of frames (web/readahead.py): when it warms what, on its own background thread. The rows here are
plain dictionaries standing for index rows; warming is recorded, not done (the served frames are tested against
pydicom's in test_frames.py, where a real server's read-ahead runs)."""

from __future__ import annotations

import threading
import time
from typing import Any

from cubepacs.archive.web.readahead import DEPTH, ReadAhead

KEY = ("t", "1", "1.1")
ROWS = [{"sop_uid": f"1.1.{k}"} for k in range(40)]


class Recorder:
    def __init__(self) -> None:
        self.warmed: list[tuple[str, int]] = []
        self.loads = 0
        self.threads: set[str] = set()
        self.lock = threading.Lock()

    def rows(self, key: tuple[str, str, str]) -> list[dict[str, Any]]:
        assert key == KEY
        self.loads += 1
        return ROWS

    def warm(self, row: dict[str, Any], frame: int) -> None:
        with self.lock:
            self.warmed.append((row["sop_uid"], frame))
            self.threads.add(threading.current_thread().name)


def scrolled(sops: list[str], count: int, frame: int = 1, threads: int = 1) -> Recorder:
    """What a read-ahead warms for requests of frame ``frame`` of ``sops`` in that order (``count``: how many
    warmed to wait for)."""
    rec = Recorder()
    ahead = ReadAhead(rec.rows, rec.warm, threads=threads)
    for sop in sops:
        ahead.seen(KEY, sop, frame)
    settle(ahead, rec, count)
    ahead.close()
    return rec


def settle(ahead: ReadAhead, rec: Recorder, count: int) -> None:
    deadline = time.monotonic() + 5
    while len(rec.warmed) < count and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.05)


def test_a_sequential_scroll_warms_the_next_instances_once() -> None:
    rec = Recorder()
    ahead = ReadAhead(rec.rows, rec.warm, threads=1)
    ahead.seen(KEY, "1.1.3", 1)
    assert rec.loads == 0  # one request says nothing: no query
    ahead.seen(KEY, "1.1.4", 1)
    settle(ahead, rec, DEPTH)
    assert rec.warmed == [(f"1.1.{k}", 1) for k in range(5, 5 + DEPTH)]
    assert rec.threads <= {f"cubepacs-readahead_{k}" for k in range(4)} and rec.loads == 1
    for k in range(5, 5 + DEPTH // 2):  # the viewer consumes the warm frames: more is warmed beyond them
        ahead.seen(KEY, f"1.1.{k}", 1)
    settle(ahead, rec, DEPTH + 1)
    sops = [s for s, _ in rec.warmed]
    assert len(sops) == len(set(sops)) and sops[DEPTH] == f"1.1.{5 + DEPTH}"  # nothing warmed twice
    ahead.close()


def test_scrolling_back_warms_the_previous_ones_and_stops_at_the_first() -> None:
    rec = scrolled(["1.1.4", "1.1.3"], 3, frame=2)
    assert rec.warmed == [("1.1.2", 2), ("1.1.1", 2), ("1.1.0", 2)]


def test_jumps_warm_nothing() -> None:
    rec = scrolled(["1.1.3", "1.1.9", "1.1.20", "1.1.2"], 1)
    assert rec.warmed == [] and rec.loads == 1  # the order was learnt once, no sequence found


def test_a_failing_warm_stops_nothing_else() -> None:
    rec = Recorder()

    def warm(row: dict[str, Any], frame: int) -> None:
        if row["sop_uid"] == "1.1.6":
            raise ValueError("undecodable")
        rec.warm(row, frame)

    ahead = ReadAhead(rec.rows, warm, threads=1)
    ahead.seen(KEY, "1.1.4", 1)
    ahead.seen(KEY, "1.1.5", 1)
    settle(ahead, rec, DEPTH - 1)
    assert ("1.1.6", 1) not in rec.warmed and ("1.1.7", 1) in rec.warmed
    ahead.close()


def test_parallel_requests_a_little_out_of_order_still_count_as_scrolling() -> None:
    rec = scrolled(["1.1.2", "1.1.4"], DEPTH)  # 1.1.3 is on another connection
    assert rec.warmed[:2] == [("1.1.5", 1), ("1.1.6", 1)] and len(rec.warmed) == DEPTH


def test_on_several_threads_the_window_is_shared_between_them() -> None:
    rec = scrolled(["1.1.0", "1.1.1"], DEPTH, threads=2)
    assert sorted(rec.warmed) == sorted((f"1.1.{k}", 1) for k in range(2, 2 + DEPTH))
    assert rec.threads <= {"cubepacs-readahead_0", "cubepacs-readahead_1"}
