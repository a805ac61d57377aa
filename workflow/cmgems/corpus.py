"""The pretraining corpus: chunk cleaned contigs (DNABERT/GeneMask style), deduplicate, split, stream.

Chunking (`chunk_contig`), per segment of a contig (a splice_n contig is one segment, so this is
GeneMask's per-chromosome scheme): skip a random offset in [0, 1000), then cut consecutive,
non-overlapping chunks; each is full length (max_tokens + k - 1 bp, i.e. max_tokens k-mers, which
with [CLS]/[SEP] fill max_tokens + 2 positions) with probability full_length_prob, else uniform in
[min_tokens + k - 1, random_max_tokens + k - 1] bp (random_max_tokens 0: max_tokens; GeneMask's
notebook: 511 bp or 6..510 bp, i.e. max_tokens 506, min_tokens 1, random_max_tokens 505). A final piece that does not fit is kept at its own
length if it is at least min_tokens + k - 1 bp, else dropped. The random stream is seeded from
(seed, blake2b(contig name)), so a contig's chunks depend on nothing else.

Each chunk carries `hash`, the first 8 bytes (little-endian uint64) of blake2b(sequence). `finalize`
removes duplicates across all contigs by this hash (the first in contig order, then position, is
kept; a 64-bit collision between different sequences, p ~ n**2 / 2**65, would drop one of them) and
sends a chunk to validation iff (hash mod 2**32) < validation_fraction * 2**32, so identical
sequences share a split and a contig's split does not depend on the others.

Reading for pretraining: `TrainingSequences` memory-maps the training split; global sequence
position g of a run is row `training_rows(g)`, a seeded permutation of the whole split per epoch
(every step draws from the whole genome); `validation_sample` is a seeded sample of the whole
validation split.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from cmgems.arrow_io import (
    SEQUENCE_SCHEMA,
    binary_array,
    binary_buffers,
    read_parquet,
    table_meta,
    write_sequence_table,
)
from cmgems.atomic import atomic_output, write_json
from cmgems.errors import CmgemsError

log = logging.getLogger(__name__)

MAX_OFFSET = 1000
ROW_GROUP_ROWS = 8192
TRAINING_INDEX = "train.arrow"  # the training split, memory-mappable (write_training_index)
SPLITS = ("train", "validation")
CHUNK_SCHEMA = SEQUENCE_SCHEMA.append(pa.field("hash", pa.uint64()))


# ---------------------------------------------------------------------------------------- helpers


def stable_hash(data: bytes) -> int:
    """A 64-bit hash of `data`, the same on every run and machine (blake2b, 8-byte digest)."""
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


def sequence_hashes(data: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """`stable_hash` of each sequence data[offsets[i]:offsets[i+1]]; shape (len(offsets) - 1,), uint64."""
    view = memoryview(data)
    bounds = offsets.tolist()
    digest = b"".join(
        hashlib.blake2b(view[a:b], digest_size=8).digest() for a, b in zip(bounds[:-1], bounds[1:])
    )
    return np.frombuffer(digest, dtype="<u8").astype(np.uint64)


def parse_value(text: str):
    """A metadata value as the number or boolean it spells (JSON), else the string itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def contig_name(table: pa.Table, path: str | os.PathLike) -> str:
    """The contig of a per-contig Parquet file: its `contig` metadata, else the file name."""
    return table_meta(table).get("contig") or Path(path).name.removesuffix(".parquet")


# ---------------------------------------------------------------------------------------- chunking


def contig_rng(seed: int, contig: str) -> np.random.Generator:
    """The random stream of one contig: independent of other contigs and of run order."""
    return np.random.default_rng([seed, stable_hash(contig.encode())])


def chunk_lengths(rng: np.random.Generator, available: int, lo: int, hi: int, p_full: float,
                  random_hi: int | None = None) -> np.ndarray:
    """Lengths (bp, int64) of consecutive chunks filling at most `available` bp.

    Each is `hi` with probability p_full, else uniform in [lo, random_hi] (default `hi`); the last,
    truncated to what is left, is kept if at least `lo` bp.
    """
    random_hi = hi if random_hi is None else random_hi
    mean = p_full * hi + (1 - p_full) * (lo + random_hi) / 2
    parts, total = [], 0
    while total < available:
        n = int((available - total) / mean * 1.05) + 8
        full = rng.random(n) < p_full
        drawn = np.where(full, hi, rng.integers(lo, random_hi + 1, n))
        parts.append(drawn)
        total += int(drawn.sum())
    lengths = np.concatenate(parts) if parts else np.empty(0, np.int64)
    ends = np.cumsum(lengths)
    fit = int(np.searchsorted(ends, available, side="right"))
    remainder = available - (int(ends[fit - 1]) if fit else 0)
    lengths = lengths[:fit].astype(np.int64)
    return np.append(lengths, remainder) if remainder >= lo else lengths


