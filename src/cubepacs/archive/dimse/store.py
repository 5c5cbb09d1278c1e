"""A plain C-STORE-RQ handed to its handler without pynetdicom's service-class round.

Why (pynetdicom 3.0, a py-spy profile of the DIMSE workers under 4 storing associations): between taking a
C-STORE request off its queue and calling the ``EVT_C_STORE`` handler, pynetdicom looks the SOP class's service
class up and instantiates it, builds a ``C_STORE`` response primitive (four validated setters), enters an
``attempt`` context, builds the event through ``evt.trigger``, then validates the returned status and encodes
the response — about a sixth of the workers' Python time, for a request whose answer is one status.
:func:`serve` does the same steps for the common case — one handler bound, a storage SOP class, a status that
is a plain integer — and sends that status from bytes (``LeanDIMSE.send_status``); anything else (a status
Dataset with an error comment, an extended negotiation, a request pynetdicom would warn about) takes
pynetdicom's way, as before.

:func:`serve_on_reader` goes one step further for handlers marked :func:`reader_safe`: the thread that completed
the request — the association's reader, pynetdicom's DUL thread — serves it at once when the association's own
thread is idle, instead of queueing it and waking that thread (a futex wake-up, a context switch and two queue
round trips per instance). A handler so marked never waits for the association (no release, no blocking abort,
no request of its own on it), which would deadlock the reader.

Example
-------
>>> serve(object(), object(), 1)  # not a C-STORE request of a lean association: pynetdicom's way
False
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from pynetdicom import _config, evt
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.service_class import StorageServiceClass
from pynetdicom.sop_class import uid_to_service_class

LOGGER = logging.getLogger("pynetdicom.service-c")
F = TypeVar("F", bound=Callable[..., Any])
_READER_SAFE: set[Any] = set()


def reader_safe(handler: F) -> F:
    """Mark a C-STORE handler safe to run on the association's reader thread (it never waits for the
    association); returns it unchanged.

    >>> reader_safe(print) is print
    True
    """
    _READER_SAFE.add(handler)
    return handler


@functools.lru_cache(maxsize=1024)
def _storage_class(uid: str) -> bool:
    return uid_to_service_class(uid) is StorageServiceClass


def _plain(assoc: Any, msg: Any, context_id: int) -> tuple[Any, Any, Any] | None:
    """(handler, its arguments, the presentation context) when ``msg`` is a C-STORE-RQ served the plain way."""
    if type(msg) is not C_STORE or getattr(msg, "_dataset_file", None) is not None or assoc._sent_release:
        return None
    if _config.UNRESTRICTED_STORAGE_SERVICE or not msg.is_valid_request:
        return None
    uid = str(msg.AffectedSOPClassUID)
    if uid in assoc.acceptor.accepted_common_extended or not _storage_class(uid):
        return None
    context = assoc._accepted_cx.get(context_id)
    handler, args = assoc.get_handlers(evt.EVT_C_STORE)
    if context is None or handler is None:
        return None
    return handler, args, context


def _look(assoc: Any, msg: Any, context_id: int) -> tuple[Any, Any, Any] | None:
    try:
        return _plain(assoc, msg, context_id)
    except Exception:  # anything unexpected in the look: pynetdicom decides
        return None


def serve(assoc: Any, msg: Any, context_id: int) -> bool:
    """Serve ``msg`` if it is a plain C-STORE-RQ (as pynetdicom's ``StorageServiceClass.SCP`` would); False when
    it is to go pynetdicom's way (nothing has been done then)."""
    found = _look(assoc, msg, context_id)
    if found is None:
        return False
    _answer(assoc, msg, context_id, found)
    return True


def _answer(assoc: Any, msg: Any, context_id: int, found: tuple[Any, Any, Any]) -> None:
    """Run the handler ``found`` by ``_plain`` and send its status."""
    handler, args, context = found
    assoc.dimse.cancel_req = {}
    assoc._is_paused = True
    assoc.abort = assoc._abort_nonblocking  # as pynetdicom's ``attempt`` does while a handler runs
    try:
        event = evt.Event(assoc, evt.EVT_C_STORE, {"request": msg, "context": context.as_tuple})
        status = handler(event, *args) if args is not None else handler(event)
    except Exception as exc:
        LOGGER.error("Exception in handler bound to 'evt.EVT_C_STORE'")
        LOGGER.exception(exc)
        status = 0xC211
    finally:
        assoc.abort = assoc._abort_blocking
        assoc._is_paused = False
        assoc.dimse.cancel_req = {}
    if not assoc.is_established:  # the handler released or aborted
        return
    if isinstance(status, int) and not isinstance(status, bool) and 0 <= status <= 0xFFFF and \
            assoc.dimse.send_status(context_id, msg.MessageID, str(msg.AffectedSOPClassUID),
                                    str(msg.AffectedSOPInstanceUID), status):
        return
    rsp = C_STORE()  # a status Dataset (an error comment) and the like: built and checked as pynetdicom does
    rsp.MessageID = msg.MessageID
    rsp.MessageIDBeingRespondedTo = msg.MessageID
    rsp.AffectedSOPInstanceUID = msg.AffectedSOPInstanceUID
    rsp.AffectedSOPClassUID = msg.AffectedSOPClassUID
    rsp = StorageServiceClass(assoc).validate_status(status, rsp)
    assoc.dimse.send_msg(rsp, context_id)


def serve_on_reader(assoc: Any, item: tuple[int, Any]) -> bool:
    """Serve a received (context ID, message) on the calling thread when it is a plain C-STORE-RQ for a
    :func:`reader_safe` handler and the association's thread is idle (holds no ``assoc.serving`` lock, nothing
    queued before it, not paused by a handler of its own); False when it is to be queued as usual."""
    context_id, msg = item
    if type(msg) is not C_STORE or not assoc.serving.acquire(blocking=False):
        return False
    try:
        if not assoc.dimse.msg_queue.empty() or not assoc._reactor_checkpoint.is_set() or not assoc.is_established:
            return False
        found = _look(assoc, msg, context_id)
        if found is None or getattr(found[0], "func", found[0]) not in _READER_SAFE:
            return False
        _answer(assoc, msg, context_id, found)
        assoc.dul._idle_timer.restart()  # just answered: not idle (before the association's thread can look)
        return True
    finally:
        assoc.serving.release()
