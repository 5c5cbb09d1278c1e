"""Write Delta Lake tables through delta-rs: Parquet parts written by tasks, one commit on the driver.

The commit carries a Delta *transaction identifier* (app id + version): committing the same batch twice is a
no-op, and the parts of the refused duplicate are deleted. Works the same for Spark tasks and for worker processes.

Example
-------
>>> import tempfile, pyarrow as pa
>>> from cubepacs.lake.schema import ARROW_SCHEMA
>>> table = tempfile.mkdtemp()
>>> part = write_part(table, [pa.RecordBatch.from_pylist([], schema=ARROW_SCHEMA)])
>>> commit(table, [part], ARROW_SCHEMA, app_id="doc", version=1), commit(table, [], ARROW_SCHEMA, "doc", 1)
(True, False)
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterable
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

Part = dict[str, Any]


def write_part(table_uri: str, batches: Iterable[pa.RecordBatch], schema: pa.Schema | None = None) -> Part:
    """Write one Parquet file into the table folder (not yet visible); return what the commit needs."""
    os.makedirs(table_uri, exist_ok=True)
    name = f"part-{uuid.uuid4().hex}.zstd.parquet"
    path = os.path.join(table_uri, name)
    rows = 0
    writer: pq.ParquetWriter | None = None
    try:
        for batch in batches:
            if writer is None:
                writer = pq.ParquetWriter(path, schema or batch.schema, compression="zstd")
            writer.write_batch(batch)
            rows += batch.num_rows
        if writer is None:
            if schema is None:
                raise ValueError("an empty part needs a schema")
            writer = pq.ParquetWriter(path, schema, compression="zstd")
    finally:
        if writer is not None:
            writer.close()
    return {"path": name, "size": os.path.getsize(path), "rows": rows,
            "modification_time": int(time.time() * 1000)}


def commit(table_uri: str, parts: list[Part], schema: pa.Schema, app_id: str, version: int,
           custom_metadata: dict[str, str] | None = None) -> bool:
    """Add ``parts`` to the table in one commit; False (and the parts deleted) when the batch was committed."""
    from deltalake import CommitProperties, DeltaTable, Schema
    from deltalake.transaction import AddAction, RemoveAction, Transaction, create_table_with_add_actions

    actions: list[AddAction | RemoveAction] = [AddAction(p["path"], p["size"], {}, p["modification_time"], True,
                         json.dumps({"numRecords": p["rows"]})) for p in parts]
    props = CommitProperties(custom_metadata=custom_metadata, app_transactions=[Transaction(app_id, version)])
    if DeltaTable.is_deltatable(table_uri):
        table = DeltaTable(table_uri)
        done = table.transaction_version(app_id)
        if done is not None and done >= version:
            for p in parts:
                os.unlink(os.path.join(table_uri, p["path"]))
            return False
        table.create_write_transaction(actions, "append", Schema.from_arrow(schema), commit_properties=props)
    else:
        adds = [a for a in actions if isinstance(a, AddAction)]
        create_table_with_add_actions(table_uri, Schema.from_arrow(schema), adds, mode="append",
                                      commit_properties=props)
    return True
