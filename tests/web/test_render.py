"""/rendered and /thumbnail of EVERY image instance of ../shared/data (the four series and the singles), from the
stored files and again from the series' cubes, against pydicom's own rendering of the same file.

The oracle (``pydicom_rendering``) is pydicom's grayscale pipeline (PS3.3 C.11): ``apply_modality_lut``, then
``apply_voi_lut`` (or ``apply_windowing`` with the request's window), its output mapped from pydicom's own output
range — read off pydicom by windowing two values far outside any window, so a rescale shift of that range (the
CT bug: the range was taken unshifted, every CT came out darker) cannot hide — to 0–255; a VOI LUT's output from
0…2ⁿ−1 (n bits per entry, C.11.2.1.1); no VOI: the frame's own range; MONOCHROME1 inverted; colour:
``apply_color_lut`` for palettes, pydicom's ``pixel_array`` (RGB, YBR converted) otherwise. An enhanced
instance's per-frame Pixel Value Transformation and Frame VOI LUT (C.7.6.16.2.9–10) are set on the dataset for
pydicom here, since its functions read only top-level attributes.

Tolerance ±1 grey level: the archive windows straight to 0–255 and rounds once, the oracle windows into pydicom's
range and is rescaled then rounded, so a value that lands on a .5 boundary may round either way; YBR colour
frames likewise, where the oracle's ``pixel_array`` converts to RGB and the archive converts the decoded YBR with
``convert_color_space`` (both pydicom; measured: never more than 1 apart, on any instance).

Crafted in the test from real files, because no real file of the data set has them: MONOCHROME1 (from the CT
single), a VOI LUT Sequence (a square-root LUT on a real CT slice), the SIGMOID VOI LUT Function (on a real MR
slice), Presentation LUT Shape INVERSE on a MONOCHROME2 CT slice (inverted once, PS3.3 C.11.6; pydicom has no
Presentation LUT step, so the oracle inverts) — each with new UIDs, saying so in its name.
``mr_12bit_signed_siemens.dcm`` and ``mr_12bit_unsigned_siemens.dcm`` share one SOP Instance UID, so the second
is stored under the second tenant.
"""

from __future__ import annotations

import copy
import io
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import httpx
import imagecodecs
import numpy as np
import pydicom
import pytest
from pydicom.pixels import pixel_array
from pydicom.pixels.processing import apply_color_lut, apply_modality_lut, apply_voi, apply_voi_lut

from cubepacs.archive.web import multipart
from tests.archive.conftest import Server, compact_now, free_port, start_server, stop_server, write_config
from tests.conftest import SERIES, SINGLES, dicom_files
from tests.pixeloracle import reference_decoders

CT = next(s for s in SINGLES if s.name == "ct_ge_small_signed.dcm")
MR = next(s for s in SINGLES if s.name == "ts_explicit_le_siemens_mr.dcm")
CHEST = dicom_files(next(s for s in SERIES if s.name == "ct_ge_lightspeedvct_chest_100sl"))
SECOND_TENANT = {"mr_12bit_unsigned_siemens.dcm"}  # the same SOP Instance UID as mr_12bit_signed_siemens.dcm
GROUPS = {"PixelValueTransformationSequence": ("RescaleSlope", "RescaleIntercept"),
          "FrameVOILUTSequence": ("WindowCenter", "WindowWidth", "VOILUTFunction")}



@pytest.fixture(autouse=True)
def _pydicoms_own_decoders() -> Iterator[None]:
    """The oracle decodes with pydicom's own plugins (Pillow for lossy JPEG), not the project's ones that
    importing cubepacs installs (tests/pixeloracle.py)."""
    with reference_decoders():
        yield


SINGLE_NAMES = {p.name for p in SINGLES}
FUNCTIONS = ("linear", "linear_exact", "sigmoid")


def _is_image(path: Path) -> bool:
    ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
    return "Rows" in ds and "PhotometricInterpretation" in ds


