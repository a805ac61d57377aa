"""Arrow and Parquet as cmgems uses them: the buffers of binary columns, Parquet files read with a
CmgemsError, and sequence tables (cleaned contig segments, corpus chunks) with their Parquet options.

A sequence table has the columns of SEQUENCE_SCHEMA (contig, 0-based start, exclusive end, sequence
bytes over ACGT) and its parameters as string schema metadata. Other tables (n-gram counts, PMI,
predictions) are written with pyarrow's default options (`pyarrow.parquet.write_table`).
"""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from cmgems.errors import CmgemsError

SEQUENCE_SCHEMA = pa.schema(
    [("contig", pa.string()), ("start", pa.int64()), ("end", pa.int64()), ("sequence", pa.binary())]
)


def binary_buffers(array: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(data uint8, offsets int64 of shape (n + 1,)) of a binary or string array of n values: value i
    is data[offsets[i]:offsets[i + 1]], offsets[0] == 0. Views of the array's buffers unless it is a slice."""
    array = array.cast(pa.large_binary())
    _, offsets_buf, data_buf = array.buffers()
    offsets = np.frombuffer(offsets_buf, dtype=np.int64)[array.offset : array.offset + len(array) + 1]
    data = np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None else np.empty(0, np.uint8)
    first = int(offsets[0])
    return data[first : offsets[-1]], (offsets - first if first else offsets)


def binary_array(data: np.ndarray | bytes, offsets: np.ndarray) -> pa.Array:
    """A pa.binary() array of n values from their concatenated bytes and offsets (n + 1,) below 2**31."""
    return pa.Array.from_buffers(
        pa.binary(), len(offsets) - 1, [None, pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(data)]
    )


def read_parquet(path: str | os.PathLike, columns: list[str] | None = None, what: str = "Parquet file") -> pa.Table:
    """`columns` (default all) of a Parquet file; CmgemsError "{path}: cannot read {what}: ..." otherwise."""
    try:
        return pq.read_table(path, columns=columns)
    except (OSError, KeyError, pa.ArrowException) as err:
        raise CmgemsError(f"{path}: cannot read {what}: {err}") from err


def table_meta(table: pa.Table) -> dict[str, str]:
    """A table's schema metadata as strings (pyarrow's own ARROW:schema entry left out)."""
    return {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items() if k != b"ARROW:schema"}


def write_sequence_table(
    table: pa.Table, path: str | os.PathLike, meta: dict, row_group_size: int | None = None
) -> None:
    """Write a sequence table to `path` with `meta` (values as str(value)) as its schema metadata:
    zstd, `contig` dictionary-encoded, statistics on contig, start and end; row groups of
    `row_group_size` rows (default pyarrow's)."""
    pq.write_table(
        table.replace_schema_metadata({k.encode(): str(v).encode() for k, v in meta.items()}),
        path,
        compression="zstd",
        row_group_size=row_group_size,
        use_dictionary=["contig"],
        write_statistics=["contig", "start", "end"],
    )
