"""Issue #27's JPEG leak: the JPEG syntaxes are decoded by ``cube/jpegplugin.py`` (libjpeg-turbo through imagecodecs)
in place of pylibjpeg-libjpeg, which leaks native memory on corrupted codestreams.

Oracle: pydicom with pylibjpeg-libjpeg's plugin (an independent implementation of the same standard), put back for
the comparison only; for lossy frames also pydicom's Pillow plugin. Every JPEG-syntax file of ../shared/data is
found by its Transfer Syntax UID; corrupted frames are made here from those files."""

from __future__ import annotations

import contextlib
import dataclasses
import random
import subprocess
import sys
import textwrap
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.encaps import encapsulate, generate_frames
from pydicom.pixels import pixel_array
from pydicom.pixels.decoders import pillow as pydicom_pillow
from pydicom.pixels.decoders import pylibjpeg as pydicom_pylibjpeg
from pydicom.pixels.decoders.base import get_decoder

from cubepacs.cube import framedecode, guard, jpegplugin
from cubepacs.cube.codecs import harden_pydicom
from cubepacs.cube.reader import CubeReader
from cubepacs.errors import CodecError

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "fuzz"))
import mutants

ROOT = Path(__file__).resolve().parents[2]
LOSSLESS = ("1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70")


def _jpeg_files() -> list[tuple[Path, str]]:
    out = []
    for path in sorted(mutants.DATA.rglob("*")):
        if not path.is_file():
            continue
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
            syntax = str(ds.file_meta.TransferSyntaxUID)
        except Exception:
            continue
        if syntax in jpegplugin.SYNTAXES:
            out.append((path, syntax))
    return out


FILES = _jpeg_files()
DECODABLE = [(p, s) for p, s in FILES if "Rows" in pydicom.dcmread(p, stop_before_pixels=True, force=True)]


@contextlib.contextmanager
def plugin(syntax: str, name: str) -> Iterator[None]:
    """pydicom's decoder for ``syntax`` with only its own plugin ``name`` (pylibjpeg, pillow, pyjpegls), unwrapped."""
    from pydicom.pixels.decoders import pyjpegls

    funcs = {"pylibjpeg": pydicom_pylibjpeg._decode_frame, "pillow": pydicom_pillow._decode_frame,
             "pyjpegls": pyjpegls._decode_frame}  # fmt: skip
    decoder = get_decoder(syntax)
    saved = dict(decoder._available)
    decoder._available.clear()
    decoder._available[name] = funcs[name]
    try:
        yield
    finally:
        decoder._available.clear()
        decoder._available.update(saved)


def _pixels(path: Path, raw: bool) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pixel_array(path, raw=raw)


def test_seeds_found() -> None:
    assert {s for _, s in DECODABLE} >= {"1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51",
                                         "1.2.840.10008.1.2.4.70"}  # fmt: skip
    assert len(DECODABLE) >= 6


def test_ours_is_the_only_plugin() -> None:
    harden_pydicom()
    for syntax in jpegplugin.SYNTAXES:
        available = get_decoder(syntax)._available
        assert list(available) == [jpegplugin.NAME]
        assert available[jpegplugin.NAME].__wrapped__ is jpegplugin.decode_frame  # type: ignore[attr-defined]


