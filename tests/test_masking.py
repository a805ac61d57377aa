"""Tests for cmgems.masking: invariants (property-based), the vectorized GeneMask / Global-PMI against
straightforward loop implementations written the way the released code works, proportions,
determinism, curricula, and options."""

from __future__ import annotations

import json
import math
from collections import defaultdict

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cmgems import kmers, masking
from cmgems.errors import CmgemsError

PMI_NAMES = ("genemask", "global_pmi", "cm_gems", "cm_step")
HALF = masking.PMI_HALF_WIDTH
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ----------------------------------------------------------------------------------------------
# Inputs


def random_ranks(k: int, seed: int, n_distinct: int | None = None) -> np.ndarray:
    """(vocab_size,) ranks: a random permutation 1..4**k over the k-mers (or ranks drawn from
    1..n_distinct, to force ties); specials rank last."""
    rng = np.random.default_rng(seed)
    n = 4**k
    ranks = np.full(kmers.vocab_size(k), n + 1, dtype=np.int64)
    ranks[kmers.NUM_SPECIAL :] = (
        rng.permutation(n) + 1 if n_distinct is None else rng.integers(1, n_distinct + 1, n)
    )
    return ranks


def make_batch(k: int, n_kmers: list[int], seed: int, unk_fraction: float = 0.0) -> torch.Tensor:
    """(B, L) ids: [CLS], n k-mer ids (a few [UNK] inside when unk_fraction > 0), [SEP], [PAD]..."""
    rng = np.random.default_rng(seed)
    width = max(n_kmers) + 2
    ids = np.full((len(n_kmers), width), kmers.PAD_ID, dtype=np.int64)
    for i, n in enumerate(n_kmers):
        row = rng.integers(kmers.NUM_SPECIAL, kmers.vocab_size(k), n)
        row[rng.random(n) < unk_fraction] = kmers.UNK_ID
        ids[i, 0], ids[i, 1 : n + 1], ids[i, n + 1] = kmers.CLS_ID, row, kmers.SEP_ID
    return torch.from_numpy(ids)


def full_batch(batch: int = 64, n_kmers: int = 510, seed: int = 0) -> torch.Tensor:
    return make_batch(6, [n_kmers] * batch, seed)


def build(name: str, k: int = 6, ranks=None, **options) -> masking.Strategy:
    if ranks is None and masking.needs_ranks(name):
        ranks = random_ranks(k, 0)
    return masking.build(
        name, k=k, vocab_size=kmers.vocab_size(k), token_ranks=ranks, max_steps=100, options=options
    )


def draws(seed: int, rows: int, first: int = 0) -> masking.Draws:
    """Draws for `rows` sequences at global positions first.. (masks keyed by (seed, position))."""
    return masking.Draws(seed, torch.arange(first, first + rows))


batches = st.builds(
    lambda k, lengths, seed, unk: (k, make_batch(k, lengths, seed, unk)),
    st.sampled_from(kmers.SUPPORTED_K),
    st.lists(st.integers(0, 60), min_size=1, max_size=4),
    st.integers(0, 2**31),
    st.sampled_from([0.0, 0.0, 0.1]),
)


# ----------------------------------------------------------------------------------------------
# Loop implementations, written the way the released code works (per row and per centre, torch.where
# and .tolist() per row, Python sets, ranks looked up by k-mer string after decoding the id), with the
# issue's rules: ties go to the lower position and only maskable positions take part.


def released_rank_lookup(ranks, k: int, bugs: bool, specials_best: bool = False):
    """pmi_rank(row, p) as the released kmer_id_to_pmi_rank: decode an id to its k-mer (specials decode
    to ""), look the k-mer up in a defaultdict(int) of ranks (a missing key reads 0); GeneMask's code
    keeps that 0 (`specials_best`), the CM-GEMS code turns 0 into 4096 (4**k). With `bugs` the position
    index itself is decoded, as in the released code."""
    vocab = kmers.vocabulary(k)
    rank_of_kmer = defaultdict(int, {vocab[i]: int(r) for i, r in enumerate(ranks) if i >= kmers.NUM_SPECIAL})

    def pmi_rank(row: list[int], p: int) -> int:
        token_id = p if bugs else row[p]
        rank = rank_of_kmer[vocab[token_id] if kmers.NUM_SPECIAL <= token_id < len(vocab) else ""]
        return rank if specials_best else rank or 4**k

    return pmi_rank


