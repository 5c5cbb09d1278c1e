"""The OpenAPI document says what the server really answers: every status code and content type, by route family.

FastAPI documents a 200 in JSON (and a 422) for every route; the routes answer DICOM JSON, multipart/related, JPEG
or PNG, HTML, NDJSON, and the declared errors (400 bad parameter or body, 401 no or bad key, 403 role, 404, 406
unacceptable transfer syntax, 409/202 STOW outcomes, 413 body too large, 415 wrong media type, 422 undecodable
pixel data, 503 a backend away). :func:`describe` rewrites the generated document once from the table below, so that
a client generated from it — or schemathesis, which CI runs against it (tests/archive/test_openapi.py) — meets no
undocumented answer. The table names families by path, not routes one by one: a new route of a family is described
without an edit here.

Example
-------
>>> family("/dicom-web/studies/{study}/series/{series}/instances/{sop}/frames/{frames}", "get")[0]
('multipart/related',)
>>> family("/api/send", "post")[0]
('application/x-ndjson',)
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import FastAPI

JSON, DICOM_JSON, MULTIPART, HTML = "application/json", "application/dicom+json", "multipart/related", "text/html"
ERROR = {"type": "object", "properties": {"detail": {}}}

# (method, path pattern) → (success content types, success codes, error codes); the first match wins
_FAMILIES: list[tuple[str, str, tuple[str, ...], tuple[int, ...], tuple[int, ...]]] = [
    ("get", r"/dicom-web/.*/(frames/[^/]+|bulkdata.*)$", (MULTIPART,), (200,), (400, 401, 403, 404, 406, 422, 503)),
    ("get", r"/dicom-web/.*/(rendered|thumbnail)$", ("image/jpeg", "image/png"), (200,),
     (400, 401, 403, 404, 406, 422, 503)),
    ("get", r"/dicom-web/.*/metadata$", (DICOM_JSON,), (200,), (400, 401, 403, 404, 503)),
    ("get", r"/dicom-web/(studies|series|instances)$|/dicom-web/studies/\{study\}/(series|instances)$|"
            r"/dicom-web/studies/\{study\}/series/\{series\}/instances$", (DICOM_JSON,), (200, 204),
     (400, 401, 403, 404, 413, 503)),
    ("get", r"/dicom-web/", (MULTIPART,), (200,), (400, 401, 403, 404, 406, 503)),
    ("post", r"/dicom-web/studies", (DICOM_JSON,), (200, 202, 409), (400, 401, 403, 413, 415, 503)),
    ("post", r"/api/(send|export)$", ("application/x-ndjson",), (200,), (400, 401, 403, 404, 413, 503)),
    ("post", r"/api/keys$|/api/users$", (JSON,), (200, 201), (400, 401, 403, 404, 409, 413, 503)),
    ("get", r"/metrics$", ("text/plain",), (200,), ()),
    ("get", r"/(healthz|readyz)$", (JSON,), (200, 503), ()),
    ("get", r"/app-config\.js$", ("text/javascript",), (200,), (401, 403)),  # 401: a script to the login
    ("get", r"/ui/studies/\{study\}(/series/\{series\})?/(zip|cube)$", ("application/zip", "application/octet-stream"),
     (200,), (400, 401, 403, 404, 409, 503)),
    ("get", r"^/ui/static/", ("text/javascript",), (200,), ()),
    ("post", r"/api/upload$", (JSON,), (200, 202, 409), (400, 401, 403, 413, 415, 503, 507)),
    ("post", r"/api/jobs/send$", (JSON,), (202,), (400, 401, 403, 404, 413, 429, 503)),
    ("put", r"/api/studies/.*/labels/", (JSON,), (200, 201), (400, 401, 403, 404, 503)),
    ("get", r"^/(ui|login|logout|\{path\})", (HTML,), (200,), (303, 400, 401, 403, 404, 409, 503)),
    ("post", r"^/(ui|login|logout)", (HTML,), (200, 201), (303, 400, 401, 403, 404, 409, 413, 415, 503)),
    ("", r"", (JSON,), (200,), (400, 401, 403, 404, 409, 413, 503)),
]


def family(path: str, method: str) -> tuple[tuple[str, ...], tuple[int, ...], tuple[int, ...]]:
    """(success content types, success codes, error codes) of an operation."""
    for m, pattern, types, ok, errors in _FAMILIES:
        if (not m or m == method) and re.search(pattern, path):
            return types, ok, errors
    raise AssertionError("the last family matches everything")


def _content(types: tuple[str, ...], schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {t: {"schema": schema or {}} for t in types}


def describe(app: FastAPI) -> None:
    """Make ``app.openapi()`` describe every operation's real answers (see the module docstring); idempotent.

    Example
    -------
    >>> app = FastAPI()
    >>> @app.get("/metrics")
    ... def metrics() -> None: ...
    >>> describe(app)
    >>> list(app.openapi()["paths"]["/metrics"]["get"]["responses"]["200"]["content"])
    ['text/plain']
    """
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        doc = generate()
        for path, operations in doc.get("paths", {}).items():
            for method, op in operations.items():
                types, ok, errors = family(path, method)
                responses: dict[str, Any] = {}
                for code in ok:
                    text = {200: "OK", 201: "Created", 202: "Some stored, some failed", 204: "No match",
                            409: "None stored"}.get(code, "OK")
                    responses[str(code)] = {"description": text} if code == 204 else {
                        "description": text, "content": _content(types)}
                for code in errors:
                    if code == 303:
                        responses["303"] = {"description": "See Other (a form's answer: where to go next)"}
                        continue
                    error_types = (JSON, *types) if types[0] in (HTML, "text/javascript") else (JSON,)
                    responses[str(code)] = {"description": _REASONS.get(code, "Error"),
                                            "content": _content(error_types, ERROR)}
                if "422" in op.get("responses", {}) and "422" not in responses:
                    responses["422"] = {"description": _REASONS[422], "content": _content((JSON,), ERROR)}
                op["responses"] = responses
                for param in op.get("parameters", []):
                    if param.get("in") == "path" and param.get("name") in _PATTERNS:
                        param["schema"] = {"type": "string", **_PATTERNS[param["name"]]}
        app.openapi_schema = doc
        return doc

    app.openapi = openapi  # type: ignore[method-assign]


UID = {"pattern": r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$", "maxLength": 64}
_PATTERNS = {"study": UID, "series": UID, "sop": UID,
             "frames": {"pattern": r"^[1-9][0-9]{0,8}(,[1-9][0-9]{0,8})*$", "maxLength": 256}}
_REASONS = {400: "Bad parameter or body", 401: "No or unknown API key", 403: "Role does not allow it",
            404: "Not found", 406: "Transfer syntax not acceptable", 409: "Conflict", 413: "Body too large",
            415: "Unsupported media type", 422: "Unprocessable (parameters, or pixel data that cannot be decoded)",
            503: "A backend is away", 507: "Storage below its free-space watermark"}
