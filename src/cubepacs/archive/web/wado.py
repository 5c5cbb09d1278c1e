"""WADO-RS: instances, series and studies as ``multipart/related`` DICOM; metadata; frames; rendered images.

Frames of a compacted series come from its cube (only the asked frames are decoded); metadata of a built series
is the web worker's pre-built JSON.

Example
-------
>>> parse_frames("1,3, 2")
[1, 3, 2]
"""

from __future__ import annotations

import functools
import threading
from typing import Any

import numpy as np
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import Response

from cubepacs.archive.keys import check_uid, cube_key, instance_key
from cubepacs.archive.metadata import bulk_value, series_json
from cubepacs.archive.observability import metrics
from cubepacs.archive.storage.base import StorageFile
from cubepacs.archive.web import asstored, multipart
from cubepacs.archive.web.context import DICOM_JSON, ROOT, Services, cached, public_base, tenant_of
from cubepacs.archive.web.hot import HotFrames, HotInstances, HotRows, file_mark
from cubepacs.archive.web.readahead import ReadAhead
from cubepacs.cube.pixels import PixelDesc, native_layout
from cubepacs.cube.reader import CubeReader
from cubepacs.errors import CubepacsError, MissingObjectError

UNDECODABLE = 422  # the request is fine, the stored pixel data is not: named instance and frame in the reason
_CUBES: dict[tuple[str, str, str], CubeReader] = {}
_INSTANCES = HotInstances()
_FRAMES = HotFrames()
_ROWS = HotRows()
_LOCK = threading.Lock()


def parse_frames(text: str) -> list[int]:
    """Frame numbers of a ``/frames/{list}`` path (1-based, each once, in the order first asked); 400 when not
    positive integers."""
    items = [x.strip() for x in text.split(",") if x.strip()]
    if not items or not all(x.isascii() and x.isdigit() and len(x) <= 9 for x in items):
        raise HTTPException(400, f"frame list must be comma-separated positive integers, not {text[:60]!r}")
    frames = list(dict.fromkeys(int(x) for x in items))
    if min(frames) < 1:
        raise HTTPException(400, "frame numbers start at 1")
    return frames


def check_uids(*uids: str) -> None:
    """Each of ``uids`` a valid UID (``keys.check_uid``: digits and dots, at most 64 characters), else an HTTP 400
    naming it — before a UID of a URL reaches the index or a storage key.

    Example
    -------
    >>> check_uids("1.2.3", "1.2.3.4")
    >>> try:
    ...     check_uids("1.2.3", "1.2.x")
    ... except HTTPException as exc:
    ...     print(exc.status_code)
    400
    """
    for u in uids:
        try:
            check_uid(u)
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from None


def _instances(services: Services, tenant: str, study: str, series: str | None = None,
               sop: str | None = None) -> list[dict[str, Any]]:
    check_uids(*(u for u in (study, series, sop) if u))
    rows = services.index.instances_of(tenant, study, series, [sop] if sop else None)
    if not rows:
        raise HTTPException(404, "no such study, series or instance")
    return rows


def _cube_for(services: Services, state: dict[str, Any] | None,
              open_new: bool = True) -> tuple[CubeReader | None, Any]:
    """The reader of a compacted series' cube (kept open) and what identifies that build; (None, None).
    ``state``: the series' row (``json_status``, ``cube_key`` and ``cube_time`` or ``updated_time``).
    ``open_new=False``: (None, key) when that cube is not open yet (opening may read from object storage)."""
    if not state or state.get("json_status") != 1 or not state.get("cube_key"):
        return None, None
    key = ("cube", state["cube_key"], str(state.get("cube_time", state.get("updated_time"))))
    with _LOCK:
        reader = _CUBES.get(key)
        if reader is None and not open_new:
            return None, key
        if reader is None:
            storage = services.storage
            local = getattr(storage, "local_path", None)
            # a local file is memory-mapped; on object storage, each block and frame is one ranged read
            source: Any = local(state["cube_key"]) if local else StorageFile(storage, state["cube_key"])
            reader = CubeReader(source, services.max_value_bytes)
            if len(_CUBES) > 64:
                _CUBES.clear()
            _CUBES[key] = reader
    return reader, key


