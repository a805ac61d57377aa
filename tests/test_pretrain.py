"""Pretraining: a run leaves loadable HF models and metrics; the experiment is the same at any process
count and after any kill; stops, checkpoints, settings and the run folder are safe; the step never
waits on the host."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from safetensors.torch import load_file
from torch.utils._python_dispatch import TorchDispatchMode

from cmgems import corpus as corpus_module
from cmgems import cli, distributed, kmers, pretrain
from cmgems.batches import MaskedSteps, StepLayout, mask_ids
from cmgems.checkpoint import Checkpoints, RunLock
from cmgems.errors import CmgemsError
from cmgems.masking import IGNORE_INDEX

STEPS = 20


def write_corpus(root: Path, n_train: int = 600, n_val: int = 64, length: int = 60, seed: int = 0,
                 contigs: dict[str, int] | None = None) -> Path:
    """A corpus directory of random ACGT chunks in the pipeline's format: Parquet shards per contig
    (train/, validation/) and the training index train.arrow."""
    rng = np.random.default_rng(seed)
    alphabet = np.frombuffer(b"ACGT", dtype=np.uint8)

    def table(n: int, contig: str) -> pa.Table:
        seqs = [alphabet[rng.integers(0, 4, length)].tobytes() for _ in range(n)]
        starts = np.arange(n, dtype=np.int64) * length
        return pa.table({"contig": [contig] * n, "start": starts, "end": starts + length,
                         "sequence": pa.array(seqs, pa.binary())})

    contigs = contigs or {"chrA": n_train // 2, "chrB": n_train - n_train // 2}
    for split, shards in (("train", contigs), ("validation", {"chrA": n_val})):
        (root / split).mkdir(parents=True)
        for contig, n in shards.items():
            pq.write_table(table(n, contig), root / split / f"{contig}.parquet", row_group_size=64)
    corpus_module.write_training_index(root)
    return root


def write_pmi(path: Path, seed: int = 0) -> Path:
    """A PMI table ranking the 6-mers in a random order (the columns token_ranks reads)."""
    vocab = kmers.vocabulary(6)[kmers.NUM_SPECIAL :]
    ranks = np.random.default_rng(seed).permutation(len(vocab)) + 1
    pq.write_table(pa.table({"ngram": vocab, "n": pa.array([6] * len(vocab), pa.int8()), "rank": ranks}), path)
    return path


def pretrain_args(corpus: Path, out: Path, masking: str = "dnabert", steps: int = STEPS, **extra) -> list[str]:
    args = {"model": "tiny", "masking": masking, "max-steps": steps, "sequences-per-step": 16, "batch-size": 8,
            "lr": 1e-3, "warmup-steps": 4, "eval-every": 5, "eval-sequences": 32, "save-every": 5, "log-every": 1,
            "max-positions": 64, "threads": 1, "workers": 1, "seed": 7, **extra}
    cmd = ["pretrain", "--corpus", str(corpus), "--out", str(out)]
    for key, value in args.items():
        cmd += [f"--{key}", str(value)]
    return cmd


def single(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "cmgems.cli", *args]


def torchrun(args: list[str], processes: int = 2) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
            "-m", "cmgems.cli", *args]


ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def run(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=600)


def weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(out / "model" / "model.safetensors")


def relative_l2(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    num = sum(float(((a[k].double() - b[k].double()) ** 2).sum()) for k in a)
    return (num / sum(float((b[k].double() ** 2).sum()) for k in b)) ** 0.5


def metric_rows(out: Path) -> list[dict]:
    with (out / "metrics.csv").open() as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def finished_run(corpus, tmp_path_factory) -> Path:
    """One process, 20 steps: the reference every other way of running the same config must reach."""
    out = tmp_path_factory.mktemp("run") / "tiny"
    result = run(single(pretrain_args(corpus, out, milestones=10)))
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def test_the_options_are_the_settings_fields():
    """`cmgems pretrain` parses to the Settings defaults (betas: a list, as given on the command line)."""
    from dataclasses import asdict

    parser = cli.build_parser(["pretrain"])
    args = parser.parse_args(["pretrain", "--corpus", "c", "--out", "o"])
    parsed = asdict(pretrain.settings_from_args(args))
    assert parsed == {**asdict(pretrain.Settings(corpus="c", out="o")), "betas": [0.9, 0.98]}
    args = parser.parse_args(["pretrain", "--corpus", "c", "--out", "o", "--masking-options", '{"threshold": 1}',
                              "--betas", "0.8", "0.9", "--milestones", "--compile", "--max-steps", "7"])
    assert (args.masking_options, args.betas, args.milestones, args.compile, args.max_steps) == (
        {"threshold": 1}, [0.8, 0.9], [], "inductor", 7)


def test_run_leaves_loadable_models_metrics_and_summary(finished_run):
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    for name in ("model", "step-10"):
        model = AutoModelForMaskedLM.from_pretrained(finished_run / name)
        assert model.config.vocab_size == kmers.vocab_size(6) and model.config.num_hidden_layers == 2
        assert (finished_run / name / "model.safetensors").exists()
    tok = AutoTokenizer.from_pretrained(finished_run / "model")
    seq = "ACGTACGGATTTACGTTAGC"
    assert tok(seq)["input_ids"] == kmers.encode_batch([seq.encode()], 6, 64)[0].tolist()

    rows = metric_rows(finished_run)
    assert [int(r["step"]) for r in rows] == list(range(1, STEPS + 1))
    evaluated = [r for r in rows if r["val_ppl"]]
    assert [int(r["step"]) for r in evaluated] == [5, 10, 15, 20]
    assert all(r["ref_val_ppl"] for r in evaluated)  # the reference masking, beside the run's own
    assert all(r["phase"] == "dnabert" for r in rows)
    assert all(np.isfinite(float(r["loss"])) and 0 <= float(r["masked_acc"]) <= 1 for r in rows)
    assert all(float(r["tokens_per_s"]) > 0 and r["mfu"] == "" for r in rows)  # no peak FLOPs known for a CPU
    summary = json.loads((finished_run / "summary.json").read_text())
    assert summary["kind"] == "pretraining" and summary["steps"] == STEPS
    assert summary["final_val_ppl"] == pytest.approx(float(rows[-1]["val_ppl"]))
    assert (summary["world_size"], summary["micro_batch"], summary["accumulation"], summary["sequences_per_step"]) == (1, 8, 2, 16)
    assert summary["model_tflops_per_s"] > 0 and summary["mfu"] is None
    assert list((finished_run / "tensorboard").glob("events.*"))
    checkpoints = sorted(p.name for p in (finished_run / "checkpoint").iterdir())
    assert checkpoints == ["latest", "step-00000015", "step-00000020"]  # keeps 2


# ---------------------------------------------------------------------------- the same experiment
def test_two_processes_train_the_same_model_as_one(corpus, finished_run, tmp_path):
    """16 sequences per step: 8 x 2 accumulation on one process, 8 x 1 on each of two (gloo)."""
    out = tmp_path / "ddp"
    result = run(torchrun(pretrain_args(corpus, out)))
    assert result.returncode == 0, result.stderr[-3000:]
    assert relative_l2(weights(out), weights(finished_run)) < 1e-4
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["world_size"], summary["accumulation"], summary["sequences_per_step"]) == (2, 1, 16)
    assert result.stderr.count("8 per process x 2 processes; micro-batches: 1 of at most 8") == 1  # once, by the main process
    one, two = metric_rows(finished_run), metric_rows(out)
    for key in ("loss", "masked_acc", "val_ppl", "ref_val_ppl"):  # global metrics: the same
        a = [float(r[key]) for r in one if r[key]]
        assert np.allclose(a, [float(r[key]) for r in two if r[key]], rtol=1e-4), key


def test_three_processes_with_uneven_shares_train_the_same_model_as_one(corpus, finished_run, tmp_path):
    """16 sequences per step over 3 processes (6, 5 and 5, each one micro-batch of at most 8): the
    loss is normalised over the whole step, so the weights are the one-process run's."""
    out = tmp_path / "ddp3"
    result = run(torchrun(pretrain_args(corpus, out), processes=3))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "5 or 6 per process x 3 processes; micro-batches: 1 of at most 8" in result.stderr
    assert relative_l2(weights(out), weights(finished_run)) < 1e-4


