"""cubepacs: DICOM series cubes, a PACS archive and a lake reader.

The cube API keeps dicube's names, so a dicube script runs with only the package name changed.

Example
-------
>>> import cubepacs
>>> image = cubepacs.load_from_dicom_folder("../shared/data/series/ct_philips_ingenuity_tilt_54sl")
>>> image.raw_image.shape
(54, 512, 512)
"""

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
from cubepacs.errors import CubepacsError, DicomReadError, InvalidCubeError, SeriesError

__version__ = "0.1.0"

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
