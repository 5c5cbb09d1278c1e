"""One contract for every queue backend: embedded (SQLite), Redis Streams (a real Redis), Kafka (librdkafka's
mock cluster, which speaks the Kafka protocol on 127.0.0.1)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cubepacs._registry import open_backend
from cubepacs.archive.queue.base import Queue


def drain(q: Queue, topic: str, group: str, want: int, rounds: int = 40) -> list[Any]:
    got: list[Any] = []
    for _ in range(rounds):
        got += q.poll(topic, group, max_messages=100, timeout=0.5)
        if len(got) >= want:
            break
    return got


class QueueContract:
    """What every queue backend must do."""

    url: str

    @pytest.fixture
    def make(self) -> Iterator[Any]:
        opened: list[Queue] = []

        def factory(**options: Any) -> Queue:
            q = open_backend("queue", self.url, **options)
            opened.append(q)
            return q

        yield factory
        for q in opened:
            q.close()

    def test_publish_poll_ack(self, make: Any) -> None:
        q = make()
        topic = f"t{uuid.uuid4().hex[:8]}"
        for n in range(5):
            q.publish(topic, {"n": n})
        got = drain(q, topic, "g1", 5)
        assert sorted(m.payload["n"] for m in got) == list(range(5))
        q.ack("g1", got)
        assert q.poll(topic, "g1", timeout=0.5) == []

    def test_concurrent_publishers_each_arrive_once(self, make: Any) -> None:
        """Eight threads publishing at once (as storing associations do; backends may batch them): every message
        arrives, exactly once (no order is promised: Kafka spreads a topic over partitions)."""
        q = make()
        topic = f"c{uuid.uuid4().hex[:8]}"

        def publisher(t: int) -> None:
            for n in range(25):
                q.publish(topic, {"t": t, "n": n})

        threads = [threading.Thread(target=publisher, args=(t,)) for t in range(8)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        got: list[Any] = []
        for _ in range(40):
            batch = q.poll(topic, "g1", max_messages=100, timeout=0.5)
            q.ack("g1", batch)
            got += batch
            if len(got) >= 200:
                break
        assert sorted((m.payload["t"], m.payload["n"]) for m in got) == [(t, n) for t in range(8) for n in range(25)]

    def test_lag_counts_what_is_not_acknowledged(self, make: Any) -> None:
        import uuid

        q = make()
        topic = f"lag-{uuid.uuid4().hex[:8]}"
        for n in range(3):
            q.publish(topic, {"n": n})
        got = drain(q, topic, "g", 3)
        q.ack("g", got[:1])
        lag = q.lag(topic, "g")
        assert lag is not None and lag[0] == 2 and lag[1] >= 0
        q.ack("g", got[1:])
        assert q.lag(topic, "g")[0] == 0
        q.ping()

    def test_unacknowledged_messages_come_back_after_a_restart(self, make: Any) -> None:
        topic = f"t{uuid.uuid4().hex[:8]}"
        first = make()
        first.publish(topic, {"n": 1})
        first.publish(topic, {"n": 2})
        got = drain(first, topic, "indexer", 2)
        first.ack("indexer", [m for m in got if m.payload["n"] == 1] if len(got) > 1 else [])
        first.close()
        second = make(**self.restart_options())
        again = drain(second, topic, "indexer", 1)
        assert 2 in {m.payload["n"] for m in again}

    def test_groups_are_independent(self, make: Any) -> None:
        q = make()
        topic = f"t{uuid.uuid4().hex[:8]}"
        q.publish(topic, {"n": 7})
        a = drain(q, topic, "a", 1)
        q.ack("a", a)
        b = drain(q, topic, "b", 1)
        assert [m.payload for m in a] == [m.payload for m in b] == [{"n": 7}]

    def restart_options(self) -> dict[str, Any]:
        return {}


class TestEmbedded(QueueContract):
    @pytest.fixture(autouse=True)
    def _url(self, tmp_path: Path) -> None:
        self.url = f"embedded://{tmp_path}/q.db"

    def test_processes_publishing_at_once_lose_nothing(self, make: Any) -> None:
        """Three processes (as DIMSE workers are) publish at once while this one acknowledges (SQLite's locking
        orders the writers): every message arrives once."""
        import multiprocessing

        q = make()
        ctx = multiprocessing.get_context("spawn")
        procs = [ctx.Process(target=_publish_many, args=(self.url, w, 60)) for w in range(3)]
        for proc in procs:
            proc.start()
        got: list[Any] = []
        for _ in range(80):
            batch = q.poll("storage_queue", "g1", max_messages=50, timeout=0.2)
            q.ack("g1", batch)
            got += batch
            if len(got) >= 180:
                break
        for proc in procs:
            proc.join(30)
            assert proc.exitcode == 0
        assert sorted((m.payload["w"], m.payload["n"]) for m in got) == [(w, n) for w in range(3) for n in range(60)]


def _publish_many(url: str, worker: int, count: int) -> None:
    q = open_backend("queue", url)
    for n in range(count):
        q.publish("storage_queue", {"w": worker, "n": n})
    q.close()


@pytest.mark.redis
class TestRedis(QueueContract):
    url = "redis://127.0.0.1:6379/15"

    def restart_options(self) -> dict[str, Any]:
        return {"claim_idle_ms": 0}  # the first consumer "died": claim its pending entries at once


@pytest.mark.kafka
class TestKafka(QueueContract):
    @pytest.fixture(autouse=True)
    def _url(self, kafka_url: str) -> None:
        self.url = kafka_url


@pytest.mark.kafka
def test_indexer_feeds_the_doris_topics(kafka_url: str) -> None:
    from cubepacs.archive.index.store import Index
    from cubepacs.archive.queue.base import IMAGE_TOPIC, LOG_TOPIC, STATE_TOPIC, STORAGE_TOPIC
    from cubepacs.archive.services.indexer import Indexer

    prefix = f"p{uuid.uuid4().hex[:6]}_"
    q = open_backend("queue", kafka_url, topic_prefix=prefix)
    ev = {"tenant": "t", "study_uid": "1.2", "series_uid": "1.2.3", "sop_uid": "1.2.3.4", "key": "t/x.dcm",
          "size": 10, "transfer_syntax": "1.2.840.10008.1.2.1", "attrs": {"Modality": "CT", "Rows": 512}}
    q.publish(STORAGE_TOPIC, ev)
    indexer = Indexer(q, Index.from_url("sqlite://"), feeds=True)
    for _ in range(20):
        if indexer.run_once(timeout=0.5):
            break
    # one consumer group per topic, as one Doris routine load per table has (one group over three topics made
    # each new member wait for the idle ones in a rebalance)
    (obj,) = drain(q, LOG_TOPIC, "doris-log", 1)
    (img,) = drain(q, IMAGE_TOPIC, "doris-image", 1)
    (state,) = drain(q, STATE_TOPIC, "doris-state", 1)
    assert obj.payload["storage_key"] == "t/x.dcm" and obj.payload["tenant_id"] == "t"
    assert img.payload["rows"] == 512 and img.payload["modality"] == "CT"
    assert state.payload["series_related_instances"] == 1 and state.payload["series_uid"] == "1.2.3"
    q.close()
