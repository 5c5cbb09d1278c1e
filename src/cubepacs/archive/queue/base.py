"""The queue interface: durable publish, consumer groups, acknowledge after processing.

Topics (the reference design's names): ``storage_queue`` (storage events), ``dicom_state_queue``,
``dicom_image_queue``, ``log_queue``.

Example
-------
>>> Message(1, "storage_queue", {"sop": "1.2"}).payload["sop"]
'1.2'
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

STORAGE_TOPIC = "storage_queue"
STATE_TOPIC = "dicom_state_queue"
IMAGE_TOPIC = "dicom_image_queue"
LOG_TOPIC = "log_queue"


@dataclass(frozen=True)
class Message:
    """A message as delivered: its id within the topic, the topic, the JSON payload."""

    id: int | str
    topic: str
    payload: dict[str, Any]


class Queue(ABC):
    """At-least-once delivery: a message is redelivered to its group until acknowledged."""

    @classmethod
    @abstractmethod
    def from_url(cls, url: str) -> Queue:
        """Open the queue named by ``url``."""

    @abstractmethod
    def publish(self, topic: str, payload: dict[str, Any]) -> None:
        """Append ``payload`` to ``topic``; returns only once the message is durable."""

    @abstractmethod
    def poll(self, topic: str, group: str, max_messages: int = 100, timeout: float = 1.0) -> list[Message]:
        """Messages of ``topic`` not yet acknowledged by ``group`` (waits up to ``timeout`` for one)."""

    @abstractmethod
    def ack(self, group: str, messages: list[Message]) -> None:
        """Mark ``messages`` processed by ``group``."""

    def ping(self) -> None:  # noqa: B027 - backends that can check more do
        """Raise when the queue cannot be reached (readiness)."""

    def lag(self, topic: str, group: str) -> tuple[int, float] | None:
        """(events waiting for ``group``, age in seconds of the oldest) when the backend can tell, else None."""
        return None

    def close(self) -> None:  # noqa: B027 - optional for backends with nothing to release
        """Release connections."""
