"""Pretraining throughput of the real training loop: tokens/s and model FLOPs utilisation (MFU).

Writes a synthetic corpus of full-length chunks (510 6-mers: 512 positions with [CLS]/[SEP]; or
GeneMask's length mix with --lengths paper) and a random PMI table to a temporary directory, runs `cmgems pretrain` (the rule's command: data-loader
workers, genemask masking, checkpoints off) for --steps steps per model, and reads tokens/s (training
time, the wait for data included; validation excluded) from metrics.csv (the median of the log
intervals after the first, which includes starting the data-loader workers) and MFU from summary.json. On a GPU: bf16
autocast, fused AdamW, MFU against the GPU's bf16 peak (cmgems.flops; --peak-tflops overrides).

    python benchmarks/bench_pretrain.py [--models tiny logo] [--micro-batch 8] [--accumulation 1] [--steps 30]
                                        [--lengths full|paper] [--workers N] [--compile]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from cmgems import corpus, kmers


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


def bench(model: str, data: Path, out: Path, args) -> dict:
    cmd = [sys.executable, "-m", "cmgems.cli", "pretrain", "--corpus", str(data), "--pmi", str(data / "pmi.parquet"),
           "--out", str(out), "--model", model, "--masking", "genemask", "--max-steps", str(args.steps),
           "--sequences-per-step", str(args.micro_batch * args.accumulation), "--batch-size", str(args.micro_batch),
           "--max-positions", "512", "--warmup-steps", "2", "--eval-every", str(args.steps), "--eval-sequences", "8",
           "--log-every", str(max(1, args.steps // 4)), "--save-every", str(10 * args.steps), "--threads", str(args.threads),
           "--peak-tflops", str(args.peak_tflops), "--workers", str(args.workers)] + (["--compile"] if args.compile else [])
    started = time.perf_counter()
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(f"{model}: cmgems pretrain failed:\n{result.stderr[-3000:]}")
    summary = json.loads((out / "summary.json").read_text())
    with (out / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    steady = float(np.median([float(r["tokens_per_s"]) for r in rows[1:]]))  # the first interval starts the workers
    figures = {"model": model, "lengths": args.lengths, "workers": args.workers, "threads": args.threads, "micro_batch": args.micro_batch, "accumulation": args.accumulation, "positions": 512,
               "steps": args.steps, "tokens_per_s": round(steady), "tokens_per_s_whole_run": round(summary["tokens_per_s"]),
               "model_tflops_per_s": round(summary["model_tflops_per_s"], 4), "mfu": summary["mfu"],
               "device": summary["device"], "parameters": summary["parameters"],
               "process_seconds": round(time.perf_counter() - started, 1)}
    print(f"{model:9s} {args.micro_batch} x {args.accumulation} x 512: {figures['tokens_per_s']:>10,} tokens/s  "
          f"{figures['model_tflops_per_s']:8.3f} TFLOP/s  MFU {figures['mfu']}", flush=True)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["tiny", "logo"])
    parser.add_argument("--micro-batch", type=int, default=8, help="sequences per forward/backward pass")
    parser.add_argument("--accumulation", type=int, default=1, help="micro-batches per optimizer step")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the training process (CPU)")
    parser.add_argument("--lengths", choices=["full", "paper"], default="full",
                        help="chunk lengths: all 512 positions, or GeneMask's mix (half full, half uniform)")
    parser.add_argument("--workers", type=int, default=-1, help="data-loader processes (-1: as a run picks them; 0: in the training process)")
    parser.add_argument("--peak-tflops", type=float, default=0.0, help="device peak for MFU (0: from the GPU's name)")
    parser.add_argument("--compile", action="store_true")
    args = parser.parse_args()
    command = " ".join([Path(sys.executable).name, *sys.argv])
    print(f"command: {command}; cpus {os.cpu_count()}, load {os.getloadavg()}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        data = synthetic_corpus(Path(tmp) / "corpus", max(256, args.micro_batch * args.accumulation * args.steps),
                                args.lengths)
        results = [bench(m, data, Path(tmp) / f"run_{m}", args) for m in args.models]
    print(json.dumps({"benchmark": "pretrain", "command": command, "machine": platform.processor() or platform.machine(),
                      "cpu_count": os.cpu_count(), "loadavg": os.getloadavg(), "results": results}))


if __name__ == "__main__":
    main()
