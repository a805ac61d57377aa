"""Fine-tune a pretrained k-mer BERT on a labelled task and score its test set.

Two protocols, chosen by whether a dev set is given:
- with `--dev` (DNABERT-2's GUE protocol, its `finetune/train.py` on Hugging Face's Trainer):
  evaluate on dev every `--eval-steps` optimizer steps (or after every epoch with
  `--eval-every-epoch`), with no extra evaluation at the last step, and keep the weights of the
  evaluation with the lowest dev loss (the Trainer's `load_best_model_at_end` without
  `metric_for_best_model`; `--select-by mcc`: the highest dev MCC), the earliest on ties; when no
  evaluation falls on the cadence, the final weights. The test set is scored with the kept weights;
- without (GeneMask's few-shot protocol): train, then score the test set once.

Precision: bf16 autocast on CUDA and fp32 on the CPU (`models.autocast`), or with `--fp16` float16
autocast with a loss scaler (`torch.amp.GradScaler`) on either device, in training and evaluation: HF
Trainer's `fp16=True`, which DNABERT-2's GUE scripts pass (`--fp16`). As the Trainer, a step the scaler
skips (inf or NaN gradients) does not advance the learning-rate schedule. `metrics.json` records the
precision used (`settings.precision`).

Tokens: cmgems' k-mer ids (`--tokenizer kmer`, k from the folder's kmer.json, checked against its
vocabulary) or the folder's own tokenizer (`--tokenizer own`: AutoTokenizer, e.g. DNABERT-2's BPE or the
Nucleotide Transformer's 6-mers), truncated to `--max-length` tokens and right-padded with its pad token;
the attention mask covers each row's tokens.

Dropout: the checkpoint's own (`hidden_dropout_prob` of its config, 0.0 for LOGO) unless
`--hidden-dropout` sets it, as GeneMask's few-shot script does (0.1).

Optimiser as Hugging Face's Trainer: AdamW (no weight decay on biases and LayerNorm, `models.parameter_groups`),
linear warmup then linear decay to 0, gradient clipping at 1.0. `--max-steps` > 0 overrides the
epochs (the data are cycled), as in the Trainer. Runs are deterministic for a given seed and
thread count: seeded model head, seeded shuffling, deterministic algorithms.

`finetune_pack` runs many runs in one process (`cmgems finetune --pack SPEC`, see `cmgems.packs`):
the model directory is loaded once and every run starts from a copy of its weights, seeded as a
run on its own; a labelled file several runs read (a few-shot test set) is read and tokenised once.
A single run (`finetune`) is a pack of one, so both give the same bytes.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import itertools
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable, Iterator, Sequence

import torch
from tqdm import tqdm
from transformers import AutoConfig, AutoModelForSequenceClassification, get_linear_schedule_with_warmup

from cmgems import kmers, models, packs
from cmgems.cli import add_settings, option
from cmgems.errors import CmgemsError
from cmgems.labelled import PackFiles, check_labels, data_statistics
from cmgems.metrics import classification_metrics, parse_meta, write_results

log = logging.getLogger(__name__)
SELECT_BY = ("loss", "mcc")  # dev criteria for the kept weights: lowest loss, highest MCC
TOKENIZERS = ("kmer", "own")  # cmgems' k-mer ids, or the model folder's AutoTokenizer


@dataclass
class Settings:
    """Everything a fine-tuning run depends on; defaults are DNABERT-2's GUE recipe (per device). The
    command line's options are these fields (`cli.option`: default and help)."""

    model: str = option(help="pretrained model directory (HF save_pretrained + tokenizer + kmer.json); required")
    train: str = option(help="labelled training file (CSV sequence,label or GeneMask TSV); required")
    test: str = option(help="labelled test file; required")
    out: str = option(help="output directory (metrics.json, predictions.parquet); required")
    dev: str | None = option(None, help="labelled dev file: keep the weights of the best dev evaluation (GUE protocol)")
    max_length: int = option(512, help="tokens per sequence, [CLS]/[SEP] included; required")
    epochs: int = option(3, help="passes over the training set")
    lr: float = option(3e-5, help="peak learning rate")
    batch_size: int = option(8, help="sequences per micro-batch")
    grad_accum: int = option(1, help="micro-batches per optimizer step")
    warmup_steps: int = option(0, help="steps of linear warmup (then linear decay to 0)")
    warmup_ratio: float = option(0.0, help="warmup as a fraction of all steps (when --warmup-steps is 0)")
    max_steps: int = option(-1, help="> 0: train exactly this many steps (overrides --epochs)")
    weight_decay: float = option(0.01, help="AdamW weight decay (not on biases and LayerNorm)")
    hidden_dropout: float | None = option(None, help="hidden dropout while fine-tuning (default: the checkpoint's own)")
    max_grad_norm: float = 1.0  # gradient clipping; not an option
    eval_steps: int = option(200, help="with --dev: evaluate every N optimizer steps (not at the last step unless "
                                       "it is a multiple)")
    eval_every_epoch: bool = option(False, help="with --dev: evaluate after every epoch instead")
    select_by: str = option("loss", choices=SELECT_BY, help="with --dev: keep the weights of the lowest dev loss "
                                                            "(DNABERT-2's Trainer) or the highest dev MCC")
    eval_batch_size: int = option(64, help="sequences per batch when scoring dev and test")
    fp16: bool = option(False, help="float16 autocast and loss scaling (HF Trainer's --fp16, DNABERT-2's GUE "
                                    "scripts); default: bf16 autocast on CUDA, fp32 on the CPU")
    seed: int = option(42, help="seed of the head's weights, the shuffling and dropout")
    threads: int = option(1, help="torch CPU threads; a fixed count keeps results machine-independent "
                                  "(0 = torch's default)")
    tokenizer: str = option("kmer", choices=TOKENIZERS, help="kmer: cmgems' k-mer ids (k from the folder's kmer.json); "
                                                             "own: the model folder's AutoTokenizer")
    trust_remote_code: bool = option(False, help="run the model directory's own code (only for models you trust)")
    meta: dict = option(factory=dict, help="JSON object merged into metrics.json at top level")


