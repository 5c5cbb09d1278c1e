"""Every tag of a stored instance as a tree for the admin UI: sequences as lists of items, private tags named by
their creator (pydicom's private dictionaries), long values shortened, pixel data as its size.

Example
-------
>>> from pydicom.dataset import Dataset
>>> ds = Dataset(); ds.PatientName = "DOE^J"
>>> ds.private_block(0x0009, "ACME", create=True).add_new(0x01, "LO", "y")
>>> [(e["tag"], e["name"], e["value"]) for e in elements_of(ds)]  # doctest: +NORMALIZE_WHITESPACE
[('(0009,0010)', 'Private Creator', 'ACME'), ('(0009,1001)', '[ACME] Private tag data', 'y'),
 ('(0010,0010)', "Patient's Name", 'DOE^J')]
"""

from __future__ import annotations

import io
from typing import Any

MAX_TEXT = 300  # characters of a value shown


def _value(elem: Any) -> str:
    if elem.tag in (0x7FE00010, 0x7FE00008, 0x7FE00009) or elem.VR in ("OB", "OW", "OF", "OD", "OL", "OV", "UN"):
        size = len(elem.value) if isinstance(elem.value, bytes | bytearray) else 0
        return f"({size} bytes)"
    text = str(elem.value) if elem.VM <= 1 else "\\".join(str(v) for v in elem.value)
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + f"… ({len(text)} characters)"


def elements_of(ds: Any) -> list[dict[str, Any]]:
    """The elements of a data set (recursively), each ``{tag, vr, name, value, children}`` (``children``: a
    sequence's items, each a list of elements)."""
    out = []
    for elem in ds:
        name = elem.name
        creator = getattr(elem, "private_creator", None)
        if elem.tag.is_private and creator and elem.tag.element >= 0x1000:
            name = name if name.startswith("[") and creator in name else f"[{creator}] {name}"
        items = [elements_of(item) for item in elem.value] if elem.VR == "SQ" else None
        out.append({"tag": f"({elem.tag.group:04X},{elem.tag.element:04X})", "vr": elem.VR, "name": name,
                    "value": "" if items is not None else _value(elem), "children": items})
    return out


def tag_tree(data: bytes) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(file meta elements, data set elements) of a stored file."""
    import pydicom

    ds = pydicom.dcmread(io.BytesIO(data), force=True)
    return elements_of(ds.file_meta) if ds.file_meta else [], elements_of(ds)
