"""The main process gives a worker's shared-memory segment back (``batching._received``) only once nothing of the
main process can read it any more: no tensor of it, and no storage object of it either (``tensor.untyped_storage()``
or ``tensor.storage()`` kept alone reads the same memory, and is one Python object with the one ``_held`` keeps)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")


def _received_alone() -> tuple[object, int]:
    """An image as the main process receives it from a worker (pooled), and its segment's key in ``_held`` (the
    test keeps no reference to the segment: that would be one more user of it)."""
    from cubepacs.research import batching

    flat = batching.shared((4,), tail=0, reuse=False)  # a segment of a worker (not in this process's pool)
    flat[:4] = torch.arange(4.0)
    item = batching._rebuild_item(["image"], {}, flat, [("image", torch.float32, (4,), 0)], pooled=True)
    return item, id(flat.untyped_storage())


def _given_back(key: int) -> bool:
    from cubepacs.research import batching

    return key not in batching._held  # (marked free in its last word as it left)


@pytest.mark.filterwarnings("ignore:TypedStorage is deprecated")
@pytest.mark.parametrize("keep", ["untyped_storage", "storage"])
def test_a_storage_object_kept_alone_keeps_its_segment(keep: str) -> None:
    from cubepacs.research import batching

    item, key = _received_alone()
    kept = getattr(item["image"], keep)()  # all that is left of the item in user code
    del item
    _received_alone()  # the next one arrives: the main process gives back what it no longer uses
    try:
        assert not _given_back(key) and float(batching._flag(batching._held[key])) == 1.0  # read through `kept`
        assert kept.tolist() if keep == "storage" else bytes(kept)  # (still readable, as the user expects)
        del kept
        _received_alone()
        assert _given_back(key)
    finally:
        batching._held.clear()


def test_a_dropped_item_gives_its_segment_back() -> None:
    from cubepacs.research import batching

    item, key = _received_alone()
    view = item["image"][1:3]
    del item
    _received_alone()
    try:
        assert not _given_back(key)  # a view of it is alive
        del view
        _received_alone()
        assert _given_back(key)
    finally:
        batching._held.clear()
