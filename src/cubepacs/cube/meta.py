"""Series metadata: every instance's encoded elements, shared ones stored once, values decoded on demand.

Example
-------
>>> import cubepacs
>>> from cubepacs.dicom import CommonTags
>>> image = cubepacs.load_from_dicom_folder("../shared/data/series/ct_philips_ingenuity_tilt_54sl")
>>> meta = image.dicom_meta
>>> meta.is_shared(CommonTags.PatientID), meta.get_values(CommonTags.InstanceNumber)[:3]
(True, [1, 2, 3])
>>> meta.get_array(CommonTags.ImagePositionPatient).shape
(54, 3)
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Sequence
from io import BytesIO
from typing import Any, TypeVar

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.tag import Tag, TagType

from cubepacs.cube.columns import COLUMNS, INT_MISSING
from cubepacs.dicom.rawfile import DEFLATED, KEY_OPAQUE, encoding_of
from cubepacs.dicom.values import json_value, parse_elements
from cubepacs.errors import CubepacsError, InvalidCubeError

_CHARSET = 0x00080005
_BY_TAG = {tag: name for name, (tag, _, _) in COLUMNS.items()}


class _BadTag(KeyError):
    """A caller's tag that is not one (the caller's error, not the cube's)."""


def _tag(tag: TagType | str) -> int:
    try:
        return int(Tag(tag))
    except Exception as exc:
        raise _BadTag(f"not a DICOM tag or keyword: {tag!r} ({type(exc).__name__})") from None


F = TypeVar("F", bound=Callable[..., Any])


