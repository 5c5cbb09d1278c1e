"""Labels on studies, per tenant (the admin UI's study page and ``/api/studies/{study}/labels``): free words an
archive user puts on a study to find it again (``/ui?label=…``). A label is 1–64 characters of letters, digits,
space, ``-``, ``_`` and ``.``; a study keeps its labels while its instances change, and loses them when it is
deleted. A study carries at most :data:`MAX_PER_STUDY` labels and a tenant uses at most :data:`MAX_PER_TENANT`
different ones (every study list page lists them all: a caller adding labels without end would slow every page).

Example
-------
>>> from cubepacs.archive.index.store import Index
>>> idx = Index.from_url("sqlite://")
>>> add(idx, "t", "1.2", "to review"), add(idx, "t", "1.2", "to review"), add(idx, "t", "1.2", "teaching")
(True, False, True)
>>> of_studies(idx, "t", ["1.2", "9.9"]), remove(idx, "t", "1.2", "teaching"), tenant_labels(idx, "t")
({'1.2': ['teaching', 'to review'], '9.9': []}, True, ['to review'])
>>> check_label("a/b")
Traceback (most recent call last):
...
cubepacs.errors.ConfigError: invalid label 'a/b': 1 to 64 letters, digits, spaces, '-', '_' or '.'
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from cubepacs.archive.index.models import study_label
from cubepacs.errors import ConfigError

_LABEL = re.compile(r"[\w .-]{1,64}")
MAX_PER_STUDY = 50  # labels one study carries
MAX_PER_TENANT = 1000  # different labels one tenant uses


def check_label(label: str) -> str:
    """``label`` stripped when it is a valid label, else ConfigError naming it."""
    text = label.strip()
    if not _LABEL.fullmatch(text):
        raise ConfigError(f"invalid label {label[:80]!r}: 1 to 64 letters, digits, spaces, '-', '_' or '.'")
    return text


def add(index: Any, tenant: str, study: str, label: str) -> bool:
    """Put ``label`` on a study; False when it was there already. ConfigError for an invalid label, or one more
    than :data:`MAX_PER_STUDY` on the study or :data:`MAX_PER_TENANT` in the tenant.

    Example
    -------
    >>> from cubepacs.archive.index.store import Index
    >>> idx = Index.from_url("sqlite://")
    >>> all(add(idx, "t", "1.2", f"l{n}") for n in range(MAX_PER_STUDY)), add(idx, "t", "1.2", "l0")
    (True, False)
    >>> add(idx, "t", "1.2", "one more")
    Traceback (most recent call last):
    ...
    cubepacs.errors.ConfigError: study 1.2 has 50 labels already (at most 50): remove one first
    """
    t = study_label
    row = {"tenant_id": tenant, "study_uid": study, "label": check_label(label)}
    try:
        with index.engine.begin() as conn:
            on_study = [r[0] for r in conn.execute(select(t.c.label).where(t.c.tenant_id == tenant,
                                                                            t.c.study_uid == study))]
            if row["label"] in on_study:
                return False
            if len(on_study) >= MAX_PER_STUDY:
                raise ConfigError(f"study {study} has {len(on_study)} labels already (at most {MAX_PER_STUDY}): "
                                  "remove one first")
            used = select(t.c.label).where(t.c.tenant_id == tenant).distinct().limit(MAX_PER_TENANT).subquery()
            if conn.execute(select(func.count()).select_from(used)).scalar() == MAX_PER_TENANT and \
                    conn.execute(select(t.c.label).where(t.c.tenant_id == tenant, t.c.label == row["label"])
                                 .limit(1)).first() is None:
                raise ConfigError(f"this tenant uses {MAX_PER_TENANT} different labels already (at most "
                                  f"{MAX_PER_TENANT}): reuse one, or remove one that is no longer used")
            conn.execute(study_label.insert().values(**row))
    except IntegrityError:
        return False
    return True


def remove(index: Any, tenant: str, study: str, label: str) -> bool:
    """Take ``label`` off a study; False when it was not there."""
    t = study_label
    with index.engine.begin() as conn:
        done = conn.execute(t.delete().where(t.c.tenant_id == tenant, t.c.study_uid == study,
                                             t.c.label == label.strip())).rowcount
    return bool(done)


def of_studies(index: Any, tenant: str, studies: Sequence[str]) -> dict[str, list[str]]:
    """Each study's labels, sorted (``[]`` for a study without)."""
    t = study_label
    out: dict[str, list[str]] = {s: [] for s in studies}
    if not studies:
        return out
    with index.engine.connect() as conn:
        for uid, label in conn.execute(select(t.c.study_uid, t.c.label).where(
                t.c.tenant_id == tenant, t.c.study_uid.in_(list(studies))).order_by(t.c.label)):
            out[uid].append(label)
    return out


def tenant_labels(index: Any, tenant: str) -> list[str]:
    """Every label used in the tenant, sorted."""
    t = study_label
    with index.engine.connect() as conn:
        return [r[0] for r in conn.execute(select(t.c.label).where(t.c.tenant_id == tenant).distinct()
                                           .order_by(t.c.label))]


def studies_with(tenant: str, label: str) -> Any:
    """The SELECT of the study UIDs that carry ``label`` (a subquery for the study list's filter).

    Example
    -------
    >>> str(studies_with("t", "x")).split()[:2]
    ['SELECT', 'study_label.study_uid']
    """
    t = study_label
    return select(t.c.study_uid).where(t.c.tenant_id == tenant, t.c.label == label.strip())


def forget_study(conn: Any, tenant: str, study: str) -> None:
    """Drop a deleted study's labels (inside the deletion's transaction).

    Example
    -------
    >>> from cubepacs.archive.index.store import Index
    >>> idx = Index.from_url("sqlite://"); _ = add(idx, "t", "1.2", "x")
    >>> with idx.engine.begin() as conn:
    ...     forget_study(conn, "t", "1.2")
    >>> of_studies(idx, "t", ["1.2"])
    {'1.2': []}
    """
    t = study_label
    conn.execute(t.delete().where(t.c.tenant_id == tenant, t.c.study_uid == study))
