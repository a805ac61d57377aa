"""cmgems.genome: FASTA -> cleaned N-free Parquet segments."""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pysam
import pytest

from cmgems import cli, genome
from cmgems.atomic import OWNED
from cmgems.errors import CmgemsError


# ---------------------------------------------------------------------------------------- contigs

RECORDS = [
    ("chr1", "NNacgtNNACGTRYACGT"),
    ("chr2 some description", "ACGTACGTAC"),
    ("chrUn_KI270302v1", "ACGTAAAA"),
    ("chr1_KI270706v1_random", "CCCC"),
    ("chrM", "GATTACA"),
    ("chr3_alt", "TTTT"),
]


def write_fasta(path: Path, records, compression: str | None = None) -> Path:
    text = "".join(
        f">{name}\n" + "".join(seq[i : i + 7] + "\n" for i in range(0, len(seq), 7)) for name, seq in records
    )
    if compression is None:
        path.write_text(text)
    elif compression == "gzip":
        path.write_bytes(gzip.compress(text.encode()))
    else:
        plain = path.with_suffix(".plain")
        plain.write_text(text)
        pysam.tabix_compress(str(plain), str(path), force=True)
        plain.unlink()
    return path


def rows(path: Path) -> list[tuple]:
    t = pq.read_table(path)
    return list(zip(*(t.column(c).to_pylist() for c in ("contig", "start", "end", "sequence"))))


@pytest.mark.parametrize("compression", [None, "gzip", "bgzf"])
def test_segments_exact(tmp_path, compression):
    fasta = write_fasta(tmp_path / "g.fa.gz", RECORDS, compression)
    summary = genome.write_contigs(fasta, None, tmp_path / "contigs")
    assert sorted(p.name for p in (tmp_path / "contigs").iterdir()) == [
        OWNED,
        "chr1.parquet",
        "chr2.parquet",
        "summary.json",
    ]
    assert rows(tmp_path / "contigs" / "chr1.parquet") == [
        ("chr1", 2, 6, b"ACGT"),
        ("chr1", 8, 12, b"ACGT"),
        ("chr1", 14, 18, b"ACGT"),
    ]
    assert rows(tmp_path / "contigs" / "chr2.parquet") == [("chr2", 0, 10, b"ACGTACGTAC")]
    on_disk = json.loads((tmp_path / "contigs" / "summary.json").read_text())
    assert on_disk == summary
    assert summary["sha256"] == hashlib.sha256(fasta.read_bytes()).hexdigest()
    assert summary["size"] == fasta.stat().st_size
    assert summary["contigs"] == {
        "chr1": {"length": 18, "n_count": 6, "segments": 3, "bases_kept": 12},
        "chr2": {"length": 10, "n_count": 0, "segments": 1, "bases_kept": 10},
    }
    schema = pq.read_schema(tmp_path / "contigs" / "chr1.parquet")
    assert [str(schema.field(c).type) for c in schema.names] == ["string", "int64", "int64", "binary"]


def test_splice_n_and_explicit_selection(tmp_path):
    fasta = write_fasta(tmp_path / "g.fa", RECORDS)
    assert cli.main(["genome", "contigs", "--fasta", str(fasta), "--out-dir", str(tmp_path / "c"),
                     "--contigs", "chr1", "chrM", "--splice-n"]) == 0  # fmt: skip
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == [
        OWNED,
        "chr1.parquet",
        "chrM.parquet",
        "summary.json",
    ]
    assert rows(tmp_path / "c" / "chr1.parquet") == [("chr1", 0, 18, b"ACGTACGTACGT")]
    assert rows(tmp_path / "c" / "chrM.parquet") == [("chrM", 0, 7, b"GATTACA")]


def test_grch37_names_are_primary(tmp_path):
    fasta = write_fasta(tmp_path / "g.fa", [("20", "ACGT"), ("GL000192.1", "ACGT"), ("MT", "AC")])
    assert list(genome.write_contigs(fasta, [], tmp_path / "c")["contigs"]) == ["20"]


def test_contigs_replace_their_own_folder_but_not_a_users(tmp_path, capsys):
    fasta = write_fasta(tmp_path / "g.fa", RECORDS)
    out = tmp_path / "out"
    argv = ["genome", "contigs", "--fasta", str(fasta), "--out-dir", str(out)]
    assert cli.main(argv) == 0 and cli.main(argv) == 0  # a rerun replaces what the first run wrote
    (out / "my_notes.txt").write_text("keep me")
    assert cli.main(argv) == 1
    assert f"{out}: refusing to replace the folder" in capsys.readouterr().err
    assert (out / "my_notes.txt").read_text() == "keep me" and (out / "chr1.parquet").exists()


