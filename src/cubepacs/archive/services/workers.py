"""The DIMSE listener as N worker processes on one port, so that ingest scales with cores, not with one GIL.

Each worker is a process (forked before the service starts any thread, else spawned) with its own pynetdicom AE
and its own connections to the shared backends (storage, queue, index — the same URLs the other services use).
The parent binds the DIMSE port (and the DICOM TLS port) and the workers share that listening socket: a new
association goes to the worker with the fewest open (``dimse/balance.py``; with ``SO_REUSEPORT`` the kernel's hash
left one of two workers with three of four associations half the time). A C-STORE is acknowledged by the worker
that received it after its file and event are durable, exactly as in one process.

* A port another program holds is a one-line ListenError before any worker starts.
* A worker dies with the process that started it (``PR_SET_PDEATHSIG`` on Linux, and a watchdog thread), so a
  ``kill -9`` of ``cubepacs serve`` leaves no listener behind.
* Prometheus metrics of all processes are merged (prometheus-client's multiprocess mode; ``/metrics`` of the
  parent shows the workers' C-STORE counters).
* ``max_associations`` applies per worker.

Example
-------
>>> worker_count(0) >= 1, worker_count(3)
(True, 3)
"""

from __future__ import annotations

import atexit
import ctypes
import gc
import logging
import multiprocessing
import os
import signal
import socket
import sys
import threading
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from cubepacs.archive.settings import Settings
from cubepacs.errors import BackendError, CubepacsError, ListenError

log = logging.getLogger("cubepacs")
_PR_SET_PDEATHSIG = 1
_PR_SET_NAME = 15


def worker_count(setting: int) -> int:
    """The number of DIMSE worker processes for the ``dimse_workers`` setting (0: one per core)."""
    return setting if setting > 0 else max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                                              else os.cpu_count() or 1)


def builds_in_children(parts: set[str]) -> bool:
    """Whether the web worker's builds run in builder processes (``archive/services/builder.py``): in ``serve``, beside
    other services; ``cubepacs webworker`` alone builds in its own process.

    Example
    -------
    >>> builds_in_children({"web", "webworker"}), builds_in_children({"webworker"})
    (True, False)
    """
    return "webworker" in parts and len(parts) > 1