def test_uneven_shares_cover_every_sequence_of_a_step_once():
    """250 over 8 processes (the paper's step on 8 GPUs): 32 or 31 each, micro-batches of at most 10."""
    layouts = [StepLayout(250, 10, 8, r) for r in range(8)]
    assert [lay.sequences for lay in layouts] == [32, 32] + [31] * 6
    assert layouts[0].sizes(0) == [8, 8, 8, 8] and layouts[7].sizes(7) == [8, 8, 8, 7]
    lengths = np.random.default_rng(0).integers(5, 510, 250)
    parts = [lay.micro_batches(4, lengths) for lay in layouts]
    assert sorted(np.concatenate(sum(parts, [])).tolist()) == list(range(750, 1000))
    assert all(len(mb) <= 10 for part in parts for mb in part)
    # even splits are unchanged: micro-batches of exactly batch_size, dealt in turn
    assert StepLayout(250, 10).sizes(0) == [10] * 25 and StepLayout(250, 25, 2).accumulation == 5
    whole = StepLayout(16, 4).micro_batches(1, lengths[:16])
    assert [mb.tolist() for mb in StepLayout(16, 4, 2, 1).micro_batches(1, lengths[:16])] == [whole[1].tolist(), whole[3].tolist()]
    with pytest.raises(CmgemsError, match="sequences_per_step 3 is fewer than the 4 processes"):
        StepLayout(3, 10, 4)


