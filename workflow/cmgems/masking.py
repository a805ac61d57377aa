"""Masking strategies for masked-language-model pretraining: BERT, DNABERT spans, GeneMask, Global-PMI,
and the CM-GEMS / CM-STEP curricula.

Every strategy works on a batch of token ids (B, L) laid out as [CLS] k-mers [SEP] [PAD]...; only
*maskable* positions (id >= kmers.NUM_SPECIAL) are ever chosen. Choosing is fully vectorized in torch
(CPU or CUDA). All randomness comes from `Draws`: every random number is a hash of (seed, the row's
global sequence index, position, stream), so a sequence's mask depends on nothing else: not on the
batch it shares, the device, the number of processes, or where a run was resumed. The chosen
positions are then corrupted BERT-style by `bert_corrupt`.

Usage (the pretraining data loader; steps count from 1):

    masker = build("cm_gems", k=6, vocab_size=4101, token_ranks=ranks, max_steps=10_000, options={})
    inputs, labels = masker(input_ids, step=step, draws=Draws(seed, sequence_indices))
    masker.observe_validation(step, perplexity)

A new strategy is one small class decorated with `@register("name")`: subclass `CentreStrategy`
(centres ~ Bernoulli, then a deterministic `expand`) or `Strategy`. A curriculum is a `Strategy`
that composes others: it picks one per step or per sequence in `choose` and names it in `phase`.

PMI ranks: `token_ranks[id]` is the PMI rank of token `id` (1 = highest PMI); specials and unranked
k-mers rank last. Ties between equal ranks go to the lower position (but see the released code below).

`reproduce_reference_bugs` (genemask, global_pmi, cm_gems, cm_step) reproduces the authors' released
code (GeneMask's Code-B_run_pretrain_pmi.py, CM-GEMS's src/pretraining-adaptive/*.py) instead of the
method as described: (a) the rank is looked up for the position *index* as if it were a token id
(`ranks[position]` instead of `ranks[token]`), so the choice depends only on where a centre falls, not
on the sequence; positions 1-4 decode to special tokens and rank worst (4096: the CM-GEMS code maps
rank 0 and unknown k-mers to 4096), or best with genemask's `special_positions_best` (rank 0: GeneMask's
code reads a defaultdict(int)); (b) genemask keeps the first half of the spans in the iteration order
of the Python set of centres instead of the best half by rank (it slices before it sorts; CPython 3.6's
set order, `cpython36_set_order`, a per-row Python step); and a tie within a span keeps the centre,
then c-2, c-1, c+1, ... instead of the lower position. config/README.md lists every difference.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
import torch

from cmgems import kmers
from cmgems.errors import CmgemsError

IGNORE_INDEX = -100  # label of positions that carry no loss
MASK_FRACTION, RANDOM_FRACTION = 0.8, 0.1  # BERT's 80% [MASK], 10% random id, 10% unchanged
# DNABERT's span around a centre c, as offsets (lo, hi): c+lo .. c+hi, per k.
SPAN_OFFSETS = {3: (-1, 1), 4: (-1, 2), 5: (-2, 2), 6: (-2, 3)}
PMI_HALF_WIDTH = 5  # GeneMask / Global-PMI mask the 11-span best-5 .. best+5
MIN_SEGMENTS_TO_SELECT = 5  # GeneMask keeps the best half only when ceil(#centres / 2) >= this

STRATEGIES: dict[str, type] = {}


def register(name: str):
    """Class decorator: register a `Strategy` or `Masker` subclass under `name`."""

    def decorate(cls):
        cls.name = name
        STRATEGIES[name] = cls
        return cls

    return decorate


def names() -> list[str]:
    return list(STRATEGIES)


def strategy_class(name: str) -> type:
    if name not in STRATEGIES:
        raise CmgemsError(f"unknown masking strategy {name!r}; known: {names()}")
    return STRATEGIES[name]


def needs_ranks(name: str) -> bool:
    """True when strategy `name` uses PMI ranks."""
    return strategy_class(name).USES_RANKS


# ----------------------------------------------------------------------------------------------
# Vectorized building blocks: shapes (B, L), bool masks, no loop over rows, centres or positions.
# A batch costs a few dozen small torch ops, so their number is what counts: the sparse parts (centres,
# spans, chosen positions) work on flat index lists (`nonzero`, `take`, `index_fill_`, `index_copy_`)
# rather than on whole (B, L) tensors, and row reductions and advanced-indexing gathers are avoided
# (on a busy 2-core CPU they go multi-threaded and stall for milliseconds).

# ----------------------------------------------------------------------------------------------
# Counter-based random numbers.

STREAM_CENTRES, STREAM_CORRUPT, STREAM_CHOICE = range(3)  # independent streams of one sequence
_STREAMS = 4
_GOLDEN = -7046029254386353131  # 0x9E3779B97F4A7C15 as int64: splitmix64's increment
_MIX1, _MIX2 = -4658895280553007687, -7723592293110705685  # 0xBF58476D1CE4E5B9, 0x94D049BB133111EB


def _shift_right(z: torch.Tensor, bits: int) -> torch.Tensor:
    """Logical right shift of int64 (torch's >> is arithmetic)."""
    return (z >> bits) & ((1 << (64 - bits)) - 1)


def mix64(z: torch.Tensor) -> torch.Tensor:
    """splitmix64's finaliser on int64 tensors (wrapping arithmetic): a bijective 64-bit hash."""
    z = (z ^ _shift_right(z, 30)) * _MIX1
    z = (z ^ _shift_right(z, 27)) * _MIX2
    return z ^ _shift_right(z, 31)


class Draws:
    """Random numbers for a batch of sequences, each a splitmix64 hash of (seed, the row's global
    sequence index, position, stream). Rows are independent streams: a row's numbers are the same
    in any batch, on any device. sequence_index: int64 (B,), on the device the numbers are wanted on."""

    def __init__(self, seed: int, sequence_index: torch.Tensor):
        index = torch.as_tensor(sequence_index, dtype=torch.int64)
        if seed < 0:
            raise CmgemsError(f"masking seed must be >= 0, got {seed}")
        seed_key = mix64(torch.tensor(seed % 2**63, dtype=torch.int64, device=index.device) + _GOLDEN)
        self.keys = mix64(seed_key + (index + 1) * _GOLDEN)  # (B,)

    def bits(self, stream: int, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """int64 hashes of (row, position) pairs (rows, cols broadcastable int64 tensors) in `stream`."""
        return mix64(self.keys[rows] + (cols * _STREAMS + (stream + 1)) * _GOLDEN)

    def bernoulli(self, stream: int, length: int, probability: float) -> torch.Tensor:
        """Bool (B, length): each position True with `probability` (exact: 53-bit integer comparison)."""
        rows = torch.arange(len(self.keys), device=self.keys.device).unsqueeze(1)
        cols = torch.arange(length, device=self.keys.device).unsqueeze(0)
        return _shift_right(self.bits(stream, rows, cols), 11) < round(probability * 2**53)

    def row_bernoulli(self, stream: int, probability: float) -> torch.Tensor:
        """Bool (B,): each row True with `probability`."""
        return self.bernoulli(stream, 1, probability).squeeze(1)

    def integers(self, stream: int, rows: torch.Tensor, cols: torch.Tensor, high: int) -> torch.Tensor:
        """int64 (N,) uniform in [0, high) (high < 2**31) for the (row, position) pairs rows, cols (N,)."""
        return (_shift_right(self.bits(stream, rows, cols), 32) * high) >> 32


def maskable_positions(input_ids: torch.Tensor) -> torch.Tensor:
    """Bool (B, L): positions holding a k-mer (never [CLS], [SEP], [PAD], [UNK], [MASK])."""
    return input_ids >= kmers.NUM_SPECIAL


def draw_centres(maskable: torch.Tensor, probability: float, draws: Draws) -> torch.Tensor:
    """Bool (B, L): each maskable position independently with `probability`."""
    return draws.bernoulli(STREAM_CENTRES, maskable.shape[1], probability) & maskable


def dilate(marks: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
    """Bool (B, L): positions c+lo .. c+hi of every marked c (clipped to 0..L-1)."""
    return mark_spans(torch.zeros_like(marks, dtype=torch.bool), *marks.nonzero(as_tuple=True), lo, hi)


def row_counts(marks: torch.Tensor) -> torch.Tensor:
    """int64 (B,): marked entries per row (a cumsum: row reductions stall on a busy 2-core CPU)."""
    return marks.cumsum(dim=1, dtype=torch.int64)[:, -1]


def smallest_per_row(rows: torch.Tensor, keys: torch.Tensor | None, per_row: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """int64 (M,): indices of the entries holding, in each row r, the `counts[r]` smallest keys (ties:
    the earlier entry); `keys` None takes the first `counts[r]` entries of the row. rows: int64 (N,),
    sorted ascending; keys: int (N,) in [0, 2**31); per_row: int64 (B,), entries per row; counts:
    int64 (B,)."""
    index = torch.arange(rows.numel(), device=rows.device)
    order = index if keys is None else torch.argsort(rows * 2**31 + keys, stable=True)
    sorted_rows = rows.index_select(0, order)  # still grouped by row, each row's entries by key
    first_of_row = per_row.cumsum(0) - per_row
    return order[index - first_of_row.index_select(0, sorted_rows) < counts.index_select(0, sorted_rows)]


def smallest_k(keys: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Bool (B, L): in each row b, the `counts[b]` entries of `keys` with the smallest values (and any
    entry tied with the last of them). Entries to exclude hold keys above every candidate's; counts
    must not exceed the number of candidates."""
    kmax = int(counts.max()) if counts.numel() else 0
    if kmax == 0:
        return torch.zeros_like(keys, dtype=torch.bool)
    smallest = keys.topk(kmax, dim=1, largest=False, sorted=True).values
    threshold = smallest.gather(1, (counts - 1).clamp(min=0).unsqueeze(1))
    return (keys <= threshold) & (counts > 0).unsqueeze(1)


def mark_spans(marks: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
    """Set positions cols+lo .. cols+hi (clipped to 0..L-1) of rows `rows` (int64 (N,) each, a list of
    positions) in `marks` (bool (B, L), contiguous), in place; returns `marks`. One index_fill_ into a
    flat view: no (B, L) pass per offset."""
    length = marks.shape[1]
    offsets = torch.arange(lo, hi + 1, device=cols.device)
    flat = rows.unsqueeze(1) * length + (cols.unsqueeze(1) + offsets).clamp_(0, length - 1)
    return marks.view(-1).index_fill_(0, flat.view(-1), True).view(marks.shape)


def bert_corrupt(
    input_ids: torch.Tensor, chosen: torch.Tensor, vocab_size: int, draws: Draws
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's corruption of the `chosen` positions (bool (B, L)): 80% [MASK], 10% a random k-mer id
    (uniform over NUM_SPECIAL..vocab_size-1, never a special token), 10% unchanged.

    Returns (inputs, labels), both int64 (B, L) and contiguous: labels hold the original id at chosen
    positions and IGNORE_INDEX (-100) elsewhere. `input_ids` is not modified. One integer draw per
    chosen position, uniform over 10 x (number of k-mers), decides both the branch (first 8 tenths,
    next tenth, last tenth) and the random id (its offset within the random tenth).
    """
    n_kmers = vocab_size - kmers.NUM_SPECIAL
    mask_below = round(10 * MASK_FRACTION) * n_kmers  # draws in [0, mask_below) -> [MASK]
    random_below = mask_below + round(10 * RANDOM_FRACTION) * n_kmers  # [mask_below, random_below) -> random id
    inputs = input_ids.clone(memory_format=torch.contiguous_format)
    where = chosen.reshape(-1).nonzero().squeeze(1)  # flat indices of the chosen positions
    original = inputs.view(-1).index_select(0, where)
    length = input_ids.shape[1]
    draw = draws.integers(STREAM_CORRUPT, where // length, where % length, 10 * n_kmers)
    replaced = torch.where(draw < mask_below, kmers.MASK_ID, draw - (mask_below - kmers.NUM_SPECIAL))
    inputs.view(-1).index_copy_(0, where, torch.where(draw < random_below, replaced, original))
    labels = torch.full_like(inputs, IGNORE_INDEX)
    labels.view(-1).index_copy_(0, where, original)
    return inputs, labels


# ----------------------------------------------------------------------------------------------
# PMI ranks, and the iteration order of the released code's Python sets.


class RankTable:
    """PMI ranks of tokens, or of positions (the released code's lookup), as int32 tensors. Device
    copies are cached."""

    def __init__(self, token_ranks, vocab_size: int):
        # torch, not numpy: the trainer may pass a tensor on any device
        ranks = torch.as_tensor(token_ranks).detach().to("cpu", torch.int64).flatten()
        if ranks.numel() != vocab_size:
            raise CmgemsError(f"token_ranks has {ranks.numel()} entries, expected vocab_size = {vocab_size}")
        if ranks.min() < 0 or ranks.max() >= 2**20:
            raise CmgemsError(f"token_ranks must lie in [0, 2**20), got {int(ranks.min())}..{int(ranks.max())}")
        self.token_ranks = ranks.to(torch.int32)  # keys rank * L + position fit int32 for L < 2048
        self.n_kmers = vocab_size - kmers.NUM_SPECIAL
        self.excluded = max(int(ranks.max()), self.n_kmers) + 1  # the rank of non-maskable positions: after all
        self._on_device: dict[torch.device, torch.Tensor] = {}

    def ranks_on(self, device: torch.device) -> torch.Tensor:
        if device not in self._on_device:
            self._on_device[device] = self.token_ranks.to(device)
        return self._on_device[device]

    def position_ranks(self, length: int, device: torch.device, specials_best: bool = False) -> torch.Tensor:
        """int32 (L,): the released code's rank of position p, ranks[p] (the index read as a token id).
        Positions 1-4 decode to special tokens, absent from the rank table: rank 0, the best, when
        `specials_best` (GeneMask's Code-B looks ranks up in a defaultdict(int)), else the number of
        k-mers, 4096 for k = 6 (the CM-GEMS code maps rank 0 and unknown k-mers to 4096); so do
        positions past the vocabulary."""
        out = torch.full((length,), self.n_kmers, dtype=torch.int32, device=device)
        n = min(length, self.token_ranks.numel())
        out[:n] = self.ranks_on(device)[:n]
        out[: kmers.NUM_SPECIAL] = 0 if specials_best else self.n_kmers
        return out

    def check_length(self, length: int) -> None:
        """Sort keys rank * length + position must fit int32."""
        if (self.excluded + 1) * length >= 2**31:
            raise CmgemsError(f"sequences of {length} tokens are too long for PMI sort keys")

    def ranks_at(self, tokens: torch.Tensor, positions: torch.Tensor, length: int, by_position: bool = False,
                 specials_best: bool = False) -> torch.Tensor:
        """int32 ranks of `tokens` standing at `positions` (int64, same shape) of sequences of `length`
        tokens; `by_position` ranks the positions instead (reproduce_reference_bugs; `specials_best` as
        in `position_ranks`). Non-maskable tokens get `excluded`, after every maskable one."""
        self.check_length(length)
        if by_position:
            ranks = self.position_ranks(length, tokens.device, specials_best).take(positions)
        else:
            ranks = self.ranks_on(tokens.device).take(tokens)
        return torch.where(tokens >= kmers.NUM_SPECIAL, ranks, self.excluded)

    def keys(self, input_ids: torch.Tensor, by_position: bool = False) -> torch.Tensor:
        """int32 (B, L) sort keys rank * L + position of every position of a batch: the smallest key is
        the best rank, ties go to the lower position, non-maskable positions come last."""
        length = input_ids.shape[1]
        positions = torch.arange(length, device=input_ids.device).expand_as(input_ids)
        return self.ranks_at(input_ids, positions, length, by_position) * length + positions.to(torch.int32)


SET_MIN_SIZE, SET_LINEAR_PROBES, SET_PERTURB_SHIFT = 8, 9, 5  # CPython 3.6's Objects/setobject.c


def _set_place(table: list, value: int) -> bool:
    """Put `value` in an open-addressing table as CPython's set does (slot hash & mask, the next 9
    slots while they fit, then the perturbed jump); False when it is already there."""
    mask, perturb = len(table) - 1, value
    i = value & mask
    while True:
        for j in range(i, i + SET_LINEAR_PROBES + 1 if i + SET_LINEAR_PROBES <= mask else i + 1):
            if table[j] is None or table[j] == value:
                new, table[j] = table[j] is None, value
                return new
        perturb >>= SET_PERTURB_SHIFT
        i = (i * 5 + 1 + perturb) & mask


def cpython36_set_order(values: list[int]) -> list[int]:
    """The iteration order of `set(values)` under CPython 3.6, which ran the released code (Python
    3.6.13 in CM-GEMS's environment file), for ints >= 0 (whose hash is the int itself): a table of 8
    slots, resized to the smallest power of two above 4 x the entries once 2/3 full. CPython >= 3.7
    resizes at 3/5, so sets of 19 or more positions iterate in another order there."""
    table, used = [None] * SET_MIN_SIZE, 0
    for value in values:
        if _set_place(table, value):
            used += 1
            if used * 3 >= (len(table) - 1) * 2:
                size = SET_MIN_SIZE
                while size <= used * 4:
                    size <<= 1
                old, table = table, [None] * size
                for kept in old:
                    if kept is not None:
                        _set_place(table, kept)
    return [value for value in table if value is not None]


def set_iteration_index(rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """int64 (C,): each centre's index in the iteration order of its row's centres as a Python set
    (`cpython36_set_order` of the row's positions in ascending order, as `torch.where(...).tolist()`
    gives them to the released code). rows, cols: int64 (C,), row-major. A Python step per row."""
    index, start, flat = [], 0, cols.tolist()
    for n in torch.bincount(rows).tolist() if rows.numel() else []:
        row = flat[start : start + n]
        where = {p: i for i, p in enumerate(cpython36_set_order(row))}
        index += [where[p] for p in row]
        start += n
    return torch.tensor(index, dtype=torch.int64, device=cols.device)


# ----------------------------------------------------------------------------------------------
# Strategies: static ones, then the curricula built from them.


class Strategy:
    """A masking strategy: which positions of a batch to corrupt at a step. Every registered strategy,
    static or curriculum, is built as cls(k, vocab_size, ranks, options, max_steps); subclasses set
    DEFAULTS (their options and default values) and implement `choose`. Curricula also override
    `phase`, and may react to validation perplexities and keep state (`state_dict`)."""

    name: ClassVar[str] = ""
    DEFAULTS: ClassVar[dict[str, Any]] = {}
    USES_RANKS: ClassVar[bool] = False

    def __init__(self, k: int, vocab_size: int, ranks: RankTable | None = None, options: dict | None = None,
                 max_steps: int = 0):
        self.k = kmers.check_k(k)
        self.vocab_size = vocab_size
        self.options = resolve_options(self.name, self.DEFAULTS, options)
        if self.USES_RANKS and ranks is None:
            raise CmgemsError(f"masking strategy {self.name!r} needs PMI ranks (token_ranks)")
        self.ranks = ranks
        self.switch_step: int | None = None  # the step at which a curriculum switched, if it has

    def choose(self, input_ids: torch.Tensor, step: int, draws: Draws) -> torch.Tensor:
        """Bool (B, L): the positions to corrupt at `step` (maskable positions only)."""
        raise NotImplementedError

    def phase(self, step: int) -> str:
        """What masks the batches of `step`: the strategy's name, or a curriculum's current phase."""
        return self.name

    def __call__(self, input_ids: torch.Tensor, *, step: int, draws: Draws) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs, labels), int64 (B, L) each, for a batch of token ids (B, L)."""
        return bert_corrupt(input_ids, self.choose(input_ids, step, draws), self.vocab_size, draws)

    def observe_validation(self, step: int, perplexity: float) -> None:
        """Called after each validation; static strategies ignore it."""

    def state_dict(self) -> dict:
        """JSON-serialisable state (a curriculum's progress)."""
        return {"name": self.name, "switch_step": self.switch_step}

    def load_state_dict(self, state: dict) -> None:
        if state.get("name") != self.name:
            raise CmgemsError(f"masking state is for {state.get('name')!r}, not {self.name!r}")
        self.switch_step = state["switch_step"]


class CentreStrategy(Strategy):
    """Draw centres ~ Bernoulli(p) over maskable positions, then `expand` them deterministically."""

    PROBABILITY: ClassVar[str] = "centre_probability"  # the option holding p

    def choose(self, input_ids, step, draws):
        maskable = maskable_positions(input_ids)
        return self.expand(input_ids, draw_centres(maskable, self.options[self.PROBABILITY], draws))

    def expand(self, input_ids: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
        """Bool (B, L): the positions to corrupt given the centres (bool (B, L), maskable only)."""
        raise NotImplementedError


@register("random")
class RandomTokens(CentreStrategy):
    """BERT: every maskable token independently with mlm_probability."""

    PROBABILITY = "mlm_probability"
    DEFAULTS = {"mlm_probability": 0.15}

    def expand(self, input_ids, centres):
        return centres


@register("dnabert")
class DnabertSpans(CentreStrategy):
    """DNABERT: each centre masks its k-dependent span (c-2..c+3 for k=6), clipped to maskable positions."""

    DEFAULTS = {"centre_probability": 0.025}

    def expand(self, input_ids, centres):
        return dilate(centres, *SPAN_OFFSETS[self.k]) & maskable_positions(input_ids)


class PmiStrategy(CentreStrategy):
    """A centre strategy that ranks positions by PMI."""

    USES_RANKS = True

    @property
    def by_position(self) -> bool:
        return self.options["reproduce_reference_bugs"]


@register("genemask")
class GeneMask(PmiStrategy):
    """GeneMask: each centre masks its DNABERT span; the best-PMI position of each span is found (ties:
    the lower position); when ceil(#centres / 2) >= 5 only the best half of the spans (by that rank,
    ties by position) is kept, else all; each kept span also masks best-5 .. best+5.

    With reproduce_reference_bugs, as the released code: positions are ranked instead of tokens
    (`RankTable.position_ranks`; `special_positions_best` gives positions 1-4 rank 0, as GeneMask's
    Code-B, else 4096, as the CM-GEMS code); a tie within a span keeps the centre, then c-2, c-1,
    c+1, ... (the first strictly better rank in that order wins); and the half kept is the first half
    of the spans in the iteration order of the Python set of centres (the code slices, then sorts)."""

    DEFAULTS = {"centre_probability": 0.0176, "reproduce_reference_bugs": False, "special_positions_best": False}

    def __init__(self, k, vocab_size, ranks=None, options=None, max_steps=0):
        super().__init__(k, vocab_size, ranks, options, max_steps)
        if self.options["special_positions_best"] and not self.by_position:
            raise CmgemsError(f"masking {self.name!r}: option 'special_positions_best' applies only with "
                              f"reproduce_reference_bugs: true")
        lo, hi = SPAN_OFFSETS[self.k]
        offsets = list(range(lo, hi + 1))
        visit = [0] + [o for o in offsets if o != 0] if self.by_position else offsets  # tie order within a span
        self.tie_order = torch.tensor([visit.index(o) for o in offsets], dtype=torch.int32)

    def kept_best_positions(self, input_ids: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor):
        """(rows, positions), int64 (N,) each: the best-PMI position of every kept span, given the
        centres as (rows, cols) lists in row-major order (int64 (C,) each)."""
        n_rows, length = input_ids.shape
        lo, hi = SPAN_OFFSETS[self.k]  # each centre's span, clipped (a clipped index repeats an edge inside it)
        span = (cols.unsqueeze(1) + torch.arange(lo, hi + 1, device=cols.device)).clamp_(0, length - 1)
        tokens = input_ids.take(rows.unsqueeze(1) * length + span)
        ranks = self.ranks.ranks_at(tokens, span, length, self.by_position, self.options["special_positions_best"])
        best = (ranks * span.shape[1] + self.tie_order.to(ranks.device)).argmin(dim=1, keepdim=True)
        best_rank, best_position = ranks.gather(1, best).squeeze(1), span.gather(1, best).squeeze(1)
        n_centres = torch.bincount(rows, minlength=n_rows)
        half = (n_centres + 1) // 2
        n_kept = torch.where(half >= MIN_SEGMENTS_TO_SELECT, half, n_centres)
        # the best half by rank (ties by position); with the reference bugs the first half in set order
        order = set_iteration_index(rows, cols) if self.by_position else best_rank.long() * length + best_position
        kept = smallest_per_row(rows, order, n_centres, n_kept)
        return rows.index_select(0, kept), best_position.index_select(0, kept)

    def expand(self, input_ids, centres):
        rows, cols = centres.nonzero(as_tuple=True)  # row-major: sorted by row, then position
        spans = mark_spans(torch.zeros_like(centres), rows, cols, *SPAN_OFFSETS[self.k])
        mark_spans(spans, *self.kept_best_positions(input_ids, rows, cols), -PMI_HALF_WIDTH, PMI_HALF_WIDTH)
        return spans & maskable_positions(input_ids)


@register("global_pmi")
class GlobalPmi(PmiStrategy):
    """Global-PMI: n = number of Bernoulli(p) centres per sequence; the centres are discarded and the
    11-spans around the n best-ranked positions of the sequence are masked."""

    DEFAULTS = {"centre_probability": 0.0176, "reproduce_reference_bugs": False}

    def best_positions(self, input_ids: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
        """Bool (B, L): the best-ranked maskable positions, as many per row as the row has centres."""
        return smallest_k(self.ranks.keys(input_ids, self.by_position), row_counts(centres))

    def expand(self, input_ids, centres):
        spans = dilate(self.best_positions(input_ids, centres), -PMI_HALF_WIDTH, PMI_HALF_WIDTH)
        return spans & maskable_positions(input_ids)


@register("cm_gems")
class CmGems(Strategy):
    """CM-GEMS: GeneMask masking until the smallest absolute difference between consecutive validation
    perplexities seen so far falls below `threshold`, then Global-PMI for good (from the step after
    the validation that decided it).

    The phases' centre probabilities: `genemask_probability` (0.0176, hard-coded in the released
    GeneMask phase) and `global_probability`, the Global-PMI phase's. The released code draws that
    phase's centres with `args.mlm_probability`, which no released command sets: its argparse default,
    0.15, masks the 11-spans around 15% of the positions (with the released position ranking, 58% of
    the tokens of random 506-token sequences, against 14% at 0.0176); 0.0176, the default here, is the
    reading that the phase masks about as much as GeneMask's (the released code's comment on that
    branch names 0.15 / 8.5 = 0.0176, and GeneMask's Script-A passes --mlm_probability 0.0176)."""

    USES_RANKS = True
    DEFAULTS = {
        "threshold": 1.0,
        "genemask_probability": 0.0176,
        "global_probability": 0.0176,
        "reproduce_reference_bugs": False,
    }

    def __init__(self, k, vocab_size, ranks=None, options=None, max_steps=0):
        super().__init__(k, vocab_size, ranks, options, max_steps)
        o, bugs = self.options, self.options["reproduce_reference_bugs"]
        self.threshold = o["threshold"]
        self.easy = GeneMask(k, vocab_size, ranks, dict(centre_probability=o["genemask_probability"], reproduce_reference_bugs=bugs))
        self.hard = GlobalPmi(k, vocab_size, ranks, dict(centre_probability=o["global_probability"], reproduce_reference_bugs=bugs))
        self.perplexities: list[float] = []

    def current(self, step: int) -> Strategy:
        return self.hard if self.switch_step is not None and step > self.switch_step else self.easy

    def choose(self, input_ids, step, draws):
        return self.current(step).choose(input_ids, step, draws)

    def phase(self, step):
        return self.current(step).name

    def observe_validation(self, step: int, perplexity: float) -> None:
        self.perplexities.append(float(perplexity))
        if self.switch_step is None and len(self.perplexities) >= 2:
            if float(np.abs(np.diff(self.perplexities)).min()) < self.threshold:
                self.switch_step = int(step)

    def state_dict(self) -> dict:
        return {**super().state_dict(), "perplexities": list(self.perplexities)}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.perplexities = [float(p) for p in state["perplexities"]]


@register("cm_step")
class CmStep(Strategy):
    """CM-STEP: at step t (1..max_steps), each sequence is masked with Global-PMI with probability
    (t - 1) / max_steps (rising linearly from 0 to 1), otherwise with DNABERT span masking. The
    released code draws once per batch; per sequence, the choice does not depend on how a step is
    split into batches."""

    USES_RANKS = True
    DEFAULTS = {"global_probability": 0.0136, "dnabert_probability": 0.025, "reproduce_reference_bugs": False}

    def __init__(self, k, vocab_size, ranks=None, options=None, max_steps=0):
        super().__init__(k, vocab_size, ranks, options, max_steps)
        if max_steps <= 0:
            raise CmgemsError(f"masking {self.name!r} needs max_steps > 0, got {max_steps}")
        o = self.options
        self.max_steps = max_steps
        self.easy = DnabertSpans(k, vocab_size, options=dict(centre_probability=o["dnabert_probability"]))
        self.hard = GlobalPmi(
            k, vocab_size, ranks,
            dict(centre_probability=o["global_probability"], reproduce_reference_bugs=o["reproduce_reference_bugs"]),
        )

    def hard_probability(self, step: int) -> float:
        return min(max((step - 1) / self.max_steps, 0.0), 1.0)

    def hard_rows(self, step: int, draws: Draws) -> torch.Tensor:
        """Bool (B,): the rows masked with Global-PMI at `step`."""
        return draws.row_bernoulli(STREAM_CHOICE, self.hard_probability(step))

    def choose(self, input_ids, step, draws):
        # both on every row (no host sync on which rows are which); each row keeps one
        hard, easy = self.hard.choose(input_ids, step, draws), self.easy.choose(input_ids, step, draws)
        return torch.where(self.hard_rows(step, draws).unsqueeze(1), hard, easy)

    def phase(self, step):
        return f"{self.hard.name} p={self.hard_probability(step):.2f}"


def resolve_options(name: str, defaults: dict[str, Any], options: dict[str, Any] | None) -> dict[str, Any]:
    """Defaults overridden by `options`; unknown keys and bad values raise CmgemsError."""
    options = dict(options or {})
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise CmgemsError(f"masking {name!r}: unknown option {unknown[0]!r}; known: {sorted(defaults)}")
    resolved = {**defaults, **options}
    for key, value in resolved.items():
        if isinstance(defaults[key], bool):
            if not isinstance(value, bool):
                raise CmgemsError(f"masking {name!r}: option {key!r} must be true or false, got {value!r}")
        elif not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            raise CmgemsError(f"masking {name!r}: option {key!r} must be a number, got {value!r}")
        elif key.endswith("probability") and not 0.0 <= value <= 1.0:
            raise CmgemsError(f"masking {name!r}: option {key!r} must be in [0, 1], got {value!r}")
        elif value < 0:
            raise CmgemsError(f"masking {name!r}: option {key!r} must be >= 0, got {value!r}")
    return resolved


def check_options(name: str, options: dict | None) -> dict[str, Any]:
    """`options` of strategy `name` resolved against its defaults (CmgemsError naming a bad key)."""
    cls = strategy_class(name)
    return resolve_options(name, cls.DEFAULTS, options)


def build(
    name: str,
    k: int = 6,
    vocab_size: int | None = None,
    token_ranks=None,
    max_steps: int = 10_000,
    options: dict | None = None,
) -> Strategy:
    """The strategy or curriculum `name`; `token_ranks` (vocab_size,) (array or tensor, any device)
    is required when `needs_ranks(name)`; `options` are the strategy's optional parameters (unknown
    keys raise)."""
    cls = strategy_class(name)
    vocab_size = vocab_size or kmers.vocab_size(kmers.check_k(k))
    if vocab_size != kmers.vocab_size(kmers.check_k(k)):
        raise CmgemsError(f"masking: vocab_size {vocab_size} does not match k={k} ({kmers.vocab_size(k)})")
    if cls.USES_RANKS and token_ranks is None:
        raise CmgemsError(f"masking strategy {name!r} needs PMI ranks (token_ranks)")
    ranks = RankTable(token_ranks, vocab_size) if cls.USES_RANKS else None
    return cls(k, vocab_size, ranks, options, max_steps)