# ------------------------------------------------------------------------------------ the model
class Pretrained:
    """A model directory loaded once: its sequence-classifier class and the weights its checkpoint
    holds (safetensors, or a .bin that transformers loads with torch.load(weights_only=True)), on the
    CPU. The directory's own code runs only with trust_remote_code."""

    def __init__(self, model_dir: str | Path, trust_remote_code: bool = False):
        self.path, self.trust_remote_code = Path(model_dir), trust_remote_code
        if not (self.path / "config.json").exists():
            raise CmgemsError(f"--model {self.path}: not a Hugging Face model directory (no config.json)")
        models.check_own_code(self.path, trust_remote_code)
        model, info = models.from_pretrained(
            AutoModelForSequenceClassification, self.path, trust_remote_code=trust_remote_code,
            output_loading_info=True, **models.attention(trust_remote_code),
        )
        self.cls = type(model)
        missing = set(info["missing_keys"])
        models.check_encoder_loaded(self.path, model, missing)
        self.state = {name: t for name, t in model.state_dict().items() if name not in missing}

    def classifier(self, num_labels: int, hidden_dropout: float | None = None):
        """A fresh classifier (BertForSequenceClassification for our models and DNABERT's): copies of
        the checkpoint's weights, so training leaves them pristine for the next run, and the weights it
        lacks (pooler, head) drawn from torch's global RNG exactly as `from_pretrained(path)` draws
        them; the checkpoint's hidden dropout unless `hidden_dropout` is given."""
        dropout = {} if hidden_dropout is None else {"hidden_dropout_prob": hidden_dropout}
        config = AutoConfig.from_pretrained(self.path, num_labels=num_labels, trust_remote_code=self.trust_remote_code, **dropout)
        state = {name: t.clone() for name, t in self.state.items()}
        return self.cls.from_pretrained(None, config=config, state_dict=state, **models.attention(self.trust_remote_code))


def load_classifier(model_dir: str | Path, num_labels: int, hidden_dropout: float | None = None,
                    trust_remote_code: bool = False):
    """A sequence classifier from a save_pretrained directory (see `Pretrained.classifier`)."""
    return Pretrained(model_dir, trust_remote_code).classifier(num_labels, hidden_dropout)