def test_validation_batches_are_the_same_at_any_process_count():
    for n, size in ((32, 6), (7, 10), (0, 3), (25, 1)):
        whole = [b.tolist() for b in pretrain.validation_batches(n, size, distributed.Dist())]
        assert sum(whole, []) == list(range(n)) and all(len(b) == size for b in whole[:-1])
        for world in (2, 3, 4):
            parts = [pretrain.validation_batches(n, size, distributed.Dist(rank=r, world_size=world)) for r in range(world)]
            assert sorted(b.tolist() for part in parts for b in part) == sorted(whole)


def test_perplexity_as_the_mean_of_batch_means(corpus, tmp_path):
    """eval_batch_means N: exp of the mean over batches of N validation sequences of each batch's mean
    loss (the released evaluate()), not of the loss over all masked tokens."""
    s = pretrain.Settings(corpus=str(corpus), out=str(tmp_path / "m"), model="tiny", masking="dnabert", max_steps=5,
                          sequences_per_step=16, batch_size=8, max_positions=64, eval_sequences=32, eval_batch_means=6,
                          workers=0)
    r = pretrain.build(s, distributed.Dist())
    assert [len(positions) for positions, _ in r.validation] == [6, 6, 6, 6, 6, 2]
    means, total, masked = [], 0.0, 0
    with torch.no_grad():
        for positions, ids in r.validation:
            batch = mask_ids(ids, positions, r.strategy, r.step, s.seed + pretrain.EVAL_SEED_OFFSET)
            loss, _ = r.objective(batch["input_ids"], batch["masked_positions"], batch["masked_ids"], batch["padded"])
            means.append(float(loss) / len(batch["masked_ids"]))
            total, masked = total + float(loss), masked + len(batch["masked_ids"])
    row = pretrain.validate(r)
    assert row["val_loss"] == pytest.approx(np.mean(means), rel=1e-6)
    assert row["val_ppl"] == pytest.approx(np.exp(np.mean(means)), rel=1e-6)
    assert row["val_loss"] != pytest.approx(total / masked, rel=1e-6)  # the token mean differs
    token_loss, _, _ = pretrain.evaluate(r, r.strategy, s.seed + pretrain.EVAL_SEED_OFFSET)
    assert token_loss == pytest.approx(total / masked, rel=1e-6)
    with pytest.raises(CmgemsError, match="eval-batch-means"):
        pretrain.build(pretrain.Settings(**{**s.__dict__, "eval_batch_means": -1}), distributed.Dist())


def test_mean_of_batch_means_does_not_depend_on_the_process_count(corpus, tmp_path):
    """With lr 0 (the same weights), 1 and 2 processes report the same mean of batch means."""
    rows = {}
    for n, cmd in ((1, single), (2, torchrun)):
        out = tmp_path / f"p{n}"
        result = run(cmd(pretrain_args(corpus, out, steps=5, lr=0, **{"eval-batch-means": 5, "save-every": 100})))
        assert result.returncode == 0, result.stderr[-3000:]
        rows[n] = metric_rows(out)[-1]
    assert float(rows[1]["val_ppl"]) == pytest.approx(float(rows[2]["val_ppl"]), rel=1e-7)


def test_layouts_give_every_step_the_same_sequences_and_masks(corpus):
    """Which sequences a step trains on, and their masks, do not depend on processes, micro-batches
    or worker processes."""
    sequences = corpus_module.TrainingSequences(corpus)
    strategy = pretrain.masking.build("dnabert", k=6)

    def step_contents(micro: int, world: int, step: int = 3) -> dict:
        contents = {}
        for rank in range(world):
            steps = MaskedSteps(sequences, StepLayout(16, micro, world, rank), strategy, 7, 6, 64, step, step)
            item = steps[0]
            for positions, mb in zip(steps.micro_positions(step), item["micro"]):
                labels = torch.full(mb["input_ids"].shape, IGNORE_INDEX).view(-1)
                labels[mb["masked_positions"]] = mb["masked_ids"]
                for pos, row, ids in zip(positions, labels.view(mb["input_ids"].shape), mb["input_ids"]):
                    contents[int(pos)] = (ids[ids != 0].tolist(), row[ids != 0].tolist())
        return contents

    reference = step_contents(16, 1)
    assert sorted(reference) == list(range(32, 48))
    assert step_contents(8, 1) == step_contents(4, 2) == step_contents(2, 4) == reference