def _frame_row(services: Services, tenant: str, study: str, series: str, sop: str) -> dict[str, Any]:
    """The instance row with its series' build state (one query; kept for ``hot_frame_pieces``), or 404. A row
    kept less than ``hot.ROW_SECONDS`` ago whose files are unchanged since (the same mark) is used again without
    a query, as ``hot_frame_pieces`` does."""
    check_uids(study, series, sop)
    mark = _mark(services, tenant, study, series, sop)  # before the row: a change in between shows in the mark
    kept = _ROWS.get((tenant, study, series, sop))
    if kept is not None and mark is not None and kept[1] == mark:
        return kept[0]
    row = services.index.frame_source(tenant, study, series, sop)
    if row is None:
        raise HTTPException(404, "no such study, series or instance")
    _ROWS.put((tenant, study, series, sop), row, mark)
    return row


def _mark(services: Services, tenant: str, study: str, series: str, sop: str) -> Any:
    """``hot.file_mark`` of an instance's stored file and its series' cube."""
    try:
        keys = (instance_key(tenant, study, series, sop), cube_key(tenant, study, series))
    except ValueError:
        return None
    return file_mark(services.storage, keys)


def read_ahead(services: Services) -> ReadAhead:
    """The read-ahead of ``services``' frames (``readahead``): series rows from the index, frames into ``hot``."""

    def rows(key: tuple[str, str, str]) -> list[dict[str, Any]]:
        return services.index.frame_sources(*key)

    def warm(row: dict[str, Any], frame: int) -> None:
        # the series' rows give the order; the row kept is read again after its mark (see _frame_row)
        fresh = _frame_row(services, row["tenant_id"], row["study_uid"], row["series_uid"], row["sop_uid"])
        frame_arrays(services, row["tenant_id"], fresh, [frame])
        metrics.READ_AHEAD.inc()

    return ReadAhead(rows, warm)


def _seen(services: Services, tenant: str, study: str, series: str, sop: str, frames: list[int]) -> None:
    if services.read_ahead is not None and len(frames) == 1:
        services.read_ahead.seen((tenant, study, series), sop, frames[0])


def frame_arrays(services: Services, tenant: str, row: dict[str, Any], frames: list[int]) -> list[np.ndarray]:
    """Stored values of the asked frames of one instance (from the cube when the series is compacted); parsed
    files and decoded frames are kept hot (``hot``). ``row``: from ``_frame_row`` (it carries the series' state)."""
    return _arrays(services, row, frames, hot_only=False) or []


def _arrays(services: Services, row: dict[str, Any], frames: list[int], hot_only: bool,
            served: bool = False) -> list[np.ndarray] | None:
    """``frame_arrays``; with ``hot_only``, None unless every frame is decoded in memory already (then nothing is
    read or decoded); with ``served``, in the layout ``/frames`` sends them (``served_layout``)."""
    cube, cube_id = _cube_for(services, row, open_new=not hot_only)
    if cube is None and cube_id is not None:
        return None  # compacted, its cube not open yet: not hot
    try:
        i = cube.position(f"{row['sop_uid']}.dcm") if cube is not None else None
        if cube is not None and i is not None:
            start, count = int(cube.frame_starts[i]), int(cube.frame_starts[i + 1] - cube.frame_starts[i])
            source: Any = cube
            identity: Any = cube_id
        else:
            identity, source = _INSTANCES.pixels(services.storage, row, read=not hot_only)
            if source is None:
                return None
            start, count = 0, source.num_frames
        desc = source.desc(i if cube is not None and i is not None else 0)
    except MissingObjectError as exc:  # the index names a file the storage does not hold
        raise HTTPException(404, f"instance {row['sop_uid']}: {exc}") from None
    except CubepacsError as exc:
        raise HTTPException(UNDECODABLE, f"instance {row['sop_uid']}: pixel data cannot be read: {exc}") from None
    if max(frames) > count:
        raise HTTPException(404, f"instance {row['sop_uid']} has {count} frame(s), not {max(frames)}")
    out = []
    for f in frames:
        try:
            arr = _FRAMES.frame(identity, start + f - 1,
                                None if hot_only else functools.partial(source.frame, start + f - 1))
        except Exception as exc:  # a codec's own error types, numpy's, …: the stored data is at fault
            raise HTTPException(UNDECODABLE, f"instance {row['sop_uid']}, frame {f}: pixel data cannot be "
                                             f"decoded ({type(exc).__name__}: {str(exc)[:200]})") from None
        if arr is None:
            return None
        out.append(served_layout(arr, desc) if served else arr)
    return out


