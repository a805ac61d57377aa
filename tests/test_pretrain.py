"""Pretraining: a run leaves loadable HF models and metrics; a killed run resumes to the same weights."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import load_file

from cmgems import kmers


def write_corpus(root: Path, n_train: int = 600, n_val: int = 64, length: int = 60, seed: int = 0) -> Path:
    """A corpus directory of random ACGT chunks in the pipeline's shard format (two train shards)."""
    rng = np.random.default_rng(seed)
    alphabet = np.frombuffer(b"ACGT", dtype=np.uint8)

    def table(n: int, contig: str) -> pa.Table:
        seqs = [alphabet[rng.integers(0, 4, length)].tobytes() for _ in range(n)]
        starts = np.arange(n, dtype=np.int64) * length
        return pa.table({"contig": [contig] * n, "start": starts, "end": starts + length,
                         "sequence": pa.array(seqs, pa.binary())})

    for split, shards in (("train", {"chrA": n_train // 2, "chrB": n_train - n_train // 2}), ("validation", {"chrA": n_val})):
        (root / split).mkdir(parents=True)
        for contig, n in shards.items():
            pq.write_table(table(n, contig), root / split / f"{contig}.parquet", row_group_size=64)
    return root


def pretrain_cmd(corpus: Path, out: Path, masking: str = "dnabert", steps: int = 24, **extra) -> list[str]:
    args = {"model": "tiny", "masking": masking, "max-steps": steps, "batch-size": 8, "grad-accum": 2,
            "lr": 1e-3, "warmup-steps": 4, "eval-every": 6, "eval-sequences": 32, "save-every": 6,
            "max-positions": 64, "threads": 1, "seed": 7, **extra}
    cmd = [sys.executable, "-m", "cmgems.cli", "pretrain", "--corpus", str(corpus), "--out", str(out)]
    for key, value in args.items():
        cmd += [f"--{key}", str(value)]
    return cmd


def run(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def finished_run(corpus, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run") / "tiny"
    result = run(pretrain_cmd(corpus, out, milestones=12))
    assert result.returncode == 0, result.stderr
    return out


def test_run_leaves_loadable_models_metrics_and_summary(finished_run):
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    for name in ("model", "step-12"):
        model = AutoModelForMaskedLM.from_pretrained(finished_run / name)
        assert model.config.vocab_size == kmers.vocab_size(6) and model.config.num_hidden_layers == 2
        assert (finished_run / name / "model.safetensors").exists()
    tok = AutoTokenizer.from_pretrained(finished_run / "model")
    seq = "ACGTACGGATTTACGTTAGC"
    assert tok(seq)["input_ids"] == kmers.encode_batch([seq.encode()], 6, 64)[0].tolist()

    with (finished_run / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == list(range(1, 25))
    evaluated = [int(r["step"]) for r in rows if r["val_ppl"]]
    assert evaluated == [6, 12, 18, 24]
    assert all(r["phase"] == "dnabert" for r in rows)
    assert all(np.isfinite(float(r["loss"])) and 0 <= float(r["masked_acc"]) <= 1 for r in rows)
    summary = json.loads((finished_run / "summary.json").read_text())
    assert summary["kind"] == "pretraining" and summary["steps"] == 24
    assert summary["final_val_ppl"] == pytest.approx(float(rows[-1]["val_ppl"]))
    assert summary["sequences_per_step"] == 16
    assert list((finished_run / "tensorboard").glob("events.*"))


def wait_for_checkpoint(out: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while not (out / "checkpoint" / "state.pt").exists():
        assert proc.poll() is None, "the run ended before its first checkpoint"
        assert time.time() < deadline, "no checkpoint appeared"
        time.sleep(0.005)


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "sigterm"])
def test_killed_run_resumes_to_the_uninterrupted_weights(corpus, finished_run, tmp_path, how):
    out = tmp_path / "tiny"
    cmd = pretrain_cmd(corpus, out, milestones=12, steps=24)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    wait_for_checkpoint(out, proc)
    proc.send_signal(how)
    _, err = proc.communicate(timeout=120)
    if how == signal.SIGTERM:  # checkpoints at the end of the current step, exits for a restart
        assert proc.returncode == 128 + signal.SIGTERM, err.decode()[-2000:]
    assert not (out / "model").exists()
    interrupted_at = torch.load(out / "checkpoint" / "state.pt", weights_only=True)["step"]
    assert 0 < interrupted_at < 24

    result = run(cmd)
    assert result.returncode == 0, result.stderr
    assert f"resumed from {out / 'checkpoint'} at step {interrupted_at}" in result.stderr
    resumed, reference = load_file(out / "model" / "model.safetensors"), load_file(finished_run / "model" / "model.safetensors")
    assert resumed.keys() == reference.keys()
    for name in reference:
        assert torch.equal(resumed[name], reference[name]), name
    assert (out / "metrics.csv").read_text().count("\n") == 25
    ref_rows = (finished_run / "metrics.csv").read_text().splitlines()
    got_rows = (out / "metrics.csv").read_text().splitlines()
    strip = lambda rows: [r.rsplit(",", 1)[0] for r in rows]  # tokens_per_s is a timing
    assert strip(got_rows) == strip(ref_rows)


def test_torchrun_ddp_on_cpu(corpus, tmp_path):
    """Two gloo processes: each takes its share of every batch; rank 0 writes the outputs."""
    out = tmp_path / "ddp"
    cmd = pretrain_cmd(corpus, out, steps=6, **{"save-every": 3})
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "cmgems.cli"]
    result = run(torchrun + cmd[cmd.index("pretrain"):])
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["sequences_per_step"] == 8 * 2 * 2
    assert np.isfinite(summary["final_val_ppl"])
    assert result.stderr.count("processes), ") == 1  # logged once, by rank 0


def test_continued_pretraining_starts_from_the_checkpoint(corpus, finished_run, tmp_path):
    """--init-from loads a local HF checkpoint; with lr 0 at the first warmup step nothing moves."""
    out = tmp_path / "continued"
    result = run(pretrain_cmd(corpus, out, steps=1, **{"init-from": finished_run / "model", "warmup-steps": 4}))
    assert result.returncode == 0, result.stderr[-3000:]
    start, end = load_file(finished_run / "model" / "model.safetensors"), load_file(out / "model" / "model.safetensors")
    assert all(torch.equal(start[name], end[name]) for name in start)
    bad = run(pretrain_cmd(corpus, tmp_path / "bad", steps=1, **{"init-from": tmp_path}))
    assert bad.returncode == 1 and "not a Hugging Face model directory" in bad.stderr
