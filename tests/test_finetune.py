"""cmgems.finetune (and cmgems.metrics): real-data end to end with a tiny random model, determinism,
bad input leaving no output, metrics against hand-computed values."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from cmgems import cli, kmers
from cmgems.errors import CmgemsError
from cmgems.finetune import Settings, finetune
from cmgems.labelled import read_labelled, write_labelled
from cmgems.metrics import classification_metrics

RECORD_KEYS = {
    "metrics",
    "dev_metrics",
    "best_epoch",
    "best_step",
    "selection",
    "n_train",
    "n_dev",
    "n_test",
    "train_seconds",
    "train_sequences_per_s",
    "inference_sequences_per_s",
    "settings",
}
METRICS = {"mcc", "accuracy", "f1_macro", "precision_macro", "recall_macro", "auc"}



def subset(src, dst, n, seed=0):
    """The first n rows of a random permutation of a labelled file, as a CSV."""
    seqs, labels = read_labelled(src)
    index = np.sort(np.random.default_rng(seed).permutation(len(seqs))[:n])
    write_labelled(dst, [seqs[i] for i in index], labels[index])
    return dst


def task_subsets(task, tmp_path, **sizes):
    """Random subsets of a GUE task's splits, e.g. task_subsets(task, tmp, train=500, dev=150)."""
    return [subset(task / f"{split}.csv", tmp_path / f"{split}.csv", n) for split, n in sizes.items()]


def check_outputs(out, n_test):
    """metrics.json has its fields, and its metrics equal those recomputed from predictions.parquet."""
    result = json.loads((out / "metrics.json").read_text())
    assert RECORD_KEYS <= result.keys() and set(result["metrics"]) == METRICS
    pred = pd.read_parquet(out / "predictions.parquet")
    labels, preds, scores = pred["label"].to_numpy(), pred["prediction"].to_numpy(), pred.filter(regex="^score_").to_numpy()
    assert len(labels) == result["n_test"] == n_test
    assert np.array_equal(preds, scores.argmax(axis=1)) and np.allclose(scores.sum(axis=1), 1, atol=1e-5)
    assert result["metrics"] == classification_metrics(labels, preds, scores)
    return result, labels


# --------------------------------------------------------------------------------------- metrics
def test_metrics_hand_computed():
    y_true, y_pred = [0, 0, 1, 1, 1], [0, 1, 1, 1, 0]
    scores = np.array([[0.9, 0.1], [0.4, 0.6], [0.2, 0.8], [0.3, 0.7], [0.6, 0.4]])
    m = classification_metrics(y_true, y_pred, scores)
    # TP 2, TN 1, FP 1, FN 1: MCC (2*1 - 1*1) / sqrt(3*3*2*2) = 1/6; per class P = R = F1 = 1/2, 2/3.
    assert m["mcc"] == pytest.approx(1 / 6)
    assert m["accuracy"] == pytest.approx(0.6)
    for key in ("f1_macro", "precision_macro", "recall_macro"):
        assert m[key] == pytest.approx(7 / 12)
    assert m["auc"] == pytest.approx(5 / 6)  # 5 of the 6 positive/negative pairs ordered right
    assert all(type(v) is float for v in m.values())
    assert "auc" not in classification_metrics(y_true, y_pred)


def test_metrics_multiclass_and_degenerate():
    y = [0, 1, 2, 2]
    scores = np.eye(3)[y] * 0.8 + 0.2 / 3
    m = classification_metrics(y, y, scores)
    assert m["mcc"] == pytest.approx(1.0) and m["auc"] == pytest.approx(1.0) and m["accuracy"] == 1.0
    assert classification_metrics([1, 1], [1, 0], np.array([[0.2, 0.8], [0.6, 0.4]]))["auc"] is None
    assert classification_metrics([0, 0, 1], [0, 0, 0])["mcc"] == 0.0


