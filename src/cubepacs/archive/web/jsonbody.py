"""JSON request bodies read with bounds: at most ``MAX_BYTES`` bytes (413) and ``MAX_DEPTH`` levels of nesting
(400), checked before the parser sees the text — ``json.loads`` recurses once per level, and a body of a few
thousand ``[`` raised ``RecursionError`` (a 500) on ``POST /api/send``. Every JSON endpoint reads its body here.

Example
-------
>>> depth(b'{"a": [1, {"b": "[[["}]}')
3
>>> parse(b'{"to": "PEER"}')
{'to': 'PEER'}
>>> parse(b"[" * 100 + b"]" * 100)
Traceback (most recent call last):
...
fastapi.exceptions.HTTPException: 400: JSON nested deeper than 32 levels
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import HTTPException, Request

MAX_BYTES = 1 << 20  # 1 MiB: the largest body any JSON endpoint takes (a cohort's list of study UIDs) is far less
MAX_DEPTH = 32


def depth(raw: bytes) -> int:
    """The deepest nesting of arrays and objects in JSON text (brackets inside strings not counted)."""
    level = deepest = 0
    in_string = escaped = False
    for byte in raw:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):
            level += 1
            deepest = max(deepest, level)
        elif byte in (0x5D, 0x7D):
            level -= 1
    return deepest


def parse(raw: bytes, max_depth: int = MAX_DEPTH, empty: Any = None) -> Any:
    """Parse a JSON body (``empty`` for no bytes); HTTP 400 naming the problem when it is not JSON or too deep."""
    if not raw.strip():
        return empty
    if depth(raw) > max_depth:
        raise HTTPException(400, f"JSON nested deeper than {max_depth} levels")
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise HTTPException(400, f"the body is not JSON: {str(exc)[:200]}") from None


async def read_json(request: Request, max_bytes: int = MAX_BYTES, max_depth: int = MAX_DEPTH,
                    empty: Any = None) -> Any:
    """The request's JSON body: 413 beyond ``max_bytes`` (declared or sent), 400 when malformed or nested deeper
    than ``max_depth``; ``empty`` for an empty body.

    Example
    -------
    >>> import asyncio
    >>> from starlette.requests import Request
    >>> async def receive(): return {"type": "http.request", "body": b'{"uid": "1.2"}', "more_body": False}
    >>> asyncio.run(read_json(Request({"type": "http", "headers": []}, receive)))
    {'uid': '1.2'}
    """
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > max_bytes:
        raise HTTPException(413, f"JSON body of {declared} bytes exceeds {max_bytes}")
    chunks: list[bytes] = []
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > max_bytes:
            raise HTTPException(413, f"JSON body exceeds {max_bytes} bytes")
        chunks.append(chunk)
    return parse(b"".join(chunks), max_depth, empty)
