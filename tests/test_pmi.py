"""n-gram counting and PMI scoring (cmgems.pmi) against brute force, kmc and hand-made tables."""

from __future__ import annotations

import gzip
import itertools
import math
import shutil
import subprocess
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cmgems import cli, kmers, pmi
from cmgems.errors import CmgemsError

REAL_SLICE = "genome/GRCh37_chr20_35000001-37000000.fa.gz"


# --------------------------------------------------------------------------- brute force


def count_sequences(seqs: list[bytes], max_n: int = 10, threads: int | None = None) -> pmi.Counts:
    """pmi.count_buffer over a list of segments (bytes over ACGT)."""
    lengths = np.array([len(s) for s in seqs], dtype=np.int64)
    ends = np.cumsum(lengths)
    return pmi.count_buffer(np.frombuffer(b"".join(seqs), dtype=np.uint8), ends - lengths, ends, max_n, threads)


def brute_counts(seqs: list[bytes], max_n: int) -> dict[int, Counter]:
    """n -> Counter of n-gram strings over every window of every segment (never across segments)."""
    return {
        n: Counter(s[i : i + n].decode() for s in seqs for i in range(len(s) - n + 1))
        for n in range(1, max_n + 1)
    }


def as_counters(counts: pmi.Counts) -> dict[int, Counter]:
    out = {}
    for n, dense in counts.items():
        codes = np.flatnonzero(dense)
        out[n] = Counter(dict(zip(pmi.ngram_strings(codes, n).to_pylist(), dense[codes].tolist())))
    return out


def brute_pmi(word: str, counts: dict[int, Counter], definition: str) -> tuple[float, float]:
    """(naive_pmi, pmi) of `word` by enumerating every segmentation (all cut-point subsets)."""
    totals = {n: sum(c.values()) for n, c in counts.items()}
    z = 2 * totals[1]

    def logp(part: str) -> float:
        c = counts.get(len(part), Counter())[part]
        total = z if definition == "genemask" else totals.get(len(part), 0)
        return math.log(c) - math.log(total) if c > 0 else -math.inf

    n = len(word)
    best = -math.inf
    for r in range(1, n):
        for cuts in itertools.combinations(range(1, n), r):
            bounds = (0, *cuts, n)
            parts = [word[a:b] for a, b in zip(bounds, bounds[1:])]
            if definition == "genemask" and any(len(p) > 2 for p in parts):
                continue
            best = max(best, sum(logp(p) for p in parts))
    return logp(word) - sum(logp(b) for b in word), logp(word) - best


def read_fasta_slice(path, nbases: int) -> bytes:
    with gzip.open(path, "rb") as fh:
        seq = b"".join(line.strip() for line in fh if not line.startswith(b">"))
    return seq[:nbases].upper()


@pytest.fixture(scope="module")
def real_segments(shared_data) -> list[bytes]:
    """~300 kb of GRCh37 chr20 cut into segments of uneven lengths (some shorter than 10)."""
    seq = read_fasta_slice(shared_data / REAL_SLICE, 300_000)
    assert set(seq) <= set(b"ACGT")
    cuts = [0, 3, 9, 10, 20_000, 20_007, 150_000, 299_990, len(seq)]
    return [seq[a:b] for a, b in zip(cuts, cuts[1:])]


segments_strategy = st.lists(
    st.binary(max_size=40).map(lambda b: bytes(b"ACGT"[x % 4] for x in b)), max_size=8
)


# --------------------------------------------------------------------------- encodings


def test_count_code_is_lexicographic_and_maps_to_vocabulary():
    k = 3
    codes = np.arange(4**k)
    strings = pmi.ngram_strings(codes, k).to_pylist()
    assert strings == sorted(strings) == ["".join(p) for p in itertools.product("ACGT", repeat=k)]
    assert (pmi.ngram_codes(strings, k) == codes).all()
    ids = pmi.count_code_to_token_id(codes, k)
    assert ids.tolist() == [kmers.kmer_id(s) for s in strings]
    vocab = kmers.vocabulary(k)
    assert [vocab[i] for i in ids] == strings


def test_ngram_codes_rejects_bad_strings():
    with pytest.raises(CmgemsError, match="outside"):
        pmi.ngram_codes(["ACN"], 3)
    with pytest.raises(CmgemsError, match="length"):
        pmi.ngram_codes(["AC", "ACG"], 3)


# --------------------------------------------------------------------------- counting


