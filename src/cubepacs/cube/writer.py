"""Write instances into a ``.dcbs`` cube: deduplicated element pool, typed columns, encoded frames.

Example
-------
>>> import tempfile, os
>>> from cubepacs.cube.sources import read_instances
>>> insts = read_instances("../shared/data/series/ct_philips_ingenuity_tilt_54sl")
>>> path = os.path.join(tempfile.mkdtemp(), "x.dcbs")
>>> write_cube(insts, path, codec="blosc2") > 0
True
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any

import numpy as np

from cubepacs._atomic import atomic_write
from cubepacs.cube.codecs import DEFAULT_CODEC, get_codec
from cubepacs.cube.columns import COLUMNS
from cubepacs.cube.format import (
    FRAME_DTYPE,
    HEADER_SIZE,
    WHOLE_VALUE,
    BlobWriter,
    Header,
    checksum,
    encode_meta,
)
from cubepacs.cube.meta import DicomMeta
from cubepacs.cube.pixels import split_frames
from cubepacs.cube.pool import meta_from_instances
from cubepacs.cube.sources import Instance
from cubepacs.errors import CodecError

Progress = Callable[[int], None]


def _frame_tasks(instances: Sequence[Instance], codec: str) -> list[tuple[int, int, Any, int]]:
    """(instance, frame or WHOLE_VALUE, array or bytes, codec id) for every blob to store."""
    default = get_codec(codec)
    tasks: list[tuple[int, int, Any, int]] = []
    for i, inst in enumerate(instances):
        d = inst.desc
        if d is None or d.mode == "file":
            continue
        if d.mode == "native":
            frames, _ = split_frames(d, inst.raw.pixel_value)
            for k, arr in enumerate(frames):
                cid = default.id if default.accepts(arr) else get_codec("zstd").id
                tasks.append((i, k, arr, cid))
        else:
            cid = get_codec("raw" if d.mode == "encapsulated" else "zstd").id
            tasks.append((i, WHOLE_VALUE, inst.raw.pixel_value, cid))
    return tasks


def _exact(frame: np.ndarray, stored: int) -> bool:
    """Whether a frame's container values are its stored values: nothing above Bits Stored (unsigned), or the
    bits above it only the sign (signed) — what a viewer decoding the frame's codestream must get."""
    if frame.dtype.kind == "u":
        return not np.any(frame >> frame.dtype.type(stored))
    if frame.dtype.kind == "i":
        return bool(frame.min(initial=0) >= -(1 << (stored - 1)) and frame.max(initial=0) < (1 << (stored - 1)))
    return False


def _encode(task: tuple[int, int, Any, int], instances: Sequence[Instance], verify: bool) -> tuple[bytes, int]:
    i, k, payload, cid = task
    codec = get_codec(cid)
    if k == WHOLE_VALUE:
        data = payload if cid == 0 else codec.encode(np.frombuffer(payload, np.uint8))
        raw_sum = checksum(payload)
        if verify and cid != 0:
            out = np.empty(len(payload), np.uint8)
            codec.decode(data, out)
            if out.tobytes() != bytes(payload):
                raise CodecError(f"{instances[i].name}: {codec.name} round trip of the pixel value is not exact")
        return data, raw_sum
    d = instances[i].desc
    assert d is not None
    data = codec.encode(payload)
    raw_sum = checksum(memoryview(instances[i].raw.pixel_value)[k * d.frame_bytes : (k + 1) * d.frame_bytes])
    if verify:
        out = np.empty_like(payload)
        codec.decode(data, out)
        if not np.array_equal(out, payload):
            raise CodecError(f"{instances[i].name}: frame {k} is not bit-exact after {codec.name}; not written")
    return data, raw_sum


