"""n-gram counts and PMI scores of DNA n-grams (GeneMask / PMI-Masking).

Pipeline: `count` every n-gram (n = 1..N) of each cleaned contig file -> `merge` the per-contig
counts -> `score` each n-gram (n >= 2) by its PMI -> `token_ranks` for the masking module.

Two encodings of an n-gram, both explicit here:
  - count code (this module): base-4 number over A0 C1 G2 T3, first base most significant, so code
    order is the lexicographic order of the n-gram strings; dense count arrays of shape (4**n,)
    are indexed by it, and prefixes are `code >> 2 * (n - m)`.
  - token id (`cmgems.kmers`): NUM_SPECIAL + base-4 number over A0 T1 C2 G3 (DNABERT's order);
    `count_code_to_token_id` converts.

Counting does one table increment per base: only the N-grams are counted in the pass over the
sequence; the m-gram counts (m < N) follow from count_m(w) = sum_b count_{m+1}(w b) + (number of
segments whose last m-gram is w), since every m-window but the last of a segment extends to the right.
"""

from __future__ import annotations

import argparse
import logging
import math
from pathlib import Path

import numba
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from numba import njit, prange
from tqdm import tqdm

from cmgems import kmers
from cmgems.arrow_io import binary_buffers, read_parquet
from cmgems.atomic import atomic_output
from cmgems.errors import CmgemsError

log = logging.getLogger(__name__)

COUNT_ALPHABET = b"ACGT"
MAX_N = 12  # the dense N-gram table holds 4**N uint32 per block (64 MiB at N = 12)
BLOCK_WINDOWS = 2**32 - 1  # most windows one block counts (its uint32 table cannot overflow)
# How n-grams are scored and ranked (`score`): PMI_n over every segmentation with per-n probabilities
# (PMI-Masking's), ranked by PMI_n itself (levine) or by PMI_n x discount (npmi: GeneMask's normalised
# PMI, the papers' method); or the released GeneMask table's variant (genemask).
DEFINITIONS = ("npmi", "levine", "genemask")
DISCOUNTED = ("npmi", "genemask")  # the definitions ranked by PMI x discount
COUNT_COLUMNS = ("ngram", "n", "count")

# ASCII byte -> count code (A0 C1 G2 T3, upper case only), 4 for anything else.
COUNT_CODE = np.full(256, 4, dtype=np.uint8)
COUNT_CODE[np.frombuffer(COUNT_ALPHABET, dtype=np.uint8)] = np.arange(4, dtype=np.uint8)

Counts = dict[int, np.ndarray]  # n -> dense int64 counts of shape (4**n,), indexed by count code


# ---------------------------------------------------------------------------------------------
# Encodings
# ---------------------------------------------------------------------------------------------


def ngram_strings(codes: np.ndarray, n: int) -> pa.Array:
    """The n-gram strings of count codes, shape (M,) -> pyarrow string array of length M."""
    shifts = 2 * np.arange(n - 1, -1, -1, dtype=np.int64)
    digits = (np.asarray(codes, dtype=np.int64)[:, None] >> shifts) & 3
    chars = np.frombuffer(COUNT_ALPHABET, dtype=np.uint8)[digits]
    offsets = np.arange(len(codes) + 1, dtype=np.int32) * n
    return pa.StringArray.from_buffers(len(codes), pa.py_buffer(offsets), pa.py_buffer(chars.tobytes()))


def ngram_codes(strings: pa.Array | list[str], n: int, where: str = "n-grams") -> np.ndarray:
    """Count codes (int64, shape (M,)) of M n-gram strings, all of length n over ACGT."""
    data, offsets = binary_buffers(pa.array(strings) if isinstance(strings, list) else strings)
    if not (np.diff(offsets) == n).all():
        raise CmgemsError(f"{where}: an n-gram's length differs from its n = {n}")
    digits = COUNT_CODE[data].reshape(-1, n).astype(np.int64)
    if (digits > 3).any():
        raise CmgemsError(f"{where}: an n-gram of length {n} holds a character outside upper-case ACGT")
    return digits @ (4 ** np.arange(n - 1, -1, -1, dtype=np.int64))