def _declared(method: F) -> F:
    """An accessor whose every failure to decode what the cube holds is :class:`InvalidCubeError` naming the
    cube (a caller's bad tag stays a ``KeyError``)."""

    @functools.wraps(method)
    def wrapper(self: DicomMeta, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except (CubepacsError, _BadTag):
            raise
        except Exception as exc:
            raise InvalidCubeError(self.source, "meta", f"{method.__name__}: {type(exc).__name__}: "
                                                        f"{str(exc)[:200]}") from None

    return wrapper  # type: ignore[return-value]


class DicomMeta:
    """The metadata of a series of instances (dicube-compatible accessors plus typed arrays).

    Values follow the DICOM JSON model: numbers as int/float, person names as ``{"Alphabetic": …}``,
    multi-valued elements as lists, single values unwrapped.
    """

    def __init__(self, *, names: Sequence[str], syntaxes: Sequence[str], pool_keys: np.ndarray,
                 pool_offsets: np.ndarray, pool_data: bytes | memoryview, refs: np.ndarray, starts: np.ndarray,
                 columns: dict[str, np.ndarray], qc: dict[str, Any], source: str = "<meta>") -> None:
        self.source = source  # the cube it was read from, named by errors
        self.names = list(names)
        self.syntaxes = list(syntaxes)
        self._pool_keys = pool_keys
        self._pool_offsets = pool_offsets
        self._pool_data = pool_data
        self._refs = refs
        self._starts = starts
        self._columns = columns
        self.qc = qc
        self._ref_keys: np.ndarray | None = None
        self._cache: dict[tuple[int, int, str], Any] = {}
        self._deflated: dict[int, Dataset] = {}

    @property
    def slice_count(self) -> int:
        """Number of instances (dicube's name)."""
        return len(self.names)

    num_instances = slice_count

    def __len__(self) -> int:
        return len(self.names)

    def columns(self) -> dict[str, np.ndarray]:
        """The typed columns by name (see :meth:`get_array`)."""
        return dict(self._columns)

    def pool_arrays(self) -> tuple[np.ndarray, np.ndarray, bytes | memoryview, np.ndarray, np.ndarray]:
        """The element pool and per-instance references: (keys, offsets, data, refs, starts)."""
        return self._pool_keys, self._pool_offsets, self._pool_data, self._refs, self._starts

    def chunk(self, p: int) -> bytes:
        """Bytes of pool entry ``p``."""
        return bytes(self._pool_data[int(self._pool_offsets[p]) : int(self._pool_offsets[p + 1])])

    def instance_refs(self, i: int) -> np.ndarray:
        """Pool indices of instance ``i``'s chunks, in file order."""
        return self._refs[int(self._starts[i]) : int(self._starts[i + 1])]

    def pool_key(self, p: int) -> int:
        """The key (tag, or a negative special key) of pool entry ``p``."""
        return int(self._pool_keys[p])

    def _tag_refs(self, tag: int) -> np.ndarray:
        """Per instance, the pool index of its element ``tag`` (-1 when absent)."""
        if self._ref_keys is None:
            self._ref_keys = self._pool_keys[self._refs]
        hits = np.flatnonzero(self._ref_keys == tag)
        out = np.full(len(self.names), -1, np.int64)
        inst = np.searchsorted(self._starts, hits, side="right") - 1
        out[inst] = self._refs[hits]
        return out

    def _value(self, i: int, p: int, tag: int) -> Any:
        syntax = self.syntaxes[i]
        charset = -1
        if tag >> 16 != 0x0002:
            cs = self._tag_refs(_CHARSET)[i] if tag != _CHARSET else -1
            charset = int(cs)
        key = (p, charset, syntax)
        if key not in self._cache:
            implicit, little = (False, True) if tag >> 16 == 0x0002 else encoding_of(syntax)
            parts = ([self.chunk(charset)] if charset >= 0 else []) + [self.chunk(p)]
            ds = parse_elements(parts, implicit, little)
            self._cache[key] = json_value(ds[tag])
        return self._cache[key]

    def _deflated_dataset(self, i: int) -> Dataset:
        if i not in self._deflated:
            from cubepacs.dicom.rawfile import inflate

            body = next(self.chunk(int(p)) for p in self.instance_refs(i) if self.pool_key(int(p)) == KEY_OPAQUE)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self._deflated[i] = pydicom.dcmread(BytesIO(inflate(body, self.names[i])), force=True,
                                                    stop_before_pixels=True)
        return self._deflated[i]

    @_declared
    def get_values(self, tag: TagType | str) -> list[Any]:
        """The value of ``tag`` in every instance (``None`` where absent), in series order.

        Example
        -------
        >>> import cubepacs
        >>> meta = cubepacs.load_from_dicom_folder("../shared/data/series/ct_philips_ingenuity_tilt_54sl").dicom_meta
        >>> meta.get_values("SliceThickness")[:2]
        [2.5, 2.5]
        """
        t = _tag(tag)
        refs = self._tag_refs(t)
        out: list[Any] = []
        for i, p in enumerate(refs.tolist()):
            if p >= 0:
                out.append(self._value(i, p, t))
            elif self.syntaxes[i] in DEFLATED and t >> 16 != 0x0002 and t in self._deflated_dataset(i):
                out.append(json_value(self._deflated_dataset(i)[t]))
            else:
                out.append(None)
        return out

    @_declared
    def is_shared(self, tag: TagType | str) -> bool:
        """True when every instance holds ``tag`` with identical encoded bytes (stored once in the cube)."""
        refs = self._tag_refs(_tag(tag))
        return bool(len(refs)) and bool((refs >= 0).all()) and bool((refs == refs[0]).all())

    def is_missing(self, tag: TagType | str) -> bool:
        """True when no instance has a value for ``tag``."""
        return all(v is None for v in self.get_values(tag))

    def get_shared_value(self, tag: TagType | str) -> Any:
        """The value of ``tag`` when it is the same in every instance; ``None`` when absent everywhere.

        Raises ``ValueError`` when instances differ (use :meth:`get_values`), as dicube does.

        Example
        -------
        >>> import cubepacs
        >>> from cubepacs.dicom import CommonTags
        >>> meta = cubepacs.load_from_dicom_folder("../shared/data/series/ct_philips_ingenuity_tilt_54sl").dicom_meta
        >>> meta.get_shared_value(CommonTags.Modality)
        'CT'
        """
        values = self.get_values(tag)
        if all(v is None for v in values):
            return None
        if any(v != values[0] for v in values):
            raise ValueError(f"tag {Tag(_tag(tag))} is not shared: instances hold different values")
        return values[0]

    @_declared
    def get_vr(self, tag: TagType | str) -> str | None:
        """The VR of ``tag`` as encoded in the first instance that has it."""
        t = _tag(tag)
        for i, p in enumerate(self._tag_refs(t).tolist()):
            if p >= 0:
                implicit, little = (False, True) if t >> 16 == 0x0002 else encoding_of(self.syntaxes[i])
                return str(parse_elements([self.chunk(p)], implicit, little)[t].VR)
        return None

    @_declared
    def keys(self) -> list[str]:
        """Every top-level tag present in any instance, as ``ggggeeee`` hex strings, sorted."""
        keys = np.unique(self._pool_keys[self._refs])
        return [f"{k:08X}" for k in keys.tolist() if k >= 0]

    def get_array(self, tag_or_name: TagType | str) -> np.ndarray:
        """A typed column: float (n, k) with NaN where absent, or int (n,) for InstanceNumber/AcquisitionNumber.

        Columns: """ + ", ".join(COLUMNS) + """.
        """
        name = tag_or_name if isinstance(tag_or_name, str) and tag_or_name in COLUMNS else None
        if name is None:
            name = _BY_TAG.get(_tag(tag_or_name))
        if name is None:
            raise KeyError(f"no typed column for {tag_or_name!r}; columns: {', '.join(COLUMNS)}")
        return self._columns[name]

    @_declared
    def instance_numbers(self) -> list[int | None]:
        """InstanceNumber per instance (None where absent)."""
        return [None if v == INT_MISSING else int(v) for v in self._columns["InstanceNumber"].tolist()]

    @_declared
    def dataset(self, i: int) -> Dataset:
        """Instance ``i``'s top-level elements (no pixel data) as a pydicom Dataset."""
        if self.syntaxes[i] in DEFLATED:
            return self._deflated_dataset(i)
        implicit, little = encoding_of(self.syntaxes[i])
        parts = [self.chunk(int(p)) for p in self.instance_refs(i).tolist()
                 if self.pool_key(int(p)) >= 0 and self.pool_key(int(p)) >> 16 not in (0x0002, 0x7FE0)]
        ds = parse_elements(parts, implicit, little)
        for _ in ds.iterall():  # every value decoded here, so that a bad one is this call's InvalidCubeError
            pass
        return ds
