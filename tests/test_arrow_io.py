"""cmgems.arrow_io: binary column buffers, Parquet read errors, sequence tables and their Parquet options."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cmgems.arrow_io import SEQUENCE_SCHEMA, binary_array, binary_buffers, read_parquet, table_meta, write_sequence_table
from cmgems.errors import CmgemsError


@pytest.mark.parametrize("kind", [pa.binary(), pa.large_binary(), pa.string()])
def test_binary_buffers_of_a_slice_start_at_zero(kind):
    values = [b"ACGT", b"", b"GG", b"TTTAC", b"C"]
    array = pa.array(values if kind != pa.string() else [v.decode() for v in values], kind).slice(1, 3)
    data, offsets = binary_buffers(array)
    assert offsets.dtype == np.int64 and offsets[0] == 0 and len(offsets) == 4
    assert [data[a:b].tobytes() for a, b in zip(offsets[:-1], offsets[1:])] == values[1:4]
    assert data.tobytes() == b"".join(values[1:4])


def test_binary_buffers_of_an_empty_array():
    data, offsets = binary_buffers(pa.array([], pa.binary()))
    assert data.size == 0 and offsets.tolist() == [0]


def test_binary_array_round_trips():
    data = np.frombuffer(b"ACGTTTGA", np.uint8)
    offsets = np.array([0, 3, 3, 8], np.int64)
    array = binary_array(data, offsets)
    assert array.type == pa.binary() and array.to_pylist() == [b"ACG", b"", b"TTTGA"]
    assert binary_array(b"ACGTTTGA", offsets).equals(array)
    out_data, out_offsets = binary_buffers(array)
    assert out_data.tobytes() == data.tobytes() and out_offsets.tolist() == offsets.tolist()


def test_read_parquet_names_the_file_and_what_it_is(tmp_path):
    bad = tmp_path / "bad.parquet"
    bad.write_text("not Parquet")
    with pytest.raises(CmgemsError, match=f"^{bad}: cannot read counts file: "):
        read_parquet(bad, what="counts file")
    with pytest.raises(CmgemsError, match="absent.parquet: cannot read Parquet file"):
        read_parquet(tmp_path / "absent.parquet")


def test_sequence_table_options_and_metadata(tmp_path):
    table = pa.table(
        {"contig": ["chr1"] * 3, "start": [0, 10, 30], "end": [4, 12, 35], "sequence": [b"ACGT", b"GG", b"TTTAC"]},
        schema=SEQUENCE_SCHEMA,
    )
    path = tmp_path / "chr1.parquet"
    write_sequence_table(table, path, {"contig": "chr1", "k": 6, "splice_n": "false"}, row_group_size=2)
    back = read_parquet(path)
    assert back.equals(table)
    assert table_meta(back) == {"contig": "chr1", "k": "6", "splice_n": "false"}
    meta = pq.ParquetFile(path).metadata
    assert meta.num_row_groups == 2
    columns = {meta.row_group(0).column(i).path_in_schema: meta.row_group(0).column(i) for i in range(4)}
    assert {c.compression for c in columns.values()} == {"ZSTD"}
    assert columns["contig"].statistics is not None and columns["sequence"].statistics is None
    assert "RLE_DICTIONARY" in columns["contig"].encodings and "RLE_DICTIONARY" not in columns["sequence"].encodings