def count_code_to_token_id(codes: np.ndarray, k: int) -> np.ndarray:
    """Token ids (`kmers` vocabulary, A T C G order, after the specials) of k-mer count codes."""
    to_vocab_digit = np.array([kmers.ALPHABET.index(b) for b in COUNT_ALPHABET.decode()], dtype=np.int64)
    codes = np.asarray(codes, dtype=np.int64)
    ids = np.zeros_like(codes)
    for j in range(k):
        shift = 2 * (k - 1 - j)
        ids |= to_vocab_digit[(codes >> shift) & 3] << shift
    return ids + kmers.NUM_SPECIAL


# ---------------------------------------------------------------------------------------------
# Counting
# ---------------------------------------------------------------------------------------------


@njit(cache=True, parallel=True)
def _count_windows(data, lut, lo, hi, block_start, n, tables):
    """Add every n-window starting in [lo[p], hi[p]) to tables[b] for the pieces p of block b.

    data: uint8 ASCII; the bytes of a window are data[s : s + n]. Returns the index of a byte outside
    ACGT, or -1.
    """
    mask = (1 << (2 * n)) - 1
    nblocks = tables.shape[0]
    bad = np.full(nblocks, -1, dtype=np.int64)
    for b in prange(nblocks):
        table = tables[b]
        for p in range(block_start[b], block_start[b + 1]):
            code = 0
            for i in range(lo[p], lo[p] + n - 1):
                c = lut[data[i]]
                if c > 3:
                    bad[b] = i
                code = (code << 2) | (c & 3)
            for i in range(lo[p] + n - 1, hi[p] + n - 1):
                c = lut[data[i]]
                if c > 3:
                    bad[b] = i
                code = ((code << 2) | (c & 3)) & mask
                table[code] += 1
    for b in range(nblocks):
        if bad[b] >= 0:
            return bad[b]
    return -1


