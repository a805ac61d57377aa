"""metrics.json of finetune and the baseline records what happened to the data: sequences truncated
to --max-length, sequences shorter than k, and dev/test rows whose sequence is also in train."""

from __future__ import annotations

import json

import pytest

from cmgems import cli
from cmgems.labelled import write_labelled

TRAIN = ["ACGTACGTACGTAC", "TTGGCCAATTGGCA", "ACG", "GATTACAGATTACAGATTACAGATTACA"]  # 14, 14, 3, 28 bp
DEV = ["TTGGCCAATTGGCA", "CCCCGGGGAAAATT"]
TEST = ["ACGTACGTACGTAC", "GATTACAGATTACAGATTACAGATTACA", "AC", "CCAACCAACCAACC"]


@pytest.fixture
def task(tmp_path):
    for name, seqs in (("train", TRAIN), ("dev", DEV), ("test", TEST)):
        write_labelled(tmp_path / f"{name}.csv", seqs, [i % 2 for i in range(len(seqs))])
    return tmp_path


def data_of(out) -> dict:
    return json.loads((out / "metrics.json").read_text())["data"]


def test_finetune_records_truncation_short_sequences_and_overlap(task, tiny_model, caplog):
    out = task / "run"
    argv = ["finetune", "--model", str(tiny_model), "--out", str(out), "--max-length", "20", "--max-steps", "1",
            "--batch-size", "2", "--eval-steps", "1"]  # fmt: skip
    argv += [f"--{split}={task / split}.csv" for split in ("train", "dev", "test")]
    assert cli.main(argv) == 0
    # k = 6, max_length 20: 18 k-mers fit, so sequences over 23 bp are truncated; under 6 bp have no k-mer
    assert data_of(out) == {
        "train": {"rows": 4, "shorter_than_k": 1, "truncated": 1},
        "dev": {"rows": 2, "shorter_than_k": 0, "truncated": 0, "in_train": 1},
        "test": {"rows": 4, "shorter_than_k": 1, "truncated": 1, "in_train": 2},
    }
    assert "test split: 2 of 4 sequences also occur in the training set" in caplog.text


def test_baseline_records_short_sequences_and_overlap(task):
    out = task / "run"
    argv = ["baseline", "--out", str(out)] + [f"--{split}={task / split}.csv" for split in ("train", "dev", "test")]
    assert cli.main(argv) == 0
    assert data_of(out) == {  # the baseline counts every k-mer: nothing is truncated
        "train": {"rows": 4, "shorter_than_k": 1, "truncated": None},
        "dev": {"rows": 2, "shorter_than_k": 0, "truncated": None, "in_train": 1},
        "test": {"rows": 4, "shorter_than_k": 1, "truncated": None, "in_train": 2},
    }
