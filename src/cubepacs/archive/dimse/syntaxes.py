"""Which transfer syntax the archive accepts, as the association acceptor, for the contexts it will send on.

A C-GET requestor proposes its storage contexts with the SCP role; the archive then sends C-STOREs on them, and
the transfer syntax it accepts decides what every instance of that class is re-encoded to. pynetdicom accepts the
first of the *acceptor's* syntaxes the requestor proposed; the archive lists the compressed ones first (so that a
peer storing a compressed file keeps it compressed) and pynetdicom lists Implicit VR before Explicit VR. For
contexts the archive sends on, that meant DCMTK getscu's default proposal (Explicit LE, Big Endian, Implicit LE)
got Implicit VR (private elements lose their VR) and ``getscu +xs`` got JPEG Lossless, which nothing here can
encode.

Negotiation happens before the request names any instance, so the choice cannot depend on what will be sent.
:func:`prefer_lossless` re-chooses, for each accepted context on which the archive acts as SCU, among the syntaxes
the requestor proposed in it: Explicit VR Little Endian when proposed (every instance can go out in it, each
element with its VR), else the best one every instance can be re-encoded to losslessly
(``transcode.LOSSLESS_ORDER``: Deflated, JPEG-LS, RLE, JPEG 2000 lossless, Implicit VR); a context proposing
none of these keeps pynetdicom's choice (instances stored in it go out as stored, the others fail with the
reason named). A requestor proposing each syntax in a context of its own gets them all accepted, and each
instance goes out in its stored syntax where one of them is it.

Example
-------
>>> choose(["1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2"], "1.2.840.10008.1.2.4.70")
'1.2.840.10008.1.2.1'
>>> choose(["1.2.840.10008.1.2.4.50"], "1.2.840.10008.1.2.4.50")
'1.2.840.10008.1.2.4.50'
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydicom.uid import UID
from pynetdicom.presentation import PresentationContext
from pynetdicom.presentation import negotiate_as_acceptor as _negotiate

from cubepacs.dicom.transcode import lossless_rank


def choose(proposed: Iterable[str], current: str) -> str:
    """The syntax to accept among ``proposed`` for a context the archive sends on (``current``: pynetdicom's
    choice, kept when none of ``proposed`` can carry every instance losslessly)."""
    ranked = sorted((r, str(ts)) for ts in proposed if (r := lossless_rank(str(ts))) is not None)
    return ranked[0][1] if ranked else current


def prefer_lossless(rq_contexts: list[PresentationContext], result: list[PresentationContext]) -> None:
    """Re-choose, in place, the transfer syntax of each accepted context of ``result`` the acceptor sends on."""
    proposed = {cx.context_id: cx for cx in rq_contexts}
    for cx in result:
        rq = proposed.get(cx.context_id)
        if cx.result != 0x00 or not cx.as_scu or rq is None or not cx.transfer_syntax:
            continue
        best = choose(rq.transfer_syntax, str(cx.transfer_syntax[0]))
        if best != cx.transfer_syntax[0]:
            cx.transfer_syntax = [UID(best)]


def negotiate_as_acceptor(rq_contexts: list[PresentationContext], ac_contexts: list[PresentationContext],
                          roles: Any = None) -> Any:
    """pynetdicom's ``negotiate_as_acceptor`` followed by :func:`prefer_lossless` (what ``handshake`` calls)."""
    result, ac_roles = _negotiate(rq_contexts, ac_contexts, roles)
    prefer_lossless(rq_contexts, result)
    return result, ac_roles
