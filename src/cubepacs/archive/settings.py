"""Service settings: defaults → TOML file → ``CUBEPACS_*`` environment → command-line flags.

Library code never reads the environment; only :func:`load_settings` (used by the CLI) does.

Example
-------
>>> s = load_settings(env={"CUBEPACS_HTTP_PORT": "9000"}, overrides={"data_dir": "/tmp/x"})
>>> s.http_port, s.index_url
(9000, 'sqlite:////tmp/x/index.db')
"""

from __future__ import annotations

import json
import os
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from cubepacs.errors import ConfigError


@dataclass(frozen=True)
class Settings:
    """Everything a service needs; URLs name the backends."""

    data_dir: str = "./cubepacs-data"
    run_dir: str = ""  # runtime files (memory-mapped metrics); "" → RAM: $XDG_RUNTIME_DIR, /dev/shm, else data_dir/run
    storage_url: str = ""
    queue_url: str = ""
    index_url: str = ""
    cache_url: str = ""  # "" → memory:// when indexer and web share a process, else no cache
    host: str = "127.0.0.1"
    dimse_port: int = 11112
    http_port: int = 8042
    ae_title: str = "CUBEPACS"
    ae_tenants: dict[str, str] = field(default_factory=lambda: {"CUBEPACS": "default"})
    api_keys: dict[str, str] = field(default_factory=dict)
    remote_aes: dict[str, str] = field(default_factory=dict)  # AE title -> "host:port" (C-MOVE destinations)
    dicomweb_peers: dict[str, str] = field(default_factory=dict)  # name -> DICOMweb base URL (admin UI send jobs)
    calling_aes: dict[str, list[str]] = field(default_factory=dict)  # tenant -> allowed calling "AE" / "AE@addr"
    max_associations: int = 64  # per DIMSE worker process
    dimse_workers: int = 0  # DIMSE listener processes sharing the port (0: one per core; 1: inside serve)
    acse_timeout: float = 30.0  # seconds to wait for an A-ASSOCIATE-RQ after connect (and A-RELEASE-RP)
    dimse_timeout: float = 60.0  # seconds to wait for a DIMSE message
    network_timeout: float = 60.0  # seconds of silence before an association is aborted
    overwrite: bool = False  # a re-sent SOP Instance UID replaces the stored one (default: the first is kept)
    metadata_at_ingest: bool = False  # keep each instance's DICOM JSON in the index as it is stored (docs/archive.md)
    pn_case_sensitive: bool = False  # C-FIND/QIDO Person Name matching case-sensitive (PS3.4 C.2.2.2.1)
    max_request_bytes: int = 4 * 1024**3  # largest STOW-RS body
    max_value_bytes: int = 1 << 30  # largest whole (opaque) pixel value a cube reader decompresses (docs/format.md)
    min_free_mb: int = 1024  # free space kept on data_dir and file storage: below it new instances are refused
    cors_origins: list[str] = field(default_factory=list)  # browser origins allowed to call the API ([]: none)
    public_url: str = ""  # e.g. https://pacs.example.org (BulkDataURIs); "" → from the request
    trusted_proxies: list[str] = field(default_factory=list)  # addresses whose X-Forwarded-Proto/Host are believed
    session_secret: str = ""  # unused since sessions live in data_dir/accounts.db (kept: old files still load)
    session_hours: float = 8.0
    users: dict[str, dict[str, str]] = field(default_factory=dict)  # name → {password (argon2 hash), tenant, role}
    dimse_roles: dict[str, str] = field(default_factory=dict)  # "AE@tenant"/"AE"/"@tenant"/"*" → role (roles.py)
    viewer_dir: str = ""  # the OHIF build; "" → data_dir/viewer (cubepacs viewer install)
    viewer_name: str = "cubepacs"  # shown by OHIF in place of its logo (a link to /ui) and in its tour
    viewer_banner: str = "never"  # OHIF's "investigational use" banner: never, always or configure:DAYS
    tls_cert: str = ""  # PEM certificate (chain) of this server, for DICOM TLS and HTTPS
    tls_key: str = ""  # its PEM private key
    tls_ca: str = ""  # PEM CA bundle: when set, TLS clients must present a certificate it signed
    tls_client_tenants: dict[str, str] = field(default_factory=dict)  # client certificate CN → tenant it may use
    dimse_tls_port: int = 0  # DICOM TLS listener beside the plain one (0: off; the standard port is 2762)
    https_port: int = 0  # HTTPS listener beside the plain one (0: off)
    oidc_jwks_url: str = ""  # OAuth2/OIDC: bearer JWTs are checked against these keys (""): off)
    oidc_issuer: str = ""
    oidc_audience: str = ""
    oidc_tenant_claim: str = "tenant"  # the claim that names the tenant
    oidc_role_claim: str = "role"  # the claim that names the role (admin, user, viewer; none: viewer)
    oidc_leeway: float = 60.0  # seconds of clock skew allowed on exp/nbf/iat
    export_dir: str = ""  # where POST /api/export writes cohorts ("" → data_dir/exports), one folder per tenant
    export_secret: str = ""  # the project secret de-identified UIDs and date shifts derive from (required to export)
    log_format: str = "text"  # "text" or "json" (one object per line)
    metrics_port: int = 0  # Prometheus /metrics of a service run without the web (0: off)
    quiet_seconds: float = 30.0
    max_retries: int = 3
    codec: str = "htj2k"
    compact: bool = True
    log_tables: bool = True  # dicom_object_meta / dicom_image_meta Delta tables under data_dir/logs
    log_interval: float = 300.0  # seconds between appends of spooled log rows to the Delta tables
    feeds: bool = False  # also publish state/image/log rows to their topics (for a Doris ROUTINE LOAD)

    def resolved(self) -> Settings:
        """Fill the URLs left empty from ``data_dir``."""
        root = Path(self.data_dir).resolve()
        return replace(
            self,
            storage_url=self.storage_url or f"file://{root}/storage",
            queue_url=self.queue_url or f"embedded://{root}/queue.db",
            index_url=self.index_url or f"sqlite:///{root}/index.db",
        )


