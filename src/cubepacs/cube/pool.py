"""The series' element pool: every encoded element of every instance stored once, and the metadata built on it.

Both the writer (a cube file) and the in-memory image (``load_from_dicom_folder``) build series metadata from
the same pool, so it lives here, below both.

Example
-------
>>> from cubepacs.cube.sources import read_instances
>>> insts = read_instances("../shared/data/series/ct_philips_ingenuity_tilt_54sl")
>>> meta = meta_from_instances(insts)
>>> len(meta.names)
54
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cubepacs.cube.columns import COLUMNS, column_values
from cubepacs.cube.meta import DicomMeta
from cubepacs.cube.qc import run_qc
from cubepacs.cube.sources import Instance
from cubepacs.dicom.rawfile import KEY_PIXEL_VALUE

KEY_PIXEL_TAIL = -4  # bytes of a native pixel value after its last frame (padding)


def pool_and_refs(instances: Sequence[Instance]) -> tuple[list[int], list[bytes], list[int], list[int]]:
    """Deduplicate every chunk of every instance: pool keys, pool data, flat refs, per-instance starts.

    Example
    -------
    >>> from cubepacs.cube.sources import read_instances
    >>> insts = read_instances("../shared/data/series/ct_philips_ingenuity_tilt_54sl")
    >>> keys, datas, refs, starts = pool_and_refs(insts)
    >>> len(starts) == 55 and len(datas) < len(refs)
    True
    """
    index: dict[tuple[int, bytes], int] = {}
    keys: list[int] = []
    datas: list[bytes] = []
    refs: list[int] = []
    starts = [0]

    def ref(key: int, data: bytes) -> None:
        i = index.get((key, data))
        if i is None:
            i = index[(key, data)] = len(keys)
            keys.append(key)
            datas.append(data)
        refs.append(i)

    for inst in instances:
        for c in inst.raw.chunks:
            ref(c.key, c.data)
            if c.key == KEY_PIXEL_VALUE and inst.desc is not None and inst.desc.mode == "native":
                tail = bytes(memoryview(inst.raw.pixel_value)[inst.desc.frames * inst.desc.frame_bytes :])
                if tail:
                    ref(KEY_PIXEL_TAIL, tail)
        starts.append(len(refs))
    return keys, datas, refs, starts


def meta_from_instances(instances: Sequence[Instance]) -> DicomMeta:
    """Build series metadata from instances in memory (the same structure a cube stores).

    Example: see the module docstring.
    """
    keys, datas, refs, starts = pool_and_refs(instances)
    offsets = np.zeros(len(datas) + 1, np.uint64)
    np.cumsum([len(d) for d in datas], out=offsets[1:])
    return DicomMeta(
        names=[i.name for i in instances], syntaxes=[i.raw.transfer_syntax for i in instances],
        pool_keys=np.array(keys, np.int64), pool_offsets=offsets, pool_data=b"".join(datas),
        refs=np.array(refs, np.uint32), starts=np.array(starts, np.uint64),
        columns={name: column_values(instances, name) for name in COLUMNS}, qc=run_qc(instances),
    )
