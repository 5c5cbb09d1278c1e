"""De-identification of one instance following DICOM PS3.15 Annex E: the Basic Application Level Confidentiality
Profile and its options, at every nesting level (:mod:`cubepacs.research.annexe` walks the profile's table).

* UIDs: every UID at any depth that is not one of the standard is replaced by ``2.25.<HMAC-SHA256(secret, uid)>``
  (:func:`new_uid`): the instance's own UIDs and every reference to them alike, so references keep pointing where
  they pointed; the same input gives the same output in every export with the same project secret (linkable), and
  nothing else can recompute it. Retain UIDs keeps them.
* The patient: a key (:func:`patient_key`: the Patient ID and its issuer; without an ID, the name and birth date;
  without either, the study) gives the pseudonym (Patient ID and Name) and the date shift.
* Retain Longitudinal Temporal Information with Modified Dates: every date (DA, and the date of DT) at any depth is
  moved back by the patient's number of days, times kept; Longitudinal Temporal Information Modified says
  MODIFIED (REMOVED without the option, when every date is emptied).
* Retain Patient Characteristics, Retain Device Identity: the attributes of their columns are kept.
* Clean Descriptors: the descriptors are kept, with any word of the patient's name or identifiers removed.
* Private attributes are removed at every depth, except (creator, element) pairs of a safe list.
* Documents are not exported: encapsulated documents (PDF, CDA, STL…) and structured reports carry free text the
  profile cannot clean; :func:`deidentify` says why in ``Result.excluded`` and the export counts them.

Pixel data is never touched (its bytes stay identical). Patient Identity Removed, De-identification Method and
its Code Sequence (CID 7050) are set. Burned-in annotation is flagged from the header (:func:`burned_in`), never
found in the pixels: the export lists flagged instances, or leaves them out with ``exclude_burned_in``.

Example
-------
>>> new_uid("1.2.3", b"project-secret") == new_uid("1.2.3", b"project-secret") != new_uid("1.2.3", b"other")
True
>>> new_uid("1.2.3", b"project-secret").startswith("2.25.")
True
"""

from __future__ import annotations

import hashlib
import hmac
import re
import warnings
from dataclasses import dataclass, field
from io import BytesIO

import pydicom
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence

from cubepacs.research.annexe import DESCRIPTORS, DEVICE_IDENTITY, PATIENT_CHARACTERISTICS, Walker

# modalities whose pixels often carry text (patient name, dates, markers) burned in by the device
BURNED_IN_MODALITIES = ("US", "SC", "XC", "ES", "OT", "GM", "SM", "XA", "RF", "CR", "DX", "MG", "IO", "PX", "DOC")
SECONDARY_CAPTURE_PREFIX = "1.2.840.10008.5.1.4.1.1.7"
DOCUMENT_PREFIXES = {"1.2.840.10008.5.1.4.1.1.104.": "encapsulated document",
                     "1.2.840.10008.5.1.4.1.1.88.": "structured report"}
PIXEL_TAGS = (0x7FE00010, 0x7FE00008, 0x7FE00009)

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
    """The profile options; ``secret`` keys the deterministic UIDs and date shifts of a project.

    ``exclude_burned_in`` leaves out instances flagged by :func:`burned_in` (they are counted, not exported).
    """

    secret: bytes
    retain_uids: bool = False
    retain_dates: bool = False
    retain_patient: bool = False
    retain_device: bool = False
    clean_descriptors: bool = False
    safe_private: tuple[tuple[str, int], ...] = ()  # (private creator, element offset 0x00-0xFF) kept
    exclude_burned_in: bool = False

    def codes(self) -> list[tuple[str, str]]:
        """The CID 7050 codes of the profile and the options applied."""
        on = ["basic"] + [k for k in CODES if k != "basic" and (getattr(self, k, False) or
                                                                (k == "safe_private" and self.safe_private))]
        return [CODES[k] for k in on]

    def profile(self) -> str:
        """One line naming the profile and its options (what an export folder holds; resume compares it)."""
        names = [name for _, name in self.codes()] + (["exclude burned-in"] if self.exclude_burned_in else [])
        return "; ".join(names) + "".join(f"; safe {c}:{e:02X}" for c, e in sorted(self.safe_private))