@pytest.mark.parametrize("raw", [True, False], ids=["raw", "rgb"])
@pytest.mark.parametrize(("path", "syntax"), DECODABLE, ids=[p.name for p, _ in DECODABLE])
def test_every_frame_is_pylibjpegs(path: Path, syntax: str, raw: bool) -> None:
    """Lossless: identical to pylibjpeg-libjpeg. Lossy: identical to pydicom's Pillow plugin (libjpeg-turbo too,
    8-bit only) and within 1 of pylibjpeg-libjpeg on the samples as coded — two inverse DCTs, both within ISO
    10918-2's accuracy (3 after pydicom's YCbCr → RGB conversion, which spreads a chroma difference)."""
    ours = _pixels(path, raw)
    with plugin(syntax, "pylibjpeg"):
        theirs = _pixels(path, raw)
    assert ours.shape == theirs.shape and ours.dtype == theirs.dtype
    if syntax in LOSSLESS:
        assert np.array_equal(ours, theirs)
        return
    diff = np.abs(ours.astype(np.int32) - theirs.astype(np.int32))
    assert diff.max() <= (1 if raw or ours.ndim < 3 or ours.shape[-1] != 3 else 3)
    assert (diff > 0).mean() < 0.05
    bits = pydicom.dcmread(path, stop_before_pixels=True).BitsStored
    if bits == 8:
        with plugin(syntax, "pillow"):
            assert np.array_equal(ours, _pixels(path, raw))


@pytest.mark.parametrize(("path", "syntax"), DECODABLE, ids=[p.name for p, _ in DECODABLE])
def test_cube_frames_are_pydicoms(path: Path, syntax: str) -> None:
    """The cube keeps a JPEG instance whole and decodes its frames itself (framedecode): each frame equals pydicom's
    ``pixel_array(raw=True)`` (our plugin, compared to pylibjpeg-libjpeg above)."""
    reader = CubeReader(mutants.cube_of(path))
    for k in range(reader.num_frames):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            want = pixel_array(path, index=k, raw=True)
        assert np.array_equal(reader.frame(k), want)


def _frame_and_desc(path: Path) -> tuple[bytes, framedecode.PixelDesc]:
    reader = CubeReader(mutants.cube_of(path))
    d = reader.desc(0)
    assert d is not None
    ds = pydicom.dcmread(path)
    first = next(generate_frames(ds.PixelData, number_of_frames=d.frames))
    return first, dataclasses.replace(d, frames=1)


def _decode(src: bytes, d: framedecode.PixelDesc, syntax: str) -> np.ndarray:
    return framedecode.encapsulated_frame(memoryview(encapsulate([src])), d, syntax, 0, "crafted.dcm")


def _flipped(src: bytes, rng: random.Random) -> bytes:
    out = bytearray(src)
    for _ in range(rng.randrange(1, 8)):
        out[rng.randrange(2, len(out) - 2)] = rng.randrange(256)
    return bytes(out)