# ----------------------------------------------------------------------------------- the options
def test_the_options_are_the_settings_fields(tmp_path):
    """`cmgems finetune` parses to the Settings defaults; flags, the warmup pair and the choices as before."""
    from dataclasses import fields

    required = ["--model", "m", "--train", "t", "--test", "t", "--out", "o", "--max-length", "20"]
    args = cli.build_parser(["finetune"]).parse_args(["finetune", *required])
    defaults = Settings(model="m", train="t", test="t", out="o", max_length=20)
    assert {f.name: getattr(args, f.name) for f in fields(Settings) if f.name not in ("meta", "max_grad_norm")} == {
        f.name: getattr(defaults, f.name) for f in fields(Settings) if f.name not in ("meta", "max_grad_norm")}
    flags = ["--eval-every-epoch", "--trust-remote-code", "--hidden-dropout", "0.1", "--select-by", "mcc"]
    args = cli.build_parser(["finetune"]).parse_args(["finetune", *required, *flags])
    parsed = (args.eval_every_epoch, args.trust_remote_code, args.hidden_dropout, args.select_by)
    assert parsed == (True, True, 0.1, "mcc")
    for wrong in (["--warmup-steps", "2", "--warmup-ratio", "0.1"], ["--select-by", "auc"], ["--epochs", "x"]):
        with pytest.raises(SystemExit):
            cli.build_parser(["finetune"]).parse_args(["finetune", *required, *wrong])


def test_no_weight_decay_on_biases_and_layer_norms(tiny_model):
    """One rule for pretraining and fine-tuning (models.parameter_groups): the Trainer's, by name here."""
    from cmgems.finetune import load_classifier
    from cmgems.models import parameter_groups

    model = load_classifier(tiny_model, 2)
    decay, no_decay = ({id(p) for p in group["params"]} for group in parameter_groups(model, 0.01))
    names = {id(p): n for n, p in model.named_parameters()}
    assert {names[i] for i in no_decay} == {n for n in names.values() if n.endswith(("bias", "LayerNorm.weight"))}
    assert len(decay) + len(no_decay) == len(names) and not decay & no_decay


# ---------------------------------------------------------------------------------- model folder
def test_tiny_model_tokenizer(tiny_model):
    from transformers import AutoTokenizer

    assert kmers.read_k(tiny_model) == 6
    tok = AutoTokenizer.from_pretrained(tiny_model)
    seq = "ACGTTGCAAGGCTAN"
    assert tok(seq)["input_ids"] == kmers.encode_batch([seq.encode()], 6, 512)[0].tolist()


# ----------------------------------------------------------------------------------- end to end
@pytest.mark.slow
@pytest.mark.realdata
def test_gue_prom_core_tata_with_dev(tiny_model, shared_data, tmp_path):
    task = shared_data / "gue" / "prom" / "prom_core_tata"
    train, dev = task_subsets(task, tmp_path, train=500, dev=150)
    out = tmp_path / "run"
    meta = {
        "kind": "gue",
        "genome": "demo",
        "model": "tiny",
        "masking": "genemask",
        "steps": 200,
        "task": "prom_core_tata",
        "seed": 42,
    }
    argv = [
        "finetune",
        "--model",
        str(tiny_model),
        "--train",
        str(train),
        "--dev",
        str(dev),
        "--test",
        str(task / "test.csv"),
        "--out",
        str(out),
        "--max-length",
        "80",
        "--epochs",
        "1",
        "--lr",
        "5e-4",
        "--batch-size",
        "32",
        "--warmup-steps",
        "2",
        "--eval-steps",
        "6",
        "--seed",
        "42",
        "--threads",
        "1",
        "--meta",
        json.dumps(meta),
    ]
    assert cli.main(argv) == 0
    result, labels = check_outputs(out, 613)
    assert {k: result[k] for k in meta} == meta
    assert result["n_train"] == 500 and result["n_dev"] == 150
    assert set(result["dev_metrics"]) == METRICS | {"loss"}
    # 16 steps, evaluated at 6 and 12 only (no extra evaluation at the last step); lowest dev loss kept
    history = result["selection"]["evaluations"]
    assert [e["step"] for e in history] == [6, 12]
    assert result["selection"]["rule"] == "dev loss" and result["selection"]["select_by"] == "loss"
    lowest = min(history, key=lambda e: e["loss"])  # min() keeps the first of equals: the earliest
    assert result["best_step"] == lowest["step"] and result["dev_metrics"]["loss"] == lowest["loss"]
    assert result["best_epoch"] == pytest.approx(result["best_step"] / 16)
    assert result["settings"]["total_steps"] == 16 and result["settings"]["warmup"] == 2
    assert result["train_sequences_per_s"] > 0 and result["inference_sequences_per_s"] > 0
    assert labels.tolist() == read_labelled(task / "test.csv")[1].tolist()


