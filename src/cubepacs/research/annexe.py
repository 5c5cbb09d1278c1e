"""PS3.15 Annex E Table E.1-1 applied at every nesting level of a dataset: our own walker over the profile's table.

The table itself (tag → action: D, Z, X, U and the combined X/Z, X/D, Z/D, X/Z/D, X/Z/U*) is the one
`dicom-anonymizer` ships for the 2026c edition of the standard (:func:`table`): no tag list is written by hand here.
The walker (:class:`Walker`) is ours, because that library applies its actions to the top level only (nested
sequences kept identifying attributes) and replaces UIDs with random ones. What the walker does, in each dataset
and in every item of every sequence below it:

* private elements are removed (creators too), except the (creator, element offset) pairs kept as safe;
* every UI value that is not a UID of the standard (pydicom's UID dictionary, or the ``1.2.840.10008.`` root) is
  mapped by the one keyed function given (the instance's own UIDs and every reference to them alike), so that
  references keep pointing where they pointed; nothing random;
* every DA and DT value is shifted by the patient's number of days (Retain Longitudinal Temporal Information with
  Modified Dates) or, without that option, emptied — stricter than the table, which names most dates but not all;
  Patient's Birth Date is always emptied;
* the other attributes of the table get their action: X removed, Z and every combined action with Z emptied,
  D and X/D replaced by a dummy value of their VR; sequences marked X (or X/Z, X/Z/D) are removed, Z emptied,
  and D, U and X/Z/U* sequences are kept and walked (their items are de-identified by the same rules);
* attributes kept by an option (patient characteristics, device identity) are left as they are, and the
  descriptors of Clean Descriptors are cleaned of the patient's names and identifiers.

Example
-------
>>> from pydicom.dataset import Dataset
>>> ds, item = Dataset(), Dataset()
>>> item.InstitutionName, item.ReferencedSOPInstanceUID = "General Hospital", "1.2.3.4"
>>> ds.ContributingEquipmentSequence = [item]
>>> Walker(lambda uid: "2.25.1" + uid[-1], days=None).dataset(ds)
>>> ds.ContributingEquipmentSequence[0].get("InstitutionName", "removed").strip() or "emptied"
'emptied'
>>> ds.ContributingEquipmentSequence[0].ReferencedSOPInstanceUID
'2.25.14'
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from pydicom._uid_dict import UID_dictionary
from pydicom.datadict import keyword_for_tag
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag

# Table E.1-1's option columns (kept by keyword; everything else comes from the profile's table)
PATIENT_CHARACTERISTICS = ("PatientAge", "PatientSex", "PatientSize", "PatientWeight", "EthnicGroup",
                           "SmokingStatus", "PregnancyStatus", "PatientSexNeutered", "SpecialNeeds",
                           "AllergiesListingSequence")
DEVICE_IDENTITY = ("StationName", "DeviceSerialNumber", "DeviceUID", "DeviceLabel", "DeviceDescription",
                   "GantryID", "DetectorID", "PlateID", "CassetteID", "GeneratorID", "SourceSerialNumber",
                   "InstitutionalDepartmentName", "PerformedStationName", "ScheduledStationName")
DESCRIPTORS = ("StudyDescription", "SeriesDescription", "ProtocolName", "ImageComments", "AcquisitionComments",
               "PerformedProcedureStepDescription", "RequestedProcedureDescription", "BodyPartExamined",
               "ContrastBolusAgent", "DerivationDescription")
ALWAYS_EMPTY = frozenset({0x00100030})  # Patient's Birth Date: Z even when dates are kept shifted
STANDARD_ROOT = "1.2.840.10008."
DUMMY_TEXT = "ANONYMIZED"
_CATEGORIES = {"D_TAGS": "D", "Z_TAGS": "Z", "X_TAGS": "X", "U_TAGS": "U", "Z_D_TAGS": "ZD", "X_Z_TAGS": "XZ",
               "X_D_TAGS": "XD", "X_Z_D_TAGS": "XZD", "X_Z_U_STAR_TAGS": "XZU"}


@lru_cache(maxsize=1)
def table() -> tuple[dict[int, str], tuple[tuple[int, int, int, int, str], ...]]:
    """Table E.1-1 as ``({tag: action}, ((group, element, group mask, element mask, action), ...))``.

    Actions are spelled ``D``, ``Z``, ``X``, ``U``, ``ZD``, ``XZ``, ``XD``, ``XZD`` and ``XZU``; the second part
    holds the repeating groups (curves 50xx, overlays 60xx).
    """
    from dicomanonymizer.dicomfields_selector import dicom_anonymization_database_selector

    source = dicom_anonymization_database_selector("dicomfields_2026c")
    plain: dict[int, str] = {}
    masked: list[tuple[int, int, int, int, str]] = []
    for category, action in _CATEGORIES.items():
        for entry in source[category]:
            if len(entry) == 2:
                plain[(entry[0] << 16) | entry[1]] = action
            else:
                group, element, gmask, emask = entry
                masked.append((group, element, gmask, emask, action))
    return plain, tuple(masked)


def action_of(tag: int) -> str | None:
    """The profile's action for a (non-private) tag, or None when the profile keeps it.

    >>> action_of(0x00100010), action_of(0x00080018), action_of(0x60023000), action_of(0x00280010)
    ('Z', 'U', 'X', None)
    """
    plain, masked = table()
    found = plain.get(tag)
    if found is not None:
        return found
    group, element = tag >> 16, tag & 0xFFFF
    for g, e, gmask, emask, action in masked:
        if group & gmask == g & gmask and element & emask == e & emask:
            return action
    return None


def is_standard_uid(uid: str) -> bool:
    """A UID of the standard (SOP class, transfer syntax, coding scheme…): never an identifier, never mapped."""
    return uid in UID_dictionary or uid.startswith(STANDARD_ROOT)


def shift_date(value: str, days: int) -> str:
    """A DA, or the date of a DT, moved back ``days`` days (the rest of a DT kept); ``""`` if it is no date.

    >>> shift_date("20240301", 1), shift_date("20240301093000.5+0100", 366), shift_date("junk", 3)
    ('20240229', '20230301093000.5+0100', '')
    """
    try:
        return (dt.datetime.strptime(value[:8], "%Y%m%d") - dt.timedelta(days=days)).strftime("%Y%m%d") + value[8:]
    except ValueError:
        return ""


def clean_text(text: str, identifiers: Iterable[str]) -> str:
    """``text`` without any of the ``identifiers`` (words of two characters or more, case ignored).

    >>> clean_text("CT for DOE JOHN 12345", ["Doe", "John", "12345"])
    'CT for'
    """
    out = text
    for word in identifiers:
        if len(word) >= 2:
            out = re.sub(re.escape(word), "", out, flags=re.IGNORECASE)
    return re.sub(r"\s{2,}", " ", out).strip()


def _dummy(elem: DataElement) -> Any:
    vr = elem.VR
    if vr in ("US", "SS", "UL", "SL", "UV", "SV", "FL", "FD"):
        return 0
    if vr in ("IS", "DS"):
        return "0"
    if vr == "AS":
        return "000Y"
    if vr in ("OB", "OW", "OF", "OD", "OL", "OV", "UN"):
        return b"\0\0"
    return DUMMY_TEXT


@dataclass
class Walker:
    """Apply the profile to a dataset and everything nested in it (see the module's docstring).

    ``uid``: the keyed function mapping a UID (None: UIDs kept, Retain UIDs); ``days``: the patient's date shift
    (None: dates emptied); ``keep``: keywords kept by options; ``clean``: keywords cleaned of ``identifiers``;
    ``safe_private``: (creator, element offset) pairs kept.
    """

    uid: Callable[[str], str] | None
    days: int | None
    keep: frozenset[str] = frozenset()
    clean: frozenset[str] = frozenset()
    identifiers: tuple[str, ...] = ()
    safe_private: frozenset[tuple[str, int]] = frozenset()

    def dataset(self, ds: Dataset) -> None:
        """De-identify ``ds`` in place, at every nesting level."""
        kept_blocks: set[tuple[int, int]] = set()
        for elem in list(ds):
            tag = elem.tag
            if tag.is_private:
                if not tag.is_private_creator and self._safe(ds, tag):
                    kept_blocks.add((tag.group, (tag.element >> 8) & 0xFF))
                    continue
                if not tag.is_private_creator:
                    del ds[tag]
                continue
            self._element(ds, elem)
        for elem in list(ds):  # creators of blocks of which nothing is kept go too
            if elem.tag.is_private_creator and (elem.tag.group, elem.tag.element & 0xFF) not in kept_blocks:
                del ds[elem.tag]

    def _safe(self, ds: Dataset, tag: BaseTag) -> bool:
        if not self.safe_private:
            return False
        owner = ds.get((tag.group, (tag.element >> 8) & 0xFF))
        return owner is not None and (str(owner.value), tag.element & 0xFF) in self.safe_private

    def _element(self, ds: Dataset, elem: DataElement) -> None:
        tag = int(elem.tag)
        keyword = keyword_for_tag(tag)
        action = action_of(tag)
        if keyword in self.keep:
            if elem.VR == "SQ":
                for item in elem.value:
                    self.dataset(item)
            return
        if keyword in self.clean and isinstance(elem.value, str):
            elem.value = clean_text(elem.value, self.identifiers)
            return
        if elem.VR == "SQ":
            self._sequence(ds, elem, action)
        elif elem.VR == "UI":
            if action == "X":
                del ds[tag]
            elif self.uid is not None and not elem.is_empty:
                elem.value = self._uids(elem.value)
        elif elem.VR in ("DA", "DT"):
            if action == "X" and self.days is None:
                del ds[tag]
            elif self.days is None or tag in ALWAYS_EMPTY:
                elem.value = ""
            elif not elem.is_empty:
                values = elem.value if isinstance(elem.value, MultiValue) else [elem.value]
                shifted = [shift_date(str(v), self.days) for v in values]
                elem.value = shifted if len(shifted) > 1 else shifted[0]
        elif action is None and elem.VR == "UR":
            del ds[tag]  # a URL not in the table (RetrieveURL, RetrieveURI): it names the host and the original UIDs
        elif action is None:
            return
        elif elem.VR == "TM" and self.days is not None:
            return  # times kept with the dates' option (the dates move, the time of day does not)
        elif action == "X":
            del ds[tag]
        elif "Z" in action or elem.VR == "TM":
            elem.value = b"" if elem.VR in ("OB", "OW", "UN") else ""
        else:  # D, X/D, U (a U that is not UI: a dummy too)
            elem.value = _dummy(elem)

    def _sequence(self, ds: Dataset, elem: DataElement, action: str | None) -> None:
        if action is not None and "X" in action and action != "XZU":
            del ds[elem.tag]
        elif action == "Z":
            elem.value = Sequence([])
        elif keyword_for_tag(elem.tag) == "PersonIdentificationCodeSequence":
            item = Dataset()
            item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = DUMMY_TEXT, "99CUBEPACS", DUMMY_TEXT
            elem.value = Sequence([item])
        else:  # kept (not in the table), D, U or X/Z/U*: walked, its references mapped
            for item in elem.value:
                self.dataset(item)

    def _uids(self, value: Any) -> Any:
        assert self.uid is not None
        values = value if isinstance(value, MultiValue | list) else [value]
        out = [str(v) if is_standard_uid(str(v)) else self.uid(str(v)) for v in values]
        return out if len(out) > 1 else out[0]
