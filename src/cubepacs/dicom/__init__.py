"""DICOM helpers shared by the cube, the archive and the lake: tag names, raw element splitting, values.

Example
-------
>>> from cubepacs.dicom import CommonTags
>>> CommonTags.PatientName == 0x00100010
True
"""

from cubepacs.dicom.tags import CommonTags

__all__ = ["CommonTags"]
