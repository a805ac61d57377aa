"""A k-mer count baseline: log1p k-mer counts (4**k columns) -> L2 logistic regression.

C (inverse regularisation) is chosen from C_GRID by MCC: on the dev set when one is given,
otherwise by stratified k-fold cross-validation on the training set (up to 5 folds, fewer when the
rarest class has fewer rows; seeded shuffling; with fewer than 2 rows in some class, C = 1). The
model is then refit on the training set alone and scores the test set. Outputs as `cmgems finetune`.
"""

from __future__ import annotations

import argparse
import logging
import time

import numpy as np
from scipy import sparse
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold

from cmgems import kmers
from cmgems.labelled import check_labels, data_statistics, read_labelled
from cmgems.metrics import classification_metrics, parse_meta, write_results

log = logging.getLogger(__name__)

C_GRID = (0.01, 0.1, 1.0, 10.0, 100.0)
MAX_FOLDS = 5


def kmer_features(sequences: list[str], k: int) -> sparse.csr_matrix:
    """log1p counts of the overlapping k-mers of each sequence, shape (N, 4**k), float32 (CSR).

    Windows holding a character outside ACGT are not counted.
    """
    ids = [kmers.kmer_ids(s, k) - kmers.NUM_SPECIAL for s in sequences]
    rows = np.repeat(np.arange(len(ids)), [len(x) for x in ids])
    cols = np.concatenate(ids) if ids else np.empty(0, dtype=np.int64)
    keep = cols >= 0
    ones = np.ones(int(keep.sum()), dtype=np.float32)
    counts = sparse.csr_matrix((ones, (rows[keep], cols[keep])), shape=(len(ids), 4**k))
    counts.sum_duplicates()
    counts.data = np.log1p(counts.data)
    return counts


def fit(x, y: np.ndarray, c: float, seed: int) -> LogisticRegression:
    return LogisticRegression(C=c, max_iter=2000, random_state=seed).fit(x, y)


def class_scores(model: LogisticRegression, x, num_labels: int) -> np.ndarray:
    """Class probabilities (N, num_labels), zero for classes absent from the training labels."""
    scores = np.zeros((x.shape[0], num_labels), dtype=np.float32)
    scores[:, model.classes_] = model.predict_proba(x)
    return scores


def mcc_of(model: LogisticRegression, x, y: np.ndarray) -> float:
    return classification_metrics(y, model.predict(x))["mcc"]


def choose_c(x, y, seed: int, dev=None) -> tuple[float, dict]:
    """The C of C_GRID with the best MCC (the smallest on ties) on dev, or by cross-validation; and all scores."""
    if dev is not None:
        scores = {c: mcc_of(fit(x, y, c, seed), *dev) for c in C_GRID}
    else:
        folds = min(MAX_FOLDS, int(np.bincount(y)[np.unique(y)].min()))
        if folds < 2:
            return 1.0, {}
        split = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
        scores = {
            c: float(np.mean([mcc_of(fit(x[tr], y[tr], c, seed), x[va], y[va]) for tr, va in split.split(x, y)]))
            for c in C_GRID
        }
    best = max(C_GRID, key=lambda c: (scores[c], -c))
    return best, scores


def baseline(train: str, test: str, out: str, dev: str | None = None, k: int = 6, seed: int = 42, meta: dict | None = None) -> dict:
    """Fit the k-mer baseline, score the test set, write `out`/{metrics.json, predictions.parquet}."""
    kmers.check_k(k)
    started = time.perf_counter()
    train_seqs, y = read_labelled(train)
    test_seqs, y_test = read_labelled(test)
    dev_seqs, y_dev = read_labelled(dev) if dev else (None, None)
    num_labels = check_labels((train, y), (test, y_test), *([(dev, y_dev)] if dev else []))
    splits = {"train": train_seqs, "dev": dev_seqs, "test": test_seqs}
    data = data_statistics({name: seqs for name, seqs in splits.items() if seqs is not None}, k)
    x = kmer_features(train_seqs, k)
    dev_data = (kmer_features(dev_seqs, k), y_dev) if dev else None
    c, grid = choose_c(x, y, seed, dev_data)
    model = fit(x, y, c, seed)
    train_seconds = time.perf_counter() - started
    started = time.perf_counter()
    scores = class_scores(model, kmer_features(test_seqs, k), num_labels)
    inference_seconds = time.perf_counter() - started
    dev_metrics = None
    if dev_data is not None:
        dev_scores = class_scores(model, dev_data[0], num_labels)
        dev_metrics = classification_metrics(dev_data[1], dev_scores.argmax(axis=1), dev_scores)
    record = {
        "dev_metrics": dev_metrics,
        "best_epoch": None,
        "best_step": None,
        "n_train": len(y),
        "n_dev": len(dev_data[1]) if dev_data else None,
        "n_test": len(y_test),
        "data": data,
        "train_seconds": train_seconds,
        "train_sequences_per_s": len(y) / train_seconds,
        "inference_sequences_per_s": len(y_test) / inference_seconds if inference_seconds else None,
        "settings": {
            "train": train, "test": test, "dev": dev, "out": out, "k": k, "seed": seed,
            "features": f"log1p {k}-mer counts", "C": c, "C_selection": "dev" if dev else "stratified k-fold on train",
            "C_scores": {str(key): v for key, v in grid.items()}, "num_labels": num_labels,
        },
    }
    identity = {"genome": "none", "model": "kmer_logreg", "masking": "none", "steps": 0}
    result = write_results(out, {**identity, **(meta or {})}, y_test, scores, record)
    log.info("%s: C=%g, test mcc %.4f", out, c, result["metrics"]["mcc"])
    return result


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--train", required=True, help="labelled training file (CSV or GeneMask TSV)")
    parser.add_argument("--test", required=True, help="labelled test file")
    parser.add_argument("--dev", help="labelled dev file: choose C on it (else k-fold CV on train)")
    parser.add_argument("--out", required=True, help="output directory (metrics.json, predictions.parquet)")
    parser.add_argument("--k", type=int, default=6, help="k-mer length (3-6)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--meta", help="JSON object merged into metrics.json at top level")
    parser.set_defaults(func=lambda a: baseline(a.train, a.test, a.out, a.dev, a.k, a.seed, parse_meta(a.meta)))
