"""A leaner pynetdicom acceptor: reactors that block until there is work, contexts shared, not copied.

Why (pynetdicom 3.0, measured with py-spy under 4 storing associations): each association runs two threads that
poll. The DUL reactor sleeps 1 ms whenever its socket and its send queue are empty (``dul.py``, 26 % of the
C-STORE threads' samples), and the association reactor sleeps 1 ms between looks at its message queue
(``association.py``, 13 %). Every new association also deep-copies the ~2,000 supported presentation contexts
(12 % of the GIL), although negotiation only reads them. The subclasses here change just that:

* ``LeanDUL`` waits in ``select()`` on its socket *and* a wake-up pipe that its send queue writes to, so it
  sleeps until a PDU arrives or one is to be sent (50 ms at most while its ARTIM timer may run, 1 s while
  established);
* ``LeanAssociation`` waits on an event set whenever the DUL hands it a message, a release or an abort, or stops
  (until its network idle timeout is due, at most 1 s, at least 50 ms). Polling every 50 ms, 32 idle associations
  cost a tenth of a core;
* ``LeanRequestHandler`` gives each association the server's context list itself;
* ``LeanDIMSE`` reads a C-STORE-RQ's command from its bytes (``command``) and encodes the usual C-STORE-RSP (a
  status, nothing else) from bytes, instead of going through a pydicom Dataset each way;
* ``LeanDUL`` also decodes a repeated A-ASSOCIATE-RQ, and encodes its answer, once (``handshake``), and hands a
  P-DATA-TF received while established straight to DIMSE (``pdata``), whose completed C-STORE-RQ the DUL thread
  then serves itself when the association's thread is idle (``store.serve_on_reader``);
* ``LeanRequestHandler`` gives the association a socket that reads ahead (``bufsocket``).

The queues that wake the thread consuming them live in ``wakequeue``.

The loops are pynetdicom's own (``DULServiceProvider.run_reactor``, ``Association._run_reactor``) with the sleeps
replaced; everything else — state machine, PDU coding, events — is pynetdicom's.

Example
-------
>>> [c.__name__ for c in (LeanDUL, LeanAssociation, LeanDIMSE, LeanRequestHandler)]
['LeanDUL', 'LeanAssociation', 'LeanDIMSE', 'LeanRequestHandler']
>>> LeanAssociation.__mro__[1].__name__  # pynetdicom's, with its run loop and a few methods overridden
'Association'
"""

from __future__ import annotations

import logging
import queue
import select
import socket
import ssl
import threading
from datetime import datetime
from typing import Any

from pynetdicom import evt
from pynetdicom.association import Association
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dul import DULServiceProvider
from pynetdicom.fsm import InvalidEventError
from pynetdicom.pdu import A_ABORT_RQ, A_ASSOCIATE_AC
from pynetdicom.pdu_primitives import P_DATA
from pynetdicom.transport import RequestHandler, ThreadedAssociationServer

from cubepacs.archive.dimse import command, handshake, pdata, store
from cubepacs.archive.dimse.bufsocket import BufferedSocket
from cubepacs.archive.dimse.command import pdata_tf, store_response
from cubepacs.archive.dimse.wakequeue import SendQueue, ServingQueue, WakingQueue

LOGGER = logging.getLogger("pynetdicom.dul")
_TICK = 0.05  # the longest a reactor sleeps without work while a timer may be due (ARTIM, the idle timeout)
BACKLOG = 128  # pending connections a DIMSE listener holds (see _Server)
_LONG_TICK = 1.0  # established, nothing due sooner: 32 idle associations woke 1,280 times a second at _TICK


