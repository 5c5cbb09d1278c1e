"""``cubepacs serve`` (everything in one process) and each service alone: storescp, indexer, webworker, web."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer

from cubepacs.cli._common import _fail, app, out
from cubepacs.errors import CubepacsError

Config = Annotated[Path | None, typer.Option("--config", help="TOML settings file ([cubepacs] table)")]
DataDir = Annotated[str | None, typer.Option(help="data folder for the embedded backends [./cubepacs-data]")]
Host = Annotated[str | None, typer.Option(help="address to listen on [127.0.0.1]")]
DimsePort = Annotated[int | None, typer.Option(help="DIMSE port [11112]")]
HttpPort = Annotated[int | None, typer.Option(help="HTTP port [8042]")]
Storage = Annotated[str | None, typer.Option("--storage", help="storage URL (file://…) [data-dir/storage]")]
Queue = Annotated[str | None, typer.Option("--queue", help="queue URL (embedded://…) [data-dir/queue.db]")]
Index = Annotated[str | None, typer.Option("--index", help="index URL (sqlite:///…, postgresql://…)")]
Cache = Annotated[str | None, typer.Option("--cache", help="cache URL (memory://, redis://…) [memory://]")]
Quiet = Annotated[float | None, typer.Option(help="seconds without a new instance before a series is built [30]")]


EXIT_SETTING, EXIT_LISTEN, EXIT_BACKEND = 2, 3, 4  # documented in docs/operations.md


def _run(parts: set[str], config: Path | None, check: bool = False, **overrides: Any) -> None:
    from cubepacs.archive.observability.logs import configure
    from cubepacs.archive.services.workers import builds_in_children, metrics_across_processes, worker_count
    from cubepacs.archive.settings import ensure_api_key, load_settings
    from cubepacs.errors import BackendError, ListenError

    names = {"storage": "storage_url", "queue": "queue_url", "index": "index_url", "cache": "cache_url"}
    service = "serve" if len(parts) > 1 else next(iter(parts))
    try:
        settings = load_settings(config, dict(os.environ), {names.get(k, k): v for k, v in overrides.items()})
        configure(settings.log_format, service)
        if ("storescp" in parts and worker_count(settings.dimse_workers) > 1) or builds_in_children(parts):
            # before prometheus-client is imported (below); on a RAM-backed folder (a full disk: no SIGBUS)
            metrics_across_processes(settings.data_dir, settings.run_dir, os.environ.get("XDG_RUNTIME_DIR"))
        from cubepacs.archive.services.service import check as check_backends
        from cubepacs.archive.services.service import run

        if check:
            results = check_backends(settings)
            for name, result in results.items():
                out.print(f"{name:8} {result}")
            if any(v != "ok" for v in results.values()):
                raise typer.Exit(EXIT_BACKEND)
            out.print("settings and backends: ok")
            return
        if "web" in parts:
            settings, new_key = ensure_api_key(settings)
            if new_key:
                from cubepacs.cli.keys import show_first_key

                show_first_key(Path(settings.data_dir), new_key)
        from cubepacs.research.api import routes
        from cubepacs.research.exportui import ui_routes

        export_dir = settings.export_dir or str(Path(settings.data_dir) / "exports")
        run(settings, parts, extensions=[routes(export_dir, settings.export_secret),
                                         ui_routes(export_dir, settings.export_secret)])
    except ListenError as exc:
        raise _fail(str(exc), EXIT_LISTEN) from None
    except BackendError as exc:
        raise _fail(str(exc), EXIT_BACKEND) from None
    except CubepacsError as exc:
        raise _fail(str(exc), EXIT_SETTING) from None
    except OSError as exc:  # a TLS certificate or key file that cannot be read, …
        raise _fail(f"{exc.filename or ''} {exc.strerror or exc}".strip(), EXIT_SETTING) from None


@app.command()
def serve(config: Config = None, data_dir: DataDir = None, host: Host = None, dimse_port: DimsePort = None,
          http_port: HttpPort = None, storage: Storage = None, queue: Queue = None, index: Index = None,
          quiet_seconds: Quiet = None, cache: Cache = None,
          check: Annotated[bool, typer.Option("--check", help="check the settings, reach every backend, exit "
                                                               "(0: all ok, 2: bad setting, 4: a backend)")]
          = False) -> None:
    """Run the whole archive in one process: DIMSE SCP, indexer, web worker and DICOMweb.

    Embedded defaults need nothing else: SQLite index, files and a durable queue under --data-dir. Listens on
    127.0.0.1 (DIMSE 11112, HTTP 8042). Called AE title CUBEPACS is tenant 'default'; an API key for the web is
    created on first start.
    """
    _run({"storescp", "indexer", "webworker", "web"}, config, check, data_dir=data_dir, host=host,
         dimse_port=dimse_port,
         http_port=http_port, storage=storage, queue=queue, index=index, quiet_seconds=quiet_seconds, cache=cache)


@app.command()
def storescp(config: Config = None, data_dir: DataDir = None, host: Host = None, dimse_port: DimsePort = None,
             storage: Storage = None, queue: Queue = None, index: Index = None) -> None:
    """Run the DIMSE SCP alone (C-ECHO, C-STORE, C-FIND, C-GET, C-MOVE, storage commitment)."""
    _run({"storescp"}, config, data_dir=data_dir, host=host, dimse_port=dimse_port, storage=storage, queue=queue,
         index=index)


@app.command()
def indexer(config: Config = None, data_dir: DataDir = None, queue: Queue = None, index: Index = None,
            cache: Cache = None) -> None:
    """Run the indexer alone: storage events from the queue into the index (invalidating the cache)."""
    _run({"indexer"}, config, data_dir=data_dir, queue=queue, index=index, cache=cache)


@app.command()
def webworker(config: Config = None, data_dir: DataDir = None, storage: Storage = None, index: Index = None,
              quiet_seconds: Quiet = None) -> None:
    """Run the web worker alone: series metadata JSON and cubes for quiet series."""
    _run({"webworker"}, config, data_dir=data_dir, storage=storage, index=index, quiet_seconds=quiet_seconds)


@app.command()
def web(config: Config = None, data_dir: DataDir = None, host: Host = None, http_port: HttpPort = None,
        storage: Storage = None, queue: Queue = None, index: Index = None, cache: Cache = None) -> None:
    """Run the web alone: DICOMweb (QIDO-RS, WADO-RS, STOW-RS), the archive API, the viewer, health and metrics."""
    _run({"web"}, config, data_dir=data_dir, host=host, http_port=http_port, storage=storage, queue=queue,
         index=index, cache=cache)
