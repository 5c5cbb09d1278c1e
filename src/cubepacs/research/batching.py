"""How :class:`~cubepacs.research.dataset.CubeDataset` items and batches cross from a DataLoader worker to the main
process: one tensor per item or batch, in shared memory that a worker reuses, and the default collate's rule for
them.

PyTorch sends every tensor from a worker through a shared-memory segment and a file descriptor of its own, and a
new segment costs its page faults twice (zeroed pages in the worker, freed pages in the main process): 16 slices
of 512² float32 are 4,096 pages, about half of a batch's cost in a worker here. So an image made in a worker is
made in a segment of this process's pool (:func:`shared`), with the item's metadata after it; the segment goes back
to the pool once the main process holds no tensor of it any more: the main process notes each segment it receives
(:func:`_rebuild_item`) and, at the next one, marks those it no longer uses free in their last word, which the
worker reads before reusing one. Nothing is reused while any tensor of it (a view, a NumPy array over it) or its
storage object (``tensor.untyped_storage()``) is alive in the main process. A tensor received from a worker and
sent on to a third process with ``torch.multiprocessing`` must be cloned first (or the dataset made with
``reuse_buffers=False``): the main process cannot see that process's use.

Example
-------
>>> batch = collate_list([Item(image=torch.zeros(2), source="a"), Item(image=torch.ones(2), source="b")])
>>> batch["source"], len(batch["image"])
(['a', 'b'], 2)
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Sequence
from typing import Any, overload

import numpy as np
import torch
from torch.utils.data._utils.collate import collate, default_collate_fn_map

__all__ = ["Item", "carried", "collate_list", "shared"]
SMALL = 1024  # tensors of at most this many elements cross a worker boundary packed into one
CARRY = 1 << 22  # an image of at most this many elements (not already in shared memory) carries them
TAIL = 15  # float32 values after an image made in shared memory: spacing, origin, orientation, index
POOL = 8  # shared-memory segments a worker keeps for reuse
# Set in a process once one of its items is pickled as made (a DataLoader with batch_size=None): from then on, in a
# worker, images are made in shared memory. Batched, items are collated first and never pickled alone: a shared
# segment per item would only cost (measured: 25 % fewer slices/s in batches of 16 with 2 workers).
_SENT_ALONE = [False]
_USE_COUNT = getattr(torch._C, "_storage_Use_Count", None)  # references to a storage (C++), None if not there
_pool: list[torch.UntypedStorage] = []  # in a worker: its segments (each held here, and by tensors while in use)
_held: dict[int, torch.UntypedStorage] = {}  # in the main process: segments received from workers, not yet free
_lock = threading.Lock()  # _held: batches are unpickled by the main thread or the pin-memory thread


def _forget() -> None:  # a forked child (a DataLoader worker) starts with no pool and holds nothing received
    _pool.clear()
    _held.clear()


os.register_at_fork(after_in_child=_forget)


def collate_list(batch: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """A ``collate_fn`` for items of different shapes: each key's values in a list (nothing stacked).

    >>> collate_list([{"image": 1, "source": "a"}, {"image": 2, "source": "b"}])
    {'image': [1, 2], 'source': ['a', 'b']}
    """
    return {key: [item[key] for item in batch] for key in batch[0]} if batch else {}


def _flag(storage: torch.UntypedStorage) -> torch.Tensor:
    """The last float32 of a segment: 1 while the main process may use it, 0 once it gave it back."""
    return torch.empty(0, dtype=torch.float32).set_(storage, storage.nbytes() // 4 - 1, (1,), (1,))


def _reusable() -> bool:
    strategy = torch.multiprocessing.get_sharing_strategy()  # type: ignore[no-untyped-call]
    return _USE_COUNT is not None and strategy == "file_descriptor"


def shared(shape: tuple[int, ...], tail: int = TAIL, reuse: bool = True) -> torch.Tensor:
    """A flat float32 tensor in shared memory: room for an image of ``shape`` and ``tail`` values after it (in a
    DataLoader worker, the item then reaches the main process without one more copy, as one tensor). With
    ``reuse``, the smallest segment of this process's pool that holds it and that the main process gave back, else
    a new one, kept in the pool (of ``POOL`` segments: beyond, the smallest leaves it).

    >>> flat = shared((2, 3), tail=4)
    >>> flat.numel(), flat.untyped_storage().is_shared()
    (10, True)
    """
    n = int(np.prod(shape)) + tail
    need = (n + 1) * 4  # the flag after everything
    if reuse and _reusable():
        assert _USE_COUNT is not None
        free = [s for s in _pool if need <= s.nbytes() and _USE_COUNT(s._cdata) == 1 and float(_flag(s)) == 0.0]
        if free:
            storage = min(free, key=lambda s: s.nbytes())
            _flag(storage).fill_(1.0)
            return torch.empty(0, dtype=torch.float32).set_(storage, 0, (n,), (1,))
    storage = torch.UntypedStorage._new_shared(need)  # type: ignore[no-untyped-call]
    _flag(storage).fill_(1.0)  # in use until the main process gives it back (never, if it is not sent)
    if reuse and _reusable():
        _pool.append(storage)
        if len(_pool) > POOL:
            _pool.remove(min(_pool, key=lambda s: s.nbytes()))  # the cheapest to make again; freed once unused
    return torch.empty(0, dtype=torch.float32).set_(storage, 0, (n,), (1,))


def _refs(held: dict[int, Any], key: int) -> int:
    """Python's references to ``held[key]``, counted alike here and for :data:`_ALONE`."""
    value = held[key]
    return sys.getrefcount(value)


