"""Uploads of the admin UI and the API: DICOM files, whole folders and ZIPs of them, stored as STOW-RS stores them
(``stow.store_items``: the same ingest path, the same checks).

* ``GET /ui/upload``: drop files, folders or ZIPs on the page (or pick them); a progress bar while they go up
  (htmx's upload progress event), then how many were stored and why the others were refused.
* ``POST /ui/upload?csrf=…``: ``multipart/form-data``, each part a DICOM file or a ZIP of them.
* ``POST /api/upload``: a ZIP (``application/zip``) or ``multipart/form-data``; answers
  ``{"stored": n, "failed": n, "reasons": [...], "studies": [...]}``.

A ZIP is taken apart with bounds: at most :data:`MAX_MEMBERS` members and a central directory of at most
:data:`MAX_DIRECTORY_BYTES` (both read from its end record before ``zipfile`` parses the directory), none and all
of them together at most ``max_request_bytes`` and :data:`MAX_RATIO` times the ZIP's size (at least
:data:`MIN_EXPANDED`) once expanded (read, not just declared), folders, hidden files and
``__MACOSX`` skipped; a ZIP inside a ZIP is not opened (refused like any file that is not DICOM). The body itself
is spooled to a temporary file as STOW-RS spools it (``max_request_bytes``, 413 beyond).

Example
-------
>>> import io, zipfile
>>> buf = io.BytesIO()
>>> with zipfile.ZipFile(buf, "w") as zf:
...     zf.writestr("s/1.dcm", b"one"); zf.writestr("__MACOSX/s/._1.dcm", b"x"); zf.writestr("s/", b"")
>>> [(s, d) for s, d in expand_zip("up.zip", buf.getvalue(), 100)]
[('up.zip/s/1.dcm', b'one')]
>>> [s for s, _ in expand_zip("a.zip", b"PK\\x03\\x04 not a zip", 100)]
['a.zip: refused']
"""

from __future__ import annotations

import io
import lzma
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import PurePosixPath
from typing import IO, Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from cubepacs.archive.web.auth import Identity, authenticate
from cubepacs.archive.web.pages import UI, form_who, render_page, who

MAX_MEMBERS = 100_000
MAX_DIRECTORY_BYTES = 32 << 20  # the central directory of 100,000 members with 300-byte paths
# a ZIP expands to at most MAX_RATIO times its size (at least MIN_EXPANDED; at most max_request_bytes): a member is
# read into memory whole, and deflate reaches ~1,000x (4 MB of upload held 4 GiB); DICOM files of ../shared/data
# deflate 28x at most
MAX_RATIO = 100
MIN_EXPANDED = 64 << 20
ZIP_MAGIC = b"PK\x03\x04"


def _check_directory(stream: IO[bytes]) -> None:
    """ValueError when the ZIP's end record declares more than :data:`MAX_MEMBERS` members or a central directory
    larger than :data:`MAX_DIRECTORY_BYTES`: ``zipfile`` reads the whole directory into a ZipInfo per entry
    (whatever count is declared) before any member could be refused — 10x the body's size in memory."""
    end = zipfile._EndRecData(stream)  # type: ignore[attr-defined]  # (the end record zipfile itself reads)
    if end is None:
        raise zipfile.BadZipFile("no end of central directory record")
    members, size = end[zipfile._ECD_ENTRIES_TOTAL], end[zipfile._ECD_SIZE]  # type: ignore[attr-defined]
    if members > MAX_MEMBERS or size > MAX_DIRECTORY_BYTES:
        raise ValueError(f"{members} members, a central directory of {size} bytes (at most {MAX_MEMBERS} members, "
                         f"{MAX_DIRECTORY_BYTES} bytes)")
    stream.seek(0)