# ------------------------------------------------------------------------------------------ data
@dataclass
class Split:
    """A tokenised labelled split: ids (N, L) int64 right-padded, lengths (N,) (tokens per row, specials
    included), labels (N,); `truncated`: rows cut to max_length (own tokenizers; None: counted from k)."""

    path: str
    ids: torch.Tensor
    lengths: torch.Tensor
    labels: torch.Tensor
    truncated: int | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(input_ids, attention_mask) of rows `index`, trimmed to the batch's longest row."""
        lengths = self.lengths[index]
        width = int(lengths.max())
        return self.ids[index, :width], torch.arange(width) < lengths[:, None]


def load_split(path: str, k: int | None, max_length: int, files: PackFiles | None = None,
               s: Settings | None = None) -> Split:
    """A labelled file, tokenised into k-mer ids (`k`), or with the model folder's own tokenizer (k None:
    `s.model`, `s.trust_remote_code`); through a pack's `files`, once per pack."""
    files = files or PackFiles([])

    def tokenise() -> Split:
        sequences, labels = files.read(path)
        if k is None:
            ids, lengths, truncated = own_tokens(s.model, s.trust_remote_code, sequences, max_length)
            return Split(path, ids, lengths, torch.from_numpy(labels), truncated)
        ids = torch.from_numpy(kmers.encode_batch([seq.encode("ascii") for seq in sequences], k, max_length))
        return Split(path, ids, (ids != kmers.PAD_ID).sum(dim=1), torch.from_numpy(labels))

    key = ("split", k, max_length) if k is not None else ("split", "own", s.model, max_length)
    return files.derived(path, key, tokenise)


def own_tokens(model_dir: str, trust_remote_code: bool, sequences: list[str], max_length: int) -> tuple:
    """The folder's AutoTokenizer applied to `sequences`: ids (N, L) int64 right-padded with its pad id,
    lengths (N,), and how many sequences were longer than `max_length` tokens (specials included)."""
    from transformers import AutoTokenizer

    models.check_own_code(Path(model_dir), trust_remote_code)
    tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=trust_remote_code)
    if tokenizer.pad_token_id is None:
        raise CmgemsError(f"{model_dir}: its tokenizer has no padding token, so batches cannot be padded")
    full = tokenizer(sequences, verbose=False)["input_ids"]
    rows = tokenizer(sequences, truncation=True, max_length=max_length)["input_ids"]
    lengths = torch.tensor([len(row) for row in rows], dtype=torch.int64)
    ids = torch.full((len(rows), max(map(len, rows), default=0)), tokenizer.pad_token_id, dtype=torch.int64)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.int64)
    return ids, lengths, sum(len(row) > max_length for row in full)


def optimizer_steps(n: int, batch_size: int, grad_accum: int, generator: torch.Generator) -> Iterator[list[torch.Tensor]]:
    """Endless micro-batch row indices of one optimizer step after another; a fresh seeded shuffle per epoch."""
    while True:
        micro = list(torch.randperm(n, generator=generator).split(batch_size))
        for i in range(0, len(micro), grad_accum):
            yield micro[i : i + grad_accum]