class LeanDUL(DULServiceProvider):
    """pynetdicom's DUL, sleeping in ``select()`` on the socket and a wake-up pipe instead of polling."""

    def __init__(self, assoc: Association) -> None:
        super().__init__(assoc)
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._send_lock = threading.Lock()  # one writer on the socket at a time: this thread, or send_now
        self._sendq = SendQueue(self.poke, self._send_lock)
        self.to_provider_queue = self._sendq
        self._request: handshake.CachedRequest | None = None  # the A-ASSOCIATE-RQ, when cached

    def _decode_pdu(self, bytestream: bytearray) -> tuple[Any, str]:
        """pynetdicom's, but an A-ASSOCIATE-RQ seen before is not decoded again (``handshake``)."""
        if bytestream[:1] != b"\x01" or not handshake.usable(self.assoc):
            return super()._decode_pdu(bytestream)
        data = bytes(bytestream)
        cached = handshake.remembered(data)
        if cached is None:
            pdu, event = super()._decode_pdu(bytestream)
            cached = handshake.remember(data, pdu)
            if cached is None:  # not cacheable: pynetdicom's PDU, as it is
                return pdu, event
        self._request = cached
        return cached, "Evt6"

    def _read_pdu_data(self) -> None:
        """pynetdicom's, but a P-DATA-TF on an established association goes to DIMSE at once (``pdata``)."""
        if not pdata.receive(self):
            super()._read_pdu_data()

    def _send(self, pdu: Any) -> None:
        """pynetdicom's, but the A-ASSOCIATE-AC answering a cached request is kept for the next association
        sending the same request (``send_cached_accept`` sends it from AE-7 without this PDU object)."""
        with self._send_lock:
            try:
                request = self._request
                if request is None or not isinstance(pdu, A_ASSOCIATE_AC) or self.socket is None:
                    super()._send(pdu)
                    return
                data = pdu.encode()
                request.keep_accept(self.assoc.ae, data)
                self.socket.send(data)
            finally:
                self._sendq.in_flight = False

    def send_cached_accept(self) -> bool:
        """AE-7 for a request answered before: the A-ASSOCIATE-AC sent as it was encoded then, without building
        the PDU object first (``handshake.install``); False: not answered before (pynetdicom's AE-7 runs)."""
        request = self._request
        if request is None or self.socket is None or not handshake.usable(self.assoc):
            return False
        data = request.accept_for(self.assoc.ae)
        if data is None:
            return False
        self._sendq.get(False)  # the accept primitive this answers (taken as AE-7 takes it)
        with self._send_lock:
            try:
                self.socket.send(data)
            finally:
                self._sendq.in_flight = False
        return True

    def send_now(self, context_id: int, value: bytes) -> bool:
        """Send one P-DATA-TF holding one PDV (``value``: control header and fragment) from the calling thread,
        when nothing is queued or being sent before it and the association is established; False: not sent (then
        queue it as usual). Saves the DUL thread's wake-up, state-machine step and PDU object per response."""
        with self._send_lock:
            queued = self._sendq
            if (queued.in_flight or queued.qsize() or self.socket is None
                    or self.state_machine.current_state != "Sta6"):
                return False
            self.socket.send(pdata_tf(context_id, value))
            return True

    def poke(self) -> None:
        """Wake the reactor (a primitive is to be sent, or it is to stop)."""
        try:
            self._wake_w.send(b"\0")
        except OSError:  # the pipe is full (it will wake anyway) or closed
            pass

    def kill_dul(self) -> None:
        self._kill_thread = True
        self.poke()

    def stop_dul(self) -> bool:
        self.poke()
        return bool(super().stop_dul())

    def _idle(self) -> None:
        """Sleep until the socket is readable, a primitive is queued, or a tick has passed (_TICK; _LONG_TICK
        while established: ARTIM runs only while associating and releasing, the idle timeout is the
        association's to look at, and a kill pokes)."""
        sock = self.socket.socket if self.socket is not None else None
        if sock is None or self.state_machine.current_state == "Sta13":
            threading.Event().wait(0.001)  # closing down: pynetdicom's own pace
            return
        if (isinstance(sock, ssl.SSLSocket) and sock.pending()) or (
                isinstance(self.socket, BufferedSocket) and self.socket.buffered()):
            return
        try:
            tick = _LONG_TICK if self.state_machine.current_state == "Sta6" else _TICK
            ready, _, _ = select.select([sock, self._wake_r], [], [], tick)
        except (OSError, ValueError):  # the socket was closed under us: the next check raises Evt17
            return
        if sock in ready and isinstance(self.socket, BufferedSocket):
            self.socket.readable = True  # the DUL's next ready() need not select() again (one syscall per wake-up)
        if self._wake_r in ready:
            try:
                self._wake_r.recv(4096)
            except OSError:
                pass

    def run_reactor(self) -> None:
        """pynetdicom's ``DULServiceProvider.run_reactor`` with its 1 ms sleep replaced by ``_idle``."""
        try:
            self._reactor()
        finally:
            self._wake_r.close()
            self._wake_w.close()
            getattr(self.assoc, "poke", lambda: None)()  # the association sees a stopped DUL at once

    def _reactor(self) -> None:
        self._idle_timer.start()
        idle = False
        while True:
            if not self.assoc._dul_ready.is_set():
                self.assoc._dul_ready.set()
            if idle:
                self._idle()
            if self._kill_thread:
                break
            if self.artim_timer.expired:
                self.event_queue.put("Evt18")
            try:
                if self._process_recv_primitive():
                    pass
                elif self._is_transport_event():
                    self._idle_timer.restart()
            except Exception as exc:  # as pynetdicom: bypass the state machine and abort
                LOGGER.error("Exception in DUL.run(), aborting association")
                LOGGER.exception(exc)
                abort_pdu = A_ABORT_RQ()
                abort_pdu.source = 0x02
                abort_pdu.reason_diagnostic = 0x00
                if self.socket is not None:
                    self.socket.send(abort_pdu.encode())
                self.assoc.is_aborted = True
                self.assoc.is_established = False
                self.assoc._kill = True
                self._kill_thread = True
                getattr(self.assoc, "poke", lambda: None)()
                return
            try:
                event = self.event_queue.get(block=False)
            except queue.Empty:
                idle = True
                continue
            before = self.state_machine.current_state
            try:
                self.state_machine.do_action(event)
            except InvalidEventError:  # an event this state does not take — our own A-ASSOCIATE-AC (Evt7) when
                # a malformed PDU right after the peer's RQ aborted (Sta13): logged in one line by pynetdicom; the
                # local primitive behind it is dropped (it would make the same event again), the thread goes on
                # and the ARTIM timer closes the connection (pynetdicom's thread died here with a traceback)
                if event in _LOCAL_EVENTS:
                    try:
                        self.to_provider_queue.get(block=False)
                    except queue.Empty:
                        pass
            idle = False
            if event == "Evt17" and before == "Sta2":  # closed before any A-ASSOCIATE-RQ: the association, which
                self.to_user_queue.put(None)  # waits up to the ACSE timeout (30 s) for one, gives up now


