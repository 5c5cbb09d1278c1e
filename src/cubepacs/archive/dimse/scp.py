"""Wiring of the DIMSE SCP: presentation contexts, handlers, the listening socket (127.0.0.1 by default).

Example
-------
>>> ae = build_ae("CUBEPACS")
>>> len(ae.supported_contexts) > 100
True
"""

from __future__ import annotations

import functools
from typing import Any

from pydicom.uid import UID
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
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

from cubepacs.archive.dimse import handlers as h
from cubepacs.archive.index.store import Index
from cubepacs.archive.queue.base import Queue
from cubepacs.archive.storage.base import Storage


def build_ae(ae_title: str) -> AE:
    """An AE accepting every storage SOP class in every transfer syntax, Verification and Q/R FIND."""
    ae = AE(ae_title=ae_title)
    ae.maximum_pdu_size = 0
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


def start_scp(host: str, port: int, ae_title: str, tenants: dict[str, str], storage: Storage, queue: Queue,
              index: Index, remote_aes: dict[str, str] | None = None) -> Any:
    """Start the SCP in background threads; returns the server (call ``shutdown()`` to stop)."""
    ae = build_ae(ae_title)
    handlers: list[Any] = [
        (evt.EVT_REQUESTED, functools.partial(h.handle_requested, tenants=tenants)),
        (evt.EVT_CONN_OPEN, h.handle_conn_open),
        (evt.EVT_C_ECHO, h.handle_echo),
        (evt.EVT_C_STORE, functools.partial(h.handle_store, tenants=tenants, storage=storage, queue=queue)),
        (evt.EVT_C_FIND, functools.partial(h.handle_find, tenants=tenants, index=index)),
        (evt.EVT_C_GET, functools.partial(h.handle_get, tenants=tenants, index=index, storage=storage)),
        (evt.EVT_C_MOVE, functools.partial(h.handle_move, tenants=tenants, index=index, storage=storage,
                                           remote_aes=remote_aes or {})),
        (evt.EVT_N_ACTION, functools.partial(h.handle_n_action, tenants=tenants, index=index,
                                             remote_aes=remote_aes or {}, ae_title=ae_title)),
    ]
    return ae.start_server((host, port), block=False, evt_handlers=handlers)
