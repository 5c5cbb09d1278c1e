"""Which transfer syntax the stored instances of a SOP class share, per tenant: what the archive, as a C-GET
acceptor, negotiates with (``archive/dimse/syntaxes.py``) before the request names any instance.

For each class asked: the lowest and the highest Transfer Syntax UID of the tenant's instances of that class, as
two scalar subqueries of one statement, each one seek of ``ix_instance_class_syntax`` (tenant, SOP class,
transfer syntax; schema 5). Equal: every instance of the class has that syntax.

Example
-------
>>> from cubepacs.archive.index.store import Index
>>> idx = Index.from_url("sqlite://")
>>> for n, (sop, ts) in enumerate([("CT", "1.2.840.10008.1.2.4.70"), ("CT", "1.2.840.10008.1.2.4.70"),
...                                 ("MR", "1.2.840.10008.1.2.1"), ("MR", "1.2.840.10008.1.2")]):
...     _ = idx.add_instance({"tenant": "t", "study_uid": "1", "series_uid": "1.1", "sop_uid": f"1.1.{n}",
...                           "key": "k", "attrs": {}, "sop_class_uid": sop, "transfer_syntax": ts})
>>> one_syntax(idx, "t", ["CT", "MR", "US"])
{'CT': '1.2.840.10008.1.2.4.70'}
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import func, select

from cubepacs.archive.index.models import dicom_instance

_PER_STATEMENT = 100  # classes per statement (two subqueries and four parameters each)


def one_syntax(index: Any, tenant: str, sop_classes: Iterable[str]) -> dict[str, str]:
    """SOP class → the transfer syntax every stored instance of it in ``tenant`` has; a class whose instances
    have several, or that has none, is left out. ``index``: an :class:`~cubepacs.archive.index.store.Index`."""
    i = dicom_instance
    classes = sorted(set(sop_classes))
    out: dict[str, str] = {}
    with index.engine.connect() as conn:
        for start in range(0, len(classes), _PER_STATEMENT):
            part = classes[start:start + _PER_STATEMENT]
            columns = []
            for n, sop in enumerate(part):
                where = (i.c.tenant_id == tenant, i.c.sop_class_uid == sop)
                columns.append(select(func.min(i.c.transfer_syntax)).where(*where).scalar_subquery().label(f"lo{n}"))
                columns.append(select(func.max(i.c.transfer_syntax)).where(*where).scalar_subquery().label(f"hi{n}"))
            row = conn.execute(select(*columns)).one()
            for n, sop in enumerate(part):
                low, high = row[2 * n], row[2 * n + 1]
                if low is not None and low == high:
                    out[sop] = str(low)
    return out
