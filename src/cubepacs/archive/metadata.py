"""DICOM JSON metadata of stored instances for WADO-RS ``/metadata`` (bulk values as BulkDataURIs).

Example
-------
>>> from pathlib import Path
>>> doc = instance_metadata(Path("../shared/data/single/ct_ge_small_signed.dcm").read_bytes(), "/base")
>>> doc["00080060"]["Value"], doc["7FE00010"]["BulkDataURI"]
(['CT'], '/base/frames/1')
"""

from __future__ import annotations

import warnings
from io import BytesIO
from typing import Any

import pydicom

from cubepacs.dicom.dicomjson import dataset_to_json
from cubepacs.dicom.rawfile import split_file


def _fix_uris(node: Any, base: str) -> Any:
    if isinstance(node, dict):
        uri = node.get("BulkDataURI")
        if isinstance(uri, str) and uri.startswith("bulk:"):
            node["BulkDataURI"] = f"{base}/bulkdata/{uri[5:]}"
        for v in node.values():
            _fix_uris(v, base)
    elif isinstance(node, list):
        for v in node:
            _fix_uris(v, base)
    return node


def instance_metadata(data: bytes, base: str, bulk_threshold: int = 1024) -> dict[str, Any]:
    """The instance's DICOM JSON (no file meta); Pixel Data points at ``{base}/frames/1``."""
    raw = split_file(data)
    pixel_vr = raw.pixel_vr or "OW"
    try:
        if raw.deflated_body is not None:
            raise ValueError("deflated")
        body = b"".join(c.data for c in raw.chunks if c.key >= 0 and c.key >> 16 != 2)
        doc, _, _, _ = dataset_to_json(body, raw.implicit, raw.little_endian, bulk_threshold, stop_at_pixels=True)
    except Exception:  # unusual character sets, deflated data: pydicom's general path
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(BytesIO(data), force=True, stop_before_pixels=True)
            doc = ds.to_json_dict(bulk_threshold, lambda e: f"bulk:{e.tag:08X}")
    # the top-level Pixel Data tag, as the split found it (inside a deflated dataset: assumed Pixel Data)
    pixel = raw.pixel_tag if raw.deflated_body is None else 0x7FE00010
    if pixel is not None:
        doc[f"{pixel:08X}"] = {"vr": pixel_vr, "BulkDataURI": f"{base}/frames/1"}
    _fix_uris(doc, base)
    return doc


def bulk_value(data: bytes, path: str) -> bytes:
    """The value bytes of the element at a bulk path (``TAG`` or ``SEQ/ITEM/TAG/…``) of an encoded instance.

    Raises KeyError when the path names no element.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds: Any = pydicom.dcmread(BytesIO(data), force=True)
    parts = path.strip("/").split("/")
    try:
        for k in range(0, len(parts) - 1, 2):
            ds = ds[int(parts[k], 16)].value[int(parts[k + 1])]
        value = ds[int(parts[-1], 16)].value
    except (ValueError, IndexError, KeyError) as exc:
        raise KeyError(path) from exc
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    raise KeyError(path)
