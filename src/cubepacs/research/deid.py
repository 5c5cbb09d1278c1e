"""De-identification following DICOM PS3.15 Annex E: the Basic Application Level Confidentiality Profile and its
options, on top of the profile's own table as `dicom-anonymizer` (Kitware) ships it.

Why that library: it carries Table E.1-1 of the standard (the 2026c edition) as tag lists per action (D, Z, X,
U, Z/D, X/Z, X/D, X/Z/D, X/Z/U*), with the actions themselves, so no tag table is written by hand here. What it does
not carry — the option columns — is applied here in the small sets below, by keyword:

* Retain UIDs: U actions keep the UIDs. Otherwise UIDs are replaced by ``2.25.<HMAC-SHA256(secret, uid)>``:
  the same input gives the same output UID in every export with the same project secret (linkable), and nothing
  else can recompute it.
* Retain Longitudinal Temporal Information with Modified Dates: dates (DA, and the date of DT) are shifted by a
  per-patient number of days derived from the secret and the Patient ID; times are kept.
* Retain Patient Characteristics, Retain Device Identity: the attributes listed below are kept.
* Clean Descriptors: the descriptors listed below are kept, with any word that is part of the patient's name or
  identifiers removed.
* Private attributes are removed, except (creator, element) pairs of a safe list.

Pixel data is never touched (its bytes stay identical). Patient Identity Removed, De-identification Method and
its Code Sequence (CID 7050) are set. Burned-in annotation is flagged, not passed silently: Burned In Annotation
other than NO, or a modality/SOP class known to carry text in pixels (US, SC, XC, ES, OT, secondary capture).

Example
-------
>>> new_uid("1.2.3", b"project-secret") == new_uid("1.2.3", b"project-secret") != new_uid("1.2.3", b"other")
True
>>> new_uid("1.2.3", b"project-secret").startswith("2.25.")
True
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
import warnings
from dataclasses import dataclass, field
from io import BytesIO
from typing import Any

import pydicom
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

# Table E.1-1 option columns (kept by keyword; everything else comes from the profile's table)
PATIENT_CHARACTERISTICS = ("PatientAge", "PatientSex", "PatientSize", "PatientWeight", "EthnicGroup",
                           "SmokingStatus", "PregnancyStatus", "PatientSexNeutered", "SpecialNeeds",
                           "AllergiesListingSequence")
DEVICE_IDENTITY = ("StationName", "DeviceSerialNumber", "DeviceUID", "DeviceLabel", "DeviceDescription",
                   "GantryID", "DetectorID", "PlateID", "CassetteID", "GeneratorID", "SourceSerialNumber",
                   "InstitutionalDepartmentName", "PerformedStationName", "ScheduledStationName")
DESCRIPTORS = ("StudyDescription", "SeriesDescription", "ProtocolName", "ImageComments", "AcquisitionComments",
               "PerformedProcedureStepDescription", "RequestedProcedureDescription", "BodyPartExamined",
               "ContrastBolusAgent", "DerivationDescription")
BURNED_IN_MODALITIES = ("US", "SC", "XC", "ES", "OT", "GM", "SM")
SECONDARY_CAPTURE_PREFIX = "1.2.840.10008.5.1.4.1.1.7"

# CID 7050 De-identification Method codes (DCM)
CODES = {"basic": ("113100", "Basic Application Confidentiality Profile"),
         "retain_uids": ("113110", "Retain UIDs Option"),
         "retain_dates": ("113107", "Retain Longitudinal Temporal Information Modified Dates Option"),
         "retain_patient": ("113108", "Retain Patient Characteristics Option"),
         "retain_device": ("113109", "Retain Device Identity Option"),
         "clean_descriptors": ("113105", "Clean Descriptors Option"),
         "safe_private": ("113111", "Retain Safe Private Option")}


@dataclass(frozen=True)
class Options:
    """The profile options; ``secret`` keys the deterministic UIDs and date shifts of a project."""

    secret: bytes
    retain_uids: bool = False
    retain_dates: bool = False
    retain_patient: bool = False
    retain_device: bool = False
    clean_descriptors: bool = False
    safe_private: tuple[tuple[str, int], ...] = ()  # (private creator, element offset 0x00-0xFF) kept

    def codes(self) -> list[tuple[str, str]]:
        """The CID 7050 codes of the profile and the options applied."""
        on = ["basic"] + [k for k in CODES if k != "basic" and (getattr(self, k, False) or
                                                                (k == "safe_private" and self.safe_private))]
        return [CODES[k] for k in on]


@dataclass
class Result:
    """One de-identified instance: its bytes, the UID mapping it used, and what to look at by hand."""

    data: bytes
    uids: dict[str, str] = field(default_factory=dict)  # original → new (for the access-controlled mapping)
    burned_in: str | None = None  # why the pixels may carry identifying text, when they may


def new_uid(uid: str, secret: bytes) -> str:
    """The replacement of a UID: ``2.25.`` and the first 128 bits of HMAC-SHA256(secret, uid) as an integer."""
    digest = hmac.new(secret, uid.encode(), hashlib.sha256).digest()
    return "2.25." + str(int.from_bytes(digest[:16], "big"))


def pseudonym_of(patient_id: str, secret: bytes) -> str:
    """The Patient ID (and Name) of a patient in the exports of one project: ``P`` and 16 hex digits of an HMAC."""
    return "P" + hmac.new(secret, b"patient\0" + patient_id.encode(), hashlib.sha256).hexdigest()[:16].upper()


def day_shift(patient_id: str, secret: bytes) -> int:
    """Days the dates of one patient are moved back (1 to 3650), the same in every export of the project."""
    digest = hmac.new(secret, b"date-shift\0" + patient_id.encode(), hashlib.sha256).digest()
    return 1 + int.from_bytes(digest[:4], "big") % 3650


def _shift(value: str, days: int) -> str:
    try:
        return (dt.datetime.strptime(value[:8], "%Y%m%d") - dt.timedelta(days=days)).strftime("%Y%m%d") + value[8:]
    except ValueError:
        return ""


def _rules(options: Options, mapping: dict[str, str], days: int) -> dict[Any, Any]:
    """dicom-anonymizer's actions for the profile, with the options and our UID and date actions."""
    from dicomanonymizer import simpledicomanonymizer as sda
    from pydicom.datadict import dictionary_VR, tag_for_keyword

    rules: dict[Any, Any] = sda.initialize_actions("dicomfields_2026c")

    def replace_uid(dataset: Dataset, tag: Any) -> None:
        element = dataset.get(tag)
        if element is None or element.VR != "UI" or not element.value:
            return
        values = element.value if isinstance(element.value, list | pydicom.multival.MultiValue) else [element.value]
        out = []
        for v in values:
            mapping.setdefault(str(v), new_uid(str(v), options.secret))
            out.append(mapping[str(v)])
        element.value = out if len(out) > 1 else out[0]

    def shift_date(dataset: Dataset, tag: Any) -> None:
        element = dataset.get(tag)
        if element is not None and element.VR in ("DA", "DT") and element.value:
            values = element.value if isinstance(element.value, pydicom.multival.MultiValue) else [element.value]
            shifted = [_shift(str(v), days) for v in values]
            element.value = shifted if len(shifted) > 1 else shifted[0]

    def keep(dataset: Dataset, tag: Any) -> None:
        return None

    for tag, action in list(rules.items()):
        if len(tag) != 2:
            continue
        name = getattr(action, "__name__", "")
        if "UID" in name or name == "replace_UID":
            rules[tag] = keep if options.retain_uids else replace_uid
            continue
        if options.retain_dates:
            try:
                vr = str(dictionary_VR((tag[0] << 16) | tag[1]))
            except KeyError:
                vr = ""
            if vr in ("DA", "DT"):
                rules[tag] = shift_date
            elif vr == "TM":
                rules[tag] = keep
    kept = (PATIENT_CHARACTERISTICS if options.retain_patient else ()) + \
           (DEVICE_IDENTITY if options.retain_device else ()) + (DESCRIPTORS if options.clean_descriptors else ())
    for keyword in kept:
        t = tag_for_keyword(keyword)
        if t is not None:
            rules[(t >> 16, t & 0xFFFF)] = keep
    return rules


