"""Typed per-instance columns (ImagePositionPatient as float (n, 3), InstanceNumber as int …).

Example
-------
>>> COLUMNS["ImagePositionPatient"]
(2097202, 'f8', 3)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from cubepacs.cube.sources import Instance

INT_MISSING = np.iinfo(np.int64).min

# name: (tag, dtype, values per instance)
COLUMNS: dict[str, tuple[int, str, int]] = {
    "InstanceNumber": (0x00200013, "i8", 1),
    "AcquisitionNumber": (0x00200012, "i8", 1),
    "ImagePositionPatient": (0x00200032, "f8", 3),
    "ImageOrientationPatient": (0x00200037, "f8", 6),
    "PixelSpacing": (0x00280030, "f8", 2),
    "SliceLocation": (0x00201041, "f8", 1),
    "SliceThickness": (0x00180050, "f8", 1),
    "RescaleSlope": (0x00281053, "f8", 1),
    "RescaleIntercept": (0x00281052, "f8", 1),
}


def column_values(instances: Sequence[Instance], name: str) -> np.ndarray:
    """One typed column from instance attributes; missing values are NaN (floats) or INT_MISSING (ints)."""
    _, dtype, width = COLUMNS[name]
    missing: Any = INT_MISSING if dtype == "i8" else np.nan
    out = np.full((len(instances), width), missing, dtype=dtype)
    for i, inst in enumerate(instances):
        value = inst.attrs.get(name)
        if value is None or value == "":
            continue
        values = value if isinstance(value, list) else [value]
        if len(values) != width:
            continue
        try:
            out[i] = [int(v) if dtype == "i8" else float(v) for v in values]
        except (TypeError, ValueError):
            continue
    return out[:, 0] if width == 1 else out