_TYPES = {f.name: f.type for f in fields(Settings)}


def _coerce(name: str, value: Any) -> Any:
    kind = str(_TYPES[name])
    try:
        if kind == "int":
            return int(value)
        if kind == "float":
            return float(value)
        if kind == "bool":
            return value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes", "on")
        if kind.startswith("dict"):
            return value if isinstance(value, dict) else json.loads(value)
        if kind.startswith("list"):
            if isinstance(value, list):
                return [str(v) for v in value]
            text = str(value).strip()
            return json.loads(text) if text.startswith("[") else [v.strip() for v in text.split(",") if v.strip()]
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"setting {name}: cannot use {value!r} ({exc})") from exc
    return str(value)


def load_settings(config: str | os.PathLike[str] | None = None, env: dict[str, str] | None = None,
                  overrides: dict[str, Any] | None = None) -> Settings:
    """Resolve settings from the layers, later ones winning."""
    values: dict[str, Any] = {}
    if config is not None:
        try:
            doc = tomllib.loads(Path(config).read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"config file {config}: {exc}") from exc
        section = doc.get("cubepacs", doc)
        unknown = set(section) - set(_TYPES)
        if unknown:
            raise ConfigError(f"config file {config}: unknown settings {sorted(unknown)}; known: {sorted(_TYPES)}")
        values.update(section)
    for key, value in (env or {}).items():
        if key.startswith("CUBEPACS_") and key[9:].lower() in _TYPES:
            values[key[9:].lower()] = value
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return Settings(**{k: _coerce(k, v) for k, v in values.items()}).resolved()


def ensure_api_key(settings: Settings) -> tuple[Settings, str | None]:
    """The settings with the configured API keys hashed; with none configured and none in
    ``data_dir/api-keys.json`` (which the web re-reads as it changes), one is created there for tenant ``default``
    and returned once so that it can be shown (only its hash is kept); it is an ``admin`` key. Never a built-in
    default key."""
    from cubepacs.archive.auth import apikeys

    keys = apikeys.normalize(settings.api_keys)
    if keys or apikeys.load(settings.data_dir):
        return replace(settings, api_keys=keys), None
    return settings, apikeys.create(settings.data_dir, "default", "admin")
