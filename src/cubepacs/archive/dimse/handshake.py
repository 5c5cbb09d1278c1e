"""Association set-up done once per distinct request, not once per association.

Why (pynetdicom 3.0, measured on DCMTK storescu's A-ASSOCIATE-RQ of 128 presentation contexts, 9.6 kB): decoding
the request takes 2.2 ms of CPU, turning it into a primitive 0.8 ms, negotiating the contexts 0.9 ms and encoding
the A-ASSOCIATE-AC 1.1 ms — about 5 ms for every association, while the instance it often carries costs 4 ms.
A modality, a router or a script proposes the same bytes on every association, so the outcome of each step is
kept, keyed by those bytes:

* the decoded request (its primitive), in a small LRU shared by the process; pynetdicom only reads it;
* the negotiated contexts, per request and acceptor AE (a pure function of the two: read, never written);
* the encoded A-ASSOCIATE-AC, per request and acceptor AE — sent as it is, without the PDU object pynetdicom's
  state machine would build from the accept primitive first (AE-7, ``install``).

UID validation results are kept too (``cache_uid_validation``): pydicom and pynetdicom check the same few hundred
UIDs thousands of times per association.

Requests carrying a User Identity item are never cached (its answer is the server's to give each time), nor
those offering the SCP role for a class (a C-GET requestor: which syntax the archive accepts to send in depends on
what it stores, ``syntaxes.py``), nor anything while pynetdicom logs at DEBUG or a PDU-level event handler is
bound (they expect real PDU objects).

Example
-------
>>> remembered(b"\\x01" + bytes(9)) is None
True
"""

from __future__ import annotations

import functools
import re
import threading
from typing import Any

from cachetools import LRUCache
from pydicom import valuerep
from pydicom.uid import RE_VALID_UID, UID
from pynetdicom import _config, acse, evt, fsm
from pynetdicom.presentation import PresentationContext

# pynetdicom's, with the syntax of the contexts the archive sends on (C-GET) re-chosen: see syntaxes.py
from cubepacs.archive.dimse.syntaxes import negotiate_as_acceptor as _negotiate_as_acceptor

_LOCK = threading.Lock()
_REQUESTS: LRUCache[bytes, CachedRequest] = LRUCache(maxsize=64)
_BY_LIST: dict[int, CachedRequest] = {}  # id of a cached request's context list -> that request
_PER_ACCEPTOR = 8  # outcomes kept per request (one per acceptor AE / supported-context list: one in a server)


class CachedRequest:
    """A decoded A-ASSOCIATE-RQ standing in for its PDU: the state machine only asks it for its primitive."""

    protocol_version = 0x0001

    def __init__(self, primitive: Any) -> None:
        self.primitive = primitive
        self.negotiated: dict[int, tuple[object, Any, Any, Any]] = {}  # id(contexts) -> (contexts, roles, result)
        self.accepted: dict[int, tuple[object, bytes]] = {}  # id(AE) -> (AE, encoded A-ASSOCIATE-AC)

    def to_primitive(self) -> Any:
        return self.primitive

    def accept_for(self, ae: object) -> bytes | None:
        """The A-ASSOCIATE-AC this AE sent for this request before, if any."""
        found = self.accepted.get(id(ae))
        return found[1] if found is not None and found[0] is ae else None

    def keep_accept(self, ae: object, data: bytes) -> None:
        with _LOCK:
            if len(self.accepted) >= _PER_ACCEPTOR:
                self.accepted.clear()
            self.accepted[id(ae)] = (ae, data)


def usable(assoc: Any) -> bool:
    """True when nothing looks at PDU objects: pynetdicom not logging at DEBUG, no PDU event handler bound."""
    return _config.LOG_HANDLER_LEVEL == "none" and not any(
        assoc.get_handlers(e) for e in (evt.EVT_PDU_RECV, evt.EVT_PDU_SENT, evt.EVT_DATA_RECV, evt.EVT_DATA_SENT))


def remembered(data: bytes) -> CachedRequest | None:
    """The cached request of these exact bytes, if any."""
    with _LOCK:
        return _REQUESTS.get(data)


