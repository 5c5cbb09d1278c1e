"""The lake with Spark 4 in local mode: the dicomzip data source and the deltars writer."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from deltalake import DeltaTable

from cubepacs.lake.scan import scan
from tests.lake.conftest import BAD_NAMES

pytestmark = pytest.mark.spark


@pytest.fixture(scope="module")
def spark() -> Iterator[Any]:
    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    from pyspark.sql import SparkSession

    session = (SparkSession.builder.master("local[2]").appName("cubepacs-tests")
               .config("spark.ui.enabled", "false").config("spark.driver.bindAddress", "127.0.0.1")
               .config("spark.driver.host", "127.0.0.1").config("spark.sql.shuffle.partitions", "2")
               .getOrCreate())
    session.sparkContext.setLogLevel("ERROR")
    from cubepacs.lake.datasource import register

    register(session)
    yield session
    session.stop()


def test_spark_reads_the_same_rows_as_the_scan(spark: Any, lake_inputs: dict[str, Path], tmp_path: Path) -> None:
    inputs = f"{lake_inputs['zips']},{lake_inputs['plain']}"
    df = spark.read.format("dicomzip").option("path", inputs).option("numPartitions", "4").load()
    assert df.rdd.getNumPartitions() == 4
    rows = df.select("id", "entry", "error", "error_stage", "modality").collect()
    local = scan(inputs.split(","), str(tmp_path / "t"), workers=1)
    assert len(rows) == local.files + local.errors
    assert len({r.id for r in rows}) == len(rows)
    errors = {Path(r.entry).name: r.error_stage for r in rows if r.error}
    assert set(BAD_NAMES) <= set(errors)
    dropped = spark.read.format("dicomzip").option("path", inputs).option("errorMode", "drop").load().count()
    assert dropped == local.files


def test_spark_writes_delta_once_per_batch(spark: Any, lake_inputs: dict[str, Path], tmp_path: Path) -> None:
    table = str(tmp_path / "delta")
    df = spark.read.format("dicomzip").option("path", str(lake_inputs["series_zip"])).load()
    df.write.format("deltars").option("path", table).option("batch_id", "b1").mode("append").save()
    df.write.format("deltars").option("path", table).option("batch_id", "b1").mode("append").save()
    read_back = DeltaTable(table).to_pyarrow_table()
    assert read_back.num_rows == 150
    assert sorted(read_back.column("instance_number").to_pylist()) == list(range(1, 151))
    with pytest.raises(Exception, match="path"):
        spark.read.format("dicomzip").load().count()
