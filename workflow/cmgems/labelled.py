"""Labelled sequence files: GUE CSVs and GeneMask's k-mer TSVs in, one CSV format out.

Accepted inputs (the delimiter is taken from the header line):
- CSV with header `sequence,label` (GUE), raw DNA per row;
- TSV with header `sequence<TAB>label`, optionally quoted (GeneMask few-shot train files), whose
  sequence column is either raw DNA or space-separated overlapping k-mers (stride 1), which are
  joined back into the raw sequence after checking that consecutive k-mers overlap by k - 1 bases.
Sequences are upper-cased and must hold only A, C, G, T, N; labels are non-negative integers. A UTF-8
byte-order mark is dropped; a quoted field must close on its own line. Bad input raises CmgemsError
naming the file and line. `check_labels` checks the label sets of a task's splits and
`data_statistics` counts what fine-tuning will do to them (truncation, sequences shorter than k,
test rows also in train). `PackFiles` reads the files of a pack's runs once each.
"""

from __future__ import annotations

import csv
import logging
import re
from pathlib import Path
from typing import Callable, Hashable, Iterator, Sequence, TypeVar

import numpy as np

from cmgems.atomic import atomic_output
from cmgems.errors import CmgemsError

log = logging.getLogger(__name__)
T = TypeVar("T")

COLUMNS = ("sequence", "label")
MAX_LABEL = 2**31 - 1
_NOT_DNA = re.compile(r"[^ACGTN]")
_INTEGER = re.compile(r"-?[0-9]+")
DESCRIBE = {
    "shorter_than_k": "are shorter than k = {k} (no k-mer)",
    "truncated": "are longer than {max_length} tokens and are truncated",
    "in_train": "also occur in the training set",
}


def kmers_to_sequence(tokens: list[str]) -> str:
    """The raw sequence spelled by overlapping k-mers (stride 1); ValueError if they do not overlap."""
    k = len(tokens[0])
    seq = tokens[0] + "".join(t[-1] for t in tokens[1:])
    if any(len(t) != k for t in tokens) or any(seq[i : i + k] != t for i, t in enumerate(tokens)):
        raise ValueError(f"its {k}-mers do not overlap by {k - 1} bases")
    return seq


def _parse_sequence(text: str) -> str:
    tokens = text.split()
    if not tokens:
        raise ValueError("empty sequence")
    seq = (tokens[0] if len(tokens) == 1 else kmers_to_sequence(tokens)).upper()
    bad = _NOT_DNA.search(seq)
    if bad:
        raise ValueError(f"character {bad.group()!r} at position {bad.start() + 1} is outside ACGTN")
    return seq


def _parse_label(text: str) -> int:
    if not _INTEGER.fullmatch(text.strip()):
        raise ValueError(f"label {text!r} is not an integer")
    label = int(text)
    if label < 0:
        raise ValueError(f"label {label} is negative")
    if label > MAX_LABEL:
        raise ValueError(f"label {label} is too large (a class index, at most {MAX_LABEL})")
    return label


def _rows(path: Path, handle, delimiter: str) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) per row after the header; CmgemsError for bad quoting, which includes a
    quoted field running past the end of its line (no sequence spans lines)."""
    reader = csv.reader(handle, delimiter=delimiter, strict=True)
    while True:
        line_no = reader.line_num + 2  # the header is line 1, read before the reader
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as err:
            raise CmgemsError(f"{path}, line {line_no}: cannot split the row into fields ({err}): an unbalanced or misplaced quote?") from None
        if reader.line_num + 1 > line_no:
            raise CmgemsError(f"{path}, line {line_no}: unbalanced quote (a quoted field runs past the end of the line)")
        yield line_no, row


def read_labelled(path: str | Path) -> tuple[list[str], np.ndarray]:
    """Sequences (upper-case raw DNA) and labels (int64, shape (N,)) of a labelled CSV/TSV file."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:  # -sig: a byte-order mark is dropped
            header = handle.readline()
            delimiter = "\t" if "\t" in header else ","
            names = [name.strip().strip('"').strip().lower() for name in header.rstrip("\r\n").split(delimiter)]
            missing = [c for c in COLUMNS if c not in names]
            if missing:
                raise CmgemsError(f"{path}, line 1: missing column(s) {missing} (header has {names})")
            i_seq, i_label = names.index("sequence"), names.index("label")
            sequences, labels = [], []
            for line_no, row in _rows(path, handle, delimiter):
                if not row or (len(row) == 1 and not row[0].strip()):
                    continue
                try:
                    if len(row) <= max(i_seq, i_label):
                        raise ValueError(f"{len(row)} field(s), expected {len(names)}")
                    sequences.append(_parse_sequence(row[i_seq]))
                    labels.append(_parse_label(row[i_label]))
                except ValueError as err:
                    raise CmgemsError(f"{path}, line {line_no}: {err}") from None
    except OSError as err:
        raise CmgemsError(f"{path}: cannot read ({err.strerror})") from None
    except UnicodeDecodeError as err:
        raise CmgemsError(f"{path}: not UTF-8 text (byte {err.object[err.start:err.start + 1]!r})") from None
    if not sequences:
        raise CmgemsError(f"{path}: no rows (empty split)")
    return sequences, np.asarray(labels, dtype=np.int64)