_ALONE = _refs({0: object()}, 0)  # what _refs counts for an object that only its dict holds


def _received(packed: torch.Tensor) -> None:
    """In the main process: a pooled segment arrived; the ones received before and no longer used go back."""
    if _USE_COUNT is None:
        return
    with _lock:
        for key in list(_held):
            # only _held: no tensor of it is left (C++ references), nor its storage object elsewhere (Python's: a
            # `tensor.untyped_storage()` or `.storage()` kept alone is this very object, one C++ reference for all)
            if _USE_COUNT(_held[key]._cdata) == 1 and _refs(_held, key) == _ALONE:
                _flag(_held[key]).fill_(0.0)
                del _held[key]
        storage = packed.untyped_storage()
        _held[id(storage)] = storage


def _rebuild_item(
    keys: list[str],
    rest: dict[str, Any],
    packed: torch.Tensor | None,
    layout: list[tuple[str, torch.dtype, tuple[int, ...], int]],
    pooled: bool = False,
) -> Item:
    if pooled and packed is not None:
        _received(packed)
    for key, dtype, shape, offset in layout:
        assert packed is not None
        rest[key] = packed[offset : offset + int(np.prod(shape))].reshape(shape).to(dtype)
    return Item((key, rest[key]) for key in keys)


class Item(dict):  # type: ignore[type-arg]
    """One item (or a collated batch) of :class:`CubeDataset`: a dict of ``image``, ``spacing``, ``origin``…

    Pickled — as a DataLoader worker sends it to the main process — its small tensors travel as one: PyTorch
    shares every tensor through a shared-memory segment and a file descriptor of its own (≈ 0.2 ms each here, more
    than decoding a slice), so ``spacing``, ``origin``, ``orientation`` and ``index`` cost one, not four — none
    when they fit in float32 exactly and the image (up to 16 MB, not in shared memory yet) carries them.

    >>> import pickle
    >>> item = Item(image=torch.zeros(2, 2), spacing=torch.tensor([1.0, 0.5, 0.5]), index=torch.tensor([3, 0, 0]))
    >>> back = pickle.loads(pickle.dumps(item))
    >>> back["spacing"].tolist(), back["index"].dtype, type(back).__name__
    ([1.0, 0.5, 0.5], torch.int64, 'Item')
    """

    def __copy__(self) -> Item:
        return Item(self)

    def __reduce__(self) -> tuple[Any, ...]:
        if self.__dict__.get("made"):
            _SENT_ALONE[0] = True
        carrier = self.__dict__.get("carrier")  # (flat tensor in shared memory, layout, the tensors it holds, pooled)
        if carrier is not None and all(self.get(key) is value for key, value in carrier[2].items()):
            flat, layout, held, pooled = carrier
            return _rebuild_item, (list(self), {k: v for k, v in self.items() if k not in held}, flat, layout, pooled)
        small = [
            (k, v)
            for k, v in self.items()
            if isinstance(v, torch.Tensor)
            and v.numel() <= SMALL
            and v.dtype in (torch.float32, torch.float64, torch.int64, torch.int32)
            and not v.requires_grad
        ]
        if not small:
            return _rebuild_item, (list(self), dict(self), None, [])
        layout, offset = [], 0
        for key, value in small:
            layout.append((key, value.dtype, tuple(value.shape), offset))
            offset += value.numel()
        packed = torch.cat([v.reshape(-1).to(torch.float64) for _, v in small])  # exact for these dtypes
        image = self.get("image")
        if (
            isinstance(image, torch.Tensor)
            and image.dtype == torch.float32
            and not image.untyped_storage().is_shared()
            and not image.requires_grad
            and image.numel() <= CARRY
            and torch.equal(packed.to(torch.float32).to(torch.float64), packed)
        ):
            # one tensor, image and all: copying a slice (≈ 0.1 ms a MB) costs less than sharing one more tensor
            n = image.numel()
            packed = torch.cat([image.reshape(-1), packed.to(torch.float32)])
            layout = [
                ("image", torch.float32, tuple(image.shape), 0),
                *((k, d, shape, o + n) for k, d, shape, o in layout),
            ]
        elif len(small) < 2:
            return _rebuild_item, (list(self), dict(self), None, [])
        rest = {k: v for k, v in self.items() if k not in {key for key, *_ in layout}}
        return _rebuild_item, (list(self), rest, packed, layout)


