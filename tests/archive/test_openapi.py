"""schemathesis against the running archive's ``/openapi.json`` with a bearer key (issue 27): no 5xx from any
operation on generated requests, and every answer's status code, content type, headers and body described by the
document (``archive/web/openapi.py``). Bounded: a few examples per operation, so that CI stays fast; the longer
campaign's numbers are in docs/security.md.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from cubepacs.archive.web import multipart
from tests.archive.conftest import KEYS, Server, start_server, stop_server, wait_until

CHECKS = ("not_a_server_error", "status_code_conformance", "content_type_conformance",
          "response_headers_conformance", "response_schema_conformance")
EXAMPLES = 8


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "fuzz"))
    import mutants

    srv = start_server(tmp_path_factory.mktemp("openapi") / "data")
    try:  # one stored instance: the routes that read something have something to read
        data = mutants.renamed(mutants.CT)
        body, ctype = multipart.encode([data], "application/dicom")
        r = httpx.post(f"{srv.url}/studies", content=body, headers={**srv.headers(), "Content-Type": ctype})
        assert r.status_code == 200, r.text
        wait_until(lambda: httpx.get(f"{srv.url}/studies", headers=srv.headers()).status_code == 200)
        yield srv
    finally:
        stop_server(srv)


def test_the_document_describes_every_answer_and_nothing_is_a_5xx(server: Server, tmp_path: Path) -> None:
    report = tmp_path / "report.ndjson"
    out = subprocess.run(
        [str(Path(sys.executable).parent / "schemathesis"), "run",
         f"http://127.0.0.1:{server.http_port}/openapi.json", "-H", f"Authorization: Bearer {KEYS['alpha']}",
         "--max-examples", str(EXAMPLES), "-c", ",".join(CHECKS), "--phases", "examples,coverage,fuzzing",
         "--request-timeout", "30", "--seed", "27", "--no-color", "--report", "ndjson",
         "--report-ndjson-path", str(report)],
        check=False, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-6000:]
    events = [json.loads(line) for line in report.read_text().splitlines()]
    assert len(events) > 50  # it did run: operations were tested
    assert "passed" in out.stdout