def served_layout(arr: np.ndarray, desc: PixelDesc | None) -> np.ndarray:
    """A frame's stored values (rows × cols [× samples]) in the layout ``/frames`` sends and ``/metadata``
    describes (``pixels.native_layout``): colour-by-plane where the instance's Planar Configuration is 1, Y₁ Y₂ Cb
    Cr pairs where its Photometric Interpretation is YBR_FULL_422 — whether stored natively, decoded from a
    codestream (RLE is colour-by-plane inside, PS3.5 G.2, whatever the attribute says) or read from a cube.

    Example
    -------
    >>> d = PixelDesc("native", 1, 2, 3, 8, False, 1, 1, "<u1", "RGB")
    >>> served_layout(np.array([[[1, 2, 3], [4, 5, 6]]], np.uint8), d).ravel().tolist()
    [1, 4, 2, 5, 3, 6]
    """
    return arr if desc is None else native_layout(desc, arr)


def frame_pieces(services: Services, tenant: str, study: str, series: str, sop: str,
                 frames: str, accept: str = "") -> tuple[list[Any], str]:
    """The body of a WADO-RS frames response as its pieces (the frames' little-endian values uncopied where they
    are stored that way, or their codestreams as stored when ``accept`` allows it: ``asstored``) and its
    Content-Type; HTTPException as the route answers it."""
    wanted = parse_frames(frames)
    row = _frame_row(services, tenant, study, series, sop)
    ok = asstored.accepted(accept)
    if ok:
        stored = _as_stored(services, row, wanted, ok)
        if stored is not None:
            return stored  # nothing decoded here: nothing for the read-ahead to decode either
    pieces = _pieces(_arrays(services, row, wanted, hot_only=False, served=True) or [])
    _seen(services, tenant, study, series, sop, wanted)
    return pieces


def _as_stored(services: Services, row: dict[str, Any], wanted: list[int],
               ok: frozenset[str]) -> tuple[list[Any], str] | None:
    """The frames of ``row`` as stored (a cube's HTJ2K, a file's codestreams) when ``ok`` allows their syntax;
    None when they are to be decoded (including every failure: the decoding path says what is wrong)."""
    try:
        cube, _ = _cube_for(services, row)
        i = cube.position(f"{row['sop_uid']}.dcm") if cube is not None else None
        if cube is not None and i is not None:
            return asstored.cube_frames(cube, i, wanted, ok)
        if not asstored.allows(ok, str(row.get("transfer_syntax") or "")):
            return None  # a file stored uncompressed: decoded (read as it is) below
        _, source = _INSTANCES.pixels(services.storage, row)
        inst = source.instances[0] if source is not None else None
        if inst is None or inst.desc is None or inst.desc.mode != "encapsulated":
            return None
        return asstored.encapsulated_frames(inst.raw.pixel_value, inst.raw.transfer_syntax, inst.desc.frames,
                                            wanted, ok)
    except Exception:
        return None


def hot_frame_pieces(services: Services, tenant: str, study: str, series: str, sop: str,
                     frames: str, accept: str = "") -> tuple[list[Any], str] | None:
    """``frame_pieces`` when the index row (found at most ``hot.ROW_SECONDS`` ago, its files unchanged since:
    ``hot.file_mark``) and the frames are in memory already, else None: it neither waits on the index nor reads nor
    decodes, so an event loop may call it. Frames that may go as stored (``accept``) are never hot."""
    kept = _ROWS.get((tenant, study, series, sop))
    if kept is None or kept[1] is None or _mark(services, tenant, study, series, sop) != kept[1]:
        return None  # not found lately, or a file written, replaced or deleted since the row was read
    ok = asstored.accepted(accept)
    if ok and (kept[0].get("json_status") == 1 or asstored.allows(ok, str(kept[0].get("transfer_syntax") or ""))):
        return None  # compacted, or stored compressed: the thread pool's frame_pieces sends them as stored
    wanted = parse_frames(frames)
    arrays = _arrays(services, kept[0], wanted, hot_only=True, served=True)
    if arrays is None:
        return None
    _seen(services, tenant, study, series, sop, wanted)
    return _pieces(arrays)


def _pieces(arrays: list[np.ndarray]) -> tuple[list[Any], str]:
    values = [np.ascontiguousarray(a.astype(a.dtype.newbyteorder("<"), copy=False)).data.cast("B") for a in arrays]
    return multipart.pieces(values, "application/octet-stream", '; transfer-syntax="1.2.840.10008.1.2.1"')


def rendered_response(services: Services, tenant: str, row: dict[str, Any], frame: int,
                      request: Request) -> Response:
    """A frame of an instance as JPEG or PNG (``window`` query parameter honoured, 400 when malformed)."""
    import warnings
    from io import BytesIO

    import pydicom

    from cubepacs.archive.web import render

    window = request.query_params.get("window")
    try:
        voi = render.parse_window(window) if window else None
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from None
    arr = frame_arrays(services, tenant, row, [frame])[0]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(BytesIO(services.storage.get(row["storage_key"])), stop_before_pixels=True,
                                 force=True)
        image = render.render(ds, arr, voi, request.url.path.endswith("/thumbnail"), frame - 1)
    except Exception as exc:
        raise HTTPException(UNDECODABLE, f"instance {row['sop_uid']}, frame {frame}: cannot be rendered "
                                         f"({type(exc).__name__}: {str(exc)[:200]})") from None
    body, media = render.encode(image, request.headers.get("accept", "image/jpeg"))
    return Response(body, media_type=media)


