"""Backup, restore and verification of an archive (``cubepacs backup`` / ``restore`` / ``verify-backup``).

A backup is a folder::

    manifest.json      format, time, cubepacs version, index schema version, and every object: key → size, sha256
    index.db           the index: SQLite's online backup (a consistent copy while the archive runs) …
    index.pgdump       … or, for PostgreSQL, ``pg_dump --format=custom``
    sqlite/<path>      the other SQLite databases of ``data_dir`` (the embedded queue: events not yet indexed;
                       accounts), online backups too
    data/<path>        every other file of ``data_dir`` (API keys, users, session secret, the log tables)
    objects/<key>      every object of the storage (instances, series metadata, cubes), ``file://`` or ``s3://``

The databases are saved first, the objects after: an instance in the saved index was stored before it was indexed
and a stored object is never rewritten in place, so its object is in the backup — unless it was deleted
meanwhile, which :func:`verify` reports. ``data_dir/run`` (runtime files) and the storage root are not in
``data/``. A restore goes into an empty archive (an empty ``data_dir``, an empty PostgreSQL database, an empty
bucket): the index, the databases and files, every object; then :func:`verify` checks the archive against its
index and the manifest — every indexed instance and every series' metadata and cube present, sizes and SHA-256
equal.

Example
-------
>>> import tempfile, os
>>> from cubepacs.archive.settings import load_settings
>>> root = tempfile.mkdtemp()
>>> s = load_settings(overrides={"data_dir": os.path.join(root, "a")})
>>> from cubepacs.archive.services.service import open_backends
>>> b = open_backends(s); b.queue.close(); b.index.close()  # an empty archive
>>> manifest = backup(s, os.path.join(root, "b"))
>>> manifest["objects"], manifest["index"]
({}, 'index.db')
>>> verify_backup(os.path.join(root, "b")).ok
True
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cubepacs.archive.settings import Settings
from cubepacs.errors import BackendError, ConfigError

log = logging.getLogger("cubepacs.backup")
FORMAT = 1
_SQLITE_MAGIC = b"SQLite format 3\x00"
_SQLITE_SIDE = ("-wal", "-shm", "-journal")


def _sqlite_path(url: str) -> Path | None:
    """The file of a ``sqlite:///`` URL (None for another database or an in-memory one)."""
    if not url.startswith("sqlite:///") or url in ("sqlite://", "sqlite:///:memory:"):
        return None
    return Path(url[len("sqlite:///"):]).resolve()


def _is_sqlite(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(16) == _SQLITE_MAGIC
    except OSError:
        return False


def _online_copy(source: Path, target: Path) -> None:
    """SQLite's online backup of ``source`` into ``target``: one consistent snapshot while others write."""
    target.parent.mkdir(parents=True, exist_ok=True)
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=30)
    dst = sqlite3.connect(target)
    try:
        src.backup(dst)
    finally:
        dst.close()
        src.close()
    os.chmod(target, 0o600)  # accounts.db holds sessions and the audit log: as private as the original


def _inside(base: Path, rel: str) -> Path:
    """``base / rel``, refused (ConfigError) when a manifest entry would lead outside ``base``.

    Example
    -------
    >>> _inside(Path("/b"), "data/x.json").as_posix()
    '/b/data/x.json'
    """
    path = (base / rel).resolve()
    if not path.is_relative_to(base.resolve()):
        raise ConfigError(f"backup manifest names {rel!r}, outside {base}")
    return path


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _data_files(data_dir: Path, skip: set[Path]) -> Iterable[Path]:
    """Every file under ``data_dir`` but ``run/``, the folders and files in ``skip``, and SQLite side files."""
    for folder, dirs, files in os.walk(data_dir):
        here = Path(folder)
        dirs[:] = [d for d in dirs if (here / d).resolve() not in skip and not (here == data_dir and d == "run")]
        for name in files:
            path = here / name
            if path.resolve() not in skip and not name.endswith(_SQLITE_SIDE) and not name.endswith(".tmp") and \
                    name != "initial-api-key":  # a key in clear, to be read once and deleted: never copied
                yield path