# ------------------------------------------------------------------------------ train and score
@contextlib.contextmanager
def deterministic_torch(threads: int) -> Iterator[None]:
    """Deterministic algorithms and a fixed thread count for the duration; restores the previous state."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    previous = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(), torch.get_num_threads())
    torch.use_deterministic_algorithms(True, warn_only=True)
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])
        torch.set_num_threads(previous[2])


def precision(fp16: bool, device: torch.device) -> str:
    """The precision a run computes in: fp16 (--fp16), else bf16 on CUDA and fp32 elsewhere (`models.autocast`)."""
    return "fp16" if fp16 else "bf16" if device.type == "cuda" else "fp32"


def autocast(fp16: bool, device: torch.device):
    """float16 autocast with --fp16 (on CUDA or the CPU), else `models.autocast`."""
    return torch.autocast(device.type, dtype=torch.float16) if fp16 else models.autocast(device)


@torch.inference_mode()
def predict_logits(model, split: Split, batch_size: int, device: torch.device, fp16: bool = False) -> torch.Tensor:
    """Logits (N, C) float32 on the CPU of a split, in file order."""
    model.eval()
    out = []
    for index in torch.arange(len(split)).split(batch_size):
        ids, mask = (t.to(device) for t in split.batch(index))
        with autocast(fp16, device):
            logits = model(input_ids=ids, attention_mask=mask).logits
        out.append(logits.float().cpu())
    return torch.cat(out)


def evaluate(model, split: Split, s: Settings, device: torch.device) -> dict:
    """`loss` (mean per-example cross-entropy, nats: the Trainer's eval_loss) and the metrics of a split."""
    logits = predict_logits(model, split, s.eval_batch_size, device, s.fp16)
    scores = torch.softmax(logits, dim=-1).numpy()
    loss = float(torch.nn.functional.cross_entropy(logits, split.labels))
    return {"loss": loss, **classification_metrics(split.labels.numpy(), scores.argmax(axis=1), scores)}


def build_optimizer(model, s: Settings, total_steps: int, warmup: int):
    """AdamW as Hugging Face's Trainer (`models.parameter_groups`), linear warmup then decay to 0."""
    optimizer = torch.optim.AdamW(models.parameter_groups(model, s.weight_decay), lr=s.lr, betas=(0.9, 0.999), eps=1e-8)
    return optimizer, get_linear_schedule_with_warmup(optimizer, warmup, total_steps)


def check_settings(s: Settings) -> None:
    for name in ("max_length", "epochs", "batch_size", "grad_accum", "eval_batch_size"):
        if getattr(s, name) < (3 if name == "max_length" else 1):
            raise CmgemsError(f"--{name.replace('_', '-')} must be positive (got {getattr(s, name)})")
    if s.lr <= 0 or not 0 <= s.warmup_ratio < 1 or s.warmup_steps < 0 or s.eval_steps < 1:
        raise CmgemsError("--lr must be > 0, --warmup-ratio in [0, 1), --warmup-steps >= 0, --eval-steps >= 1")
    if s.tokenizer not in TOKENIZERS:
        raise CmgemsError(f"--tokenizer must be one of {', '.join(TOKENIZERS)} (got {s.tokenizer!r})")
    if s.select_by not in SELECT_BY:
        raise CmgemsError(f"--select-by must be one of {', '.join(SELECT_BY)} (got {s.select_by!r})")
    if s.hidden_dropout is not None and not 0 <= s.hidden_dropout < 1:
        raise CmgemsError(f"--hidden-dropout must be in [0, 1) (got {s.hidden_dropout})")


@dataclass
class Schedule:
    """Optimizer steps: per epoch, in all, of warmup."""

    per_epoch: int
    total: int
    warmup: int

    @classmethod
    def of(cls, n_train: int, s: Settings) -> "Schedule":
        per_epoch = math.ceil(math.ceil(n_train / s.batch_size) / s.grad_accum)
        total = s.max_steps if s.max_steps > 0 else s.epochs * per_epoch
        return cls(per_epoch, total, s.warmup_steps or math.ceil(s.warmup_ratio * total))

    def evaluates(self, step: int, s: Settings) -> bool:
        """Whether dev is scored after optimizer step `step` (1-based): every eval_steps (or epoch) steps
        only, as the Trainer's "steps" strategy; the last step only when it falls on that cadence."""
        every = self.per_epoch if s.eval_every_epoch else s.eval_steps
        return step % every == 0


@dataclass
class Best:
    """The best dev evaluation so far and a CPU copy of its weights: the lowest `loss` (select_by
    "loss") or the highest `mcc` ("mcc"), the earliest on ties. `history`: every evaluation's step,
    loss and mcc."""

    select_by: str = "loss"
    metrics: dict | None = None
    step: int | None = None
    state: dict | None = None
    history: list[dict] = field(default_factory=list)

    def better(self, metrics: dict) -> bool:
        if self.metrics is None:
            return True
        if self.select_by == "loss":
            return metrics["loss"] < self.metrics["loss"]
        return metrics["mcc"] > self.metrics["mcc"]

    def offer(self, metrics: dict, step: int, model) -> None:
        self.history.append({"step": step, "loss": metrics["loss"], "mcc": metrics["mcc"]})
        if self.better(metrics):
            self.metrics, self.step = metrics, step
            self.state = {n: t.detach().to("cpu", copy=True) for n, t in model.state_dict().items()}


def train_model(model, train: Split, dev: Split | None, s: Settings, schedule: Schedule, device) -> tuple[Best, float, int]:
    """Train for schedule.total optimizer steps, scoring dev when due.

    Returns the best dev evaluation (empty when none was due), the training seconds (dev
    evaluations excluded) and the number of training sequences processed.
    """
    optimizer, scheduler = build_optimizer(model, s, schedule.total, schedule.warmup)
    scaler = torch.amp.GradScaler(device.type, enabled=s.fp16)  # disabled: every call passes through
    log.info("training: %d optimizer steps (%d per epoch, warmup %d)", schedule.total, schedule.per_epoch, schedule.warmup)
    generator = torch.Generator().manual_seed(s.seed)
    steps = itertools.islice(optimizer_steps(len(train), s.batch_size, s.grad_accum, generator), schedule.total)
    best, seconds, seen = Best(s.select_by), 0.0, 0
    with tqdm(total=schedule.total, desc="finetune", unit="step", mininterval=2) as bar:
        for step, micro in enumerate(steps, start=1):
            started = time.perf_counter()
            model.train()
            for index in micro:
                ids, mask = (t.to(device) for t in train.batch(index))
                with autocast(s.fp16, device):
                    loss = model(input_ids=ids, attention_mask=mask, labels=train.labels[index].to(device)).loss
                scaler.scale(loss / len(micro)).backward()
                seen += len(index)
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), s.max_grad_norm)
            scale = scaler.get_scale()
            scaler.step(optimizer)
            scaler.update()
            if scaler.get_scale() >= scale:  # the scaler did not skip the step (lowering its scale)
                scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            seconds += time.perf_counter() - started
            bar.update()
            bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
            if dev is not None and schedule.evaluates(step, s):
                metrics = evaluate(model, dev, s, device)
                log.info("step %d (epoch %.2f): dev loss %.4f, mcc %.4f", step, step / schedule.per_epoch,
                         metrics["loss"], metrics["mcc"])
                best.offer(metrics, step, model)
    return best, seconds, seen