EXPLICIT_LE = "1.2.840.10008.1.2.1"


def wanted_syntaxes(accept: str) -> list[str] | None:
    """The transfer syntaxes an Accept header takes instances in, in its order: its ``transfer-syntax``
    parameters; None when one is ``*`` (as stored); empty when it names none (then PS3.18 8.7.3.5.2's default,
    Explicit VR Little Endian, applies).

    Example
    -------
    >>> wanted_syntaxes('multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.70, '
    ...                 'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.1')
    ['1.2.840.10008.1.2.4.70', '1.2.840.10008.1.2.1']
    >>> wanted_syntaxes('multipart/related; type="application/dicom"'), wanted_syntaxes("transfer-syntax=*")
    ([], None)
    """
    out: list[str] = []
    for item in accept.replace(",", ";").split(";"):
        key, _, value = item.strip().partition("=")
        if key.strip().lower() == "transfer-syntax":
            value = value.strip().strip('"')
            if value == "*":
                return None
            out.append(value)
    return out


def in_syntax(data: bytes, syntaxes: list[str] | None) -> tuple[bytes, str]:
    """An instance's Part 10 bytes in one of ``syntaxes`` (None: as stored; empty: Explicit VR Little Endian) and
    the syntax they are in, every UID and value kept (``cubepacs.dicom.transcode``): as stored when its syntax is
    among them, else the first it can be re-encoded to. When none can be made: 406 naming the instance and the
    reason if the client named syntaxes, else as stored (the default applies to what can be decoded; its part
    says what it holds: one undecodable instance does not fail a series)."""
    from cubepacs.dicom.transcode import stored_syntax, transcode_file
    from cubepacs.errors import CodecError

    stored = stored_syntax(data)
    if syntaxes is None or stored in syntaxes:
        return data, stored
    reasons = []
    for syntax in syntaxes or [EXPLICIT_LE]:
        try:
            return transcode_file(data, syntax), syntax
        except Exception as exc:  # CodecError, or whatever a malformed stored file makes pydicom raise: never a 500
            reasons.append(str(exc) if isinstance(exc, CodecError) else f"{type(exc).__name__}: {str(exc)[:200]}")
    if syntaxes:
        raise HTTPException(406, f"{'; '.join(reasons)}; offered: {stored} (as stored) or {EXPLICIT_LE}")
    return data, stored


_RELATIVE = b'"BulkDataURI":"' + ROOT.encode() + b"/"


def absolute(response: Response, request: Request) -> Response:
    """The metadata with absolute BulkDataURIs (PS3.18 F.2.6), from ``public_url`` or the request's own base (a
    trusted proxy's X-Forwarded-Proto/Host honoured). Stored and cached metadata keep relative ones."""
    if response.status_code != 200:
        return response
    base = public_base(request).encode()
    body = bytes(response.body).replace(_RELATIVE, b'"BulkDataURI":"' + base + ROOT.encode() + b"/")
    return Response(body, media_type=DICOM_JSON)


