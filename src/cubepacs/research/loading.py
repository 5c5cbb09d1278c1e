"""Items one at a time from DataLoader workers, fetched a chunk at a time.

A DataLoader with ``batch_size=None`` sends every item from its worker to the main process alone: a message, a
pickled header and a file descriptor per item, which costs more than decoding a slice of a cube (a loader whose
items are empty tensors gets only 1.4–2.1× pydicom's slices/s through it on a 2-vCPU machine,
``docs/benchmarks.md``). :func:`iter_items` gives the same items in the same order, one at a time, but asks the
workers for ``chunk`` of them at once: a chunk of slices of one volume is decoded in one go into one shared tensor
(``CubeDataset.__getitems__``) and crosses as one message; the items are views of it, made in the main process as
they are taken.

Example
-------
>>> from pathlib import Path
>>> from cubepacs.research.dataset import CubeDataset
>>> ds = CubeDataset(sorted(str(p) for p in Path("../shared/data").rglob("*.dcbs")))  # doctest: +SKIP
>>> [int(item["index"][0]) for item in iter_items(ds, range(5), chunk=2)]  # doctest: +SKIP
[0, 1, 2, 3, 4]
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from cubepacs.research.batching import Item


def chunks(order: Iterable[int], chunk: int, group: Callable[[int], int] | None = None) -> list[list[int]]:
    """``order`` cut into lists of at most ``chunk`` indices, order kept; with ``group``, a list also ends where
    ``group(i)`` changes (a run of one volume's slices is fetched in one go).

    >>> chunks(range(5), 2)
    [[0, 1], [2, 3], [4]]
    >>> chunks(range(6), 4, group=lambda i: i // 3)
    [[0, 1, 2], [3, 4, 5]]
    """
    if chunk < 1:
        raise ValueError(f"chunk must be at least 1, not {chunk}")
    out: list[list[int]] = []
    last = None
    for i in order:
        g = group(int(i)) if group is not None else None
        if not out or len(out[-1]) == chunk or g != last:
            out.append([])
        out[-1].append(int(i))
        last = g
    return out


def _as_fetched(batch: Sequence[Item]) -> Sequence[Item]:
    """The collate of :func:`iter_items`: the chunk as ``__getitems__`` made it (nothing stacked)."""
    return batch


def iter_items(dataset: Any, order: Iterable[int] | None = None, *, chunk: int = 16,
               **loader: Any) -> Iterator[Item]:
    """``dataset``'s items in ``order`` (default: every index in turn; for an epoch in random order, a
    permutation such as ``torch.randperm(len(dataset)).tolist()``), one at a time, each equal to
    ``dataset[i]``; ``loader``: DataLoader's other arguments (``num_workers``, ``prefetch_factor``, …; not
    ``batch_size``, ``sampler`` or ``collate_fn``). A chunk ends where the volume changes (``dataset.volume_of``,
    when it has one): a chunk of slices of one volume costs one decode and one message.

    >>> list(iter_items(list(range(3)), chunk=2))
    [0, 1, 2]
    """
    from torch.utils.data import DataLoader

    for key in ("batch_size", "batch_sampler", "sampler", "collate_fn", "shuffle"):
        if key in loader:
            raise TypeError(f"iter_items chooses {key} itself: give the order as order=")
    indices = range(len(dataset)) if order is None else order
    groups = chunks(indices, chunk, getattr(dataset, "volume_of", None))
    fetched = DataLoader(dataset, batch_sampler=groups, collate_fn=_as_fetched, **loader)
    for batch in fetched:
        yield from batch
