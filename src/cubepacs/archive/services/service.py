"""Wiring: open the backends from settings and run the services, together (``serve``) or alone.

Example
-------
>>> import tempfile
>>> from cubepacs.archive.settings import load_settings
>>> b = open_backends(load_settings(overrides={"data_dir": tempfile.mkdtemp()}))
>>> type(b.index).__name__, type(b.queue).__name__, b.cache
('Index', 'EmbeddedQueue', None)
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from cubepacs._registry import mask_url, open_backend
from cubepacs.archive.cache.base import Cache
from cubepacs.archive.index.store import Index
from cubepacs.archive.observability.accesslog import IMAGE_SCHEMA, OBJECT_SCHEMA, Columns, DeltaLog, close_logs
from cubepacs.archive.observability.accesslog import SCHEMA as ACCESS_SCHEMA
from cubepacs.archive.queue.base import Queue
from cubepacs.archive.services.indexer import Indexer
from cubepacs.archive.services.webworker import WebWorker
from cubepacs.archive.services.workers import builds_in_children, listen, settle_heap, worker_count
from cubepacs.archive.settings import Settings
from cubepacs.archive.storage.base import Storage
from cubepacs.archive.storage.guard import DiskGuard
from cubepacs.errors import ListenError

log = logging.getLogger("cubepacs")


@dataclass
class Backends:
    """The shared backends."""

    storage: Storage
    queue: Queue
    index: Index
    cache: Cache | None


def open_backends(settings: Settings, cache_url: str | None = None) -> Backends:
    """Open storage, queue, index (and cache, when ``cache_url`` names one) from their URLs."""
    log.info("storage %s, queue %s, index %s", mask_url(settings.storage_url), mask_url(settings.queue_url),
             mask_url(settings.index_url))
    storage = open_backend("storage", settings.storage_url)
    DiskGuard.attach(storage, settings.data_dir, settings.min_free_mb)  # the free-space watermark
    return Backends(storage, open_backend("queue", settings.queue_url),
                    open_backend("index", settings.index_url, pn_case_sensitive=settings.pn_case_sensitive),
                    open_backend("cache", cache_url) if cache_url else None)


def log_location(storage: Storage, settings: Settings, name: str) -> tuple[str, dict[str, str] | None]:
    """Where a Delta log table goes: on object storage when the storage is (``s3://…/logs/name``), else under
    ``data_dir/logs``."""
    locate = getattr(storage, "delta_location", None)
    if locate is not None:
        uri, options = locate(name)
        return uri, options
    return str(Path(settings.data_dir).resolve() / "logs" / name), None


def spool_dir(settings: Settings, name: str) -> str:
    """The local folder where rows of the log table ``name`` wait for the writer (kept across restarts).

    Example
    -------
    >>> from cubepacs.archive.settings import load_settings
    >>> spool_dir(load_settings(overrides={"data_dir": "/srv/pacs"}), "access")
    '/srv/pacs/logs/.spool/access'
    """
    return str(Path(settings.data_dir).resolve() / "logs" / ".spool" / name)


def open_log(storage: Storage, settings: Settings, name: str, schema: Columns) -> DeltaLog:
    """The log table ``name``: where :func:`log_location` puts it, spooled in :func:`spool_dir`."""
    return DeltaLog(*log_location(storage, settings, name), schema=schema, interval=settings.log_interval,
                    spool=spool_dir(settings, name))


def check(settings: Settings) -> dict[str, str]:
    """``serve --check``: open every backend and reach it; each one "ok" or the reason it is not usable."""
    from cubepacs.archive.observability.metrics import readiness

    b = open_backends(settings, settings.cache_url or None)
    try:
        checks = readiness(b.storage, b.queue, b.index)
        if b.cache is not None:
            try:
                b.cache.get("check-probe")
                checks["cache"] = "ok"
            except Exception as exc:
                checks["cache"] = f"{type(exc).__name__}: {exc}"
        for name, path in (("tls_cert", settings.tls_cert), ("tls_key", settings.tls_key), ("tls_ca", settings.tls_ca)):
            if path:
                checks[name] = "ok" if Path(path).is_file() else f"no such file: {path}"
        return {k: v for k, v in checks.items() if not k.endswith("_ms")}
    finally:
        b.queue.close()
        b.index.close()


def in_flight(parts: set[str], dimse_workers: Any, queue: Queue) -> str:
    """What a stopping service leaves in flight, for its one log line: DIMSE associations open (they finish,
    10 s at most) and storage events not yet indexed (they stay queued: the next indexer takes them).

    Example
    -------
    >>> from cubepacs.archive.queue.embedded import EmbeddedQueue
    >>> import tempfile, os
    >>> in_flight({"indexer"}, None, EmbeddedQueue(os.path.join(tempfile.mkdtemp(), "q.db")))
    '0 storage event(s) not yet indexed'
    """
    from cubepacs.archive.observability import metrics
    from cubepacs.archive.queue.base import STORAGE_TOPIC
    from cubepacs.archive.services.indexer import GROUP

    said = []
    if "storescp" in parts:
        open_now = (dimse_workers.open_associations() if dimse_workers is not None
                    else int(next(iter(metrics.ASSOCIATIONS_OPEN.collect())).samples[0].value))
        said.append(f"{open_now} DIMSE association(s) open")
    if "indexer" in parts:
        got: list[Any] = []

        def ask() -> None:
            try:
                got.append(queue.lag(STORAGE_TOPIC, GROUP))
            except Exception as exc:
                got.append(exc)

        asking = threading.Thread(target=ask, name="stop-lag", daemon=True)
        asking.start()
        asking.join(3.0)  # a queue that is away must not hold the stop
        lag = got[0] if got else TimeoutError()
        said.append(f"{lag[0]} storage event(s) not yet indexed" if isinstance(lag, tuple)
                    else f"storage events not yet indexed: unknown ({type(lag).__name__})" if lag is not None
                    else "storage events not yet indexed: unknown")
    return ", ".join(said) or "nothing"


def _thread(target: Any, name: str) -> threading.Thread:
    t = threading.Thread(target=target, name=name, daemon=True)
    t.start()
    return t


def web_app(settings: Settings, b: Backends,
            extensions: Sequence[Callable[[Any, Any], None]] = ()) -> tuple[Any, DeltaLog]:
    """The web application ``serve`` runs on ``b`` (an ASGI app), and its access log (close it with
    :func:`close_logs`): what ``run`` hands to uvicorn, and what ``fuzz/server.py`` calls in process.

    Example
    -------
    >>> import tempfile
    >>> from cubepacs.archive.settings import load_settings
    >>> s = load_settings(overrides={"data_dir": tempfile.mkdtemp()})
    >>> app, access = web_app(s, open_backends(s)); close_logs([access]); app.title
    'cubepacs DICOMweb'
    """
    from cubepacs.archive.auth.accounts import Accounts
    from cubepacs.archive.web.app import Services, create_app
    from cubepacs.archive.web.branding import check_banner
    from cubepacs.archive.web.session import LiveUsers
    from cubepacs.archive.web.tokens import OidcVerifier

    check_banner(settings.viewer_banner)  # a bad value is one error at start, not a broken viewer
    access = open_log(b.storage, settings, "access", ACCESS_SCHEMA)
    data_dir = Path(settings.data_dir)
    app = create_app(extensions=extensions, services=Services(
        b.storage, b.queue, b.index, settings.api_keys, access, b.cache, overwrite=settings.overwrite,
        metadata_at_ingest=settings.metadata_at_ingest,
        max_request_bytes=settings.max_request_bytes, max_value_bytes=settings.max_value_bytes,
        remote_aes=settings.remote_aes, ae_title=settings.ae_title, dicomweb_peers=settings.dicomweb_peers,
        sessions=Accounts(data_dir / "accounts.db"),
        users=LiveUsers(data_dir / "users.json", settings.users), session_hours=settings.session_hours,
        cors_origins=settings.cors_origins, public_url=settings.public_url,
        trusted_proxies=settings.trusted_proxies, viewer_dir=settings.viewer_dir or str(data_dir / "viewer"),
        viewer_name=settings.viewer_name, viewer_banner=settings.viewer_banner,
        keys_file=str(data_dir / "api-keys.json"), configured_keys=settings.api_keys,
        oidc=OidcVerifier(settings.oidc_jwks_url, settings.oidc_issuer, settings.oidc_audience,
                          settings.oidc_tenant_claim, settings.oidc_leeway, settings.oidc_role_claim)
        if settings.oidc_jwks_url else None))
    return app, access


def run(settings: Settings, parts: set[str], ready: threading.Event | None = None,
        extensions: Sequence[Callable[[Any, Any], None]] = ()) -> None:
    """Run ``parts`` (any of ``storescp``, ``indexer``, ``webworker``, ``web``) until SIGINT/SIGTERM.

    ``extensions``: functions ``(app, services)`` adding routes to the web (the research export registers its
    endpoint this way, so that the archive itself never imports the lake).
    """
    stoppers: list[Any] = []
    dimse_workers: Any = None
    open_logs: list[DeltaLog] = []  # closed last, together: what is left of them written by one writer run
    stoppers.append(lambda: close_logs(open_logs))
    workers = worker_count(settings.dimse_workers) if "storescp" in parts else 0
    if workers > 1:  # first, while this process has no thread and no connection: they can be forked
        from cubepacs.archive.services.workers import Workers

        dimse_workers = Workers(settings, workers)
        stoppers.append(dimse_workers.shutdown)
    # An in-process cache is only safe where the indexer that invalidates it runs in the same process.
    cache_url = settings.cache_url or ("memory://" if {"indexer", "web"} <= parts else None)
    try:
        b = open_backends(settings, cache_url)
    except BaseException:
        for s in stoppers:
            s()
        raise
    stop = threading.Event()
    clean = getattr(b.storage, "clean_temporary", None)
    if clean is not None and parts & {"storescp", "web", "webworker"}:
        _thread(clean, "clean-temporary")  # files a crash left half-written
    if "storescp" in parts:
        if workers <= 1:
            from cubepacs.archive.dimse.scp import start_from_settings

            stoppers.append(start_from_settings(settings, b.storage, b.queue, b.index).shutdown)
        log.info("DIMSE SCP %s listening on %s:%d%s%s", settings.ae_title, settings.host, settings.dimse_port,
                 f" and DICOM TLS on {settings.host}:{settings.dimse_tls_port}" if settings.dimse_tls_port else "",
                 f" ({workers} worker processes)" if workers > 1 else "")
    if "indexer" in parts:
        logs: dict[str, DeltaLog] = {}
        if settings.log_tables:
            logs = {name: open_log(b.storage, settings, name, schema) for name, schema
                    in (("dicom_object_meta", OBJECT_SCHEMA), ("dicom_image_meta", IMAGE_SCHEMA))}
        open_logs.extend(logs.values())
        indexer = Indexer(b.queue, b.index, cache=b.cache, logs=logs, feeds=settings.feeds)
        thread = _thread(indexer.run, "indexer")

        def stop_indexer() -> None:
            indexer.stop()
            thread.join(timeout=10)

        stoppers.append(stop_indexer)
    if builds_in_children(parts):
        from cubepacs.archive.services.builder import BuildLauncher

        stoppers.append(BuildLauncher(settings, b.index).shutdown)
    elif "webworker" in parts:
        from cubepacs.archive.observability import events

        events.configure(Path(settings.data_dir) / "accounts.db")  # instances left out of cubes
        worker = WebWorker(b.index, b.storage, settings.quiet_seconds, settings.max_retries, settings.codec,
                           settings.compact, max_value_bytes=settings.max_value_bytes)
        _thread(worker.run, "webworker")
        stoppers.append(worker.stop)
    uvicorn_server = None
    if "web" in parts:
        import uvicorn

        app, access = web_app(settings, b, extensions)
        open_logs.append(access)
        plain_socket = listen(settings.host, settings.http_port, "HTTP")
        from cubepacs.archive.web.proxies import uvicorn_allow_ips

        allow = uvicorn_allow_ips(settings.trusted_proxies)  # uvicorn's default would believe any local process
        config = uvicorn.Config(app, log_level="warning", access_log=False, forwarded_allow_ips=allow)
        uvicorn_server = uvicorn.Server(config)
        if settings.https_port:
            secure_socket = listen(settings.host, settings.https_port, "HTTPS")
            tls_server = uvicorn.Server(uvicorn.Config(
                app, log_level="warning", access_log=False, forwarded_allow_ips=allow, ssl_certfile=settings.tls_cert,
                ssl_keyfile=settings.tls_key, ssl_ca_certs=settings.tls_ca or None,
                ssl_cert_reqs=2 if settings.tls_ca else 0))  # ssl.CERT_REQUIRED / CERT_NONE
            secure_thread = threading.Thread(target=tls_server.run, kwargs={"sockets": [secure_socket]},
                                             name="https", daemon=True)
            secure_thread.start()

            def stop_https() -> None:
                tls_server.should_exit = True
                secure_thread.join(timeout=10)

            stoppers.append(stop_https)
            log.info("DICOMweb on https://%s:%d/dicom-web", settings.host, settings.https_port)
    elif settings.metrics_port:  # services without the web: Prometheus on their own listener
        from prometheus_client import start_http_server

        from cubepacs.archive.observability import metrics

        try:
            start_http_server(settings.metrics_port, addr=settings.host, registry=metrics.registry())
        except OSError as exc:
            raise ListenError(f"metrics cannot listen on {settings.host}:{settings.metrics_port}: "
                              f"{exc.strerror or exc}") from None
        log.info("metrics on http://%s:%d/metrics", settings.host, settings.metrics_port)

    why = {"stop": "asked to stop"}

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        why["stop"] = signal.Signals(signum).name
        stop.set()
        if uvicorn_server is not None:
            uvicorn_server.should_exit = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    settle_heap()
    if ready is not None:
        ready.set()
    if uvicorn_server is not None:
        log.info("DICOMweb on http://%s:%d/dicom-web", settings.host, settings.http_port)
        uvicorn_server.run(sockets=[plain_socket])
    else:
        stop.wait()
    log.info("%s stopping (%s); in flight: %s", "+".join(sorted(parts)), why["stop"],
             in_flight(parts, dimse_workers, b.queue))
    for s in reversed(stoppers):
        s()
    b.queue.close()
    b.index.close()
    if b.cache is not None:
        b.cache.close()