def _storable(path: Path) -> bool:
    ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
    return all(ds.get(k) for k in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"))


IMAGES = [p for p in SINGLES if _is_image(p)] + [p for s in SERIES for p in dicom_files(s)]
# the two HTJ2K singles are 12-element datasets without Study/Series UIDs: refused by STOW, rendered directly
UNSTORABLE = [p for p in IMAGES if not _storable(p)]
IMAGES = [p for p in IMAGES if p not in UNSTORABLE]


def _crafted() -> dict[str, bytes]:
    """Copies of real files with what no real file has (new UIDs; see the module docstring)."""

    def saved(ds: pydicom.Dataset) -> bytes:
        ds.StudyInstanceUID, ds.SeriesInstanceUID = pydicom.uid.generate_uid(), pydicom.uid.generate_uid()
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
        out = io.BytesIO()
        ds.save_as(out, enforce_file_format=True)
        return out.getvalue()

    mono1 = pydicom.dcmread(CT)
    mono1.PhotometricInterpretation = "MONOCHROME1"
    lut = pydicom.dcmread(CHEST[40])
    item = pydicom.Dataset()
    item.add_new(0x00283002, "US", [1024, 0, 16])  # LUT Descriptor: 1024 entries from 0 HU, 16 bits each
    item.add_new(0x00283006, "US", [round(65535 * (i / 1023) ** 0.5) for i in range(1024)])  # LUT Data
    lut.VOILUTSequence = [item]
    sigmoid = pydicom.dcmread(MR)
    sigmoid.VOILUTFunction = "SIGMOID"
    inverse = pydicom.dcmread(CHEST[60])
    inverse.PresentationLUTShape = "INVERSE"  # every real file says IDENTITY
    return {"crafted_monochrome1_from_ct_small": saved(mono1), "crafted_voi_lut_sequence_from_chest_ct":
            saved(lut), "crafted_sigmoid_from_siemens_mr": saved(sigmoid),
            "crafted_presentation_lut_inverse_from_chest_ct": saved(inverse)}


CRAFTED = _crafted()


def _tenant(name: str) -> str:
    return "beta" if name in SECOND_TENANT else "alpha"


def _all() -> list[tuple[str, bytes]]:
    return [(p.name, p.read_bytes()) for p in IMAGES] + list(CRAFTED.items())


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("render")
    dimse, http = free_port(), free_port()
    config = write_config(root / "c.toml", root / "data", dimse, http, quiet_seconds=600.0)  # cubes on demand
    srv = start_server(root / "data", config, dimse, http)
    try:
        batches: dict[str, list[bytes]] = {}
        for name, data in _all():
            batches.setdefault(_tenant(name), []).append(data)
        for tenant, datas in batches.items():
            for start in range(0, len(datas), 100):
                body, ctype = multipart.encode(datas[start:start + 100], "application/dicom")
                r = httpx.post(f"{srv.url}/studies", content=body, timeout=120,
                               headers={**srv.headers(tenant), "Content-Type": ctype})
                assert r.status_code == 200, (r.headers.get_list("warning"), r.json().get("00081198"))
        yield srv
    finally:
        stop_server(srv)


def pydicom_rendering(ds: pydicom.Dataset, frame: int, window: tuple[float, float, str] | None = None,
                      ) -> np.ndarray:
    """pydicom's display values (0–255, float) of frame ``frame`` (from 0); see the module docstring."""
    original, frames = ds, int(ds.get("NumberOfFrames", 1) or 1)
    photometric = str(ds.PhotometricInterpretation).strip()
    pixels = ds.pixel_array[frame] if frames > 1 else ds.pixel_array  # RGB where the data is YBR
    if photometric == "PALETTE COLOR":
        return apply_color_lut(pixels, ds) * (255 / (2 ** int(ds.RedPaletteColorLookupTableDescriptor[2]) - 1))
    if pixels.ndim == 3:
        return pixels.astype(np.float64)
    ds = pydicom.Dataset({t: copy.copy(e) for t, e in ds.items()})  # its own elements (copy.copy shares them)
    ds.file_meta = original.file_meta  # the VOI LUT's byte order, where its data is OW
    ds.set_original_encoding(*original.original_encoding, original.original_character_set)
    for group, keywords in GROUPS.items():  # per-frame before shared (PS3.3 C.7.6.16)
        for seq in ("PerFrameFunctionalGroupsSequence", "SharedFunctionalGroupsSequence"):
            items = ds.get(seq) or []
            item = items[frame if seq.startswith("PerFrame") else 0] if items else None
            if item is not None and group in item:
                for k in keywords:
                    if k in item[group][0]:
                        setattr(ds, k, item[group][0][k].value)
                break
    values = apply_modality_lut(pixels, ds)
    if window is not None:
        ds.WindowCenter, ds.WindowWidth, ds.VOILUTFunction = window
        if "VOILUTSequence" in ds:
            del ds.VOILUTSequence
    if "VOILUTSequence" in ds:
        with warnings.catch_warnings():  # a rescaled (float) input: pydicom truncates it, as C.11.2.1.1 maps
            warnings.filterwarnings("ignore", "Applying a VOI LUT on a float input")
            out = apply_voi(values, ds) * (255 / (2 ** int(ds.VOILUTSequence[0].LUTDescriptor[2]) - 1))
    elif "WindowCenter" in ds:
        if "BitsStored" not in ds:  # float pixel data: pydicom needs some output range; the mapping cancels it
            ds.BitsStored, ds.PixelRepresentation = ds.BitsAllocated, 0
        with np.errstate(over="ignore"):  # exp() of far values overflows to inf: the sigmoid's limit, correct
            low, high = apply_voi_lut(np.array([-1e12, 1e12]), ds, prefer_lut=False)
            out = (apply_voi_lut(values, ds, prefer_lut=False) - low) * (255 / (high - low))
    else:
        out = (values - values.min()) * (255 / max(float(values.max() - values.min()), 1e-12))
    inverse = photometric == "MONOCHROME1" or original.get("PresentationLUTShape") == "INVERSE"  # C.11.6, once
    return 255 - out if inverse else out


def _url(server: Server, ds: pydicom.Dataset, suffix: str) -> str:
    return (f"{server.url}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/"
            f"{ds.SOPInstanceUID}/{suffix}")


def _get(client: httpx.Client, server: Server, ds: pydicom.Dataset, suffix: str, tenant: str = "alpha",
         **params: str) -> np.ndarray:
    url = _url(server, ds, suffix)
    for _ in range(100):  # STOW answers once stored and queued; 404 until indexed
        r = client.get(url, params=params, headers={**server.headers(tenant), "Accept": "image/png"})
        if r.status_code != 404:
            break
        time.sleep(0.2)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png"
    return np.asarray(imagecodecs.png_decode(r.content)).astype(np.float64)


def _compare(client: httpx.Client, server: Server, name: str, data: bytes, thumbnails: bool,
             windows: tuple[str, ...]) -> dict[str, float]:
    """Worst difference of every rendering of one instance (its first and last frame; with ``thumbnails`` its
    thumbnail; a request's window in each function of ``windows``) from pydicom's."""
    ds = pydicom.dcmread(io.BytesIO(data))
    tenant, frames = _tenant(name), int(ds.get("NumberOfFrames", 1) or 1)
    asks: list[tuple[str, int, dict[str, str], tuple[float, float, str] | None]] = [("rendered", 0, {}, None)]
    if frames > 1:
        asks.append((f"frames/{frames}/rendered", frames - 1, {}, None))
    if thumbnails:
        asks.append(("thumbnail", 0, {}, None))
    gray = str(ds.PhotometricInterpretation).strip() in ("MONOCHROME1", "MONOCHROME2")
    if windows and gray:
        center = float(np.median(apply_modality_lut(ds.pixel_array, ds)))
        for function in windows:
            asks.append(("rendered", 0, {"window": f"{center},400,{function}"}, (center, 400.0, function.upper())))
    worst: dict[str, float] = {}
    for suffix, frame, params, window in asks:
        got = _get(client, server, ds, suffix, tenant, **params)
        want = np.clip(np.round(pydicom_rendering(ds, frame, window)), 0, 255)
        if suffix == "thumbnail":
            step = max(1, max(want.shape[:2]) // 128)
            want = want[::step, ::step]
        assert got.shape == want.shape, f"{name} {suffix}"
        diff = np.abs(got - want)
        worst[f"{name} {suffix} {params}"] = float(diff.max())
        assert diff.max() <= 1, f"{name} {suffix} {params}: {diff.max()} grey levels off pydicom"
    return worst


def test_every_image_renders_as_pydicom_renders_it(server: Server) -> None:
    """From the stored files: every instance's first and last frame; thumbnails of the singles and of one slice
    per series; the request's window in all three functions on every grayscale single, in one of them (in turn)
    on every twentieth slice."""
    firsts = {dicom_files(s)[0].name for s in SERIES}
    worst: dict[str, float] = {}
    with httpx.Client(timeout=60) as client:
        for k, (name, data) in enumerate(_all()):
            single = name in SINGLE_NAMES or name in CRAFTED
            worst |= _compare(client, server, name, data, thumbnails=single or name in firsts,
                              windows=FUNCTIONS if single else (FUNCTIONS[k // 20 % 3],) if k % 20 == 0 else ())
    assert len(worst) > len(IMAGES) + len(CRAFTED) and max(worst.values()) <= 1


def test_instances_without_study_uids_render_as_pydicom_renders_them() -> None:
    """What STOW refuses (no Study Instance UID) is rendered by the same function /rendered calls, given the
    stored values as the archive decodes them (pydicom's raw pixel values)."""
    from cubepacs.archive.web import render

    assert [p.name for p in UNSTORABLE] == ["htj2k_lossless_rgb_sc.dcm", "htj2k_lossy_rgb_sc.dcm"]
    for path in UNSTORABLE:
        ds = pydicom.dcmread(path)
        got = render.render(ds, pixel_array(path, raw=True))
        assert np.abs(got - np.round(pydicom_rendering(ds, 0))).max() <= 1, path.name


def test_window_parameters_that_are_not_windows_are_400(server: Server) -> None:
    ds = pydicom.dcmread(CT)
    for bad in ("abc", "40", "40,0", "40,0.5", "40,400,cubic", "nan,400"):
        r = httpx.get(_url(server, ds, "rendered"), params={"window": bad}, headers=server.headers())
        assert r.status_code == 400 and "window" in r.json()["detail"], bad


def test_the_ct_shift_is_gone(server: Server) -> None:
    """The reported bug on its own: a CT at its own window (-700/1500 here, Rescale Intercept -1024) renders
    as pydicom does — air black, the mean grey level as pydicom's — not darker by the intercept's share."""
    ds = pydicom.dcmread(CHEST[0])
    assert ds.RescaleIntercept == -1024 and float(ds.WindowCenter) == -700
    with httpx.Client(timeout=60) as client:
        got = _get(client, server, ds, "rendered")
    want = pydicom_rendering(ds, 0)
    assert abs(got.mean() - want.mean()) < 0.1 and np.abs(got - np.round(want)).max() <= 1


def test_every_image_renders_the_same_from_the_cubes(server: Server) -> None:
    """After the web worker compacted every series, frames come from the cubes: the same renderings (first and
    last frames) of every single and crafted instance (each its own series and cube) and of every tenth slice of
    each series (the cube's frames are checked bit for bit against pydicom in tests/cube; here the path)."""
    compact_now(server)
    with httpx.Client(timeout=60) as client:
        for k, (name, data) in enumerate(_all()):
            if name in SINGLE_NAMES or name in CRAFTED or k % 10 == 0:
                _compare(client, server, name, data, thumbnails=False, windows=())