_LOCAL_EVENTS = frozenset({"Evt1", "Evt7", "Evt8", "Evt9", "Evt11", "Evt14", "Evt15"})  # from the user's primitives


def _tick(assoc: Any) -> float:
    """How long an association's reactor may sleep unwoken: until its idle timeout is due (at most _LONG_TICK,
    at least _TICK) while established, else _TICK. Messages, releases, aborts, a stopped DUL and a kill wake it."""
    if not assoc.is_established:
        return _TICK
    timer = assoc.dul._idle_timer
    if timer.timeout is None:
        return _LONG_TICK
    return float(min(_LONG_TICK, max(_TICK, timer.remaining)))


class LeanDIMSE(DIMSEServiceProvider):
    """pynetdicom's DIMSE provider; a C-STORE-RQ is read from its command bytes (``command``), a C-STORE-RSP
    with nothing but a status is encoded from a template."""

    def receive_primitive(self, primitive: P_DATA) -> None:
        if self.message is None and command.usable(self.assoc):
            self.message = command.new_message()
        super().receive_primitive(primitive)

    def send_msg(self, primitive: Any, context_id: int) -> None:
        if (isinstance(primitive, C_STORE) and primitive.MessageIDBeingRespondedTo is not None
                and primitive.Status is not None and primitive.AffectedSOPClassUID
                and primitive.AffectedSOPInstanceUID and primitive.ErrorComment is None
                and primitive.OffendingElement is None and self.send_status(
                    context_id, primitive.MessageIDBeingRespondedTo, str(primitive.AffectedSOPClassUID),
                    str(primitive.AffectedSOPInstanceUID), primitive.Status)):
            return
        super().send_msg(primitive, context_id)

    def send_status(self, context_id: int, message_id: int, sop_class: str, sop_instance: str, status: int) -> bool:
        """Send a C-STORE-RSP holding only a status, encoded from bytes; False when it must go pynetdicom's way
        (a DIMSE-sent handler bound, or a peer whose PDUs are too small for it)."""
        if self.assoc.get_handlers(evt.EVT_DIMSE_SENT):
            return False
        encoded = store_response(message_id, sop_class, sop_instance, status)
        if self.maximum_pdu_size and len(encoded) + 6 > self.maximum_pdu_size:
            return False
        dul = self.dul
        if isinstance(dul, LeanDUL) and handshake.usable(self.assoc) and dul.send_now(context_id, b"\x03" + encoded):
            return True
        pdata = P_DATA()
        pdata.presentation_data_value_list.append((context_id, b"\x03" + encoded))
        dul.send_pdu(pdata)
        return True