@dataclass
class Result:
    """One de-identified instance: its bytes, the UID mapping it used, and what to look at by hand.

    ``excluded`` (a reason) when the instance is not to be exported at all; ``data`` is then empty.
    """

    data: bytes
    uids: dict[str, str] = field(default_factory=dict)  # original → new (for the access-controlled mapping)
    burned_in: str | None = None  # why the pixels may carry identifying text, when they may
    excluded: str | None = None
    patient: str = ""  # the pseudonym
    patient_key: str = ""  # what it was derived from (patient_key(); for the access-controlled mapping only)


def new_uid(uid: str, secret: bytes) -> str:
    """The replacement of a UID: ``2.25.`` and the first 128 bits of HMAC-SHA256(secret, uid) as an integer."""
    digest = hmac.new(secret, uid.encode(), hashlib.sha256).digest()
    return "2.25." + str(int.from_bytes(digest[:16], "big"))


def patient_key(ds: Dataset) -> str:
    """What identifies the patient of an instance, for the pseudonym and the date shift.

    The Patient ID (with its issuer when there is one); without an ID, the name and birth date; without those, the
    study (each such study is then a patient of its own: people without identifiers are never merged).

    >>> a, b = Dataset(), Dataset()
    >>> a.PatientID, a.PatientName, b.PatientID, b.PatientName = "", "DOE^JANE", "", "ROE^RICHARD"
    >>> patient_key(a) != patient_key(b), patient_key(a)
    (True, 'name:DOE^JANE|')
    """
    pid = str(ds.get("PatientID", "") or "").strip()
    if pid:
        issuer = str(ds.get("IssuerOfPatientID", "") or "").strip()
        return f"{pid}|issuer:{issuer}" if issuer else pid
    name, birth = str(ds.get("PatientName", "") or "").strip(), str(ds.get("PatientBirthDate", "") or "").strip()
    if name or birth:
        return f"name:{name}|{birth}"
    return f"study:{ds.get('StudyInstanceUID', '')}"


def pseudonym_of(key: str, secret: bytes) -> str:
    """The Patient ID (and Name) of a patient in the exports of one project: ``P`` and 16 hex digits of an HMAC."""
    return "P" + hmac.new(secret, b"patient\0" + key.encode(), hashlib.sha256).hexdigest()[:16].upper()


def day_shift(key: str, secret: bytes) -> int:
    """Days the dates of one patient are moved back (1 to 3650), the same in every export of the project."""
    digest = hmac.new(secret, b"date-shift\0" + key.encode(), hashlib.sha256).digest()
    return 1 + int.from_bytes(digest[:4], "big") % 3650


def burned_in(ds: Dataset) -> str | None:
    """Why the pixels of an instance may carry identifying text, from its header alone (None: no reason known).

    Burned In Annotation other than NO; a modality that often carries text (US, XA, RF, CR, DX, MG, SC, OT…);
    a secondary capture; a secondary image without Burned In Annotation. Pixels are not looked at (no OCR): a CT
    with a burned-in name and Burned In Annotation = NO passes.
    """
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


def excluded(ds: Dataset) -> str | None:
    """Why an instance is not exported at all (a document, or pixels only in private groups), or None."""
    sop_class = str(ds.get("SOPClassUID", "") or "")
    for prefix, what in DOCUMENT_PREFIXES.items():
        if sop_class.startswith(prefix):
            return what
    if "EncapsulatedDocument" in ds or str(ds.get("Modality", "")) in ("SR", "DOC", "KO"):
        return "structured report" if str(ds.get("Modality", "")) in ("SR", "KO") else "encapsulated document"
    if "Rows" in ds and "Columns" in ds and not any(t in ds for t in PIXEL_TAGS):
        large_private = [e for e in ds if e.tag.is_private and e.VR in ("OB", "OW", "UN") and
                         len(e.value or b"") >= int(ds.Rows or 0) * int(ds.Columns or 0)]
        if large_private:
            return "pixels only in private groups"
    return None