def _clean(text: str, identifiers: list[str]) -> str:
    out = text
    for word in identifiers:
        if len(word) >= 2:
            out = re.sub(re.escape(word), "", out, flags=re.IGNORECASE)
    return re.sub(r"\s{2,}", " ", out).strip()


def _burned_in(ds: Dataset) -> str | None:
    flag = str(ds.get("BurnedInAnnotation", "") or "").upper()
    if flag and flag != "NO":
        return f"Burned In Annotation is {flag}"
    modality = str(ds.get("Modality", "") or "")
    if modality in BURNED_IN_MODALITIES:
        return f"modality {modality} often carries text in its pixels"
    if str(ds.get("SOPClassUID", "")).startswith(SECONDARY_CAPTURE_PREFIX):
        return "secondary capture"
    if not flag and "PixelData" in ds and ds.get("ImageType") and "SECONDARY" in list(ds.ImageType):
        return "secondary image without Burned In Annotation"
    return None


def deidentify(data: bytes, options: Options) -> Result:
    """De-identify one Part 10 instance; its pixel data bytes are kept as they are."""
    from dicomanonymizer import simpledicomanonymizer as sda

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(BytesIO(data))
        patient_id = str(ds.get("PatientID", "") or "")
        identifiers = [p for p in re.split(r"[\s^=,]+", str(ds.get("PatientName", "") or "")) if p] + \
            [patient_id, str(ds.get("OtherPatientIDs", "") or ""), str(ds.get("AccessionNumber", "") or "")]
        descriptors = {k: str(ds.get(k)) for k in DESCRIPTORS if ds.get(k)} if options.clean_descriptors else {}
        mapping: dict[str, str] = {}
        rules = _rules(options, mapping, day_shift(patient_id, options.secret))
        safe = {(c, e) for c, e in options.safe_private}
        kept_private: list[tuple[int, str, int, Any]] = []
        for elem in ds:
            if elem.tag.is_private and not elem.tag.is_private_creator and safe:
                owner = ds.get((elem.tag.group, elem.tag.element >> 8))
                if owner is not None and (str(owner.value), elem.tag.element & 0xFF) in safe:
                    kept_private.append((elem.tag.group, str(owner.value), elem.tag.element & 0xFF, elem))
        burned = _burned_in(ds)
        sda.anonymize_dataset(ds, rules, delete_private_tags=True, base_rules_gen=lambda: {})
        for group, creator, offset, elem in kept_private:
            ds.private_block(group, creator, create=True).add_new(offset, elem.VR, elem.value)
        for keyword, text in descriptors.items():
            setattr(ds, keyword, _clean(text, identifiers))
        pseudonym = pseudonym_of(patient_id, options.secret)  # the same patient, the same pseudonym: linkable
        ds.PatientID = ds.PatientName = pseudonym
        ds.PatientIdentityRemoved = "YES"
        ds.DeidentificationMethod = "cubepacs: PS3.15 E.1 Basic Profile" + "".join(
            f"; {name}" for _, name in options.codes()[1:])
        items = []
        for value, meaning in options.codes():
            item = Dataset()
            item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, "DCM", meaning
            items.append(item)
        ds.DeidentificationMethodCodeSequence = Sequence(items)
        if burned:
            ds.BurnedInAnnotation = ds.get("BurnedInAnnotation") or "YES"
        if "SOPInstanceUID" in ds:
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        out = BytesIO()
        ds.save_as(out, enforce_file_format=True)
    return Result(out.getvalue(), mapping, burned)