def listen(host: str, port: int, what: str, backlog: int = 2048) -> socket.socket:
    """A listening TCP socket, or ListenError naming the address (a taken port is one line, not a traceback).

    Used for HTTP(S) and, in the parent, for the DIMSE port(s) its workers share (``backlog``: ``dimse.lean.BACKLOG``
    there, as in one process).
    """
    # proto given explicitly: asyncio sets TCP_NODELAY on accepted connections only when the socket says
    # IPPROTO_TCP (proto 0 did not), and without it every kept-alive HTTP response waited 40 ms on a delayed ACK
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise ListenError(f"{what} cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock


METRICS_FILES = ("counter", "histogram", "gauge_livesum", "gauge_mostrecent")  # prometheus-client's, per process
METRICS_FILE_BYTES = 1 << 20  # preallocated per file (≈ 8,000 samples; prometheus-client maps 64 KiB, then doubles)


def runtime_folder(data_dir: str, run_dir: str = "", xdg_runtime_dir: str | None = None) -> Path:
    """Where the runtime files of ``serve`` go (prometheus-client's multiprocess files): ``run_dir`` when set, else
    a folder of this archive (named by a hash of ``data_dir``) on a RAM-backed file system — ``$XDG_RUNTIME_DIR``,
    else ``/dev/shm`` — else ``data_dir/run``.

    Why not the data disk: these files are memory-mapped and written through the mapping; a page the file system
    cannot back (a full disk) is a SIGBUS that kills the process (``docs/operations.md``, "A full disk").

    Example
    -------
    >>> runtime_folder("/srv/pacs", xdg_runtime_dir="/nonexistent").parent == Path("/dev/shm") or None
    True
    >>> runtime_folder("/srv/pacs", run_dir="/run/pacs")
    PosixPath('/run/pacs')
    """
    import hashlib

    if run_dir:
        return Path(run_dir)
    name = "cubepacs-" + hashlib.sha256(str(Path(data_dir).resolve()).encode()).hexdigest()[:12]
    for base in (xdg_runtime_dir, "/dev/shm"):
        if base and os.path.isdir(base) and os.access(base, os.W_OK | os.X_OK):
            return Path(base) / name
    return Path(data_dir) / "run"


def metrics_across_processes(data_dir: str, run_dir: str = "", xdg_runtime_dir: str | None = None) -> Path:
    """Put prometheus-client in multiprocess mode for this process and the workers it starts: call before
    prometheus-client is first imported. Its folder (``metrics`` in :func:`runtime_folder`) is emptied of a previous
    run's files, and this process' files are preallocated (:func:`preallocate_metrics`). Returns the folder."""
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        return Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    if "prometheus_client" in sys.modules:
        raise RuntimeError("prometheus_client was imported before its multiprocess folder was set")
    folder = runtime_folder(data_dir, run_dir, xdg_runtime_dir) / "metrics"
    folder.parent.mkdir(mode=0o700, parents=True, exist_ok=True)  # other users need not see the counters
    folder.mkdir(mode=0o700, exist_ok=True)
    for stale in folder.glob("*.db"):
        stale.unlink(missing_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(folder)
    preallocate_metrics()
    atexit.register(_remove_metrics, folder, os.getpid())  # RAM: given back when serve ends
    return folder


def _remove_metrics(folder: Path, owner: int) -> None:
    """Remove the multiprocess metrics folder (and its parent when empty) — in the process that made it only."""
    if os.getpid() != owner:
        return
    import shutil

    shutil.rmtree(folder, ignore_errors=True)
    try:
        folder.parent.rmdir()
    except OSError:  # not empty (an operator's files) or gone
        pass


def preallocate_metrics() -> None:
    """Give this process' prometheus-client files (multiprocess mode) their disk space before they are mapped:
    prometheus-client sizes a new file with ``truncate`` (a sparse file) and writes through a mapping, so on a full
    file system the first write to a page kills the process with SIGBUS. Preallocated (``posix_fallocate``),
    every page written up to :data:`METRICS_FILE_BYTES` is backed. Call in every process, before its first metric
    (prometheus-client opens the files of a new pid after a fork). One log line when the space is not there."""
    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not folder or not hasattr(os, "posix_fallocate"):
        return
    for prefix in METRICS_FILES:
        path = os.path.join(folder, f"{prefix}_{os.getpid()}.db")
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
        except OSError as exc:
            log.warning("metrics file %s cannot be created: %s", path, exc.strerror or exc)
            return
        try:
            if os.fstat(fd).st_size < METRICS_FILE_BYTES:
                os.posix_fallocate(fd, 0, METRICS_FILE_BYTES)
        except OSError as exc:
            os.ftruncate(fd, 0)  # prometheus-client then starts it as a new file
            log.warning("metrics file %s cannot be preallocated (%s): a full %s may stop this process", path,
                        exc.strerror or exc, folder)
            return
        finally:
            os.close(fd)


class Workers:
    """``n`` DIMSE worker processes; :meth:`shutdown` stops them."""

    def __init__(self, settings: Settings, n: int, timeout: float = 60.0) -> None:
        from cubepacs.archive.dimse.lean import BACKLOG

        self.sockets = {settings.dimse_port: listen(settings.host, settings.dimse_port, "DIMSE", BACKLOG)}
        if settings.dimse_tls_port:
            try:
                self.sockets[settings.dimse_tls_port] = listen(settings.host, settings.dimse_tls_port, "DICOM TLS",
                                                               BACKLOG)
            except ListenError:
                self.sockets[settings.dimse_port].close()
                raise
        ctx: Any = multiprocessing.get_context(_start_method())
        counts = ctx.RawArray("i", n)  # open associations per worker (dimse/balance.py)
        self.counts = counts
        self.procs: list[Any] = []
        pipes = []
        for k in range(n):
            receive, send = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=_worker, args=(settings, k, send, os.getpid(), self.sockets, counts),
                               name=f"dimse-{k}", daemon=True)
            proc.start()
            send.close()
            self.procs.append(proc)
            pipes.append(receive)
            if k == 0:  # the first one alone: it creates what the backends need (tables), the others find it
                self._wait(0, receive, timeout)
        for k, pipe in enumerate(pipes[1:], start=1):
            self._wait(k, pipe, timeout)

    def _wait(self, k: int, pipe: Connection, timeout: float) -> None:
        answer = pipe.recv() if pipe.poll(timeout) else f"BackendError:worker {k} did not start in {timeout} s"
        if answer != "ok":
            self.shutdown()
            kind, _, message = str(answer).partition(":")
            raise (ListenError if kind == "ListenError" else BackendError)(message)

    def open_associations(self) -> int:
        """DIMSE associations open now, over every worker."""
        return int(sum(self.counts))

    def shutdown(self) -> None:
        """Stop every worker (SIGTERM: open associations end, then the process exits; SIGKILL after 10 s)."""
        for proc in self.procs:
            if proc.is_alive():
                proc.terminate()
        for proc in self.procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=5)
            if os.environ.get("PROMETHEUS_MULTIPROC_DIR") and proc.pid is not None:
                from prometheus_client import multiprocess

                multiprocess.mark_process_dead(proc.pid)  # type: ignore[no-untyped-call]
        for sock in self.sockets.values():
            sock.close()


