"""Storage keys built from tenant and UIDs, validated so that no name from DICOM or a URL can escape.

Example
-------
>>> instance_key("acme", "1.2.3", "1.2.3.4", "1.2.3.4.5")
'acme/1.2.3/1.2.3.4/1.2.3.4.5.dcm'
>>> instance_key("acme", "1.2.3", "../../etc", "1")
Traceback (most recent call last):
...
cubepacs.errors.ConfigError: invalid SeriesInstanceUID '../../etc': a UID is digits and dots, at most 64 characters
"""

from __future__ import annotations

import re

from cubepacs.errors import ConfigError

_UID = re.compile(r"[0-9]+(\.[0-9]+)*")
_TENANT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


def check_uid(value: str, what: str = "UID") -> str:
    """``value`` when it is a valid UID (digits and dots, ≤ 64 characters), else ConfigError."""
    if not isinstance(value, str) or len(value) > 64 or not _UID.fullmatch(value):
        raise ConfigError(f"invalid {what} {value!r}: a UID is digits and dots, at most 64 characters")
    return value


def check_tenant(value: str) -> str:
    """``value`` when it is a valid tenant id (letters, digits, ``_`` and ``-``, ≤ 64)."""
    if not isinstance(value, str) or not _TENANT.fullmatch(value):
        raise ConfigError(f"invalid tenant id {value!r}: letters, digits, '_' and '-', at most 64 characters")
    return value


def instance_key(tenant: str, study: str, series: str, sop: str) -> str:
    """Where an instance is stored: ``tenant/study/series/sop.dcm``."""
    return (f"{check_tenant(tenant)}/{check_uid(study, 'StudyInstanceUID')}/"
            f"{check_uid(series, 'SeriesInstanceUID')}/{check_uid(sop, 'SOPInstanceUID')}.dcm")


def cube_key(tenant: str, study: str, series: str) -> str:
    """Where a series cube is stored: ``tenant/study/series.dcbs``."""
    series = check_uid(series, "SeriesInstanceUID")
    return f"{check_tenant(tenant)}/{check_uid(study, 'StudyInstanceUID')}/{series}.dcbs"


WEB_ROOT = "/dicom-web"  # where the DICOMweb routes live; stored metadata's BulkDataURIs are relative to the host


def series_base(root: str, study: str, series: str, sop: str) -> str:
    """The WADO-RS URL of an instance, for BulkDataURIs.

    Example
    -------
    >>> series_base(WEB_ROOT, "1.2", "1.2.3", "1.2.3.4")
    '/dicom-web/studies/1.2/series/1.2.3/instances/1.2.3.4'
    """
    return f"{root}/studies/{study}/series/{series}/instances/{sop}"
