"""The demo DAG end to end in a temporary working directory, then the Snakemake HTML report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cmgems import layout
from cmgems.layout import FEWSHOT, GUE, Model, Run

REPO = Path(__file__).resolve().parents[1]
GENEMASK = Model("demo", "tiny", "genemask", 300)
pytestmark = [pytest.mark.slow, pytest.mark.workflow]


def snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir),
           *args, "--configfile", str(REPO / "config" / "demo.yaml")]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=1200)


@pytest.fixture(scope="module")
def demo(local_demo) -> Path:
    return local_demo  # tests/conftest.py: run once per session, shared with tests/test_slurm.py


def test_report_tables_and_figures_are_written(demo):
    report = demo / layout.REPORT
    for item in layout.TABLES:
        for fmt in layout.TABLE_FORMATS:
            assert Path(layout.table(item.name, fmt, report)).stat().st_size > 0, (item.name, fmt)
    for item in layout.FIGURES:
        pixels = np.asarray(Image.open(layout.figure(item.name, "png", report)).convert("L"), dtype=float)
        assert pixels.std() > 5, f"{item.name}.png looks blank"
        assert Path(layout.figure(item.name, "pdf", report)).stat().st_size > 0


def test_the_demo_claims_table_is_inconclusive_as_a_300_step_tiny_model_should_be(demo):
    """Every claim has its rows; none is decided on 2 GUE tasks and 8 few-shot pairs of a tiny model."""
    claims = pd.read_csv(demo / layout.table("claims"))
    assert claims["claim"].str[0].astype(int).unique().tolist() == [1, 2, 3, 4]
    assert set(claims["verdict"]) <= {"inconclusive", "not tested"} and "inconclusive" in set(claims["verdict"])
    tested = claims[claims["statistic"].eq("mean paired difference (MCC x100)")]
    assert (tested["ci_low"] <= tested["estimate"]).all() and (tested["estimate"] <= tested["ci_high"]).all()
    assert pd.read_csv(demo / layout.table("variants")).empty  # the demo declares no variant genome


def test_demo_models_learn_the_planted_motifs(demo):
    gue = pd.read_csv(demo / layout.table("gue"))
    pretrained = gue[gue["model"] == "tiny"]
    assert set(pretrained["masking"]) == {"random", "genemask", "cm_gems"}
    assert set(pretrained["task"]) == {"demo_tata", "demo_splice"}
    assert (pretrained["mcc_x100"] > 30).all(), pretrained[["masking", "task", "mcc_x100"]]
    assert (gue[gue["model"] == "kmer_logreg"]["mcc_x100"] > 90).all()
    fewshot = pd.read_csv(demo / layout.table("fewshot"))
    assert len(fewshot) == 2 * 2 * 4 and (fewshot["n"] == 2).all()  # datasets x shots x methods, 2 seeds


def test_demo_gue_keeps_the_lowest_dev_loss_on_each_task_cadence(demo):
    for task, every in (("demo_tata", 20), ("demo_splice", 25)):  # gue.eval_steps, the task's own
        record = json.loads((demo / Run(GUE, GENEMASK, task, 42).folder() / layout.RECORD).read_text())
        selection, total = record["selection"], record["settings"]["total_steps"]
        assert [e["step"] for e in selection["evaluations"]] == list(range(every, total + 1, every))
        assert selection["rule"] == "dev loss"
        assert record["best_step"] == min(selection["evaluations"], key=lambda e: e["loss"])["step"]
        assert record["settings"]["hidden_dropout_used"] == 0.0  # the tiny checkpoint's own


def test_packed_runs_equal_one_process_per_run(demo, tmp_path, pack_specs, one_run_options):
    """The last run of the demo's GUE pack and of a few-shot pack of one model (the runs that start after
    all others of their pack, so they would show any state a pack carries over), each run again in a
    process of its own with the options the one-run rules passed (`cmgems finetune --model ... --seed
    ...`): the same predictions.parquet and metrics.json, timings aside. tests/test_packs.py compares
    every run of a pack."""
    import os

    targets = [f"{Run(GUE, GENEMASK, 'demo_tata', 42).folder()}/{layout.RECORD}",
               f"{Run(FEWSHOT, GENEMASK, 'demo_prom', 0, 10).folder()}/{layout.RECORD}"]
    plan = snakemake(demo, "-n", "-p", *targets, "--forcerun", "finetune_gue_other", "finetune_fewshot_demo_prom")
    assert plan.returncode == 0, plan.stderr[-3000:]
    runs = pack_specs(plan.stdout)
    expected = [Run(GUE, GENEMASK, t, 42) for t in ("demo_splice", "demo_tata")]
    expected += [Run(FEWSHOT, GENEMASK, "demo_prom", s, n) for n in (10, 50) for s in (0, 1)]
    assert sorted(runs) == sorted(run.folder() for run in expected)
    (tmp_path / layout.ROOT / "demo").mkdir(parents=True)  # the demo's inputs, read where the rules read them
    few_shot_sets, models = Path(layout.fewshot_set("x", 0, 0)).parents[2], Path(GENEMASK.folder()).parents[2]
    for link in ("resources", few_shot_sets, models):
        (tmp_path / link).symlink_to(demo / link)
    env = {**os.environ, "PYTHONPATH": str(REPO / "workflow")}
    last = {out.startswith(GENEMASK.evaluations(GUE)): out for out in runs}  # the packs' runs in order
    for out, run in ((out, runs[out]) for out in last.values()):
        single = subprocess.run([sys.executable, "-m", "cmgems.cli", "finetune", *one_run_options(run)], cwd=tmp_path,
                                env=env, capture_output=True, text=True, timeout=600)
        assert single.returncode == 0, single.stderr[-3000:]
        assert (tmp_path / out / "predictions.parquet").read_bytes() == (demo / out / "predictions.parquet").read_bytes()
        records = [json.loads((root / out / layout.RECORD).read_text()) for root in (tmp_path, demo)]
        for record in records:
            for key in ("train_seconds", "train_sequences_per_s", "inference_sequences_per_s"):
                record.pop(key)
        assert json.dumps(records[0]) == json.dumps(records[1]), out  # key order too


def test_cm_gems_switches_and_pretraining_table_agrees(demo):
    table = pd.read_csv(demo / layout.table("pretraining")).set_index("masking")
    assert table.loc["cm_gems", "switch_step"] > 0
    assert pd.isna(table.loc["genemask", "switch_step"])
    metrics = pd.read_csv(demo / Model("demo", "tiny", "cm_gems", 300).curves())
    switch = table.loc["cm_gems", "switch_step"]
    assert (metrics[metrics["step"] <= switch]["phase"] == "genemask").all()
    assert (metrics[metrics["step"] > switch]["phase"] == "global_pmi").all()
    assert metrics["ref_val_ppl"].notna().sum() == metrics["val_ppl"].notna().sum() > 0
    log = (demo / "logs" / "demo" / "pretrain" / "tiny" / "cm_gems" / "300.log").read_text()
    assert f"step {int(table.loc['cm_gems', 'switch_step'])}: curriculum cm_gems switches to global_pmi" in log


def test_snakemake_html_report(demo):
    result = snakemake(demo, "--report", f"{layout.REPORT}/report.html")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (demo / layout.REPORT / "report.html").stat().st_size > 100_000


def test_rerun_has_nothing_to_do(demo):
    result = snakemake(demo, "-n", "--cores", "2")
    assert result.returncode == 0
    assert "Nothing to be done" in result.stdout + result.stderr


def test_gpu_smoke_script_runs_on_cpu(demo, tmp_path):
    """benchmarks/gpu_smoke.sh in its CPU mode on the demo's data: the script a GPU session runs first
    is known to work before a GPU is at hand; its last line is one JSON object with every section's
    figures, and on CPU every check passes."""
    import json
    import os

    env = {**os.environ, "CMGEMS_SMOKE_DEVICE": "cpu", "CMGEMS_SMOKE_DEMO": str(demo)}
    result = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_smoke.sh"), str(tmp_path / "smoke")],
                            capture_output=True, text=True, env=env, timeout=1200)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert figures["passed"] and not figures["failed"], figures["sections"]
    assert set(figures["sections"]) == {"cuda_tests", "agreement", "signal", "pack_memory", "throughput"}

    agreement = figures["agreement"]
    assert agreement["passed"] and agreement["steps"] == 20
    assert [c["run"] for c in agreement["comparisons"]] == ["device_fp32"]
    runs = agreement["runs"]
    assert runs["reference"]["loss"] < 8.3  # learned something: the loss of uniform guesses over 4,101 ids is 8.32
    assert agreement["comparisons"][0]["loss_diff"] == abs(runs["device_fp32"]["loss"] - runs["reference"]["loss"]) <= 1e-3

    signal = figures["signal"]
    assert signal["passed"] and signal["stopped_rc"] == 143 and signal["group_empty"]
    assert signal["processes_signalled"] >= 2  # the trainer and its data worker
    assert signal["first_checkpoint"] < signal["stopped_at"] == signal["resumed_from"] < signal["steps"]
    assert signal["switch_steps"] == [signal["switch_step"]] * 2 and signal["max_weight_diff"] <= 1e-6

    rows = figures["throughput"]
    assert [(r["model"], r["mode"], r["micro_batch"]) for r in rows] == [("tiny", "eager", 8)]
    assert rows[0]["tokens_per_s"] > 0 and rows[0]["sequences_per_step"] == 16
    assert figures["recommended_micro_batch"]["micro_batch"] == 8

    pack = figures["pack_memory"]
    assert pack["passed"] and len(pack["after_runs"]) == pack["runs"] == 3
    assert all(s["rss"] > 0 for s in pack["after_runs"]) and len(set(pack["test_mcc"])) == 1  # identical runs