@settings(max_examples=150, deadline=None)
@given(seqs=segments_strategy, max_n=st.integers(1, 7), threads=st.integers(1, 3))
def test_counts_match_brute_force(seqs, max_n, threads):
    counts = count_sequences(seqs, max_n, threads)
    assert sorted(counts) == list(range(1, max_n + 1))
    assert all(c.dtype == np.int64 and c.shape == (4**n,) for n, c in counts.items())
    assert as_counters(counts) == {n: Counter(dict(c)) for n, c in brute_counts(seqs, max_n).items()}


def test_many_small_blocks(monkeypatch):
    seqs = [b"ACGTTGCAAC" * 5, b"GGA", b"TTTTTTTTTTTTTTTTTTTTTTT"]
    monkeypatch.setattr(pmi, "BLOCK_WINDOWS", 7)  # forces ceil(windows / 7) uint32 tables
    assert as_counters(count_sequences(seqs, 5, threads=2)) == brute_counts(seqs, 5)


def test_counts_match_brute_force_on_real_slice(real_segments):
    counts = count_sequences(real_segments, 10, threads=2)
    brute = brute_counts(real_segments, 10)
    got = as_counters(counts)
    for n in range(1, 11):
        assert got[n] == brute[n], n
        assert counts[n].sum() == sum(max(len(s) - n + 1, 0) for s in real_segments)


def test_invalid_base_is_an_error(tmp_path):
    with pytest.raises(CmgemsError, match="segment 1, offset 2"):
        count_sequences([b"ACGTACGTACGT", b"ACNGT"], 4)
    with pytest.raises(CmgemsError, match="segment 0, offset 11"):
        count_sequences([b"ACGTACGTACGa"], 4, threads=2)


@pytest.mark.slow
@pytest.mark.skipif(
    shutil.which("kmc") is None or shutil.which("kmc_tools") is None,
    reason="kmc / kmc_tools not installed (Debian package kmc)",
)
@pytest.mark.parametrize("k", [6, 10])
def test_counts_match_kmc(real_segments, tmp_path, k):
    fasta = tmp_path / "segments.fa"
    fasta.write_bytes(b"".join(b">s%d\n%s\n" % (i, s) for i, s in enumerate(real_segments)))
    db, dump = tmp_path / f"db{k}", tmp_path / f"dump{k}.txt"
    subprocess.run(
        [
            "kmc",
            f"-k{k}",
            "-b",
            "-ci1",
            "-cs4294967295",
            "-fm",
            "-t2",
            "-m2",
            "-hp",
            str(fasta),
            str(db),
            str(tmp_path),
        ],
        check=True,
        capture_output=True,
    )
    subprocess.run(["kmc_tools", "transform", str(db), "dump", str(dump)], check=True, capture_output=True)
    theirs = Counter({kmer: int(c) for kmer, c in (line.split() for line in dump.read_text().splitlines())})
    ours = as_counters(count_sequences(real_segments, k))[k]
    assert ours == theirs


# --------------------------------------------------------------------------- scoring


def check_scores_against_brute_force(seqs, max_n, definition, sample=None, seed=0):
    counts = count_sequences(seqs, max_n)
    table = pmi.score(counts, definition, min_count=1).to_pylist()
    brute_counts_ = as_counters(counts)
    rows = (
        table
        if sample is None
        else [table[i] for i in np.random.default_rng(seed).choice(len(table), sample, replace=False)]
    )
    assert len(table) == sum(len(brute_counts_[n]) for n in range(2, max_n + 1))
    for row in rows:
        naive, want = brute_pmi(row["ngram"], brute_counts_, definition)
        assert row["naive_pmi"] == pytest.approx(naive, rel=1e-9, abs=1e-9), row
        assert row["pmi"] == pytest.approx(want, rel=1e-9, abs=1e-9), row


@settings(max_examples=100, deadline=None)
@given(
    seqs=segments_strategy.filter(lambda s: sum(map(len, s)) > 0),
    max_n=st.integers(2, 7),
    definition=st.sampled_from(pmi.DEFINITIONS),
)
def test_pmi_matches_all_segmentations(seqs, max_n, definition):
    check_scores_against_brute_force(seqs, max_n, definition)


@pytest.mark.parametrize("definition", pmi.DEFINITIONS)
def test_pmi_matches_all_segmentations_on_real_slice(real_segments, definition):
    check_scores_against_brute_force(real_segments[:5], 8, definition, sample=1500)