def chunk_table(
    segments: pa.Table,
    contig: str,
    k: int,
    max_tokens: int,
    min_tokens: int,
    full_length_prob: float,
    seed: int,
    random_max_tokens: int = 0,
) -> pa.Table:
    """Chunks (CHUNK_SCHEMA) of a contig's segments table (columns start, sequence); random_max_tokens 0
    is max_tokens."""
    random_max_tokens = random_max_tokens or max_tokens
    lo, hi = min_tokens + k - 1, max_tokens + k - 1
    if not (1 <= min_tokens <= random_max_tokens <= max_tokens) or not (0.0 <= full_length_prob <= 1.0):
        raise CmgemsError(
            f"need 1 <= min_tokens <= random_max_tokens <= max_tokens and 0 <= full_length_prob <= 1, got "
            f"{min_tokens}, {random_max_tokens}, {max_tokens}, {full_length_prob}"
        )
    rng = contig_rng(seed, contig)
    data, offsets = binary_buffers(segments.column("sequence").combine_chunks())
    seg_starts = segments.column("start").to_numpy()
    pieces, lengths, starts = [], [], []
    for seg_start, a, b in zip(seg_starts.tolist(), offsets[:-1].tolist(), offsets[1:].tolist()):
        skip = int(rng.integers(0, MAX_OFFSET))
        if b - a - skip < lo:
            continue
        seg_lengths = chunk_lengths(rng, b - a - skip, lo, hi, full_length_prob, random_max_tokens + k - 1)
        used = int(seg_lengths.sum())
        pieces.append(data[a + skip : a + skip + used])
        lengths.append(seg_lengths)
        starts.append(seg_start + skip + np.concatenate(([0], np.cumsum(seg_lengths)[:-1])))
    lengths = np.concatenate(lengths) if lengths else np.empty(0, np.int64)
    chunk_offsets = np.concatenate(([0], np.cumsum(lengths))).astype(np.int64)
    chunk_data = np.concatenate(pieces) if pieces else np.empty(0, np.uint8)
    starts = np.concatenate(starts).astype(np.int64) if starts else np.empty(0, np.int64)
    return pa.table(
        {
            "contig": pa.array([contig] * len(lengths), pa.string()),
            "start": starts,
            "end": starts + lengths,
            "sequence": binary_array(chunk_data, chunk_offsets),
            "hash": sequence_hashes(chunk_data, chunk_offsets),
        },
        schema=CHUNK_SCHEMA,
    )


def chunk_contig(
    contig_parquet: str | os.PathLike,
    out: str | os.PathLike,
    k: int = 6,
    max_tokens: int = 510,
    min_tokens: int = 5,
    full_length_prob: float = 0.5,
    seed: int = 12345,
    random_max_tokens: int = 0,
) -> int:
    """Chunk one `contigs/{contig}.parquet` into `out` (CHUNK_SCHEMA, atomically); return the chunk count.

    Coordinates are on the original contig, or on the spliced sequence for a splice_n contig.
    """
    segments = read_parquet(contig_parquet, ["contig", "start", "sequence"])
    meta = table_meta(segments)
    contig = contig_name(segments, contig_parquet)
    chunks = chunk_table(segments, contig, k, max_tokens, min_tokens, full_length_prob, seed, random_max_tokens)
    params = {
        "contig": contig,
        "k": k,
        "max_tokens": max_tokens,
        "min_tokens": min_tokens,
        "random_max_tokens": random_max_tokens or max_tokens,
        "full_length_prob": full_length_prob,
        "seed": seed,
        "splice_n": meta.get("splice_n", "false"),
    }
    with atomic_output(out) as tmp:
        write_sequence_table(chunks, tmp, params, ROW_GROUP_ROWS)
    log.info("%s: %d chunks, %d bp", contig, chunks.num_rows, split_stats(chunks, k)["bases"])
    return chunks.num_rows