def test_gradient_does_not_depend_on_how_a_step_is_split(corpus, tmp_path):
    """One step of 16 sequences as 1 x 16 and as 4 x 4 micro-batches: the same update."""
    dist = distributed.Dist()

    def one_step(micro: int) -> dict:
        s = pretrain.Settings(corpus=str(corpus), out=str(tmp_path / f"m{micro}"), model="tiny", masking="dnabert",
                              max_steps=5, sequences_per_step=16, batch_size=micro, max_positions=64,
                              eval_sequences=8, workers=0, warmup_steps=0, seed=3)
        r = pretrain.build(s, dist)
        pretrain.train_step(r, pretrain.Batches(r).next())
        return {k: v.detach().clone() for k, v in r.model.state_dict().items()}

    assert relative_l2(one_step(4), one_step(16)) < 1e-6


def test_after_a_curriculum_switch_the_workers_mask_with_the_new_phase(corpus, tmp_path):
    """Data-loader workers hold a copy of the curriculum: after it switches, the steps they prefetched
    (drawn with the old phase) are dropped and the loader starts again."""
    s = pretrain.Settings(corpus=str(corpus), out=str(tmp_path / "cm"), model="tiny", masking="cm_gems",
                          masking_options={"threshold": 1e9}, pmi=str(write_pmi(tmp_path / "pmi.parquet")),
                          max_steps=8, sequences_per_step=16, batch_size=8, max_positions=64, eval_sequences=8,
                          workers=1)
    r = pretrain.build(s, distributed.Dist())
    batches = pretrain.Batches(r)
    for _ in range(3):
        pretrain.train_step(r, batches.next())
    r.strategy.observe_validation(3, 10.0)
    r.strategy.observe_validation(3, 10.5)  # switched at step 3: steps 4.. use global_pmi
    batch = batches.next()
    assert (batch["step"], batch["phase"]) == (4, "global_pmi")
    expected = pretrain.masking.build("global_pmi", k=6, token_ranks=pretrain.token_ranks(s))
    mb, positions = batch["micro"][0], pretrain.MaskedSteps(r.corpus, r.layout, r.strategy, s.seed, 6, 64, 4, 4).micro_positions(4)[0]
    ids = torch.from_numpy(kmers.encode_batch(r.corpus.get(corpus_module.training_rows(positions, len(r.corpus), s.seed)), 6, 64))
    assert torch.equal(mb["masked_positions"], mask_ids(ids, positions, expected, 4, s.seed)["masked_positions"])


def test_compiled_training_step_equals_eager(corpus, tmp_path):
    """--compile traces the training step with TorchDynamo (here its plain "eager" backend, so the
    kernels are the same and so are the weights; a GPU run uses inductor)."""

    def two_steps(backend: str) -> dict:
        s = pretrain.Settings(corpus=str(corpus), out=str(tmp_path / f"c{backend}"), model="tiny", masking="dnabert",
                              max_steps=5, sequences_per_step=16, batch_size=8, max_positions=64, eval_sequences=8,
                              workers=0, compile=backend)
        r = pretrain.build(s, distributed.Dist())
        batches = pretrain.Batches(r)
        for _ in range(2):
            pretrain.train_step(r, batches.next())
        return {k: v.detach().clone() for k, v in r.model.state_dict().items()}

    compiled, eager = two_steps("eager"), two_steps("")
    assert all(torch.equal(compiled[k], eager[k]) for k in eager)


# ------------------------------------------------------------------------------------- no host sync
DATA_DEPENDENT_OPS = {"aten._local_scalar_dense", "aten.nonzero", "aten.nonzero_static", "aten.masked_select",
                      "aten._unique2", "aten.unique_dim", "aten.unique_consecutive", "aten.repeat_interleave",
                      "aten.bincount", "aten.histc", "aten.masked_scatter_"}


class HostSyncs(TorchDispatchMode):
    """Records ops whose output shape or value must be read back to the host (on a GPU, a sync):
    .item()/bool()/float() of a tensor, nonzero, boolean indexing, unique, bincount, ... Tensors in
    `allowed` are exempt (the optimizer's CPU step counters)."""

    def __init__(self, allowed=()):
        super().__init__()
        self.allowed, self.seen = {id(t) for t in allowed}, []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func.overloadpacket._qualified_op_name.replace("::", ".")
        tensors = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]
        if name in DATA_DEPENDENT_OPS and not any(id(t) in self.allowed for t in tensors):
            self.seen.append(name)
        if name.startswith("aten.index") and any(
            isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in (args[1] if len(args) > 1 and isinstance(args[1], (list, tuple)) else ())
        ):
            self.seen.append(f"{name} (boolean index)")
        return func(*args, **kwargs)


