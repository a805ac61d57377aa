"""A k-mer count baseline: log1p k-mer counts (4**k columns) -> L2 logistic regression.

C (inverse regularisation) is chosen from C_GRID by MCC: on the dev set when one is given,
otherwise by stratified k-fold cross-validation on the training set (up to 5 folds, fewer when the
rarest class has fewer rows; seeded shuffling; with fewer than 2 rows in some class, C = 1). The
model is then refit on the training set alone and scores the test set. Outputs as `cmgems finetune`;
packs too (`cmgems baseline --pack SPEC`, see `cmgems.packs`), where a file several runs read (a
few-shot test set) is read and featurised once.
"""

from __future__ import annotations

import argparse
import functools
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from scipy import sparse
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold

from cmgems import kmers, layout, packs
from cmgems.labelled import PackFiles, check_labels, data_statistics
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


@dataclass
class Settings:
    """Everything a baseline run depends on."""

    train: str
    test: str
    out: str
    dev: str | None = None
    k: int = 6
    seed: int = 42
    meta: dict = field(default_factory=dict)


def fit_and_score(s: Settings, files: PackFiles) -> Callable[[Path], dict]:
    """Fit the k-mer baseline of one run and score its test set; returns the writer of its files."""
    kmers.check_k(s.k)
    started = time.perf_counter()
    named = {name: path for name, path in (("train", s.train), ("dev", s.dev), ("test", s.test)) if path}
    read = {name: files.read(path) for name, path in named.items()}
    num_labels = check_labels(*((named[name], read[name][1]) for name in ("train", "test", "dev") if name in named))
    data = data_statistics({name: seqs for name, (seqs, _) in read.items()}, s.k)
    x = {name: files.derived(path, ("kmers", s.k), lambda: kmer_features(read[name][0], s.k))
         for name, path in named.items() if name != "test"}
    y, y_test = read["train"][1], read["test"][1]
    dev_data = (x["dev"], read["dev"][1]) if s.dev else None
    c, grid = choose_c(x["train"], y, s.seed, dev_data)
    model = fit(x["train"], y, c, s.seed)
    train_seconds = time.perf_counter() - started
    started = time.perf_counter()
    x_test = files.derived(s.test, ("kmers", s.k), lambda: kmer_features(read["test"][0], s.k))
    scores = class_scores(model, x_test, num_labels)
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
            "train": s.train, "test": s.test, "dev": s.dev, "out": s.out, "k": s.k, "seed": s.seed,
            "features": f"log1p {s.k}-mer counts", "C": c, "C_selection": "dev" if s.dev else "stratified k-fold on train",
            "C_scores": {str(key): v for key, v in grid.items()}, "num_labels": num_labels,
        },
    }
    identity = layout.BASELINE_MODEL._asdict()
    log.info("%s: C=%g", s.out, c)
    return functools.partial(write_results, meta={**identity, **s.meta}, labels=y_test, scores=scores, record=record)


def baseline_pack(runs: Sequence[tuple[Settings, str | None]]) -> list[dict]:
    """The baseline runs of a pack, (settings, cache folder or None) each, one after another (see
    `cmgems.packs`); returns their metrics.json objects."""
    files = PackFiles([[p for p in (s.train, s.dev, s.test) if p] for s, _ in runs])

    def compute(i: int) -> Callable[[Path], dict]:
        try:
            return fit_and_score(runs[i][0], files)
        finally:
            files.done(i)

    planned = [packs.Run(s.out, cache, asdict(s), [p for p in (s.train, s.dev, s.test) if p]) for s, cache in runs]
    return packs.run_pack(planned, compute)


def baseline(train: str, test: str, out: str, dev: str | None = None, k: int = 6, seed: int = 42, meta: dict | None = None) -> dict:
    """Fit the k-mer baseline, score the test set, write `out`/{metrics.json, predictions.parquet}."""
    return baseline_pack([(Settings(train, test, out, dev, k, seed, meta or {}), None)])[0]


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--train", help="labelled training file (CSV or GeneMask TSV); required")
    parser.add_argument("--test", help="labelled test file; required")
    parser.add_argument("--dev", help="labelled dev file: choose C on it (else k-fold CV on train)")
    parser.add_argument("--out", help="output directory (metrics.json, predictions.parquet); required")
    parser.add_argument("--k", type=int, default=Settings.k, help="k-mer length (3-6)")
    parser.add_argument("--seed", type=int, default=Settings.seed, help="seed of the cross-validation folds")
    parser.add_argument("--meta", help="JSON object merged into metrics.json at top level")
    packs.add_pack_option(parser)
    parser.set_defaults(func=functools.partial(run, parser=parser))


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    packs.check_pack_or_run(parser, args, ("train", "test", "out"))
    if args.pack is not None:
        runs = packs.read_spec(args.pack)
        baseline_pack([(packs.settings_from(Settings, entry, f"--pack: runs[{i}]"), cache) for i, (entry, cache) in enumerate(runs)])
        return
    baseline(args.train, args.test, args.out, args.dev, args.k, args.seed, parse_meta(args.meta))