@pytest.mark.parametrize(("path", "syntax"), DECODABLE, ids=[p.name for p, _ in DECODABLE])
def test_corrupted_frames_raise_codec_error(path: Path, syntax: str) -> None:
    """Truncated anywhere: CodecError (libjpeg-turbo would fill the rest with grey; the EOI rule refuses it). A few
    bytes flipped anywhere (header or scan): a frame of the right shape — JPEG has no checksum, a flipped scan byte
    may decode — or CodecError, never another exception."""
    src, d = _frame_and_desc(path)
    assert _decode(src, d, syntax).shape == d.frame_shape
    for cut in (2, 20, len(src) // 3, len(src) // 2, len(src) - 3):
        with pytest.raises(CodecError):
            _decode(src[:cut], d, syntax)
    rng, refused = random.Random(27), 0
    for _ in range(200):
        try:
            assert _decode(_flipped(src, rng), d, syntax).shape == d.frame_shape
        except CodecError:
            refused += 1
    assert refused > 0


LEAK_SCRIPT = textwrap.dedent("""
    import gc, os, random, sys
    from pathlib import Path
    import pydicom
    from pydicom.encaps import encapsulate, generate_frames
    sys.path.insert(0, {fuzz!r})
    from cubepacs.cube import framedecode
    from cubepacs.cube.reader import CubeReader
    from cubepacs.errors import CodecError
    import mutants
    def rss():
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6
    path, which, n = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    syntax = str(pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID)
    d = CubeReader(mutants.cube_of(path)).desc(0)
    src = next(generate_frames(pydicom.dcmread(path).PixelData, number_of_frames=d.frames))
    import dataclasses
    d = dataclasses.replace(d, frames=1)
    if which == "pylibjpeg":  # pydicom's own plugin put back in front of ours, wrapped the same way
        from pydicom.pixels.decoders import pylibjpeg
        from pydicom.pixels.decoders.base import get_decoder
        from cubepacs.cube.codecs import _checked_plugin
        get_decoder(syntax)._available.clear()
        def theirs(src, runner):  # given bytes, as pydicom gives them (ours are handed a view of the value)
            return pylibjpeg._decode_frame(bytes(src), runner)
        get_decoder(syntax)._available["pylibjpeg"] = _checked_plugin(syntax, theirs)
    rng, refused, first = random.Random(1), 0, 0.0
    for k in range(200 + n):
        if k == 200:
            gc.collect(); first = rss()
        bad = bytearray(src)
        for _ in range(rng.randrange(1, 8)):  # in the scan, past the headers: what reaches the decoder
            bad[rng.randrange(len(src) // 4, len(src) - 2)] = rng.randrange(256)
        try:
            framedecode.encapsulated_frame(memoryview(encapsulate([bytes(bad)])), d, syntax, 0, "x")
        except CodecError:
            refused += 1
    gc.collect()
    print(rss() - first, refused)
""")


def _growth(path: Path, which: str, n: int) -> tuple[float, int]:
    script = LEAK_SCRIPT.format(fuzz=str(ROOT / "fuzz"))
    out = subprocess.run([sys.executable, "-c", script, str(path), which, str(n)], capture_output=True, text=True,
                         cwd=ROOT, timeout=300, check=True)  # fmt: skip
    mb, refused = out.stdout.split()
    return float(mb), int(refused)


@pytest.mark.parametrize("name", ["ts_jpeg_lossless_sv1_dcmtk_siemens_mr.dcm", "jpeg_baseline_rgb_dcmtk_sc.dcm"])
def test_corrupted_frames_do_not_grow_the_process(name: str) -> None:
    """fuzz/rss.py's method in a subprocess: RSS growth over 1,000 corrupted frames after a warm-up of 200. Under
    pylibjpeg-libjpeg (wrapped as it was) the same inputs grow the process by tens of MB — the test sees the leak;
    under our plugin the growth stays under 5 MB."""
    path = mutants.SINGLE / name
    leaked, _ = _growth(path, "pylibjpeg", 1000)
    grown, refused = _growth(path, "ours", 1000)
    assert leaked > 10, f"pylibjpeg-libjpeg grew {leaked:.1f} MB: the test no longer shows the leak"
    assert grown < 5, f"{grown:.1f} MB over 1,000 corrupted frames ({refused} refused)"


def _jpeg_ls_files() -> list[Path]:
    out = []
    for path in sorted(mutants.DATA.rglob("*")):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
            if str(ds.file_meta.TransferSyntaxUID) in guard.JPEG_LS and "Rows" in ds:
                out.append(path)
        except Exception:
            continue
    return out


def test_jpeg_ls_is_charls_alone_and_equals_pylibjpeg() -> None:
    """JPEG-LS is decoded by CharLS alone (``pydicomview.jpegls_frame``, through imagecodecs, from the stored value
    in place) — pylibjpeg-libjpeg leaks on corrupted JPEG-LS streams — and every frame of every JPEG-LS file of the
    data set equals pylibjpeg-libjpeg's (the other implementation; JPEG-LS decoding is exact) and pydicom's pyjpegls
    plugin's."""
    files = _jpeg_ls_files()
    assert files, "no JPEG-LS file in ../shared/data"
    for syntax in guard.JPEG_LS:
        assert list(get_decoder(syntax)._available) == ["cubepacs-jpegls"], syntax
    for path in files:
        syntax = str(pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID)
        ours = _pixels(path, raw=True)
        for name in ("pylibjpeg", "pyjpegls"):
            with plugin(syntax, name):
                theirs = _pixels(path, raw=True)
            np.testing.assert_array_equal(ours, theirs, err_msg=f"{path.name} against {name}")


def _with_frame(path: Path, stream: bytes, frames: int | None = None) -> bytes:
    """The file at ``path`` with its one frame replaced by ``stream`` (``frames``: its Number of Frames set)."""
    import io

    ds = pydicom.dcmread(path)
    ds.PixelData = encapsulate([stream])
    if frames is not None and "NumberOfFrames" in ds:
        ds.NumberOfFrames = frames
    out = io.BytesIO()
    ds.save_as(out)
    return out.getvalue()


def test_progressive_and_many_scan_streams_are_refused_before_decoding() -> None:
    """A JPEG stream must be of its syntax's process (PS3.5 A.4.1: Baseline SOF0; Extended SOF0/SOF1; Lossless
    SOF3) with one scan a component at most: a progressive stream's scans each revisit the whole image, so their
    number bounds nothing. Made here from the real baseline RGB: its pixels re-encoded progressive by Pillow (SOF2)
    under JPEG Baseline, and its own stream with its scan repeated 50 times — both refused by the cube (on a view,
    before decoding) and by pydicom with our plugin, naming the cause; the real stream still decodes."""
    import io

    from PIL import Image

    path = mutants.SINGLE / "jpeg_baseline_rgb_dcmtk_sc.dcm"
    ds = pydicom.dcmread(path)
    stream = bytes(next(generate_frames(ds.PixelData, number_of_frames=1)))
    buf = io.BytesIO()
    Image.fromarray(pixel_array(path)).save(buf, "JPEG", progressive=True, quality=90)
    progressive = buf.getvalue()
    sos, eoi = stream.index(b"\xff\xda"), stream.rindex(b"\xff\xd9")
    repeated = stream[:eoi] + stream[sos:eoi] * 50 + stream[eoi:]
    for crafted, why in ((progressive, "SOF2"), (repeated, "more scans than its 3 components")):
        data = _with_frame(path, crafted)
        with pytest.raises(CodecError, match=why):
            CubeReader(mutants.cube_of(data)).frame(0)
        with pytest.raises(Exception, match=why), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pixel_array(io.BytesIO(data))
    assert CubeReader(mutants.cube_of(_with_frame(path, stream))).frame(0).shape == (100, 100, 3)


@pytest.mark.parametrize(("path", "syntax"), DECODABLE, ids=lambda v: getattr(v, "name", v))
def test_every_jpeg_file_with_its_scan_repeated_is_refused(path: Path, syntax: str) -> None:
    """Every JPEG file of ../shared/data (baseline, extended, lossless, each folder): its first frame's stream with
    its last scan repeated (one scan more than its components: ISO/IEC 10918-1 has each component in one scan of
    a sequential or lossless process) is refused by the cube, naming the cause; the real frame still decodes, to
    pydicom's own plugins' frame (``tests/pixeloracle``)."""
    import io

    from tests.pixeloracle import reference_decoders, same_pixels

    ds = pydicom.dcmread(path)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    stream = bytes(next(generate_frames(ds.PixelData, number_of_frames=frames)))
    sos, eoi = stream.rindex(b"\xff\xda"), stream.rindex(b"\xff\xd9")
    components = guard.jpeg_header(stream)[2]  # one scan more than components, within the size bound
    crafted = _with_frame(path, stream[:eoi] + stream[sos:eoi] * components + stream[eoi:], frames=1)
    with pytest.raises(CodecError, match="more scans than its"):
        CubeReader(mutants.cube_of(crafted)).frame(0)
    real = _with_frame(path, stream, frames=1)
    with reference_decoders(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = pixel_array(io.BytesIO(real), index=0, raw=True)
    assert same_pixels(CubeReader(mutants.cube_of(real)).frame(0), want, syntax)