def add_routes(app: FastAPI, services: Services) -> None:
    """Register the WADO-RS routes."""

    def retrieve(rows: list[dict[str, Any]], request: Request) -> Response:
        syntaxes = wanted_syntaxes(request.headers.get("accept", ""))
        out = [in_syntax(services.storage.get(r["storage_key"]), syntaxes) for r in rows]
        chunks, ctype = multipart.pieces([d for d, _ in out], "application/dicom",
                                         extras=[f"; transfer-syntax={ts}" if ts else "" for _, ts in out])
        return Response(b"".join(chunks), media_type=ctype)

    @app.get(ROOT + "/studies/{study}")
    def get_study(request: Request, study: str, tenant: str = Depends(tenant_of)) -> Response:
        return retrieve(_instances(services, tenant, study), request)

    @app.get(ROOT + "/studies/{study}/series/{series}")
    def get_series(request: Request, study: str, series: str, tenant: str = Depends(tenant_of)) -> Response:
        return retrieve(_instances(services, tenant, study, series), request)

    @app.get(ROOT + "/studies/{study}/series/{series}/instances/{sop}")
    def get_instance(request: Request, study: str, series: str, sop: str,
                     tenant: str = Depends(tenant_of)) -> Response:
        return retrieve(_instances(services, tenant, study, series, sop), request)

    def series_doc(tenant: str, study: str, series: str, rows: list[dict[str, Any]]) -> bytes:
        """Metadata of ``rows`` (all of one series): the web worker's pre-built JSON of the series when it holds
        exactly these instances, else joined from the JSON kept at ingest and converted from the files."""
        state = services.index.series_state(tenant, study, series)
        if state and state["json_status"] == 1 and state["built_instances"] == len(rows) and state["json_key"]:
            return services.storage.get(state["json_key"])
        kept = services.index.instance_docs(tenant, study, series)  # JSON kept at ingest (metadata_at_ingest)
        # mapped, not read: the metadata needs each file's header, not its pixel data (not cached after ingest)
        return series_json(rows, kept, lambda r: services.storage.view(r["storage_key"]), ROOT)

    def metadata(tenant: str, study: str, series: str | None, sop: str | None) -> Response:
        """An instance's, series' or study's metadata: the JSON arrays of its series joined."""
        rows = _instances(services, tenant, study, series, sop)
        by_series: dict[str, list[dict[str, Any]]] = {}
        for r in rows:
            by_series.setdefault(r["series_uid"], []).append(r)
        # a study is its series' JSON arrays joined (pre-built ones as they are stored, not parsed again)
        parts = [series_doc(tenant, study, uid, series_rows).strip()[1:-1].strip()
                 for uid, series_rows in by_series.items()]
        return Response(b"[" + b",".join(p for p in parts if p) + b"]", media_type=DICOM_JSON)

    @app.get(ROOT + "/studies/{study}/metadata")
    def study_metadata(request: Request, study: str, tenant: str = Depends(tenant_of)) -> Response:
        return cached(services, tenant, "metadata", request,
                      lambda: absolute(metadata(tenant, study, None, None), request), vary=public_base(request))

    @app.get(ROOT + "/studies/{study}/series/{series}/metadata")
    def series_metadata(request: Request, study: str, series: str, tenant: str = Depends(tenant_of)) -> Response:
        return cached(services, tenant, "metadata", request,
                      lambda: absolute(metadata(tenant, study, series, None), request), vary=public_base(request))

    @app.get(ROOT + "/studies/{study}/series/{series}/instances/{sop}/metadata")
    def instance_meta(request: Request, study: str, series: str, sop: str,
                      tenant: str = Depends(tenant_of)) -> Response:
        return absolute(metadata(tenant, study, series, sop), request)

    @app.get(ROOT + "/studies/{study}/series/{series}/instances/{sop}/frames/{frames}")
    def get_frames(request: Request, study: str, series: str, sop: str, frames: str,
                   tenant: str = Depends(tenant_of)) -> Response:
        chunks, ctype = frame_pieces(services, tenant, study, series, sop, frames, request.headers.get("accept", ""))
        return Response(b"".join(chunks), media_type=ctype)

    @app.get(ROOT + "/studies/{study}/series/{series}/instances/{sop}/bulkdata/{path:path}")
    def get_bulkdata(study: str, series: str, sop: str, path: str, tenant: str = Depends(tenant_of)) -> Response:
        row = _instances(services, tenant, study, series, sop)[0]
        try:
            value = bulk_value(services.storage.get(row["storage_key"]), path)
        except KeyError:
            raise HTTPException(404, f"no bulk value at {path!r}") from None
        body, ctype = multipart.encode([value], "application/octet-stream")
        return Response(body, media_type=ctype)

    @app.get(ROOT + "/studies/{study}/series/{series}/instances/{sop}/rendered")
    @app.get(ROOT + "/studies/{study}/series/{series}/instances/{sop}/thumbnail")
    def rendered(request: Request, study: str, series: str, sop: str, tenant: str = Depends(tenant_of)) -> Response:
        row = _frame_row(services, tenant, study, series, sop)
        return rendered_response(services, tenant, row, 1, request)

    @app.get(ROOT + "/studies/{study}/series/{series}/instances/{sop}/frames/{frames}/rendered")
    @app.get(ROOT + "/studies/{study}/series/{series}/instances/{sop}/frames/{frames}/thumbnail")
    def rendered_frame(request: Request, study: str, series: str, sop: str, frames: str,
                       tenant: str = Depends(tenant_of)) -> Response:
        numbers = parse_frames(frames)
        if len(numbers) != 1:
            raise HTTPException(400, "one frame number is rendered at a time")
        row = _frame_row(services, tenant, study, series, sop)
        return rendered_response(services, tenant, row, numbers[0], request)