class LeanAssociation(Association):
    """pynetdicom's acceptor association, woken by its DUL rather than polling every millisecond."""

    def __init__(self, ae: Any, mode: str) -> None:
        super().__init__(ae, mode)
        self._wake = threading.Event()
        self.serving = threading.Lock()  # held by whichever thread serves a message (``store.serve_on_reader``)
        self.dul = LeanDUL(self)
        self.acse_timeout, self.network_timeout = self.acse_timeout, self.network_timeout  # onto the new DUL's timers
        self.dul.to_user_queue = WakingQueue(self.poke)
        self.dimse = LeanDIMSE(self)
        self.dimse.msg_queue = ServingQueue(self)

    def poke(self) -> None:
        """Wake the association reactor."""
        self._wake.set()

    def run(self) -> None:
        try:
            super().run()
        finally:
            _ended(getattr(self, "_server", None))

    def kill(self) -> None:
        self._wake.set()
        super().kill()

    def _serve_request(self, msg: Any, context_id: int) -> None:
        """pynetdicom's, but a plain C-STORE-RQ is handed to its handler directly (``store``)."""
        if not store.serve(self, msg, context_id):
            super()._serve_request(msg, context_id)

    def _run_reactor(self) -> None:
        """pynetdicom's ``Association._run_reactor`` with its 1 ms sleep replaced by waiting to be woken."""
        self._is_paused = False
        while not self._kill:
            self._wake.wait(_tick(self))
            self._wake.clear()
            self._is_paused = True
            self._reactor_checkpoint.wait()
            self._is_paused = False
            with self.serving:
                context_id, msg = self.dimse.get_msg(block=False)
                if msg:
                    self._serve_request(msg, int(context_id or 0))
            if not self.dimse.msg_queue.empty():
                self._wake.set()
            if self._closed_by_peer():
                return

    def _closed_by_peer(self) -> bool:
        """Release, abort, a stopped DUL or the idle timeout: handled as pynetdicom does; True when finished."""
        if self.is_established and self.acse.is_release_requested():
            self.acse.send_release(is_response=True)
            self.is_released, self.is_established = True, False
            evt.trigger(self, evt.EVT_RELEASED, {})
            self.kill()
            return True
        if self.acse.is_aborted():
            self.dul.receive_pdu(wait=False)
            self.is_aborted, self.is_established = True, False
            evt.trigger(self, evt.EVT_ABORTED, {})
            self.kill()
            return True
        if not self.dul.is_alive():
            self.kill()
            return True
        if self.dul.idle_timer_expired():
            logging.getLogger("pynetdicom.assoc").error("Network timeout reached")
            if self.network_timeout_response == "A-RELEASE":
                self._is_paused = True
                self._reactor_checkpoint.wait()
                self.release()
                self._is_paused = False
            else:
                self.abort()
            self.kill()
            return True
        return False


