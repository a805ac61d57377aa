"""Fuzzing the FASTA and labelled-file readers: valid files, then bytes inserted, deleted or replaced,
compressed and cut. Every input gives clean data (exactly the records written, when nothing was
changed) or a CmgemsError naming the file; any other exception fails the test."""

from __future__ import annotations

import gzip
import re
import tempfile
from pathlib import Path

import numpy as np
import pysam
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cmgems import genome
from cmgems.errors import CmgemsError
from cmgems.labelled import MAX_LABEL, read_labelled

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
NAMES = st.one_of(st.sampled_from(["chr1", "chr2", "chrX", "chrUn_x", "1", "scaffold_7"]), st.text("abcXYZ019_.-", min_size=1, max_size=6))
EDIT = st.tuples(st.sampled_from(["insert", "delete", "replace"]), st.floats(0, 1), st.binary(min_size=1, max_size=3))


def mutate(data: bytes, edits) -> bytes:
    for kind, where, payload in edits:
        at = int(where * len(data))
        if kind == "insert":
            data = data[:at] + payload + data[at:]
        elif kind == "delete":
            data = data[:at] + data[at + len(payload) :]
        else:
            data = data[:at] + payload + data[at + len(payload) :]
    return data


def compress(path: Path, data: bytes, how: str | None) -> bytes:
    if how == "bgzf":
        with pysam.BGZFile(str(path), "wb") as out:
            out.write(data)
        return path.read_bytes()
    return gzip.compress(data) if how == "gzip" else data


@FUZZ
@given(
    records=st.lists(st.tuples(NAMES, st.text("ACGTNacgtnRYKM", max_size=150)), max_size=4),
    width=st.integers(1, 80),
    crlf=st.booleans(),
    edits=st.lists(EDIT, max_size=3),
    how=st.sampled_from([None, "gzip", "bgzf"]),
    cut=st.one_of(st.none(), st.floats(0, 1)),
    with_fai=st.booleans(),
)
def test_fasta_reader(records, width, crlf, edits, how, cut, with_fai):
    newline = "\r\n" if crlf else "\n"
    text = "".join(f">{name} some description{newline}" + "".join(seq[i : i + width] + newline for i in range(0, len(seq), width))
                   for name, seq in records)  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "g.fa"
        data = compress(path, mutate(text.encode(), edits), how)
        if cut is not None:
            data = data[: int(cut * len(data))]
        path.write_bytes(data)
        if with_fai:  # the index of the file as written, before any damage
            (Path(tmp) / "g.fa.fai").write_text("".join(f"{name}\t{len(seq)}\t0\t0\t0\n" for name, seq in records))
        before = sorted(Path(tmp).iterdir())
        try:
            got = list(genome.read_fasta(path))
        except CmgemsError as err:
            assert str(path) in str(err)
        else:
            assert all(re.fullmatch(r"[!-~]+", name) and re.fullmatch(rb"[!-~]*", seq) for name, seq in got)
            if not edits and cut is None:
                assert got == [(name, seq.encode()) for name, seq in records]
            if with_fai:  # names are unique in both, or it is an error
                assert {name: len(seq) for name, seq in got} == {name: len(seq) for name, seq in records}
        try:
            genome.write_contigs(path, None, Path(tmp) / "out")
        except CmgemsError as err:
            assert str(path) in str(err)
            assert sorted(Path(tmp).iterdir()) == before  # no output, no temporary


SEQUENCE = st.text("ACGTNacgtn", min_size=6, max_size=30)


@st.composite
def labelled_files(draw) -> tuple[bytes, list[str], list[int]]:
    """A valid CSV or GeneMask TSV (raw DNA or 6-mers, quoted or not) and what it holds."""
    rows = draw(st.lists(st.tuples(SEQUENCE, st.integers(0, 5)), min_size=1, max_size=6))
    tsv, quoted, as_kmers = draw(st.booleans()), draw(st.booleans()), draw(st.booleans())
    sep, newline, q = ("\t" if tsv else ","), draw(st.sampled_from(["\n", "\r\n"])), ('"' if quoted else "")
    header = f"{q}sequence{q}{sep}{q}label{q}"
    lines = []
    for seq, label in rows:
        field = " ".join(seq[i : i + 6] for i in range(len(seq) - 5)) if tsv and as_kmers else seq
        lines.append(f"{q}{field}{q}{sep}{q}{label}{q}")
    bom = "\ufeff" if draw(st.booleans()) else ""
    text = bom + newline.join([header, *lines]) + newline
    return text.encode(), [seq.upper() for seq, _ in rows], [label for _, label in rows]


@FUZZ
@given(file=labelled_files(), edits=st.lists(EDIT, max_size=3), cut=st.one_of(st.none(), st.floats(0, 1)))
def test_labelled_reader(file, edits, cut):
    data, sequences, labels = file
    data = mutate(data, edits)
    if cut is not None:
        data = data[: int(cut * len(data))]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "train.tsv"
        path.write_bytes(data)
        try:
            got_seqs, got_labels = read_labelled(path)
        except CmgemsError as err:
            assert str(path) in str(err)
            return
    assert len(got_seqs) == len(got_labels) > 0 and got_labels.dtype == np.int64
    assert all(re.fullmatch("[ACGTN]+", s) for s in got_seqs)
    assert all(0 <= y <= MAX_LABEL for y in got_labels.tolist())
    if not edits and cut is None:
        assert got_seqs == sequences and got_labels.tolist() == labels
