"""Pretraining batches: which sequences each process trains on at each step, and the collator that
encodes and masks them, run in DataLoader worker processes so that reading, encoding and masking
overlap the training step.

Step t (1-based) trains on global sequence positions (t - 1) * S .. t * S - 1 (S = sequences per
step); position g is training row `corpus.training_rows(g)`. The step's sequences, sorted by length,
are cut into micro-batches of at most `micro_batch` (so a micro-batch is padded little, and one of
full-length chunks not at all), dealt to the W ranks in turn, in shares that differ by at most one
sequence where W does not divide S (StepLayout). Masks are drawn from (seed, g). So the
sequences and masks of a step are the same at any world size, on any device and after a resume, and
since the loss is normalised over the whole step, so is the gradient (up to summation order).
"""

from __future__ import annotations

import functools
import signal
from dataclasses import dataclass

import numpy as np
import torch

from cmgems import kmers, masking
from cmgems.corpus import TrainingSequences, training_rows
from cmgems.errors import CmgemsError


@dataclass(frozen=True)
class StepLayout:
    """How one optimizer step of `sequences_per_step` (S) is split over W processes, each in
    micro-batches of at most `micro_batch` (B) sequences.

    Rank r trains on S // W sequences, one more when r < S % W (250 over 8 processes: 32 or 31), in
    ceil(share / B) micro-batches of near-equal sizes (32 with B = 10: 8, 8, 8, 8). Where B x W divides
    S, every micro-batch holds B sequences. Since the loss is normalised over the whole step, the
    gradient does not depend on the split."""

    sequences_per_step: int
    micro_batch: int
    world_size: int = 1
    rank: int = 0

    def __post_init__(self):
        if self.micro_batch < 1:
            raise CmgemsError(f"the micro-batch (batch_size) must be >= 1, got {self.micro_batch}")
        if self.sequences_per_step < self.world_size:
            raise CmgemsError(
                f"sequences_per_step {self.sequences_per_step} is fewer than the {self.world_size} processes: "
                "every process needs at least one sequence per step; use fewer processes"
            )

    def share(self, rank: int) -> int:
        """Sequences of `rank` per step."""
        return self.sequences_per_step // self.world_size + (rank < self.sequences_per_step % self.world_size)

    def sizes(self, rank: int) -> list[int]:
        """Sizes of `rank`'s micro-batches, largest first."""
        share = self.share(rank)
        n = -(-share // self.micro_batch)
        q, extra = divmod(share, n)
        return [q + 1] * extra + [q] * (n - extra)

    @property
    def accumulation(self) -> int:
        """Micro-batches of this rank per step (ranks' counts differ by at most one)."""
        return len(self.sizes(self.rank))

    @property
    def sequences(self) -> int:
        """Sequences of this rank per step."""
        return self.share(self.rank)

    @functools.cached_property
    def _cuts(self) -> list[tuple[int, int]]:
        """(start, end) of this rank's micro-batches in the step's length order: micro-batch j of every
        rank in rank order, then j + 1, ... (each rank a share of short and long sequences)."""
        sizes = [self.sizes(r) for r in range(self.world_size)]
        cuts, start = [], 0
        for j in range(max(map(len, sizes))):
            for r in range(self.world_size):
                if j < len(sizes[r]):
                    if r == self.rank:
                        cuts.append((start, start + sizes[r][j]))
                    start += sizes[r][j]
        return cuts

    def micro_batches(self, step: int, lengths: np.ndarray) -> list[np.ndarray]:
        """Global sequence positions (int64 arrays) of this rank's micro-batches of `step`, given the
        lengths (S,) of the step's sequences in position order: sorted by length (ties by position) and
        cut as `_cuts` says, so that a micro-batch is padded little."""
        positions = np.arange((step - 1) * self.sequences_per_step, step * self.sequences_per_step, dtype=np.int64)
        ordered = positions[np.argsort(lengths, kind="stable")]
        return [ordered[a:b] for a, b in self._cuts]


def mask_ids(ids: torch.Tensor, positions: np.ndarray, strategy: masking.Strategy, step: int, seed: int) -> dict:
    """A masked-LM micro-batch from token ids (B, L) of the sequences at global positions `positions`
    (int64 (B,)): {"input_ids": int64 (B, L) corrupted ids, "masked_positions": int64 (N,) flat indices
    into (B * L) of the masked tokens, "masked_ids": int64 (N,) their original ids, "padded": whether
    any row is padded (bool: without padding the model needs no attention mask)}. Masks come from
    `strategy` at `step`, with draws keyed by (seed, positions)."""
    inputs, labels = strategy(ids, step=step, draws=masking.Draws(seed, torch.from_numpy(positions)))
    flat = labels.view(-1)
    where = flat.ne(masking.IGNORE_INDEX).nonzero().squeeze(1)
    return {"input_ids": inputs, "masked_positions": where, "masked_ids": flat.index_select(0, where),
            "padded": bool(ids.eq(kmers.PAD_ID).any())}


def masked_lm_batch(sequences: list, positions: np.ndarray, strategy: masking.Strategy, step: int, seed: int,
                    k: int, max_positions: int) -> dict:
    """The collator: sequences (bytes or uint8 arrays) -> `mask_ids` of their [CLS] k-mers [SEP] ids,
    right-padded to the longest (truncated to max_positions)."""
    return mask_ids(torch.from_numpy(kmers.encode_batch(sequences, k, max_positions)), positions, strategy, step, seed)


class MaskedSteps(torch.utils.data.Dataset):
    """Item i: this rank's masked micro-batches of step first_step + i, as
    {"step", "phase" (the strategy's phase the masks were drawn in), "micro": [masked_lm_batch...],
    "masked": int64 (1,) masked tokens of the step (a tensor, so that it reaches the device without a
    sync), "masked_count", "tokens", "squared_lengths" (sum of each sequence's tokens squared, for the
    attention FLOPs)}. Worker processes hold a copy of the strategy made
    when the loader starts: a curriculum's later switch does not reach them (the trainer compares
    "phase" and starts a new loader)."""

    def __init__(self, corpus: TrainingSequences, layout: StepLayout, strategy: masking.Strategy, seed: int,
                 k: int, max_positions: int, first_step: int, last_step: int):
        self.corpus, self.layout, self.strategy = corpus, layout, strategy
        self.seed, self.k, self.max_positions = seed, k, max_positions
        self.first_step, self.last_step = first_step, last_step
        self._orders: dict[int, np.ndarray] = {}  # epoch -> permutation, per process

    def __len__(self) -> int:
        return max(0, self.last_step - self.first_step + 1)

    def micro_positions(self, step: int) -> list[np.ndarray]:
        """Global sequence positions of this rank's micro-batches of `step` (StepLayout.micro_batches)."""
        first = (step - 1) * self.layout.sequences_per_step
        rows = training_rows(np.arange(first, first + self.layout.sequences_per_step), len(self.corpus), self.seed,
                             self._orders)
        return self.layout.micro_batches(step, self.corpus.lengths(rows))

    def __getitem__(self, i: int) -> dict:
        step = self.first_step + i
        micro = []
        for positions in self.micro_positions(step):
            rows = training_rows(positions, len(self.corpus), self.seed, self._orders)
            micro.append(masked_lm_batch(self.corpus.get(rows), positions, self.strategy, step, self.seed,
                                         self.k, self.max_positions))
        masked = sum(len(m["masked_ids"]) for m in micro)
        lengths = torch.cat([m["input_ids"].ne(kmers.PAD_ID).sum(1) for m in micro])
        return {"step": step, "phase": self.strategy.phase(step), "micro": micro, "masked": torch.tensor([masked]),
                "masked_count": masked, "tokens": int(lengths.sum()), "squared_lengths": int((lengths ** 2).sum())}


# Stop signals are the training process's to handle: a cluster sends them to every process of a job
# (SLURM's --signal, scancel, preemption; torchrun forwards to each rank's process group), and a worker
# killed by one would crash the trainer before it can checkpoint.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)


def _worker_init(_worker: int) -> None:
    """A data worker: one thread; the stop signals ignored (they arrive blocked, see `start_workers`)."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    torch.set_num_threads(1)


def loader(dataset: MaskedSteps, workers: int, pin_memory: bool) -> torch.utils.data.DataLoader:
    """Steps in order, built by `workers` processes (0: in this process), prefetched 4 per worker.
    Iterate it with `start_workers`."""
    return torch.utils.data.DataLoader(
        dataset, batch_size=None, shuffle=False, num_workers=workers, pin_memory=pin_memory,
        prefetch_factor=4 if workers else None, worker_init_fn=_worker_init if workers else None,
    )


def start_workers(data: torch.utils.data.DataLoader):
    """`iter(data)` with the stop signals blocked while its workers start: a worker inherits the block
    and ignores them before unblocking, so a signal to the whole process group at any instant reaches
    only this process (where it stays pending until the block ends, then runs its handler)."""
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        return iter(data)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