def test_training_iterations_never_read_device_values_but_at_log_eval_and_save_steps(corpus, tmp_path, monkeypatch):
    """Whole iterations of the loop (step, log, validation, checkpoint check): no data-dependent op and no
    device sync (`distributed.synchronize`, `distributed.host_read`, the loop's only ways to one) but at
    the steps that log, validate or save. The batches come from the data workers (CPU) in a real run."""
    s = pretrain.Settings(corpus=str(corpus), out=str(tmp_path / "sync"), model="tiny", masking="dnabert",
                          max_steps=12, sequences_per_step=16, batch_size=8, max_positions=64, eval_sequences=8,
                          workers=0, log_every=3, eval_every=6, save_every=4, milestones=[5])
    Path(s.out).mkdir()
    r = pretrain.build(s, distributed.Dist())
    steps, stop, writer = pretrain.Batches(r), pretrain.StopRequest(), pretrain.LogWriter(r)
    syncs = []
    for name in ("synchronize", "host_read"):
        monkeypatch.setattr(distributed, name, lambda x, name=name, f=getattr(distributed, name): syncs.append(name) or f(x))
    pretrain.train_step(r, steps.next())  # the optimizer's state exists from here on
    counters = [state["step"] for state in r.optimizer.state.values()]
    seen = {}
    for _ in range(s.max_steps - 1):
        batch = steps.next()
        syncs.clear()
        with HostSyncs(allowed=counters) as ops:
            pretrain.train_step(r, batch)
            pretrain.log_and_validate(r, writer)
            pretrain.checkpoint_or_stop(r, stop)
        seen[r.step] = (ops.seen, list(syncs))
    writer.close()
    quiet = [t for t in seen if t % 3 and t % 4 and t != 5]
    assert quiet == [2, 7, 10, 11]
    assert all(seen[t] == ([], []) for t in quiet), {t: seen[t] for t in quiet}
    assert "host_read" in seen[3][1] and "synchronize" in seen[4][1] and "synchronize" in seen[5][1]
    with HostSyncs(allowed=counters) as ops:  # the detector sees what the old step did
        labels = torch.full((2, 8), IGNORE_INDEX)
        labels[0, 3] = 7
        _ = labels[labels != IGNORE_INDEX]
        float(labels.sum())
    assert "aten._local_scalar_dense" in ops.seen and any("boolean index" in s or "nonzero" in s for s in ops.seen)