def _listed(values: np.ndarray, most: int = 10) -> str:
    shown = ", ".join(str(v) for v in values[:most])
    return f"[{shown}{', ...' if len(values) > most else ''}]"


def check_labels(train: tuple[str, np.ndarray], *evaluated: tuple[str, np.ndarray]) -> int:
    """The number of classes of a training set's (path, labels); CmgemsError unless its labels are
    0..C-1 with C >= 2 and every evaluated split's labels are among them, two classes at least (on one
    class, MCC and F1 do not measure the model)."""
    path, labels = train
    classes = np.unique(labels)
    if len(classes) < 2:
        raise CmgemsError(f"{path}: every row has label {classes[0]}; a classifier needs at least 2 classes")
    if classes[-1] != len(classes) - 1:  # sorted, unique and >= 0: 0..C-1 unless the largest is above C-1
        absent = int(np.flatnonzero(classes != np.arange(len(classes)))[0])
        raise CmgemsError(
            f"{path}: labels {_listed(classes)} are not 0..{classes[-1]} (no training row has label {absent}); "
            "labels must number the classes from 0"
        )
    for other, other_labels in evaluated:
        present = np.unique(other_labels)
        unseen = np.setdiff1d(present, classes)
        if unseen.size:
            raise CmgemsError(f"{other}: label(s) {_listed(unseen)} not in the training set {path} (labels {_listed(classes)})")
        if len(present) < 2:
            raise CmgemsError(f"{other}: every row has label {present[0]}; an evaluation set needs at least 2 classes "
                              "(on one, MCC and F1 do not measure the model)")
    return len(classes)


def data_statistics(splits: dict[str, list[str]], k: int, max_length: int | None = None) -> dict:
    """Per split: rows, sequences shorter than k (no k-mer), sequences truncated to `max_length` tokens
    ([CLS]/[SEP] included; None without a limit), and, for splits other than "train", rows whose exact
    sequence is also in train. Non-zero counts are logged as warnings."""
    train = set(splits.get("train", ()))
    stats = {}
    for name, sequences in splits.items():
        lengths = np.fromiter(map(len, sequences), dtype=np.int64, count=len(sequences))
        entry = {
            "rows": len(sequences),
            "shorter_than_k": int((lengths < k).sum()),
            "truncated": None if max_length is None else int((lengths - k + 1 > max_length - 2).sum()),
        }
        if name != "train":
            entry["in_train"] = sum(seq in train for seq in sequences)
        for key, count in entry.items():
            if key != "rows" and count:
                log.warning("%s split: %d of %d sequences %s", name, count, len(sequences), DESCRIBE[key].format(k=k, max_length=max_length))
        stats[name] = entry
    return stats


def write_labelled(path: str | Path, sequences: list[str], labels) -> None:
    """Write a `sequence,label` CSV (raw DNA, integer labels), atomically."""
    labels = np.asarray(labels)
    if len(sequences) != len(labels):
        raise CmgemsError(f"{path}: {len(sequences)} sequences but {len(labels)} labels")
    with atomic_output(path) as tmp:
        with open(tmp, "w", newline="") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(COLUMNS)
            writer.writerows(zip(sequences, (int(x) for x in labels)))


class PackFiles:
    """The labelled files of a pack's runs, each read once, and what is derived from one (tokens,
    features) made once per key; a file and its derivations are dropped after the last run that
    reads it (`done`), so a pack holds only the files later runs share (a few-shot test set)."""

    def __init__(self, runs: Sequence[Sequence[str]]):
        self.last_use = {path: i for i, paths in enumerate(runs) for path in paths}
        self.cache: dict[tuple, object] = {}

    def read(self, path: str) -> tuple[list[str], np.ndarray]:
        """`read_labelled(path)`, once."""
        return self.derived(path, "read", lambda: read_labelled(path))

    def derived(self, path: str, key: Hashable, make: Callable[[], T]) -> T:
        """`make()`, once per (path, key)."""
        if (path, key) not in self.cache:
            self.cache[path, key] = make()
        return self.cache[path, key]

    def done(self, run: int) -> None:
        """Drop what only runs up to `run` (0-based) read."""
        self.cache = {k: v for k, v in self.cache.items() if self.last_use.get(k[0], -1) > run}
