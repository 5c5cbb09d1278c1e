"""Wiring of the DIMSE SCP: presentation contexts, handlers, the listening socket (127.0.0.1 by default).

Example
-------
>>> ae = build_ae("CUBEPACS")
>>> len(ae.supported_contexts) > 100
True
"""

from __future__ import annotations

import functools
import logging
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom.uid import UID
from pynetdicom import ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, _config, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StorageCommitmentPushModel,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

from cubepacs.archive.auth.accounts import Accounts
from cubepacs.archive.auth.roles import guard_dimse
from cubepacs.archive.dimse import handlers as h
from cubepacs.archive.dimse import handshake, lean, retrieve, syntaxes
from cubepacs.archive.dimse.balance import Shared
from cubepacs.archive.dimse.scu import ArchiveAE
from cubepacs.archive.index.store import Index
from cubepacs.archive.queue.base import Queue
from cubepacs.archive.settings import Settings
from cubepacs.archive.storage.base import Storage
from cubepacs.errors import ListenError


@dataclass(frozen=True)
class Limits:
    """Association limits: how many at once, and how long a silent peer is waited for (seconds)."""

    max_associations: int = 64
    acse_timeout: float = 30.0  # A-ASSOCIATE-RQ after connecting, and A-RELEASE-RP
    dimse_timeout: float = 60.0  # a DIMSE message being received
    network_timeout: float = 60.0  # an established association with no traffic is aborted


def build_ae(ae_title: str, limits: Limits | None = None) -> ArchiveAE:
    """An AE accepting every storage SOP class in every transfer syntax, Verification and Q/R FIND/GET/MOVE."""
    limits = limits or Limits()
    ae = ArchiveAE(ae_title=ae_title)
    ae.maximum_pdu_size = 0
    ae.maximum_associations = limits.max_associations
    ae.acse_timeout = limits.acse_timeout
    ae.dimse_timeout = limits.dimse_timeout
    ae.network_timeout = limits.network_timeout
    # pynetdicom accepts the first of *our* syntaxes that the peer proposed: list the encapsulated ones first so
    # a file proposed with its own (compressed) syntax is received and kept as it is, not decompressed.
    uncompressed = [ts for ts in ALL_TRANSFER_SYNTAXES if not UID(ts).is_compressed]
    syntaxes = [ts for ts in ALL_TRANSFER_SYNTAXES if UID(ts).is_compressed] + uncompressed
    for cx in AllStoragePresentationContexts:
        assert cx.abstract_syntax is not None
        # scp_role/scu_role: also accept the SCU/SCP role reversal a C-GET requestor asks for
        ae.add_supported_context(cx.abstract_syntax, syntaxes, scu_role=True, scp_role=True)
    for sop in (Verification, PatientRootQueryRetrieveInformationModelFind, StudyRootQueryRetrieveInformationModelFind,
                PatientRootQueryRetrieveInformationModelGet, StudyRootQueryRetrieveInformationModelGet,
                PatientRootQueryRetrieveInformationModelMove, StudyRootQueryRetrieveInformationModelMove,
                StorageCommitmentPushModel):
        ae.add_supported_context(sop)
    return ae


