"""Kafka or Redpanda through confluent-kafka (librdkafka).

Connection string
-----------------
``kafka://broker1:9092,broker2:9092?topic_prefix=site_a_`` — topics are the reference design's names
(``storage_queue``, ``dicom_state_queue``, ``dicom_image_queue``, ``log_queue``), prefixed by ``topic_prefix``.

Options
-------
``topic_prefix`` (default ``""``), ``session_timeout_ms`` (default 5000: how long a dead indexer's partitions wait
before the others take them over; heartbeats every third of it — the broker's ``group.min.session.timeout.ms``,
6000 by default in Kafka and Redpanda, must allow it: ``docs/operations.md``). The producer uses ``acks=all`` and
idempotence; ``publish`` returns once the broker acknowledged the message. Messages are keyed by their Series
Instance UID, so every event of a series goes to the same partition (librdkafka's ``consistent_random``
partitioner: CRC32 of the key modulo the partition count) and is indexed by one indexer, in order. Consumers
commit offsets only in ``ack`` (after the index write), so delivery is at-least-once and the idempotent indexer
makes it effectively once. Pointing it at Redpanda needs nothing else: Redpanda speaks the Kafka protocol.
Messages published by several threads at once (storing associations) are produced together and share one flush
(group commit, ``cubepacs/_group.py``).

Example
-------
>>> KafkaQueue.bootstrap_of("kafka://127.0.0.1:9092,127.0.0.1:9093")
'127.0.0.1:9092,127.0.0.1:9093'
"""

from __future__ import annotations

import json
import logging
import threading
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from cubepacs._group import GroupCommit
from cubepacs._registry import mask_url
from cubepacs.archive.queue.base import Message, Queue
from cubepacs.errors import BackendError

log = logging.getLogger("cubepacs.queue")
_PARTITION_EOF = -191  # librdkafka's KafkaError._PARTITION_EOF: not an error, the end of a partition


class KafkaQueue(Queue):
    """One producer; one consumer per (topic, group), created on first poll."""

    def __init__(self, bootstrap: str, topic_prefix: str = "", session_timeout_ms: int = 5_000) -> None:
        from confluent_kafka import Producer

        self.bootstrap = bootstrap
        self.prefix = topic_prefix
        self.session_timeout_ms = session_timeout_ms
        self.producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True,
                                  "linger.ms": 2})
        self._consumers: dict[tuple[str, str], Any] = {}
        self._last_error = ""  # the last consumer error logged (each one once, not once per poll)
        self._publish: GroupCommit[tuple[str, bytes, bytes | None]] = GroupCommit(self._produce)

    @staticmethod
    def bootstrap_of(url: str) -> str:
        """The ``host:port,…`` list of a ``kafka://`` URL."""
        parts = urlsplit(url)
        return parts.netloc.split("@")[-1]

    @classmethod
    def from_url(cls, url: str, **options: Any) -> KafkaQueue:
        query: dict[str, Any] = dict(parse_qsl(urlsplit(url).query))  # e.g. kafka://b:9092?topic_prefix=site_a_
        if "session_timeout_ms" in query:
            query["session_timeout_ms"] = int(query["session_timeout_ms"])
        return cls(cls.bootstrap_of(url), **{**query, **options})

    def _topic(self, topic: str) -> str:
        return self.prefix + topic

    def publish(self, topic: str, payload: dict[str, Any]) -> None:
        key = str(payload.get("series_uid") or payload.get("sop_uid") or "").encode() or None
        self._publish.run((self._topic(topic), json.dumps(payload, separators=(",", ":")).encode(), key))

    def _produce(self, batch: list[tuple[str, bytes, bytes | None]]) -> None:
        """Produce every message published meanwhile, then one flush: all acknowledged, or all raise."""
        errors: list[Any] = []

        def delivered(err: Any, _msg: Any) -> None:
            if err is not None:
                errors.append(err)

        for topic, value, key in batch:  # one flush at a time: the group commit runs one batch at once
            self.producer.produce(topic, value, key=key, on_delivery=delivered)
        remaining = self.producer.flush(30)
        if remaining or errors:
            raise BackendError(f"queue {mask_url('kafka://' + self.bootstrap)}: message not acknowledged "
                               f"({errors[0] if errors else 'timeout'})")

    def _consumer(self, topic: str, group: str) -> Any:
        from confluent_kafka import Consumer

        key = (topic, group)
        if key not in self._consumers:
            consumer = Consumer({"bootstrap.servers": self.bootstrap, "group.id": group,
                                 "enable.auto.commit": False, "auto.offset.reset": "earliest",
                                 "session.timeout.ms": self.session_timeout_ms,
                                 "heartbeat.interval.ms": max(100, self.session_timeout_ms // 3)})
            consumer.subscribe([self._topic(topic)])
            self._consumers[key] = consumer
        return self._consumers[key]

    def poll(self, topic: str, group: str, max_messages: int = 100, timeout: float = 1.0) -> list[Message]:
        consumer = self._consumer(topic, group)
        out = []
        for msg in consumer.consume(num_messages=max_messages, timeout=timeout):
            if msg.error() is not None:  # (a partition's end, or a group error such as a refused session timeout)
                if not msg.error().code() == _PARTITION_EOF and str(msg.error()) != self._last_error:
                    self._last_error = str(msg.error())
                    log.warning("queue %s, group %s: %s", mask_url("kafka://" + self.bootstrap), group, msg.error())
                continue
            out.append(Message(f"{msg.partition()}:{msg.offset()}", topic, json.loads(msg.value())))
        return out

    def ack(self, group: str, messages: list[Message]) -> None:
        if not messages:
            return
        from confluent_kafka import TopicPartition

        topic = messages[0].topic
        last: dict[int, int] = {}
        for m in messages:
            partition, offset = (int(x) for x in str(m.id).split(":"))
            last[partition] = max(last.get(partition, -1), offset)
        offsets = [TopicPartition(self._topic(topic), p, o + 1) for p, o in last.items()]
        self._consumer(topic, group).commit(offsets=offsets, asynchronous=False)

    def ping(self) -> None:
        self.producer.list_topics(timeout=5)

    def lag(self, topic: str, group: str) -> tuple[int, float] | None:
        """Messages after ``group``'s committed offsets (high watermark minus committed, over the partitions);
        the age of the oldest is not read (that would need a fetch): reported as 0."""
        from confluent_kafka import TopicPartition

        consumer = self._consumer(topic, group)
        name = self._topic(topic)
        meta = consumer.list_topics(name, timeout=5).topics.get(name)
        if meta is None or meta.error is not None:
            return None
        parts = [TopicPartition(name, p) for p in meta.partitions]
        waiting = 0
        for tp in consumer.committed(parts, timeout=5):
            low, high = consumer.get_watermark_offsets(tp, timeout=5, cached=False)
            start = tp.offset if tp.offset >= 0 else low
            waiting += max(high - start, 0)
        return waiting, 0.0

    def close(self) -> None:
        # Closing a consumer leaves its group, which rebalances the group's other members; closed one after the
        # other, each close could wait on the rebalance the previous one started (seen hanging with librdkafka's
        # mock cluster). So they leave together, each in a thread, and are waited for 10 s at most.
        closers = [threading.Thread(target=c.close, name="kafka-close", daemon=True) for c in self._consumers.values()]
        for t in closers:
            t.start()
        for t in closers:
            t.join(timeout=10)
        if any(t.is_alive() for t in closers):
            log.warning("a Kafka consumer did not leave its group within 10 s; not waiting for it")
        self._consumers.clear()
        self.producer.flush(10)
