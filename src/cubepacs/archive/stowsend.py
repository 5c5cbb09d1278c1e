"""Send stored instances to a DICOMweb peer with STOW-RS (the ``dicomweb_peers`` setting: name → base URL), one
request per instance so that each gets its own result, as ``manage.send`` gives for a DIMSE peer.

A result's status is the peer's: 0x0000 when the instance is in its ReferencedSOPSequence, the Failure Reason
(0008,1197) of its FailedSOPSequence item, or None with the HTTP status and text when the answer names neither.
A peer that cannot be reached ends the send (BackendError, the URL's password masked).

Example
-------
>>> result_of("1.2.3", 200, {"00081199": {"vr": "SQ", "Value": [{"00081155": {"vr": "UI", "Value": ["1.2.3"]}}]}},
...           "").status
0
>>> result_of("1.2.3", 409, {"00081198": {"vr": "SQ", "Value": [{"00081155": {"vr": "UI", "Value": ["1.2.3"]},
...           "00081197": {"vr": "US", "Value": [49152]}}]}}, "").status == 0xC000
True
>>> r = result_of("1.2.3", 401, {}, "no key"); r.status, r.sent_as
(None, 'STOW-RS answered HTTP 401: no key')
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from cubepacs._registry import mask_url
from cubepacs.archive.dimse.scu import SendResult
from cubepacs.errors import BackendError, ConfigError

SENT_AS = "STOW-RS, as stored"


def _items(doc: Any, tag: str) -> list[dict[str, Any]]:
    value = doc.get(tag, {}).get("Value", []) if isinstance(doc, dict) else []
    return [v for v in value if isinstance(v, dict)]


def _sop(item: dict[str, Any]) -> str:
    value = item.get("00081155", {}).get("Value", [""])
    return str(value[0]) if value else ""


def result_of(sop: str, status: int, doc: Any, text: str) -> SendResult:
    """The result of one instance's STOW-RS request from the peer's answer (HTTP status, JSON body, text)."""
    for item in _items(doc, "00081199"):
        if _sop(item) == sop:
            warning = item.get("00081196", {}).get("Value", [])
            return SendResult(sop, int(warning[0]) if warning else 0, SENT_AS)
    for item in _items(doc, "00081198"):
        if _sop(item) == sop:
            reason = item.get("00081197", {}).get("Value", [0x0110])
            return SendResult(sop, int(reason[0]) if reason else 0x0110, SENT_AS)
    return SendResult(sop, None, f"STOW-RS answered HTTP {status}: {text.strip()[:200]}")


def peer_url(peers: dict[str, str], name: str) -> str:
    """The base URL of a configured DICOMweb peer (ConfigError naming the known ones otherwise).

    Example
    -------
    >>> peer_url({"PACS": "https://pacs.example.org/dicom-web/"}, "PACS")
    'https://pacs.example.org/dicom-web'
    >>> peer_url({"PACS": "ftp://x"}, "PACS")
    Traceback (most recent call last):
    ...
    cubepacs.errors.ConfigError: dicomweb_peers['PACS'] = 'ftp://x' is not an http(s) URL
    """
    url = peers.get(name)
    if url is None:
        raise ConfigError(f"unknown DICOMweb peer {name!r}: add it to dicomweb_peers "
                          f"(configured: {', '.join(sorted(peers)) or 'none'})")
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"dicomweb_peers[{name!r}] = {mask_url(url)!r} is not an http(s) URL")
    return url.rstrip("/")


def send_stow(get: Any, rows: list[dict[str, Any]], url: str, timeout: float = 120) -> Iterator[SendResult]:
    """STOW-RS each instance row (its bytes from ``get(storage_key)``) to ``url``/studies; a result per instance
    as it is answered. User name and password in the URL are sent as HTTP Basic."""
    import httpx

    from cubepacs.archive.web.multipart import encode

    parsed = httpx.URL(url)
    auth = (parsed.username, parsed.password) if parsed.username else None
    target = str(parsed.copy_with(username=None, password=None)) + "/studies"
    with httpx.Client(timeout=timeout, auth=auth) as client:
        for row in rows:
            body, ctype = encode([get(row["storage_key"])], "application/dicom")
            try:
                answer = client.post(target, content=body,
                                     headers={"Content-Type": ctype, "Accept": "application/dicom+json"})
            except httpx.HTTPError as exc:
                raise BackendError(f"DICOMweb peer {mask_url(url)}: {type(exc).__name__}: {exc}") from None
            try:
                doc = answer.json()
            except ValueError:
                doc = {}
            yield result_of(row["sop_uid"], answer.status_code, doc, answer.text if not doc else "")
