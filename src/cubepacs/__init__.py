"""cubepacs: DICOM series cubes, a PACS archive and a lake reader.

The cube API keeps dicube's names, so a dicube script runs with only the package name changed.

Example
-------
>>> import cubepacs
>>> image = cubepacs.load_from_dicom_folder("../shared/data/series/ct_philips_ingenuity_tilt_54sl")
>>> image.raw_image.shape
(54, 512, 512)
"""

import importlib
from typing import TYPE_CHECKING, Any

from cubepacs.errors import CubepacsError, DicomReadError, InvalidCubeError, SeriesError

if TYPE_CHECKING:
    from cubepacs.cube.api import (
        SortMethod,
        load,
        load_from_dicom_folder,
        load_meta,
        load_series,
        save,
        save_to_dicom_folder,
        verify,
    )
    from cubepacs.cube.image import DicomCubeImage
    from cubepacs.cube.meta import DicomMeta
    from cubepacs.dicom.tags import CommonTags

__version__ = "0.1.0"

# Imported when first used (PEP 562): the cube API loads numpy, pydicom and the codecs (≈ 0.4 s of CPU), which a
# process that only needs the archive's or the lake's modules (a log writer run, a CLI --help) does not need.
_LAZY = {
    **dict.fromkeys(("SortMethod", "load", "load_from_dicom_folder", "load_meta", "load_series", "save",
                     "save_to_dicom_folder", "verify"), "cubepacs.cube.api"),
    "DicomCubeImage": "cubepacs.cube.image",
    "DicomMeta": "cubepacs.cube.meta",
    "CommonTags": "cubepacs.dicom.tags",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'cubepacs' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__all__ = [
    "CommonTags",
    "CubepacsError",
    "DicomCubeImage",
    "DicomMeta",
    "DicomReadError",
    "InvalidCubeError",
    "SeriesError",
    "SortMethod",
    "load",
    "load_from_dicom_folder",
    "load_meta",
    "load_series",
    "save",
    "save_to_dicom_folder",
    "verify",
]
