"""Fine-tuning and baseline throughput on CPU, on real GUE tasks.

1. `cmgems finetune` of a small random BERT (BENCH_CONFIG: 2 layers, hidden 128, 4 heads,
   intermediate 512; k = 6) on the full GUE prom_core_tata (4904 train / 613 dev / 613 test,
   max length 80 tokens) with DNABERT-2's per-step batch of 32 (16 x 2 accumulation), lr 3e-5,
   warmup 50, dev evaluation every 50 steps, EPOCHS epochs: training and inference sequences/s and
   total wall time. The model is random, so its MCC says nothing; the throughput is the point.
2. `cmgems baseline` (6-mer log1p counts + logistic regression, C on dev) on GUE mouse/2 and tf/0:
   test MCC and wall time.

Run: python benchmarks/bench_finetune.py [--epochs 4] [--threads 1]. With other jobs on the 2 cores, 2 torch
threads ran ~10x slower than 1 (OpenMP threads waiting on each other), hence the default of 1. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

from cmgems import kmers, models
from cmgems.baseline import baseline
from cmgems.finetune import Settings, finetune

DATA = Path(os.environ.get("CMGEMS_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
BENCH_CONFIG = dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=4, intermediate_size=512)


def bench_finetune(workdir: Path, epochs: int, threads: int) -> dict:
    torch.manual_seed(0)
    random_bert = models.masked_lm(models.bert_config(BENCH_CONFIG, kmers.vocab_size(6)))
    model = models.save_folder(workdir / "model", random_bert, k=6)
    task = DATA / "gue" / "prom" / "prom_core_tata"
    s = Settings(
        model=str(model), train=str(task / "train.csv"), dev=str(task / "dev.csv"), test=str(task / "test.csv"),
        out=str(workdir / "run"), max_length=80, epochs=epochs, lr=3e-5, batch_size=16, grad_accum=2,
        warmup_steps=50, eval_steps=50, seed=42, threads=threads,
    )
    started = time.perf_counter()
    result = finetune(s)
    wall = time.perf_counter() - started
    figures = {
        "task": "prom_core_tata", "epochs": epochs, "steps": result["settings"]["total_steps"],
        "train_seconds": round(result["train_seconds"], 2),
        "train_sequences_per_s": round(result["train_sequences_per_s"], 1),
        "inference_sequences_per_s": round(result["inference_sequences_per_s"], 1),
        "wall_seconds": round(wall, 2), "test_mcc": round(result["metrics"]["mcc"], 4),
    }
    print(f"finetune prom_core_tata: {figures}", flush=True)
    return figures


def bench_baseline(workdir: Path, task: str) -> dict:
    path = DATA / "gue" / task
    started = time.perf_counter()
    result = baseline(str(path / "train.csv"), str(path / "test.csv"), str(workdir / task.replace("/", "_")), dev=str(path / "dev.csv"))
    figures = {"task": task, "test_mcc": round(result["metrics"]["mcc"], 4), "C": result["settings"]["C"],
               "wall_seconds": round(time.perf_counter() - started, 2)}
    print(f"baseline {task}: {figures}", flush=True)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4, help="DNABERT-2's prom_core setting is 4 (tata: 10)")
    parser.add_argument("--threads", type=int, default=1, help="1 is fastest on this shared 2-core machine")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    load_before = os.getloadavg()
    print(f"cpu_count {os.cpu_count()}, loadavg {load_before}, torch {torch.__version__}, threads {args.threads}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        finetune_figures = bench_finetune(workdir, args.epochs, args.threads)
        baselines = [bench_baseline(workdir, task) for task in ("mouse/2", "tf/0")]
    load_after = os.getloadavg()
    print(f"loadavg after {load_after}", flush=True)
    print(json.dumps({
        "command": " ".join([Path(sys.executable).name, *sys.argv]), "cpu_count": os.cpu_count(),
        "loadavg_before": load_before, "loadavg_after": load_after, "model_config": BENCH_CONFIG,
        "finetune": finetune_figures, "baseline": baselines,
    }))


if __name__ == "__main__":
    main()
