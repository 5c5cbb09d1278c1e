"""Decode encoded elements (as kept by :mod:`cubepacs.dicom.rawfile`) into pydicom and DICOM JSON values.

Example
-------
>>> ds = parse_elements([b"\\x20\\x00\\x13\\x00IS\\x02\\x007 "], implicit=False, little_endian=True)
>>> json_value(ds[0x00200013])
7
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from io import BytesIO
from typing import Any

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset


def parse_elements(encoded: Sequence[bytes], implicit: bool, little_endian: bool) -> Dataset:
    """Parse encoded top-level elements (in any order) into a pydicom Dataset (values decoded lazily)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return read_dataset(BytesIO(b"".join(encoded)), implicit, little_endian)


def json_value(elem: DataElement) -> Any:
    """The element's value in the DICOM JSON model (PS3.18 F), a single value unwrapped from its list.

    Person names become ``{"Alphabetic": …}``, numbers become int/float, sequences lists of JSON datasets,
    binary values base64 strings; an empty element gives ``None``.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            d = elem.to_json_dict(None, 1 << 62)
        except Exception:  # an invalid value (e.g. IS "1A"): fall back to its text
            return None if elem.value in (None, "") else str(elem.value)
    value = d.get("Value")
    if value is None:
        return d.get("InlineBinary")
    return value[0] if len(value) == 1 else value
