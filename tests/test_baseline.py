"""cmgems.baseline: k-mer count features, C selection on dev or by CV, a real competitor on GUE mouse/2."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from cmgems import cli
from cmgems.baseline import kmer_features
from cmgems.labelled import write_labelled
from cmgems.metrics import classification_metrics


def test_kmer_features_hand_counted():
    x = kmer_features(["AAAAAAA", "ACGTNACG", "AC"], 6).toarray()
    assert x.shape == (3, 4096) and x.dtype == np.float32
    assert x[0, 0] == pytest.approx(np.log1p(2)) and x[0].sum() == pytest.approx(np.log1p(2))
    assert (x[1] == 0).all() and (x[2] == 0).all()  # every 6-mer window of row 1 holds the N
    x3 = kmer_features(["ACGTNACG"], 3).toarray()[0]
    # ACG twice (ids: A0 T1 C2 G3 -> ACG = 0*16 + 2*4 + 3 = 11), CGT once (2*16 + 3*4 + 1 = 45).
    assert (
        x3[11] == pytest.approx(np.log1p(2))
        and x3[45] == pytest.approx(np.log1p(1))
        and np.count_nonzero(x3) == 2
    )


def test_cv_path_and_bad_input(tmp_path, capsys):
    rng = np.random.default_rng(1)
    seqs = ["".join(rng.choice(list("ACGT"), 60)) for _ in range(40)]
    labels = np.arange(40) % 2
    seqs = [("TATAAA" * 3 + s) if y else s for s, y in zip(seqs, labels)]  # a motif makes class 1 learnable
    write_labelled(tmp_path / "train.csv", seqs[:30], labels[:30])
    write_labelled(tmp_path / "test.csv", seqs[30:], labels[30:])
    out = tmp_path / "run"
    assert (
        cli.main(
            [
                "baseline",
                "--train",
                str(tmp_path / "train.csv"),
                "--test",
                str(tmp_path / "test.csv"),
                "--out",
                str(out),
                "--meta",
                '{"dataset": "toy", "seed": 1}',
            ]
        )
        == 0
    )
    result = json.loads((out / "metrics.json").read_text())
    assert result["model"] == "kmer_logreg" and result["dataset"] == "toy" and result["dev_metrics"] is None
    assert (
        result["settings"]["C_selection"] == "stratified k-fold on train"
        and len(result["settings"]["C_scores"]) == 5
    )
    assert result["metrics"]["mcc"] == 1.0
    pred = pd.read_parquet(out / "predictions.parquet")
    labels_, preds, scores = pred["label"].to_numpy(), pred["prediction"].to_numpy(), pred.filter(regex="^score_").to_numpy()
    assert result["metrics"] == classification_metrics(labels_, preds, scores)
    (tmp_path / "bad.csv").write_text("sequence,label\nACGTACGT,0\nACGTACGT,zero\n")
    bad_out = tmp_path / "bad_run"
    assert (
        cli.main(
            [
                "baseline",
                "--train",
                str(tmp_path / "bad.csv"),
                "--test",
                str(tmp_path / "test.csv"),
                "--out",
                str(bad_out),
            ]
        )
        == 1
    )
    assert "bad.csv, line 3" in capsys.readouterr().err
    assert not bad_out.exists() and not list(tmp_path.glob(".bad_run*"))


@pytest.mark.parametrize(
    "train_labels, test_labels, message",
    [
        ([0, 0, 0, 0], [0, 0], "train.csv: every row has label 0; a classifier needs at least 2 classes"),
        ([0, 2, 0, 2], [0, 1], "train.csv: labels [0, 2] are not 0..2 (no training row has label 1)"),
        ([0, 1, 0, 1], [0, 2], "test.csv: label(s) [2] not in the training set"),
    ],
    ids=["single-class", "train-skips-a-class", "test-class-unseen"],
)
def test_label_sets_are_checked(tmp_path, capsys, train_labels, test_labels, message):
    """Before: a single class scored accuracy 1.0, and a class never trained on was scored."""
    seqs = ["ACGTACGTAAGG", "TTGGCCAATTGA", "GGGCCCAAATTT", "ACACACGTGTGT"]
    write_labelled(tmp_path / "train.csv", seqs, train_labels)
    write_labelled(tmp_path / "test.csv", seqs[: len(test_labels)], test_labels)
    argv = ["baseline", "--train", str(tmp_path / "train.csv"), "--test", str(tmp_path / "test.csv"), "--out", str(tmp_path / "run")]
    assert cli.main(argv) == 1
    assert message in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["test.csv", "train.csv"]


@pytest.mark.slow
@pytest.mark.realdata
def test_mouse2_is_a_real_competitor(shared_data, tmp_path):
    task = shared_data / "gue" / "mouse" / "2"
    out = tmp_path / "run"
    assert (
        cli.main(
            [
                "baseline",
                "--train",
                str(task / "train.csv"),
                "--dev",
                str(task / "dev.csv"),
                "--test",
                str(task / "test.csv"),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    result = json.loads((out / "metrics.json").read_text())
    assert result["metrics"]["mcc"] > 0.7 and result["settings"]["C_selection"] == "dev"
    assert result["n_train"] == 2620 and result["n_dev"] == 328 and result["n_test"] == 328