# ---------------------------------------------------------------------------------------- finalize


def first_unseen(hashes: np.ndarray, seen: np.ndarray) -> np.ndarray:
    """Bool mask: the first occurrence of each hash in `hashes` that is not in sorted `seen`."""
    keep = np.zeros(len(hashes), dtype=bool)
    keep[np.unique(hashes, return_index=True)[1]] = True
    if seen.size:
        idx = np.minimum(np.searchsorted(seen, hashes), seen.size - 1)
        keep &= seen[idx] != hashes
    return keep


def split_stats(table: pa.Table, k: int) -> dict[str, int]:
    lengths = table.column("end").to_numpy() - table.column("start").to_numpy()
    return {
        "sequences": table.num_rows,
        "bases": int(lengths.sum()),
        "tokens": int(np.maximum(lengths - k + 1, 0).sum()),
    }


def finalize(
    chunk_files: list[str | os.PathLike],
    out_dir: str | os.PathLike,
    validation_fraction: float = 0.1,
    k: int = 6,
    contigs_summary: str | os.PathLike | None = None,
) -> dict:
    """Deduplicate and split chunk files into out_dir/{train,validation}/{contig}.parquet, the
    memory-mappable training index out_dir/train.arrow (`write_training_index`) and manifest.json.

    Files are taken in the order given (that order decides which duplicate is kept); only one file
    and the sorted hashes kept so far (8 bytes per chunk) are in memory. Returns the manifest.
    """
    if not chunk_files:
        raise CmgemsError("no chunk files given")
    if not 0.0 <= validation_fraction <= 1.0:
        raise CmgemsError(f"validation fraction must be in [0, 1], got {validation_fraction}")
    threshold = np.uint64(round(validation_fraction * 2**32))
    seen = np.empty(0, dtype=np.uint64)
    contigs: dict[str, dict] = {}
    totals = {s: {"sequences": 0, "bases": 0, "tokens": 0} for s in SPLITS}
    chunking: dict[str, object] = {}
    duplicates = 0
    with atomic_output(out_dir, directory=True) as tmp:
        for split in SPLITS:
            (tmp / split).mkdir()
        for path in chunk_files:
            table = read_parquet(path)
            contig = contig_name(table, path)
            meta = table_meta(table)
            if contig in contigs:
                raise CmgemsError(f"contig {contig} appears twice among the chunk files ({path})")
            if "k" in meta and int(meta["k"]) != k:
                raise CmgemsError(f"{path} was chunked for k={meta['k']}, finalize was given k={k}")
            params = {key: parse_value(v) for key, v in meta.items() if key != "contig"}
            if chunking and params != chunking:
                raise CmgemsError(f"{path} was chunked with {params}, unlike the files before it: {chunking}")
            chunking = params
            hashes = table.column("hash").to_numpy()
            keep = first_unseen(hashes, seen)
            seen = np.sort(np.concatenate([seen, hashes[keep]]), kind="stable")
            to_validation = (hashes & np.uint64(0xFFFFFFFF)) < threshold
            entry = {"duplicates": int(len(keep) - keep.sum())}
            duplicates += entry["duplicates"]
            for split, mask in zip(SPLITS, (keep & ~to_validation, keep & to_validation)):
                part = table.select(SEQUENCE_SCHEMA.names).take(np.flatnonzero(mask))
                write_sequence_table(part, tmp / split / f"{contig}.parquet", {"contig": contig, "k": k}, ROW_GROUP_ROWS)
                entry[split] = split_stats(part, k)
                for key, value in entry[split].items():
                    totals[split][key] += value
            contigs[contig] = entry
            del table
        digest = write_training_index(tmp)
        manifest = {
            "k": k,
            "parameters": {
                "validation_fraction": validation_fraction,
                "k": k,
                "split": "validation iff blake2b64(sequence) mod 2**32 < validation_fraction * 2**32",
                "chunking": chunking,
            },
            "input": input_provenance(contigs_summary),
            "splits": totals,
            "duplicates_removed": duplicates,
            "training_index": {"file": TRAINING_INDEX, "digest": digest},
            "contigs": contigs,
        }
        write_json(tmp / "manifest.json", manifest)
    return manifest