@pytest.mark.slow
@pytest.mark.realdata
def test_fewshot_prom_core_10_shot(tiny_model, shared_data, tmp_path):
    root = shared_data / "fewshot" / "genemask" / "Prom-core"
    test = subset(root / "test.tsv", tmp_path / "test.csv", 300)
    out = tmp_path / "run"
    s = Settings(
        model=str(tiny_model),
        train=str(root / "10" / "train.tsv"),
        test=str(test),
        out=str(out),
        max_length=80,
        epochs=3,
        lr=1e-4,
        batch_size=5,
        warmup_ratio=0.1,
        seed=7,
        threads=1,
        meta={"kind": "fewshot", "dataset": "Prom-core", "shots": 10},
    )
    finetune(s)
    result, _ = check_outputs(out, 300)
    assert result["dataset"] == "Prom-core" and result["dev_metrics"] is None and result["n_dev"] is None
    assert (
        result["n_train"] == 20
        and result["settings"]["total_steps"] == 12
        and result["settings"]["warmup"] == 2
    )
    assert result["best_step"] == 12 and result["best_epoch"] == 3
    assert result["selection"]["rule"] == "final" and result["selection"]["evaluations"] == []
    assert result["settings"]["hidden_dropout_used"] == 0.0  # the tiny checkpoint's own, not overridden


@pytest.mark.slow
@pytest.mark.realdata
def test_same_seed_same_bytes(tiny_model, shared_data, tmp_path):
    task = shared_data / "gue" / "mouse" / "2"
    train, dev, test = task_subsets(task, tmp_path, train=120, dev=40, test=60)
    runs = []
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        s = Settings(
            model=str(tiny_model),
            train=str(train),
            dev=str(dev),
            test=str(test),
            out=str(tmp_path / name),
            max_length=110,
            epochs=2,
            lr=1e-3,
            batch_size=16,
            grad_accum=2,
            eval_steps=2,
            seed=seed,
            threads=1,
        )
        finetune(s)
        runs.append((tmp_path / name / "predictions.parquet").read_bytes())
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


# ------------------------------------------------------------------------------ dev selection
def planted(path, n, seed):
    """n random 40 bp sequences, label 1 when TATAAA is planted at a random offset; a CSV."""
    rng = np.random.default_rng(seed)
    seqs = ["".join(rng.choice(list("ACGT"), 40)) for _ in range(n)]
    labels = np.arange(n) % 2
    for i in np.flatnonzero(labels):
        at = rng.integers(0, 34)
        seqs[i] = seqs[i][:at] + "TATAAA" + seqs[i][at + 6 :]
    write_labelled(path, seqs, labels)
    return path


@pytest.fixture(scope="module")
def planted_sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("planted")
    return planted(root / "train.csv", 96, 0), planted(root / "dev.csv", 40, 1)


def test_dev_loss_is_the_mean_cross_entropy(tiny_model, planted_sets):
    from cmgems.finetune import evaluate, load_classifier, load_split

    dev = load_split(str(planted_sets[1]), 6, 40)
    model = load_classifier(tiny_model, 2)
    s = Settings(model="", train="", test="", out="", eval_batch_size=7)
    with torch.inference_mode():
        one_by_one = [model(input_ids=ids, attention_mask=mask, labels=dev.labels[[i]]).loss.item()
                      for i in range(len(dev)) for ids, mask in [dev.batch(torch.tensor([i]))]]
    metrics = evaluate(model, dev, s, torch.device("cpu"))
    assert metrics["loss"] == pytest.approx(np.mean(one_by_one), rel=1e-5)


