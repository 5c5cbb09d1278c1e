"""Lossless frame codecs of the cube, each with a one-byte id recorded per frame in the file.

=========  ====  ==========================================================================================
name       id    what
=========  ====  ==========================================================================================
``raw``    0     bytes kept as they came (original compressed fragments of encapsulated input)
``zstd``   1     Zstandard level 3 on the frame bytes: any dtype, any layout (float, 1-bit, 32-bit, YBR_422)
``htj2k``  2     High-Throughput JPEG 2000, reversible (OpenJPH via imagecodecs): the default
``jpegls`` 3     JPEG-LS lossless (CharLS via imagecodecs): the compact archival option
``jxl``    4     JPEG XL lossless, effort 3 (libjxl via imagecodecs)
``blosc2`` 5     Blosc2 LZ4 + byte shuffle: the fastest to decode, the largest
=========  ====  ==========================================================================================

Image codecs take 8/16-bit integer frames with 1 or 3 samples; anything else falls back to ``zstd``. Signed
frames are mapped to unsigned (sign bit flipped) for codecs without signed support, and back on decode.

Every native decoder call goes through :func:`native_call`: whatever it raises — a C library's error, numpy's,
a Rust panic (``pyo3_runtime.PanicException``, a ``BaseException``) — becomes :class:`CodecError`. pydicom's own
decoding plugins (pylibjpeg-libjpeg, pylibjpeg-openjpeg, …) are wrapped the same way by :func:`harden_pydicom`
(called on import), and their RLE header or JPEG/JPEG-LS/J2K codestream header is checked against the dataset's
geometry before the plugin sees the bytes, so that every caller — cube frames, rendered images, transcoding,
``ds.decompress()`` — gets a declared error. RLE has one plugin, ours (``cube/rle.py``: imagecodecs' PackBits
decoder into a bounded plane), in place of pylibjpeg-rle (whose decoder panics) and pydicom's pure-Python one.
The JPEG syntaxes (Baseline, Extended, Lossless) have one plugin too, ours (``cube/jpegplugin.py``: libjpeg-turbo
through imagecodecs), in place of pylibjpeg-libjpeg (which leaks native memory on corrupted codestreams) and Pillow;
so do JPEG-LS (CharLS through imagecodecs) and J2K/HTJ2K (OpenJPEG through pylibjpeg-openjpeg's extension), which
``cube/pydicomview.py`` decodes from a view of the stored value rather than a copy.

Example
-------
>>> import numpy as np
>>> from cubepacs.cube.codecs import get_codec
>>> frame = np.arange(64, dtype=np.int16).reshape(8, 8) - 30
>>> codec = get_codec("htj2k")
>>> out = np.empty_like(frame)
>>> codec.decode(codec.encode(frame), out)
>>> bool((out == frame).all())
True
"""

from __future__ import annotations

import difflib
import logging
import sys
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

import imagecodecs
import numpy as np

from cubepacs.cube import guard
from cubepacs.errors import CodecError

_ic: Any = imagecodecs  # imagecodecs' stubs do not admit memoryview, which every codec accepts

DEFAULT_CODEC = "htj2k"
_FATAL = (KeyboardInterrupt, SystemExit, GeneratorExit)  # what a decoder failure may never be turned into
T = TypeVar("T")


_CALLS = threading.local()  # per thread: the failures a decoder swallowed during the native_call under way (text)


def _unraisable(hook: Any) -> None:
    """``sys.unraisablehook``: an exception a native decoder raised in a callback that cannot propagate it
    (imagecodecs' HTJ2K ``_copy_from_codestream`` on a corrupted codestream: "ojph error", printed with a traceback
    while the decoder returned a half-filled frame) is kept for the ``native_call`` under way on this thread,
    which raises it as CodecError; any other goes to the hook that was there before."""
    stack = getattr(_CALLS, "stack", None)
    if stack:  # its name and text only: the exception's traceback holds the decoder's frames (64 KB each, #27)
        stack[-1].append(f"{getattr(hook.exc_type, '__name__', 'Error')}: {str(hook.exc_value)[:200]}")
        return
    _PREVIOUS_HOOK[0](hook)