def build_cube(instances: Sequence[Instance], codec: str = DEFAULT_CODEC, threads: int | None = None,
               verify: bool = True, progress: Progress | None = None,
               meta: DicomMeta | None = None) -> list[bytes | memoryview]:
    """Encode ``instances`` (already in series order) into the parts of a cube file, header first.

    ``meta``, the metadata already built from the same instances, saves building the element pool again.
    """
    if meta is None:
        meta = meta_from_instances(instances)
    keys, pool_offsets, pool_data, refs, starts = meta.pool_arrays()
    blobs = BlobWriter()
    descs: list[dict[str, Any]] = []
    desc_idx = np.full(len(instances), -1, np.int32)
    for i, inst in enumerate(instances):
        if inst.desc is not None:
            j = next((n for n, x in enumerate(descs) if x == inst.desc.to_json()), None)
            if j is None:
                descs.append(inst.desc.to_json())
                j = len(descs) - 1
            desc_idx[i] = j
    syntaxes = sorted({inst.raw.transfer_syntax for inst in instances})
    doc: dict[str, Any] = {
        "instances": len(instances),
        "names": [inst.name for inst in instances],
        "codec": codec,
        "syntaxes": syntaxes,
        "syntax": blobs.add(np.array([syntaxes.index(x.raw.transfer_syntax) for x in instances], np.uint8)),
        "pool_keys": blobs.add(keys),
        "pool_offsets": blobs.add(pool_offsets),
        "pool_data": blobs.add(bytes(pool_data)),
        "refs": blobs.add(refs),
        "starts": blobs.add(starts),
        "pixel_descs": descs,
        "pixel_desc": blobs.add(desc_idx),
        "columns": {name: {"tag": COLUMNS[name][0], "sect": blobs.add(meta.get_array(name))} for name in COLUMNS},
        "qc": meta.qc,
    }
    tasks = _frame_tasks(instances, codec)
    workers = threads or min(8, os.cpu_count() or 1)
    encoded: list[tuple[bytes, int]] = []
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for n, item in enumerate(pool.map(lambda t: _encode(t, instances, verify), tasks)):
            encoded.append(item)
            if progress is not None:
                progress(n + 1)
    # instances whose Bits Stored is below Bits Allocated and whose every frame holds nothing above it: their
    # frames' codestreams decode to the stored values (a server may send them as they are; format.md)
    dirty = set()
    for i, k, payload, _ in tasks:  # one pass over the frames (not one per instance)
        stored = getattr(instances[i].desc, "stored", 0)
        if stored and k != WHOLE_VALUE and i not in dirty and not _exact(payload, stored):
            dirty.add(i)
    stored_exact = [i for i, inst in enumerate(instances) if inst.desc is not None and inst.desc.mode == "native"
                    and inst.desc.stored and i not in dirty]
    if stored_exact:
        doc["stored_exact"] = stored_exact
    index = np.zeros(len(tasks), FRAME_DTYPE)
    offset = 0
    for r, (task, (data, raw_sum)) in enumerate(zip(tasks, encoded, strict=True)):
        index[r] = (offset, len(data), checksum(data), raw_sum, task[0], task[1], task[3])
        offset += len(data)
    meta_block, meta_raw = encode_meta(doc, blobs)
    index_bytes = index.tobytes()
    header = Header(
        meta_offset=HEADER_SIZE, meta_length=len(meta_block), meta_raw_length=meta_raw,
        meta_checksum=checksum(meta_block),
        index_offset=HEADER_SIZE + len(meta_block), index_length=len(index_bytes),
        index_checksum=checksum(index_bytes),
        data_offset=HEADER_SIZE + len(meta_block) + len(index_bytes), data_length=offset,
    )
    return [header.pack(), meta_block, index_bytes, *(d for d, _ in encoded)]


def write_cube(instances: Sequence[Instance], dest: str | os.PathLike[str] | IO[bytes], codec: str = DEFAULT_CODEC,
               threads: int | None = None, verify: bool = True, progress: Progress | None = None,
               meta: DicomMeta | None = None) -> int:
    """Write a cube to a path (atomically: temp file, fsync, rename) or a binary file object; return its size."""
    parts = build_cube(instances, codec, threads, verify, progress, meta)
    size = sum(len(p) for p in parts)
    if not isinstance(dest, (str, os.PathLike)):
        for p in parts:
            dest.write(p)
        return size
    atomic_write(Path(dest), parts)
    return size
