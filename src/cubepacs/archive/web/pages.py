"""What every page of the admin UI (``/ui``) shares: its root, how a page is answered, and who is asking.

The page modules (``adminui.py``, ``studyactions.py``, ``jobsui.py``, ``uploads.py``, ``opsui.py`` and the research
export's ``exportui.py``) take these from here, so that none depends on another's internals:

* :data:`UI`, the root of the pages;
* :func:`render_page`: a template of ``uitemplates.py`` as an HTML answer that no cache keeps and no frame shows;
* :func:`who`: the caller of a page (role checked), or the answer to give instead — the sign-in page for no
  credential, a refusal page for a role that may not;
* :func:`form_who`: the same for a form post, its ``csrf`` field standing for the ``X-CSRF-Token`` header.

Example
-------
>>> answer = render_page("message.html", 404, title="Study", message="no study 1.2.3", kind="err", ident=None)
>>> answer.status_code, answer.headers["cache-control"], "no study 1.2.3" in answer.body.decode()
(404, 'no-store', True)
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

from fastapi import HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from cubepacs.archive.web.auth import Identity, authenticate
from cubepacs.archive.web.uitemplates import render

UI = "/ui"
MAX_FORM_BYTES = 65536  # a form of the pages (not an upload, which has its own route and bound)


def render_page(name: str, status: int = 200, **values: Any) -> HTMLResponse:
    """The template ``name`` of ``uitemplates.TEMPLATES`` rendered with ``values``, as an HTML answer with
    ``status``, never cached (``Cache-Control: no-store``) nor shown in a frame (``X-Frame-Options: DENY``).

    Example
    -------
    >>> answer = render_page("message.html", title="Deleted", message="3 instance(s) deleted.", ident=None, back=UI)
    >>> answer.status_code, answer.headers["x-frame-options"], 'href="/ui"' in answer.body.decode()
    (200, 'DENY', True)
    """
    return HTMLResponse(
        render(name, **values), status_code=status, headers={"Cache-Control": "no-store", "X-Frame-Options": "DENY"}
    )


async def who(request: Request) -> Identity | Response:
    """The caller of a page, its role checked against the route (``auth.authenticate``), or the answer to give
    instead: a redirect to ``/login`` without a credential (401), a refusal page naming why (403 and others).

    Example
    -------
    >>> import asyncio, types
    >>> services = types.SimpleNamespace(sessions=None)  # an archive without sessions: nobody is signed in
    >>> app = types.SimpleNamespace(state=types.SimpleNamespace(services=services))
    >>> scope = {"type": "http", "method": "GET", "path": "/ui", "headers": [], "query_string": b"", "app": app}
    >>> answer = asyncio.run(who(Request(scope)))
    >>> answer.status_code, answer.headers["location"]
    (303, '/login')
    """
    try:
        return await authenticate(request)
    except HTTPException as exc:
        if exc.status_code == 401:
            return RedirectResponse("/login", status_code=303)
        return render_page(
            "message.html",
            exc.status_code,
            title="Not allowed",
            message=str(exc.detail),
            kind="err",
            ident=None,
            back=UI,
        )


async def form_who(request: Request, csrf: str | None = None) -> tuple[Identity | Response, dict[str, str]]:
    """The caller of a form post (as :func:`who`) and the form's fields (the first value of each).

    The form's ``csrf`` field stands for the session's ``X-CSRF-Token`` header; a caller that read the body
    itself (an upload, a larger form) passes its ``csrf`` and gets no fields back. A form larger than
    :data:`MAX_FORM_BYTES` is a 413 page; without a ``csrf`` field the request must carry the header itself.

    Example
    -------
    >>> import asyncio, types
    >>> app = types.SimpleNamespace(state=types.SimpleNamespace(services=types.SimpleNamespace(sessions=None)))
    >>> scope = {"type": "http", "method": "POST", "path": "/ui/admin/keys", "headers": [], "query_string": b"",
    ...          "app": app}
    >>> async def receive(): return {"type": "http.request", "body": b"role=viewer&csrf=abc", "more_body": False}
    >>> answer, form = asyncio.run(form_who(Request(scope, receive)))
    >>> answer.status_code, form
    (303, {'role': 'viewer', 'csrf': 'abc'})
    """
    form: dict[str, str] = {}
    if csrf is None:
        raw = await request.body()
        if len(raw) > MAX_FORM_BYTES:
            return render_page("message.html", 413, title="Too large", message="form larger than 64 KB", ident=None), {}
        form = {k: v[0] for k, v in parse_qs(raw.decode("utf-8", "replace")).items()}
        csrf = form.get("csrf", "")
    if not csrf:  # (a script may send the header itself)
        return await who(request), form
    scope = {
        **request.scope,
        "headers": [
            *(h for h in request.scope["headers"] if h[0] != b"x-csrf-token"),
            (b"x-csrf-token", csrf.encode("latin-1", "replace")),
        ],
    }
    return await who(Request(scope)), form
