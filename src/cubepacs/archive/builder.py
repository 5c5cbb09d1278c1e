"""Series builds (metadata JSON and cubes) in a short-lived process, for ``serve``.

A build is CPU work on a whole series — pure-Python metadata conversion and codec work — and holds about three
times the series' size in memory. In a thread of ``serve`` it held the web's GIL (frame requests waited on it)
and left its memory in the server (66 → 207 MB after compacting four 100-slice series). So ``serve`` only looks
for due series (one indexed query a second) and, when there are some, runs ``python -m cubepacs.archive.builder``,
which builds until nothing has been due for ``LINGER`` seconds and exits: no memory is kept between bursts of
builds, no process waits idle for long, and another core does the work where there is one. The settings (URLs
with credentials among them) go to it on stdin, never on a command line. ``cubepacs webworker`` run alone keeps
building in its own process as before.

A cube is published only once it reads back (:func:`compact`): every instance's header, the whole pixel value of
encapsulated/opaque ones and the first native frame of each, decoded and checked against the writer's checksum.
An instance the cube cannot hold — one the writer takes but the reader refuses (Bits Allocated 24, say), or that
cannot be read at all — is left out, named in one log line and counted (``cubepacs_instances_not_compacted``); it
stays served from its own file, the others from the cube, so one odd instance never poisons its series.

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
CHECK_FRAMES = 1  # native frames of each instance decoded when a new cube is read back (all: the whole series)
STOP_GRACE = 60.0  # seconds a build under way may take to finish when serve stops
LINGER = 30.0  # seconds a builder waits for more due series before it exits (steady ingest: no process per series)


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc)[:200]}"


def read_back(cube: bytes, frames: int = CHECK_FRAMES) -> str | None:
    """Why the cube in ``cube`` cannot be served (None when it can): opened, its index read, each instance read
    back (:meth:`~cubepacs.cube.reader.CubeReader.check_instance` with ``frames`` native frames)."""
    from cubepacs.cube.reader import CubeReader

    try:
        reader = CubeReader(cube)
        reader.index  # noqa: B018 - loads and checks the frame index
        for i in range(len(reader.meta)):
            reader.check_instance(i, frames)
    except Exception as exc:
        return _reason(exc)
    return None


def compact(files: list[tuple[str, bytes]], codec: str,
            frames: int = CHECK_FRAMES) -> tuple[bytes | None, list[tuple[str, str]]]:
    """A cube of the instances in ``files`` ((name, file bytes)) that one can hold, read back before it is returned
    (:func:`read_back`), and the instances left out with the reason ((name, reason)). When the whole cube does not
    read back, each instance is tried alone and those at fault are left out; None when no cube can be made.

    Example
    -------
    >>> from pathlib import Path
    >>> good = Path("../shared/data/single/ct_ge_small_signed.dcm").read_bytes()
    >>> cube, left = compact([("a.dcm", good), ("b.dcm", b"not DICOM")], "htj2k")
    >>> cube[:4], [name for name, _ in left]
    (b'DCBS', ['b.dcm'])
    """
    import io

    from cubepacs.cube.sources import read_instance
    from cubepacs.cube.writer import write_cube

    left: list[tuple[str, str]] = []
    instances = []
    for name, data in files:
        try:
            instances.append(read_instance(data, name))
        except Exception as exc:
            left.append((name, _reason(exc)))

    def build(chosen: list[Any]) -> tuple[bytes | None, str | None]:
        try:
            buf = io.BytesIO()
            write_cube(chosen, buf, codec=codec, threads=1)
        except Exception as exc:
            return None, _reason(exc)
        cube = buf.getvalue()
        problem = read_back(cube, frames)
        return (cube, None) if problem is None else (None, problem)

    if not instances:
        return None, left
    cube, problem = build(instances)
    if cube is not None:
        return cube, left
    keep = []
    for inst in instances:  # the slow path, only for a series whose cube failed: who is at fault?
        alone_cube, alone = build([inst])
        if alone_cube is None:
            left.append((inst.name, alone or "cannot be compacted"))
        else:
            keep.append(inst)
    if keep and len(keep) < len(instances):
        cube, problem = build(keep)
    if cube is None:
        left.extend((inst.name, f"the series' cube does not read back: {problem}") for inst in keep)
    return cube, left


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
                self._proc = subprocess.Popen([sys.executable, "-m", "cubepacs.archive.builder"],
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
    from cubepacs.archive.logs import configure
    from cubepacs.archive.storage.guard import DiskGuard
    from cubepacs.archive.webworker import WebWorker
    from cubepacs.archive.workers import die_with

    settings = settings_from_json(sys.stdin.read())
    die_with(os.getppid(), "cubepacs-build")
    configure(settings.log_format, "webworker")
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # serve handles Ctrl-C and stops this process
    try:
        storage, index = open_backend("storage", settings.storage_url), open_backend("index", settings.index_url)
        DiskGuard.attach(storage, settings.data_dir, settings.min_free_mb)  # no build spends its retries on a full disk
    except Exception as exc:
        log.error("the builder cannot open its backends: %s: %s", type(exc).__name__, str(exc)[:300])
        return 1
    worker = WebWorker(index, storage, settings.quiet_seconds, settings.max_retries, settings.codec,
                       settings.compact)
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
