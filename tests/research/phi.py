"""Synthetic PHI injected into copies of the real files of ../shared/data, and a checker that is not the exporter.

Every file pydicom can read gets, at the top level, in sequence items (one and three levels deep), in private
blocks (top level and nested) and in free-text attributes: names, IDs, dates, addresses, device serials and UIDs
made up here (:data:`NEEDLES`), unlike anything in the real files. The checker searches the raw bytes of every
output for every needle and every original UID; it knows nothing of the exporter's code.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom._uid_dict import UID_dictionary
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from tests.conftest import DATA

# made-up identifying values: each must be gone from every output
PATIENT = "Qwertzuiop^Xylophania"
NEEDLES = {
    "PatientBirthDate": "19330917", "PatientAddress": "1313 Mockingbird Lane, Pottsville",
    "OtherPatientIDs": "OPID-7738291", "AccessionNumber": "ACCN-5512397", "StudyID": "SID88231",
    "ReferringPhysicianName": "Drzewiecka^Honorata", "PerformingPhysicianName": "Wojciechowski^Brunhilde",
    "OperatorsName": "Operatorsky^Ignatius", "InstitutionName": "Saint Phineas Memorial Hospital",
    "InstitutionAddress": "42 Wallaby Way, Sydney", "StationName": "PHISTATION77",
    "DeviceSerialNumber": "SN-PHI-90210-XQ", "StudyDescription": "Thorax for Xylophania follow-up",
    "ImageComments": "called Mrs Qwertzuiop on 0417 555 0199", "PatientComments": "lives with Zebediah Qwertzuiop",
    "AdditionalPatientHistory": "history told by Zebediah", "MedicalRecordLocator": "MRL-3345-ZZ",
    "PatientTelephoneNumbers": "+44 20 7946 0958", "PatientMotherBirthName": "Grimsdottir^Helga",
    "StudyDate": "20230417", "SeriesDate": "20230418", "AcquisitionDateTime": "20230417101530",
}
NESTED = {  # in ContributingEquipmentSequence (kept by the profile: walked)
    "InstitutionName": "Nested Phineas Clinic", "InstitutionAddress": "7 Nested Close, Leeds",
    "InstitutionalDepartmentName": "Dept of Nestedology", "StationName": "NESTSTATION5",
    "DeviceSerialNumber": "NESTSERIAL-4411", "OperatorsName": "Nestorius^Operata",
}
DEEP_CODE = "PCODE-778899XQ"  # three levels down: equipment → operator identification → person code
PRIVATE_TEXT = "PRIVATE-PHI-31337 Qwertzuiop"
NESTED_PRIVATE_TEXT = "NESTED-PRIVATE-PHI-4242"
RAW_DATE_TIME = "20230416083000"  # RadiopharmaceuticalStartDateTime, nested
CONTRIBUTION = "20230415120000"
PPS_UID = "1.2.826.0.1.3680043.10.543.777001"  # in Referenced Performed Procedure Step Sequence
OTHER_ID = "OPID-5550001"  # a second value of the multi-valued Other Patient IDs
RETRIEVE_URL = "https://pacs.phineas-hospital.example/wado"  # RetrieveURL: top level and in a reference's item
FILE_META = {"SourceApplicationEntityTitle": "PHISRCAE77", "SendingApplicationEntityTitle": "PHISENDAE77",
             "ReceivingApplicationEntityTitle": "PHIRECVAE77",
             "SourcePresentationAddress": "http://modality.phineas-hospital.example"}


def needles() -> list[str]:
    """Every injected value (and the parts of the patient's name) that must not be found in any output."""
    values = [PATIENT, "Qwertzuiop", "Xylophania", DEEP_CODE, PRIVATE_TEXT, NESTED_PRIVATE_TEXT, RAW_DATE_TIME,
              CONTRIBUTION, PPS_UID, OTHER_ID, RETRIEVE_URL, *FILE_META.values(), *NEEDLES.values(),
              *NESTED.values()]
    return sorted(set(values))


def readable_files() -> list[Path]:
    """Every file of ../shared/data that pydicom reads as a Part 10 file with study, series and SOP UIDs."""
    out = []
    for path in sorted(DATA.rglob("*")):
        if not path.is_file() or path.suffix in (".md", ".txt") or path.name == "DIRFILE":
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = pydicom.dcmread(path, stop_before_pixels=True)
            if all(ds.get(k) for k in ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")) and \
                    ds.file_meta.get("MediaStorageSOPClassUID"):  # what an archive can hold
                out.append(path)
        except Exception:
            continue
    return out


def uids_in(ds: Dataset) -> Iterator[str]:
    """Every non-standard UID value at any depth (public and private attributes)."""
    for elem in ds.iterall():
        if elem.VR == "UI" and elem.value:
            for raw in (elem.value if isinstance(elem.value, list | pydicom.multival.MultiValue) else [elem.value]):
                v = str(raw).strip("\0 ")
                if v and v not in UID_dictionary and not v.startswith("1.2.840.10008."):
                    yield v


def _code(value: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, "99PHI", "made up"
    return item


@dataclass
class Injected:
    """One injected copy: where it is, the SOP it references, its patient."""

    path: Path
    sop: str
    referenced: str | None
    patient_id: str
    patient_name: str
    source: Path


def inject(ds: Dataset, group_index: int, referenced: str | None, empty_id: bool) -> None:
    """Put the synthetic PHI into ``ds`` (in place)."""
    for keyword, value in NEEDLES.items():
        setattr(ds, keyword, value)
    ds.OtherPatientIDs = [NEEDLES["OtherPatientIDs"], OTHER_ID]
    ds.RetrieveURL = RETRIEVE_URL
    for keyword, value in FILE_META.items():  # who sent it, from where: in the file meta
        setattr(ds.file_meta, keyword, value)
    ds.PatientName = f"{PATIENT}{group_index:03d}" if empty_id else PATIENT
    ds.PatientID = "" if empty_id else f"PHI-ID-{group_index:05d}"
    equipment = Dataset()
    for keyword, value in NESTED.items():
        setattr(equipment, keyword, value)
    equipment.ContributionDateTime = CONTRIBUTION
    person = Dataset()
    person.PersonIdentificationCodeSequence = Sequence([_code(DEEP_CODE)])
    person.PersonName = "Deepest^Person"
    equipment.OperatorIdentificationSequence = Sequence([person])
    equipment.private_block(0x0043, "PHI INJECTOR", create=True).add_new(0x10, "LO", NESTED_PRIVATE_TEXT)
    ds.ContributingEquipmentSequence = Sequence([equipment])
    ds.private_block(0x0041, "PHI INJECTOR", create=True).add_new(0x10, "LT", PRIVATE_TEXT)
    radio = Dataset()
    radio.RadiopharmaceuticalStartDateTime = RAW_DATE_TIME
    radio.Radiopharmaceutical = "made-up tracer"
    ds.RadiopharmaceuticalInformationSequence = Sequence([radio])
    pps = Dataset()
    pps.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.3"
    pps.ReferencedSOPInstanceUID = PPS_UID
    ds.ReferencedPerformedProcedureStepSequence = Sequence([pps])
    if referenced:
        ref = Dataset()
        ref.ReferencedSOPClassUID = ds.SOPClassUID
        ref.ReferencedSOPInstanceUID = referenced
        ref.RetrieveURL = RETRIEVE_URL  # a kept sequence: its items are walked, the URL must go
        ds.ReferencedImageSequence = Sequence([ref])
    elif "ReferencedImageSequence" in ds:  # references to instances not in the data set: followed nowhere
        del ds.ReferencedImageSequence
    frames = ds.get("PerFrameFunctionalGroupsSequence")
    if frames and frames[0].get("FrameContentSequence"):
        frames[0].FrameContentSequence[0].FrameAcquisitionDateTime = NEEDLES["AcquisitionDateTime"]


def make_copies(folder: Path) -> list[Injected]:
    """Injected copies of every readable file of ../shared/data in ``folder``; each references the next of its
    folder (so a reference to an exported instance can be followed); every third folder's patient has no ID."""
    files = readable_files()
    by_folder: dict[Path, list[Path]] = {}
    for f in files:
        by_folder.setdefault(f.parent if f.parent.parent.name == "series" else f, []).append(f)
    out: list[Injected] = []
    for g, (_, group) in enumerate(sorted(by_folder.items())):
        sops = [str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in group]
        for k, f in enumerate(group):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds = pydicom.dcmread(f)
                referenced = sops[k + 1] if k + 1 < len(group) else None
                inject(ds, g, referenced, empty_id=g % 3 == 0)
                target = folder / f"{g:03d}-{k:04d}.dcm"
                buf = io.BytesIO()
                ds.save_as(buf)
                back = pydicom.dcmread(io.BytesIO(buf.getvalue()), stop_before_pixels=True)
            if "StudyInstanceUID" not in back:  # a malformed input pydicom cannot write back whole: not a copy
                continue
            target.write_bytes(buf.getvalue())
            out.append(Injected(target, sops[k], referenced, str(ds.PatientID), str(ds.PatientName), f))
    return out
