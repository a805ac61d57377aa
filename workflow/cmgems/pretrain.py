"""Masked-language-model pretraining of a BERT on the k-mer corpus, with any masking strategy.

One script for 1 CPU, 1 GPU and `torchrun` with N GPUs or nodes (DDP). `train` reads top to bottom:
build the run, resume it, then per step: train, log, validate, checkpoint, stop if asked; then save
the model.

The experiment does not depend on how it is run. A step is `sequences_per_step` sequences (micro-batch
x accumulation x processes, the accumulation derived); the loss is normalised by all masked tokens of
the step, so the gradient does not depend on how the step is split; the sequences of a step and
their masks depend only on (seed, global sequence position) (cmgems.batches). Resumed on the same
number of processes, a run ends with the weights of an uninterrupted one; on another, the same up
to floating-point summation order (and dropout streams, which are per process).
`reproduce_reference_bugs` trains as the released code instead: no attention mask (padding is attended,
in training and validation) and the mean of micro-batch means as the loss (`loss_scales`).

Stopping: SIGTERM, SIGUSR1 or SIGINT to any process asks every process to stop; they agree at the
end of the step, checkpoint that step, and exit with 128 + the signal, which Snakemake retries.
A checkpoint holds the metrics rows so far and the log interval begun (`Meter`), so a resumed run
logs the rows of an uninterrupted one, whatever became of metrics.running.csv.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import hashlib
import json
import logging
import math
import os
import signal
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm
from transformers import get_linear_schedule_with_warmup

from cmgems import distributed, flops, kmers, masking, models, pmi
from cmgems.atomic import atomic_output, open_unfollowed, write_json
from cmgems.batches import STOP_SIGNALS, MaskedSteps, StepLayout, loader, mask_ids, start_workers
from cmgems.checkpoint import Checkpoints, RunLock, check_same_run
from cmgems.cli import add_settings, option
from cmgems.corpus import TrainingSequences, validation_sample
from cmgems.distributed import Dist
from cmgems.errors import CmgemsError
from cmgems.layout import CHECKPOINTS, CURVES, MODEL_FOLDER, SUMMARY

log = logging.getLogger(__name__)

METRIC_FIELDS = ["step", "loss", "lr", "masked_acc", "val_loss", "val_ppl", "val_masked_acc", "ref_val_loss",
                 "ref_val_ppl", "phase", "tokens_per_s", "mfu"]
# The reference masking every run is also validated with (random 15%, the same masks in every run), so
# that curves of different strategies compare: each strategy's own validation masks differ in difficulty.
REFERENCE_MASKING, REFERENCE_SEED = "random", 0
EVAL_SEED_OFFSET = 1  # validation masks of the run's own strategy: seed + 1 (training uses seed)


@dataclass
class Settings:
    """Everything a run depends on; defaults are GeneMask's recipe (250 sequences per step). The
    command line's options are these fields (`cli.option`: default and help)."""

    corpus: str = option(help="corpus directory (train.arrow and validation/ shards)")
    out: str = option(help="run directory")
    model: str = option("dnabert6", help=f"architecture: {', '.join(models.ARCHITECTURES)}")
    masking: str = option("genemask", help="masking strategy or curriculum name")
    masking_options: dict = option(factory=dict, help="JSON object of strategy options")
    pmi: str | None = option(None, help="pmi.parquet (for PMI-guided strategies)")
    ranking: str | None = option(None, help="a published PMI ranking (GeneMask's Data-A CSV): the ranks come from it "
                                            "instead of --pmi")
    tokenizer: str | None = option(None, help="tokenizer directory copied into saved models")
    init_from: str | None = option(None, help="continue pretraining from a local HF checkpoint")
    k: int = option(6, help="k-mer length (3-6)")
    max_positions: int = option(512, help="model positions: tokens per sequence, [CLS] and [SEP] included")
    max_steps: int = option(10000, help="optimizer steps")
    sequences_per_step: int = option(250, help="sequences per optimizer step, at any process count")
    batch_size: int = option(10, help="micro-batch: sequences per process per forward/backward pass")
    lr: float = option(8e-4, help="peak learning rate")
    warmup_steps: int = option(500, help="steps of linear warmup (then linear decay to 0)")
    weight_decay: float = option(0.01, help="AdamW weight decay (not on biases and LayerNorm)")
    betas: tuple[float, float] = option((0.9, 0.98), help="AdamW betas")
    eps: float = option(1e-6, help="AdamW epsilon")
    clip: float = option(1.0, help="gradient clipping (global norm)")
    eval_every: int = option(0, help="validate every N steps (0: max_steps // 20) and at the end")
    eval_sequences: int = option(2000, help="validation sample: sequences")
    eval_batch_means: int = option(0, help="validation perplexity over all masked tokens (0) or as the mean of the "
                                           "means of batches of N sequences (the released code: 6)")
    reproduce_reference_bugs: bool = option(False, help="as the released pretraining code: attend to padding (no "
                                                        "attention mask) and minimise the mean of micro-batch means")
    log_every: int = option(10, help="a metrics row every N steps")
    save_every: int = option(1000, help="a checkpoint every N steps")
    keep_checkpoints: int = option(2, help="checkpoints kept")
    milestones: list[int] = option(factory=list, help="extra steps to save a model at")
    seed: int = option(12345, help="seed of the weights, the data order, the masks and dropout")
    threads: int = option(0, help="torch threads of each process (0: torch's default)")
    workers: int = option(-1, help="data-loader processes per training process (-1: from the CPUs available)")
    compile: str = option("", nargs="?", const="inductor", metavar="BACKEND",
                          help="torch.compile the training step (default backend: inductor; none: eager PyTorch)")
    gpus: int = option(0, help="GPUs the job requested (config resources.gpu): none visible is an error")
    peak_tflops: float = option(0.0, help="per-device peak TFLOP/s for MFU (0: from the GPU's name, cmgems.flops)")
    meta: dict = option(factory=dict, help="JSON object copied into summary.json")

    @property
    def eval_interval(self) -> int:
        return self.eval_every or max(1, self.max_steps // 20)


# Settings that do not change the experiment: a run may be resumed with other values of these.
RUNTIME_SETTINGS = {"corpus", "out", "pmi", "ranking", "tokenizer", "batch_size", "log_every", "save_every", "keep_checkpoints",
                    "milestones", "threads", "workers", "compile", "gpus", "peak_tflops", "meta"}


# ------------------------------------------------------------------------------------ the objective
class MaskedLMObjective(torch.nn.Module):
    """BertForMaskedLM's loss with the vocabulary head applied to the masked positions only.

    Same loss as `model(..., labels=labels).loss` (summed, not averaged), without (B, L, V) logits:
    the head runs on the ~15% of positions that carry a label, given as flat indices, so that no
    step depends on data-dependent shapes (a host sync on GPUs). Wrap this module in DDP.
    Returns (summed cross-entropy, number predicted correctly), both 0-d device tensors.
    `attend_padding`: no attention mask even in padded batches, as the released code (its training and
    evaluation call the model without one), so that every position attends to the [PAD]s too.
    """

    def __init__(self, model, attend_padding: bool = False):
        super().__init__()
        self.model, self.attend_padding = model, attend_padding

    def forward(self, input_ids: torch.Tensor, masked_positions: torch.Tensor, masked_ids: torch.Tensor,
                padded: bool = True):
        # no padding: no mask (SDPA may use its fastest kernels); else a 4D mask, which transformers
        # passes to SDPA as is (it inspects a 2D one on the host)
        masks = padded and not self.attend_padding
        attention = input_ids.ne(kmers.PAD_ID)[:, None, None, :] if masks else None
        hidden = self.model.bert(input_ids=input_ids, attention_mask=attention).last_hidden_state
        logits = self.model.cls(hidden.flatten(0, 1).index_select(0, masked_positions)).float()
        loss = torch.nn.functional.cross_entropy(logits, masked_ids, reduction="sum")
        return loss, (logits.argmax(-1) == masked_ids).sum()


class Meter:
    """Training metrics of the current log interval: sums on the device (read once, at the log), counts
    and the clock on the host. Time spent `paused` (checkpoints, saved models) is not training time.
    A checkpoint saves the interval so far (`read`), so that the row logged after a resume sums the
    same steps as an uninterrupted run's."""

    def __init__(self, device: torch.device):
        self.device = device
        self.reset()

    def reset(self, window: dict | None = None) -> None:
        """Start an interval: empty, or continuing a saved one (`read`'s global sums, on one process)."""
        window = window or {"loss_sum": 0.0, "correct": 0, "masked": 0, "tokens": 0, "squared_lengths": 0, "seconds": 0.0}
        self.loss = torch.tensor(window["loss_sum"], dtype=torch.float64, device=self.device)
        self.correct = torch.tensor(int(window["correct"]), dtype=torch.int64, device=self.device)
        self.masked, self.tokens, self.squared_lengths = (int(window[k]) for k in ("masked", "tokens", "squared_lengths"))
        self.started, self.excluded = time.perf_counter() - window["seconds"], 0.0

    @contextlib.contextmanager
    def paused(self):
        distributed.synchronize(self.device)  # what was queued before belongs to training
        started = time.perf_counter()
        yield
        self.excluded += time.perf_counter() - started

    def read(self, dist: Dist) -> dict:
        """Global sums over the interval (one all-reduce, one host sync) and its training seconds."""
        host = torch.tensor([self.masked, self.tokens, self.squared_lengths], dtype=torch.float64).to(self.device)
        totals = distributed.sum_across(torch.cat([self.loss.view(1), self.correct.double().view(1), host]), dist)
        loss, correct, masked, tokens, squared_lengths = distributed.host_read(totals)
        return {"loss_sum": loss, "correct": correct, "masked": masked, "tokens": tokens,
                "squared_lengths": squared_lengths, "seconds": time.perf_counter() - self.started - self.excluded}


# ----------------------------------------------------------------------------------------- the run
@dataclass
class Run:
    """The state of a run that the steps below share."""

    s: Settings
    dist: Dist
    model: torch.nn.Module
    objective: MaskedLMObjective
    trainer: torch.nn.Module  # the objective as trained: DDP-wrapped and/or compiled
    optimizer: torch.optim.Optimizer
    scheduler: object
    strategy: masking.Strategy
    reference: masking.Strategy
    corpus: TrainingSequences
    layout: StepLayout
    validation: list[tuple[np.ndarray, torch.Tensor]]  # this process's (sample positions, ids (B, L)) batches
    identity: dict
    checkpoints: Checkpoints
    peak: float | None  # per-device peak TFLOP/s, for MFU
    step: int = 0
    totals: dict = field(default_factory=lambda: {"tokens": 0.0, "train_seconds": 0.0, "flops": 0.0})
    meter: Meter | None = None
    rows: list[dict] = field(default_factory=list)  # the metrics rows so far (saved in checkpoints)
    window: dict | None = None  # the log interval the checkpoint resumed from had begun (main process)


def token_ranks(s: Settings) -> torch.Tensor | None:
    """The PMI rank of every token id (CPU), for strategies that use them: from the published ranking
    when one is given, else from the PMI table."""
    if not masking.needs_ranks(s.masking):
        return None
    if s.ranking:
        return torch.from_numpy(pmi.published_token_ranks(s.ranking, s.k))
    if not s.pmi:
        raise CmgemsError(f"masking {s.masking!r} needs a PMI table: pass --pmi (or a published ranking: --ranking)")
    return torch.from_numpy(pmi.token_ranks(s.pmi, s.k))


def run_identity(s: Settings, corpus: TrainingSequences, ranks: torch.Tensor | None) -> dict:
    """The settings that define the experiment, with digests of its data in place of paths."""
    identity = {k: v for k, v in asdict(s).items() if k not in RUNTIME_SETTINGS}
    identity["corpus_digest"] = corpus.digest
    identity["pmi_ranks_digest"] = None if ranks is None else hashlib.sha256(ranks.numpy().astype("<i8").tobytes()).hexdigest()
    return identity


def data_workers(s: Settings) -> int:
    """Data-loader processes per training process: its share of the CPUs less one, 1..4 (or as set)."""
    if s.workers >= 0:
        return s.workers
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return max(1, min(4, len(os.sched_getaffinity(0)) // local - 1))


def dropout_seed(seed: int, rank: int, step: int) -> int:
    """The torch seed of process `rank` from `step` on: dropout masks differ between processes."""
    return int(np.random.SeedSequence([seed, rank, step]).generate_state(1)[0])


def check_settings(s: Settings) -> None:
    """CmgemsError naming the option for values that would fail deep inside torch or numpy (or, with
    --max-steps 0, train nothing)."""
    if s.max_steps < 1 or s.log_every < 1 or s.save_every < 1:
        raise CmgemsError("--max-steps, --log-every and --save-every must be >= 1")
    if s.eval_batch_means < 0:
        raise CmgemsError(f"--eval-batch-means must be >= 0, got {s.eval_batch_means}")
    if len(s.betas) != 2 or not all(0 <= b < 1 for b in s.betas):
        raise CmgemsError(f"--betas must be two numbers in [0, 1) (AdamW's decay rates), got {list(s.betas)}")
    if not 0 <= s.seed < 2**63:
        raise CmgemsError(f"--seed must be in [0, 2^63), got {s.seed}")
    if s.init_from is not None:
        vocab = kmers.vocab_size(kmers.check_k(s.k))
        models.check_init(Path(s.init_from), models.bert_config(s.model, vocab, s.max_positions))


def build(s: Settings, dist: Dist) -> Run:
    """Data, masking, model, optimiser and schedule of a fresh run (weights from the seed or init_from)."""
    vocab = kmers.vocab_size(kmers.check_k(s.k))
    check_settings(s)  # (train checks first, before the run folder is made)
    layout = StepLayout(s.sequences_per_step, s.batch_size, dist.world_size, dist.rank)
    corpus = TrainingSequences(s.corpus)
    ranks = token_ranks(s)
    strategy = masking.build(s.masking, k=s.k, vocab_size=vocab, token_ranks=ranks, max_steps=s.max_steps,
                             options=s.masking_options)
    reference = masking.build(REFERENCE_MASKING, k=s.k, vocab_size=vocab)
    sample = validation_sample(s.corpus, s.eval_sequences, s.seed)
    validation = [(part, torch.from_numpy(kmers.encode_batch([sample[i] for i in part], s.k, s.max_positions)))
                  for part in validation_batches(len(sample), s.eval_batch_means or s.batch_size, dist)]

    torch.manual_seed(s.seed)  # the same initial weights in every process
    model = models.masked_lm(models.bert_config(s.model, vocab, s.max_positions), s.init_from).to(dist.device)
    torch.manual_seed(dropout_seed(s.seed, dist.rank, 0))
    objective = trainer = MaskedLMObjective(model, attend_padding=s.reproduce_reference_bugs)
    if dist.world_size > 1:
        trainer = torch.nn.parallel.DistributedDataParallel(
            objective, device_ids=[dist.local_rank] if dist.device.type == "cuda" else None,
            forward_sync_buffers=False)  # (was broadcast_buffers=False): BERT's buffers are constants
    if s.compile:
        trainer = torch.compile(trainer, backend=s.compile, dynamic=True)
    optimizer = torch.optim.AdamW(models.parameter_groups(model, s.weight_decay), lr=s.lr, betas=tuple(s.betas),
                                  eps=s.eps, fused=dist.device.type == "cuda")
    scheduler = get_linear_schedule_with_warmup(optimizer, s.warmup_steps, s.max_steps)
    peak = s.peak_tflops or (flops.peak_tflops(torch.cuda.get_device_name(dist.device))
                             if dist.device.type == "cuda" else None)
    return Run(s, dist, model, objective, trainer, optimizer, scheduler, strategy, reference, corpus, layout,
               validation, run_identity(s, corpus, ranks), Checkpoints(Path(s.out) / CHECKPOINTS, s.keep_checkpoints),
               peak, meter=Meter(dist.device))


def validation_batches(n: int, size: int, dist: Dist) -> list[np.ndarray]:
    """This process's validation batches (int64 arrays of sample positions): 0..n-1 cut into
    consecutive batches of `size` >= 1, batch j going to process j mod world_size. The batches do not
    depend on the process count, so neither does a mean of batch means."""
    return [np.arange(a, min(a + size, n)) for a in range(0, n, size)][dist.rank :: dist.world_size]


def resume(run: Run) -> None:
    """Continue from the newest readable checkpoint, if any, once it is shown to be this experiment."""
    found = run.checkpoints.load()
    if found is None:
        return
    state, where = found
    check_same_run(json.loads(state["identity"]), run.identity, run.checkpoints.directory)
    if "rows" not in state:
        raise CmgemsError(f"{where} was written by an older cmgems, without the run's metrics rows; "
                          f"delete {run.checkpoints.directory} to start the run over")
    run.model.load_state_dict(state["model"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    run.strategy.load_state_dict(json.loads(state["strategy"]))
    run.step, run.totals = int(state["step"]), dict(state["totals"])
    run.rows = [dict(row) for row in state["rows"]]
    run.window = dict(state["window"]) if run.dist.main else None  # the global sums, counted once
    if state["world_size"] == run.dist.world_size:
        own = state["rng"][run.dist.rank]
        torch.set_rng_state(own["torch"])
        if "cuda" in own and run.dist.device.type == "cuda":
            torch.cuda.set_rng_state(own["cuda"], run.dist.device)
    else:
        torch.manual_seed(dropout_seed(run.s.seed, run.dist.rank, run.step))
        if run.dist.main:
            log.warning("a run of %d processes resumed on %d: the same data and masks, new dropout streams",
                        state["world_size"], run.dist.world_size)
    if run.dist.main:
        log.info("resumed from %s at step %d", where, run.step)


class Batches:
    """The masked steps after run.step, from data-loader worker processes. The workers copy the
    strategy when they start: when a curriculum has switched since, a step's masks show another
    phase than the strategy's, and the loader is started again from that step."""

    def __init__(self, run: Run):
        self.run, self._steps = run, None

    def _start(self):
        r, s = self.run, self.run.s
        dataset = MaskedSteps(r.corpus, r.layout, r.strategy, s.seed, s.k, s.max_positions, r.step + 1, s.max_steps)
        return start_workers(loader(dataset, data_workers(s), pin_memory=r.dist.device.type == "cuda"))

    def next(self) -> dict:
        if self._steps is None:
            self._steps = self._start()
        batch = next(self._steps)
        wanted = self.run.strategy.phase(self.run.step + 1)
        if batch["phase"] != wanted:
            log.info("step %d: restarting the data loader for %s masks", self.run.step + 1, wanted)
            self.close()
            self._steps = self._start()
            batch = next(self._steps)
        return batch

    def close(self) -> None:
        """Stop the worker processes (the loader's iterator shuts them down when it is released)."""
        self._steps = None


def loss_scales(run: Run, batch: dict) -> list:
    """The factor of each micro-batch's summed loss (`batch["micro"]` of this process) in the step's
    objective, times the world size (DDP averages gradients over processes): 1 / the masked tokens of
    the whole step (the mean over them), or with `reproduce_reference_bugs` 1 / (the micro-batch's own
    masked tokens x the micro-batches of the step over all processes): the mean of micro-batch means,
    as the released code (each micro-batch's mean loss / gradient_accumulation_steps; a micro-batch
    without a masked token adds 0 where the released code would add NaN). No host sync."""
    dist = run.dist
    if run.s.reproduce_reference_bugs:
        micro_batches = sum(len(run.layout.sizes(rank)) for rank in range(dist.world_size))
        return [dist.world_size / (micro_batches * max(len(mb["masked_ids"]), 1)) for mb in batch["micro"]]
    masked = distributed.sum_across(batch["masked"].to(dist.device, non_blocking=True), dist)  # the whole step's
    return [(dist.world_size / masked.clamp(min=1).double()).float().squeeze(0)] * len(batch["micro"])


def accumulate_gradients(run: Run, batch: dict) -> None:
    """Forward and backward of this process's micro-batches of a step: the step's gradient in `.grad`."""
    device, dist = run.dist.device, run.dist
    micro = batch["micro"]
    for i, (mb, scale) in enumerate(zip(micro, loss_scales(run, batch))):
        ids, positions, targets = (mb[key].to(device, non_blocking=True)
                                   for key in ("input_ids", "masked_positions", "masked_ids"))
        syncs = i == len(micro) - 1 or dist.world_size == 1
        with (contextlib.nullcontext() if syncs else run.trainer.no_sync()), models.autocast(device):
            loss, correct = run.trainer(ids, positions, targets, padded=mb["padded"])
        (loss * scale).backward()
        run.meter.loss += loss.detach()
        run.meter.correct += correct


def train_step(run: Run, batch: dict) -> None:
    """One optimizer step on this process's micro-batches of the step; no host sync."""
    accumulate_gradients(run, batch)
    torch.nn.utils.clip_grad_norm_(run.model.parameters(), run.s.clip, foreach=True)
    run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    run.meter.masked += batch["masked_count"]
    run.meter.tokens += batch["tokens"]
    run.meter.squared_lengths += batch["squared_lengths"]
    run.step += 1


def interval_metrics(run: Run) -> dict:
    """The training metrics of the steps since the last log (global over processes)."""
    m = run.meter.read(run.dist)
    seconds = max(m["seconds"], 1e-9)
    work = flops.training_flops(run.model.config, m["tokens"], m["squared_lengths"], m["masked"])
    run.totals["tokens"] += m["tokens"]
    run.totals["train_seconds"] += m["seconds"]
    run.totals["flops"] += work
    return {"loss": m["loss_sum"] / max(m["masked"], 1), "masked_acc": m["correct"] / max(m["masked"], 1),
            "lr": run.scheduler.get_last_lr()[0], "phase": run.strategy.phase(run.step),
            "tokens_per_s": m["tokens"] / seconds, "mfu": flops.mfu(work / seconds, run.dist.world_size, run.peak)}


@torch.no_grad()
def evaluate(run: Run, strategy: masking.Strategy, seed: int, batch_means: bool = False) -> tuple[float, float, float]:
    """(loss, perplexity = exp(loss), masked-token accuracy) of the validation sample masked by `strategy`
    at the current step, masks drawn from (seed, sample position): the same draws in every evaluation.
    The loss (nats) is summed over all masked tokens / their count, or with `batch_means` the mean
    over the validation batches of each batch's mean (batches without a masked token left out), as the
    released evaluate() does."""
    device = run.dist.device
    run.objective.eval()
    sums = torch.zeros(3, dtype=torch.float64, device=device)  # loss, correct, sum of batch means
    masked = batches = 0  # masked tokens, batches with any
    for positions, ids in run.validation:
        batch = mask_ids(ids, positions, strategy, run.step, seed)
        with models.autocast(device):
            loss, correct = run.objective(*(batch[key].to(device) for key in ("input_ids", "masked_positions", "masked_ids")),
                                          padded=batch["padded"])
        n = len(batch["masked_ids"])
        sums += torch.stack([loss.double(), correct.double(), loss.double() / max(n, 1)])
        masked, batches = masked + n, batches + (n > 0)
    run.objective.train()
    counts = torch.tensor([masked, batches], dtype=torch.float64).to(device)
    loss_sum, correct, mean_sum, masked, batches = distributed.host_read(distributed.sum_across(torch.cat([sums, counts]), run.dist))
    loss = mean_sum / max(batches, 1) if batch_means else loss_sum / max(masked, 1)
    return loss, math.exp(min(loss, 50.0)), correct / max(masked, 1)


def validate(run: Run) -> dict:
    """Validation under the run's own strategy (which a curriculum observes; `eval_batch_means` as the
    released code) and the reference masking (always over all masked tokens: comparable across runs)."""
    loss, ppl, accuracy = evaluate(run, run.strategy, run.s.seed + EVAL_SEED_OFFSET, bool(run.s.eval_batch_means))
    ref_loss, ref_ppl, _ = evaluate(run, run.reference, REFERENCE_SEED)
    run.strategy.observe_validation(run.step, ppl)
    if run.strategy.switch_step == run.step and run.dist.main:
        log.info("step %d: curriculum %s switches to %s (validation perplexity %.3f)",
                 run.step, run.strategy.name, run.strategy.phase(run.step + 1), ppl)
    return {"val_loss": loss, "val_ppl": ppl, "val_masked_acc": accuracy, "ref_val_loss": ref_loss, "ref_val_ppl": ref_ppl}


def save_checkpoint(run: Run) -> None:
    """Every process's RNG state to the main process, which writes the checkpoint (with the metrics rows
    and the log interval so far, global); all wait for it."""
    rng = distributed.gather(rng_state(run.dist), run.dist)
    window = run.meter.read(run.dist)
    if run.dist.main:
        run.checkpoints.save(run.step, {
            "model": run.model.state_dict(), "optimizer": run.optimizer.state_dict(),
            "scheduler": run.scheduler.state_dict(), "strategy": json.dumps(run.strategy.state_dict()),
            "rng": rng, "world_size": run.dist.world_size, "step": run.step, "totals": run.totals,
            "identity": json.dumps(run.identity), "rows": run.rows, "window": window,
        })
    distributed.barrier(run.dist)


def rng_state(dist: Dist) -> dict:
    state = {"torch": torch.get_rng_state()}
    if dist.device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(dist.device)
    return state


def save_model(run: Run, path: Path) -> None:
    """A model folder (`models.save_folder`) loadable by AutoModelForMaskedLM, with the run's tokenizer."""
    models.save_folder(path, run.model, run.s.k, run.s.max_positions, run.s.tokenizer)


def write_rows(f, rows: list[dict], header: bool = False) -> None:
    """Metrics rows as CSV lines (None as an empty cell)."""
    writer = csv.DictWriter(f, METRIC_FIELDS)
    if header:
        writer.writeheader()
    writer.writerows({k: "" if row.get(k) is None else row[k] for k in METRIC_FIELDS} for row in rows)


class LogWriter:
    """What the main process writes as training goes: metrics.running.csv (the resumed checkpoint's rows,
    then a row per log; never through a link), TensorBoard scalars and a progress bar."""

    def __init__(self, run: Run):
        out = Path(run.s.out)
        self.path = out / "metrics.running.csv"
        with open_unfollowed(self.path, "w") as f:
            write_rows(f, run.rows, header=True)
        if (out / "tensorboard").is_symlink():
            raise CmgemsError(f"{out / 'tensorboard'}: is a symbolic link; cmgems writes this folder itself and does not "
                              "write through links (delete the link)")
        self.tensorboard = SummaryWriter(str(out / "tensorboard"), purge_step=run.step + 1)
        self.bar = tqdm(total=run.s.max_steps, initial=run.step, unit="step", dynamic_ncols=True,
                        mininterval=0.5 if os.isatty(2) else 30)  # a log file gets a line every 30 s

    def write(self, row: dict) -> None:
        with open_unfollowed(self.path, "a") as f:
            write_rows(f, [row])
        for key in METRIC_FIELDS[1:]:
            if isinstance(row.get(key), float):
                self.tensorboard.add_scalar(key, row[key], row["step"])
        self.bar.set_postfix(loss=f"{row['loss']:.3f}", tok_s=f"{row['tokens_per_s']:,.0f}", phase=row["phase"],
                             refresh=False)

    def close(self) -> None:
        self.bar.close()
        self.tensorboard.close()  # (both may be closed twice)


class StopRequest:
    """SIGTERM, SIGUSR1 or SIGINT ask for a stop at the end of the step. The data workers ignore them
    (`batches.start_workers`): this process decides. On a cluster a rank gets each signal twice (to
    the job step's processes, then from torchrun), so a repeat within REPEAT_S is the same request; a
    SIGINT later than that (a second Ctrl-C) interrupts at once."""

    REPEAT_S = 10.0

    def __init__(self):
        self.signum, self.first = 0, 0.0
        for sig in STOP_SIGNALS:
            signal.signal(sig, self._handle)

    def _handle(self, signum, frame) -> None:
        if not self.signum:
            self.signum, self.first = signum, time.monotonic()
        elif signum == signal.SIGINT and time.monotonic() - self.first > self.REPEAT_S:
            raise KeyboardInterrupt


@contextlib.contextmanager
def run_folder_lock(out: Path, dist: Dist):
    """Hold the run folder's lock (main process) for the run; every process fails if it is taken."""
    with contextlib.ExitStack() as stack:
        error = None
        if dist.main:
            try:
                stack.enter_context(RunLock(out))
            except CmgemsError as err:
                error = err
        if distributed.any_rank(error is not None, dist):
            raise error or CmgemsError(f"{out}: the main process could not lock the run folder")
        yield


def finish(run: Run, writer: LogWriter | None) -> dict:
    """The main process saves the model, metrics.csv (the run's rows, those of the checkpoint resumed
    from included) and summary.json; returns the summary."""
    if not run.dist.main:
        return {}
    s, out = run.s, Path(run.s.out)
    writer.close()
    save_model(run, out / MODEL_FOLDER)
    rows = run.rows
    with atomic_output(out / CURVES) as tmp, tmp.open("w", newline="") as f:
        write_rows(f, rows, header=True)
    evaluated = [r for r in rows if r.get("val_ppl") is not None]
    seconds = run.totals["train_seconds"]
    summary = {
        "kind": "pretraining", **s.meta, "model": s.model, "masking": s.masking, "steps": s.max_steps,
        "final_loss": float(rows[-1]["loss"]) if rows else None,
        "final_val_ppl": float(evaluated[-1]["val_ppl"]) if evaluated else None,
        "final_ref_val_ppl": float(evaluated[-1]["ref_val_ppl"]) if evaluated else None,
        "switch_step": run.strategy.switch_step,
        "world_size": run.dist.world_size, "micro_batch": s.batch_size,
        "accumulation": max(len(run.layout.sizes(r)) for r in range(run.dist.world_size)),
        "sequences_per_step": s.sequences_per_step,
        "device": torch.cuda.get_device_name(run.dist.device) if run.dist.device.type == "cuda" else "cpu",
        "tokens_per_s": run.totals["tokens"] / max(seconds, 1e-9), "train_seconds": seconds,
        "model_tflops_per_s": run.totals["flops"] / max(seconds, 1e-9) / 1e12, "peak_tflops": run.peak,
        "mfu": flops.mfu(run.totals["flops"] / max(seconds, 1e-9), run.dist.world_size, run.peak),
        "parameters": sum(p.numel() for p in run.model.parameters()),
        "settings": asdict(s),
    }
    write_json(out / SUMMARY, summary)
    return summary


def announce(run: Run) -> None:
    """The main process logs what the run is: its steps, how a step is split, its parameters."""
    s, dist = run.s, run.dist
    if dist.main:
        shares = sorted({run.layout.share(r) for r in range(dist.world_size)})
        log.info("%s/%s: %d steps x %d sequences (%s per process x %d processes; micro-batches: %d of at most %d), "
                 "%d parameters", s.model, s.masking, s.max_steps, s.sequences_per_step,
                 " or ".join(map(str, shares)), dist.world_size, run.layout.accumulation, s.batch_size,
                 sum(p.numel() for p in run.model.parameters()))


def log_and_validate(run: Run, writer: LogWriter | None) -> None:
    """The progress bar every step; every log_every steps a metrics row; every eval_interval steps (and
    at the end) with validation."""
    s = run.s
    if writer:
        writer.bar.update(1)
    evaluates = run.step % s.eval_interval == 0 or run.step == s.max_steps
    if evaluates or run.step % s.log_every == 0:
        row = {"step": run.step, **interval_metrics(run)}
        if evaluates:
            row.update(validate(run))
        run.rows.append(row)
        if writer:
            writer.write(row)
        run.meter.reset()


def checkpoint_or_stop(run: Run, stop: StopRequest) -> None:
    """Save milestones and checkpoints when due; when any process was asked to stop, all checkpoint
    this step and exit with 128 + the signal. Steps that save nothing do not wait for the device."""
    s, dist = run.s, run.dist
    stopping = distributed.any_rank(stop.signum != 0, dist)
    milestone = dist.main and run.step in s.milestones and run.step != s.max_steps
    checkpoint = stopping or run.step % s.save_every == 0 or run.step == s.max_steps
    if milestone or checkpoint:
        with run.meter.paused():
            if milestone:
                save_model(run, Path(s.out) / f"step-{run.step}")
            if checkpoint:
                save_checkpoint(run)
    if stopping:
        signum = max(distributed.gather(stop.signum, dist))
        if dist.main:
            log.warning("signal %d: checkpoint saved at step %d, exiting for a restart", signum, run.step)
        raise SystemExit(128 + signum)


def train(s: Settings) -> dict:
    """Run (or resume) one pretraining run; returns the summary written to `out/summary.json`."""
    check_settings(s)  # before the run folder is locked (created)
    stop = StopRequest()  # from the start: a stop signal never kills a process mid-write
    dist = distributed.setup(s.gpus)
    if s.threads:
        torch.set_num_threads(s.threads)
    try:
        with run_folder_lock(Path(s.out), dist), contextlib.ExitStack() as cleanup:
            run = build(s, dist)
            resume(run)
            batches = cleanup.enter_context(contextlib.closing(Batches(run)))
            writer = cleanup.enter_context(contextlib.closing(LogWriter(run))) if dist.main else None
            announce(run)
            run.meter.reset(run.window)
            while run.step < s.max_steps:
                train_step(run, batches.next())
                log_and_validate(run, writer)
                checkpoint_or_stop(run, stop)
            summary = finish(run, writer)
            distributed.barrier(dist)
            return summary
    finally:
        distributed.teardown(dist)


# ------------------------------------------------------------------------------------------ CLI
def configure_parser(parser: argparse.ArgumentParser) -> None:
    """The fields of `Settings` as options (`cli.add_settings`); by hand those HfArgumentParser cannot
    make: the JSON objects, the two betas, the milestones (maybe none)."""
    by_hand = ("masking_options", "betas", "milestones", "meta")
    add_settings(parser, Settings, [f.name for f in fields(Settings) if f.name not in by_hand])
    d, helps = Settings(corpus="", out=""), {f.name: f.metadata["help"] for f in fields(Settings)}
    parser.add_argument("--masking-options", type=json.loads, default=d.masking_options, help=helps["masking_options"])
    parser.add_argument("--betas", type=float, nargs=2, default=list(d.betas), help=helps["betas"])
    parser.add_argument("--milestones", type=int, nargs="*", default=d.milestones, help=helps["milestones"])
    parser.add_argument("--meta", type=json.loads, default=d.meta, help=helps["meta"])
    parser.set_defaults(func=lambda a: train(settings_from_args(a)))


def settings_from_args(args: argparse.Namespace) -> Settings:
    names = {f.name for f in fields(Settings)}
    return Settings(**{k: v for k, v in vars(args).items() if k in names})
