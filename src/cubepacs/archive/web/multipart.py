"""``multipart/related`` encoding and parsing (PS3.18 8.6/8.7).

Example
-------
>>> body, ctype = encode([b"abc", b"de"], "application/dicom")
>>> parse(body, ctype)
[b'abc', b'de']
"""

from __future__ import annotations

import secrets
from collections.abc import Generator
from typing import Any

from cubepacs.errors import CubepacsError


class MultipartError(CubepacsError, ValueError):
    """A request body that is not valid multipart/related."""


def encode(parts: list[bytes], part_type: str, extra: str = "") -> tuple[bytes, str]:
    """Body and Content-Type of a multipart/related message holding ``parts``."""
    chunks, ctype = pieces(parts, part_type, extra)
    return b"".join(chunks), ctype


def pieces(parts: list[Any], part_type: str, extra: str = "", extras: list[str] | None = None) -> tuple[list[Any], str]:
    """The body of :func:`encode` as the list of its pieces (``parts`` themselves among them, not copied: bytes or
    memoryviews) and the Content-Type. ``extras``: each part's own parameters, in place of ``extra``.

    Example
    -------
    >>> chunks, ctype = pieces([b"abc"], "application/octet-stream")
    >>> chunks[1], ctype.startswith('multipart/related; type="application/octet-stream"; boundary=')
    (b'abc', True)
    """
    boundary = secrets.token_hex(16)
    chunks: list[Any] = []
    for i, p in enumerate(parts):
        chunks.append(f"--{boundary}\r\nContent-Type: {part_type}{extras[i] if extras else extra}\r\n\r\n".encode())
        chunks.append(p)
        chunks.append(b"\r\n")
    chunks.append(f"--{boundary}--\r\n".encode())
    return chunks, f'multipart/related; type="{part_type}"; boundary={boundary}'


def _param(content_type: str, name: str) -> str | None:
    for item in content_type.split(";")[1:]:
        key, _, value = item.strip().partition("=")
        if key.strip().lower() == name:
            return value.strip().strip('"')
    return None


def iter_parts(body: bytes | Any, content_type: str) -> Generator[memoryview, None, None]:
    """The part bodies of a multipart/related message, one at a time, as views into ``body`` (which may be a
    memory-mapped file: a large upload is never copied whole into memory)."""
    if not content_type.lower().startswith("multipart/related"):
        raise MultipartError(f"expected multipart/related, got {content_type.split(';', maxsplit=1)[0]!r}")
    boundary = _param(content_type, "boundary")
    if not boundary:
        raise MultipartError("multipart/related without a boundary parameter")
    delim = b"--" + boundary.encode("latin-1")
    pos = body.find(delim)
    if pos < 0:
        raise MultipartError("the body holds no part (boundary not found)")
    # the view is released however this ends (an error included): a memory-mapped body can then be closed — an
    # error's traceback keeps this frame alive, and an mmap with a view still exported refuses close()
    with memoryview(body) as view:
        while True:
            pos += len(delim)
            if bytes(view[pos:pos + 2]) == b"--":
                return
            nxt = body.find(b"\r\n" + delim, pos)
            if nxt < 0:
                raise MultipartError("the last part is not closed by the boundary (body truncated?)")
            sep = body.find(b"\r\n\r\n", pos, nxt)
            if sep < 0:
                raise MultipartError("a part has no header/body separator")
            yield view[sep + 4:nxt]
            pos = nxt + 2


def parse(body: bytes, content_type: str) -> list[bytes]:
    """The part bodies of a multipart/related message."""
    return [bytes(p) for p in iter_parts(body, content_type)]
