"""Pretraining throughput of the real training loop: tokens/s, model FLOPs utilisation (MFU) and peak memory.

Writes a synthetic corpus of full-length chunks (510 6-mers: 512 positions with [CLS]/[SEP]; or
GeneMask's length mix with --lengths paper, as the corpus stage cuts it with full_length_prob 0.5 and
5..510 tokens) and a random PMI table to a temporary directory, then runs the training loop
(`pretrain.train`, what `cmgems pretrain` runs: data-loader workers, genemask masking, checkpoints off)
for --steps steps per configuration: each model x mode (eager, compiled) x micro-batch, in this process,
one after another. Tokens/s and MFU (training time, the wait for data included; validation excluded)
are the medians of metrics.csv's log intervals after the first (which starts the data-loader workers,
and compiles). On a GPU: bf16 autocast, fused AdamW, MFU against the GPU's bf16 peak (cmgems.flops;
--peak-tflops overrides), and the peak of torch.cuda.max_memory_allocated / max_memory_reserved of
each configuration; a configuration that runs out of memory is reported as such. "recommended" is the
micro-batch (and mode) of the highest tokens/s of dnabert6 (else the first model) among those that fit
(no out-of-memory, reserved peak under 90% of the device's memory).

    python benchmarks/bench_pretrain.py [--models tiny logo] [--micro-batch 8 [16 ...]] [--accumulation 1]
                                        [--sequences-per-step N] [--steps 30] [--lengths full|paper]
                                        [--workers N] [--modes eager compiled] [--budget SECONDS] [--json FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import gc
import json
import logging
import os
import platform
import signal
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from cmgems import corpus, kmers, pretrain

GIB = 2**30
FITS = 0.9  # a configuration fits when its reserved peak stays under this share of the device's memory
FIRST_ESTIMATE = {"eager": 30.0, "compiled": 90.0}  # seconds of a configuration before one of its kind ran


def synthetic_corpus(root: Path, sequences: int, lengths: str, seed: int = 0) -> Path:
    """train/ and validation/ shards of random chunks, train.arrow, and pmi.parquet (random ranks).
    Chunks are 515 bp (510 6-mers: 512 positions) for lengths "full"; for "paper", GeneMask's mix:
    half 515 bp, half uniform in 10..515 bp."""
    rng = np.random.default_rng(seed)
    alphabet = np.frombuffer(b"ACGT", np.uint8)
    for split, n in (("train", sequences), ("validation", 64)):
        (root / split).mkdir(parents=True)
        size = np.full(n, 515) if lengths == "full" else np.where(rng.random(n) < 0.5, 515, rng.integers(10, 516, n))
        seqs = [alphabet[rng.integers(0, 4, m)].tobytes() for m in size]
        starts = np.concatenate([[0], np.cumsum(size)[:-1]])
        pq.write_table(pa.table({"contig": ["chrS"] * n, "start": starts, "end": starts + size,
                                 "sequence": pa.array(seqs, pa.binary())}), root / split / "chrS.parquet")
    corpus.write_training_index(root)
    vocab = kmers.vocabulary(6)[kmers.NUM_SPECIAL :]
    pq.write_table(pa.table({"ngram": vocab, "n": [6] * len(vocab), "rank": rng.permutation(len(vocab)) + 1}),
                   root / "pmi.parquet")
    return root


@contextlib.contextmanager
def signal_handlers_restored():
    """A run installs its stop handlers; between runs the benchmark stops as any process does."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def sequences_per_step(args, micro_batch: int) -> int:
    return args.sequences_per_step or micro_batch * args.accumulation


