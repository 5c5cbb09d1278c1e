"""Series builds (metadata JSON and cubes) in a short-lived process, for ``serve``.

A build is CPU work on a whole series — pure-Python metadata conversion and codec work — and holds about three times
the series' size in memory. In a thread of ``serve`` it held the web's GIL (frame requests waited on it) and left
its memory in the server (66 → 207 MB after compacting four 100-slice series). So ``serve`` only looks for due
series (one indexed query a second) and, when there are some, runs ``python -m cubepacs.archive.services.builder``,
which builds until nothing has been due for ``LINGER`` seconds and exits: no memory is kept between bursts of
builds, no process waits idle for long, and another core does the work where there is one. The settings (URLs with
credentials among them) go to it on stdin, never on a command line. ``cubepacs webworker`` run alone keeps building
in its own process as before.

A cube is published only once it reads back (``compaction.py``); an instance it cannot hold stays served from its
own file, named in one log line and counted (``cubepacs_instances_not_compacted``).

Example
-------
>>> import dataclasses
>>> from cubepacs.archive.settings import load_settings
>>> s = load_settings(overrides={"data_dir": "/srv/pacs"})
>>> settings_from_json(settings_to_json(s)) == s
True
"""

from __future__ import annotations

import dataclasses
import json
import logging
import signal
import subprocess
import sys
import threading
import time
from typing import Any

from cubepacs.archive.settings import Settings

log = logging.getLogger("cubepacs.webworker")
STOP_GRACE = 60.0  # seconds a build under way may take to finish when serve stops
LINGER = 30.0  # seconds a builder waits for more due series before it exits (steady ingest: no process per series)


def settings_to_json(settings: Settings) -> str:
    """The settings as JSON (for a child process's stdin)."""
    return json.dumps(dataclasses.asdict(settings))


def settings_from_json(text: str) -> Settings:
    """The settings :func:`settings_to_json` wrote."""
    return Settings(**json.loads(text))


class BuildLauncher:
    """Looks for due series every ``interval`` seconds; runs a builder process while there are some.
    :meth:`shutdown` stops looking and lets a running build finish (``STOP_GRACE`` seconds, then SIGKILL)."""

    def __init__(self, settings: Settings, index: Any, interval: float = 1.0) -> None:
        self.settings = settings
        self.index = index
        self.interval = interval
        self.runs = 0
        self._proc: subprocess.Popen[str] | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="build-launcher", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        s = self.settings
        failures = 0
        while not self._stop.wait(self.interval * (1 + min(failures, 30))):  # up to 31 s apart while failing
            try:
                due = bool(self.index.pending_series(s.quiet_seconds, s.max_retries, limit=1))
            except Exception as exc:  # the index is away for a moment: look again later
                log.warning("looking for series to build failed: %s: %s", type(exc).__name__, str(exc)[:200])
                failures += 1
                continue
            failures = failures + 1 if due and not self._run() else 0

    def _run(self) -> bool:
        """One builder process, to its end; False when it failed (it said why on stderr)."""
        with self._lock:
            if self._stop.is_set():
                return True
            try:
                self._proc = subprocess.Popen([sys.executable, "-m", "cubepacs.archive.services.builder"],
                                              stdin=subprocess.PIPE, text=True)
            except OSError as exc:  # no process can be started now (limits, memory): try again later
                log.warning("the builder process cannot start: %s", exc)
                return False
        self.runs += 1
        proc = self._proc
        assert proc.stdin is not None
        try:
            proc.stdin.write(settings_to_json(self.settings))
            proc.stdin.close()
        except OSError:  # it died at once: its own message is on stderr
            pass
        ok = proc.wait() in (0, -signal.SIGTERM)
        if not ok:
            log.warning("the builder process ended with status %s; due series are tried again", proc.returncode)
        with self._lock:
            self._proc = None
        return ok

    def shutdown(self) -> None:
        """Stop looking; a build under way finishes (SIGTERM), SIGKILL after ``STOP_GRACE`` seconds."""
        with self._lock:
            self._stop.set()
            proc = self._proc
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(STOP_GRACE)
            except subprocess.TimeoutExpired:
                proc.kill()
        self._thread.join(timeout=STOP_GRACE + 5)


def main() -> int:
    """Build every due series (settings as JSON on stdin), then exit; SIGTERM: after the build under way."""
    import os

    from cubepacs._registry import open_backend
    from cubepacs.archive.observability.logs import configure
    from cubepacs.archive.services.webworker import WebWorker
    from cubepacs.archive.services.workers import die_with
    from cubepacs.archive.storage.guard import DiskGuard

    settings = settings_from_json(sys.stdin.read())
    die_with(os.getppid(), "cubepacs-build")
    configure(settings.log_format, "webworker")
    from cubepacs.archive.observability import events

    events.configure(os.path.join(settings.data_dir, "accounts.db"))  # instances left out of cubes (/ui/operations)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # serve handles Ctrl-C and stops this process
    try:
        storage, index = open_backend("storage", settings.storage_url), open_backend("index", settings.index_url)
        DiskGuard.attach(storage, settings.data_dir, settings.min_free_mb)  # no build spends its retries on a full disk
    except Exception as exc:
        log.error("the builder cannot open its backends: %s: %s", type(exc).__name__, str(exc)[:300])
        return 1
    worker = WebWorker(index, storage, settings.quiet_seconds, settings.max_retries, settings.codec,
                       settings.compact, max_value_bytes=settings.max_value_bytes)
    signal.signal(signal.SIGTERM, lambda *_: worker.stop())
    try:
        idle_since = time.monotonic()
        while not worker.stopped.is_set():
            if worker.run_once():
                idle_since = time.monotonic()
            elif time.monotonic() - idle_since > LINGER:
                break
            else:
                worker.stopped.wait(1.0)
    finally:
        index.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
