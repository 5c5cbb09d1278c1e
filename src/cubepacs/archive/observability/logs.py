"""Service logs: plain text or one JSON object per line (``log_format = "json"``), with the service name, the
tenant and the request id (HTTP, the same id as in the access log) or association id (DIMSE) of the event.

Passwords in URLs are masked wherever URLs are logged (``mask_url``); API keys, session tokens and passwords are
never logged.

Example
-------
>>> import logging, io, json
>>> stream = io.StringIO()
>>> configure("json", "web", stream=stream)
>>> REQUEST_ID.set("r1"); TENANT.set("acme")
<Token ...>
>>> logging.getLogger("cubepacs.x").warning("hello %s", "you")
>>> doc = json.loads(stream.getvalue()); (doc["message"], doc["service"], doc["request_id"], doc["tenant"])
('hello you', 'web', 'r1', 'acme')
"""

from __future__ import annotations

import contextvars
import datetime as dt
import json
import logging
import sys
from typing import IO, Any

REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
ASSOCIATION_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("association_id", default=None)
TENANT: contextvars.ContextVar[str | None] = contextvars.ContextVar("tenant", default=None)


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, service, logger, message, and the context ids that are set."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(), "service": self.service, "logger": record.name,
            "message": record.getMessage(),
        }
        for key, var in (("tenant", TENANT), ("request_id", REQUEST_ID), ("association_id", ASSOCIATION_ID)):
            value = var.get()
            if value:
                doc[key] = value
        if record.exc_info:
            doc["error"] = self.formatException(record.exc_info).splitlines()[-1]
        return json.dumps(doc, ensure_ascii=False)


class OneLineErrors(logging.Filter):
    """pynetdicom logs what it cannot decode from a peer — a crafted or truncated PDU: bad input, not a bug here —
    as ``LOGGER.exception(exc)``, a traceback in the service log. Such a record (its message is the exception
    itself) becomes one line, the exception's type and text; with pynetdicom's logger at DEBUG it is left alone.

    >>> exc = ValueError("bad AE")
    >>> r = logging.LogRecord("pynetdicom.dul", logging.ERROR, "", 0, exc, (), (ValueError, exc, None))
    >>> OneLineErrors().filter(r), r.getMessage(), r.exc_info
    (True, 'ValueError: bad AE', None)
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.msg, BaseException) and record.name.startswith("pynetdicom") \
                and not logging.getLogger("pynetdicom").isEnabledFor(logging.DEBUG):
            record.msg, record.args = f"{type(record.msg).__name__}: {record.msg}", ()
            record.exc_info = record.exc_text = None
        return True


def configure(log_format: str, service: str, level: int = logging.INFO, stream: IO[str] | None = None) -> None:
    """Set up the root logger for a service (``text`` or ``json``); quiet pynetdicom and pydicom."""
    handler = logging.StreamHandler(stream or sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter(service))
    else:
        handler.setFormatter(logging.Formatter(f"%(asctime)s {service} %(name)s %(levelname)s %(message)s"))
    handler.addFilter(OneLineErrors())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    # pydicom logs every decoder failure with a traceback; we report those ourselves, naming instance and frame
    logging.getLogger("pydicom").setLevel(logging.CRITICAL)
    logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