def input_provenance(contigs_summary: str | os.PathLike | None) -> dict | None:
    """The genome FASTA's path, sha256 and size from a `genome contigs` summary.json."""
    if contigs_summary is None:
        return None
    try:
        summary = json.loads(Path(contigs_summary).read_text())
        return {"path": summary["input"], "sha256": summary["sha256"], "size": summary.get("size")}
    except (OSError, ValueError, KeyError) as err:
        raise CmgemsError(f"cannot read the contigs summary {contigs_summary}: {err}") from err


# ---------------------------------------------------------------------------------------- reading


def shard_paths(corpus_dir: str | os.PathLike, split: str) -> list[Path]:
    """The Parquet shards of a corpus split, in name (contig) order."""
    paths = sorted(Path(corpus_dir, split).glob("*.parquet"))
    if not paths:
        raise CmgemsError(f"no Parquet shards in {Path(corpus_dir, split)}")
    return paths


def write_training_index(corpus_dir: str | os.PathLike) -> str:
    """Write `corpus_dir/train.arrow`: every training sequence (train/*.parquet in name order, one
    record batch per row group) in one uncompressed Arrow IPC file, which pretraining memory-maps
    for random access. Its schema metadata `digest` identifies the corpus in checkpoints: sha256 of
    (sha256 of the sequence lengths as int64 little-endian + sha256 of the sequences concatenated),
    hex. Returns the digest."""

    def columns() -> Iterator[pa.Array]:
        for shard in shard_paths(corpus_dir, "train"):
            for batch in pq.ParquetFile(shard).iter_batches(columns=["sequence"], batch_size=ROW_GROUP_ROWS):
                yield batch.column(0).cast(pa.large_binary())

    lengths, sequences = hashlib.sha256(), hashlib.sha256()  # a first pass: the digest goes into the schema
    for column in columns():
        data, offsets = binary_buffers(column)
        lengths.update(np.diff(offsets).astype("<i8").tobytes())
        sequences.update(data)
    digest = hashlib.sha256(lengths.digest() + sequences.digest()).hexdigest()
    schema = pa.schema([("sequence", pa.large_binary())], metadata={"digest": digest})
    with atomic_output(Path(corpus_dir, TRAINING_INDEX)) as tmp:
        with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
            for column in columns():
                writer.write_batch(pa.record_batch([column], schema=schema))
    return digest


class TrainingSequences:
    """The training split, memory-mapped from `train.arrow` (`write_training_index`): `len()`
    sequences, `get(rows)` returns views (uint8 arrays) without copying. Picklable: a DataLoader
    worker reopens the map."""

    def __init__(self, corpus_dir: str | os.PathLike):
        self.path = Path(corpus_dir, TRAINING_INDEX)
        if not self.path.exists():
            raise CmgemsError(f"{self.path} not found: the corpus predates the training index; rerun `cmgems corpus finalize`")
        self._open()

    def _open(self) -> None:
        try:
            reader = pa.ipc.open_file(pa.memory_map(str(self.path)))
            batches = [binary_buffers(reader.get_batch(i).column(0)) for i in range(reader.num_record_batches)]
            self.digest = (reader.schema.metadata or {}).get(b"digest", b"").decode()
        except (OSError, pa.ArrowException) as err:
            raise CmgemsError(f"cannot read the training index {self.path}: {err}") from err
        self._batches, self._lengths = batches, None
        self._first_row = np.cumsum([0] + [len(offsets) - 1 for _, offsets in batches])
        if len(self) == 0:
            raise CmgemsError(f"training corpus is empty: {self.path}")

    def __len__(self) -> int:
        return int(self._first_row[-1])

    def lengths(self, rows: np.ndarray) -> np.ndarray:
        """int32 lengths (bp) of the sequences at `rows` (all lengths are read once: 4 bytes a sequence)."""
        if self._lengths is None:
            self._lengths = np.concatenate([np.diff(offsets).astype(np.int32) for _, offsets in self._batches])
        return self._lengths[rows]

    def get(self, rows: np.ndarray) -> list[np.ndarray]:
        """The sequences at `rows` (ints in [0, len)), as uint8 views, in the order given."""
        which = np.searchsorted(self._first_row, rows, side="right") - 1
        out = []
        for b, r in zip(which.tolist(), (rows - self._first_row[which]).tolist()):
            data, offsets = self._batches[b]
            out.append(data[offsets[r] : offsets[r + 1]])
        return out

    def __getstate__(self) -> dict:
        return {"path": self.path}

    def __setstate__(self, state: dict) -> None:
        self.path = state["path"]
        self._open()