@njit(cache=True)
def _count_segment_ends(data, lut, starts, ends, n, last):
    """last[(4**m - 4) // 3 + code] += 1 for the last m-gram of each segment, m = 1..min(length, n - 1).

    Also checks every byte of segments shorter than n (which hold no n-window). Returns the index of
    a byte outside ACGT, or -1.
    """
    for s in range(starts.shape[0]):
        length = ends[s] - starts[s]
        code = 0
        for i in range(ends[s] - min(length, n - 1), ends[s]):
            c = lut[data[i]]
            if c > 3:
                return i
            code = (code << 2) | c
        for m in range(1, min(length, n - 1) + 1):
            last[((1 << (2 * m)) - 4) // 3 + (code & ((1 << (2 * m)) - 1))] += 1
    return -1


def _window_pieces(starts: np.ndarray, ends: np.ndarray, n: int, nblocks: int):
    """Split the n-window start positions of all segments into pieces, balanced over nblocks.

    Returns lo, hi (int64, window starts [lo, hi) of each piece, within one segment) and
    block_start (int64, shape (nblocks + 1,): the pieces of block b are block_start[b]:block_start[b+1]).
    """
    windows = np.maximum(ends - starts - n + 1, 0)
    seg_first = np.concatenate([[0], np.cumsum(windows)])
    total = int(seg_first[-1])
    block_first = (np.arange(nblocks + 1, dtype=np.int64) * total) // nblocks
    cuts = np.unique(np.concatenate([seg_first, block_first]))
    a, b = cuts[:-1], cuts[1:]
    seg = np.searchsorted(seg_first, a, side="right") - 1  # the segment holding windows a..b-1
    lo = starts[seg] + (a - seg_first[seg])
    block = np.searchsorted(block_first, a, side="right") - 1
    block_start = np.searchsorted(block, np.arange(nblocks + 1), side="left").astype(np.int64)
    return lo.astype(np.int64), (lo + (b - a)).astype(np.int64), block_start


def count_buffer(data: np.ndarray, starts: np.ndarray, ends: np.ndarray, max_n: int = 10,
                 threads: int | None = None, where: str = "sequence") -> Counts:
    """Counts of every n-gram, n = 1..max_n, of the segments data[starts[i]:ends[i]] (ASCII ACGT).

    Windows never cross a segment boundary. Returns {n: int64 array (4**n,)} indexed by count code.
    At least `threads` (default: numba's thread count) blocks of windows, each at most BLOCK_WINDOWS,
    fill their own uint32 table of 4**max_n in parallel (uint32 halves the cache footprint).
    """
    if not 1 <= max_n <= MAX_N:
        raise CmgemsError(f"max n must be in 1..{MAX_N}, got {max_n}")
    data = np.ascontiguousarray(data, dtype=np.uint8)
    starts = np.asarray(starts, dtype=np.int64)
    ends = np.asarray(ends, dtype=np.int64)
    windows = int(np.maximum(ends - starts - max_n + 1, 0).sum())
    nblocks = max(1, threads or numba.get_num_threads(), -(-windows // BLOCK_WINDOWS))
    lo, hi, block_start = _window_pieces(starts, ends, max_n, nblocks)
    tables = np.zeros((nblocks, 4**max_n), dtype=np.uint32)
    bad = _count_windows(data, COUNT_CODE, lo, hi, block_start, max_n, tables)
    last = np.zeros((4**max_n - 4) // 3, dtype=np.int64)  # m = 1..max_n - 1, m-grams at (4**m - 4) // 3
    if bad < 0:
        bad = _count_segment_ends(data, COUNT_CODE, starts, ends, max_n, last)
    if bad >= 0:
        seg = int(np.searchsorted(starts, bad, side="right") - 1)
        raise CmgemsError(f"{where}: segment {seg}, offset {bad - starts[seg]}: {chr(data[bad])!r} is not upper-case ACGT")
    counts = {max_n: tables.sum(axis=0, dtype=np.int64)}
    for m in range(max_n - 1, 0, -1):
        first = (4**m - 4) // 3
        counts[m] = counts[m + 1].reshape(-1, 4).sum(axis=1) + last[first : first + 4**m]
    return dict(sorted(counts.items()))


def read_segments(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The segments of a cleaned contig file: data (uint8 ASCII), starts and ends (int64) into it."""
    column = read_parquet(path, ["sequence"], "column 'sequence' of a contig file").column("sequence")
    if column.null_count:
        raise CmgemsError(f"{path}: column 'sequence' holds nulls")
    data, offsets = binary_buffers(column.combine_chunks())
    return data, offsets[:-1], offsets[1:]


def count_contig_files(paths: list[str | Path], max_n: int = 10, threads: int | None = None) -> Counts:
    """Summed n-gram counts (n = 1..max_n) over all segments of cleaned contig files."""
    total: Counts = {n: np.zeros(4**n, dtype=np.int64) for n in range(1, max_n + 1)}
    for path in tqdm(paths, desc="count n-grams", unit="file", disable=len(paths) < 2):
        data, starts, ends = read_segments(path)
        for n, c in count_buffer(data, starts, ends, max_n, threads, where=str(path)).items():
            total[n] += c
    return total


# ---------------------------------------------------------------------------------------------
# Counts files
# ---------------------------------------------------------------------------------------------


def counts_table(counts: Counts) -> pa.Table:
    """Rows (ngram, n, count) with count > 0, sorted by n then ngram."""
    parts = []
    for n in sorted(counts):
        codes = np.flatnonzero(counts[n])
        parts.append(pa.table({
            "ngram": ngram_strings(codes, n),
            "n": pa.array(np.full(len(codes), n, dtype=np.int8)),
            "count": pa.array(counts[n][codes]),
        }))
    return pa.concat_tables(parts)


def write_counts(counts: Counts, path: str | Path) -> None:
    """Write a counts file (columns ngram, n, count) atomically."""
    with atomic_output(path) as tmp:
        pq.write_table(counts_table(counts), tmp)


def read_counts(path: str | Path) -> Counts:
    """Dense counts {n: int64 (4**n,)} of a counts file; every n from 1 to its largest n is present.

    Raises CmgemsError naming the file for missing columns, bad n-grams or counts, duplicate
    n-grams, or no n = 1 rows.
    """
    table = read_parquet(path, what="counts file")
    missing = [c for c in COUNT_COLUMNS if c not in table.column_names]
    if missing:
        raise CmgemsError(f"{path}: counts file lacks column(s) {missing}; it has {table.column_names}")
    types = {c: table.schema.field(c).type for c in COUNT_COLUMNS}
    if not (pa.types.is_string(types["ngram"]) or pa.types.is_large_string(types["ngram"])) \
            or not pa.types.is_integer(types["n"]) or not pa.types.is_integer(types["count"]):
        raise CmgemsError(f"{path}: counts file columns must be ngram: string, n: integer, count: integer; got {types}")
    if any(table.column(c).null_count for c in COUNT_COLUMNS):
        raise CmgemsError(f"{path}: counts file holds nulls")
    ns = table.column("n").to_numpy().astype(np.int64)
    count = table.column("count").to_numpy().astype(np.int64)
    if not (ns == 1).any():
        raise CmgemsError(f"{path}: counts file has no n = 1 rows (unigram counts are required)")
    if ns.min() < 1 or ns.max() > MAX_N:
        raise CmgemsError(f"{path}: n must be in 1..{MAX_N}, got {ns.min()}..{ns.max()}")
    if (count < 0).any():
        raise CmgemsError(f"{path}: negative count")
    ngram = table.column("ngram").combine_chunks()
    counts: Counts = {}
    for n in range(1, int(ns.max()) + 1):
        rows = np.flatnonzero(ns == n)
        codes = ngram_codes(ngram.take(rows), n, where=str(path))
        dense = np.zeros(4**n, dtype=np.int64)
        dense[codes] = count[rows]
        increasing = codes if (np.diff(codes) > 0).all() else np.sort(codes)  # counts files are sorted
        if (np.diff(increasing) == 0).any():
            raise CmgemsError(f"{path}: duplicate n-grams of length {n}")
        counts[n] = dense
    return counts


def merge_count_files(paths: list[str | Path], out: str | Path) -> Counts:
    """Sum counts files n-gram by n-gram and write the result to `out`; returns the dense sum."""
    total: Counts = {}
    for path in tqdm(paths, desc="merge counts", unit="file", disable=len(paths) < 2):
        for n, c in read_counts(path).items():
            total[n] = total[n] + c if n in total else c
    write_counts(total, out)
    return total


# ---------------------------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------------------------


def log_probs(counts: Counts, definition: str = "npmi") -> dict[int, np.ndarray]:
    """ln p(w) for every code of every n, float64 (4**n,), -inf for count 0.

    npmi, levine: p(w) = count(w) / N_|w| (N_n = windows of length n counted = sum of the n-gram counts);
    genemask: p(w) = count(w) / Z with Z = 2 x (number of bases counted) for every n.
    """
    if definition not in DEFINITIONS:
        raise CmgemsError(f"unknown PMI definition {definition!r}; choose one of {DEFINITIONS}")
    z = 2 * int(counts[1].sum())
    out = {}
    with np.errstate(divide="ignore"):
        for n, c in counts.items():
            total = z if definition == "genemask" else int(c.sum())
            out[n] = np.log(c) - math.log(total) if total > 0 else np.full(c.shape, -np.inf)
    return out


def best_segmentation(codes: np.ndarray, n: int, logp: dict[int, np.ndarray], max_part: int) -> np.ndarray:
    """max over segmentations of each n-gram into >= 2 contiguous parts of length <= max_part of
    sum ln p(part), by dynamic programming over prefixes; float64 (M,), -inf when none is possible.

    codes: count codes (M,) of n-grams; logp[m]: ln p of every m-gram (missing m -> -inf).
    """
    best = [np.zeros(len(codes))]  # best[j]: best segmentation of the prefix w[:j] (any parts)
    for j in range(1, n + 1):
        prefix = codes >> (2 * (n - j))
        acc = np.full(len(codes), -np.inf)
        for i in range(max(0 if j < n else 1, j - max_part), j):
            m = j - i
            if m not in logp:
                continue
            part = logp[m][prefix & ((1 << (2 * m)) - 1)]
            np.maximum(acc, best[i] + part, out=acc)
        best.append(acc)
    return best[n]


def score(counts: Counts, definition: str = "npmi", min_count: int = 101) -> pa.Table:
    """PMI of every n-gram with n >= 2 and count >= min_count.

    Columns ngram, n, count, naive_pmi, pmi, discount = ln c / (ln c + ln min_count) (1 when
    min_count = 1), norm_pmi = the score n-grams are ranked by, rank (within n: 1 = highest
    norm_pmi, ties by ngram). Rows sorted by n then rank. Sub-parts use every counted n-gram,
    whatever its count. Every definition takes the max over segmentations into >= 2 parts (genemask:
    parts of length 1-2 only), so a 2-gram's pmi equals its naive_pmi. The ranking score follows the
    definition: `npmi` ranks by pmi x discount (GeneMask's normalised PMI, which favours frequent
    n-grams over rare ones of equal PMI), `levine` by PMI_n itself (PMI-Masking, Levine et al.; the
    count threshold is the only frequency control), `genemask` by pmi x discount of its own pmi (the
    released table); the discount column is written for all.
    """
    if min_count < 1:
        raise CmgemsError(f"min count must be >= 1, got {min_count}")
    logp = log_probs(counts, definition)
    parts = []
    for n in sorted(k for k in counts if k >= 2):
        codes = np.flatnonzero(counts[n] >= min_count)
        count = counts[n][codes]
        lp = logp[n][codes]
        naive = lp - sum(logp[1][(codes >> (2 * i)) & 3] for i in range(n))
        pmi = lp - best_segmentation(codes, n, logp, 2 if definition == "genemask" else n)
        lc = np.log(count)
        discount = lc / (lc + math.log(min_count)) if min_count > 1 else np.ones(len(codes))
        norm = pmi * discount if definition in DISCOUNTED else pmi
        order = np.lexsort((codes, -norm))
        rank = np.empty(len(codes), dtype=np.int64)
        rank[order] = np.arange(1, len(codes) + 1)
        parts.append(pa.table({
            "ngram": ngram_strings(codes[order], n),
            "n": pa.array(np.full(len(codes), n, dtype=np.int8)),
            "count": pa.array(count[order]),
            "naive_pmi": pa.array(naive[order]),
            "pmi": pa.array(pmi[order]),
            "discount": pa.array(discount[order]),
            "norm_pmi": pa.array(norm[order]),
            "rank": pa.array(rank[order]),
        }))
    if not parts:
        raise CmgemsError("counts hold no n-grams with n >= 2 to score")
    return pa.concat_tables(parts)


def score_file(counts_path: str | Path, out: str | Path, definition: str = "npmi", min_count: int = 101) -> pa.Table:
    """Score a counts file and write the PMI table to `out` atomically."""
    counts = read_counts(counts_path)
    if max(counts) < 2:
        raise CmgemsError(f"{counts_path}: counts file holds no n-grams with n >= 2 to score")
    table = score(counts, definition, min_count)
    with atomic_output(out) as tmp:
        pq.write_table(table, tmp)
    return table


def token_ranks(pmi_path: str | Path, k: int) -> np.ndarray:
    """Rank of each token id's k-mer in a PMI table, int64 (kmers.vocab_size(k),).

    k-mers absent from the table and the special ids get the last rank + 1 (`ranks_by_token`).
    Lower rank = higher ranking score (norm_pmi) = masked first. A table that leaves every k-mer tied
    (none ranked, as when min_count keeps none) is a CmgemsError: PMI-guided masking would not be.
    """
    table = read_parquet(pmi_path, ["ngram", "n", "rank"], "columns ngram, n, rank of a PMI table")
    rows = table.filter(pc.equal(table.column("n"), k))
    ranks = ranks_by_token(token_ids(rows, k, pmi_path), rows.column("rank").to_numpy(), k)
    if len(np.unique(ranks[kmers.NUM_SPECIAL :])) < 2:
        raise CmgemsError(f"{pmi_path}: every {k}-mer has the same rank ({len(rows)} {k}-mer(s) in the table), so "
                          f"PMI-guided masking would be random masking; lower pmi.min_count (or count more sequence: "
                          f"pmi.contigs) and rerun")
    return ranks


def token_ids(rows: pa.Table, k: int, where: str | Path) -> np.ndarray:
    """The token ids of the k-mers of `rows`' column `ngram` (int64 (M,))."""
    return count_code_to_token_id(ngram_codes(rows.column("ngram").combine_chunks(), k, where=str(where)), k)


def ranks_by_token(ids: np.ndarray, ranks: np.ndarray, k: int) -> np.ndarray:
    """int64 (kmers.vocab_size(k),): `ranks` at the token `ids`; the other k-mers and the special ids
    rank after every given one (the largest rank + 1)."""
    out = np.full(kmers.vocab_size(k), int(ranks.max(initial=0)) + 1, dtype=np.int64)
    out[ids] = ranks
    return out


PUBLISHED_COLUMNS = ("ngram", "ngram_size", "norm_pmi_rank_rel")  # GeneMask's Data-A (Code-C cells 19, 22)


def published_token_ranks(path: str | Path, k: int) -> np.ndarray:
    """`token_ranks` from a published ranking: a CSV with GeneMask's Data-A columns (Data-A_norm-pmi-score-
    ranking.csv: `ngram`, `ngram_size`, `norm_pmi_rank_rel`, the rank its Code-C cell 22 maps each 6-mer
    to and the released pretraining code masks with), its rows of n = k. int64 (kmers.vocab_size(k),);
    k-mers absent from it and the special ids rank after every listed one. Missing columns, a rank that
    is not a positive integer and a k-mer listed twice are CmgemsErrors naming the file."""
    try:
        table = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(
            include_columns=list(PUBLISHED_COLUMNS), column_types={"ngram": pa.string()}))
    except (pa.ArrowInvalid, KeyError) as err:
        raise CmgemsError(f"{path}: not a published PMI ranking with the columns {', '.join(PUBLISHED_COLUMNS)} "
                          f"(GeneMask's Data-A_norm-pmi-score-ranking.csv): {err}") from None
    rows = table.filter(pc.equal(table.column("ngram_size"), k))
    ranks = rows.column("norm_pmi_rank_rel").to_numpy(zero_copy_only=False)
    if len(rows) == 0 or not np.issubdtype(ranks.dtype, np.integer) or ranks.min() < 1:
        raise CmgemsError(f"{path}: needs {k}-mers (ngram_size {k}) ranked by positive integers in norm_pmi_rank_rel")
    ids = token_ids(rows, k, path)
    if len(np.unique(ids)) < len(ids):
        raise CmgemsError(f"{path}: a {k}-mer is listed twice")
    return ranks_by_token(ids, ranks, k)


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------


def _count_cli(args: argparse.Namespace) -> None:
    counts = count_contig_files(args.contigs, args.max_n, args.threads)
    write_counts(counts, args.out)
    log.info("counted %d bases in %d file(s) -> %s", counts[1].sum(), len(args.contigs), args.out)


def _merge_cli(args: argparse.Namespace) -> None:
    counts = merge_count_files(args.counts, args.out)
    log.info("merged %d counts files (%d bases) -> %s", len(args.counts), counts[1].sum(), args.out)


def _score_cli(args: argparse.Namespace) -> None:
    table = score_file(args.counts, args.out, args.definition, args.min_count)
    log.info("scored %d n-grams (%s, min count %d) -> %s", len(table), args.definition, args.min_count, args.out)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="pmi_command", required=True, metavar="COMMAND")
    count = sub.add_parser("count", help="count n-grams (n = 1..max n) of cleaned contig files")
    count.add_argument("--contigs", nargs="+", required=True, help="cleaned contig parquet files")
    count.add_argument("--max-n", type=int, default=10, help="longest n-gram (default 10)")
    count.add_argument("--threads", type=int, default=None, help="counting threads (default: all)")
    count.add_argument("--out", required=True, help="counts parquet (ngram, n, count)")
    count.set_defaults(func=_count_cli)
    merge = sub.add_parser("merge", help="sum counts files")
    merge.add_argument("--counts", nargs="+", required=True, help="counts parquet files")
    merge.add_argument("--out", required=True, help="merged counts parquet")
    merge.set_defaults(func=_merge_cli)
    scoring = sub.add_parser("score", help="PMI of every n-gram (n >= 2) with count >= min count")
    scoring.add_argument("--counts", required=True, help="counts parquet (with n = 1 rows)")
    scoring.add_argument("--out", required=True, help="PMI parquet")
    scoring.add_argument("--definition", choices=DEFINITIONS, default="npmi",
                         help="npmi (default; the papers' normalised PMI): PMI_n over all segmentations, p = c / N_n, "
                              "ranked by PMI_n x discount; levine: the same PMI_n ranked by itself (PMI-Masking); "
                              "genemask: the released table's, parts of length 1-2, p = c / (2 x bases), ranked by "
                              "PMI x discount")
    scoring.add_argument("--min-count", type=int, default=101, help="smallest count scored (default 101)")
    scoring.set_defaults(func=_score_cli)