def even_fragments(value: bytes) -> bytes | None:
    """Encapsulated pixel data with every odd-length fragment padded to even length (PS3.5 A.4), or None if none is.

    A fragment of odd length, stored as received, is written by pydicom with its padding byte after the last item
    (the encapsulation then ends in the wrong place). Padding each fragment, and moving the Basic Offset Table's
    entries by the bytes added before them, keeps every frame's codestream (a zero after the end-of-codestream
    marker) and makes the value valid again.
    """
    from pydicom.encaps import generate_fragments, itemize_fragment

    items = list(generate_fragments(value))
    if not any(len(f) % 2 for f in items):
        return None
    bot, fragments = items[0], items[1:]
    old, new, moved = 0, 0, {}
    for fragment in fragments:
        moved[old] = new
        old += 8 + len(fragment)
        new += 8 + len(fragment) + len(fragment) % 2
    if bot:
        import struct

        offsets = struct.unpack(f"<{len(bot) // 4}I", bot[: len(bot) // 4 * 4])
        bot = struct.pack(f"<{len(offsets)}I", *(moved.get(o, o) for o in offsets))
    return b"".join(itemize_fragment(f + b"\0" * (len(f) % 2)) for f in [bot, *fragments])


# file meta kept in an export (PS3.10 7.1): version, SOP class/instance, transfer syntax, implementation — not the
# sending/receiving AE titles (0002,0016–0018) or presentation addresses (0002,0026–0028), not private information
_FILE_META_KEPT = frozenset({0x00020000, 0x00020001, 0x00020002, 0x00020003, 0x00020010, 0x00020012, 0x00020013})


def _identifiers(ds: Dataset) -> tuple[str, ...]:
    """The words of the patient's names and every identifier of the patient and the study, each value on its own
    (multi-valued elements and Other Patient IDs Sequence included): what Clean Descriptors removes from text."""
    words: list[str] = []
    for keyword in ("PatientName", "PatientBirthName", "PatientMotherBirthName"):
        words += [p for p in re.split(r"[\s^=,]+", str(ds.get(keyword, "") or "")) if p]
    values: list[str] = []
    for keyword in ("PatientID", "OtherPatientIDs", "AccessionNumber"):
        value = ds.get(keyword)
        values += [str(v) for v in (value if isinstance(value, MultiValue) else [value]) if v]
    values += [str(item.get("PatientID", "")) for item in ds.get("OtherPatientIDsSequence", []) or []]
    return tuple(words + [v for v in values if v])


def deidentify(data: bytes, options: Options) -> Result:
    """De-identify one Part 10 instance; its pixel data bytes are kept as they are.

    Raises whatever pydicom raises for bytes it cannot read or write (the export counts such an instance as failed).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(BytesIO(data))
        why = excluded(ds)
        flag = burned_in(ds)
        if why is None and flag and options.exclude_burned_in:
            why = f"burned-in annotation possible ({flag})"
        key = patient_key(ds)
        pseudonym = pseudonym_of(key, options.secret)
        if why is not None:
            return Result(b"", {}, flag, why, pseudonym, key)
        mapping: dict[str, str] = {}

        def uid(value: str) -> str:
            return mapping.setdefault(value, new_uid(value, options.secret))

        keep = (PATIENT_CHARACTERISTICS if options.retain_patient else ()) + \
            (DEVICE_IDENTITY if options.retain_device else ())
        walker = Walker(None if options.retain_uids else uid,
                        day_shift(key, options.secret) if options.retain_dates else None,
                        frozenset(keep), frozenset(DESCRIPTORS if options.clean_descriptors else ()),
                        _identifiers(ds), frozenset(options.safe_private))
        walker.dataset(ds)
        for tag in list(ds.file_meta.keys()):  # an allow-list: AE titles, addresses, private meta information go
            if tag not in _FILE_META_KEPT:
                del ds.file_meta[tag]
        ds.file_meta.ImplementationClassUID = pydicom.uid.PYDICOM_IMPLEMENTATION_UID  # we wrote this file
        ds.file_meta.ImplementationVersionName = f"PYDICOM {pydicom.__version__}"[:16]
        ds.PatientID = ds.PatientName = pseudonym  # the same patient, the same pseudonym: linkable
        ds.PatientIdentityRemoved = "YES"
        ds.LongitudinalTemporalInformationModified = "MODIFIED" if options.retain_dates else "REMOVED"
        ds.DeidentificationMethod = "cubepacs: PS3.15 E.1 Basic Profile" + "".join(
            f"; {name}" for _, name in options.codes()[1:])
        items = []
        for value, meaning in options.codes():
            item = Dataset()
            item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, "DCM", meaning
            items.append(item)
        ds.DeidentificationMethodCodeSequence = Sequence(items)
        if flag:
            ds.BurnedInAnnotation = ds.get("BurnedInAnnotation") or "YES"
        if "PixelData" in ds and ds.file_meta.get("TransferSyntaxUID") and ds.file_meta.TransferSyntaxUID.is_compressed:
            even = even_fragments(ds.PixelData)
            if even is not None:
                ds.PixelData = even
        if "SOPInstanceUID" in ds:
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        out = BytesIO()
        ds.save_as(out, enforce_file_format=True)
    return Result(out.getvalue(), mapping, flag, None, pseudonym, key)
