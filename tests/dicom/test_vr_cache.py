"""dicomjson's dictionary-VR cache is bounded: a stream of instances with ever new private tags and creators (what a
hostile client sends) does not grow it past ``VR_CACHE_SIZE``, and the VRs it gives are pydicom's. The instances are
a real implicit VR file of ../shared/data with private blocks added here."""

from __future__ import annotations

import random
import warnings

import pydicom
from pydicom.datadict import private_dictionary_VR
from pydicom.filewriter import write_dataset

from cubepacs.dicom import dicomjson
from tests.conftest import SINGLES

KNOWN = [("SIEMENS CSA HEADER", 0x0029, 0x08, "CS"), ("GEMS_ACQU_01", 0x0019, 0x0F, "DS")]


def _implicit_body(ds: pydicom.Dataset) -> bytes:
    buf = pydicom.filebase.DicomBytesIO()
    buf.is_little_endian, buf.is_implicit_VR = True, True
    write_dataset(buf, ds)
    return buf.getvalue()


def test_many_private_tags_do_not_grow_the_cache() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        base = pydicom.dcmread(SINGLES[0], stop_before_pixels=True)
    for creator, group, elem, vr in KNOWN:  # the oracle: pydicom's private dictionary
        assert private_dictionary_VR((group << 16) | 0x1000 | elem, creator) == vr
    dicomjson._cached_vr.cache_clear()
    rng = random.Random(27)
    for n in range(12):  # 12 instances × 16 blocks × 64 elements: 12,288 distinct (tag, creator) pairs
        ds = pydicom.Dataset()
        ds.update(base)
        added = []
        for block in range(16):
            group = 0x1001 + 2 * rng.randrange(0x3000)  # odd groups the real file does not use
            assert not any(t.group == group for t in base.keys())
            creator = f"HOSTILE {n} {block}"
            ds.add_new((group << 16) | 0x0010, "LO", creator)
            for elem in range(64):
                ds.add_new((group << 16) | 0x1000 | elem, "UN", b"ab")
                added.append(f"{group:04X}10{elem:02X}")
        for k, (creator, group, elem, _) in enumerate(KNOWN):
            ds.add_new((group << 16) | 0x0011 + k, "LO", creator)
            ds.add_new((group << 16) | ((0x11 + k) << 8) | elem, "UN", b"12")
        doc = dicomjson.dataset_to_json(_implicit_body(ds), implicit=True, little_endian=True)[0]
        assert dicomjson._cached_vr.cache_info().currsize <= dicomjson.VR_CACHE_SIZE
        for k, (_, group, elem, vr) in enumerate(KNOWN):
            assert doc[f"{group:04X}{0x11 + k:02X}{elem:02X}"]["vr"] == vr
        assert {doc[key]["vr"] for key in added} == {"UN"}  # creators no dictionary knows
    assert dicomjson._cached_vr.cache_info().currsize == dicomjson.VR_CACHE_SIZE
    assert dicomjson._vr_of(0x00100010, None, {}) == "PN"  # and public tags still resolved