def test_genemask_definition_by_hand():
    counts = count_sequences([b"AACGTTAC"], 3)  # 8 bases: Z = 16
    rows = {r["ngram"]: r for r in pmi.score(counts, "genemask", min_count=1).to_pylist()}
    lp = lambda c: math.log(c / 16)  # noqa: E731
    # ACG: best of A|C|G (3 parts), AC|G, A|CG; counts A 3, C 2, G 1, T 2, AC 2, CG 1
    want = lp(1) - max(lp(3) + lp(2) + lp(1), lp(2) + lp(1), lp(3) + lp(1))
    assert rows["ACG"]["pmi"] == pytest.approx(want)
    assert rows["AC"]["pmi"] == pytest.approx(lp(2) - lp(3) - lp(2))  # a 2-gram: only A|C


@pytest.mark.parametrize("definition", pmi.DEFINITIONS)
def test_min_count_filters_rows_but_not_parts(real_segments, definition):
    counts = count_sequences(real_segments[:5], 6)
    full = {(r["ngram"]): r for r in pmi.score(counts, definition, min_count=1).to_pylist()}
    cut = pmi.score(counts, definition, min_count=20).to_pylist()
    assert cut and all(r["count"] >= 20 for r in cut)
    assert len(cut) == sum(1 for r in full.values() if r["count"] >= 20)
    for r in cut:
        assert r["pmi"] == pytest.approx(full[r["ngram"]]["pmi"])
        assert r["discount"] == pytest.approx(math.log(r["count"]) / (math.log(r["count"]) + math.log(20)))
        ranked_by = r["pmi"] * r["discount"] if definition in pmi.DISCOUNTED else r["pmi"]
        assert r["norm_pmi"] == pytest.approx(ranked_by)
    for n in range(2, 7):  # within each n, rank 1.. follows norm_pmi downwards
        rows = sorted((r for r in cut if r["n"] == n), key=lambda r: r["rank"])
        assert [r["rank"] for r in rows] == list(range(1, len(rows) + 1))
        assert all(a["norm_pmi"] >= b["norm_pmi"] for a, b in zip(rows, rows[1:]))


def test_levine_ranks_by_pmi_npmi_and_genemask_by_discounted_pmi():
    """A frequent pair (GT, count 900) with a lower PMI than rare pairs of rare bases (AA, count 3):
    PMI_n alone ranks GT below them; GeneMask's discount lifts it above."""
    counts = {1: np.array([50, 50, 1000, 1000], dtype=np.int64), 2: np.full(16, 3, dtype=np.int64)}  # A C G T
    counts[2][pmi.ngram_codes(["AC", "GT"], 2)] = [5, 900]
    rank = {d: {r["ngram"]: r["rank"] for r in pmi.score(counts, d, min_count=2).to_pylist()} for d in pmi.DEFINITIONS}
    assert rank["levine"]["AC"] == rank["genemask"]["AC"] == 1
    assert rank["levine"]["GT"] == 5 and rank["levine"]["AA"] == 2  # AA, CA, CC (PMI 1.72) above GT (1.43)
    assert rank["genemask"]["GT"] == 2 and rank["genemask"]["AA"] == 3  # 1.43 x 0.91 beats 1.72 x 0.61
    assert rank["npmi"]["GT"] == 2 and rank["npmi"]["AA"] == 3  # the papers' normalised PMI: the discount too


def test_npmi_is_levine_pmi_times_discount():
    """npmi scores PMI_n exactly as PMI-Masking does and ranks it by PMI_n x discount."""
    rng = np.random.default_rng(3)
    counts = count_sequences([rng.choice(list(b"ACGT"), 400).astype(np.uint8).tobytes() for _ in range(5)], max_n=4)
    npmi, levine = (pmi.score(counts, d, min_count=2).to_pandas().set_index("ngram") for d in ("npmi", "levine"))
    assert np.allclose(npmi["pmi"], levine.loc[npmi.index, "pmi"])
    assert np.allclose(npmi["norm_pmi"], npmi["pmi"] * npmi["discount"])


def test_rank_order_and_ties():
    counts = {1: np.full(4, 10, dtype=np.int64), 2: np.full(16, 5, dtype=np.int64)}
    counts[2][pmi.ngram_codes(["GT"], 2)] = 9  # highest PMI; the rest tie
    table = pmi.score(counts, min_count=2).to_pylist()
    ranked = [r["ngram"] for r in sorted(table, key=lambda r: r["rank"])]
    assert ranked[0] == "GT"
    assert ranked[1:] == sorted(ranked[1:])
    assert [r["rank"] for r in table] == list(range(1, 17))


# --------------------------------------------------------------------------- files, CLI


