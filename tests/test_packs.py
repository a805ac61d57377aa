"""cmgems.packs: packs of fine-tuning and baseline runs equal one process per run, nothing leaks
between runs, a restarted pack restores finished runs from its cache and recomputes stale ones, a
bad run fails alone; the spec and the CLI refuse bad input."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cmgems import baseline, cli, finetune, labelled, packs
from cmgems.errors import CmgemsError
from cmgems.finetune import Settings, finetune_pack
from cmgems.labelled import write_labelled

REPO = Path(__file__).resolve().parents[1]
TIMINGS = ("train_seconds", "train_sequences_per_s", "inference_sequences_per_s")


def planted(path, n, seed, classes=2, length=40):
    """n random sequences; class c > 0 has the motif MOTIFS[c] planted at a random offset; a CSV."""
    motifs = ["", "TATAAA", "GGGCCC"]
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % classes
    seqs = []
    for y in labels:
        seq = "".join(rng.choice(list("ACGT"), length))
        if y:
            at = rng.integers(0, length - 6)
            seq = seq[:at] + motifs[y] + seq[at + 6 :]
        seqs.append(seq)
    write_labelled(path, seqs, labels)
    return str(path)


@pytest.fixture(scope="module")
def data(tmp_path_factory, tiny_model):
    root = tmp_path_factory.mktemp("packs")
    return {
        "model": str(tiny_model),
        "train": planted(root / "train.csv", 60, 0),
        "dev": planted(root / "dev.csv", 30, 1),
        "test": planted(root / "test.csv", 40, 2),
        "train3": planted(root / "train3.csv", 60, 3, classes=3),
        "test3": planted(root / "test3.csv", 30, 4, classes=3),
    }


def runs_of(data, root: Path) -> list[dict]:
    """Three runs unlike each other: GUE protocol with dev on 2 threads, then few-shot with dropout 0.1
    and 3 classes on 1 thread."""
    common = dict(model=data["model"], max_length=40, lr=2e-3, batch_size=8)
    return [
        dict(common, train=data["train"], dev=data["dev"], test=data["test"], out=str(root / "a"), epochs=3,
             eval_steps=4, seed=1, threads=2, meta={"run": "a"}),
        dict(common, train=data["train"], test=data["test"], out=str(root / "b"), epochs=2, warmup_ratio=0.1,
             hidden_dropout=0.1, seed=2, meta={"run": "b"}),
        dict(common, train=data["train3"], test=data["test3"], out=str(root / "c"), epochs=3, seed=1, batch_size=5),
    ]


def same_run(a: Path, b: Path) -> None:
    """predictions.parquet byte for byte, metrics.json but for timings and the output folder."""
    assert (a / "predictions.parquet").read_bytes() == (b / "predictions.parquet").read_bytes()
    records = [json.loads((p / "metrics.json").read_text()) for p in (a, b)]
    for record in records:
        for key in TIMINGS:
            record.pop(key)
        record["settings"].pop("out")
    assert records[0] == records[1]
    assert list(records[0]) == list(records[1])


# --------------------------------------------------------------------------------- equality
@pytest.mark.slow
def test_a_pack_equals_one_process_per_run(data, tmp_path, one_run_options):
    """Each run in its own `cmgems finetune` process, then all three in one pack: the same bytes,
    so neither weights, RNG, thread count nor deterministic-algorithm flags leak between runs."""
    runs = runs_of(data, tmp_path / "single")
    env = {**os.environ, "PYTHONPATH": str(REPO / "workflow")}
    for run in runs:
        result = subprocess.run([sys.executable, "-m", "cmgems.cli", "finetune", *one_run_options(run)], capture_output=True,
                                text=True, env=env, timeout=300)
        assert result.returncode == 0, result.stderr[-2000:]
    spec = json.dumps({"runs": runs_of(data, tmp_path / "packed")})
    assert cli.main(["finetune", "--pack", spec]) == 0
    for run in runs:
        same_run(Path(run["out"]), tmp_path / "packed" / Path(run["out"]).name)
    records = [json.loads((tmp_path / "packed" / n / "metrics.json").read_text()) for n in "abc"]
    assert [r["settings"]["num_labels"] for r in records] == [2, 2, 3]
    assert [r["settings"]["threads_used"] for r in records] == [2, 1, 1]
    assert records[0]["selection"]["rule"] == "dev loss" and records[0]["run"] == "a"


def test_the_checkpoint_weights_stay_pristine(data):
    """Training a classifier from the cached weights leaves them as loaded (copies, not views)."""
    import torch

    pretrained = finetune.Pretrained(data["model"])
    before = {k: v.clone() for k, v in pretrained.state.items()}
    model = pretrained.classifier(2)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    assert all(torch.equal(before[k], v) for k, v in pretrained.state.items())
    assert "classifier.weight" not in pretrained.state and "bert.pooler.dense.weight" not in pretrained.state


# ------------------------------------------------------------------------------------ cache
def packed(data, root: Path, lr_of_b: float = 2e-3) -> list[tuple[Settings, str]]:
    """Runs a, b, c of `runs_of` reading root/test.csv (a copy of the test set), with caches."""
    runs = runs_of({**data, "test": str(root / "test.csv")}, root / "out")
    runs[1]["lr"] = lr_of_b
    return [(Settings(**run), str(root / "cache" / Path(run["out"]).name)) for run in runs]


def messages(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "cmgems.packs"]


def test_a_restarted_pack_restores_finished_runs_and_recomputes_stale_ones(data, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="cmgems.packs")
    shutil.copy(data["test"], tmp_path / "test.csv")
    first = finetune_pack(packed(data, tmp_path))
    out = tmp_path / "out"
    kept = {name: (out / name / "predictions.parquet").read_bytes() for name in "abc"}
    for name in "abc":  # what Snakemake does to a failed job's outputs before it runs the job again
        for file in ("metrics.json", "predictions.parquet"):
            (out / name / file).unlink()
    shutil.rmtree(tmp_path / "cache" / "c")  # as if killed while c was training
    caplog.clear()
    again = finetune_pack(packed(data, tmp_path))
    log = messages(caplog)
    assert sum("restored from" in m for m in log) == 2 and sum(m.endswith(": computing") for m in log) == 1
    assert "run 3/3" in next(m for m in log if m.endswith(": computing"))
    assert {name: (out / name / "predictions.parquet").read_bytes() for name in "abc"} == kept
    assert [r["metrics"] for r in again] == [r["metrics"] for r in first]
    assert (out / "a" / "metrics.json").read_bytes() == (tmp_path / "cache" / "a" / "metrics.json").read_bytes()
    assert sorted(p.name for p in (out / "a").iterdir()) == [".written-by-cmgems.json", "metrics.json", "predictions.parquet"]

    caplog.clear()
    finetune_pack(packed(data, tmp_path, lr_of_b=1e-3))  # b's settings changed: only b is recomputed
    log = messages(caplog)
    assert [("restored from" in m, "run 2/3" in m) for m in log if "restored from" in m or m.endswith(": computing")] == [
        (True, False), (False, True), (True, False)]
    assert any("of other settings or inputs" in m for m in log)
    assert json.loads((out / "b" / "metrics.json").read_text())["settings"]["lr"] == 1e-3

    test = tmp_path / "test.csv"
    test.write_text(test.read_text().replace("\n", "\r\n", 1))  # the same rows, other bytes
    caplog.clear()
    finetune_pack(packed(data, tmp_path, lr_of_b=1e-3))  # the test file changed: a and b (not c) are recomputed
    assert [m.split(":")[0] for m in messages(caplog) if m.endswith(": computing")] == [
        f"run 1/3 ({out / 'a'})", f"run 2/3 ({out / 'b'})"]


def test_a_bad_run_fails_alone(data, tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("sequence,label\nACGTACGTAC,1\nACGTRCGTAC,0\n")
    runs = runs_of(data, tmp_path)
    runs[1]["train"] = str(bad)
    assert cli.main(["finetune", "--pack", json.dumps({"runs": runs})]) == 1
    err = capsys.readouterr().err
    assert "1 of 3 runs failed; the others are written" in err and f"{bad}, line 3" in err and str(tmp_path / "b") in err
    assert (tmp_path / "a" / "metrics.json").exists() and (tmp_path / "c" / "metrics.json").exists()
    assert not (tmp_path / "b").exists()


def _edit_json(path: Path, edit) -> None:
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc))


ENTRY_DAMAGE = {  # what may happen to a cache entry, and the file the log must name
    "predictions-corrupt": (lambda e: (e / "predictions.parquet").write_bytes(b"PAR1" + bytes(200)),
                              "predictions.parquet: its content differs"),
    "predictions-missing": (lambda e: (e / "predictions.parquet").unlink(), "predictions.parquet: missing"),
    "record-not-json": (lambda e: (e / "metrics.json").write_text("{not json"), "metrics.json: its content differs"),
    "record-edited": (lambda e: _edit_json(e / "metrics.json", lambda d: d["metrics"].update(mcc=1.0)),
                      "metrics.json: its content differs"),
    "record-missing": (lambda e: (e / "metrics.json").unlink(), "metrics.json: missing"),
    "digest-not-json": (lambda e: (e / "digest.json").write_text('{"digest": '), "digest.json: unreadable"),
    "digest-missing": (lambda e: (e / "digest.json").unlink(), "digest.json: unreadable"),
    "digest-without-files": (lambda e: _edit_json(e / "digest.json", lambda d: d.pop("files")),
                             "digest.json: records no digest of the entry's files"),
    "digest-and-record-edited-alike": (
        lambda e: (_edit_json(e / "metrics.json", lambda d: d.update(n_test=3)),
                   _edit_json(e / "digest.json", lambda d: d["files"].update({"metrics.json": "0" * 64}))),
        "metrics.json: its content differs"),
}


@pytest.mark.parametrize("damage", ENTRY_DAMAGE, ids=list(ENTRY_DAMAGE))
def test_a_damaged_cache_entry_is_named_discarded_and_recomputed(data, tmp_path, caplog, damage):
    """The cache entry's files are checked against the digests it was written with before anything
    is restored: a damaged entry is named in the log, recomputed (never restored, never a raw error)
    and replaced by a sound one."""
    caplog.set_level(logging.INFO, logger="cmgems.packs")
    settings = baseline.Settings(data["train"], data["test"], str(tmp_path / "out"), data["dev"], k=4)
    runs = [(settings, str(tmp_path / "cache"))]
    baseline.baseline_pack(runs)
    shutil.copytree(tmp_path / "out", tmp_path / "first")
    shutil.rmtree(tmp_path / "out")  # as Snakemake does before it runs the pack again
    make, named = ENTRY_DAMAGE[damage]
    make(tmp_path / "cache")
    caplog.clear()
    baseline.baseline_pack(runs)
    log = messages(caplog)
    assert any(m.startswith(f"{tmp_path / 'cache'}: damaged cache entry, discarded: ") and named in m for m in log), log
    assert any(m.endswith(": computing") for m in log) and not any("restored from" in m for m in log)
    same_run(tmp_path / "first", tmp_path / "out")
    caplog.clear()
    shutil.rmtree(tmp_path / "out")
    baseline.baseline_pack(runs)  # the entry the recomputed run wrote is sound
    assert any("restored from" in m for m in messages(caplog))
    same_run(tmp_path / "first", tmp_path / "out")


# ------------------------------------------------------------------------------------ baseline
def test_baseline_pack_equals_single_runs_and_reads_a_shared_test_set_once(data, tmp_path, monkeypatch):
    reads = []
    original = labelled.read_labelled
    monkeypatch.setattr(labelled, "read_labelled", lambda path: reads.append(path) or original(path))
    runs = [dict(train=data["train"], test=data["test"], out=str(tmp_path / "packed" / str(seed)), seed=seed, k=4,
                 meta={"seed": seed}) for seed in (1, 2, 3)]
    runs.append(dict(train=data["train"], dev=data["dev"], test=data["test"], out=str(tmp_path / "packed" / "dev")))
    assert cli.main(["baseline", "--pack", json.dumps({"runs": [{**r, "cache": r["out"] + ".cache"} for r in runs]})]) == 0
    assert sorted(reads) == sorted([data["train"], data["test"], data["dev"]])  # each file read once
    for run in runs:
        single = tmp_path / "single" / Path(run["out"]).name
        baseline.baseline(**{**run, "out": str(single)})
        same_run(Path(run["out"]), single)


# ------------------------------------------------------------------------------- spec and CLI
def test_deal_spreads_runs_over_the_fewest_packs():
    assert packs.deal(list(range(7)), 3) == [[0, 3, 6], [1, 4], [2, 5]]
    assert packs.deal(list(range(6)), 3) == [[0, 2, 4], [1, 3, 5]]
    assert packs.deal(list(range(5)), None) == [[0, 1, 2, 3, 4]] == packs.deal(list(range(5)), 9)
    assert packs.deal([], 3) == []


def test_pack_files_keep_a_file_until_its_last_run():
    files = labelled.PackFiles([["train1", "test"], ["train2", "test"], ["train3"]])
    made = []
    for run, paths in enumerate([["train1", "test"], ["train2", "test"], ["train3"]]):
        for path in paths:
            files.derived(path, "x", lambda path=path: made.append(path))
        files.done(run)
    assert made == ["train1", "test", "train2", "train3"] and files.cache == {}


@pytest.mark.parametrize("spec, message", [
    ("{runs: []}", "not valid JSON"),
    ('{"runs": []}', "at least one run"),
    ('[{"out": "o"}]', "expected {\"runs\""),
    ('{"runs": [{"train": "t", "test": "t", "out": "o", "cache": 3}]}', r"runs\[0\].cache: expected a folder name"),
    ('{"runs": [{"train": "t", "test": "t", "out": "o", "kk": 3}]}', r"runs\[0\]: unknown key\(s\) \['kk'\]"),
    ('{"runs": [{"train": "t", "out": "o"}]}', r"missing key\(s\) \['test'\]"),
    ('{"runs": [{"train": "t", "test": "t", "out": "o", "seed": "1"}]}', r"runs\[0\].seed: expected <class 'int'>, got '1'"),
    ('{"runs": [{"train": "t", "test": "t", "out": "o", "meta": [1]}]}', r"runs\[0\].meta: expected"),
])
def test_bad_specs_are_refused_naming_the_key(tmp_path, capsys, spec, message):
    assert cli.main(["baseline", "--pack", spec]) == 1
    assert re.search(message, capsys.readouterr().err)
    assert list(tmp_path.iterdir()) == []


def test_settings_from_takes_integers_for_floats():
    s = packs.settings_from(Settings, {"model": "m", "train": "t", "test": "t", "out": "o", "hidden_dropout": 0, "lr": 1},
                            "run")
    assert type(s.hidden_dropout) is float and type(s.lr) is float and s.dev is None
    with pytest.raises(CmgemsError, match=r"run.trust_remote_code: expected"):
        packs.settings_from(Settings, {"model": "m", "train": "t", "test": "t", "out": "o", "trust_remote_code": 1}, "run")


@pytest.mark.parametrize("argv, message", [
    (["finetune", "--pack", "{}", "--model", "m"], "--pack takes no other option (got --model)"),
    (["finetune", "--train", "t", "--test", "t", "--out", "o"], "the following arguments are required: --model, --max-length"),
    (["baseline", "--pack", "{}", "--seed", "3"], "--pack takes no other option (got --seed)"),
    (["baseline", "--test", "t", "--out", "o"], "the following arguments are required: --train"),
])
def test_pack_or_one_run_on_the_command_line(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    assert exit_.value.code == 2 and message in capsys.readouterr().err
