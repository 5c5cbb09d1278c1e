"""Differential query tests against Orthanc: the same files in both (all of ../shared/data that both accept, and
copies crafted from a real file for what no file covers: see ``querydiff.py``), the same generated C-FIND and
QIDO-RS queries to both; every answer is the same, or its difference is one of those listed in docs/archive.md
("Queries: where cubepacs and Orthanc differ") with the clause of the standard that says the archive is right —
listed here too, so that a new difference (or one that went away) fails."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.orthanc]
ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs" / "archive.md"

# why cubepacs answers otherwise than Orthanc 1.10, by the name docs/archive.md gives it
CLAUSES = {
    "pn-groups": "PS3.5 6.2.1.2, PS3.4 C.2.2.2.1",
    "range-values": "PS3.4 C.2.2.2.5",
    "time-precision": "PS3.4 C.2.2.2.5, PS3.5 6.2 (TM)",
    "star-empty": "PS3.4 C.2.2.2.4",
    "uid-wildcard": "PS3.4 C.2.2.2.4",
    "qido-case": "PS3.4 C.2.2.2.1, PS3.18 8.3.4",
    "qido-percent": "PS3.18 8.3.4, RFC 3986 2.1",
}
# (protocol, level, query keys) -> the difference it shows
DIFFERENCES: dict[tuple[str, str, str], str] = {}


def _key(proto: str, q: dict[str, Any]) -> tuple[str, str, str]:
    return proto, q["level"], json.dumps(q["keys"], sort_keys=True, ensure_ascii=False)


def _add(kind: str, proto: str, level: str, **keys: str) -> None:
    DIFFERENCES[(proto, level, json.dumps(keys, sort_keys=True, ensure_ascii=False))] = kind


for _p in ("cfind", "qido"):
    for _v in ("yamada^tarou", "=山田^太郎", "==やまだ^たろう", "Yamada^Tarou=山田^太郎"):
        _add("pn-groups", _p, "STUDY", PatientName=_v)
    for _v in ("-19991231", "-20191231"):
        _add("range-values", _p, "STUDY", StudyDate=_v)
    _add("range-values", _p, "STUDY", PatientBirthDate="-19700101")
    for _v in ("-120000", "120000-", "080000-150000", "-10", "23-"):
        _add("time-precision", _p, "STUDY", StudyTime=_v)
    _add("star-empty", _p, "STUDY", PatientID="*", ReferencedStudySequence="")
for _v in ("山田*", "*^Jürgen", "müller^jürgen", "ミュラー*"):
    _add("pn-groups", "cfind", "STUDY", PatientName=_v)
_add("uid-wildcard", "cfind", "STUDY", StudyInstanceUID="1.3.6.*")
for _v in ("山田*", "*^Jürgen", "müller^jürgen", "ミュラー*", "MÜLLER*", "Éloïse*", "éloïse^dupont"):
    _add("qido-percent", "qido", "STUDY", PatientName=_v)
for _v in ("CT CAP", "CT *", "C? CAP", "1A TRAUMA/PLAIN HEAD DM", "1A *", "* DM", "1? TRAUMA/PLAIN HEAD DM",
           "CT CAP\\1A TRAUMA/PLAIN HEAD DM"):
    _add("qido-percent", "qido", "STUDY", StudyDescription=_v)
for _kw, _v in (("PatientID", "cmb-crc-msb-01068"), ("PatientID", "plastic"), ("ModalitiesInStudy", "ct")):
    _add("qido-case", "qido", "STUDY", **{_kw: _v})
for _kw, _v in (("Modality", "mr"), ("SeriesDescription", "LUNG"), ("SeriesDescription", "stereotaxis")):
    _add("qido-case", "qido", "SERIES", **{_kw: _v})


@pytest.fixture(scope="module")
def answers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("querydiff") / "result.json"
    run = subprocess.run(["unshare", "-n", sys.executable, "-m", "tests.archive.querydiff", str(out)], cwd=ROOT,
                         check=False, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    return dict(json.loads(out.read_text()))


def _mangled_iso2022(name: str) -> bool:
    """Orthanc 1.10's answer for a name in ISO 2022 IR 87: the escape sequences' ESC bytes dropped, the JIS
    bytes left as ASCII ("$B;3ED(B")."""
    return "$B" in name and "(B" in name


def _names_differ(orthanc: list[str], cubepacs: list[str]) -> bool:
    """Whether the returned names differ otherwise than by Orthanc's ISO 2022 defect (``_mangled_iso2022``)."""
    extra_o = {json.dumps(json.loads(n), ensure_ascii=False) for n in set(orthanc) - set(cubepacs)}
    extra_c = {json.dumps(json.loads(n), ensure_ascii=False) for n in set(cubepacs) - set(orthanc)}
    return not (all(_mangled_iso2022(n) for n in extra_o) and all("山田" in n for n in extra_c)
                and len(extra_o) == len(extra_c))


def differences(answers: dict[str, Any]) -> dict[tuple[str, str, str], dict[str, Any]]:
    out = {}
    for proto in ("cfind", "qido"):
        for q in answers["queries"]:
            a, b = answers[proto]["orthanc"][q["id"]], answers[proto]["cubepacs"][q["id"]]
            if a["uids"] != b["uids"] or a["status"] != b["status"] or _names_differ(a["names"], b["names"]):
                out[_key(proto, q)] = {"orthanc": a, "cubepacs": b}
    return out