def _start_method() -> str:
    """``fork`` on Linux while this process has a single thread, else ``spawn``.

    Forked workers share the parent's pages (the interpreter, pydicom's dictionaries, pynetdicom, SQLAlchemy —
    about 75 MB that a spawned worker imports again) until either side writes to them; the shared part is
    frozen first (``gc.freeze``) so that no collection writes to it. Forking is only safe before any thread
    exists (a lock another thread holds would stay held in the child): the service starts its workers first,
    and anything else — a test running the service in a thread, macOS — spawns them.
    """
    if sys.platform != "linux" or threading.active_count() > 1:
        return "spawn"
    from cubepacs._registry import open_backend  # noqa: F401  (what every worker imports, loaded to be shared)
    from cubepacs.archive.dimse import scp  # noqa: F401

    settle_heap()
    return "fork"


def settle_heap() -> None:
    """Move everything allocated while starting (≈110,000 objects: pydicom's dictionaries, SQLAlchemy, FastAPI,
    pyarrow…) out of the garbage collector's sight (``gc.freeze``): a full collection then scans only what the
    service allocates later. Without it, each full collection walked them all (≈100 ms), and setting up a
    DIMSE association allocates enough to trigger one every few associations."""
    gc.collect()
    gc.freeze()


def die_with(parent: int, name: str) -> None:
    """End this process when ``parent`` goes away, however it ends; ``name`` it (``ps -o comm``, top: at most 15
    characters) so that an operator can tell the processes of ``serve`` apart. Every child process of ``serve``
    calls it first: its prometheus-client files are preallocated here too (:func:`preallocate_metrics`)."""
    preallocate_metrics()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_NAME, name.encode()[:15])
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the watchdog below does it
        pass

    def watch() -> None:
        while os.getppid() == parent:
            threading.Event().wait(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()


def _worker(settings: Settings, k: int, ready: Connection, parent: int, sockets: dict[int, socket.socket],
            counts: Any) -> None:
    """One DIMSE worker process (the ``k``-th): open the backends, take associations from the shared listening
    ``sockets`` as the open-association ``counts`` say, serve until SIGTERM."""
    from cubepacs._registry import open_backend
    from cubepacs.archive.dimse.balance import Balance, Shared
    from cubepacs.archive.dimse.scp import start_from_settings  # not the service module: no web, lake tables
    from cubepacs.archive.observability.logs import configure
    from cubepacs.archive.storage.guard import DiskGuard

    die_with(parent, f"cubepacs-dimse{k}")  # (and its metrics files preallocated)
    configure(settings.log_format, f"storescp-{k}")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops the workers
    try:
        storage, queue, index = (open_backend("storage", settings.storage_url),
                                 open_backend("queue", settings.queue_url), open_backend("index", settings.index_url,
                                                                                         pn_case_sensitive=settings.pn_case_sensitive))
        DiskGuard.attach(storage, settings.data_dir, settings.min_free_mb)
        server = start_from_settings(settings, storage, queue, index, shared=Shared(sockets, Balance(counts, k)))
    except CubepacsError as exc:
        ready.send(f"{type(exc).__name__}:{exc}")
        return
    except Exception as exc:  # a backend library's own error: one line for the parent to report
        ready.send(f"BackendError:DIMSE worker {k}: {type(exc).__name__}: {exc}")
        return
    settle_heap()
    ready.send("ok")
    stop.wait()
    log.info("DIMSE worker %d stopping (SIGTERM); in flight: %d association(s) open, given 10 s to finish", k,
             counts[k])
    server.shutdown()
    queue.close()
    index.close()