def test_best_keeps_lowest_loss_or_highest_mcc_earliest_on_ties():
    from cmgems.finetune import Best

    layer = torch.nn.Linear(2, 1)
    evaluations = [(2, 0.50, 0.10), (4, 0.40, 0.30), (6, 0.40, 0.50), (8, 0.60, 0.50)]  # step, loss, mcc
    kept = {}
    for rule in ("loss", "mcc"):
        best = Best(rule)
        for step, loss, mcc in evaluations:
            torch.nn.init.constant_(layer.weight, step)
            best.offer({"loss": loss, "mcc": mcc}, step, layer)
        kept[rule] = best.step
        assert best.state["weight"].unique().tolist() == [float(best.step)]  # a copy taken at that step
        assert [e["step"] for e in best.history] == [2, 4, 6, 8]
    assert kept == {"loss": 4, "mcc": 6}


@pytest.mark.parametrize("select_by", ["loss", "mcc"])
def test_kept_weights_are_those_of_the_selected_evaluation(tiny_model, planted_sets, tmp_path, select_by):
    """With dev = test, the test scores come from the kept weights, so their mean cross-entropy and
    MCC equal the selected evaluation's dev loss and MCC."""
    train, dev = planted_sets
    s = Settings(model=str(tiny_model), train=str(train), dev=str(dev), test=str(dev), out=str(tmp_path / "run"),
                 max_length=40, lr=2e-3, batch_size=8, max_steps=11, eval_steps=2, seed=1, select_by=select_by)
    result = finetune(s)
    history = result["selection"]["evaluations"]
    assert [e["step"] for e in history] == [2, 4, 6, 8, 10]  # not 11, the last step
    pick = (min(history, key=lambda e: e["loss"]) if select_by == "loss" else max(history, key=lambda e: e["mcc"]))
    assert result["best_step"] == pick["step"] and result["selection"]["rule"] == f"dev {select_by}"
    pred = pd.read_parquet(tmp_path / "run" / "predictions.parquet")
    labels, scores = pred["label"].to_numpy(), pred.filter(regex="^score_").to_numpy()
    test_loss = -np.log(scores[np.arange(len(labels)), labels]).mean()
    assert test_loss == pytest.approx(pick["loss"], rel=1e-4)
    assert result["metrics"]["mcc"] == pytest.approx(pick["mcc"])


def test_no_evaluation_on_the_cadence_keeps_the_final_weights_and_the_checkpoint_dropout(tiny_model, planted_sets,
                                                                                         tmp_path):
    train, dev = planted_sets
    runs = {}
    for name, dropout in (("gue", None), ("fewshot", 0.1)):
        s = Settings(model=str(tiny_model), train=str(train), dev=str(dev), test=str(dev), out=str(tmp_path / name),
                     max_length=40, lr=1e-3, batch_size=16, epochs=2, eval_steps=200, hidden_dropout=dropout)
        runs[name] = finetune(s)
    result = runs["gue"]
    assert result["selection"]["rule"] == "final" and result["selection"]["evaluations"] == []
    assert "no dev evaluation fell on the cadence (every 200 steps) within 12 steps" in result["selection"]["reason"]
    assert result["best_step"] == 12 and result["dev_metrics"] is None
    assert result["settings"]["hidden_dropout_used"] == 0.0
    assert runs["fewshot"]["settings"]["hidden_dropout_used"] == 0.1