def test_at_least_200_queries_at_every_level_in_both_protocols(answers: dict[str, Any]) -> None:
    qs = answers["queries"]
    assert 2 * len(qs) >= 200
    assert {q["level"] for q in qs} == {"STUDY", "SERIES", "IMAGE"}
    assert len(answers["stored"]["both"]) > 430  # every file both accept, and the crafted copies
    for proto in ("cfind", "qido"):
        for server in ("orthanc", "cubepacs"):
            assert set(answers[proto][server]) == {q["id"] for q in qs}
    # the answers are not all empty: most queries match something in both
    assert sum(bool(answers["cfind"]["cubepacs"][q["id"]]["uids"]) for q in qs) > 0.8 * len(qs)


def test_every_difference_from_orthanc_is_a_documented_one(answers: dict[str, Any]) -> None:
    found = differences(answers)
    unexplained = {k: v for k, v in found.items() if k not in DIFFERENCES}
    assert not unexplained, json.dumps({" ".join(k): v for k, v in unexplained.items()}, ensure_ascii=False)[:3000]
    gone = sorted(set(DIFFERENCES) - set(found))
    assert not gone, f"no longer different (take them off the list): {gone}"
    documented = DOCS.read_text()
    for kind, clause in CLAUSES.items():
        assert f"`{kind}`" in documented and clause in documented, f"docs/archive.md does not explain {kind}"


def test_multiple_values_are_the_union_of_single_values(answers: dict[str, Any]) -> None:
    """``A\\B`` answers what ``A`` and ``B`` answer together (PS3.4 C.2.2.2.2 and multiple-value matching)."""
    by_keys = {(q["level"], json.dumps(q["keys"], sort_keys=True)): q["id"] for q in answers["queries"]}
    checked = 0
    for q in answers["queries"]:
        if len(q["keys"]) != 1:
            continue
        (kw, value), = q["keys"].items()
        parts = value.split("\\")
        singles = [by_keys.get((q["level"], json.dumps({kw: p}))) for p in parts]
        if len(parts) < 2 or None in singles:
            continue
        for proto in ("cfind", "qido"):
            got = answers[proto]["cubepacs"]
            assert set(got[q["id"]]["uids"]) == set().union(*(got[s]["uids"] for s in singles)), (proto, q)
            checked += 1
    assert checked >= 8


def test_ranges_never_match_malformed_or_empty_stored_values(answers: dict[str, Any]) -> None:
    studies = answers["studies"]
    for q in (q for q in answers["queries"] if q["level"] == "STUDY"):
        for kw in ("StudyDate", "PatientBirthDate", "StudyTime"):
            value = q["keys"].get(kw, "")
            if "-" not in value:
                continue
            lo, _, hi = value.partition("-")
            for proto in ("cfind", "qido"):
                for uid in answers[proto]["cubepacs"][q["id"]]["uids"]:
                    stored = studies[uid][kw]
                    if kw == "StudyTime":  # compared at the bounds' precision (docs/archive.md)
                        assert re.fullmatch(r"\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?", stored), (q, stored)
                        t = (stored + "000000")[:6]
                        assert (not lo or t >= (lo + "000000")[:6]) and (not hi or t <= (hi + "999999")[:6])
                    else:
                        assert re.fullmatch(r"\d{8}", stored) and (not lo or stored >= lo) and \
                            (not hi or stored <= hi), (q, stored)
    # and the malformed values are answered as they are stored, not cut
    bad = next(q for q in answers["queries"] if q["keys"] == {"StudyDate": "-19991231"})
    assert answers["cfind"]["cubepacs"][bad["id"]]["uids"]  # a well-formed old date is found
    assert {"***", "1995.05.01", "1997.04.24"} <= {s["StudyDate"] for s in studies.values()}


def test_names_keep_their_groups_and_characters(answers: dict[str, Any]) -> None:
    """The crafted Japanese (ISO 2022 IR 87), UTF-8 and Latin-1 names come back from C-FIND (whose answer carries
    the character set of its values), QIDO and /metadata with their component groups, as pydicom reads them from
    the stored files."""
    import pydicom

    from tests.archive.querydiff import crafted

    copies = crafted()
    expected = {}
    for n in (1, 3, 4):
        pn = pydicom.dcmread(io.BytesIO(copies[n - 1])).PatientName
        expected[n] = dict(zip(("Alphabetic", "Ideographic", "Phonetic"), pn.components, strict=False))
    for n, groups in expected.items():
        assert {json.dumps(v[0], sort_keys=True) for v in answers["metadata"]["cubepacs"][str(n)]} == \
            {json.dumps(groups, sort_keys=True)}
    by_keys = {json.dumps(q["keys"], ensure_ascii=False): q["id"] for q in answers["queries"]}
    for value, n in (("=山田^太郎", 1), ("ミュラー*", 3), ("Éloïse*", 4)):
        qid = by_keys[json.dumps({"PatientName": value}, ensure_ascii=False)]
        assert answers["cfind"]["cubepacs"][qid]["names"] == [json.dumps(list(expected[n].values()))]
        assert answers["qido"]["cubepacs"][qid]["names"] == [json.dumps(expected[n], sort_keys=True,
                                                                        ensure_ascii=False)]
