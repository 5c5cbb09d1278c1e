"""Roles within a tenant and what each may do, for HTTP routes and DIMSE services alike.

Three roles: ``admin`` (everything: users, keys, sessions, the audit log, delete), ``user`` (view, upload, send,
export) and ``viewer`` (view only). Every HTTP route of the archive is in :data:`ROUTES` with the permission it
needs (``None``: no credential at all — health, metrics, the sign-in page); a route missing from the table is
refused to everyone (403) and fails the role test, which enumerates ``app.routes``. DIMSE services need: C-FIND
and C-GET ``view``, C-MOVE ``view`` to the calling AE itself and ``send`` to any other AE, C-STORE and storage
commitment ``upload``; a peer's role comes from the ``dimse_roles`` setting (:func:`dimse_role`). A refused
service answers 0x0124 (Refused: Not Authorized), a refused C-MOVE 0xA801 (pynetdicom's only failure before
sub-operations).

Example
-------
>>> allows("viewer", "view"), allows("viewer", "upload"), allows("user", "delete"), allows("admin", "delete")
(True, False, False, True)
>>> required("DELETE", "/api/studies/{study}")
'delete'
>>> dimse_role({"VIEWONLY": "viewer", "*": "user"}, "VIEWONLY", "alpha"), dimse_role({}, "ANY", "alpha")
('viewer', 'user')
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator
from typing import Any

log = logging.getLogger("cubepacs.roles")

ROLES = ("admin", "user", "viewer")
PERMISSIONS = {
    "viewer": frozenset({"view"}),
    "user": frozenset({"view", "upload", "send", "export"}),
    "admin": frozenset({"view", "upload", "send", "export", "delete", "admin"}),
}
LEGACY_ROLE = "admin"  # a key or user stored before roles existed could do everything: it stays admin
DEFAULT_DIMSE_ROLE = "user"  # a DIMSE peer not named in dimse_roles may store, query, retrieve and move

_DW = "/dicom-web"
_INSTANCE = _DW + "/studies/{study}/series/{series}/instances/{sop}"
# (method, route path) → permission needed (None: public) and the audit action it records ("" : none)
ROUTES: dict[tuple[str, str], tuple[str | None, str]] = {
    **{("GET", p): ("view", "search") for p in (
        _DW + "/studies", _DW + "/series", _DW + "/studies/{study}/series", _DW + "/instances",
        _DW + "/studies/{study}/instances", _DW + "/studies/{study}/series/{series}/instances")},
    **{("GET", p): ("view", "download") for p in (
        _DW + "/studies/{study}", _DW + "/studies/{study}/series/{series}", _INSTANCE,
        _INSTANCE + "/bulkdata/{path:path}")},
    **{("GET", p): ("view", "view") for p in (
        _DW + "/studies/{study}/metadata", _DW + "/studies/{study}/series/{series}/metadata",
        _INSTANCE + "/metadata", _INSTANCE + "/frames/{frames}", _INSTANCE + "/rendered",
        _INSTANCE + "/thumbnail", _INSTANCE + "/frames/{frames}/rendered", _INSTANCE + "/frames/{frames}/thumbnail")},
    ("POST", _DW + "/studies"): ("upload", "upload"),
    ("POST", _DW + "/studies/{study}"): ("upload", "upload"),
    ("DELETE", "/api/studies/{study}"): ("delete", "delete"),
    ("DELETE", "/api/studies/{study}/series/{series}"): ("delete", "delete"),
    ("DELETE", "/api/studies/{study}/series/{series}/instances/{sop}"): ("delete", "delete"),
    ("POST", "/api/send"): ("send", "send"),
    ("POST", "/api/export"): ("export", "export"),
    ("GET", "/api/me"): ("view", ""),
    ("GET", "/api/users"): ("admin", ""),
    ("POST", "/api/users"): ("admin", "user-change"),
    ("DELETE", "/api/users/{name}"): ("admin", "user-change"),
    ("GET", "/api/keys"): ("admin", ""),
    ("POST", "/api/keys"): ("admin", "key-change"),
    ("DELETE", "/api/keys/{key_id}"): ("admin", "key-change"),
    ("GET", "/api/sessions"): ("admin", ""),
    ("POST", "/api/sessions/end"): ("admin", "sessions-end"),
    ("GET", "/api/audit"): ("admin", ""),
    # the admin UI (web/adminui.py)
    ("GET", "/ui"): ("view", "search"),
    ("GET", "/ui/studies/{study}"): ("view", "view"),
    ("GET", "/ui/studies/{study}/series/{series}"): ("view", "view"),
    ("GET", "/ui/studies/{study}/series/{series}/instances/{sop}"): ("view", "view"),
    ("GET", "/ui/studies/{study}/zip"): ("view", "download"),
    ("GET", "/ui/studies/{study}/series/{series}/zip"): ("view", "download"),
    ("GET", "/ui/studies/{study}/cube"): ("view", "download"),
    ("GET", "/ui/studies/{study}/series/{series}/cube"): ("view", "download"),
    ("POST", "/ui/studies/{study}/labels"): ("upload", "label"),
    ("POST", "/ui/studies/{study}/labels/{label}/remove"): ("upload", "label"),
    ("GET", "/ui/jobs"): ("view", ""),
    ("GET", "/ui/jobs/{job}"): ("view", ""),
    ("GET", "/ui/static/htmx.min.js"): (None, ""),  # a pinned copy of htmx (web/static/README.md)
    ("GET", "/api/labels"): ("view", ""),
    ("GET", "/api/studies/{study}/labels"): ("view", ""),
    ("PUT", "/api/studies/{study}/labels/{label}"): ("upload", "label"),
    ("DELETE", "/api/studies/{study}/labels/{label}"): ("upload", "label"),
    ("POST", "/api/upload"): ("upload", "upload"),
    ("POST", "/api/jobs/send"): ("send", "send"),
    ("POST", "/ui/jobs/{job}/cancel"): ("send", "send-cancel"),
    ("POST", "/api/jobs/{job}/cancel"): ("send", "send-cancel"),
    ("GET", "/api/jobs"): ("view", ""),
    ("GET", "/api/jobs/{job}"): ("view", ""),
    ("POST", "/ui/studies/{study}/send"): ("send", "send"),
    ("GET", "/ui/studies/{study}/delete"): ("delete", ""),
    ("POST", "/ui/studies/{study}/delete"): ("delete", "delete"),
    ("GET", "/ui/upload"): ("upload", ""),
    ("POST", "/ui/upload"): ("upload", "upload"),
    ("GET", "/ui/admin"): ("admin", ""),
    ("POST", "/ui/admin/users"): ("admin", "user-change"),
    ("POST", "/ui/admin/users/{name}/remove"): ("admin", "user-change"),
    ("POST", "/ui/admin/keys"): ("admin", "key-change"),
    ("POST", "/ui/admin/keys/{key_id}/revoke"): ("admin", "key-change"),
    ("POST", "/ui/admin/sessions/end"): ("admin", "sessions-end"),
    ("GET", "/ui/audit"): ("admin", ""),
    ("GET", "/ui/operations"): ("admin", ""),  # web/opsui.py
    ("GET", "/ui/export"): ("export", ""),  # research/exportui.py (registered by the command line)
    ("POST", "/ui/export"): ("export", "export"),
    # no credential: health and metrics (operations), the sign-in page; the viewer's files and configuration
    # check the session cookie themselves (any signed-in role may view)
    ("GET", "/healthz"): (None, ""),
    ("GET", "/readyz"): (None, ""),
    ("GET", "/metrics"): (None, ""),
    ("GET", "/openapi.json"): (None, ""),  # FastAPI's description of the routes (web/openapi.py)
    ("GET", "/login"): (None, ""),
    ("POST", "/login"): (None, ""),
    ("POST", "/logout"): (None, ""),
    ("GET", "/app-config.js"): (None, ""),
    ("GET", "/{path:path}"): (None, ""),
}
UNLISTED = "unlisted"  # the permission of a route missing from ROUTES: nobody has it


def allows(role: str, permission: str) -> bool:
    """Whether ``role`` has ``permission`` (an unknown role has none)."""
    return permission in PERMISSIONS.get(role, frozenset())


def check_role(role: str) -> str:
    """``role`` when it is one of :data:`ROLES`, else ConfigError."""
    from cubepacs.errors import ConfigError

    if role not in ROLES:
        raise ConfigError(f"invalid role {role!r}: one of {', '.join(ROLES)}")
    return role


def required(method: str, path: str) -> str | None:
    """The permission a route needs (``None``: public; :data:`UNLISTED` for a route not in the table)."""
    method = "GET" if method == "HEAD" else method
    entry = ROUTES.get((method, path))
    return UNLISTED if entry is None else entry[0]


def action(method: str, path: str) -> str:
    """The audit action of a route ("" when it records none)."""
    entry = ROUTES.get(("GET" if method == "HEAD" else method, path))
    return entry[1] if entry is not None else ""


def dimse_role(roles: dict[str, str], calling: str, tenant: str) -> str:
    """A DIMSE peer's role from the ``dimse_roles`` setting: the first of ``AE@tenant``, ``AE``, ``@tenant``,
    ``*`` that is set, else :data:`DEFAULT_DIMSE_ROLE`."""
    for key in (f"{calling}@{tenant}", calling, f"@{tenant}", "*"):
        if key in roles:
            return roles[key]
    return DEFAULT_DIMSE_ROLE


def _peer(event: Any, tenants: dict[str, str]) -> tuple[str, str]:
    from cubepacs.archive.dimse.handlers import called_ae, calling_ae

    return calling_ae(event), tenants.get(called_ae(event), "")


REFUSED = 0x0124  # Refused: Not Authorized


_DIMSE_ACTION = {"find": "search", "get": "download", "store": "upload", "commit": "commit"}


def _study(event: Any) -> str:
    try:
        value = event.identifier.get("StudyInstanceUID", "")
    except Exception:  # an identifier that does not decode: the handler answers it
        return ""
    return ("\\".join(map(str, value)) if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue"
            else str(value or ""))[:640]


def guard_dimse(handler: Callable[..., Any], service: str, roles: dict[str, str],
                tenants: dict[str, str], audit: Callable[..., Any] | None = None) -> Callable[..., Any]:
    """``handler`` (a pynetdicom event handler) run only when the peer's role allows ``service``'s permission;
    otherwise the service answers 0x0124 (Refused: Not Authorized). ``service``: ``store``, ``find``, ``get``,
    ``move`` or ``commit``. ``audit`` (``accounts.Accounts.audit``): where C-FIND, C-GET and C-MOVE requests and
    every refusal are recorded (who: ``ae:CALLING``; C-STOREs are in the object log instead)."""
    from cubepacs.archive.dimse import store

    def record(event: Any, need: str, role: str, refused: bool) -> None:
        if audit is None or (service == "store" and not refused):
            return
        calling, tenant = _peer(event, tenants)
        action = "send" if need == "send" else ("download" if service == "move" else _DIMSE_ACTION[service])
        try:
            audit(tenant, f"ae:{calling}", role, f"refused:{action}" if refused else action,
                  _study(event) if service in ("find", "get", "move") else "",
                  f"C-{service.upper()}" if service != "commit" else "storage commitment", 403 if refused else 200,
                  event.assoc.requestor.address)
        except Exception as exc:  # the audit log never fails a DIMSE service
            log.warning("audit log: %s: %s", type(exc).__name__, exc)

    def permission(event: Any) -> str:
        if service == "move":
            raw = event.move_destination
            dest = (raw.decode() if isinstance(raw, bytes) else str(raw)).strip()
            return "view" if dest == _peer(event, tenants)[0] else "send"
        return {"store": "upload", "commit": "upload"}.get(service, "view")

    def refused(event: Any) -> bool:
        calling, tenant = _peer(event, tenants)
        need = permission(event)
        role = dimse_role(roles, calling, tenant)
        if allows(role, need):
            record(event, need, role, False)
            return False
        log.warning("%s from %r refused: role %s of tenant %r may not %s", service.upper(), calling, role,
                    tenant, need)
        record(event, need, role, True)
        return True

    if service in ("store", "commit"):
        @functools.wraps(handler)
        def plain(event: Any) -> Any:
            if refused(event):
                return REFUSED if service == "store" else (REFUSED, None)
            return handler(event)

        return store.reader_safe(plain) if service == "store" else plain

    @functools.wraps(handler)
    def generator(event: Any) -> Iterator[Any]:
        if refused(event):
            if service == "move":  # pynetdicom's only failure before sub-operations: 0xA801
                yield None, None
                return
            if service == "get":
                yield 1  # (0 sub-operations would be answered "success")
            yield REFUSED, None
            return
        yield from handler(event)

    return generator