def training_rows(sequence_index: np.ndarray, n: int, seed: int, cache: dict | None = None) -> np.ndarray:
    """Rows of the training split holding global sequence positions `sequence_index` (int64): each
    epoch of `n` positions is a seeded permutation of all rows (the whole genome, shuffled anew per
    epoch). `cache` (epoch -> permutation) saves recomputing permutations."""
    cache = {} if cache is None else cache
    epochs, within = np.divmod(np.asarray(sequence_index, dtype=np.int64), n)
    rows = np.empty_like(within)
    for epoch in np.unique(epochs).tolist():
        if epoch not in cache:
            if len(cache) >= 2:
                cache.pop(min(cache))
            cache[epoch] = np.random.default_rng([seed, epoch]).permutation(n)
        here = epochs == epoch
        rows[here] = cache[epoch][within[here]]
    return rows


@contextlib.contextmanager
def validation_shard(path: Path) -> Iterator[None]:
    """Name the validation shard `path` in a read error (a damaged corpus file, not the user's input)."""
    try:
        yield
    except (OSError, pa.ArrowException) as err:
        raise CmgemsError(f"{path}: cannot read this validation shard ({err}); the corpus is damaged: delete "
                          f"{path.parent.parent} and rerun the workflow to rebuild it") from err


def validation_sample(corpus_dir: str | os.PathLike, n: int, seed: int) -> list[bytes]:
    """`n` sequences drawn without replacement (seeded) from the whole validation split, in split
    order; all of them when the split is smaller. Reads only the row groups that hold them."""
    groups = []  # (path, row group, rows)
    for path in shard_paths(corpus_dir, "validation"):
        with validation_shard(path):
            meta = pq.ParquetFile(path).metadata
        groups += [(path, g, meta.row_group(g).num_rows) for g in range(meta.num_row_groups)]
    first = np.cumsum([0] + [rows for _, _, rows in groups])
    total = int(first[-1])
    chosen = np.sort(np.random.default_rng([seed, 1]).choice(total, size=min(n, total), replace=False))
    out: list[bytes] = []
    for g, (path, index, _) in enumerate(groups):
        wanted = chosen[(chosen >= first[g]) & (chosen < first[g + 1])] - first[g]
        if len(wanted):
            with validation_shard(path):
                column = pq.ParquetFile(path).read_row_group(index, columns=["sequence"]).column(0)
            out += column.take(pa.array(wanted)).to_pylist()
    return out


# ---------------------------------------------------------------------------------------- CLI


def configure_parser(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    ch = sub.add_parser("chunk", help="cut one cleaned contig into pretraining chunks")
    ch.add_argument("--contig-parquet", required=True, help="contigs/{contig}.parquet")
    ch.add_argument("--out", required=True, help="chunk Parquet file")
    ch.add_argument("--k", type=int, default=6)
    ch.add_argument("--max-tokens", type=int, default=510, help="k-mers in a full-length chunk")
    ch.add_argument("--min-tokens", type=int, default=5, help="k-mers in the shortest chunk")
    ch.add_argument("--random-max-tokens", type=int, default=0,
                    help="k-mers in the longest chunk of random length (0: --max-tokens)")
    ch.add_argument("--full-length-prob", type=float, default=0.5)
    ch.add_argument("--seed", type=int, default=12345)
    ch.set_defaults(
        func=lambda a: chunk_contig(
            a.contig_parquet, a.out, a.k, a.max_tokens, a.min_tokens, a.full_length_prob, a.seed, a.random_max_tokens
        )
    )
    fin = sub.add_parser("finalize", help="deduplicate chunks and split them into train / validation")
    fin.add_argument("--chunks", nargs="+", required=True, help="chunk files, in contig order")
    fin.add_argument("--out-dir", required=True)
    fin.add_argument("--validation-fraction", type=float, default=0.1)
    fin.add_argument("--k", type=int, default=6)
    fin.add_argument("--contigs-summary", default=None, help="genome contigs summary.json (input sha256)")
    fin.set_defaults(
        func=lambda a: finalize(a.chunks, a.out_dir, a.validation_fraction, a.k, a.contigs_summary)
    )
