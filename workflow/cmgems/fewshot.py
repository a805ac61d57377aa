"""Few-shot training sets: seeded draws of N sequences per class, GeneMask's published pooled sets,
and the published files fetched at a pinned commit (`cmgems.download`, checked by their git blob SHA-1).

GeneMask's pooled files (Splice-40 and silencer train files) hold the rows of 10 runs, shuffled:
their totals are exactly shots x runs per class, the files hold no sequence twice across runs, but
contiguous blocks of shots x classes rows are not class-balanced (Splice-40 10-shot rows 1-30 hold
12/4/14 of classes 0/1/2). So a run is read per class in file order: run R takes, of every class,
its rows number R*shots .. (R+1)*shots - 1 (0-based, counting that class's rows only), which gives
exactly `shots` sequences per class, disjoint runs, and the whole file over the 10 runs.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

from cmgems.download import GIT_BLOB_SHA1, download, given_path
from cmgems.errors import CmgemsError
from cmgems.labelled import read_labelled, write_labelled

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------ few-shot sets
def check_shots(shots: int) -> int:
    if shots < 1:
        raise CmgemsError(f"--shots must be >= 1 (got {shots})")
    return shots


def sample_indices(labels: np.ndarray, shots: int, seed: int, pool: str | Path = "pool") -> np.ndarray:
    """Row indices of `shots` rows drawn per class without replacement, seeded; sorted (file order)."""
    check_shots(shots)
    rng = np.random.default_rng(seed)
    chosen = []
    for label in np.unique(labels):
        rows = np.flatnonzero(labels == label)
        if len(rows) < shots:
            raise CmgemsError(f"{pool}: class {label} has {len(rows)} sequences, fewer than the {shots} shots requested")
        chosen.append(rng.choice(rows, size=shots, replace=False))
    return np.sort(np.concatenate(chosen))


def pooled_indices(labels: np.ndarray, shots: int, run: int, path: str | Path = "file") -> np.ndarray:
    """Row indices of run `run` (0-based) of a pooled file: per class, its rows run*shots..(run+1)*shots-1.

    A file holding a single set (GeneMask's Prom-core, Prom-300, Cohn-enh) gives that set to every
    run; the runs then differ by their training seed only, as in GeneMask's protocol."""
    check_shots(shots)
    classes, counts = np.unique(labels, return_counts=True)
    runs = int(counts.min()) // shots
    if runs == 1 and run >= 0:
        run = 0
    if not 0 <= run < runs:
        detail = ", ".join(f"class {c}: {n}" for c, n in zip(classes, counts))
        raise CmgemsError(f"{path}: run {run} requested but it holds {runs} run(s) of {shots} shots per class ({detail} rows)")
    if any(n != runs * shots for n in counts):
        log.warning("%s: class counts %s are not %d runs x %d shots; using the first %d", path, counts.tolist(), runs, shots, runs)
    keep = np.zeros(len(labels), dtype=bool)
    for label in classes:
        keep[np.flatnonzero(labels == label)[run * shots : (run + 1) * shots]] = True
    return np.flatnonzero(keep)


def write_subset(sequences: list[str], labels: np.ndarray, index: np.ndarray, out: str | Path) -> None:
    write_labelled(given_path(out, "output"), [sequences[i] for i in index], labels[index])


def sample(pool: str, shots: int, seed: int, out: str) -> None:
    """`cmgems fewshot sample`: N per class from a labelled pool, seeded, to a sequence,label CSV."""
    sequences, labels = read_labelled(given_path(pool, "pool"))
    write_subset(sequences, labels, sample_indices(labels, shots, seed, pool), out)


def pooled(file: str, shots: int, run: int, out: str) -> None:
    """`cmgems fewshot pooled`: run R of a GeneMask pooled file, to a sequence,label CSV."""
    sequences, labels = read_labelled(given_path(file, "pooled file"))
    write_subset(sequences, labels, pooled_indices(labels, shots, run, file), out)


# ------------------------------------------------------------------------------------------- CLI
def configure_parser(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    p = sub.add_parser("fetch", help="download a published file (HTTPS, resumed, retried), checked by its git blob SHA-1")
    p.add_argument("--url", required=True, help="the file at a pinned commit, e.g. https://raw.githubusercontent.com/OWNER/REPO/COMMIT/PATH")
    p.add_argument("--sha1", required=True, help="its git blob SHA-1, as the repository's tree lists it (git ls-tree)")
    p.add_argument("--out", required=True, help="output file")
    p.add_argument("--retries", type=int, default=5)
    p.set_defaults(func=lambda a: download(a.url, GIT_BLOB_SHA1, a.sha1, a.out, a.retries))
    p = sub.add_parser("sample", help="draw N sequences per class from a labelled pool (seeded)")
    p.add_argument("--pool", required=True, help="labelled file (CSV or GeneMask TSV)")
    p.add_argument("--shots", type=int, required=True, help="sequences per class")
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--out", required=True, help="output CSV (sequence,label)")
    p.set_defaults(func=lambda a: sample(a.pool, a.shots, a.seed, a.out))
    p = sub.add_parser("pooled", help="take run R of a GeneMask file holding 10 pooled few-shot sets")
    p.add_argument("--file", required=True, help="GeneMask pooled train file")
    p.add_argument("--shots", type=int, required=True, help="sequences per class in one run")
    p.add_argument("--run", type=int, required=True, help="0-based run number")
    p.add_argument("--out", required=True, help="output CSV (sequence,label)")
    p.set_defaults(func=lambda a: pooled(a.file, a.shots, a.run, a.out))