# --------------------------------------------------------------------------- kills, stops, resumes
def child_pids(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        out += [int(c) for c in (task / "children").read_text().split()]
    return out


def rank_pid(torchrun_pid: int, rank: int) -> int:
    for pid in child_pids(torchrun_pid):
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        if f"RANK={rank}".encode() in environ:
            return pid
    raise AssertionError(f"no rank {rank} process under {torchrun_pid}")


def wait_for_first_checkpoint(proc: subprocess.Popen, out: Path, output=lambda: "") -> None:
    """Wait until run `out` has a checkpoint; fail if `proc` ends first (with `output()`) or after 300 s."""
    deadline = time.time() + 300
    while not (out / "checkpoint" / "latest").exists():
        assert proc.poll() is None, "the run ended before its first checkpoint:\n" + output()[-3000:]
        assert time.time() < deadline, "no checkpoint appeared"
        time.sleep(0.005)


def start_and_signal(cmd: list[str], out: Path, how: int, target=lambda proc: proc.pid) -> subprocess.CompletedProcess:
    """Start `cmd`, send `how` to target(proc) once the first checkpoint exists, wait for the exit."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=ENV)
    wait_for_first_checkpoint(proc, out, lambda: proc.stderr.read().decode())
    os.kill(target(proc), how)
    _, err = proc.communicate(timeout=300)
    return subprocess.CompletedProcess(cmd, proc.returncode, "", err.decode())


def checkpoint_step(out: Path) -> int:
    latest = (out / "checkpoint" / "latest").read_text().strip()
    return torch.load(out / "checkpoint" / latest / "state.pt", weights_only=True)["step"]


def test_killed_run_resumes_to_the_uninterrupted_weights(corpus, finished_run, tmp_path):
    out = tmp_path / "tiny"
    cmd = single(pretrain_args(corpus, out, milestones=10))
    killed = start_and_signal(cmd, out, signal.SIGKILL)
    assert killed.returncode == -signal.SIGKILL
    assert not (out / "model").exists()
    interrupted_at = checkpoint_step(out)
    assert 0 < interrupted_at < STEPS

    result = run(cmd)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"at step {interrupted_at}" in result.stderr
    resumed, reference = weights(out), weights(finished_run)
    for name in reference:
        assert torch.equal(resumed[name], reference[name]), name
    strip = lambda rows: [{k: v for k, v in r.items() if k != "tokens_per_s"} for r in rows]  # a timing
    assert strip(metric_rows(out)) == strip(metric_rows(finished_run))


def test_a_kill_inside_a_log_interval_and_a_lost_running_log_resume_to_the_uninterrupted_metrics(corpus, tmp_path):
    """Checkpoints (every 4 steps) fall between logs (every 7 steps, and at validations every 5): the
    row after the resume sums the same steps as the uninterrupted run's. The running log is deleted
    before the resume: metrics.csv and summary.json are rebuilt from the checkpoint's rows."""
    def command(out: Path) -> list[str]:
        return single(pretrain_args(corpus, out, **{"log-every": 7, "save-every": 4}))

    reference, out = tmp_path / "reference", tmp_path / "killed"
    assert run(command(reference)).returncode == 0
    killed = start_and_signal(command(out), out, signal.SIGKILL)
    assert killed.returncode == -signal.SIGKILL
    interrupted_at = checkpoint_step(out)
    assert interrupted_at % 7 and interrupted_at % 5, "the checkpoint is not a log step"
    (out / "metrics.running.csv").unlink()

    result = run(command(out))
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"at step {interrupted_at}" in result.stderr
    timings = ("tokens_per_s", "mfu")
    strip = lambda rows: [{k: v for k, v in r.items() if k not in timings} for r in rows]
    assert [int(r["step"]) for r in metric_rows(out)] == [5, 7, 10, 14, 15, 20]
    assert strip(metric_rows(out)) == strip(metric_rows(reference))
    summary, expected = (json.loads((o / "summary.json").read_text()) for o in (out, reference))
    assert summary["final_loss"] == expected["final_loss"] is not None
    assert summary["final_val_ppl"] == expected["final_val_ppl"] is not None


def test_sigterm_to_one_process_stops_all_at_one_step_and_resumes_on_one(corpus, finished_run, tmp_path):
    """SIGTERM to rank 1 of 2: both checkpoint the same step and exit non-zero (Snakemake retries);
    the run then continues on one process to the weights of the one-process run."""
    out = tmp_path / "ddp"
    args = pretrain_args(corpus, out)
    stopped = start_and_signal(torchrun(args), out, signal.SIGTERM, lambda proc: rank_pid(proc.pid, 1))
    assert stopped.returncode != 0
    step = checkpoint_step(out)
    assert 0 < step < STEPS, "stopped before the end"
    assert f"signal 15: checkpoint saved at step {step}, exiting for a restart" in stopped.stderr
    state = torch.load(out / "checkpoint" / f"step-{step:08d}" / "state.pt", weights_only=True)
    assert state["world_size"] == 2 and len(state["rng"]) == 2
    assert not torch.equal(state["rng"][0]["torch"], state["rng"][1]["torch"])  # per-process dropout streams

    resumed = run(single(args))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "a run of 2 processes resumed on 1" in resumed.stderr
    assert relative_l2(weights(out), weights(finished_run)) < 1e-4
    assert [int(r["step"]) for r in metric_rows(out)] == list(range(1, STEPS + 1))


def test_sigterm_to_one_process_then_resume_on_two(corpus, finished_run, tmp_path):
    out = tmp_path / "one_then_two"
    args = pretrain_args(corpus, out)
    stopped = start_and_signal(single(args), out, signal.SIGTERM)
    assert stopped.returncode == 128 + signal.SIGTERM, stopped.stderr[-3000:]
    resumed = run(torchrun(args))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert relative_l2(weights(out), weights(finished_run)) < 1e-4


# ------------------------------------------------------------------------------------- checkpoints
def test_checkpoints_rotate_and_a_corrupt_latest_falls_back_to_the_previous(tmp_path, caplog):
    checkpoints = Checkpoints(tmp_path / "checkpoint", keep=2)
    for step in range(1, 5):
        checkpoints.save(step, {"step": step, "weights": torch.full((100,), float(step))})
    assert sorted(p.name for p in checkpoints.directory.iterdir()) == ["latest", "step-00000003", "step-00000004"]
    assert checkpoints.load()[0]["step"] == 4

    latest = checkpoints.directory / "step-00000004" / "state.pt"
    latest.write_bytes(latest.read_bytes()[:50])  # truncated, as by a full disk
    state, where = checkpoints.load()
    assert state["step"] == 3 and where.name == "step-00000003"
    assert str(latest) in caplog.text and "unreadable" in caplog.text

    previous = checkpoints.directory / "step-00000003" / "state.pt"
    previous.write_bytes(b"garbage")
    with pytest.raises(CmgemsError, match="no readable checkpoint") as err:
        checkpoints.load()
    assert str(latest) in str(err.value) and str(previous) in str(err.value) and "delete" in str(err.value)


def test_a_kill_between_writing_and_publishing_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    checkpoints = Checkpoints(tmp_path / "checkpoint", keep=1)
    checkpoints.save(1, {"step": 1})
    real = os.replace

    def die_on_pointer(src, dst):
        if Path(dst).name == "latest":
            raise KeyboardInterrupt  # killed after the new directory, before the pointer
        return real(src, dst)

    monkeypatch.setattr(os, "replace", die_on_pointer)
    with pytest.raises(KeyboardInterrupt):
        checkpoints.save(2, {"step": 2})
    monkeypatch.setattr(os, "replace", real)
    assert checkpoints.load()[0]["step"] == 1  # the pointer still names step 1, which was not deleted
    assert not [p for p in checkpoints.directory.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("error", [RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 4416 vs 4310"),
                                   OSError(28, "No space left on device")], ids=["torch-save", "os"])
def test_a_full_disk_while_checkpointing_is_a_sentence_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch, error):
    checkpoints = Checkpoints(tmp_path / "checkpoint", keep=1)
    checkpoints.save(1, {"step": 1})

    def full(obj, path):
        Path(path).write_bytes(b"the first bytes")
        raise error

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(CmgemsError, match=r"step-00000002/state.pt: cannot write the checkpoint \(.*\); the disk may be full. "
                                          r"Nothing was half-written: free space and rerun"):
        checkpoints.save(2, {"step": 2})
    monkeypatch.undo()
    assert sorted(p.name for p in checkpoints.directory.iterdir()) == ["latest", "step-00000001"]
    assert checkpoints.load()[0]["step"] == 1


def test_a_changed_setting_is_refused_naming_the_key(corpus, finished_run, tmp_path):
    out = tmp_path / "finished"
    shutil.copytree(finished_run, out)
    result = run(single(pretrain_args(corpus, out, lr=2e-3)))
    assert result.returncode == 1
    assert "lr: 0.001 -> 0.002" in result.stderr and f"delete {out / 'checkpoint'}" in result.stderr
    assert "Traceback" not in result.stderr
    # settings that do not change the experiment may differ
    again = run(single(pretrain_args(corpus, out, milestones=10, **{"batch-size": 4, "workers": 0})))
    assert again.returncode == 0, again.stderr[-3000:]
    assert torch.equal(weights(out)["bert.embeddings.word_embeddings.weight"],
                       weights(finished_run)["bert.embeddings.word_embeddings.weight"])


def test_a_second_trainer_is_refused(corpus, tmp_path):
    out = tmp_path / "busy"
    with RunLock(out):
        result = run(single(pretrain_args(corpus, out, steps=2)))
    assert result.returncode == 1 and "being written by another trainer" in result.stderr
    assert f"pid {os.getpid()}" in result.stderr
    assert not (out / "metrics.running.csv").exists()


def test_run_folder_files_are_not_written_through_links(corpus, tmp_path):
    """A link in place of metrics.running.csv or .lock is refused; the file it points to is untouched."""
    outside = tmp_path / "outside.txt"
    outside.write_text("not the run's\n")
    out = tmp_path / "linked"
    out.mkdir()
    (out / "metrics.running.csv").symlink_to(outside)
    result = run(single(pretrain_args(corpus, out, steps=2)))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"{out / 'metrics.running.csv'}: is a symbolic link; cmgems writes this file itself" in result.stderr
    (out / ".lock").unlink()
    (out / ".lock").symlink_to(outside)
    with pytest.raises(CmgemsError, match=r"linked/.lock: is a symbolic link"):
        with RunLock(out):
            pass
    assert outside.read_text() == "not the run's\n"
    (out / "metrics.running.csv").unlink()
    (out / "tensorboard").symlink_to(tmp_path, target_is_directory=True)
    resumed = SimpleNamespace(s=SimpleNamespace(out=str(out), max_steps=2), rows=[], step=0)
    with pytest.raises(CmgemsError, match=r"linked/tensorboard: is a symbolic link; cmgems writes this folder itself"):
        pretrain.LogWriter(resumed)
    assert not list(tmp_path.glob("events.*"))


def test_a_file_system_without_flock_is_explained(tmp_path, monkeypatch, caplog):
    import errno
    import fcntl

    def no_locks(*args):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(fcntl, "flock", no_locks)
    with pytest.raises(CmgemsError, match=r"does not support file locks .*Lustre.*CMGEMS_NO_RUN_LOCK=1"):
        with RunLock(tmp_path / "lustre"):
            pass
    monkeypatch.setenv("CMGEMS_NO_RUN_LOCK", "1")
    with RunLock(tmp_path / "lustre"):
        pass
    assert "is not locked" in caplog.text


def test_attention_flops_count_each_sequence_length():
    """Two sequences of 100 and 500 tokens cost more attention than two of the mean length, 300."""
    from cmgems import flops, kmers, models

    config = models.bert_config("dnabert6", kmers.vocab_size(6))
    mixed = flops.training_flops(config, 600, 100**2 + 500**2, 90)
    mean = flops.training_flops(config, 600, 2 * 300**2, 90)
    d, layers = config.hidden_size, config.num_hidden_layers
    assert mixed - mean == pytest.approx(3 * layers * 4 * d * (100**2 + 500**2 - 2 * 300**2))
    assert flops.mfu(mixed, 1, 989.0) == pytest.approx(mixed / 989e12)


def test_an_old_style_checkpoint_is_reported(tmp_path):
    (tmp_path / "checkpoint").mkdir()
    torch.save({"step": 3}, tmp_path / "checkpoint" / "state.pt")
    with pytest.raises(CmgemsError, match="older cmgems"):
        Checkpoints(tmp_path / "checkpoint").load()


def test_a_checkpoint_without_metrics_rows_is_reported(corpus, finished_run, tmp_path):
    out = tmp_path / "older"
    shutil.copytree(finished_run, out)
    latest = out / "checkpoint" / (out / "checkpoint" / "latest").read_text().strip() / "state.pt"
    state = torch.load(latest, weights_only=True)
    del state["rows"], state["window"]
    torch.save(state, latest)
    result = run(single(pretrain_args(corpus, out, milestones=10)))
    assert result.returncode == 1 and "written by an older cmgems, without the run's metrics rows" in result.stderr
    assert f"delete {out / 'checkpoint'}" in result.stderr and "Traceback" not in result.stderr


# ------------------------------------------------------------------------------- fail before work
def test_gpus_requested_but_none_visible(corpus, tmp_path, monkeypatch):
    result = run(single(pretrain_args(corpus, tmp_path / "gpu", steps=2, gpus=1)))
    assert result.returncode == 1
    assert "GPUs were requested (1 requested (config resources.gpu))" in result.stderr
    assert "CPU-only build" in result.stderr and "CONDA_OVERRIDE_CUDA" in result.stderr
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(CmgemsError, match="SLURM_JOB_GPUS=0,1"):
        distributed.check_gpus_visible(0, {"SLURM_JOB_GPUS": "0,1"})
    monkeypatch.setattr(torch.version, "cuda", "12.6")
    with pytest.raises(CmgemsError, match="built for CUDA 12.6 but finds no device.*CUDA_VISIBLE_DEVICES=''"):
        distributed.check_gpus_visible(0, {"SLURM_GPUS_ON_NODE": "4", "CUDA_VISIBLE_DEVICES": ""})
    distributed.check_gpus_visible(0, {})  # nothing requested: CPU is fine
    assert distributed.slurm_gpus({"SLURM_GPUS": "a100:2"}) == (2, "SLURM_GPUS=a100:2")
    assert distributed.slurm_gpus({"SLURM_JOB_GPUS": "0"}) == (1, "SLURM_JOB_GPUS=0")  # one GPU, index 0


def test_continued_pretraining_starts_from_the_checkpoint(corpus, finished_run, tmp_path):
    """--init-from loads a local HF checkpoint; with lr 0 at the first warmup step nothing moves."""
    out = tmp_path / "continued"
    result = run(single(pretrain_args(corpus, out, steps=1, **{"init-from": finished_run / "model", "warmup-steps": 4})))
    assert result.returncode == 0, result.stderr[-3000:]
    start, end = weights(finished_run), weights(out)
    assert all(torch.equal(start[name], end[name]) for name in start)
    bad = run(single(pretrain_args(corpus, tmp_path / "bad", steps=1, **{"init-from": tmp_path})))
    assert bad.returncode == 1 and "not a Hugging Face model directory" in bad.stderr


# --------------------------------------------------------------------------------------------- GPU
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_step_has_no_host_sync(corpus, tmp_path):
    s = pretrain.Settings(corpus=str(corpus), out=str(tmp_path / "cuda"), model="tiny", masking="dnabert",
                          max_steps=5, sequences_per_step=16, batch_size=8, max_positions=64, eval_sequences=8,
                          workers=1, gpus=1)
    r = pretrain.build(s, distributed.setup(1))
    steps = pretrain.Batches(r)
    pretrain.train_step(r, steps.next())
    batch = steps.next()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        pretrain.train_step(r, batch)
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_a_repeated_stop_signal_is_one_request_and_a_late_second_ctrl_c_interrupts(monkeypatch):
    """Under SLURM + torchrun a rank gets each stop signal twice: the second must not crash it before
    its checkpoint. A SIGINT more than REPEAT_S later (a user's second Ctrl-C) still interrupts."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)}
    try:
        now = [100.0]
        monkeypatch.setattr(pretrain.time, "monotonic", lambda: now[0])
        stop = pretrain.StopRequest()
        stop._handle(signal.SIGINT, None)
        stop._handle(signal.SIGINT, None)  # torchrun passing the same Ctrl-C on
        stop._handle(signal.SIGTERM, None)
        assert stop.signum == signal.SIGINT
        now[0] += pretrain.StopRequest.REPEAT_S + 1
        with pytest.raises(KeyboardInterrupt):
            stop._handle(signal.SIGINT, None)
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
