"""``multipart/related`` encoding and parsing (PS3.18 8.6/8.7).

Example
-------
>>> body, ctype = encode([b"abc", b"de"], "application/dicom")
>>> parse(body, ctype)
[b'abc', b'de']
"""

from __future__ import annotations

import secrets

from cubepacs.errors import CubepacsError


class MultipartError(CubepacsError, ValueError):
    """A request body that is not valid multipart/related."""


def encode(parts: list[bytes], part_type: str, extra: str = "") -> tuple[bytes, str]:
    """Body and Content-Type of a multipart/related message holding ``parts``."""
    boundary = secrets.token_hex(16)
    chunks = []
    for p in parts:
        chunks.append(f"--{boundary}\r\nContent-Type: {part_type}{extra}\r\n\r\n".encode())
        chunks.append(p)
        chunks.append(b"\r\n")
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), f'multipart/related; type="{part_type}"; boundary={boundary}'


def _param(content_type: str, name: str) -> str | None:
    for item in content_type.split(";")[1:]:
        key, _, value = item.strip().partition("=")
        if key.strip().lower() == name:
            return value.strip().strip('"')
    return None


def parse(body: bytes, content_type: str) -> list[bytes]:
    """The part bodies of a multipart/related message."""
    if not content_type.lower().startswith("multipart/related"):
        raise MultipartError(f"expected multipart/related, got {content_type.split(';', maxsplit=1)[0]!r}")
    boundary = _param(content_type, "boundary")
    if not boundary:
        raise MultipartError("multipart/related without a boundary parameter")
    delim = b"--" + boundary.encode()
    pieces = body.split(delim)
    parts = []
    for piece in pieces[1:]:
        if piece.startswith(b"--"):
            break
        _, sep, data = piece.partition(b"\r\n\r\n")
        if not sep:
            raise MultipartError("a part has no header/body separator")
        parts.append(data[:-2] if data.endswith(b"\r\n") else data)
    return parts