def loop_genemask(ids, centres, ranks, k: int = 6, bugs: bool = False,
                  specials_best: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """GeneMask with Python loops: (mask, best positions of the kept spans), bool (B, L) each. With
    `bugs`, literally as the released mask_tokens: the centres are iterated as a Python `set` built from
    the ascending positions, each span's best starts at the centre and moves only to a strictly better
    rank visiting c-2, c-1, c+1, ..., and the first half of the spans is kept in that set order (the
    code slices before it sorts). The host's set order is CPython 3.6's for up to 18 elements."""
    ids, centres = torch.as_tensor(ids), torch.as_tensor(centres)
    pmi_rank = released_rank_lookup(ranks, k, bugs, specials_best)
    lo, hi = masking.SPAN_OFFSETS[k]
    visit = [0, *[o for o in range(lo, hi + 1) if o != 0]] if bugs else list(range(lo, hi + 1))
    mask, kept_best = torch.zeros(ids.shape, dtype=torch.bool), torch.zeros(ids.shape, dtype=torch.bool)
    for i, row in enumerate(ids):
        allowed = set(torch.where(row >= kmers.NUM_SPECIAL)[0].tolist())
        row = row.tolist()
        mask_centers = torch.where(centres[i])[0].tolist()
        if bugs:
            mask_centers = set(mask_centers)
        masked, segments = set(), []
        for c in mask_centers:
            best_rank, best_index = None, None
            for p in (c + o for o in visit):
                if p in allowed:
                    masked.add(p)
                    rank = pmi_rank(row, p)
                    if best_rank is None or rank < best_rank:
                        best_rank, best_index = rank, p
            segments.append((best_rank, best_index))
        n_kept = math.ceil(len(segments) / 2)
        if n_kept >= masking.MIN_SEGMENTS_TO_SELECT:
            if not bugs:
                segments.sort(key=lambda s: s[0])  # stable: ties keep centre order
            segments = segments[:n_kept]
        for _, b in segments:
            kept_best[i, b] = True
            masked.update(p for p in range(b - HALF, b + HALF + 1) if p in allowed)
        mask[i, list(masked)] = True
    return mask, kept_best


def at_most(centres: torch.Tensor, n: int = 18) -> torch.Tensor:
    """The first `n` centres of each row (sets of up to 18 ints iterate in CPython 3.6's order on any
    CPython; larger ones are covered by test_cpython36_set_order_of_large_sets)."""
    return centres & (centres.cumsum(dim=1) <= n)


def loop_global_pmi(ids, counts, ranks, k: int = 6, bugs: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Global-PMI with Python loops: (mask, chosen best positions), bool (B, L) each."""
    ids = torch.as_tensor(ids)
    pmi_rank = released_rank_lookup(ranks, k, bugs)
    mask, best = torch.zeros(ids.shape, dtype=torch.bool), torch.zeros(ids.shape, dtype=torch.bool)
    for i, row in enumerate(ids):
        allowed = set(torch.where(row >= kmers.NUM_SPECIAL)[0].tolist())
        row = row.tolist()
        ranked = sorted((pmi_rank(row, p), p) for p in allowed)
        for _, b in ranked[: int(counts[i])]:
            best[i, b] = True
            mask[i, [p for p in range(b - HALF, b + HALF + 1) if p in allowed]] = True
    return mask, best


def loop_dnabert(ids, centres, k: int = 6) -> np.ndarray:
    ids, centres = np.asarray(ids), np.asarray(centres)
    lo, hi = masking.SPAN_OFFSETS[k]
    mask = np.zeros(ids.shape, bool)
    for i, c in zip(*np.nonzero(centres)):
        for p in range(max(c + lo, 0), min(c + hi + 1, ids.shape[1])):
            mask[i, p] = ids[i, p] >= kmers.NUM_SPECIAL
    return mask


# ----------------------------------------------------------------------------------------------
# Registry and options


def test_registry_and_needs_ranks():
    assert masking.names() == list(masking.STRATEGIES)
    assert {n for n in masking.names() if masking.needs_ranks(n)} == set(PMI_NAMES)
    with pytest.raises(CmgemsError, match="nope"):
        masking.needs_ranks("nope")


@pytest.mark.parametrize("name", masking.names())
def test_unknown_option_names_the_key(name):
    with pytest.raises(CmgemsError, match="bogus_key"):
        build(name, bogus_key=1)


def test_bad_inputs_raise():
    with pytest.raises(CmgemsError, match="unknown masking strategy"):
        build("nope")
    with pytest.raises(CmgemsError, match="needs PMI ranks"):
        masking.build("genemask", k=6, vocab_size=4101, token_ranks=None)
    with pytest.raises(CmgemsError, match="entries"):
        masking.build("genemask", k=6, vocab_size=4101, token_ranks=np.arange(10))
    with pytest.raises(CmgemsError, match="mlm_probability"):
        build("random", mlm_probability=1.5)
    with pytest.raises(CmgemsError, match="reproduce_reference_bugs"):
        build("genemask", reproduce_reference_bugs="yes")
    with pytest.raises(CmgemsError, match="vocab_size"):
        masking.build("random", k=6, vocab_size=100)


@pytest.mark.parametrize("name", masking.names())
def test_api_and_json_state(name):
    masker = build(name)
    inputs, labels = masker(full_batch(4), step=50, draws=draws(0, 4))
    assert inputs.dtype == labels.dtype == torch.int64 and inputs.shape == labels.shape == (4, 512)
    assert isinstance(masker.phase(50), str) and masker.phase(50).split()[0] in masking.names()
    state = json.loads(json.dumps(masker.state_dict()))
    fresh = build(name)
    fresh.load_state_dict(state)
    assert fresh.state_dict() == masker.state_dict()


# ----------------------------------------------------------------------------------------------
# Building blocks


@FAST
@given(
    st.lists(st.lists(st.booleans(), min_size=12, max_size=12), min_size=1, max_size=3),
    st.integers(-6, 0),
    st.integers(0, 6),
)
def test_dilate_matches_naive(rows, lo, hi):
    marks = torch.tensor(rows)
    length = marks.shape[1]
    dilated = masking.dilate(marks, lo, hi)
    for i in range(marks.shape[0]):
        for p in range(length):
            covered = any(bool(marks[i, c]) for c in range(p - hi, p - lo + 1) if 0 <= c < length)
            assert bool(dilated[i, p]) == covered


@FAST
@given(st.integers(1, 6), st.integers(0, 2**31))
def test_smallest_k_takes_the_k_smallest(rows, seed):
    rng = np.random.default_rng(seed)
    keys = torch.from_numpy(np.stack([rng.permutation(40) for _ in range(rows)]))
    counts = torch.from_numpy(rng.integers(0, 41, rows))
    chosen = masking.smallest_k(keys, counts)
    for i in range(rows):
        assert set(np.flatnonzero(chosen[i].numpy())) == set(np.argsort(keys[i].numpy())[: counts[i]])


@FAST
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 5)), max_size=30), st.integers(0, 2**31), st.booleans())
def test_smallest_per_row(entries, seed, by_key):
    entries = sorted(entries, key=lambda e: e[0])  # rows sorted, keys in any order within a row
    rows = torch.tensor([r for r, _ in entries], dtype=torch.int64)
    keys = torch.tensor([key for _, key in entries], dtype=torch.int64)
    per_row = torch.bincount(rows, minlength=4)
    counts = torch.from_numpy(np.random.default_rng(seed).integers(0, per_row.numpy() + 1))
    taken = masking.smallest_per_row(rows, keys if by_key else None, per_row, counts)
    expected = []
    for r in range(4):
        in_row = [i for i, (r2, _) in enumerate(entries) if r2 == r]
        if by_key:
            in_row.sort(key=lambda i: entries[i][1])  # stable: ties keep entry order
        expected += in_row[: int(counts[r])]
    assert sorted(taken.tolist()) == sorted(expected)


def kept_best_mask(strategy, ids, centres) -> torch.Tensor:
    """Bool (B, L): GeneMask's kept best positions for the centres (bool (B, L))."""
    rows, cols = strategy.kept_best_positions(ids, *centres.nonzero(as_tuple=True))
    mask = torch.zeros_like(centres)
    mask[rows, cols] = True
    return mask


# ----------------------------------------------------------------------------------------------
# Invariants of every strategy


@FAST
@given(batches, st.sampled_from(masking.names()), st.integers(0, 2**31), st.booleans())
def test_only_maskable_positions_are_chosen(batch, name, seed, bugs):
    k, ids = batch
    options = {"reproduce_reference_bugs": bugs} if name in PMI_NAMES else {}
    masker = build(name, k=k, **options)
    before = ids.clone()
    inputs, labels = masker(ids, step=seed % 101, draws=draws(seed, len(ids)))
    chosen = labels != masking.IGNORE_INDEX
    assert torch.equal(ids, before), "input_ids modified in place"
    assert not (chosen & (ids < kmers.NUM_SPECIAL)).any(), "special or padding position chosen"
    assert torch.equal(labels[chosen], ids[chosen])
    assert torch.equal(inputs[~chosen], ids[~chosen])
    changed = inputs[chosen]
    assert ((changed == kmers.MASK_ID) | (changed >= kmers.NUM_SPECIAL)).all()
    assert (inputs < kmers.vocab_size(k)).all()


@FAST
@given(batches, st.integers(0, 2**31))
def test_dnabert_spans_are_the_clipped_spans_of_the_centres(batch, seed):
    k, ids = batch
    strategy = build("dnabert", k=k)
    centres = masking.draw_centres(masking.maskable_positions(ids), 0.2, draws(seed, len(ids)))
    mask = strategy.expand(ids, centres)
    assert np.array_equal(mask.numpy(), loop_dnabert(ids, centres, k))
    lo, hi = masking.SPAN_OFFSETS[k]
    for i, c in zip(*np.nonzero(centres.numpy())):  # each span: contiguous over maskable positions
        span = [
            p for p in range(c + lo, c + hi + 1) if 0 <= p < ids.shape[1] and ids[i, p] >= kmers.NUM_SPECIAL
        ]
        assert mask[i, span].all()


# ----------------------------------------------------------------------------------------------
# GeneMask


@FAST
@given(
    batches,
    st.integers(0, 2**31),
    st.sampled_from([(False, False), (True, False), (True, True)]),
    st.sampled_from([None, 3, 50]),
    st.sampled_from([0.05, 0.3]),
)
def test_genemask_matches_loop_implementation(batch, seed, bugs_specials, n_distinct, p):
    k, ids = batch
    bugs, specials_best = bugs_specials
    ranks = random_ranks(k, seed, n_distinct)
    strategy = build("genemask", k=k, ranks=ranks, reproduce_reference_bugs=bugs, special_positions_best=specials_best)
    centres = at_most(masking.draw_centres(masking.maskable_positions(ids), p, draws(seed, len(ids))))
    expected_mask, expected_best = loop_genemask(ids, centres, ranks, k, bugs, specials_best)
    assert torch.equal(kept_best_mask(strategy, ids, centres), expected_best)
    assert torch.equal(strategy.expand(ids, centres), expected_mask)


@pytest.mark.parametrize("specials_best", [False, True])
def test_released_genemask_matches_literal_code_on_full_sequences(specials_best):
    """GeneMask's rate on 510 k-mers with the GeneMask table's kind of ranks (a permutation): the
    released behaviour equals the literal re-implementation that builds the Python set, row for row."""
    ranks = random_ranks(6, 5)
    strategy = build("genemask", ranks=ranks, reproduce_reference_bugs=True, special_positions_best=specials_best)
    for seed in range(3):
        ids = full_batch(64, seed=seed)
        centres = at_most(masking.draw_centres(masking.maskable_positions(ids), 0.0176, draws(seed, 64)))
        assert centres.sum(dim=1).max() >= 2 * masking.MIN_SEGMENTS_TO_SELECT  # the half is kept in set order
        expected_mask, expected_best = loop_genemask(ids, centres, ranks, 6, True, specials_best)
        assert torch.equal(kept_best_mask(strategy, ids, centres), expected_best)
        assert torch.equal(strategy.expand(ids, centres), expected_mask)


@FAST
@given(st.integers(0, 2**31), st.sampled_from([None, 5]), st.integers(1, 16))
def test_genemask_kept_spans_hold_their_best_position(seed, n_distinct, n_centres):
    """Centres 8 apart (spans never overlap): every kept best position is the best of its centre's
    span, and the best half is kept when ceil(n / 2) >= 5, else all."""
    ranks = random_ranks(6, seed, n_distinct)
    ids = make_batch(6, [150], seed)
    centres = torch.zeros_like(ids, dtype=torch.bool)
    centres[0, 10 : 10 + 8 * n_centres : 8] = True
    strategy = build("genemask", ranks=ranks)
    best = kept_best_mask(strategy, ids, centres)[0].numpy()
    row = ids[0].numpy()
    span_best = []
    for c in np.flatnonzero(centres[0].numpy()):
        span = list(range(c - 2, c + 4))
        span_ranks = ranks[row[span]]
        b = span[int(np.argmin(span_ranks))]  # argmin: the first, i.e. lower position, on ties
        span_best.append((ranks[row[b]], b))
        assert best[span].sum() <= 1
        assert not best[span].any() or best[b]
    half = math.ceil(n_centres / 2)
    expected = sorted(span_best)[:half] if half >= 5 else span_best
    assert set(np.flatnonzero(best)) == {b for _, b in expected}
    mask = strategy.expand(ids, centres)[0].numpy()
    for _, b in expected:
        assert mask[b - HALF : b + HALF + 1].all()


def test_reference_bugs_make_genemask_depend_only_on_position():
    ranks = random_ranks(6, 1)
    a, b = make_batch(6, [300], seed=1), make_batch(6, [300], seed=2)
    centres = masking.draw_centres(masking.maskable_positions(a), 0.05, draws(3, len(a)))
    buggy = build("genemask", ranks=ranks, reproduce_reference_bugs=True)
    correct = build("genemask", ranks=ranks)
    assert torch.equal(buggy.expand(a, centres), buggy.expand(b, centres))
    assert torch.equal(kept_best_mask(buggy, a, centres), kept_best_mask(buggy, b, centres))
    assert not torch.equal(kept_best_mask(correct, a, centres), kept_best_mask(correct, b, centres))


@pytest.mark.parametrize("specials_best, expected", [(False, [5]), (True, [3])])
def test_reference_bugs_rank_positions_one_to_four(specials_best, expected):
    """Positions 1-4 decode to special tokens: the CM-GEMS code ranks them 4096, the worst, GeneMask's
    (a defaultdict(int)) 0, the best, whatever the table says of the special ids. A tie within a span
    keeps the centre (3 among the rank-0 positions 1-4), as the released loop does."""
    ranks = random_ranks(6, 0)
    ranks[: kmers.NUM_SPECIAL] = 7
    ranks[kmers.NUM_SPECIAL] = 1  # position 5 reads as the best-ranked k-mer
    table = masking.RankTable(ranks, kmers.vocab_size(6))
    by_position = table.position_ranks(12, torch.device("cpu"), specials_best)
    assert (by_position[: kmers.NUM_SPECIAL] == (0 if specials_best else 4**6)).all() and by_position[5] == 1
    ids = make_batch(6, [20], seed=0)
    centres = torch.zeros_like(ids, dtype=torch.bool)
    centres[0, 3] = True  # span 1..6
    strategy = build("genemask", ranks=ranks, reproduce_reference_bugs=True, special_positions_best=specials_best)
    assert np.flatnonzero(kept_best_mask(strategy, ids, centres)[0].numpy()).tolist() == expected


def test_special_positions_best_needs_the_reference_bugs():
    with pytest.raises(CmgemsError, match="special_positions_best.*reproduce_reference_bugs"):
        build("genemask", special_positions_best=True)


@FAST
@given(st.lists(st.integers(0, 5000), max_size=40).filter(lambda v: len(set(v)) <= 18))
def test_cpython36_set_order_of_small_sets(values):
    """Up to 18 elements CPython 3.6 and the running CPython (>= 3.7) size their tables alike."""
    assert masking.cpython36_set_order(values) == list(set(values))


@pytest.mark.parametrize("values, order", [  # list(set(values)) printed by CPython 3.6.15
    ([94, 103, 126, 136, 156, 210, 241, 256, 273, 297, 326, 367, 371, 373, 377, 388, 389, 417, 455],
     [256, 417, 388, 389, 326, 103, 136, 297, 377, 455, 367, 241, 210, 273, 371, 373, 94, 156, 126]),
    ([39, 106, 112, 159, 170, 182, 213, 240, 266, 270, 279, 316, 353, 361, 364, 373, 375, 386, 397, 426, 444, 474,
      494],
     [386, 266, 397, 270, 279, 159, 39, 170, 426, 182, 444, 316, 213, 474, 353, 361, 106, 364, 494, 112, 240, 373,
      375]),
    ([10, 21, 30, 64, 72, 76, 103, 105, 109, 110, 116, 118, 163, 167, 168, 170, 177, 179, 200, 209, 211, 213, 214,
      219, 239, 273, 291, 322, 335, 372, 381, 384, 391, 395, 407, 445, 447, 464, 498, 502],
     [384, 391, 10, 395, 273, 21, 407, 30, 163, 291, 167, 168, 170, 177, 179, 445, 447, 64, 322, 72, 200, 76, 335,
      464, 209, 211, 213, 214, 219, 103, 105, 109, 110, 239, 498, 116, 372, 118, 502, 381]),
])
def test_cpython36_set_order_of_large_sets(values, order):
    """From 19 elements on CPython 3.6 (2/3 load) and >= 3.7 (3/5) may differ; the released code ran 3.6."""
    assert masking.cpython36_set_order(values) == order


def test_released_genemask_keeps_spans_all_along_the_sequence():
    """The first half in set order is spread over the sequence (about half of the kept spans lie in
    its first half; the first half by position would put ~86% there)."""
    strategy = build("genemask", ranks=random_ranks(6, 5), reproduce_reference_bugs=True)
    first = total = 0
    for seed in range(12):
        ids = full_batch(64, seed=seed)
        centres = masking.draw_centres(masking.maskable_positions(ids), 0.0176, draws(seed, 64, 64 * seed))
        selecting = (centres.sum(dim=1) + 1) // 2 >= masking.MIN_SEGMENTS_TO_SELECT
        rows, best = strategy.kept_best_positions(ids, *centres.nonzero(as_tuple=True))
        best = best[selecting[rows]]
        first, total = first + int((best < 256).sum()), total + len(best)
    assert total > 1500 and 0.45 < first / total < 0.55


# ----------------------------------------------------------------------------------------------
# Global-PMI


@FAST
@given(batches, st.integers(0, 2**31), st.booleans(), st.sampled_from([None, 3]))
def test_global_pmi_masks_around_the_best_ranked_positions(batch, seed, bugs, n_distinct):
    k, ids = batch
    ranks = random_ranks(k, seed, n_distinct)
    strategy = build("global_pmi", k=k, ranks=ranks, reproduce_reference_bugs=bugs)
    centres = masking.draw_centres(masking.maskable_positions(ids), 0.1, draws(seed, len(ids)))
    expected_mask, expected_best = loop_global_pmi(ids, centres.sum(dim=1), ranks, k, bugs)
    assert torch.equal(strategy.best_positions(ids, centres), expected_best)
    assert torch.equal(strategy.expand(ids, centres), expected_mask)


# ----------------------------------------------------------------------------------------------
# Proportions (510 k-mers per sequence, averaged over many batches)


@pytest.mark.parametrize("name", ["random", "dnabert", "genemask"])
def test_masked_fraction_is_about_15_percent(name):
    masker = build(name)
    fractions = [
        float(
            (masker(full_batch(32, seed=s), step=0, draws=draws(7, 32, 32 * s))[1] != masking.IGNORE_INDEX).float().mean()
            * 512
            / 510
        )
        for s in range(20)
    ]
    assert abs(np.mean(fractions) - 0.15) <= 0.015


def test_corruption_is_80_10_10_and_never_draws_specials():
    ids = full_batch(64)
    chosen = torch.ones_like(ids, dtype=torch.bool)
    chosen[:, 0] = chosen[:, -1] = False
    inputs, labels = masking.bert_corrupt(ids, chosen, kmers.vocab_size(6), draws(0, len(ids)))
    assert torch.equal(labels[chosen], ids[chosen]) and (labels[~chosen] == masking.IGNORE_INDEX).all()
    n = int(chosen.sum())
    masked = inputs[chosen] == kmers.MASK_ID
    same = inputs[chosen] == ids[chosen]
    replaced = ~masked & ~same
    # a random id equals the original with probability 1/4096: "same" is 10% + 0.1 * 1/4096
    assert abs(masked.sum() / n - 0.8) < 0.01
    assert abs(replaced.sum() / n - 0.1) < 0.006
    assert abs(same.sum() / n - 0.1) < 0.006
    assert (inputs[chosen][replaced] >= kmers.NUM_SPECIAL).all()
    assert (inputs[~chosen] == ids[~chosen]).all()
    random_ids = inputs[chosen][replaced]  # uniform over all k-mer ids
    assert random_ids.min() < kmers.NUM_SPECIAL + 50 and random_ids.max() > kmers.vocab_size(6) - 50


# ----------------------------------------------------------------------------------------------
# Determinism


@pytest.mark.parametrize("name", masking.names())
def test_same_seed_same_masks_different_seed_different(name):
    ids = full_batch(8)
    first = build(name)(ids, step=60, draws=draws(11, 8))
    again = build(name)(ids, step=60, draws=draws(11, 8))
    other = build(name)(ids, step=60, draws=draws(12, 8))
    elsewhere = build(name)(ids, step=60, draws=draws(11, 8, first=8))
    assert all(torch.equal(x, y) for x, y in zip(first, again))
    assert not torch.equal(first[1], other[1]) and not torch.equal(first[1], elsewhere[1])


@pytest.mark.parametrize("name", masking.names())
def test_a_sequence_masks_the_same_in_any_batch(name):
    """Masks are keyed by (seed, global sequence position): a row's mask does not depend on the
    rows beside it, their number, or the order of the batch."""
    ids = make_batch(6, [510, 300, 17, 200, 0, 450], seed=3)
    whole = build(name)(ids, step=60, draws=draws(5, 6, first=100))
    order = torch.tensor([4, 1, 5, 0])
    part = build(name)(ids[order], step=60, draws=masking.Draws(5, order + 100))
    for w, p in zip(whole, part):
        assert torch.equal(w[order], p)


# ----------------------------------------------------------------------------------------------
# Curricula


def test_cm_gems_switches_once_when_the_smallest_difference_drops_below_threshold():
    masker = build("cm_gems", threshold=1.0)
    assert masker.phase(1) == "genemask" and masker.switch_step is None
    for step, ppl in [(10, 20.0), (20, 15.0), (30, 13.5), (40, 12.2)]:
        masker.observe_validation(step, ppl)
        assert masker.phase(step + 1) == "genemask" and masker.switch_step is None
    masker.observe_validation(50, 11.3)  # |12.2 - 11.3| = 0.9 < 1.0
    assert masker.switch_step == 50
    assert masker.phase(50) == "genemask" and masker.phase(51) == "global_pmi"  # step 50 was masked before
    masker.observe_validation(60, 30.0)  # for good
    assert masker.phase(61) == "global_pmi" and masker.switch_step == 50


def test_cm_gems_masks_with_the_phase_and_state_round_trips():
    ids, masker = full_batch(8), build("cm_gems", threshold=0.5)
    genemask, global_pmi = build("genemask"), build("global_pmi")
    assert torch.equal(masker(ids, step=1, draws=draws(3, 8))[1], genemask(ids, step=1, draws=draws(3, 8))[1])
    masker.observe_validation(100, 5.0)
    masker.observe_validation(200, 5.4)
    state = json.loads(json.dumps(masker.state_dict()))
    assert state["switch_step"] == 200 and state["perplexities"] == [5.0, 5.4]
    restored = build("cm_gems", threshold=0.5)
    restored.load_state_dict(state)
    assert restored.phase(201) == "global_pmi" and restored.switch_step == 200
    expected = global_pmi(ids, step=201, draws=draws(4, 8))[1]
    assert torch.equal(restored(ids, step=201, draws=draws(4, 8))[1], expected)
    with pytest.raises(CmgemsError):
        build("genemask").load_state_dict(state)


def test_cm_step_masks_each_sequence_with_global_pmi_with_probability_step_over_max_steps():
    masker = build("cm_step")  # max_steps = 100
    ids = make_batch(6, [60] * 400, seed=5)
    dnabert, global_pmi = build("dnabert"), build("global_pmi", centre_probability=0.0136)

    def share(step: int) -> float:
        d = draws(5, len(ids), first=400 * step)
        chosen = masker(ids, step=step, draws=d)[1]
        hard = masker.hard_rows(step, d)
        assert torch.equal(chosen[hard], global_pmi(ids, step=step, draws=d)[1][hard])
        assert torch.equal(chosen[~hard], dnabert(ids, step=step, draws=d)[1][~hard])
        return float(hard.float().mean())

    assert share(1) == 0.0 and share(101) == 1.0 and share(150) == 1.0
    assert abs(share(26) - 0.25) < 0.07 and abs(share(51) - 0.5) < 0.08
    assert masker.hard_probability(31) == pytest.approx(0.3)
    assert masker.phase(31) == "global_pmi p=0.30"
    assert masker.switch_step is None


class NotNumpy(torch.Tensor):
    """A CPU tensor that, like a CUDA tensor, cannot be handed to numpy."""

    def __array__(self, *args, **kwargs):
        raise TypeError("can't convert cuda:0 device type tensor to numpy")


@pytest.mark.parametrize("name", masking.names())
def test_every_strategy_builds_and_runs_with_ranks_as_the_trainer_passes_them(name):
    """The trainer reads ranks with pmi.token_ranks as a tensor (the crash this guards against:
    np.asarray on a CUDA tensor)."""
    ranks = torch.from_numpy(random_ranks(6, 0)).as_subclass(NotNumpy)
    with pytest.raises(TypeError):
        np.asarray(ranks)
    masker = masking.build(name, k=6, token_ranks=ranks if masking.needs_ranks(name) else None, max_steps=100)
    inputs, labels = masker(full_batch(4), step=50, draws=draws(0, 4))
    assert (labels != masking.IGNORE_INDEX).any()


@FAST
@given(st.integers(0, 2**62), st.lists(st.integers(0, 2**40), min_size=1, max_size=5), st.integers(0, 2))
def test_draws_are_splitmix64_of_seed_position_and_stream(seed, positions, stream):
    """Draws.bits against a pure-Python splitmix64 (64-bit wrap-around arithmetic)."""
    mask = 2**64 - 1

    def mix(z):
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
        return z ^ (z >> 31)

    gamma = 0x9E3779B97F4A7C15
    d = masking.Draws(seed, torch.tensor(positions))
    got = d.bits(stream, torch.arange(len(positions)), torch.full((len(positions),), 7)).tolist()
    seed_key = mix((seed + gamma) & mask)
    for value, g in zip(got, positions):
        key = mix((seed_key + (g + 1) * gamma) & mask)
        assert value & mask == mix((key + (7 * 4 + stream + 1) * gamma) & mask)


def test_draws_are_uniform():
    d = draws(1, 64)
    u = d.bernoulli(masking.STREAM_CENTRES, 512, 0.3).float()
    assert abs(float(u.mean()) - 0.3) < 0.01
    values = d.integers(masking.STREAM_CORRUPT, torch.zeros(100_000, dtype=torch.int64), torch.arange(100_000), 10)
    counts = torch.bincount(values, minlength=10).float() / 100_000
    assert values.min() >= 0 and values.max() <= 9 and (counts - 0.1).abs().max() < 0.01


# ----------------------------------------------------------------------------------------------
# CUDA


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("name", masking.names())
@pytest.mark.parametrize("bugs", [False, True])
def test_cuda_equals_cpu(name, bugs):
    if bugs and name not in PMI_NAMES:
        pytest.skip("no reference bugs for this strategy")
    options = {"reproduce_reference_bugs": True} if bugs else {}
    ids = make_batch(6, [510, 300, 17, 0], seed=4, unk_fraction=0.01)
    ranks = torch.from_numpy(random_ranks(6, 0)).cuda()  # a device tensor, as a GPU trainer might pass
    masker = masking.build(name, k=6, token_ranks=ranks if masking.needs_ranks(name) else None, max_steps=100,
                           options=options)
    cpu = masker(ids, step=50, draws=draws(0, 4))
    cuda = masker(ids.cuda(), step=50, draws=masking.Draws(0, torch.arange(4, device="cuda")))
    assert cuda[0].is_cuda and all(torch.equal(a, b.cpu()) for a, b in zip(cpu, cuda))