class LeanRequestHandler(RequestHandler):
    """pynetdicom's request handler creating a ``LeanAssociation`` that shares the server's contexts; on a TLS
    listener it first completes the TLS handshake, in this connection's own thread and within the ACSE timeout
    (``_Server.get_request`` no longer does it in the accept loop)."""

    def handle(self) -> None:
        started = False
        try:
            sock = self.request
            if isinstance(sock, ssl.SSLSocket):
                try:
                    sock.settimeout(self.ae.acse_timeout or 30)
                    sock.do_handshake()
                    sock.settimeout(None)
                except (OSError, ValueError) as exc:  # ssl.SSLError and socket.timeout are OSErrors
                    logging.getLogger("cubepacs.dimse").warning(
                        "TLS handshake with %s failed: %s", self.client_address[0],
                        str(exc)[:200] or type(exc).__name__)
                    sock.close()
                    return
            super().handle()  # its last step starts the association's thread
            started = True
        finally:
            if not started:
                _ended(self.server)

    def _create_association(self) -> Association:
        assoc = LeanAssociation(self.ae, "acceptor")
        assoc._server = self.server
        assoc.name = f"AcceptorThread@{datetime.now():%Y%m%d%H%M%S}"
        assoc.set_socket(BufferedSocket(assoc, client_socket=self.request))
        assoc.acceptor.maximum_length = self.ae.maximum_pdu_size
        assoc.acceptor.ae_title = self.server.ae_title
        assoc.acceptor.address_info = self.local
        assoc.acceptor.implementation_class_uid = self.ae.implementation_class_uid
        assoc.acceptor.implementation_version_name = self.ae.implementation_version_name
        assoc.acceptor.supported_contexts = self.server.contexts  # read, never written, by negotiation
        assoc.requestor.address_info = self.remote
        for event, handlers in self.server._handlers.items():
            if event.is_intervention and handlers:
                assoc.bind(event, *handlers)
            elif isinstance(event, evt.NotificationEvent):
                for handler in handlers:
                    assoc.bind(event, handler[0], handler[1])  # type: ignore[index]
        return assoc


def _ended(server: Any) -> None:
    """An association of ``server`` is over, or never started: counted out where workers balance (``balance``)."""
    balance = getattr(server, "balance", None)
    if balance is not None:
        balance.leave()


def start_server(ae: Any, address: tuple[str, int], handlers: list[Any], ssl_context: ssl.SSLContext | None,
                 server_class: type[_Server] | None = None) -> Any:
    """``ae.start_server(address, block=False, …)`` with lean associations; ``server_class``: a subclass of
    ``_Server`` (a worker process's, listening on a socket the workers share: ``balance.Shared``)."""
    handshake.install()
    server = ae.make_server(address, ssl_context=ssl_context, evt_handlers=handlers,
                            server_class=server_class or _Server, request_handler=LeanRequestHandler)
    thread = threading.Thread(target=server.serve_forever, name=f"AcceptorServer@{address[1]}", daemon=True)
    thread.start()
    ae._servers.append(server)
    return server


class _Server(ThreadedAssociationServer):
    """pynetdicom's threaded association server listening with a real backlog.

    socketserver's default of 5 pending connections makes the kernel drop the handshakes of a burst of senders
    (32 storescu started at once): they retry after a second or more, which showed as a 32-association ingest
    slower than a 16-association one with the CPU half idle. TLS handshakes run in each connection's thread.
    """

    request_queue_size = BACKLOG

    def get_request(self) -> tuple[Any, Any]:
        """pynetdicom's, but a TLS connection's handshake is left to its request handler's thread: done here, in
        the accept loop and without a timeout, one silent connection held up every other (measured: six made a
        DCMTK ``echoscu +tls`` fail)."""
        assert self.socket is not None
        client, address = self.socket.accept()
        if self.ssl_context:
            client = self.ssl_context.wrap_socket(client, server_side=True, do_handshake_on_connect=False)
        return client, address
