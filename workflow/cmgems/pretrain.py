"""Masked-language-model pretraining of a BERT on the k-mer corpus, with any masking strategy.

One script for 1 CPU, 1 GPU and `torchrun` with N GPUs or nodes (DDP). Read top to bottom:
settings -> data -> model and optimiser -> resume -> loop (mask, forward, step, log, validate,
checkpoint) -> save. Checkpoints hold everything needed for a resumed run to end with the same
weights as an uninterrupted one: model, optimiser, scheduler, RNG states, data position and the
masking curriculum's state.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import logging
import math
import os
import shutil
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch

from cmgems import kmers, masking, models
from cmgems.corpus import CorpusStream
from cmgems.atomic import atomic_output, write_json
from cmgems.errors import CmgemsError

log = logging.getLogger(__name__)

METRIC_FIELDS = ["step", "loss", "lr", "masked_acc", "val_loss", "val_ppl", "val_masked_acc", "phase", "tokens_per_s"]


@dataclass
class Settings:
    """Everything a run depends on; defaults are GeneMask's recipe (250 sequences per step)."""

    corpus: str
    out: str
    model: str = "dnabert6"
    masking: str = "genemask"
    masking_options: dict = field(default_factory=dict)
    pmi: str | None = None
    tokenizer: str | None = None
    init_from: str | None = None
    k: int = 6
    max_positions: int = 512
    max_steps: int = 10000
    batch_size: int = 10  # sequences per device per micro-batch
    grad_accum: int = 25
    lr: float = 8e-4
    warmup_steps: int = 500
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-6
    clip: float = 1.0
    eval_every: int = 0  # 0 = max_steps // 20
    eval_sequences: int = 2000
    save_every: int = 1000
    milestones: list[int] = field(default_factory=list)
    seed: int = 12345
    threads: int = 0  # 0 = leave torch's default
    meta: dict = field(default_factory=dict)

    @property
    def eval_interval(self) -> int:
        return self.eval_every or max(1, self.max_steps // 20)


# ----------------------------------------------------------------------------------------- data
def shard_paths(corpus: str | Path, split: str) -> list[Path]:
    paths = sorted(Path(corpus, split).glob("*.parquet"))
    if not paths:
        raise CmgemsError(f"no Parquet shards in {Path(corpus, split)}")
    return paths


def validation_sequences(corpus: str | Path, n: int) -> list[bytes]:
    """The fixed validation subset: the first `n` sequences of the validation split, in shard order."""
    seqs: list[bytes] = []
    for path in shard_paths(corpus, "validation"):
        for batch in pq.ParquetFile(path).iter_batches(columns=["sequence"], batch_size=4096):
            seqs += batch.column(0).to_pylist()
            if len(seqs) >= n:
                return seqs[:n]
    return seqs


# ------------------------------------------------------------------------------- distributed
@dataclass
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed() -> Dist:
    """Read torchrun's environment; one process per GPU (NCCL) or per CPU worker (gloo)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if world > 1:
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Dist(rank, world, local, device)


# ------------------------------------------------------------------------------------ training
class MaskedLMObjective(torch.nn.Module):
    """BertForMaskedLM's loss with the vocabulary head applied to the masked positions only.

    Same loss as `model(..., labels=labels).loss`, without (B, L, V) logits: the head runs on the
    ~15% of positions that carry a label. Wrap this module (not the model) in DDP.
    Returns (summed loss, number of masked tokens, number predicted correctly).
    """

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, inputs: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor):
        hidden = self.model.bert(input_ids=inputs, attention_mask=attention_mask).last_hidden_state
        chosen = labels != -100
        targets = labels[chosen]
        logits = self.model.cls(hidden[chosen]).float()
        loss = torch.nn.functional.cross_entropy(logits, targets, reduction="sum")
        return loss, targets.numel(), (logits.argmax(-1) == targets).sum()


@torch.no_grad()
def evaluate(objective, masker, batches: list[torch.Tensor], step: int, seed: int, dist: Dist) -> dict:
    """MLM loss, perplexity and masked-token accuracy on the fixed validation batches.

    Masks come from a generator seeded with `seed` every time, so evaluations differ only by the
    model (and the curriculum's phase), never by the draw.
    """
    objective.eval()
    gen = torch.Generator(device=dist.device).manual_seed(seed)
    loss_sum, correct, total = 0.0, 0, 0
    for ids in batches:
        ids = ids.to(dist.device)
        inputs, labels = masker(ids, step=step, generator=gen)
        with autocast(dist):
            loss, n, right = objective(inputs, ids.ne(kmers.PAD_ID), labels)
        loss_sum, correct, total = loss_sum + float(loss), correct + int(right), total + n
    objective.train()
    stats = torch.tensor([loss_sum, correct, total], dtype=torch.float64, device=dist.device)
    if dist.world_size > 1:
        torch.distributed.all_reduce(stats)
    loss = float(stats[0] / max(stats[2], 1))
    return {"val_loss": loss, "val_ppl": math.exp(min(loss, 50.0)), "val_masked_acc": float(stats[1] / max(stats[2], 1))}


def autocast(dist: Dist):
    """bf16 autocast on GPU; a no-op (fp32) on CPU."""
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=dist.device.type == "cuda")


def rng_states(dist: Dist) -> dict:
    states = {"torch": torch.get_rng_state()}
    if dist.device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state(dist.device)
    return states


def set_rng_states(states: dict, dist: Dist) -> None:
    torch.set_rng_state(states["torch"])
    if "cuda" in states and dist.device.type == "cuda":
        torch.cuda.set_rng_state(states["cuda"], dist.device)


def save_checkpoint(path: Path, state: dict) -> None:
    with atomic_output(path, directory=True) as tmp:
        torch.save(state, tmp / "state.pt")


def load_checkpoint(path: Path) -> dict | None:
    state_file = path / "state.pt"
    return torch.load(state_file, map_location="cpu", weights_only=True) if state_file.exists() else None


def save_model(model, tokenizer_dir: Path | None, k: int, max_positions: int, path: Path) -> None:
    """A save_pretrained directory (safetensors + config + tokenizer) loadable by AutoModelForMaskedLM."""
    with atomic_output(path, directory=True) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        if tokenizer_dir is not None:
            for item in Path(tokenizer_dir).iterdir():
                shutil.copy2(item, tmp / item.name)
        else:
            kmers.build_tokenizer(k, max_positions).save_pretrained(tmp)
            (tmp / "kmer.json").write_text(json.dumps({"k": k}) + "\n")


class MetricsLog:
    """The metrics CSV, appended as training goes; truncated to the checkpoint's step on resume."""

    def __init__(self, path: Path, resume_step: int):
        self.path = path
        rows = []
        if resume_step and path.exists():
            with path.open() as f:
                rows = [r for r in csv.DictReader(f) if int(r["step"]) <= resume_step]
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, METRIC_FIELDS)
            writer.writeheader()
            writer.writerows(rows)

    def append(self, row: dict) -> None:
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, METRIC_FIELDS).writerow({k: row.get(k, "") for k in METRIC_FIELDS})