def write_contigs(path, seqs):
    starts = np.cumsum([0] + [len(s) + 5 for s in seqs[:-1]]).tolist()
    pq.write_table(
        pa.table(
            {
                "contig": ["c"] * len(seqs),
                "start": pa.array(starts, pa.int64()),
                "end": pa.array([a + len(s) for a, s in zip(starts, seqs)], pa.int64()),
                "sequence": pa.array(seqs, pa.binary()),
            }
        ),
        path,
    )


def test_cli_round_trip(real_segments, tmp_path):
    a, b = real_segments[:4], real_segments[4:6]
    write_contigs(tmp_path / "a.parquet", a)
    write_contigs(tmp_path / "b.parquet", b)
    for name in "ab":
        assert (
            cli.main(
                [
                    "pmi",
                    "count",
                    "--contigs",
                    str(tmp_path / f"{name}.parquet"),
                    "--max-n",
                    "6",
                    "--out",
                    str(tmp_path / f"{name}.counts.parquet"),
                ]
            )
            == 0
        )
    assert (
        cli.main(
            [
                "pmi",
                "merge",
                "--counts",
                str(tmp_path / "a.counts.parquet"),
                str(tmp_path / "b.counts.parquet"),
                "--out",
                str(tmp_path / "counts.parquet"),
            ]
        )
        == 0
    )
    assert (
        cli.main(
            [
                "pmi",
                "score",
                "--counts",
                str(tmp_path / "counts.parquet"),
                "--out",
                str(tmp_path / "pmi.parquet"),
                "--definition",
                "genemask",
                "--min-count",
                "5",
            ]
        )
        == 0
    )

    merged = pq.read_table(tmp_path / "counts.parquet")
    assert merged.column_names == ["ngram", "n", "count"]
    rows = merged.to_pylist()
    assert rows == sorted(rows, key=lambda r: (r["n"], r["ngram"])) and all(r["count"] > 0 for r in rows)
    expected = count_sequences(a + b, 6)
    assert all((pmi.read_counts(tmp_path / "counts.parquet")[n] == expected[n]).all() for n in expected)
    direct = pmi.count_contig_files([tmp_path / "a.parquet", tmp_path / "b.parquet"], 6)
    assert all((direct[n] == expected[n]).all() for n in expected)

    scored = pq.read_table(tmp_path / "pmi.parquet")
    assert scored.column_names == ["ngram", "n", "count", "naive_pmi", "pmi", "discount", "norm_pmi", "rank"]
    assert scored.equals(pmi.score(expected, "genemask", min_count=5))
    assert not list(tmp_path.glob(".*.tmp"))


def test_counts_file_errors(tmp_path, capsys):
    no_unigrams = tmp_path / "no1.parquet"
    pq.write_table(
        pa.table({"ngram": ["AC"], "n": pa.array([2], pa.int8()), "count": pa.array([3], pa.int64())}),
        no_unigrams,
    )
    with pytest.raises(CmgemsError, match=f"{no_unigrams}.*n = 1"):
        pmi.score_file(no_unigrams, tmp_path / "out.parquet")
    bad_columns = tmp_path / "cols.parquet"
    pq.write_table(pa.table({"kmer": ["A"], "n": [1], "count": [3]}), bad_columns)
    with pytest.raises(CmgemsError, match=f"{bad_columns}.*ngram"):
        pmi.read_counts(bad_columns)
    assert (
        cli.main(["pmi", "score", "--counts", str(no_unigrams), "--out", str(tmp_path / "out.parquet")]) == 1
    )
    assert "no1.parquet" in capsys.readouterr().err
    assert not (tmp_path / "out.parquet").exists()


def test_token_ranks_on_hand_made_table(tmp_path):
    path = tmp_path / "pmi.parquet"
    pq.write_table(
        pa.table(
            {
                "ngram": ["ATG", "CCC", "AAA", "AT", "TTTT"],
                "n": pa.array([3, 3, 3, 2, 4], pa.int8()),
                "rank": pa.array([2, 1, 3, 1, 1], pa.int64()),
            }
        ),
        path,
    )
    ranks = pmi.token_ranks(path, 3)
    assert ranks.shape == (kmers.vocab_size(3),) and ranks.dtype == np.int64
    want = np.full(kmers.vocab_size(3), 4)
    for kmer, r in [("ATG", 2), ("CCC", 1), ("AAA", 3)]:
        want[kmers.kmer_id(kmer)] = r
    assert (ranks == want).all()
    assert (ranks[: kmers.NUM_SPECIAL] == 4).all()
