"""Spark 4 Python Data Sources: ``dicomzip`` reads DICOM headers from ZIPs, folders and cubes; ``deltars``
writes a DataFrame into a Delta table through delta-rs (Parquet in tasks, one idempotent commit on the driver).

Example (needs a Spark session, so not run as a doctest)::

    from cubepacs.lake.datasource import register
    register(spark)
    df = spark.read.format("dicomzip").option("path", "/data/zips").load()
    df.write.format("deltars").option("path", "/lake/dicom").option("batch_id", "2026-11-22").mode("append").save()

Reader options: ``path`` (comma-separated ZIPs/folders/cubes), ``numPartitions``, ``glob`` (entry name pattern),
``recursive`` (true), ``bulkThreshold`` (bytes, 1024), ``errorMode`` (``rows``: error rows, the default;
``drop``: leave them out; ``fail``: stop at the first bad entry).
Writer options: ``path`` (the table), ``batch_id`` (default: a new one per write).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
from pyspark.sql.datasource import (
    DataSource,
    DataSourceArrowWriter,
    DataSourceReader,
    InputPartition,
    WriterCommitMessage,
)
from pyspark.sql.types import StructType

from cubepacs.lake.partitions import Partition, plan
from cubepacs.lake.reader import DEFAULT_BULK_THRESHOLD, read_item
from cubepacs.lake.schema import ARROW_SCHEMA, SPARK_DDL, to_batch

BATCH_ROWS = 1024


class DicomPartition(InputPartition):
    """A planned partition, shipped to the executor."""

    def __init__(self, part: Partition) -> None:
        super().__init__(part.index)
        self.part = part


def _flag(value: Any, default: bool) -> bool:
    return default if value is None else str(value).lower() in ("1", "true", "yes")


class DicomZipReader(DataSourceReader):
    """Plans partitions on the driver from central directories; reads headers on executors as Arrow batches."""

    def __init__(self, options: Mapping[str, str]) -> None:
        path = options.get("path")
        if not path:
            raise ValueError("dicomzip: option 'path' is required (ZIP files, folders or .dcbs cubes, "
                             "comma-separated)")
        self.paths = [p.strip() for p in path.split(",") if p.strip()]
        self.num_partitions = int(options["numPartitions"]) if options.get("numPartitions") else None
        self.pattern = options.get("glob")
        self.recursive = _flag(options.get("recursive"), True)
        self.bulk = int(options.get("bulkThreshold") or DEFAULT_BULK_THRESHOLD)
        self.error_mode = (options.get("errorMode") or "rows").lower()
        if self.error_mode not in ("rows", "drop", "fail"):
            raise ValueError(f"dicomzip: errorMode must be rows, drop or fail, not {self.error_mode!r}")

    def partitions(self) -> list[InputPartition]:
        return [DicomPartition(p) for p in plan(self.paths, self.num_partitions, self.pattern, self.recursive)]

    def read(self, partition: InputPartition) -> Iterator[pa.RecordBatch]:
        assert isinstance(partition, DicomPartition)
        rows: list[dict[str, Any]] = []
        for item in partition.part.items:
            for row in read_item(item, self.bulk):
                if row["error"] is not None:
                    if self.error_mode == "fail":
                        raise RuntimeError(f"{row['archive']}!{row['entry']}: {row['error']} ({row['error_stage']})")
                    if self.error_mode == "drop":
                        continue
                rows.append(row)
                if len(rows) >= BATCH_ROWS:
                    yield to_batch(rows)
                    rows = []
        if rows:
            yield to_batch(rows)


class DicomZipDataSource(DataSource):
    """``spark.read.format("dicomzip")``: one row per DICOM instance found, or per bad entry."""

    @classmethod
    def name(cls) -> str:
        return "dicomzip"

    def schema(self) -> str:
        return SPARK_DDL

    def reader(self, schema: StructType) -> DataSourceReader:
        return DicomZipReader(self.options)


@dataclass
class PartMessage(WriterCommitMessage):
    """A Parquet part written by one task, waiting for the driver's commit."""

    part: dict[str, Any] | None


class DeltaRsWriter(DataSourceArrowWriter):
    """Tasks write Parquet parts into the table folder; the driver commits them in one Delta transaction."""

    def __init__(self, options: Mapping[str, str], schema: StructType, overwrite: bool) -> None:
        if overwrite:
            raise ValueError("deltars: only append is supported (mode('append'))")
        path = options.get("path")
        if not path:
            raise ValueError("deltars: option 'path' (the Delta table folder) is required")
        self.path = path
        self.batch_id = options.get("batch_id") or uuid.uuid4().hex
        self.schema = schema

    def write(self, iterator: Iterator[pa.RecordBatch]) -> WriterCommitMessage:
        from cubepacs.lake.delta import write_part

        batches = list(iterator)
        if not batches:
            return PartMessage(None)
        return PartMessage(write_part(self.path, batches))

    def commit(self, messages: list[WriterCommitMessage | None]) -> None:
        from cubepacs.lake.delta import commit

        parts = [m.part for m in messages if isinstance(m, PartMessage) and m.part is not None]
        schema = _arrow_schema(self.schema)
        commit(self.path, parts, schema, app_id=f"cubepacs.spark.{self.batch_id}", version=1,
               custom_metadata={"cubepacs.batch_id": self.batch_id})

    def abort(self, messages: list[WriterCommitMessage | None]) -> None:
        import os

        for m in messages:
            if isinstance(m, PartMessage) and m.part is not None:
                try:
                    os.unlink(os.path.join(self.path, m.part["path"]))
                except FileNotFoundError:
                    pass


def _arrow_schema(schema: StructType) -> pa.Schema:
    names = [f.name for f in schema.fields]
    if names == ARROW_SCHEMA.names:
        return ARROW_SCHEMA
    from pyspark.sql.pandas.types import to_arrow_schema

    return to_arrow_schema(schema)


class DeltaRsDataSource(DataSource):
    """``df.write.format("deltars")``: append to a Delta table through delta-rs."""

    @classmethod
    def name(cls) -> str:
        return "deltars"

    def schema(self) -> str:
        return SPARK_DDL

    def writer(self, schema: StructType, overwrite: bool) -> DeltaRsWriter:
        return DeltaRsWriter(self.options, schema, overwrite)


def register(spark: Any) -> None:
    """Register ``dicomzip`` and ``deltars`` with a Spark session."""
    spark.dataSource.register(DicomZipDataSource)
    spark.dataSource.register(DeltaRsDataSource)