def train(s: Settings) -> dict:
    """Run (or resume) one pretraining run; returns the summary written to `out/summary.json`."""
    dist = setup_distributed()
    if s.threads:
        torch.set_num_threads(s.threads)
    out = Path(s.out)
    work = out / "checkpoint"
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(s.seed)

    # data
    vocab = kmers.vocab_size(kmers.check_k(s.k))
    stream = CorpusStream(shard_paths(s.corpus, "train"), s.seed)
    val_seqs = validation_sequences(s.corpus, s.eval_sequences)[dist.rank :: dist.world_size]
    val_batches = [
        torch.from_numpy(kmers.encode_batch(val_seqs[i : i + s.batch_size], s.k, s.max_positions))
        for i in range(0, len(val_seqs), s.batch_size)
    ]

    # masking
    ranks = None
    if masking.needs_ranks(s.masking):
        if not s.pmi:
            raise CmgemsError(f"masking {s.masking!r} needs a PMI table: pass --pmi")
        from cmgems.pmi import token_ranks

        ranks = torch.as_tensor(token_ranks(s.pmi, s.k), device=dist.device)
    masker = masking.build(s.masking, k=s.k, vocab_size=vocab, token_ranks=ranks, max_steps=s.max_steps, options=s.masking_options)

    # model and optimiser
    model = models.masked_lm(models.bert_config(s.model, vocab, s.max_positions), s.init_from).to(dist.device)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": s.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=s.lr, betas=tuple(s.betas), eps=s.eps,
    )
    from transformers import get_linear_schedule_with_warmup

    scheduler = get_linear_schedule_with_warmup(optimizer, s.warmup_steps, s.max_steps)
    objective = MaskedLMObjective(model)
    ddp = objective
    if dist.world_size > 1:
        ddp = torch.nn.parallel.DistributedDataParallel(objective, device_ids=[dist.local_rank] if dist.device.type == "cuda" else None)
    gen = torch.Generator(device=dist.device).manual_seed(s.seed + 1 + dist.rank)

    # resume
    step, consumed = 0, 0
    state = load_checkpoint(work)
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        masker.load_state_dict(json.loads(state["masker"]))
        gen.set_state(state["generators"][dist.rank])
        set_rng_states(state["rng"], dist)
        step, consumed = int(state["step"]), int(state["consumed"])
        log.info("resumed from %s at step %d", work, step)
    metrics = MetricsLog(out / "metrics.running.csv", step) if dist.main else None
    tb = None
    if dist.main:
        from torch.utils.tensorboard import SummaryWriter

        tb = SummaryWriter(str(out / "tensorboard"), purge_step=step)

    stop = {"signal": None}
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.update(signal=signum))

    def checkpoint() -> None:
        gens = [gen.get_state()]
        if dist.world_size > 1:
            gens = [None] * dist.world_size
            torch.distributed.all_gather_object(gens, gen.get_state())
        if dist.main:
            save_checkpoint(work, {
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "masker": json.dumps(masker.state_dict()),
                "generators": gens, "rng": rng_states(dist), "step": step, "consumed": consumed,
                "settings": json.dumps(asdict(s)),
            })

    per_step = s.batch_size * s.grad_accum * dist.world_size
    if dist.main:
        log.info("%s/%s: %d steps x %d sequences (%d per device x %d accumulation x %d processes), %d parameters",
                 s.model, s.masking, s.max_steps, per_step, s.batch_size, s.grad_accum, dist.world_size,
                 sum(p.numel() for p in model.parameters()))
    source = stream.iterate(consumed)
    objective.train()
    started, tokens_seen, train_seconds = time.perf_counter(), 0, 0.0
    from tqdm import tqdm

    bar = tqdm(total=s.max_steps, initial=step, disable=not dist.main, unit="step", dynamic_ncols=True,
               mininterval=0.5 if os.isatty(2) else 30)  # a log file gets a line every 30 s
    while step < s.max_steps:
        t0 = time.perf_counter()
        loss_sum, correct, total, step_tokens = 0.0, 0, 0, 0
        for micro in range(s.grad_accum):
            seqs = [next(source) for _ in range(s.batch_size * dist.world_size)][dist.rank :: dist.world_size]
            batch = kmers.encode_batch(seqs, s.k, s.max_positions)
            ids = torch.from_numpy(batch).to(dist.device, non_blocking=True)
            inputs, labels = masker(ids, step=step, generator=gen)
            sync = micro == s.grad_accum - 1 or dist.world_size == 1
            with (ddp.no_sync() if not sync else contextlib.nullcontext()), autocast(dist):
                loss, n, right = ddp(inputs, ids.ne(kmers.PAD_ID), labels)
                (loss / max(n, 1) / s.grad_accum).backward()
            loss_sum += float(loss.detach()) / max(n, 1)
            correct, total = correct + int(right), total + n
            step_tokens += int(np.count_nonzero(batch != kmers.PAD_ID))
        torch.nn.utils.clip_grad_norm_(model.parameters(), s.clip)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        consumed += s.batch_size * s.grad_accum * dist.world_size
        elapsed = time.perf_counter() - t0
        train_seconds += elapsed
        tokens_seen += step_tokens * dist.world_size
        row = {"step": step, "loss": loss_sum / s.grad_accum, "lr": scheduler.get_last_lr()[0],
               "masked_acc": correct / max(total, 1), "phase": masker.phase,
               "tokens_per_s": step_tokens * dist.world_size / max(elapsed, 1e-9)}
        if step % s.eval_interval == 0 or step == s.max_steps:
            row.update(evaluate(objective, masker, val_batches, step, s.seed, dist))
            masker.observe_validation(step, row["val_ppl"])
            if masker.switch_step == step and dist.main:
                log.info("step %d: curriculum %s switches to %s (validation perplexity %.3f)",
                         step, masker.name, masker.phase, row["val_ppl"])
        bar.update(1)
        bar.set_postfix(loss=f"{row['loss']:.3f}", tok_s=f"{tokens_seen / max(train_seconds, 1e-9):,.0f}", phase=masker.phase)
        if dist.main:
            metrics.append(row)
            for key in ("loss", "lr", "masked_acc", "val_loss", "val_ppl", "val_masked_acc", "tokens_per_s"):
                if key in row:
                    tb.add_scalar(key, row[key], step)
            if step in s.milestones and step != s.max_steps:
                save_model(model, s.tokenizer, s.k, s.max_positions, out / f"step-{step}")
        if step % s.save_every == 0 or stop["signal"] is not None:
            checkpoint()
        if stop["signal"] is not None:
            log.warning("signal %s: checkpoint saved at step %d, exiting for a restart", stop["signal"], step)
            raise SystemExit(128 + stop["signal"])
    bar.close()

    summary = {}
    if dist.main:
        tb.close()
        save_model(model, s.tokenizer, s.k, s.max_positions, out / "model")
        with atomic_output(out / "metrics.csv") as tmp:
            shutil.copy2(out / "metrics.running.csv", tmp)
        last = _last_rows(out / "metrics.csv")
        summary = {
            "kind": "pretraining", **s.meta, "model": s.model, "masking": s.masking, "steps": s.max_steps,
            "final_loss": float(last["loss"]), "final_val_ppl": float(last["val_ppl"]) if last["val_ppl"] else None,
            "switch_step": masker.switch_step, "tokens_per_s": tokens_seen / max(train_seconds, 1e-9),
            "train_seconds": train_seconds, "wall_seconds": time.perf_counter() - started,
            "parameters": sum(p.numel() for p in model.parameters()), "sequences_per_step": per_step,
            "settings": asdict(s),
        }
        write_json(out / "summary.json", summary)
    if dist.world_size > 1:
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    return summary


