"""The report's tables for a synthetic paper-scale grid: time and peak memory of
`cmgems report --tables-only` (claims table, intervals and tests included).

The grid: 24 pretrained models (dnabert6 and logo x random, dnabert, genemask, global_pmi, cm_gems,
cm_step x 1,000 and 10,000 steps), one published checkpoint and the k-mer baseline, each with the
247 runs of the paper config (27 GUE tasks x seed 42, 220 few-shot runs: 5 data sets, 22 shot sizes
x 10 seeds): 6,422 runs. Every run has its metrics.json and a predictions.parquet of a realistic test
size (as `cmgems.metrics.write_results` writes them; sizes approximate those of GUE and the few-shot
test sets: 613 to 5,920 rows, 3 classes for splice), in the real results layout under a temporary
folder, with pretraining summaries. Predictions are synthetic: each run is right with a probability
set by its masking, model and budget (so that the claims table has differences to find), shifted per
task, plus noise. Then one `python -m cmgems.cli report --tables-only` process reads and reports it;
its wall time and peak RSS (getrusage of the child) are the figures. Target: <= 180 s and <= 4 GB.

Run: python benchmarks/bench_report.py [--keep DIR] (DIR: write the tree there and keep it; rerunning
with the same DIR reuses it). Prints figures, last line one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from cmgems import gue, layout, metrics, stats
from cmgems.layout import Grid, Model, Run

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO / "workflow")}
MASKINGS = {"random": 0.74, "dnabert": 0.75, "genemask": 0.77, "global_pmi": 0.76, "cm_gems": 0.79, "cm_step": 0.78}
SHIFT = {"dnabert6": 0.0, "logo": -0.06, 1000: -0.03, 10000: 0.0}
FEWSHOT_TESTS = {"Prom-core": (5920, 2), "Prom-300": (5920, 2), "Cohn-enh": (6000, 2), "Splice-40": (3000, 3),
                 "silencer": (1657, 2)}  # approximate test sizes, classes
FEWSHOT_SHOTS = {"silencer": (10, 50)}  # others: 10, 50, 100, 500, 1000


def gue_test(task: str) -> tuple[int, int]:
    """(approximate test rows, classes) of a GUE task."""
    group = gue.task_group(task)
    if "tata" in task and group in ("prom_core", "prom_300"):
        return 613, 2
    return {"EMP": (3000, 2), "prom_core": (5920, 2), "prom_300": (5920, 2), "splice": (4000, 3), "mouse": (800, 2),
            "tf": (1000, 2)}[group]


def grid() -> Grid:
    pretrained = tuple(Model("hg38", model, masking, steps) for model in ("dnabert6", "logo") for masking in MASKINGS
                       for steps in (1000, 10000))
    fewshot = tuple((d, shots, seed) for d in FEWSHOT_TESTS for shots in FEWSHOT_SHOTS.get(d, (10, 50, 100, 500, 1000))
                    for seed in range(10))
    return Grid(genomes=("hg38",), pretrained=pretrained, external=(Model(layout.EXTERNAL, "DNABERT6", "published", 0),),
                gue_tasks=tuple(gue.GUE_27), gue_seeds=(42,), fewshot=fewshot, baseline=True)


def accuracy_of(run: Run) -> float:
    """The synthetic chance that `run` predicts right."""
    if run.model is None:
        return 0.70
    if run.model.masking == "published":
        return 0.82
    return MASKINGS[run.model.masking] + SHIFT[run.model.model] + SHIFT[run.model.steps]


def write_run(root: Path, run: Run, labels: np.ndarray, right: float, rng: np.random.Generator) -> None:
    """metrics.json and predictions.parquet of `run`: right with probability `right`, else a random other class."""
    classes = int(labels.max()) + 1
    wrong = (labels + rng.integers(1, classes, len(labels))) % classes
    predictions = np.where(rng.random(len(labels)) < right, labels, wrong)
    scores = np.eye(classes, dtype=np.float32)[predictions] * 0.8 + rng.random((len(labels), classes), dtype=np.float32) * 0.1
    folder = Path(run.folder(root))
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(metrics.predictions_table(labels, scores), folder / layout.PREDICTIONS)
    confusion = stats.confusions(labels, predictions, classes)[0]
    accuracy = float(np.trace(confusion) / len(labels))
    model = run.model or layout.BASELINE_MODEL
    names = {"task": run.task} if run.kind == layout.GUE else {"dataset": run.task, "shots": run.shots}
    doc = {"kind": run.kind, **model._asdict(), **names, "seed": run.seed,
           "metrics": {"mcc": float(stats.mcc(confusion)), "accuracy": accuracy, "f1_macro": accuracy,
                       "precision_macro": accuracy, "recall_macro": accuracy, "auc": None},
           "n_train": 100, "n_test": len(labels), "train_seconds": 1.0}
    (folder / layout.RECORD).write_text(json.dumps(doc, indent=2) + "\n")


def write_tree(root: Path, g: Grid) -> int:
    """Every run of `g` (and the models' summaries) under `root`; returns the number of runs."""
    rng = np.random.default_rng(0)
    tests = {task: gue_test(task) for task in g.gue_tasks} | FEWSHOT_TESTS
    labels = {task: rng.integers(0, classes, n) for task, (n, classes) in tests.items()}
    offset = {task: rng.normal(0, 0.05) for task in tests}
    runs = g.runs()
    for run in runs:
        noise = rng.normal(0, 0.01)
        write_run(root, run, labels[run.task], float(np.clip(accuracy_of(run) + offset[run.task] + noise, 0.3, 0.99)), rng)
    for model in g.pretrained:
        Path(model.folder(root)).mkdir(parents=True, exist_ok=True)
        Path(model.summary(root)).write_text(json.dumps({**model._asdict(), "final_loss": 5.0, "final_val_ppl": 20.0,
                                                         "switch_step": None, "tokens_per_s": 1e4,
                                                         "train_seconds": 3600.0, "parameters": 86_000_000}))
    return len(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", help="write the results tree here and keep it (reused when it exists)")
    args = parser.parse_args()
    g = grid()
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(args.keep or scratch) / "results"
        start = time.perf_counter()
        n_runs = len(g.runs()) if (root / layout.BASELINE).exists() else write_tree(root, g)
        written = time.perf_counter() - start
        out = root / layout.REPORT_FOLDER
        command = [sys.executable, "-m", "cmgems.cli", "report", "--grid", g.to_json(), "--results", str(root),
                   "--out", str(out), "--published", str(REPO / "resources" / "published"), "--k", "6",
                   "--max-positions", "512", "--steps", "10000", "--tables-only"]
        start = time.perf_counter()
        result = subprocess.run(command, env=ENV, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        if result.returncode:
            sys.exit(result.stderr[-3000:])
        peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        claims = pd.read_csv(layout.table("claims", "csv", out))
        few = pd.read_csv(layout.table("fewshot", "csv", out))
        gue_rows = pd.read_csv(layout.table("gue", "csv", out))
    verdicts = claims["verdict"].value_counts().to_dict()
    print(f"grid: {len(g.pretrained)} pretrained models + {len(g.external)} published checkpoint + baseline, "
          f"{n_runs} runs (tree written in {written:.0f} s)")
    print(f"report --tables-only: {seconds:.1f} s wall, peak RSS {peak_mib:.0f} MiB (targets: <= 180 s, <= 4096 MiB)")
    print(f"claims: {len(claims)} rows, verdicts {verdicts}; GUE rows with a test-set interval: "
          f"{gue_rows['mcc_x100_low'].notna().sum()}/{len(gue_rows)}; few-shot means with an interval: "
          f"{few['mcc_x100_low'].notna().sum()}/{len(few)}")
    print(json.dumps({"benchmark": "report", "runs": n_runs, "pretrained": len(g.pretrained), "seconds": round(seconds, 1),
                      "peak_rss_mib": round(peak_mib), "claims_rows": len(claims), "verdicts": verdicts,
                      "load": round(os.getloadavg()[0], 2)}))


if __name__ == "__main__":
    main()