def selection(has_dev: bool, best: Best, s: Settings, schedule: Schedule) -> dict:
    """How the scored weights (those of step `best_step`) were chosen: `rule` ("dev loss", "dev mcc" or
    "final"), `select_by`, `reason`, and `evaluations` (step, loss, mcc of every dev evaluation)."""
    cadence = f"every {schedule.per_epoch if s.eval_every_epoch else s.eval_steps} steps"
    if not has_dev:
        rule, reason = "final", "no dev set (few-shot protocol): the weights after the last step"
    elif best.step is None:
        rule, reason = "final", f"no dev evaluation fell on the cadence ({cadence}) within {schedule.total} steps"
    else:
        rule = f"dev {s.select_by}"
        extreme = "lowest" if s.select_by == "loss" else "highest"
        reason = f"{extreme} dev {s.select_by} of {len(best.history)} evaluations ({cadence}), earliest on ties"
    return {"rule": rule, "select_by": s.select_by if has_dev else None, "reason": reason, "evaluations": best.history}


def fit_and_score(s: Settings, pretrained: Callable[[], Pretrained], files: PackFiles) -> Callable[[Path], dict]:
    """Fine-tune one run and score its test set; returns the writer of its metrics.json and
    predictions.parquet. The model (`pretrained()`) is needed only once the data are read and checked."""
    check_settings(s)
    k = kmers.read_k(s.model) if s.tokenizer == "kmer" else None
    named = {name: path for name, path in (("train", s.train), ("dev", s.dev), ("test", s.test)) if path}
    splits = {name: load_split(path, k, s.max_length, files, s) for name, path in named.items()}
    train, dev, test = splits["train"], splits.get("dev"), splits["test"]
    num_labels = check_labels(*((p.path, p.labels.numpy()) for p in (train, test, dev) if p is not None))
    data = data_statistics({name: files.read(path)[0] for name, path in named.items()}, k or 1,
                           s.max_length if k else None)
    for name, split in splits.items():
        if split.truncated is not None:
            data[name]["truncated"] = split.truncated
            if split.truncated:
                log.warning("%s split: %d of %d sequences truncated to %d tokens", name, split.truncated, len(split), s.max_length)
    schedule = Schedule.of(len(train), s)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    checkpoint = pretrained()

    with deterministic_torch(s.threads):
        torch.manual_seed(s.seed)
        model = checkpoint.classifier(num_labels, s.hidden_dropout)
        positions = getattr(model.config, "max_position_embeddings", None)
        if positions is not None and s.max_length > positions:
            raise CmgemsError(f"--max-length {s.max_length} exceeds the model's {positions} positions")
        model.to(device)
        best, train_seconds, seen = train_model(model, train, dev, s, schedule, device)
        if best.state is not None:
            model.load_state_dict(best.state)
        started = time.perf_counter()
        scores = torch.softmax(predict_logits(model, test, s.eval_batch_size, device, s.fp16), dim=-1).numpy()
        inference_seconds = time.perf_counter() - started
        threads_used = torch.get_num_threads()

    best_step = best.step if best.step is not None else schedule.total
    record = {
        "dev_metrics": best.metrics,
        "best_epoch": best_step / schedule.per_epoch,
        "best_step": best_step,
        "selection": selection(dev is not None, best, s, schedule),
        "n_train": len(train),
        "n_dev": len(dev) if dev is not None else None,
        "n_test": len(test),
        "data": data,
        "train_seconds": train_seconds,
        "train_sequences_per_s": seen / train_seconds,
        "inference_sequences_per_s": len(test) / inference_seconds,
        "settings": {
            **{key: v for key, v in asdict(s).items() if key != "meta"},
            "k": k, "num_labels": num_labels, "steps_per_epoch": schedule.per_epoch, "total_steps": schedule.total,
            "warmup": schedule.warmup, "device": device.type, "precision": precision(s.fp16, device),
            "threads_used": threads_used, "torch": torch.__version__,
            "hidden_dropout_used": getattr(model.config, "hidden_dropout_prob", None),
        },
    }
    return functools.partial(write_results, meta=s.meta, labels=test.labels.numpy(), scores=scores, record=record)


