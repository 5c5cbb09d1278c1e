"""Tags people ask for by name, as in dicube's ``CommonTags`` (same attribute names, pydicom ``Tag`` values).

Example
-------
>>> from cubepacs.dicom import CommonTags
>>> hex(CommonTags.InstanceNumber)
'0x200013'
"""

from __future__ import annotations

from pydicom.tag import BaseTag, Tag

_NAMES = (
    "PatientID PatientName PatientBirthDate PatientSex PatientAge PatientWeight "
    "StudyInstanceUID StudyID StudyDate StudyTime AccessionNumber StudyDescription "
    "SeriesInstanceUID SeriesNumber Modality SeriesDescription SeriesDate SeriesTime "
    "SOPInstanceUID SOPClassUID InstanceNumber AcquisitionNumber AcquisitionTime AcquisitionDate ContentTime "
    "Rows Columns BitsAllocated BitsStored HighBit SamplesPerPixel PhotometricInterpretation "
    "PixelRepresentation PlanarConfiguration NumberOfFrames "
    "ImagePositionPatient ImageOrientationPatient PixelSpacing SliceThickness SpacingBetweenSlices "
    "SliceLocation RescaleIntercept RescaleSlope RescaleType WindowCenter WindowWidth PatientPosition "
    "BodyPartExamined PixelData DimensionIndexSequence FrameContentSequence ImplementationClassUID "
    "TransferSyntaxUID MediaStorageSOPClassUID MediaStorageSOPInstanceUID SpecificCharacterSet "
    "Manufacturer ManufacturerModelName SoftwareVersions FrameOfReferenceUID ReferencedImageSequence "
    "ReferencedSOPInstanceUID ContrastBolusAgent EchoTime RepetitionTime TemporalPositionIdentifier"
).split()


class CommonTags:
    """Frequently used DICOM tags, by keyword (``CommonTags.PatientName`` is ``Tag(0x0010, 0x0010)``)."""

    PatientID: BaseTag
    PatientName: BaseTag
    PatientBirthDate: BaseTag
    PatientSex: BaseTag
    PatientAge: BaseTag
    PatientWeight: BaseTag
    StudyInstanceUID: BaseTag
    StudyID: BaseTag
    StudyDate: BaseTag
    StudyTime: BaseTag
    AccessionNumber: BaseTag
    StudyDescription: BaseTag
    SeriesInstanceUID: BaseTag
    SeriesNumber: BaseTag
    Modality: BaseTag
    SeriesDescription: BaseTag
    SeriesDate: BaseTag
    SeriesTime: BaseTag
    SOPInstanceUID: BaseTag
    SOPClassUID: BaseTag
    InstanceNumber: BaseTag
    AcquisitionNumber: BaseTag
    AcquisitionTime: BaseTag
    AcquisitionDate: BaseTag
    ContentTime: BaseTag
    Rows: BaseTag
    Columns: BaseTag
    BitsAllocated: BaseTag
    BitsStored: BaseTag
    HighBit: BaseTag
    SamplesPerPixel: BaseTag
    PhotometricInterpretation: BaseTag
    PixelRepresentation: BaseTag
    PlanarConfiguration: BaseTag
    NumberOfFrames: BaseTag
    ImagePositionPatient: BaseTag
    ImageOrientationPatient: BaseTag
    PixelSpacing: BaseTag
    SliceThickness: BaseTag
    SpacingBetweenSlices: BaseTag
    SliceLocation: BaseTag
    RescaleIntercept: BaseTag
    RescaleSlope: BaseTag
    RescaleType: BaseTag
    WindowCenter: BaseTag
    WindowWidth: BaseTag
    PatientPosition: BaseTag
    BodyPartExamined: BaseTag
    PixelData: BaseTag
    DimensionIndexSequence: BaseTag
    FrameContentSequence: BaseTag
    ImplementationClassUID: BaseTag
    TransferSyntaxUID: BaseTag
    MediaStorageSOPClassUID: BaseTag
    MediaStorageSOPInstanceUID: BaseTag
    SpecificCharacterSet: BaseTag
    Manufacturer: BaseTag
    ManufacturerModelName: BaseTag
    SoftwareVersions: BaseTag
    FrameOfReferenceUID: BaseTag
    ReferencedImageSequence: BaseTag
    ReferencedSOPInstanceUID: BaseTag
    ContrastBolusAgent: BaseTag
    EchoTime: BaseTag
    RepetitionTime: BaseTag
    TemporalPositionIdentifier: BaseTag


for _name in _NAMES:
    setattr(CommonTags, _name, Tag(_name))