_PREVIOUS_HOOK = [sys.unraisablehook]


def _hook_installed() -> None:
    """Put :func:`_unraisable` in front of whatever hook is there now (a test runner may have set its own)."""
    if sys.unraisablehook is not _unraisable:
        _PREVIOUS_HOOK[0] = sys.unraisablehook
        sys.unraisablehook = _unraisable


def native_call(what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)``, any failure but an interrupt raised as :class:`CodecError` naming ``what``.

    Example
    -------
    >>> native_call("frame 3", imagecodecs.zstd_decode, b"not zstd")
    Traceback (most recent call last):
    ...
    cubepacs.errors.CodecError: frame 3: ZstdError: ...
    """
    _hook_installed()
    stack = _CALLS.__dict__.setdefault("stack", [])
    stack.append([])
    try:
        result = fn(*args, **kwargs)
    except CodecError:
        raise
    except BaseException as exc:  # a Rust panic is a BaseException
        if isinstance(exc, _FATAL):
            raise
        text = " ".join(str(exc).split())  # one line: pydicom lists every plugin's failure on its own line
        raise CodecError(f"{what}: {type(exc).__name__}: {text[:400]}") from None
    finally:
        swallowed = stack.pop()
    if swallowed:
        raise CodecError(f"{what}: {swallowed[0]} (inside the decoder, which went on)")
    return result


class Codec(ABC):
    """A lossless frame codec: ``encode(array) -> bytes`` and ``decode(bytes, out)`` filling ``out``."""

    id: ClassVar[int]
    name: ClassVar[str]
    releases_gil: ClassVar[bool] = True

    def accepts(self, frame: np.ndarray) -> bool:
        """True when this codec can encode ``frame`` losslessly."""
        return (
            frame.dtype.kind in "iu"
            and frame.dtype.itemsize in (1, 2)
            and frame.ndim in (2, 3)
            and (frame.ndim == 2 or frame.shape[2] in (1, 3))
        )

    @abstractmethod
    def encode(self, frame: np.ndarray) -> bytes:
        """Encode one frame (rows × cols [× samples], native byte order)."""

    def decode(self, data: bytes | memoryview, out: np.ndarray) -> None:
        """Decode ``data`` into ``out`` (shape and dtype of the original frame); :class:`CodecError` on any
        failure of the decoder."""
        native_call(f"{self.name} decoder", self._decode, data, out)

    @abstractmethod
    def _decode(self, data: bytes | memoryview, out: np.ndarray) -> None:
        """The decoder proper (:meth:`decode` maps its failures)."""


def _to_unsigned(frame: np.ndarray) -> np.ndarray:
    if frame.dtype.kind != "i":
        return frame
    udt = np.dtype(f"u{frame.dtype.itemsize}")
    flipped: np.ndarray = frame.view(udt) ^ udt.type(1 << (8 * frame.dtype.itemsize - 1))
    return flipped


def _from_unsigned(decoded: np.ndarray, out: np.ndarray) -> None:
    if out.dtype.kind == "i":
        flip = decoded.dtype.type(1 << (8 * out.dtype.itemsize - 1))
        np.bitwise_xor(decoded, flip, out=out.view(decoded.dtype))
    else:
        out[...] = decoded.reshape(out.shape)


class RawCodec(Codec):
    id = 0
    name = "raw"

    def accepts(self, frame: np.ndarray) -> bool:
        return True

    def encode(self, frame: np.ndarray) -> bytes:
        return frame.tobytes()

    def _decode(self, data: bytes | memoryview, out: np.ndarray) -> None:
        out.reshape(-1).view(np.uint8)[:] = np.frombuffer(data, np.uint8)


class ZstdCodec(Codec):
    id = 1
    name = "zstd"

    def accepts(self, frame: np.ndarray) -> bool:
        return True

    def encode(self, frame: np.ndarray) -> bytes:
        return bytes(_ic.zstd_encode(np.ascontiguousarray(frame).tobytes(), level=3))

    def _decode(self, data: bytes | memoryview, out: np.ndarray) -> None:
        if guard.zstd_size(data) != out.nbytes:  # bounded before anything is allocated
            raise CodecError(f"Zstandard frame declares {guard.zstd_size(data)} bytes; expected {out.nbytes}")
        out.reshape(-1).view(np.uint8)[:] = np.frombuffer(_ic.zstd_decode(data), np.uint8)


class Htj2kCodec(Codec):
    """HTJ2K through imagecodecs (OpenJPH).

    OpenJPH fills its coding tables on first use without a lock: two threads encoding or decoding first at the
    same time could get a frame that is not bit-exact or an "ojph error" (seen here in 5 of 20 fresh processes
    running two threads; 0 of 20 after one round trip in one thread first). So the first use in a process is one
    small round trip under a lock.
    """

    id = 2
    name = "htj2k"
    _ready = False
    _lock = threading.Lock()

    @classmethod
    def _warm(cls) -> None:
        with cls._lock:
            if not cls._ready:
                _ic.htj2k_decode(_ic.htj2k_encode(np.zeros((16, 16), np.uint16)))
                cls._ready = True

    def encode(self, frame: np.ndarray) -> bytes:
        if not self._ready:
            self._warm()
        return bytes(_ic.htj2k_encode(np.ascontiguousarray(frame)))

    def _decode(self, data: bytes | memoryview, out: np.ndarray) -> None:
        if not self._ready:
            self._warm()
        if out.flags.c_contiguous:
            _ic.htj2k_decode(data, out=out)
        else:
            out[...] = _ic.htj2k_decode(data).reshape(out.shape)


class JpeglsCodec(Codec):
    id = 3
    name = "jpegls"

    def encode(self, frame: np.ndarray) -> bytes:
        return bytes(_ic.jpegls_encode(np.ascontiguousarray(_to_unsigned(frame))))

    def _decode(self, data: bytes | memoryview, out: np.ndarray) -> None:
        _from_unsigned(_ic.jpegls_decode(data).reshape(out.shape), out)


class JxlCodec(Codec):
    id = 4
    name = "jxl"

    def encode(self, frame: np.ndarray) -> bytes:
        return bytes(_ic.jpegxl_encode(np.ascontiguousarray(_to_unsigned(frame)), lossless=True, effort=3))

    def _decode(self, data: bytes | memoryview, out: np.ndarray) -> None:
        _from_unsigned(_ic.jpegxl_decode(data).reshape(out.shape), out)


class Blosc2Codec(Codec):
    id = 5
    name = "blosc2"
    releases_gil = False

    def accepts(self, frame: np.ndarray) -> bool:
        return True

    def encode(self, frame: np.ndarray) -> bytes:
        import blosc2

        return bytes(
            blosc2.compress2(
                np.ascontiguousarray(frame).tobytes(),
                typesize=frame.dtype.itemsize,
                clevel=5,
                codec=blosc2.Codec.LZ4,
                filters=[blosc2.Filter.SHUFFLE],
                nthreads=1,
            )
        )

    def _decode(self, data: bytes | memoryview, out: np.ndarray) -> None:
        import blosc2

        guard.blosc2_header(data, out.nbytes)
        blosc2.decompress2(data, dst=out.reshape(-1).view(np.uint8), nthreads=1)


_CODECS: dict[str, Codec] = {
    c.name: c for c in (RawCodec(), ZstdCodec(), Htj2kCodec(), JpeglsCodec(), JxlCodec(), Blosc2Codec())
}
_BY_ID: dict[int, Codec] = {c.id: c for c in _CODECS.values()}
CODEC_NAMES = tuple(n for n in _CODECS if n != "raw")


def get_codec(name_or_id: str | int) -> Codec:
    """Return the codec registered under a name (``"htj2k"``) or id (``2``).

    Example
    -------
    >>> get_codec(3).name
    'jpegls'
    >>> get_codec("htk2j")
    Traceback (most recent call last):
    ...
    cubepacs.errors.CodecError: unknown codec 'htk2j' (did you mean 'htj2k'?); known: zstd, htj2k, jpegls, jxl, blosc2
    """
    if isinstance(name_or_id, int):
        try:
            return _BY_ID[name_or_id]
        except KeyError:
            raise CodecError(f"unknown codec id {name_or_id} (this reader knows {sorted(_BY_ID)})") from None
    codec = _CODECS.get(name_or_id)
    if codec is None:
        near = difflib.get_close_matches(name_or_id, CODEC_NAMES, n=1)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        raise CodecError(f"unknown codec {name_or_id!r}{hint}; known: {', '.join(CODEC_NAMES)}")
    return codec


_HARDENED: list[bool] = []  # one entry once done


def _checked_plugin(uid: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """pydicom decoding plugin ``func`` for ``uid``: the frame's codestream header checked against the runner's
    geometry first, any failure of the plugin (a Rust panic included) raised as :class:`CodecError` — an
    ``Exception``, so that pydicom tries its next plugin and ends with its own error, never a ``BaseException``."""

    def plugin(src: bytes, runner: Any) -> Any:
        rows, cols = int(runner.rows), int(runner.columns)
        spp, bits = int(runner.samples_per_pixel), int(runner.bits_allocated)
        guard.check_codestream(uid, src, rows, cols, spp, bits)
        out = native_call(f"{getattr(func, '__module__', 'plugin')}", func, src, runner)
        # pydicom puts the frame into an array of exactly this size (the plugin may have lowered bits_allocated):
        # a codestream that decodes to another size (its header agreed) is the codestream's fault, not a ValueError
        want = int(runner.frame_length(unit="pixels")) * runner.pixel_dtype.itemsize
        if len(out) != want:
            raise CodecError(
                f"the codestream decoded to {len(out)} bytes; its frame of {rows} × {cols} × {spp}, "
                f"{bits} bits holds {want}"
            )
        return out

    plugin.__wrapped__ = func  # type: ignore[attr-defined]
    return plugin


def _one_line(record: logging.LogRecord) -> bool:
    """pydicom logs every failed decoding plugin with its traceback (``LOGGER.exception``): one line each here, the
    error itself being raised to the caller."""
    if record.exc_info:
        record.exc_info, record.exc_text = None, None
        record.levelno, record.levelname = logging.INFO, "INFO"
    return True


def harden_pydicom() -> None:
    """Wrap every pydicom pixel decoding plugin once per process (see the module docstring); idempotent.

    Example
    -------
    >>> harden_pydicom()
    >>> from pydicom.pixels import get_decoder
    >>> all(hasattr(f, "__wrapped__") for f in get_decoder("1.2.840.10008.1.2.5")._available.values())
    True
    """
    if _HARDENED:
        return
    from pydicom.pixels.decoders import base

    base.LOGGER.addFilter(_one_line)  # the module's own logger: a parent's filters do not see its records

    from cubepacs.cube import jpegplugin, pydicomview, rle

    pydicomview.install()  # a frame found in place is decoded from a view of the value, not a copy
    for uid, (decoder, _) in base._PIXEL_DATA_DECODERS.items():
        available: dict[str, Callable[..., Any]] = decoder._available
        if str(uid) == guard.RLE:  # ours only: pylibjpeg-rle panics, pydicom's own is pure Python (cube/rle.py)
            available.clear()
            available["cubepacs"] = rle.pydicom_plugin
        if str(uid) in jpegplugin.SYNTAXES:  # ours only: pylibjpeg-libjpeg leaks on corrupted streams (#27)
            available.clear()
            available[jpegplugin.NAME] = jpegplugin.decode_frame
        if str(uid) in guard.JPEG_LS:  # CharLS only (pylibjpeg-libjpeg leaks here too: +3.6 MB per 1,000 corrupted
            available.clear()  # frames, security.md), through imagecodecs from a view (pyjpegls copies the stream)
            available["cubepacs-jpegls"] = pydicomview.jpegls_frame
        if str(uid) in guard.J2K and "pylibjpeg" in available:  # OpenJPEG read in place, not from a copy
            available.clear()
            available["cubepacs-j2k"] = pydicomview.j2k_frame
        for name, func in list(available.items()):
            if not hasattr(func, "__wrapped__"):
                available[name] = _checked_plugin(str(uid), func)
    _HARDENED.append(True)


harden_pydicom()