def carried(
    flat: torch.Tensor, layout: list[tuple[str, torch.dtype, tuple[int, ...], int]], pooled: bool, **rest: Any
) -> Item:
    """An item (or batch) whose tensors are views of ``flat`` (shared memory, in a worker) as ``layout`` says: it
    crosses to the main process as that one tensor."""
    held = {key: flat[o : o + int(np.prod(shape))].reshape(shape).to(dtype) for key, dtype, shape, o in layout}
    item = Item(held, **rest)
    item.__dict__["carrier"] = (flat, layout, held, pooled)
    return item


class _Batch(Sequence[Item]):
    """The items of a batch made already (``collated``), each made when asked for: what ``__getitems__`` gives
    (PyTorch's default collate asks for the first only)."""

    def __init__(self, collated: Item, source: str) -> None:
        self.collated, self.source = collated, source

    def __len__(self) -> int:
        return len(self.collated["source"])

    @overload
    def __getitem__(self, j: int) -> Item: ...
    @overload
    def __getitem__(self, j: slice) -> list[Item]: ...
    def __getitem__(self, j: int | slice) -> Item | list[Item]:
        if isinstance(j, slice):
            return [self[i] for i in range(len(self))[j]]
        return Item({key: value[j] for key, value in self.collated.items() if key != "source"}, source=self.source)


def _collate_items(batch: Sequence[Item], *, collate_fn_map: dict[Any, Any] | None = None) -> Item:
    """PyTorch's default collate of :class:`Item` s: the batch made already, or each key's values collated (as
    for any dict). Registered in ``default_collate_fn_map``, PyTorch's documented way to extend it."""
    made = getattr(batch, "collated", None)
    if made is not None:
        return made  # type: ignore[no-any-return]
    return Item((key, collate([d[key] for d in batch], collate_fn_map=collate_fn_map)) for key in batch[0])


default_collate_fn_map[Item] = _collate_items
