"""Which transfer syntax the archive accepts, as the association acceptor, for the contexts it will send on.

A C-GET requestor proposes its storage contexts with the SCP role; the archive then sends C-STOREs on them, and
the transfer syntax it accepts decides what every instance of that class is re-encoded to. pynetdicom accepts the
first of the *acceptor's* syntaxes the requestor proposed; the archive lists the compressed ones first (so that a
peer storing a compressed file keeps it compressed) and pynetdicom lists Implicit VR before Explicit VR. For
contexts the archive sends on, that meant DCMTK getscu's default proposal (Explicit LE, Big Endian, Implicit LE)
got Implicit VR (private elements lose their VR) and ``getscu +xs`` got JPEG Lossless, which nothing here can
encode.

Negotiation happens before the request names any instance, but the archive knows what it stores.
:func:`prefer_lossless` re-chooses, for each accepted context on which the archive acts as SCU, among the syntaxes
the requestor proposed in it:

* the stored syntax, when every stored instance of that SOP class (in the called tenant) has it and the requestor
  proposed it: each instance then goes out byte for byte (``index/classes.py``: one statement per association,
  its answer kept :data:`STORED_TTL` seconds per tenant and class list);
* else Explicit VR Little Endian when proposed (every instance can go out in it, each element with its VR);
* else the best one every instance can be re-encoded to losslessly (``transcode.LOSSLESS_ORDER``: Deflated,
  JPEG-LS, RLE, JPEG 2000 lossless, Implicit VR);
* a context proposing none of these keeps pynetdicom's choice (instances stored in it go out as stored, the others
  fail with the reason named).

A requestor proposing each syntax in a context of its own gets them all accepted, and each instance goes out in
its stored syntax where one of them is it. An instance stored after the association was negotiated, in another
syntax than its class's others, is re-encoded to the accepted one where it can be (else it fails, named in the log).
The tenant's lookup is bound to the association's thread at A-ASSOCIATE-RQ (:func:`bind_stored`, an
EVT_REQUESTED handler); such requests are not cached by ``handshake`` (their outcome depends on what is stored).

Example
-------
>>> choose(["1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2"], "1.2.840.10008.1.2.4.70")
'1.2.840.10008.1.2.1'
>>> choose(["1.2.840.10008.1.2.4.50"], "1.2.840.10008.1.2.4.50")
'1.2.840.10008.1.2.4.50'
>>> choose(["1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.1"], "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.4.70")
'1.2.840.10008.1.2.4.70'
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from pydicom.uid import UID
from pynetdicom.presentation import PresentationContext
from pynetdicom.presentation import negotiate_as_acceptor as _negotiate

from cubepacs.dicom.transcode import lossless_rank

log = logging.getLogger("cubepacs.dimse")
STORED_TTL = 5.0  # seconds a tenant's per-class answer is reused by the next associations
# the association thread's lookup: SOP classes -> {class: the syntax all its stored instances have}
STORED: contextvars.ContextVar[Callable[[list[str]], dict[str, str]] | None] = contextvars.ContextVar(
    "stored_syntaxes", default=None)
_KEPT: dict[tuple[int, str, tuple[str, ...]], tuple[float, dict[str, str]]] = {}
_KEPT_LOCK = threading.Lock()


def stored_syntaxes(index: Any, tenant: str, sop_classes: list[str]) -> dict[str, str]:
    """``index/classes.one_syntax`` for ``tenant``, its answer reused for :data:`STORED_TTL` seconds."""
    from cubepacs.archive.index.classes import one_syntax

    key = (id(index), tenant, tuple(sorted(sop_classes)))
    now = time.monotonic()
    with _KEPT_LOCK:
        found = _KEPT.get(key)
    if found is not None and now - found[0] < STORED_TTL:
        return found[1]
    answer = one_syntax(index, tenant, sop_classes)
    with _KEPT_LOCK:
        if len(_KEPT) > 256:
            _KEPT.clear()
        _KEPT[key] = (now, answer)
    return answer


def bind_stored(event: Any, tenants: dict[str, str], index: Any) -> None:
    """EVT_REQUESTED: bind the called tenant's stored-syntax lookup to the association's thread, where
    negotiation follows (nothing bound for a called AE of no tenant: it is rejected)."""
    title = event.assoc.requestor.primitive.called_ae_title
    tenant = tenants.get((title.decode() if isinstance(title, bytes) else str(title)).strip())
    STORED.set(None if tenant is None else (lambda classes: stored_syntaxes(index, tenant, classes)))


def choose(proposed: Iterable[str], current: str, stored: str | None = None) -> str:
    """The syntax to accept among ``proposed`` for a context the archive sends on: ``stored`` (the one every
    stored instance of the class has) when proposed, else the best lossless one (``current``: pynetdicom's choice,
    kept when none of ``proposed`` can carry every instance losslessly)."""
    proposed = [str(ts) for ts in proposed]
    if stored is not None and stored in proposed:
        return stored
    ranked = sorted((r, str(ts)) for ts in proposed if (r := lossless_rank(str(ts))) is not None)
    return ranked[0][1] if ranked else current


def prefer_lossless(rq_contexts: list[PresentationContext], result: list[PresentationContext],
                    stored: dict[str, str] | None = None) -> None:
    """Re-choose, in place, the transfer syntax of each accepted context of ``result`` the acceptor sends on
    (``stored``: SOP class → the syntax all its stored instances have)."""
    proposed = {cx.context_id: cx for cx in rq_contexts}
    for cx in result:
        rq = proposed.get(cx.context_id)
        if cx.result != 0x00 or not cx.as_scu or rq is None or not cx.transfer_syntax:
            continue
        best = choose(rq.transfer_syntax, str(cx.transfer_syntax[0]), (stored or {}).get(str(cx.abstract_syntax)))
        if best != cx.transfer_syntax[0]:
            cx.transfer_syntax = [UID(best)]


def negotiate_as_acceptor(rq_contexts: list[PresentationContext], ac_contexts: list[PresentationContext],
                          roles: Any = None) -> Any:
    """pynetdicom's ``negotiate_as_acceptor`` followed by :func:`prefer_lossless` (what ``handshake`` calls),
    with the stored syntaxes of the classes it sends on when a lookup is bound (:func:`bind_stored`)."""
    result, ac_roles = _negotiate(rq_contexts, ac_contexts, roles)
    lookup, stored = STORED.get(), {}
    sending = sorted({str(cx.abstract_syntax) for cx in result if cx.result == 0x00 and cx.as_scu})
    if lookup is not None and sending:
        try:
            stored = lookup(sending)
        except Exception as exc:  # the index away: Explicit VR LE, as without it
            log.warning("stored transfer syntaxes not known (%s: %s): negotiating without them",
                        type(exc).__name__, str(exc)[:200])
    prefer_lossless(rq_contexts, result, stored)
    return result, ac_roles
