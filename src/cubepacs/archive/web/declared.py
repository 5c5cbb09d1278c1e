"""The project's declared errors, when a route lets one through, answered as what they are — never a 500.

Routes translate the errors they expect themselves (the web layer maps errors to HTTP codes with a reason); this
is the net under all of them, found needed by schemathesis (a malformed UID in a UI path: ``check_uid``'s
ConfigError, a 500). The answer is ``{"detail": message}`` with:

=============================  ====
ConfigError, DicomReadError     400  the request names or sends something malformed
TenantError                     403
MissingObjectError              404  the index names an object the storage does not hold
InvalidCubeError, CodecError    422  stored data that cannot be decoded
BackendError                    503  a backend is away
any other CubepacsError         400
=============================  ====

Example
-------
>>> from cubepacs.errors import BackendError
>>> status_of(BackendError("index away")), status_of(ValueError("x")) is None
(503, True)
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from cubepacs.errors import (
    BackendError,
    CodecError,
    CubepacsError,
    InvalidCubeError,
    MissingObjectError,
    TenantError,
)

_STATUS: tuple[tuple[type[CubepacsError], int], ...] = (
    (BackendError, 503), (TenantError, 403), (MissingObjectError, 404), (InvalidCubeError, 422), (CodecError, 422),
    (CubepacsError, 400))


def status_of(exc: BaseException) -> int | None:
    """The HTTP status of a declared error (None for anything else: a bug, which stays a 500)."""
    return next((code for kind, code in _STATUS if isinstance(exc, kind)), None)


def install(app: FastAPI) -> None:
    """Answer every declared error a route lets through with its status (see the table above)."""

    async def handler(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": str(exc)[:500]}, status_code=status_of(exc) or 400)

    app.add_exception_handler(CubepacsError, handler)