def run_files(s: Settings) -> list[str]:
    """The labelled files a run reads."""
    return [p for p in (s.train, s.dev, s.test) if p]


def finetune_pack(runs: Sequence[tuple[Settings, str | None]]) -> list[dict]:
    """Fine-tune the runs of a pack, (settings, cache folder or None) each, one after another (see
    `cmgems.packs`), loading each model directory once; returns their metrics.json objects."""
    files = PackFiles([run_files(s) for s, _ in runs])
    loaded: dict[tuple[str, bool], Pretrained] = {}

    def pretrained(s: Settings) -> Pretrained:
        key = (s.model, s.trust_remote_code)
        if key not in loaded:
            loaded.clear()  # one model in memory at a time
            loaded[key] = Pretrained(*key)
        return loaded[key]

    def compute(i: int) -> Callable[[Path], dict]:
        s = runs[i][0]
        try:
            return fit_and_score(s, functools.partial(pretrained, s), files)
        finally:
            files.done(i)

    planned = [packs.Run(s.out, cache, asdict(s), [s.model, *run_files(s)]) for s, cache in runs]
    return packs.run_pack(planned, compute)


def finetune(s: Settings) -> dict:
    """Fine-tune, score the test set, write `s.out`/{metrics.json, predictions.parquet}; returns metrics.json."""
    return finetune_pack([(s, None)])[0]


# ------------------------------------------------------------------------------------------- CLI
REQUIRED = ("model", "train", "test", "out", "max_length")  # unless --pack


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """The fields of `Settings` as options (`cli.add_settings`); by hand the REQUIRED ones (no default:
    a pack needs none) and --meta (JSON text, checked by `parse_meta`)."""
    helps = {f.name: f.metadata.get("help") for f in fields(Settings)}
    for name in REQUIRED:
        parser.add_argument("--" + name.replace("_", "-"), type=int if name == "max_length" else None, help=helps[name])
    by_hand, warmup = (*REQUIRED, "meta", "max_grad_norm"), ("warmup_steps", "warmup_ratio")
    add_settings(parser, Settings, [f.name for f in fields(Settings) if f.name not in by_hand + warmup])
    add_settings(parser.add_mutually_exclusive_group(), Settings, warmup)
    parser.add_argument("--meta", help=helps["meta"])
    packs.add_pack_option(parser)
    parser.set_defaults(func=functools.partial(run, parser=parser))


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    packs.check_pack_or_run(parser, args, REQUIRED)
    if args.pack is not None:
        runs = packs.read_spec(args.pack)
        finetune_pack([(packs.settings_from(Settings, entry, f"--pack: runs[{i}]"), cache) for i, (entry, cache) in enumerate(runs)])
        return
    names = {f.name for f in fields(Settings)} - {"meta", "max_grad_norm"}
    finetune(Settings(**{n: getattr(args, n) for n in names}, meta=parse_meta(args.meta)))
