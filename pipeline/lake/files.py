"""The lake's Parquet files: schema, compression, row groups, and a partition's staged files in one batch."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.events import EVENTS_SCHEMA

ROW_GROUP_ROWS = 65_536
# A partition file of one batch rolls over to a new file past this many rows.
MAX_FILE_ROWS = 4_194_304
SCHEMA = EVENTS_SCHEMA.with_metadata(None)


def parquet_writer(path: Path) -> pq.ParquetWriter:
    return pq.ParquetWriter(path, SCHEMA, compression="zstd", write_statistics=True)


class PartitionFile:
    """The staged file(s) of one partition in one batch, written a row group at a time."""

    def __init__(self, folder: Path, batch_id: str) -> None:
        self.folder = folder
        self.batch_id = batch_id
        self.buffer: list[pa.RecordBatch] = []
        self.buffered = 0
        self.paths: list[Path] = []
        self.rows: list[int] = []
        self._writer: pq.ParquetWriter | None = None

    def add(self, batch: pa.RecordBatch) -> None:
        self.buffer.append(batch)
        self.buffered += batch.num_rows

    def flush(self) -> None:
        if not self.buffered:
            return
        if self._writer is None or self.rows[-1] >= MAX_FILE_ROWS:
            self.close_file()
            self.folder.mkdir(parents=True, exist_ok=True)
            path = self.folder / f"{self.batch_id}-{len(self.paths):03d}.parquet"
            self._writer = parquet_writer(path)
            self.paths.append(path)
            self.rows.append(0)
        self._writer.write_table(pa.Table.from_batches(self.buffer, schema=SCHEMA), row_group_size=ROW_GROUP_ROWS)
        self.rows[-1] += self.buffered
        self.buffer, self.buffered = [], 0

    def close_file(self) -> None:
        """Close the open file, leaving the buffer unwritten (what a failed batch needs)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def close(self) -> None:
        self.flush()
        self.close_file()