def tls_context(cert: str, key: str, ca: str = "") -> ssl.SSLContext:
    """A server TLS context (TLS 1.2 or later, as the DICOM TLS secure transport profiles ask); with ``ca``,
    clients must present a certificate that CA signed."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    if ca:
        ctx.load_verify_locations(ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def start_scp(host: str, port: int, ae_title: str, tenants: dict[str, str], storage: Storage, queue: Queue,
              index: Index, remote_aes: dict[str, str] | None = None, limits: Limits | None = None,
              allowed: dict[str, list[str]] | None = None, overwrite: bool = False,
              tls: tuple[int, ssl.SSLContext] | None = None, cert_tenants: dict[str, str] | None = None,
              shared: Shared | None = None, metadata: bool = False, roles: dict[str, str] | None = None,
              audit: Any = None) -> Any:
    """Start the SCP in background threads; returns a server (call ``shutdown()`` to stop; it stops the TLS
    listener too).

    ``allowed``: tenant → calling AE titles (``AE`` or ``AE@address``) it accepts (none listed: any);
    ``overwrite``: a re-sent SOP Instance UID replaces the stored one (default: the first is kept);
    ``tls``: (port, context) of a DICOM TLS listener beside the plain one; ``cert_tenants``: client certificate
    common name → the only tenant an association with that certificate may call; ``shared``: listen on
    sockets several worker processes share, balancing associations between them (``balance``); ``metadata``:
    each stored instance's DICOM JSON kept in the index (``metadata_at_ingest``); ``roles``: the calling peers'
    roles (``dimse_roles``: what each may do, ``roles.py``); ``audit``: where retrievals, queries and refusals
    are recorded (``accounts.Accounts.audit``).
    """
    if not logging.getLogger("pynetdicom").isEnabledFor(logging.DEBUG):
        # pynetdicom binds debug-logging handlers to every PDU and DIMSE message sent and received; they cost
        # ~10 % of a C-STORE even when nothing is logged (its documented switch: pynetdicom._config)
        _config.LOG_HANDLER_LEVEL = "none"
    handshake.cache_uid_validation()
    ae = build_ae(ae_title, limits)
    handlers: list[Any] = [
        (evt.EVT_REQUESTED, functools.partial(h.handle_requested, tenants=tenants, allowed=allowed or {},
                                              cert_tenants=cert_tenants or {})),
        # the called tenant's stored syntaxes, for the contexts a C-GET requestor lets the archive send on
        (evt.EVT_REQUESTED, functools.partial(syntaxes.bind_stored, tenants=tenants, index=index)),
        (evt.EVT_CONN_OPEN, h.handle_conn_open),
        (evt.EVT_ESTABLISHED, h.handle_established),
        (evt.EVT_RELEASED, h.handle_closed),
        (evt.EVT_ABORTED, h.handle_closed),
        (evt.EVT_REJECTED, h.handle_rejected),
        (evt.EVT_C_ECHO, h.handle_echo),
        (evt.EVT_C_STORE, functools.partial(h.handle_store, tenants=tenants, storage=storage, queue=queue,
                                            overwrite=overwrite, metadata=metadata)),
        (evt.EVT_C_FIND, functools.partial(h.handle_find, tenants=tenants, index=index)),
        (evt.EVT_C_GET, functools.partial(retrieve.handle_get, tenants=tenants, index=index, storage=storage)),
        (evt.EVT_C_MOVE, functools.partial(retrieve.handle_move, tenants=tenants, index=index, storage=storage,
                                           remote_aes=remote_aes or {}, ae_title=ae_title)),
        (evt.EVT_N_ACTION, functools.partial(h.handle_n_action, tenants=tenants, index=index,
                                             remote_aes=remote_aes or {}, ae_title=ae_title)),
    ]
    services = {evt.EVT_C_STORE: "store", evt.EVT_C_FIND: "find", evt.EVT_C_GET: "get", evt.EVT_C_MOVE: "move",
                evt.EVT_N_ACTION: "commit"}  # each checks the calling peer's role (roles.py, dimse_roles)
    handlers = [(e, guard_dimse(f, services[e], roles or {}, tenants, audit) if e in services else f)
                for e, f in handlers]
    servers = Listeners()
    for p, ctx in ((port, None), *((tls,) if tls is not None else ())):
        try:
            servers.items.append(lean.start_server(ae, (host, p), handlers, ctx,
                                                   shared.server_class(p) if shared is not None else None))
        except OSError as exc:
            servers.shutdown()
            raise ListenError(f"DIMSE cannot listen on {host}:{p}: {exc.strerror or exc}") from None
    return servers


class Listeners:
    """The plain and TLS listeners of one SCP, stopped together."""

    def __init__(self) -> None:
        self.items: list[Any] = []

    def shutdown(self) -> None:
        """Stop every listener."""
        for server in self.items:
            server.shutdown()


def start_from_settings(settings: Settings, storage: Storage, queue: Queue, index: Index,
                        shared: Shared | None = None) -> Any:
    """The DIMSE SCP (and DICOM TLS listener) of ``settings`` over these backends, in background threads."""
    from cubepacs.archive.observability import events

    events.configure(Path(settings.data_dir) / "accounts.db")  # refused instances, failed associations
    limits = Limits(settings.max_associations, settings.acse_timeout, settings.dimse_timeout,
                    settings.network_timeout)
    tls = (settings.dimse_tls_port, tls_context(settings.tls_cert, settings.tls_key, settings.tls_ca)) \
        if settings.dimse_tls_port else None
    return start_scp(settings.host, settings.dimse_port, settings.ae_title, settings.ae_tenants, storage, queue, index,
                     settings.remote_aes, limits, settings.calling_aes, settings.overwrite, tls,
                     settings.tls_client_tenants, shared=shared,
                     metadata=settings.metadata_at_ingest, roles=settings.dimse_roles,
                     audit=Accounts(Path(settings.data_dir) / "accounts.db").audit)