def settings(model: str, micro_batch: int, mode: str, data: Path, out: Path, args) -> pretrain.Settings:
    return pretrain.Settings(
        corpus=str(data), out=str(out), model=model, masking="genemask", pmi=str(data / "pmi.parquet"),
        max_steps=args.steps, sequences_per_step=sequences_per_step(args, micro_batch), batch_size=micro_batch,
        max_positions=512, warmup_steps=2, eval_every=args.steps, eval_sequences=8,
        log_every=max(1, args.steps // 4), save_every=10 * args.steps, threads=args.threads, workers=args.workers,
        compile="inductor" if mode == "compiled" else "", gpus=int(torch.cuda.is_available()),
        peak_tflops=args.peak_tflops)


def steady(out: Path, column: str) -> float | None:
    """The median of a metrics.csv column over the log intervals after the first."""
    with (out / "metrics.csv").open() as f:
        values = [r[column] for r in csv.DictReader(f)][1:]
    return float(np.median([float(v) for v in values])) if values and all(values) else None


def bench(model: str, micro_batch: int, mode: str, data: Path, out: Path, args) -> dict:
    """One configuration's figures; the device's memory peaks from a clean start."""
    cuda = torch.cuda.is_available()
    figures = {"model": model, "mode": mode, "micro_batch": micro_batch,
               "sequences_per_step": sequences_per_step(args, micro_batch), "lengths": args.lengths,
               "positions": 512, "steps": args.steps, "workers": args.workers, "threads": args.threads}
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        figures["memory_before_gib"] = round(torch.cuda.memory_allocated() / GIB, 3)
    started = time.perf_counter()
    try:
        with signal_handlers_restored():
            summary = pretrain.train(settings(model, micro_batch, mode, data, out, args))
    except torch.OutOfMemoryError as err:
        figures.update(oom=True, error=str(err).splitlines()[0])
        summary = None
    figures["seconds"] = round(time.perf_counter() - started, 1)
    if cuda:
        figures["peak_memory_allocated_gib"] = round(torch.cuda.max_memory_allocated() / GIB, 3)
        figures["peak_memory_reserved_gib"] = round(torch.cuda.max_memory_reserved() / GIB, 3)
        figures["device_memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / GIB, 3)
    if summary is None:
        return figures
    tokens_per_s, mfu = steady(out, "tokens_per_s"), steady(out, "mfu")
    figures.update(tokens_per_s=round(tokens_per_s), tokens_per_s_whole_run=round(summary["tokens_per_s"]),
                   mfu=None if mfu is None else round(mfu, 4), mfu_whole_run=summary["mfu"],
                   accumulation=summary["accumulation"], device=summary["device"], parameters=summary["parameters"])
    memory = f"  peak {figures['peak_memory_allocated_gib']:.2f} GiB" if cuda else ""
    print(f"{model:9s} {mode:8s} {micro_batch:3d} of {figures['sequences_per_step']} x 512: "
          f"{figures['tokens_per_s']:>10,} tokens/s  MFU {figures['mfu']}{memory}", flush=True)
    return figures


def fits(row: dict) -> bool:
    if "tokens_per_s" not in row or row.get("oom"):
        return False
    return "device_memory_gib" not in row or row["peak_memory_reserved_gib"] <= FITS * row["device_memory_gib"]


def recommend(rows: list[dict]) -> dict | None:
    """The micro-batch of the highest tokens/s of dnabert6 (else the first model measured) among the
    configurations that fit."""
    measured = [r for r in rows if fits(r)]
    if not measured:
        return None
    model = "dnabert6" if any(r["model"] == "dnabert6" for r in measured) else measured[0]["model"]
    best = max((r for r in measured if r["model"] == model), key=lambda r: r["tokens_per_s"])
    return {"model": model, "micro_batch": best["micro_batch"], "mode": best["mode"],
            "tokens_per_s": best["tokens_per_s"], "mfu": best["mfu"],
            "peak_memory_reserved_gib": best.get("peak_memory_reserved_gib"),
            "rule": f"highest tokens/s of {model} among the micro-batches that ran without running out of memory "
                    f"and peaked under {FITS:.0%} of the device's memory"}


def report(command: str, rows: list[dict]) -> dict:
    return {"benchmark": "pretrain", "command": command, "machine": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "loadavg": os.getloadavg(), "results": rows, "recommended": recommend(rows)}


def grid(args):
    """(model, mode, micro-batch) in the order measured: a model's configurations together, so that
    compiled ones reuse what the first compiled (TorchDynamo is reset between models)."""
    for model in args.models:
        for mode in args.modes:
            for i, micro_batch in enumerate(args.micro_batch):
                yield model, mode, micro_batch, i == 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["tiny", "logo"])
    parser.add_argument("--micro-batch", type=int, nargs="+", default=[8], help="sequences per forward/backward pass")
    parser.add_argument("--accumulation", type=int, default=1, help="micro-batches per optimizer step")
    parser.add_argument("--sequences-per-step", type=int, default=0,
                        help="sequences per optimizer step (0: micro-batch x accumulation)")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the training process (CPU)")
    parser.add_argument("--lengths", choices=["full", "paper"], default="full",
                        help="chunk lengths: all 512 positions, or GeneMask's mix (half full, half uniform)")
    parser.add_argument("--workers", type=int, default=-1, help="data-loader processes (-1: as a run picks them; 0: in the training process)")
    parser.add_argument("--peak-tflops", type=float, default=0.0, help="device peak for MFU (0: from the GPU's name)")
    parser.add_argument("--modes", nargs="+", choices=["eager", "compiled"], default=["eager"],
                        help="the training step as is, and/or torch.compile'd (inductor)")
    parser.add_argument("--budget", type=float, default=0.0,
                        help="seconds for all configurations (0: no limit): one that would not fit in what is left "
                             "(judged by the last of its model and mode) is skipped and reported so")
    parser.add_argument("--json", help="also write the JSON object here, after every configuration")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    command = " ".join([Path(sys.executable).name, *sys.argv])
    print(f"command: {command}; cpus {os.cpu_count()}, load {os.getloadavg()}", flush=True)
    deadline = time.monotonic() + (args.budget or float("inf"))
    rows, took = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        data = synthetic_corpus(Path(tmp) / "corpus", max(256, sequences_per_step(args, max(args.micro_batch)) * args.steps),
                                args.lengths)
        for model, mode, micro_batch, first in grid(args):
            if first and mode == "compiled":
                torch._dynamo.reset()
            if time.monotonic() + took.get((model, mode), FIRST_ESTIMATE[mode]) > deadline:
                rows.append({"model": model, "mode": mode, "micro_batch": micro_batch, "skipped": "time budget"})
            else:
                rows.append(bench(model, micro_batch, mode, data, Path(tmp) / f"run_{model}_{mode}_{micro_batch}", args))
                took[model, mode] = rows[-1]["seconds"]
            if args.json:
                Path(args.json).write_text(json.dumps(report(command, rows), indent=1) + "\n")
    print(json.dumps(report(command, rows)))


if __name__ == "__main__":
    main()