def remember(data: bytes, pdu: Any) -> CachedRequest | None:
    """Keep a freshly decoded A-ASSOCIATE-RQ for the next association sending the same bytes (None when it
    must not be cached: another protocol version, a User Identity item, an SCP role offered)."""
    if pdu.protocol_version != 0x0001:
        return None
    primitive = pdu.to_primitive()
    if any(type(item).__name__ == "UserIdentityNegotiation" or getattr(item, "scp_role", False)
           for item in primitive.user_information):
        return None
    cached = CachedRequest(primitive)
    with _LOCK:
        if len(_REQUESTS) >= _REQUESTS.maxsize:  # the one about to be evicted leaves the id map too
            _, old = _REQUESTS.popitem()
            _BY_LIST.pop(id(old.primitive.presentation_context_definition_list), None)
        _REQUESTS[data] = cached
        _BY_LIST[id(primitive.presentation_context_definition_list)] = cached
    return cached


def negotiate_as_acceptor(rq_contexts: list[PresentationContext], ac_contexts: list[PresentationContext],
                          roles: Any = None) -> Any:
    """pynetdicom's ``negotiate_as_acceptor``, its outcome kept per cached request and supported-context list."""
    cached = _BY_LIST.get(id(rq_contexts))
    if cached is None or cached.primitive.presentation_context_definition_list is not rq_contexts:
        return _negotiate_as_acceptor(rq_contexts, ac_contexts, roles)
    key = sorted((str(k), v) for k, v in (roles or {}).items())
    found = cached.negotiated.get(id(ac_contexts))
    if found is not None and found[0] is ac_contexts and found[1] == key:
        return found[2], found[3]
    result, ac_roles = _negotiate_as_acceptor(rq_contexts, ac_contexts, roles)
    with _LOCK:
        if len(cached.negotiated) >= _PER_ACCEPTOR:
            cached.negotiated.clear()
        cached.negotiated[id(ac_contexts)] = (ac_contexts, key, result, ac_roles)
    return result, ac_roles


def install() -> None:
    """Route pynetdicom's acceptor negotiation through the cache, and its state machine's AE-7 (send the
    A-ASSOCIATE-AC) to the DUL's ``send_cached_accept`` first (idempotent; uncached requests are unchanged).

    AE-7 builds an A-ASSOCIATE-AC PDU object from the accept primitive — 128 presentation context items for
    storescu, a tenth of an association's CPU — which the lean DUL then discards for the bytes it sent before."""
    acse.negotiate_as_acceptor = negotiate_as_acceptor  # type: ignore[attr-defined]
    description, original, state = fsm.ACTIONS["AE-7"]
    if getattr(original, "cached", False):
        return

    def ae_7(dul: Any) -> str:
        send = getattr(dul, "send_cached_accept", None)
        if send is not None and send():
            return "Sta6"
        return str(original(dul))

    ae_7.cached = True  # type: ignore[attr-defined]
    fsm.ACTIONS["AE-7"] = (description, ae_7, state)


def cache_uid_validation() -> None:
    """Remember UI values already validated (pydicom's and pynetdicom's validators, through their documented
    ``VALIDATORS`` tables).

    Why: DCMTK's storescu proposes 128 presentation contexts; pydicom checks each UID string it wraps with a
    regular expression and pynetdicom checks again, thousands of times per association for the same few hundred
    SOP class and transfer syntax UIDs — a quarter of the CPU of setting up an association. The answers are
    pure functions of the string, so an LRU cache (bounded) gives the same results.
    """
    from pynetdicom import _config as net_config

    if getattr(valuerep.VALIDATORS["UI"], "cached", False):
        return
    for table, key in ((valuerep.VALIDATORS, "UI"), (net_config.VALIDATORS, "UI")):
        table[key] = _cached(table[key])
    # pynetdicom also asks ``UID.is_valid`` (a regular expression) of every UID it sets: the same answer, cached
    valid = functools.lru_cache(maxsize=8192)(
        lambda text: len(text) <= 64 and re.match(RE_VALID_UID, text) is not None)
    UID.is_valid = property(lambda self: valid(str(self)))  # type: ignore[method-assign,assignment]


def _cached(validator: Any) -> Any:
    remembered = functools.lru_cache(maxsize=8192)(validator)

    def validate(*args: Any) -> Any:
        try:
            return remembered(*args)
        except TypeError:  # an unhashable value (a list of UIDs): validated as before
            return validator(*args)

    validate.cached = True  # type: ignore[attr-defined]
    return validate
