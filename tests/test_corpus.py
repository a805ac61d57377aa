"""cmgems.corpus: chunking, deduplication and split, manifest, streaming reader."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cmgems import cli, corpus, genome, kmers
from cmgems.errors import CmgemsError

K, MAX_TOKENS, MIN_TOKENS = 6, 510, 5
LO, HI = MIN_TOKENS + K - 1, MAX_TOKENS + K - 1


def random_dna(rng: np.random.Generator, n: int) -> str:
    return np.frombuffer(b"ACGT", np.uint8)[rng.integers(0, 4, n)].tobytes().decode()


def write_fasta(path: Path, records: dict[str, str]) -> Path:
    path.write_text("".join(f">{name}\n{seq}\n" for name, seq in records.items()))
    return path


@pytest.fixture(scope="module")
def contigs(tmp_path_factory) -> Path:
    """contigs/: chr1 (3 segments, one soft-masked), chr2, chr3, and chr4 / chrX whose poly-A runs
    give duplicate chunks within and across contigs."""
    rng = np.random.default_rng(7)
    a, b, c = random_dna(rng, 150_000), random_dna(rng, 800), random_dna(rng, 60_000)
    records = {
        "chr1": a + "N" * 500 + b.lower() + "NNN" + c,
        "chr2": random_dna(rng, 20_000) + a[:50_000] + random_dna(rng, 30_000),
        "chr3": "N" * 100 + random_dna(rng, 40_000),
        "chr4": "A" * 30_000 + random_dna(rng, 5_000),
        "chrX": "A" * 30_000,
    }
    work = tmp_path_factory.mktemp("corpus")
    genome.write_contigs(write_fasta(work / "g.fa", records), None, work / "contigs")
    return work / "contigs"


def chunk(contigs: Path, name: str, out_dir: Path, **kw) -> Path:
    out = out_dir / f"{name}.parquet"
    corpus.chunk_contig(contigs / f"{name}.parquet", out, **kw)
    return out


def columns(path: Path) -> dict[str, list]:
    return pq.read_table(path).to_pydict()


# ---------------------------------------------------------------------------------------- chunking


@settings(max_examples=200, deadline=None)
@given(
    available=st.integers(0, 20_000),
    lo=st.integers(1, 50),
    extra=st.integers(0, 600),
    p_full=st.floats(0, 1),
    seed=st.integers(0, 2**32),
    short=st.integers(0, 10),
)
def test_chunk_lengths_fill_the_segment(available, lo, extra, p_full, seed, short):
    random_hi = max(lo, lo + extra - short)
    lengths = corpus.chunk_lengths(np.random.default_rng(seed), available, lo, lo + extra, p_full, random_hi)
    assert lengths.dtype == np.int64
    assert np.all((lengths >= lo) & (lengths <= lo + extra))
    drawn = lengths[:-1]  # all but a final remainder: full length or at most random_hi
    assert np.all((drawn <= random_hi) | (drawn == lo + extra))
    assert 0 <= available - lengths.sum() < lo or available - lengths.sum() == 0


def test_chunks_are_contiguous_bounded_and_match_the_contig(contigs, tmp_path):
    segments = columns(contigs / "chr1.parquet")
    chunks = columns(chunk(contigs, "chr1", tmp_path))
    starts, ends = np.array(chunks["start"]), np.array(chunks["end"])
    lengths = ends - starts
    assert np.all((lengths >= LO) & (lengths <= HI))
    assert 0.4 < np.mean(lengths == HI) < 0.6
    assert set(chunks["contig"]) == {"chr1"}
    for seg_start, seg_end, seg_seq in zip(segments["start"], segments["end"], segments["sequence"]):
        inside = (starts >= seg_start) & (ends <= seg_end)
        s, e = starts[inside], ends[inside]
        if seg_end - seg_start >= 1000 + HI:
            assert 0 <= s[0] - seg_start < 1000
            assert np.array_equal(s[1:], e[:-1])  # consecutive, non-overlapping
            assert seg_end - e[-1] < LO
        for i in np.flatnonzero(inside):
            assert chunks["sequence"][i] == seg_seq[starts[i] - seg_start : ends[i] - seg_start]
            assert chunks["hash"][i] == corpus.stable_hash(chunks["sequence"][i])
    assert np.all(lengths == [len(s) for s in chunks["sequence"]])
    # every chunk lies in one segment
    assert sum(
        ((starts >= s) & (ends <= e)).sum() for s, e in zip(segments["start"], segments["end"])
    ) == len(starts)


def test_genemask_chunk_lengths(contigs, tmp_path):
    """GeneMask's notebook: L = 510 with probability 0.5, else randint(5, 510), and L + 1 bp cut: 511 bp
    (506 6-mers) or 6..510 bp, never 511 from the random draw."""
    chunks = columns(chunk(contigs, "chr1", tmp_path, max_tokens=506, min_tokens=1, random_max_tokens=505))
    lengths = np.array(chunks["end"]) - np.array(chunks["start"])
    random_lengths = lengths[lengths != 511]
    assert 0.4 < np.mean(lengths == 511) < 0.6
    assert random_lengths.min() >= 6 and random_lengths.max() <= 510 and random_lengths.max() > 480
    assert pq.read_metadata(tmp_path / "chr1.parquet").schema.to_arrow_schema().metadata[b"random_max_tokens"] == b"505"
    with pytest.raises(CmgemsError, match="random_max_tokens"):
        chunk(contigs, "chr1", tmp_path / "bad", max_tokens=506, random_max_tokens=507)


def test_chunking_is_seeded(contigs, tmp_path):
    first = columns(chunk(contigs, "chr1", tmp_path / "a"))
    again = columns(chunk(contigs, "chr1", tmp_path / "b"))
    other = columns(chunk(contigs, "chr1", tmp_path / "c", seed=1))
    assert first == again
    assert first["start"] != other["start"]
    assert corpus.contig_rng(1, "chr1").random() != corpus.contig_rng(1, "chr2").random()


def test_stable_hash_is_blake2b():
    assert corpus.stable_hash(b"ACGT") == int.from_bytes(
        hashlib.blake2b(b"ACGT", digest_size=8).digest(), "little"
    )
    assert corpus.stable_hash(b"ACGT") == 0x477238E71C39FF6A  # pinned: shards depend on it
    data = np.frombuffer(b"ACGTTTGCA", np.uint8)
    hashes = corpus.sequence_hashes(data, np.array([0, 4, 4, 9]))
    assert hashes.tolist() == [
        corpus.stable_hash(b"ACGT"),
        corpus.stable_hash(b""),
        corpus.stable_hash(b"TTGCA"),
    ]


def test_splice_n_coordinates_are_on_the_spliced_sequence(tmp_path):
    rng = np.random.default_rng(3)
    seq = random_dna(rng, 5000) + "N" * 300 + random_dna(rng, 5000)
    genome.write_contigs(write_fasta(tmp_path / "s.fa", {"chr5": seq}), None, tmp_path / "c", splice_n=True)
    chunks = columns(chunk(tmp_path / "c", "chr5", tmp_path))
    spliced = seq.replace("N", "").encode()
    assert max(chunks["end"]) <= len(spliced)
    for s, e, q in zip(chunks["start"], chunks["end"], chunks["sequence"]):
        assert spliced[s:e] == q


def test_tiny_contig_gives_no_chunks_and_bad_parameters_fail(tmp_path):
    genome.write_contigs(write_fasta(tmp_path / "t.fa", {"chrY": "ACGT" * 3}), None, tmp_path / "c")
    assert corpus.chunk_contig(tmp_path / "c" / "chrY.parquet", tmp_path / "y.parquet") == 0
    assert pq.read_metadata(tmp_path / "y.parquet").schema.to_arrow_schema().metadata[b"contig"] == b"chrY"
    with pytest.raises(CmgemsError, match="min_tokens"):
        corpus.chunk_contig(tmp_path / "c" / "chrY.parquet", tmp_path / "z.parquet", min_tokens=600)
    assert not (tmp_path / "z.parquet").exists()


# ---------------------------------------------------------------------------------------- finalize


@pytest.fixture(scope="module")
def chunk_files(contigs, tmp_path_factory) -> list[Path]:
    out = tmp_path_factory.mktemp("chunks")
    return [chunk(contigs, name, out) for name in ("chr1", "chr2", "chr3", "chr4", "chrX")]


def shard_rows(out_dir: Path, split: str, contig: str) -> dict[str, list]:
    return columns(out_dir / split / f"{contig}.parquet")


def test_finalize_dedups_splits_and_counts(contigs, chunk_files, tmp_path):
    out = tmp_path / "corpus"
    assert cli.main(["corpus", "finalize", "--chunks", *map(str, chunk_files), "--out-dir", str(out),
                     "--contigs-summary", str(contigs / "summary.json")]) == 0  # fmt: skip
    manifest = json.loads((out / "manifest.json").read_text())
    summary = json.loads((contigs / "summary.json").read_text())
    assert manifest["input"]["sha256"] == summary["sha256"]
    assert manifest["k"] == 6 and manifest["parameters"]["validation_fraction"] == 0.1
    assert manifest["parameters"]["chunking"] == {
        "k": 6,
        "max_tokens": 510,
        "min_tokens": 5,
        "random_max_tokens": 510,
        "full_length_prob": 0.5,
        "seed": 12345,
        "splice_n": False,
    }

    # expected: the first occurrence in file order, then position, is kept
    expected, first_seen = {}, set()
    for f in chunk_files:
        rows = columns(f)
        expected[rows["contig"][0]] = [
            (s, q)
            for s, q in zip(rows["start"], rows["sequence"])
            if not (q in first_seen or first_seen.add(q))
        ]
    n_dups = {c: len(columns(f)["sequence"]) - len(expected[c]) for c, f in zip(expected, chunk_files)}
    assert n_dups["chr4"] > 0 and n_dups["chrX"] > 0 and n_dups["chr1"] == 0
    assert {c: manifest["contigs"][c]["duplicates"] for c in expected} == n_dups
    assert manifest["duplicates_removed"] == sum(n_dups.values())

    all_rows, seen = [], set()
    for split in corpus.SPLITS:
        totals = {"sequences": 0, "bases": 0, "tokens": 0}
        for contig in expected:
            rows = shard_rows(out, split, contig)
            assert list(rows) == ["contig", "start", "end", "sequence"]
            lengths = np.array([len(q) for q in rows["sequence"]])
            counts = {
                "sequences": len(lengths),
                "bases": int(lengths.sum()),
                "tokens": int((lengths - K + 1).sum()),
            }
            assert manifest["contigs"][contig][split] == counts
            for key in totals:
                totals[key] += counts[key]
            for q in rows["sequence"]:
                in_validation = (corpus.stable_hash(q) & 0xFFFFFFFF) < 0.1 * 2**32
                assert in_validation == (split == "validation")
                assert q not in seen
                seen.add(q)
            all_rows += zip(rows["contig"], rows["start"], rows["sequence"])
        assert manifest["splits"][split] == totals
    assert sorted(all_rows) == sorted((c, s, q) for c, kept in expected.items() for s, q in kept)
    n_val = manifest["splits"]["validation"]["sequences"]
    assert 0.05 < n_val / len(all_rows) < 0.15


def test_split_of_a_contig_does_not_depend_on_the_others(chunk_files, tmp_path):
    corpus.finalize(chunk_files, tmp_path / "all")
    corpus.finalize(chunk_files[2:], tmp_path / "one")
    for split in corpus.SPLITS:
        assert shard_rows(tmp_path / "all", split, "chr3") == shard_rows(tmp_path / "one", split, "chr3")


def test_finalize_errors_leave_nothing(contigs, chunk_files, tmp_path):
    other_seed = chunk(contigs, "chr3", tmp_path / "seed1", seed=1)
    with pytest.raises(CmgemsError, match="unlike the files before it"):
        corpus.finalize([chunk_files[0], other_seed], tmp_path / "out")
    other_seed.unlink()
    other_seed.parent.rmdir()
    with pytest.raises(CmgemsError, match="chr1 appears twice"):
        corpus.finalize([chunk_files[0], chunk_files[0]], tmp_path / "out")
    with pytest.raises(CmgemsError, match="k=6"):
        corpus.finalize(chunk_files, tmp_path / "out", k=5)
    with pytest.raises(CmgemsError, match="cannot read Parquet"):
        corpus.finalize([tmp_path / "nope.parquet"], tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------- reading


def test_training_index_holds_the_train_split_and_its_digest(chunk_files, tmp_path):
    manifest = corpus.finalize(chunk_files, tmp_path / "c")
    train = [q for p in corpus.shard_paths(tmp_path / "c", "train") for q in columns(p)["sequence"]]
    sequences = corpus.TrainingSequences(tmp_path / "c")
    assert len(sequences) == len(train) == manifest["splits"]["train"]["sequences"]
    rows = np.array([0, len(train) - 1, 5, 5, len(train) // 2])
    assert [bytes(v) for v in sequences.get(rows)] == [train[i] for i in rows]
    lengths = hashlib.sha256(b"".join(len(q).to_bytes(8, "little") for q in train)).digest()
    expected = hashlib.sha256(lengths + hashlib.sha256(b"".join(train)).digest()).hexdigest()
    assert sequences.digest == manifest["training_index"]["digest"] == expected
    import pickle

    assert [bytes(v) for v in pickle.loads(pickle.dumps(sequences)).get(rows)] == [train[i] for i in rows]


def test_training_order_is_a_seeded_permutation_per_epoch(tmp_path):
    n = 1000
    first_two = corpus.training_rows(np.arange(2 * n), n, seed=3)
    assert sorted(first_two[:n]) == list(range(n)) == sorted(first_two[n:])
    assert not np.array_equal(first_two[:n], first_two[n:])  # reshuffled per epoch
    assert np.array_equal(corpus.training_rows(np.arange(1370, 1420), n, seed=3), first_two[1370:1420])  # resumable
    assert not np.array_equal(corpus.training_rows(np.arange(50), n, seed=4), first_two[:50])


def test_first_steps_draw_from_every_contig_in_proportion_to_its_size(tmp_path):
    """The whole genome is shuffled: the first 3,000 sequences come from every contig about in
    proportion to its share of the corpus (today's buffered stream took ~32 regions of a genome)."""
    from test_pretrain import write_corpus

    sizes = {"chr1": 6000, "chr2": 3000, "chr3": 900, "chrM": 100}
    root = write_corpus(tmp_path / "corpus", length=20, contigs=sizes)
    sequences = corpus.TrainingSequences(root)
    contig_of_row = np.repeat(list(sizes), list(sizes.values()))  # index rows are in shard (name) order
    drawn = contig_of_row[corpus.training_rows(np.arange(3000), len(sequences), seed=12345)]
    for contig, size in sizes.items():
        expected = 3000 * size / sum(sizes.values())
        assert abs((drawn == contig).sum() - expected) < 4 * np.sqrt(expected), contig


def test_validation_sample_is_seeded_and_spans_the_split(tmp_path):
    from test_pretrain import write_corpus

    root = write_corpus(tmp_path / "corpus", n_val=640, length=20)
    validation = columns(root / "validation" / "chrA.parquet")["sequence"]
    sample = corpus.validation_sample(root, 64, seed=1)
    assert len(sample) == len(set(sample)) == 64 and set(sample) <= set(validation)
    positions = sorted(validation.index(q) for q in sample)
    assert positions[0] < 100 and positions[-1] > 540  # not the first 64 rows: the whole split
    assert corpus.validation_sample(root, 64, seed=1) == sample != corpus.validation_sample(root, 64, seed=2)
    assert len(corpus.validation_sample(root, 10_000, seed=1)) == 640


# ---------------------------------------------------------------------------------------- real data


@pytest.mark.realdata
def test_real_hg38_slice_end_to_end(shared_data, tmp_path):
    fasta = shared_data / "genome" / "hg38_chr2_1-2333275.fa.gz"
    assert cli.main(["genome", "contigs", "--fasta", str(fasta), "--out-dir", str(tmp_path / "contigs")]) == 0
    assert cli.main(["corpus", "chunk", "--contig-parquet", str(tmp_path / "contigs" / "chr2.parquet"),
                     "--out", str(tmp_path / "chunks" / "chr2.parquet")]) == 0  # fmt: skip
    manifest = corpus.finalize([tmp_path / "chunks" / "chr2.parquet"], tmp_path / "corpus",
                               contigs_summary=tmp_path / "contigs" / "summary.json")  # fmt: skip
    assert pq.read_table(tmp_path / "contigs" / "chr2.parquet").column("start")[0].as_py() == 10_000
    train = columns(tmp_path / "corpus" / "train" / "chr2.parquet")
    assert min(train["start"]) >= 10_000
    assert set(b"".join(train["sequence"])) == set(b"ACGT")
    assert manifest["splits"]["train"]["bases"] == sum(map(len, train["sequence"]))
    tokenizer = kmers.build_tokenizer(K)
    for seq in train["sequence"][:3]:
        ids = kmers.kmer_ids(seq, K)
        assert len(ids) == len(seq) - K + 1
        assert tokenizer(seq.decode())["input_ids"] == [kmers.CLS_ID, *ids.tolist(), kmers.SEP_ID]
