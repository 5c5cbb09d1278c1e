"""The log-table writer: spooled JSON-line rows appended to a Delta table, in a process of its own.

:class:`cubepacs.archive.observability.accesslog.DeltaLog` runs ``python -m
cubepacs.archive.observability.logwriter`` with its jobs on stdin — ``{"jobs": [{"uri", "options", "columns",
"files"}, …]}``, every table of the process in one run — and reads one result per job from stdout (rows written, or
the one-line reason that table's write failed). pyarrow and delta-rs are loaded here only, so the long-running
server never maps them.

Example
-------
>>> import json, tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp()); f = d / "1.jsonl"
>>> _ = f.write_text(json.dumps({"time": 0, "tenant": "t"}) + "\\n")
>>> write_rows(str(d / "t"), None, (("time", "timestamp"), ("tenant", "string")), [str(f)])
1
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

import pyarrow as pa
from deltalake import write_deltalake

_TYPES = {"string": pa.string(), "int32": pa.int32(), "int64": pa.int64(), "float64": pa.float64(),
          "timestamp": pa.int64()}  # microseconds since the epoch in the spool; cast below


def write_rows(uri: str, options: dict[str, str] | None, columns: Sequence[Sequence[str]],
               files: Sequence[str]) -> int:
    """Append the rows of the spool ``files`` to the Delta table at ``uri``; return how many were written.

    A line that is not a JSON object (a torn last line) is skipped.
    """
    rows: list[dict[str, Any]] = []
    for name in files:
        with open(name, encoding="utf-8") as f:
            for line in f:
                try:
                    row = json.loads(line)
                except ValueError:
                    continue
                if isinstance(row, dict):
                    rows.append(row)
    if not rows:
        return 0
    spooled = pa.schema([(n, _TYPES[t]) for n, t in columns])
    final = pa.schema([(n, pa.timestamp("us", tz="UTC") if t == "timestamp" else _TYPES[t]) for n, t in columns])
    table = pa.Table.from_pylist(rows, schema=spooled).cast(final)
    write_deltalake(uri, table, mode="append", storage_options=options, schema_mode="merge")
    return len(rows)


def main() -> int:
    """Run the jobs from stdin (see the module's text): one result per job on stdout, a JSON list of
    ``{"written": n}`` or ``{"error": "…"}`` — one table failing does not stop the others."""
    try:
        jobs = json.loads(sys.stdin.read())["jobs"]
    except Exception as exc:
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    results: list[dict[str, Any]] = []
    for job in jobs:
        try:
            results.append({"written": write_rows(job["uri"], job.get("options"), job["columns"], job["files"])})
        except Exception as exc:  # one line for the server's log, whatever delta-rs or pyarrow raised
            results.append({"error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"})
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