def _last_rows(path: Path) -> dict:
    """The last row of a metrics CSV, with val_ppl taken from the last evaluated row."""
    with path.open() as f:
        rows = list(csv.DictReader(f))
    last = dict(rows[-1])
    last["val_ppl"] = next((r["val_ppl"] for r in reversed(rows) if r["val_ppl"]), "")
    return last


# ------------------------------------------------------------------------------------------ CLI
def configure_parser(parser: argparse.ArgumentParser) -> None:
    d = Settings(corpus="", out="")
    parser.add_argument("--corpus", required=True, help="corpus directory with train/ and validation/ shards")
    parser.add_argument("--out", required=True, help="run directory")
    parser.add_argument("--model", default=d.model, help=f"architecture: {', '.join(models.ARCHITECTURES)}")
    parser.add_argument("--masking", default=d.masking, help="masking strategy or curriculum name")
    parser.add_argument("--masking-options", type=json.loads, default={}, help="JSON object of strategy options")
    parser.add_argument("--pmi", help="pmi.parquet (for PMI-guided strategies)")
    parser.add_argument("--tokenizer", help="tokenizer directory copied into saved models")
    parser.add_argument("--init-from", help="continue pretraining from a local HF checkpoint")
    for name in ("k", "max_positions", "max_steps", "batch_size", "grad_accum", "warmup_steps", "eval_every",
                 "eval_sequences", "save_every", "seed", "threads"):
        parser.add_argument("--" + name.replace("_", "-"), type=int, default=getattr(d, name))
    for name in ("lr", "weight_decay", "eps", "clip"):
        parser.add_argument("--" + name.replace("_", "-"), type=float, default=getattr(d, name))
    parser.add_argument("--betas", type=float, nargs=2, default=list(d.betas))
    parser.add_argument("--milestones", type=int, nargs="*", default=[], help="extra steps to save a model at")
    parser.add_argument("--meta", type=json.loads, default={}, help="JSON object copied into summary.json")
    parser.set_defaults(func=lambda a: train(settings_from_args(a)))


def settings_from_args(args: argparse.Namespace) -> Settings:
    fields = Settings.__dataclass_fields__
    return Settings(**{k: v for k, v in vars(args).items() if k in fields})