def backup(settings: Settings, target: str | os.PathLike[str]) -> dict[str, Any]:
    """Save the archive of ``settings`` into the new folder ``target``; returns the manifest (also written as
    ``manifest.json``, last: a backup without one is incomplete). Runs beside a running archive."""
    from cubepacs._registry import open_backend
    from cubepacs.archive.index.models import SCHEMA_VERSION

    out = Path(target)
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"backup folder {out} is not empty")
    out.mkdir(parents=True, exist_ok=True)
    os.chmod(out, 0o700)  # a backup holds every instance, the accounts and the keys' hashes: its owner's only
    data_dir = Path(settings.data_dir).resolve()
    manifest: dict[str, Any] = {"format": FORMAT, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                "schema_version": SCHEMA_VERSION, "objects": {}}
    from cubepacs import __version__

    manifest["cubepacs"] = __version__
    index_file = _sqlite_path(settings.index_url)
    if index_file is not None:
        if not index_file.is_file():
            raise ConfigError(f"no index at {index_file}: nothing to back up")
        _online_copy(index_file, out / "index.db")
        manifest["index"] = "index.db"
    elif settings.index_url.startswith("postgresql://"):
        _pg("pg_dump", "--format=custom", f"--file={out / 'index.pgdump'}", settings.index_url)
        manifest["index"] = "index.pgdump"
    else:
        raise ConfigError(f"index {settings.index_url.split('://')[0]}:// cannot be backed up")
    storage = open_backend("storage", settings.storage_url)
    root = getattr(storage, "root", None)
    skip = {p for p in (index_file, Path(root).resolve() if root is not None else None) if p is not None}
    sqlite_files, data_files = [], []
    for path in (_data_files(data_dir, skip) if data_dir.is_dir() else []):
        rel = path.relative_to(data_dir)
        if _is_sqlite(path):
            _online_copy(path, out / "sqlite" / rel)
            sqlite_files.append(str(rel))
        else:
            (out / "data" / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, out / "data" / rel)
            data_files.append(str(rel))
    manifest["sqlite"], manifest["data"] = sqlite_files, data_files
    for key in storage.keys():
        if key.startswith(storage.PROBE_PREFIX):
            continue
        try:
            body = storage.get(key)
        except KeyError:  # deleted since it was listed
            continue
        (out / "objects" / key).parent.mkdir(parents=True, exist_ok=True)
        (out / "objects" / key).write_bytes(body)
        manifest["objects"][key] = {"size": len(body), "sha256": _sha256(body)}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True))
    log.info("backup %s: index, %d database(s), %d file(s), %d object(s)", out, len(sqlite_files), len(data_files),
             len(manifest["objects"]))
    return manifest


def _pg(tool: str, *args: str) -> None:
    """Run ``pg_dump``/``pg_restore``; BackendError with its first error line (the URL's password masked)."""
    from cubepacs._registry import mask_url

    try:
        res = subprocess.run([tool, *args], check=False, capture_output=True, text=True, timeout=3600)
    except FileNotFoundError:
        raise BackendError(f"{tool} is not installed (PostgreSQL client tools)") from None
    if res.returncode != 0:
        line = next((x for x in res.stderr.splitlines() if x.strip()), f"exit {res.returncode}")
        raise BackendError(f"{tool}: {' '.join(mask_url(w) for w in line.split())}")