def assert_fails_cleanly(tmp_path: Path, fasta: Path, match: str, contigs=None) -> CmgemsError:
    before = set(tmp_path.iterdir())
    with pytest.raises(CmgemsError, match=match) as err:
        genome.write_contigs(fasta, contigs, tmp_path / "out")
    assert set(tmp_path.iterdir()) == before  # no output, no temporary left behind
    return err.value


def test_empty_fasta(tmp_path):
    assert_fails_cleanly(tmp_path, write_fasta(tmp_path / "e.fa.gz", [], "gzip"), "no FASTA records")


def test_duplicate_contig_names_even_unselected(tmp_path):
    fasta = write_fasta(tmp_path / "d.fa", RECORDS + [("chr3_alt", "AC")])
    assert_fails_cleanly(tmp_path, fasta, "duplicate contig name chr3_alt")


def test_missing_contig(tmp_path):
    fasta = write_fasta(tmp_path / "m.fa", RECORDS)
    err = assert_fails_cleanly(tmp_path, fasta, "chr9", contigs=["chr1", "chr9"])
    assert str(fasta) in str(err)


def test_invalid_character_names_contig_and_position(tmp_path):
    fasta = write_fasta(tmp_path / "i.fa", [("chr1", "ACGT"), ("chr2", "ACGTNNACXGT")])
    assert_fails_cleanly(tmp_path, fasta, r"contig chr2: character 'X' at position 9")


def test_invalid_character_in_unselected_contig_is_ignored(tmp_path):
    fasta = write_fasta(tmp_path / "i.fa", [("chr1", "ACGT"), ("chrUn_x", "AC*GT")])
    assert list(genome.write_contigs(fasta, None, tmp_path / "c")["contigs"]) == ["chr1"]