# ------------------------------------------------------------------------------------ bad input
def test_bad_input_leaves_no_output(tiny_model, tmp_path, capsys):
    good = tmp_path / "good.csv"
    write_labelled(good, ["ACGTACGTACGTAC", "TTGGCCAATTGGCA"], [0, 1])
    cases = {
        "nolabel.csv": "sequence,class\nACGTACGTAC,1\n",
        "badlabel.csv": "sequence,label\nACGTACGTAC,1\nACGTACGTAC,one\n",
        "badchar.csv": "sequence,label\nACGTACGTAC,1\nACGTRCGTAC,0\n",
        "empty.csv": "sequence,label\n",
        "unseen.csv": "sequence,label\nACGTACGTAC,5\n",
    }
    for name, text in cases.items():
        bad = tmp_path / name
        bad.write_text(text)
        for train, test in ((bad, good), (good, bad)):
            if name == "unseen.csv" and train == bad:
                continue
            out = tmp_path / "out"
            argv = [
                "finetune",
                "--model",
                str(tiny_model),
                "--train",
                str(train),
                "--test",
                str(test),
                "--out",
                str(out),
                "--max-length",
                "20",
                "--epochs",
                "1",
                "--lr",
                "1e-4",
                "--batch-size",
                "2",
            ]
            assert cli.main(argv) == 1
            assert str(bad) in capsys.readouterr().err
            assert not out.exists() and not list(tmp_path.glob(".out*"))
    with pytest.raises(CmgemsError, match="not a Hugging Face model directory"):
        finetune(
            Settings(
                model=str(tmp_path), train=str(good), test=str(good), out=str(tmp_path / "o"), max_length=20
            )
        )
    with pytest.raises(CmgemsError, match="--select-by must be one of loss, mcc"):
        finetune(Settings(model=str(tiny_model), train=str(good), test=str(good), out=str(tmp_path / "o"),
                          select_by="auc"))
    with pytest.raises(CmgemsError, match="exceeds the model's 512 positions"):
        finetune(
            Settings(
                model=str(tiny_model), train=str(good), test=str(good), out=str(tmp_path / "o"), max_length=600
            )
        )
    assert not (tmp_path / "o").exists()
    assert (
        cli.main(
            [
                "finetune",
                "--model",
                str(tiny_model),
                "--train",
                str(good),
                "--test",
                str(good),
                "--out",
                str(tmp_path / "o"),
                "--max-length",
                "20",
                "--meta",
                "[1, 2]",
            ]
        )
        == 1
    )
    assert torch.are_deterministic_algorithms_enabled() is False  # state restored after runs


# ------------------------------------------------------------------------------------- schedule
def test_schedule_and_batches():
    from cmgems.finetune import Schedule, optimizer_steps

    s = Settings(model="", train="", test="", out="", batch_size=8, grad_accum=2, epochs=3, eval_steps=5, warmup_ratio=0.1)
    sched = Schedule.of(100, s)  # 13 micro-batches -> 7 steps per epoch
    assert (sched.per_epoch, sched.total, sched.warmup) == (7, 21, 3)
    assert [t for t in range(1, 22) if sched.evaluates(t, s)] == [5, 10, 15, 20]  # not 21, the last
    s.eval_every_epoch = True
    assert [t for t in range(1, 22) if sched.evaluates(t, s)] == [7, 14, 21]
    s.max_steps, s.warmup_steps = 30, 4  # max_steps overrides the epochs; warmup steps win over the ratio
    assert (Schedule.of(100, s).total, Schedule.of(100, s).warmup) == (30, 4)
    steps = optimizer_steps(100, 8, 2, torch.Generator().manual_seed(0))
    epoch = [next(steps) for _ in range(7)]
    assert [len(m) for m in epoch] == [2] * 6 + [1]
    assert sorted(torch.cat([b for m in epoch for b in m]).tolist()) == list(range(100))


@pytest.mark.parametrize("stage", ["finetune", "baseline"])
def test_packs_fail_fast_when_requested_gpus_are_not_visible(stage, tmp_path, monkeypatch, capsys):
    """`cmgems --gpus N` (the pack rules pass their resources' GPUs): a job that asked for GPUs and sees
    none stops before loading anything, naming the request or the SLURM allocation, instead of
    training on CPU until its time limit."""
    spec = json.dumps({"runs": [{"out": str(tmp_path / "never")}]})
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert cli.main(["--gpus", "1", stage, "--pack", spec]) == 1
    assert "GPUs were requested (1 requested (config resources.gpu)) but none is visible" in capsys.readouterr().err
    monkeypatch.setenv("SLURM_JOB_GPUS", "0")
    assert cli.main(["--gpus", "0", stage, "--pack", spec]) == 1
    assert "GPUs were requested (SLURM_JOB_GPUS=0)" in capsys.readouterr().err
    assert not (tmp_path / "never").exists()