def load_manifest(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """The manifest of a backup folder; ConfigError when it is not a (complete) backup."""
    path = Path(folder) / "manifest.json"
    try:
        manifest: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{folder} is not a complete cubepacs backup: {path.name}: {exc}") from None
    if manifest.get("format") != FORMAT:
        raise ConfigError(f"{folder}: backup format {manifest.get('format')!r}, this cubepacs reads {FORMAT}")
    return manifest


def restore(source: str | os.PathLike[str], settings: Settings) -> Report:
    """Restore the backup ``source`` into the empty archive of ``settings`` (data_dir, index, storage), then
    :func:`verify` it; returns the verification report."""
    from cubepacs._registry import open_backend

    src = Path(source)
    manifest = load_manifest(src)
    data_dir = Path(settings.data_dir).resolve()
    for folder, names in (("sqlite", manifest["sqlite"]), ("data", manifest["data"]), ("objects", manifest["objects"])):
        for rel in names:  # every entry checked before anything is written
            _inside(src / folder, rel)
            if folder != "objects":
                _inside(data_dir, rel)
    if data_dir.exists() and any(data_dir.iterdir()):
        raise ConfigError(f"restore target data_dir {data_dir} is not empty")
    data_dir.mkdir(parents=True, exist_ok=True)
    index_file = _sqlite_path(settings.index_url)
    if manifest["index"] == "index.db":
        if index_file is None:
            raise ConfigError("the backup holds a SQLite index: restore it with a sqlite:/// index_url")
        index_file.parent.mkdir(parents=True, exist_ok=True)
        _online_copy(src / "index.db", index_file)
    else:
        if not settings.index_url.startswith("postgresql://"):
            raise ConfigError("the backup holds a PostgreSQL index: restore it with a postgresql:// index_url")
        _pg("pg_restore", "--no-owner", "--exit-on-error", f"--dbname={settings.index_url}",
            str(src / "index.pgdump"))
    for rel in manifest["sqlite"]:
        _online_copy(_inside(src / "sqlite", rel), _inside(data_dir, rel))
    for rel in manifest["data"]:
        _inside(data_dir, rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(_inside(src / "data", rel), _inside(data_dir, rel))
    storage = open_backend("storage", settings.storage_url)
    if storage.keys():
        raise ConfigError(f"restore target storage {settings.storage_url.split('?')[0]} is not empty")
    for key in manifest["objects"]:
        storage.put(key, _inside(src / "objects", key).read_bytes())
    log.info("restored %s into %s: %d object(s)", src, data_dir, len(manifest["objects"]))
    return verify(settings, manifest)


@dataclass
class Report:
    """What a verification found: counts, and one line per problem (at most 100 kept)."""

    instances: int = 0
    series_objects: int = 0
    objects: int = 0
    problems: list[str] = field(default_factory=list)
    problem_count: int = 0

    @property
    def ok(self) -> bool:
        """No problem found."""
        return self.problem_count == 0

    def problem(self, line: str) -> None:
        """Record one problem."""
        self.problem_count += 1
        if len(self.problems) < 100:
            self.problems.append(line)

    def summary(self) -> str:
        """One line."""
        return (f"{self.instances} instance(s), {self.series_objects} series object(s), {self.objects} object(s) "
                f"checked: " + ("ok" if self.ok else f"{self.problem_count} problem(s)"))


def _check(report: Report, indexed: Iterable[tuple[str, int | None]], series_keys: Iterable[str],
           manifest: dict[str, Any], read: Callable[[str], bytes | None]) -> Report:
    """Every indexed instance (key, size) and series object present in ``manifest`` and readable with its SHA-256
    (a series object built after the backup: present); then every other object of the manifest."""
    objects: dict[str, dict[str, Any]] = manifest["objects"]
    seen: set[str] = set()

    def one(key: str, size: int | None, what: str) -> None:
        seen.add(key)
        saved = objects.get(key)
        if saved is None:  # a series' metadata or cube built since the backup (derived: present is enough)
            if what != "series object" or read(key) is None:
                report.problem(f"{what} {key}: " + ("not in the backup" if what != "series object" else "missing"))
            return
        body = read(key)
        if body is None:
            report.problem(f"{what} {key}: missing")
        elif _sha256(body) != saved["sha256"]:
            report.problem(f"{what} {key}: SHA-256 differs from the backup's")
        elif size is not None and len(body) != size:
            report.problem(f"{what} {key}: {len(body)} bytes, the index says {size}")

    for key, size in indexed:
        report.instances += 1
        one(key, size, "instance")
    for key in series_keys:
        report.series_objects += 1
        one(key, None, "series object")
    for key in objects:
        report.objects += 1
        if key not in seen:
            one(key, None, "object")
    return report


def verify(settings: Settings, manifest: dict[str, Any]) -> Report:
    """Check the archive of ``settings`` against its index and the backup's ``manifest``."""
    from sqlalchemy import select

    from cubepacs._registry import open_backend
    from cubepacs.archive.index.models import dicom_instance, dicom_json_meta

    index, storage = open_backend("index", settings.index_url), open_backend("storage", settings.storage_url)

    def read(key: str) -> bytes | None:
        try:
            return bytes(storage.get(key))
        except KeyError:
            return None

    try:
        with index.engine.connect() as conn:
            indexed = [(r.storage_key, r.size) for r in conn.execute(select(dicom_instance.c.storage_key,
                                                                            dicom_instance.c.size))]
            series = [k for r in conn.execute(select(dicom_json_meta.c.json_key, dicom_json_meta.c.cube_key))
                      for k in r if k]
    finally:
        index.close()
    return _check(Report(), indexed, series, manifest, read)


def verify_backup(folder: str | os.PathLike[str]) -> Report:
    """Check a backup folder on its own: its saved index (SQLite; a ``pg_dump`` is checked by restoring it) against
    its objects, and every object against the manifest's SHA-256."""
    src = Path(folder)
    manifest = load_manifest(src)

    def read(key: str) -> bytes | None:
        try:
            return (src / "objects" / key).read_bytes()
        except OSError:
            return None

    indexed: list[tuple[str, int | None]] = []
    series: list[str] = []
    if manifest["index"] == "index.db":
        conn = sqlite3.connect(f"file:{src / 'index.db'}?mode=ro", uri=True)
        try:
            indexed = [(k, s) for k, s in conn.execute("SELECT storage_key, size FROM dicom_instance")]
            series = [k for row in conn.execute("SELECT json_key, cube_key FROM dicom_json_meta") for k in row if k]
        finally:
            conn.close()
    return _check(Report(), indexed, series, manifest, read)
