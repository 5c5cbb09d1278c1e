"""Operations on stored studies, series and instances shared by the command line and the archive's own API:
send them to a peer (C-STORE SCU) and delete them.

Example
-------
>>> import tempfile, os
>>> from cubepacs.archive.index.store import Index
>>> from cubepacs.archive.queue.embedded import EmbeddedQueue
>>> from cubepacs.archive.storage.file import FileStorage
>>> tmp = tempfile.mkdtemp()
>>> delete(FileStorage(tmp), EmbeddedQueue(os.path.join(tmp, "q.db")), Index.from_url("sqlite://"), None,
...        "t", "study", "1.2.3")
0
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from cubepacs.archive.dimse.scu import SendResult, send_rows
from cubepacs.archive.index.store import Index
from cubepacs.archive.keys import check_uid
from cubepacs.archive.queue.base import STORAGE_TOPIC, Queue
from cubepacs.archive.storage.base import Storage
from cubepacs.errors import ConfigError

log = logging.getLogger("cubepacs.manage")
LEVELS = {"study": "StudyInstanceUID", "series": "SeriesInstanceUID", "instance": "SOPInstanceUID"}


def resolve(index: Index, tenant: str, level: str, uid: str) -> list[dict[str, Any]]:
    """The instance rows of ``tenant`` a study, series or instance UID names (``[]`` when none)."""
    if level not in LEVELS:
        raise ConfigError(f"level must be one of {', '.join(LEVELS)}, not {level!r}")
    check_uid(uid, LEVELS[level])
    return index.search_instances(tenant, {LEVELS[level]: [uid]}, limit=1_000_000)


def delete(storage: Storage, queue: Queue, index: Index, cache: Any, tenant: str, level: str, uid: str) -> int:
    """Delete a study, series or instance of ``tenant``: files, index rows, pre-built metadata, cubes and cached
    answers. Returns how many instances were deleted (0 when there was nothing: deleting is idempotent)."""
    rows = resolve(index, tenant, level, uid)
    deleted = 0
    for study in sorted({r["study_uid"] for r in rows}):
        series = uid if level == "series" else None
        sops = [uid] if level == "instance" else None

        def remove(keys: list[str]) -> None:
            for key in keys:
                storage.delete(key)

        keys = index.delete(tenant, study, series, sops, remove=remove)
        deleted += sum(1 for k in keys if k.endswith(".dcm"))
    if rows:
        # other processes' caches learn it through the indexer (the in-process cache of `serve` included)
        queue.publish(STORAGE_TOPIC, {"op": "deleted", "tenant": tenant, "level": level, "uid": uid})
        if cache is not None:
            cache.bump(tenant)
        log.info("deleted %s %s of tenant %s: %d instance(s)", level, uid, tenant, deleted)
    return deleted


def destination(remote_aes: dict[str, str], title: str) -> tuple[str, int]:
    """(host, port) of a configured peer AE title."""
    address = remote_aes.get(title)
    if address is None:
        known = ", ".join(sorted(remote_aes)) or "none"
        raise ConfigError(f"unknown destination AE {title!r}: add it to remote_aes (configured: {known})")
    host, _, port = address.rpartition(":")
    try:
        return host, int(port)
    except ValueError:
        raise ConfigError(f"remote_aes[{title!r}] = {address!r} is not host:port") from None


def send(storage: Storage, rows: list[dict[str, Any]], remote_aes: dict[str, str], to: str,
         calling_ae: str) -> Iterator[SendResult]:
    """Send instance rows to the peer ``to`` (one of ``remote_aes``), one result per instance as it is done."""
    host, port = destination(remote_aes, to)
    yield from send_rows(rows, lambda r: storage.get(r["storage_key"]), host, port, to, calling_ae)