def expand_zip(source: str, data: bytes | IO[bytes], limit: int) -> Iterator[tuple[str, bytes]]:
    """The files of an uploaded part (bytes, or a seekable file holding them): itself, or each member of a ZIP
    ((source/member, bytes)); a ZIP that cannot be read or breaks a bound is one ``(source: refused, reason)``
    item (``stow.store_items``)."""
    stream: IO[bytes]
    if isinstance(data, bytes):
        head, stream = data[:4], io.BytesIO(data)
    else:
        data.seek(0)
        head, stream = data.read(4), data
        data.seek(0)
    if head != ZIP_MAGIC:
        yield source, data if isinstance(data, bytes) else data.read(limit + 1)
        return
    size = len(data) if isinstance(data, bytes) else stream.seek(0, 2)
    stream.seek(0)
    budget = min(limit, max(MIN_EXPANDED, MAX_RATIO * size))  # each member is held in memory while it is stored
    why = f"max_request_bytes ({limit})" if budget == limit else \
        f"{budget} bytes ({MAX_RATIO} x the ZIP's {size} bytes: upload such files without a ZIP)"
    try:
        _check_directory(stream)
        with zipfile.ZipFile(stream) as zf:
            # (a nameless entry is skipped before is_dir(), which raises IndexError on it)
            members = [m for m in zf.infolist() if not _skipped(m.filename) and not m.is_dir()]
            if len(members) > MAX_MEMBERS:
                raise ValueError(f"{len(members)} members (at most {MAX_MEMBERS})")
            total = 0
            for m in members:
                with zf.open(m) as f:
                    content = f.read(budget - total + 1)
                total += len(content)
                if total > budget:
                    raise ValueError(f"expands beyond {why} at {m.filename!r}")
                yield f"{source}/{m.filename}", content
    except (zipfile.BadZipFile, ValueError, RuntimeError, NotImplementedError, EOFError, OSError, zlib.error,
            lzma.LZMAError) as exc:  # (a corrupt deflated or LZMA member raises its codec's own error)
        yield f"{source}: refused", f"ZIP not taken apart: {exc}".encode()


def _skipped(name: str) -> bool:
    parts = PurePosixPath(name).parts
    return not parts or parts[0] == "__MACOSX" or any(p.startswith(".") for p in parts)


def _summary(doc: dict[str, Any], reasons: list[str]) -> dict[str, Any]:
    stored = doc.get("00081199", {}).get("Value", [])
    studies = sorted({item["00081190"]["Value"][0].split("/studies/")[1].split("/")[0] for item in stored})
    return {"stored": len(stored), "failed": len(doc.get("00081198", {}).get("Value", [])), "reasons": reasons,
            "studies": studies}


def add_routes(app: FastAPI, services: Any) -> None:
    """Register ``/ui/upload`` and ``/api/upload``."""
    from cubepacs.archive.web import multipart
    from cubepacs.archive.web.stow import spool, store_items, store_parts

    limit = services.max_request_bytes

    def expand(source: str, data: bytes) -> Iterator[tuple[str, bytes]]:
        return expand_zip(source, data, limit)

    async def store(request: Request, tenant: str) -> dict[str, Any]:
        if (full := services.storage.refusal()) is not None:  # below the free-space watermark
            raise HTTPException(507, full)
        ctype = request.headers.get("content-type", "")
        boundary = ctype.partition("boundary=")[2].split(";")[0].strip().strip('"')
        is_zip = ctype.split(";")[0].strip().lower() in ("application/zip", "application/x-zip-compressed")
        if not is_zip and not (ctype.startswith("multipart/form-data") and boundary):
            raise HTTPException(415, "expected multipart/form-data or application/zip")
        body, size = await spool(request, limit)
        try:
            if is_zip:
                _, doc, reasons, count = await run_in_threadpool(store_items, services, tenant, None,
                                                                 expand_zip("upload.zip", body, limit))
                if count == 0:
                    raise HTTPException(400, "the ZIP holds no file")
            else:
                _, doc, reasons = await run_in_threadpool(store_parts, services, tenant, None, body, size,
                                                          f"multipart/related; boundary={boundary}", expand)
        except multipart.MultipartError as exc:
            raise HTTPException(400, str(exc)) from None
        finally:
            body.close()
        result = _summary(doc, reasons)
        request.state.detail = f"{result['stored']} stored, {result['failed']} refused"
        return result

    @app.get(UI + "/upload")
    async def upload_form(request: Request) -> Response:
        ident = await who(request)
        if not isinstance(ident, Identity):
            return ident
        return render_page("upload.html", title="Upload", ident=ident, csrf=ident.csrf)

    @app.post(UI + "/upload")
    async def upload(request: Request) -> Response:
        ident, _ = await form_who(request, request.query_params.get("csrf", ""))
        if not isinstance(ident, Identity):
            return ident
        result = await store(request, ident.tenant)
        if request.headers.get("hx-request"):  # htmx: the result only, into the page
            return render_page("upload_result.html", result=result)
        return render_page("upload.html", title="Upload", ident=ident, csrf=ident.csrf, result=result)

    @app.post("/api/upload")
    async def api_upload(request: Request) -> JSONResponse:
        ident = await authenticate(request)
        result = await store(request, ident.tenant)
        status = 200 if not result["failed"] else (202 if result["stored"] else 409)
        return JSONResponse(result, status_code=status)