@pytest.mark.parametrize("compression", ["gzip", "bgzf"])
def test_truncated_gzip(tmp_path, compression):
    records = [("chr1", "ACGTTGCA" * 20000), ("chr2", "TTGCAACG" * 20000)]
    full = write_fasta(tmp_path / "full.fa.gz", records, compression)
    data = full.read_bytes()
    full.unlink()
    fasta = tmp_path / "t.fa.gz"
    fasta.write_bytes(data[: len(data) // 2])
    err = assert_fails_cleanly(tmp_path, fasta, "truncated")
    assert str(fasta) in str(err)


def bgzf_block_ends(data: bytes) -> list[int]:
    """Offsets just past each BGZF block (its BSIZE field, bytes 16-17, is the block size - 1)."""
    ends, pos = [], 0
    while pos < len(data):
        pos += int.from_bytes(data[pos + 16 : pos + 18], "little") + 1
        ends.append(pos)
    return ends


@pytest.mark.parametrize("contig", ["chr1", "chrUn_x"], ids=["selected", "unselected"])
def test_nul_byte_is_an_error_not_the_end_of_the_contig(tmp_path, contig):
    fasta = tmp_path / "nul.fa"
    fasta.write_bytes(f">chr2\nACGT\n>{contig}\nACGTACGT\nACGT\x00ACGT\nACGTACGT\n".encode())
    err = assert_fails_cleanly(tmp_path, fasta, rf"line 5 \(contig {contig}\): byte b'\\x00' in a sequence line")
    assert str(fasta) in str(err)


def test_bgzf_cut_at_a_block_boundary_is_an_error(tmp_path):
    records = [("chr1", "ACGTTGCAAC" * 30000), ("chr2", "TTGCA" * 1000)]
    data = write_fasta(tmp_path / "full.fa.gz", records, "bgzf").read_bytes()
    ends = bgzf_block_ends(data)
    assert len(ends) > 3 and data.endswith(genome.BGZF_EOF)
    (tmp_path / "full.fa.gz").unlink()
    fasta = tmp_path / "cut.fa.gz"
    fasta.write_bytes(data[: ends[1]])  # gzip alone reads this as a complete (shorter) file
    assert_fails_cleanly(tmp_path, fasta, "the BGZF end-of-file block is missing")


def test_contig_lengths_are_checked_against_the_fai(tmp_path):
    fasta = write_fasta(tmp_path / "g.fa", [("chr1", "ACGT" * 6), ("chr2", "ACGTAC")])
    pysam.faidx(str(fasta))
    fai = tmp_path / "g.fa.fai"
    assert list(genome.write_contigs(fasta, None, tmp_path / "ok")["contigs"]) == ["chr1", "chr2"]
    shutil.rmtree(tmp_path / "ok")
    whole = fasta.read_text()
    fasta.write_text("".join(whole.splitlines(keepends=True)[:3]))  # the header and 2 lines of 7 bp
    assert_fails_cleanly(tmp_path, fasta, rf"contig chr1 has 14 bp but {fai} lists 24 \(truncated")
    fasta.write_text(whole.split(">chr2")[0])
    assert_fails_cleanly(tmp_path, fasta, rf"ends without contig\(s\) chr2 listed in {fai}")
    fasta.write_text(whole + ">chr3\nACGT\n")
    assert_fails_cleanly(tmp_path, fasta, rf"contig chr3 is not in its index {fai}")


@pytest.mark.realdata
def test_real_hg38_slice_cut_at_a_block_boundary(shared_data, tmp_path):
    source = shared_data / "genome" / "hg38_chr2_1-2333275.fa.gz"
    data = source.read_bytes()
    cut = data[: bgzf_block_ends(data)[10]]
    fasta = tmp_path / "chr2.fa.gz"
    fasta.write_bytes(cut)
    assert_fails_cleanly(tmp_path, fasta, "the BGZF end-of-file block is missing")
    fasta.write_bytes(cut + genome.BGZF_EOF)  # a well-formed but shorter file: the index still tells
    shutil.copy(source.with_name(source.name + ".fai"), tmp_path / "chr2.fa.gz.fai")
    assert_fails_cleanly(tmp_path, fasta, r"contig chr2 has [0-9,]+ bp but .*chr2.fa.gz.fai lists 2,333,275")


@pytest.mark.parametrize("name", ["chr1/sub", "../../x", ".hidden", "chr*", "chr 1", "a" * 201])
def test_contig_names_that_cannot_be_file_names(tmp_path, capsys, name):
    fasta = tmp_path / "a" / "b" / "g.fa"
    fasta.parent.mkdir(parents=True)
    fasta.write_text(f">{name}\nACGT\n>chr1\nACGT\n")
    before = sorted(tmp_path.rglob("*"))
    with pytest.raises(CmgemsError, match=f"contig name {re.escape(repr(name))} cannot be a file name"):
        genome.write_contigs(fasta, [name], fasta.parent / "out")
    with pytest.raises(SystemExit) as exit_:
        cli.main(["genome", "contigs", "--fasta", str(fasta), "--out-dir", str(fasta.parent / "out"), "--contigs", "chr1", name])
    assert exit_.value.code == 2 and "cannot be a file name" in capsys.readouterr().err
    assert sorted(tmp_path.rglob("*")) == before  # nothing written, inside the output folder or outside it


@pytest.mark.parametrize("compression", [None, "gzip", "bgzf"])
def test_a_byte_order_mark_before_the_first_header_is_skipped(tmp_path, compression):
    """A UTF-8 byte-order mark (some Windows editors write one) gives the contigs the file gives
    without it, as labelled files accept one; plain, gzip and BGZF alike."""
    plain = write_fasta(tmp_path / "plain.fa", RECORDS)
    text, marked = genome.UTF8_BOM + plain.read_bytes(), tmp_path / "marked.fa.gz"
    if compression == "bgzf":
        (tmp_path / "marked.plain").write_bytes(text)
        pysam.tabix_compress(str(tmp_path / "marked.plain"), str(marked))
    else:
        marked.write_bytes(gzip.compress(text) if compression else text)
    expected = genome.write_contigs(plain, None, tmp_path / "expected")
    got = genome.write_contigs(marked, None, tmp_path / "got")
    assert got["contigs"] == expected["contigs"]
    for name in expected["contigs"]:
        assert rows(tmp_path / "got" / f"{name}.parquet") == rows(tmp_path / "expected" / f"{name}.parquet")


def test_output_paths_and_file_system_errors_are_one_line(tmp_path, capsys):
    fasta = write_fasta(tmp_path / "g.fa", RECORDS)
    (tmp_path / "file").write_text("not a folder")
    argv = ["genome", "contigs", "--fasta", str(fasta), "--out-dir"]
    assert cli.main([*argv, str(tmp_path / "file" / "contigs")]) == 1
    assert capsys.readouterr().err == f"cmgems genome: error: {tmp_path / 'file'}: is a file, so {tmp_path / 'file' / 'contigs'} cannot be written\n"
    assert cli.main([*argv, str(tmp_path / ("x" * 300))]) == 1  # an OSError: printed, not a traceback
    assert capsys.readouterr().err.startswith("cmgems genome: error: [Errno 36] File name too long")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "g.fa"]


def test_cli_error_exit_code(tmp_path, capsys):
    fasta = write_fasta(tmp_path / "m.fa", RECORDS)
    assert (
        cli.main(
            [
                "genome",
                "contigs",
                "--fasta",
                str(fasta),
                "--out-dir",
                str(tmp_path / "o"),
                "--contigs",
                "chrZ",
            ]
        )
        == 1
    )
    assert "chrZ" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.mark.realdata
def test_real_hg38_slice(shared_data, tmp_path):
    summary = genome.write_contigs(shared_data / "genome" / "hg38_chr2_1-2333275.fa.gz", None, tmp_path / "c")
    assert summary["contigs"]["chr2"]["length"] == 2_333_275
    t = pq.read_table(tmp_path / "c" / "chr2.parquet")
    assert t.column("start")[0].as_py() == 10_000
    assert set(b"".join(t.column("sequence").to_pylist())) <= set(b"ACGT")
