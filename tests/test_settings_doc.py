"""docs/settings.md is the one table of every setting: it names each field of ``Settings`` exactly once and
nothing else, so that the table cannot drift from the code."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import fields
from pathlib import Path

from cubepacs.archive.settings import Settings

DOC = Path(__file__).resolve().parent.parent / "docs" / "settings.md"


def documented() -> Counter[str]:
    """Setting names in the first column of the table's rows."""
    return Counter(re.findall(r"^\| `([a-z_0-9]+)` \|", DOC.read_text(), re.MULTILINE))


def test_every_setting_is_in_the_table_once() -> None:
    names = documented()
    assert {n for n, c in names.items() if c > 1} == set()
    assert sorted(f.name for f in fields(Settings) if f.name not in names) == []


def test_the_table_names_no_setting_that_does_not_exist() -> None:
    assert sorted(set(documented()) - {f.name for f in fields(Settings)}) == []
