"""pynetdicom's association socket, reading what the peer sent in large pieces.

``AssociationSocket.recv(n)`` (pynetdicom 3.0) loops over ``socket.recv(4096)``, and the DUL asks for a PDU's
6-byte header and then its body: a 16 KB P-DATA-TF — storescu's default — costs five system calls, a 250 KB CT
instance about 80, and each drops and retakes the GIL. With 16 storing associations, ``strace -c -f`` counted
65 ``recvfrom`` and 450 ``futex`` calls per instance in the server. :class:`BufferedSocket` reads up to
:data:`READ_SIZE` bytes a call into a buffer and serves the DUL's reads from it; ``ready`` is true while the
buffer holds data (the DUL's ``select`` cannot see it).

Example
-------
>>> BufferedSocket.__mro__[1].__name__
'AssociationSocket'
"""

from __future__ import annotations

from typing import Any

from pynetdicom.transport import AssociationSocket

READ_SIZE = 256 * 1024  # what one recv() asks for (socket.recv allocates that much before it reads)


class BufferedSocket(AssociationSocket):
    """An ``AssociationSocket`` whose ``recv`` reads ahead (see the module's text)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._buffer = bytearray()
        self.readable = False  # set by a caller whose select() just saw the socket readable: ready() needs no other
        super().__init__(*args, **kwargs)

    def buffered(self) -> bool:
        """Whether bytes already read wait in the buffer."""
        return bool(self._buffer)

    @property
    def ready(self) -> bool:
        """True when a read will not block: bytes in the buffer, the socket just seen readable (``readable``,
        used once), or pynetdicom's check of the socket (a select() of its own).

        Example
        -------
        >>> s = BufferedSocket.__new__(BufferedSocket); s._buffer = bytearray(); s.readable = True
        >>> s.ready, s.readable
        (True, False)
        """
        if self._buffer:
            return True
        if self.readable:
            self.readable = False
            return True
        return bool(AssociationSocket.ready.fget(self))  # type: ignore[attr-defined]

    def _fill(self, nr_bytes: int) -> bytearray:
        buffer = self._buffer
        sock = self.socket
        assert sock is not None
        while len(buffer) < nr_bytes:
            chunk = sock.recv(READ_SIZE)  # never what a PDU header claims: a peer may claim 4 GB and send 6 bytes
            if not chunk:
                break
            buffer += chunk
        return buffer

    def peek(self, nr_bytes: int) -> bytes:
        """The next ``nr_bytes`` bytes (fewer only when the peer closed the connection), left to be received."""
        return bytes(self._fill(nr_bytes)[:nr_bytes])

    def recv(self, nr_bytes: int) -> bytearray:
        """``nr_bytes`` bytes (fewer only when the peer closed the connection), as pynetdicom's ``recv``."""
        buffer = self._fill(nr_bytes)
        out = buffer[:nr_bytes]
        del buffer[:nr_bytes]  # CPython moves the start of a bytearray rather than its contents
        return out
