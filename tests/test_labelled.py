"""cmgems.labelled: GUE CSVs and GeneMask k-mer TSVs (quoted and unquoted) in, CSV out; bad input named."""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cmgems.errors import CmgemsError
from cmgems.labelled import check_labels, data_statistics, kmers_to_sequence, read_labelled, write_labelled


def kmer_text(seq: str, k: int = 6) -> str:
    return " ".join(seq[i : i + k] for i in range(len(seq) - k + 1))


def test_gue_csv(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text("sequence,label\nACGTACGTAC,1\nacgtnnacgt,0\n")
    seqs, labels = read_labelled(path)
    assert seqs == ["ACGTACGTAC", "ACGTNNACGT"]
    assert labels.dtype == np.int64 and labels.tolist() == [1, 0]


def test_genemask_tsv_quoted_and_unquoted(tmp_path):
    raw = ["ACGTTGCAAGGCTA", "TTTTTTTCCCAGGG"]
    quoted = tmp_path / "train.tsv"
    quoted.write_text(
        '"sequence"\t"label"\n' + "".join(f'"{kmer_text(s)}"\t"{i}"\n' for i, s in enumerate(raw))
    )
    plain = tmp_path / "test.tsv"
    plain.write_text("sequence\tlabel\n" + "".join(f"{kmer_text(s)}\t{i}\n" for i, s in enumerate(raw)))
    for path in (quoted, plain):
        seqs, labels = read_labelled(path)
        assert seqs == raw and labels.tolist() == [0, 1]


@pytest.mark.parametrize(
    "name, text, message",
    [
        ("nolabel.csv", "sequence,class\nACGT,1\n", "line 1: missing column"),
        ("noseq.tsv", "seq\tlabel\nACGT\t1\n", "line 1: missing column"),
        ("badlabel.csv", "sequence,label\nACGT,1\nACGT,x\n", "line 3: label 'x' is not an integer"),
        ("floatlabel.csv", "sequence,label\nACGT,1.5\n", "line 2: label '1.5' is not an integer"),
        ("negative.csv", "sequence,label\nACGT,-1\n", "line 2: label -1 is negative"),
        (
            "badchar.csv",
            "sequence,label\nACGT,1\nACXT,0\n",
            "line 3: character 'X' at position 3 is outside ACGTN",
        ),
        (
            "badkmer.tsv",
            "sequence\tlabel\nACGTAC CGTACG\t1\nACGTAC GTACGT\t0\n",
            "line 3: its 6-mers do not overlap",
        ),
        ("short.csv", "sequence,label\nACGT\n", "line 2: 1 field(s)"),
        ("underscore.csv", "sequence,label\nACGT,1_0\n", "line 2: label '1_0' is not an integer"),
        ("huge.csv", "sequence,label\nACGT,99999999999\n", "line 2: label 99999999999 is too large"),
        ("unbalanced.tsv", 'sequence\tlabel\n"ACGTAC\t1\nACGTAC\t0\n', "line 2: cannot split the row into fields"),
        ("unbalanced_last.tsv", 'sequence\tlabel\nACGTAC\t1\n"ACGTAC\t0\n', "line 3: cannot split the row into fields"),
        ("quote_spans_lines.tsv", 'sequence\tlabel\n"ACGTAC\t1\nACG"\t0\n', "line 2: unbalanced quote"),
        ("misplaced.tsv", 'sequence\tlabel\n"ACGTAC"x\t1\n', "an unbalanced or misplaced quote?"),
        ("empty.csv", "sequence,label\n", "no rows (empty split)"),
        ("blank.tsv", '"sequence"\t"label"\n\n', "no rows (empty split)"),
    ],
)
def test_bad_input_named(tmp_path, name, text, message):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(CmgemsError, match=re.escape(message)) as err:
        read_labelled(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize(
    "train, others, message",
    [
        ([0, 2, 0, 2], {"test.csv": [0, 1]}, "train.csv: labels [0, 2] are not 0..2 (no training row has label 1)"),
        ([1, 2], {}, "train.csv: labels [1, 2] are not 0..2 (no training row has label 0)"),
        ([1, 1, 1], {"test.csv": [1]}, "train.csv: every row has label 1; a classifier needs at least 2 classes"),
        ([0, 1], {"dev.csv": [0, 1], "test.csv": [2, 0, 3]}, "test.csv: label(s) [2, 3] not in the training set train.csv (labels [0, 1])"),
        ([0, 1, 0], {"dev.csv": [5]}, "dev.csv: label(s) [5] not in the training set train.csv"),
        ([0, 1, 0], {"test.csv": [1, 1]}, "test.csv: every row has label 1; an evaluation set needs at least 2 classes"),
        ([0, 1, 2], {"test.csv": [0, 1, 2], "dev.csv": [2]}, "dev.csv: every row has label 2; an evaluation set needs"),
    ],
    ids=["train-skips-a-class", "train-not-from-0", "single-class", "test-class-unseen", "dev-class-unseen",
         "test-single-class", "dev-single-class"],
)
def test_label_sets_checked(train, others, message):
    with pytest.raises(CmgemsError, match=re.escape(message)):
        check_labels(("train.csv", np.array(train)), *((name, np.array(y)) for name, y in others.items()))


def test_label_sets_accepted():
    assert check_labels(("train.csv", np.array([2, 0, 1, 1])), ("test.csv", np.array([1, 2])), ("dev.csv", np.array([0, 2]))) == 3


def test_byte_order_mark_and_crlf_accepted(tmp_path):
    path = tmp_path / "excel.csv"
    path.write_bytes("\ufeffsequence,label\r\nACGTAC,1\r\nGGCCAA,0\r\n".encode("utf-8"))
    seqs, labels = read_labelled(path)
    assert seqs == ["ACGTAC", "GGCCAA"] and labels.tolist() == [1, 0]


def test_data_statistics_counts_exactly(caplog):
    splits = {
        "train": ["ACGTACGTAC", "ACG", "TTTTTTTTTTTTTTT"],
        "dev": ["ACGTACGTAC", "GGG"],
        "test": ["ACGTACGTAC", "TTTTTTTTTTTTTTT", "CCCCCCCCCCCC", "A"],
    }
    # k = 4, max_length 10: 8 k-mers fit, so sequences over 11 bp are truncated; under 4 bp have no k-mer
    assert data_statistics(splits, 4, 10) == {
        "train": {"rows": 3, "shorter_than_k": 1, "truncated": 1},
        "dev": {"rows": 2, "shorter_than_k": 1, "truncated": 0, "in_train": 1},
        "test": {"rows": 4, "shorter_than_k": 1, "truncated": 2, "in_train": 2},
    }
    assert "test split: 2 of 4 sequences also occur in the training set" in caplog.text
    assert "test split: 2 of 4 sequences are longer than 10 tokens and are truncated" in caplog.text
    assert data_statistics({"train": ["ACGTACGTACGT"]}, 4)["train"]["truncated"] is None


def test_missing_file(tmp_path):
    with pytest.raises(CmgemsError, match="cannot read"):
        read_labelled(tmp_path / "absent.csv")


def test_write_is_atomic_and_round_trips(tmp_path):
    path = tmp_path / "out" / "set.csv"
    write_labelled(path, ["ACGT", "GGCC"], np.array([1, 0]))
    assert path.read_text() == "sequence,label\nACGT,1\nGGCC,0\n"
    with pytest.raises(CmgemsError, match="2 sequences but 1 labels"):
        write_labelled(tmp_path / "bad.csv", ["ACGT", "GGCC"], [1])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


@settings(max_examples=50, deadline=None)
@given(seqs=st.lists(st.text("ACGTN", min_size=6, max_size=40), min_size=1, max_size=10), k=st.integers(3, 6))
def test_kmer_reconstruction_property(seqs, k):
    for seq in seqs:
        assert kmers_to_sequence(kmer_text(seq, k).split()) == seq


@pytest.mark.realdata
def test_real_genemask_files(shared_data):
    root = shared_data / "fewshot" / "genemask" / "Prom-core"
    seqs, labels = read_labelled(root / "10" / "train.tsv")  # quoted
    first = open(root / "10" / "train.tsv").readlines()[1].split("\t")[0].strip('"')
    assert kmer_text(seqs[0]) == first
    assert len(seqs) == 20 and set(map(len, seqs)) == {70} and np.bincount(labels).tolist() == [10, 10]
    test_seqs, test_labels = read_labelled(root / "test.tsv")  # unquoted
    assert len(test_seqs) == 5920 and set(map(len, test_seqs)) == {70}
    gue_seqs, gue_labels = read_labelled(shared_data / "gue" / "prom" / "prom_core_tata" / "dev.csv")
    assert len(gue_seqs) == 613 and set(gue_labels.tolist()) == {0, 1}
