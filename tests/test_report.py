"""Tests for cmgems.report on a small fake results tree built in tmp_path, declared by a grid."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
from scipy import stats as scipy_stats
from PIL import Image

from cmgems import gue, layout, masking, metrics, stats
from cmgems.cli import main as cli_main
from cmgems.errors import CmgemsError
from cmgems.layout import FEWSHOT, GUE, Grid, Model, Run
from cmgems.report import collect, figures, masks, render, tables, write_figures, write_tables

REPO = Path(__file__).resolve().parents[1]
METHODS = [Model("hg38", "bert_base", "genemask", 10000), Model("hg38", "bert_base", "cm_gems", 10000)]
FEWSHOT_SHOTS = {"prom_core": (10, 50), "splice_40": (10,)}
GRID = Grid(
    genomes=("hg38",),
    pretrained=tuple(METHODS),
    external=(),
    gue_tasks=(*gue.GUE_27, "demo_tata"),
    gue_seeds=(42, 43),
    fewshot=tuple((d, shots, seed) for d, shots_list in FEWSHOT_SHOTS.items() for shots in shots_list
                  for seed in range(3)),
    baseline=True,
)


def _metrics(rng: np.random.Generator) -> dict:
    return {
        "mcc": float(rng.uniform(-0.2, 0.9)),
        "accuracy": float(rng.uniform(0.4, 1)),
        "f1_macro": float(rng.uniform(0.4, 1)),
        "precision_macro": float(rng.uniform(0.4, 1)),
        "recall_macro": float(rng.uniform(0.4, 1)),
    }


def _write(path: Path, doc: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))


def _record(kind: str, method: Model | None, seed: int, metrics: dict, **fields) -> dict:
    return {"kind": kind, **(method or layout.BASELINE_MODEL)._asdict(), **fields, "seed": seed, "metrics": metrics}


def _gue(root: Path, method: Model | None, task: str, seed: int, rng) -> None:
    doc = _record(GUE, method, seed, _metrics(rng), task=task, n_train=100, n_test=20, train_seconds=1.5)
    _write(Path(Run(GUE, method, task, seed).folder(root)) / layout.RECORD, doc)


def _fewshot(root: Path, method: Model | None, dataset: str, shots: int, seed: int, rng) -> None:
    doc = _record(FEWSHOT, method, seed, {**_metrics(rng), "auc": 0.7}, dataset=dataset, shots=shots,
                  n_train=2 * shots, n_test=50, train_seconds=0.5)
    _write(Path(Run(FEWSHOT, method, dataset, seed, shots).folder(root)) / layout.RECORD, doc)


def ref_ppl(steps: np.ndarray) -> np.ndarray:
    """The reference perplexity of the fake runs at each step (NaN off the evaluation steps)."""
    return np.where(steps % 200 == 0, 50.0 - steps / 50, np.nan)


def _pretraining(root: Path, masking: str, switch_step, phases: list[str], reference: bool = False) -> Model:
    """A finished run of 10K steps, logged at steps 50..1000; with `reference` its metrics.csv and
    summary.json hold the reference masking's perplexity (`ref_ppl`), else they are as written before
    it was logged."""
    model = Model("hg38", "bert_base", masking, 10000)
    run = Path(model.folder(root))
    run.mkdir(parents=True)
    steps = np.arange(50, 1001, 50)
    val = np.where(steps % 200 == 0, 30.0 - steps / 100, np.nan)
    reference_columns = {"ref_val_loss": np.log(ref_ppl(steps)), "ref_val_ppl": ref_ppl(steps)} if reference else {}
    pd.DataFrame(
        {
            "step": steps,
            "loss": 8 - steps / 400,
            "lr": 1e-4,
            "masked_acc": 0.1,
            "val_loss": np.log(val),
            "val_ppl": val,
            "val_masked_acc": np.where(np.isnan(val), np.nan, 0.2),
            **reference_columns,
            "phase": np.where(steps < (switch_step or 10**9), phases[0], phases[-1]),
            "tokens_per_s": 1e4,
        }
    ).to_csv(model.curves(root), index=False, na_rep="")
    summary = {
        "kind": "pretraining",
        "genome": "hg38",
        "model": "bert_base",
        "masking": masking,
        "steps": 10000,
        "final_loss": 5.5,
        "final_val_ppl": 20.0,
        **({"final_ref_val_ppl": float(ref_ppl(np.array([1000]))[0])} if reference else {}),
        "switch_step": switch_step,
        "tokens_per_s": 12345.6,
        "train_seconds": 60.0,
        "parameters": 1000,
    }
    Path(model.summary(root)).write_text(json.dumps(summary))
    return model


def _pmi(root: Path, genome: str = "hg38") -> None:
    rng = np.random.default_rng(0)
    rows = []
    for n in (2, 4, 6):
        grams = ["".join(rng.choice(list("ACGT"), n)) for _ in range(60)]
        norm = rng.normal(0, 1, len(grams))
        rank = pd.Series(norm).rank(ascending=False, method="first").astype("int64")
        rows.append(
            pd.DataFrame(
                {
                    "ngram": grams,
                    "n": n,
                    "count": 200,
                    "naive_pmi": norm,
                    "pmi": norm,
                    "discount": 0.5,
                    "norm_pmi": norm,
                    "rank": rank,
                }
            )
        )
    path = Path(layout.of_genome(genome, layout.PMI, root))
    path.parent.mkdir(parents=True)
    pd.concat(rows).to_parquet(path)


def _corpus(root: Path) -> None:
    seq = bytes(np.random.default_rng(2).choice(list(b"ACGT"), 300).tolist())
    folder = Path(layout.of_genome("hg38", layout.VALIDATION, root))
    folder.mkdir(parents=True)
    pd.DataFrame({"contig": ["chr1"], "start": [0], "end": [300], "sequence": [seq]}).to_parquet(
        folder / "chr1.parquet"
    )


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    """The runs of GRID, some not written yet: two methods with all 27 GUE tasks (cm_gems with 2
    seeds), genemask missing tf_4, one demo task, a baseline on one task; few-shot 2 datasets x shots x
    3 seeds (1 seed for the baseline); two pretraining runs; a PMI table and one validation chunk; a
    record in a folder of no run."""
    root = tmp_path_factory.mktemp("results")
    rng = np.random.default_rng(1)
    for method in METHODS:
        for task in gue.GUE_27 + ["demo_tata"]:
            if method[2] == "genemask" and task == "tf_4":
                continue
            for seed in (42, 43) if method[2] == "cm_gems" else (42,):
                _gue(root, method, task, seed, rng)
    _gue(root, None, "tf_0", 42, rng)
    for dataset, shots_list in FEWSHOT_SHOTS.items():
        for shots in shots_list:
            for method in METHODS:
                for seed in range(3):
                    _fewshot(root, method, dataset, shots, seed, rng)
            _fewshot(root, None, dataset, shots, 0, rng)
    _pretraining(root, "genemask", None, ["genemask"])
    _pretraining(root, "cm_gems", 400, ["genemask", "global_pmi"], reference=True)
    _pmi(root)
    _corpus(root)
    _write(root / "hg38" / "other" / "metrics.json", {"kind": "something_else"})
    return root


@pytest.fixture(scope="module")
def runs(tree) -> pd.DataFrame:
    return collect.collect_runs(tree, GRID.runs())


def _docs(root: Path, kind: str) -> list[dict]:
    docs = [json.loads(p.read_text()) for p in root.rglob("metrics.json")]
    return [d for d in docs if d.get("kind") == kind]


def test_task_groups():
    assert len(gue.GUE_27) == 27
    assert [
        tables.task_group(t)
        for t in (
            "EMP_H3",
            "prom_core_tata",
            "prom_300_all",
            "splice_reconstructed",
            "mouse_3",
            "tf_0",
            "covid",
            "demo_tata",
        )
    ] == ["EMP", "prom_core", "prom_300", "splice", "mouse", "tf", "covid", "other"]


def test_collect_runs(tree, runs):
    assert len(runs) == len(_docs(tree, "gue")) + len(_docs(tree, "fewshot"))
    assert set(runs["kind"]) == {"gue", "fewshot"}
    base = runs[(runs["model"] == "kmer_logreg") & (runs["kind"] == "gue")]
    assert base[["genome", "masking", "steps", "task"]].values.tolist() == [["none", "none", 0, "tf_0"]]


def test_collect_runs_takes_kind_and_seed_from_the_declared_run(tmp_path):
    doc = {
        "genome": "g",
        "model": "m",
        "masking": "random",
        "steps": 10,
        "dataset": "d",
        "shots": 10,
        "metrics": {"mcc": 0.5, "accuracy": 0.7, "f1_macro": 0.6, "precision_macro": 0.6, "recall_macro": 0.6},
    }
    run = Run(FEWSHOT, Model("g", "m", "random", 10), "d", 7, 10)
    _write(Path(run.folder(tmp_path)) / layout.RECORD, doc)
    runs = collect.collect_runs(tmp_path, [run])
    assert runs[["kind", "seed", "shots", "mcc"]].values.tolist() == [["fewshot", 7, 10, 0.5]]
    _write(Path(run.folder(tmp_path)) / layout.RECORD, {**doc, "kind": GUE})
    with pytest.raises(CmgemsError, match="the record says kind=gue, but its folder is that of the run kind=fewshot"):
        collect.collect_runs(tmp_path, [run])


def test_collect_runs_names_bad_file(tmp_path):
    run = Run(GUE, Model("x", "m", "r", 1), "t", 0)
    record = Path(run.folder(tmp_path)) / layout.RECORD
    _write(record, {"kind": "gue", "model": "m", "masking": "r", "metrics": {"mcc": 0.1}})
    with pytest.raises(CmgemsError, match=r"seed0/metrics.json.*task"):
        collect.collect_runs(tmp_path, [run])
    record.write_text("{not json")
    with pytest.raises(CmgemsError, match="metrics.json"):
        collect.collect_runs(tmp_path, [run])


def test_tables_leave_out_runs_the_grid_does_not_declare(tree, tmp_path):
    """Runs, pretraining runs and PMI tables of an earlier configuration, left under the results
    root, do not change a byte of the tables."""
    root = tmp_path / "results"
    shutil.copytree(tree, root)
    options = ["report", "--results", str(root), "--grid", GRID.to_json(), "--tables-only", "--k", "6",
               "--max-positions", "64", "--steps", "100", "--published", str(REPO / "resources" / "published")]

    def written() -> dict[str, bytes]:
        assert cli_main([*options, "--out", str(tmp_path / "report")]) == 0
        return {p.name: p.read_bytes() for p in (tmp_path / "report" / "tables").iterdir()}

    before = written()
    rng = np.random.default_rng(5)
    stale = [Model("hg38", "bert_base", "random", 10000), Model("hg19", "bert_base", "genemask", 10000)]
    for model in stale:
        _gue(root, model, "tf_0", 42, rng)
        _fewshot(root, model, "prom_core", 10, 0, rng)
    _gue(root, METHODS[0], "covid", 42, rng)  # a task no longer in the grid
    _fewshot(root, METHODS[0], "prom_core", 10, 7, rng)  # a seed no longer in the grid
    _fewshot(root, None, "prom_core", 1000, 0, rng)
    _pretraining(root, "random", None, ["random"])
    _pmi(root, "hg19")
    assert written() == before
    assert len(before) == 3 * len(layout.TABLES)


def test_gue_table_matches_files(tree, runs):
    table = tables.gue_table(runs)
    docs = _docs(tree, "gue")
    assert len(table) == len(docs)
    for doc in docs:
        same = (
            (table["masking"] == doc["masking"])
            & (table["task"] == doc["task"])
            & (table["seed"] == doc["seed"])
        )
        row = table[same]
        assert len(row) == 1
        assert row["mcc_x100"].iloc[0] == pytest.approx(100 * doc["metrics"]["mcc"])
        assert row["f1_macro_x100"].iloc[0] == pytest.approx(100 * doc["metrics"]["f1_macro"])
        assert row["group"].iloc[0] == tables.task_group(doc["task"])


def test_gue_summary_means(tree, runs):
    summary = tables.gue_summary(runs).set_index("masking")
    docs = _docs(tree, "gue")

    def task_means(masking):
        by_task = {}
        for d in docs:
            if d["masking"] == masking:
                by_task.setdefault(d["task"], []).append(100 * d["metrics"]["mcc"])
        return {t: np.mean(v) for t, v in by_task.items()}

    cm = task_means("cm_gems")
    assert summary.loc["cm_gems", "n_tasks"] == 28
    assert summary.loc["cm_gems", "mcc_x100_mean27"] == pytest.approx(np.mean([cm[t] for t in gue.GUE_27]))
    assert summary.loc["cm_gems", "mcc_x100_mean"] == pytest.approx(np.mean(list(cm.values())))
    assert summary.loc["cm_gems", "mcc_x100_EMP"] == pytest.approx(
        np.mean([cm[t] for t in cm if t.startswith("EMP_")])
    )
    assert summary.loc["cm_gems", "mcc_x100_other"] == pytest.approx(cm["demo_tata"])
    assert np.isnan(summary.loc["cm_gems", "mcc_x100_mean28"])  # no covid
    gm = task_means("genemask")
    assert summary.loc["genemask", "n_tasks"] == 27  # 26 GUE + demo: incomplete
    assert np.isnan(summary.loc["genemask", "mcc_x100_mean27"])
    assert summary.loc["genemask", "mcc_x100_mean"] == pytest.approx(np.mean(list(gm.values())))
    assert summary.loc["none", "n_tasks"] == 1


def test_gue_by_task(runs):
    wide = tables.gue_by_task(runs)
    assert wide["task"].tolist()[:2] == ["EMP_H3", "EMP_H3K14ac"] and wide["task"].iloc[-1] == "demo_tata"
    assert "cm_gems bert_base 10K" in wide.columns and "kmer_logreg" in wide.columns
    assert np.isnan(wide.set_index("task").loc["tf_4", "genemask bert_base 10K"])


def test_fewshot_table(tree, runs):
    table = tables.fewshot_table(runs)
    docs = _docs(tree, "fewshot")
    assert table["n"].sum() == len(docs)
    for (dataset, shots, strategy), g in table.groupby(["dataset", "shots", "masking"]):
        values = [
            100 * d["metrics"]["mcc"]
            for d in docs
            if (d["dataset"], d["shots"], d["masking"]) == (dataset, shots, strategy)
        ]
        acc = [
            100 * d["metrics"]["accuracy"]
            for d in docs
            if (d["dataset"], d["shots"], d["masking"]) == (dataset, shots, strategy)
        ]
        row = g.iloc[0]
        assert row["n"] == len(values)
        assert row["mcc_x100_mean"] == pytest.approx(np.mean(values))
        assert row["accuracy_x100_mean"] == pytest.approx(np.mean(acc))
        if len(values) > 1:
            assert row["mcc_x100_sd"] == pytest.approx(np.std(values, ddof=1))
        else:
            assert np.isnan(row["mcc_x100_sd"])


def test_intervals_over_seeds_and_over_the_test_set(tmp_path):
    """Few-shot means of several seeds get a t interval over them; a GUE run, and a few-shot mean of
    one run, the bootstrap interval of its test set's MCC, from its predictions.parquet."""
    rng = np.random.default_rng(7)
    grid = Grid(genomes=("hg38",), pretrained=(METHODS[0],), external=(), gue_tasks=("tf_0",), gue_seeds=(42,),
                fewshot=(("prom_core", 10, 0), ("prom_core", 10, 1), ("prom_core", 10, 2), ("prom_core", 50, 0)),
                baseline=False)
    labels = rng.integers(0, 3, 400)
    predictions = np.where(rng.random(400) < 0.7, labels, rng.integers(0, 3, 400))
    _gue(tmp_path, METHODS[0], "tf_0", 42, rng)
    for _, shots, seed in grid.fewshot:
        _fewshot(tmp_path, METHODS[0], "prom_core", shots, seed, rng)
    for run in [*grid.gue_runs(), *grid.fewshot_runs()]:
        scores = np.eye(3, dtype=np.float32)[predictions]
        pq.write_table(metrics.predictions_table(labels, scores), Path(run.of(METHODS[0]).folder(tmp_path)) / layout.PREDICTIONS)
    runs = tables.with_test_intervals(collect.collect_runs(tmp_path, grid.runs()))
    expected = 100 * np.array(stats.mcc_interval(stats.confusions(labels, predictions, 3)[0]))
    gue_row = tables.gue_table(runs).iloc[0]
    np.testing.assert_allclose(gue_row[["mcc_x100_low", "mcc_x100_high"]].to_numpy(float), expected)
    assert expected[0] < 100 * stats.mcc(stats.confusions(labels, predictions, 3))[0] < expected[1]
    few = tables.fewshot_table(runs).set_index("shots")
    np.testing.assert_allclose(few.loc[50, ["mcc_x100_low", "mcc_x100_high"]].to_numpy(float), expected)
    assert few.loc[50, "interval"] == tables.BOOTSTRAP_TEST_SET and few.loc[10, "interval"] == tables.T_OVER_SEEDS
    values = runs.loc[runs["shots"] == 10, "mcc"].to_numpy() * 100
    t_bounds = scipy_stats.t.interval(0.95, 2, loc=values.mean(), scale=scipy_stats.sem(values))
    np.testing.assert_allclose(few.loc[10, ["mcc_x100_low", "mcc_x100_high"]].to_numpy(float), t_bounds)
    assert collect.read_confusion(tmp_path / "nowhere" / layout.RECORD) is None


def test_pretraining_table(tree):
    table = tables.pretraining_table(collect.pretraining_summaries(tree, GRID.pretrained)).set_index("masking")
    assert list(table.index) == ["genemask", "cm_gems"]
    assert pd.isna(table.loc["genemask", "switch_step"])
    assert table.loc["cm_gems", "switch_step"] == 400
    assert table.loc["cm_gems", "final_val_ppl"] == 20.0 and table.loc["cm_gems", "tokens_per_s"] == 12345.6
    assert table.loc["cm_gems", "final_ref_val_ppl"] == pytest.approx(ref_ppl(np.array([1000]))[0])
    assert pd.isna(table.loc["genemask", "final_ref_val_ppl"])  # a summary written before it was logged


def _curves(ax) -> dict[str, tuple[list, list]]:
    """{legend label: (x, y)} of the data lines of a panel (not the switch marks)."""
    return {line.get_label(): (list(line.get_xdata()), list(line.get_ydata())) for line in ax.lines
            if not line.get_label().startswith("_") and len(line.get_xdata())}


def _switch_marks(ax) -> list[float]:
    return [float(line.get_xdata()[0]) for line in ax.lines if line.get_linestyle() == ":"]


def test_pretraining_figure_shows_the_reference_perplexity_beside_each_runs_own(tree, caplog):
    runs = collect.pretraining_curves(tree, GRID.pretrained)
    with caplog.at_level("WARNING"):
        fig = figures.pretraining_curves_figure(runs)
    reference, own, loss = fig.axes
    assert "reference" in reference.get_title().lower() and "own" in own.get_title().lower()
    steps = list(range(200, 1001, 200))
    assert _curves(reference) == {"cm_gems bert_base 10K": (steps, pytest.approx(ref_ppl(np.array(steps)).tolist()))}
    assert set(_curves(own)) == set(_curves(loss)) == {"genemask bert_base 10K", "cm_gems bert_base 10K"}
    assert _curves(own)["genemask bert_base 10K"] == (steps, pytest.approx([30.0 - s / 100 for s in steps]))
    assert [_switch_marks(ax) for ax in (reference, own, loss)] == [[400.0]] * 3  # cm_gems's switch
    notes = " ".join(t.get_text() for t in reference.texts)
    assert "no reference perplexity" in notes and "genemask bert_base 10K" in notes and "cm_gems" not in notes
    assert "genemask bert_base 10K" in caplog.text
    figures.pyplot().close(fig)


def test_pretraining_figure_of_runs_without_reference_columns(tmp_path):
    models = [_pretraining(tmp_path, "genemask", None, ["genemask"]),
              _pretraining(tmp_path, "cm_gems", 400, ["genemask", "global_pmi"])]
    fig = figures.pretraining_curves_figure(collect.pretraining_curves(tmp_path, models))
    assert _curves(fig.axes[0]) == {} and len(_curves(fig.axes[1])) == 2
    assert "cm_gems bert_base 10K" in " ".join(t.get_text() for t in fig.axes[0].texts)
    _assert_png_ok(figures.save_figure(fig, "curves", tmp_path)[0])


def test_switch_step_from_phases_of_unfinished_run(tree):
    curriculum = pd.DataFrame(
        {"step": [1, 2, 3, 4], "phase": ["genemask", "genemask", "global_pmi", "global_pmi"]}
    )
    mixed = curriculum.assign(phase=["dnabert", "global_pmi", "dnabert", "global_pmi"])
    assert collect.single_phase_change(curriculum) == 3
    assert collect.single_phase_change(mixed) is None
    switches = {r["masking"]: r["switch_step"] for r in collect.pretraining_curves(tree, GRID.pretrained)}
    assert switches == {"genemask": None, "cm_gems": 400}


def test_published_numbers_file():
    """Both rows of DNABERT-2's GUE table, every task once per model, each mean equal to its rows' mean."""
    pub = collect.read_published(REPO / "resources" / "published")["gue"]
    assert {"DNABERT-2", "DNABERT (6-mer)"} <= set(pub["model"])  # all rows: tests/test_published.py
    for model, rows in pub.groupby("model"):
        values = rows.set_index("task")["mcc_x100"]
        assert sorted(values.index) == sorted([*gue.GUE_TASKS, "mean_27", "mean_28"]), model
        assert values["mean_27"] == pytest.approx(values[gue.GUE_27].mean(), abs=5e-4)
        assert values["mean_28"] == pytest.approx(values[gue.GUE_TASKS].mean(), abs=5e-4)
    assert all("MAGICS-LAB/DNABERT_2" in s for s in pub[~pub["task"].str.startswith("mean")]["source"])
    readme = (REPO / "resources" / "published" / "README.md").read_text()
    assert not re.search(r"(^|[\s(`])(/|\.\./)\w", readme, re.M), "names a path outside the repository"


def test_published_table(tree, runs):
    table = tables.published_table(runs, collect.read_published(REPO / "resources" / "published"))
    gue = table[table["benchmark"] == "gue"].set_index("entry")
    assert gue.loc["prom_core_tata", "DNABERT-2 (published)"] == 74.17
    assert gue.loc["prom_core_tata", "DNABERT (6-mer) (published)"] == 76.06
    assert gue.loc["EMP_H3", "DNABERT (6-mer) (published)"] == 73.10 and gue.loc["covid", "DNABERT-2 (published)"] == 71.02
    assert gue.loc["mean_27", "DNABERT-2 (published)"] == 66.649
    assert gue.loc["mean_27", "DNABERT (6-mer) (published)"] == 60.690
    means = tables.gue_task_means(runs)
    best = means[means["task"] == "tf_0"]["mcc_x100"].max()
    assert gue.loc["tf_0", "ours_x100"] == pytest.approx(best)
    summary = tables.gue_summary(runs)
    assert gue.loc["mean_27", "ours_x100"] == pytest.approx(summary["mcc_x100_mean27"].max())
    assert gue.loc["mean_27", "ours_method"] == "cm_gems bert_base 10K"
    assert np.isnan(gue.loc["mean_28", "ours_x100"])
    assert "2306.15006" in gue.loc["tf_0", "sources"] and "computed" in gue.loc["mean_28", "sources"]


def test_published_fewshot_and_missing_source(tmp_path, runs):
    pub = tmp_path / "pub"
    pub.mkdir()
    (pub / "fewshot.csv").write_text(
        "dataset,shots,model,metric,value_x100,source\nprom_core,10,X,mcc,12.5,paper T1\n"
    )
    table = tables.published_table(runs, collect.read_published(pub))
    row = table[table["benchmark"] == "fewshot"].iloc[0]
    few = tables.fewshot_table(runs)
    assert row["X (published)"] == 12.5 and row["shots"] == 10
    ours = few[(few["dataset"] == "prom_core") & (few["shots"] == 10)]["mcc_x100_mean"].max()
    assert row["ours_x100"] == pytest.approx(ours)
    (pub / "gue_mcc.csv").write_text("task,model,mcc_x100,source\ntf_0,Y,50,\n")
    with pytest.raises(CmgemsError, match="source"):
        collect.read_published(pub)


@pytest.mark.parametrize("values, line, message", [
    ("tf_0,X,abc,paper", 3, "mcc_x100 'abc' is not a finite number"),
    ("tf_0,X,,paper", 3, "mcc_x100 is blank"),
    ("tf_0,X,inf,paper", 3, "mcc_x100 inf is not a finite number"),
    ("tf_0,X,n/a,paper", 3, "mcc_x100 is blank"),  # read as missing
])
def test_published_values_must_be_numbers(tmp_path, values, line, message):
    """A published value that is not a number would be a blank cell: an error naming file and line
    (comment lines counted)."""
    pub = tmp_path / "pub"
    pub.mkdir()
    (pub / "gue_mcc.csv").write_text(f"task,model,mcc_x100,source\n# a comment\ntf_0,Y,50,paper\n{values}\n")
    with pytest.raises(CmgemsError, match=re.escape(f"{pub / 'gue_mcc.csv'}: line {line + 1}: {message}")):
        collect.read_published(pub)


@pytest.mark.parametrize("shots, value, message", [
    ("ten", "12.5", "shots 'ten' is not a whole number"),
    ("10.5", "12.5", "shots 10.5 is not a whole number"),
    ("10", "twelve", "value_x100 'twelve' is not a finite number"),
])
def test_published_fewshot_values_must_be_numbers(tmp_path, shots, value, message):
    pub = tmp_path / "pub"
    pub.mkdir()
    (pub / "fewshot.csv").write_text(f"dataset,shots,model,metric,value_x100,source\nprom_core,{shots},X,mcc,{value},T1\n")
    with pytest.raises(CmgemsError, match=re.escape(f"{pub / 'fewshot.csv'}: line 2: {message}")):
        collect.read_published(pub)


@pytest.mark.parametrize("data, message", [
    (b"task,model,mcc_x100,source\ntf_0,X\xe9,50,paper\n", "cannot read it as CSV text (UTF-8)"),
    (b"", "cannot read it as CSV text (UTF-8)"),
    (b'task,model,mcc_x100,source\ntf_0,"X,50,paper\n', "cannot read it as CSV text (UTF-8)"),
    (b"task,model,mcc_x100,source\ntf_0,X,50\n", "line 2: every published number needs a source"),
])
def test_unreadable_published_files_are_named(tmp_path, data, message):
    pub = tmp_path / "pub"
    pub.mkdir()
    (pub / "gue_mcc.csv").write_bytes(data)
    with pytest.raises(CmgemsError, match=re.escape(f"{pub / 'gue_mcc.csv'}: {message}")):
        collect.read_published(pub)


def test_published_files_with_a_byte_order_mark_and_crlf_are_read(tmp_path):
    pub = tmp_path / "pub"
    pub.mkdir()
    (pub / "gue_mcc.csv").write_bytes("\ufefftask,model,mcc_x100,source\r\ntf_0,X,50.5,paper\r\n".encode())
    assert collect.read_published(pub)["gue"][["task", "mcc_x100"]].values.tolist() == [["tf_0", 50.5]]


IDENTITY_FAULTS = {  # a record of another run, copied into the folder of prom_core, 10 shots, seed 1 of METHODS[0]
    "seed": (dict(seed=2), "seed=2"),
    "shots": (dict(shots=50), "shots=50"),
    "dataset": (dict(dataset="splice_40"), "dataset=splice_40"),
    "masking": (dict(masking="cm_gems"), "masking=cm_gems"),
    "model": (dict(model="bert_small"), "model=bert_small"),
    "steps": (dict(steps=20000), "steps=20000"),
    "genome": (dict(genome="hg19"), "genome=hg19"),
    "kind": (dict(kind=GUE), "kind=gue"),
    "baseline": ({**layout.BASELINE_MODEL._asdict()}, "genome=none model=kmer_logreg masking=none steps=0"),
}


@pytest.mark.parametrize("fault", IDENTITY_FAULTS, ids=list(IDENTITY_FAULTS))
def test_a_record_of_another_run_is_refused(tree, tmp_path, capsys, fault):
    """A record whose own identity is not its folder's would be shown as another run (that one twice,
    this one missing): refused, naming the file and both identities; no table is written."""
    root = tmp_path / "results"
    shutil.copytree(tree, root)
    run = Run(FEWSHOT, METHODS[0], "prom_core", 1, 10)
    record = Path(run.folder(root)) / layout.RECORD
    edit, says = IDENTITY_FAULTS[fault]
    record.write_text(json.dumps({**json.loads(record.read_text()), **edit}))
    with pytest.raises(CmgemsError) as err:
        collect.collect_runs(root, GRID.runs())
    declared = "kind=fewshot genome=hg38 model=bert_base masking=genemask steps=10000 dataset=prom_core shots=10 seed=1"
    assert str(err.value).startswith(f"{record}: the record says {says}, but its folder is that of the run {declared} ")
    options = ["report", "--results", str(root), "--grid", GRID.to_json(), "--tables-only", "--k", "6",
               "--max-positions", "64", "--steps", "100", "--out", str(tmp_path / "report")]
    assert cli_main(options) == 1
    assert str(record) in capsys.readouterr().err and not (tmp_path / "report").exists()


def test_a_record_without_the_optional_identity_keys_takes_the_declared_ones(tmp_path):
    run = Run(GUE, Model("g", "m", "random", 10), "t", 3)
    _write(Path(run.folder(tmp_path)) / layout.RECORD, {"model": "m", "masking": "random", "task": "t",
                                                      "metrics": _metrics(np.random.default_rng(0))})
    row = collect.collect_runs(tmp_path, [run]).iloc[0]
    assert (row["kind"], row["genome"], row["steps"], row["seed"]) == ("gue", "g", 10, 3)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_runs_with_metrics_not_finite_are_left_out_and_named(tree, tmp_path, caplog, value):
    """A NaN or infinite metric would be counted in n but skipped by the mean: the run is left out of
    every table, with a warning naming it, so that n counts the runs the means use."""
    root = tmp_path / "results"
    shutil.copytree(tree, root)
    bad = [Path(Run(FEWSHOT, METHODS[0], "prom_core", 0, 10).folder(root)) / layout.RECORD,
           Path(Run(GUE, METHODS[1], "tf_1", 43).folder(root)) / layout.RECORD]
    metric = {bad[0]: "mcc", bad[1]: "accuracy"}
    for path in bad:
        doc = json.loads(path.read_text())
        doc["metrics"][metric[path]] = value
        path.write_text(json.dumps(doc))  # NaN and Infinity, as Python's json writes them
    with caplog.at_level("WARNING", logger="cmgems.report.collect"):
        runs = collect.collect_runs(root, GRID.runs())
    warning = next(r.getMessage() for r in caplog.records if "not finite" in r.getMessage())
    assert warning.startswith("2 run(s) left out of every table") and all(str(p) in warning for p in bad)
    assert f"{metric[bad[0]]}={value}" in warning
    assert not runs["path"].isin([str(p) for p in bad]).any()
    few = tables.fewshot_table(runs).set_index(["dataset", "shots", "masking"]).loc[("prom_core", 10, "genemask")]
    kept = [json.loads((Path(Run(FEWSHOT, METHODS[0], "prom_core", seed, 10).folder(root)) / layout.RECORD).read_text())
            ["metrics"]["mcc"] * 100 for seed in (1, 2)]
    assert few["n"] == 2 and few["mcc_x100_mean"] == pytest.approx(np.mean(kept))
    means = tables.gue_task_means(runs).set_index(["masking", "task"])
    assert means.loc[("cm_gems", "tf_1"), "n_seeds"] == 1


def test_a_metric_that_is_not_a_number_is_refused(tmp_path):
    run = Run(GUE, Model("g", "m", "random", 10), "t", 3)
    path = Path(run.folder(tmp_path)) / layout.RECORD
    metrics = _metrics(np.random.default_rng(0))
    _write(path, {"model": "m", "masking": "random", "task": "t", "metrics": {**metrics, "mcc": "0.5"}})
    with pytest.raises(CmgemsError, match=re.escape(f"{path}: metrics.mcc is '0.5', not a number")):
        collect.collect_runs(tmp_path, [run])
    _write(path, {"model": "m", "masking": "random", "task": "t", "metrics": {"mcc": 0.5}})
    with pytest.raises(CmgemsError, match=re.escape(f"{path}: metrics.json lacks key(s) metrics.accuracy")):
        collect.collect_runs(tmp_path, [run])


def test_write_table_formats(tmp_path):
    df = pd.DataFrame({"task": ["a_b", "c"], "mcc_x100": [12.3456, np.nan], "n": [3, 1]})
    csv, md, tex = render.write_table(df, "t", tmp_path)
    assert csv == tmp_path / "tables" / "t.csv"
    back = pd.read_csv(csv)
    assert back["mcc_x100"].iloc[0] == 12.3456 and np.isnan(back["mcc_x100"].iloc[1])
    assert "| a_b | 12.35 | 3 |" in md.read_text() and "| c |  | 1 |" in md.read_text()
    text = tex.read_text()
    for rule in (r"\toprule", r"\midrule", r"\bottomrule", r"\begin{tabular}{lrr}"):
        assert rule in text
    assert r"a\_b & 12.35 & 3 \\" in text
    assert not list(tmp_path.glob(".*tmp"))


def _assert_png_ok(path: Path) -> None:
    image = np.asarray(Image.open(path).convert("RGB"), dtype=float)
    assert image.size > 0 and image.std() > 0, f"{path} is blank"


def test_plot_masks_with_fake_maskers(tmp_path):
    ids = np.r_[2, np.arange(5, 45), 3, 0, 0]

    def every_fifth(input_ids, step, draws):
        labels = torch.full_like(input_ids, masking.IGNORE_INDEX)
        labels[:, 1:-3:5] = input_ids[:, 1:-3:5]
        inputs = input_ids.clone()
        inputs[:, 1:-3:5] = 4
        return inputs, labels

    def first_span(input_ids, step, draws):
        labels = torch.full_like(input_ids, masking.IGNORE_INDEX)
        labels[:, 3:9] = input_ids[:, 3:9]
        inputs = input_ids.clone()
        inputs[:, 3:5] = 4
        inputs[:, 5] = 17
        return inputs, labels

    raster = masks.mask_raster(ids, *[t.numpy() for t in first_span(torch.as_tensor(ids)[None], 0, None)])
    assert raster[[0, 1, 3, 5, 6, 41, 42]].tolist() == [4, 0, 1, 2, 3, 4, 4]
    fig = masks.masks_figure(ids, {"every_fifth": every_fifth, "first_span": first_span}, k=6)
    paths = figures.save_figure(fig, "masks", tmp_path)
    assert paths == [tmp_path / "figures" / "masks.png", tmp_path / "figures" / "masks.pdf"]
    _assert_png_ok(paths[0])


def test_masks_figure_draws_the_configured_k_length_and_step(tree, tmp_path):
    genome, sequence = collect.longest_validation_sequence(tree, ["hg38"])
    assert genome == "hg38" and len(sequence) == 300
    pmi_table = Path(layout.of_genome("hg38", layout.PMI, tree))
    assert set(masks.default_maskers(pmi_table, 6, 1000)) == set(masking.names())
    for k, positions, steps in ((6, 64, 1000), (4, 128, 300)):
        fig = masks.validation_masks_figure(tree, ["hg38"], k, positions, steps)
        ax = fig.axes[0]
        assert ax.images[0].get_array().shape == (len(masking.names()), positions)
        assert f"{k}-mer" in ax.get_xlabel() and f"step {steps // 2}," in ax.get_title()
        _assert_png_ok(figures.save_figure(fig, "masks", tmp_path)[0])


def test_figures_without_data(tmp_path, caplog):
    empty = tmp_path / "results"
    empty.mkdir()
    with caplog.at_level("WARNING"):
        paths = write_figures(empty, GRID, collect.collect_runs(empty, GRID.runs()), tmp_path, 6, 64, 100)
    assert paths == [Path(layout.figure(f.name, fmt, tmp_path)) for f in layout.FIGURES for fmt in ("png", "pdf")]
    for p in paths:
        assert p.stat().st_size > 0
        if p.suffix == ".png":
            _assert_png_ok(p)
    assert "no data" in caplog.text or "no " in caplog.text
    written = write_tables(empty, GRID, collect.collect_runs(empty, GRID.runs()), None, tmp_path)
    assert written == [Path(layout.table(t.name, fmt, tmp_path)) for t in layout.TABLES for fmt in ("csv", "md", "tex")]


def test_cli_round_trip(tree, tmp_path):
    out = tmp_path / "report"
    options = ["--grid", GRID.to_json(), "--out", str(out), "--k", "6", "--max-positions", "64", "--steps", "100"]
    assert cli_main(["report", "--results", str(tree), "--published", str(REPO / "resources" / "published"),
                     *options]) == 0
    for item in layout.TABLES:
        for fmt in layout.TABLE_FORMATS:
            assert Path(layout.table(item.name, fmt, out)).stat().st_size > 0
        assert r"\bottomrule" in Path(layout.table(item.name, "tex", out)).read_text()
    for item in layout.FIGURES:
        assert Path(layout.figure(item.name, "pdf", out)).stat().st_size > 0
        _assert_png_ok(Path(layout.figure(item.name, "png", out)))
    gue = pd.read_csv(layout.table("gue", "csv", out))
    assert len(gue) == len(_docs(tree, "gue"))
    pd.testing.assert_frame_equal(
        pd.read_csv(layout.table("fewshot", "csv", out)),
        pd.read_csv(_csv_of(tables.fewshot_table(collect.collect_runs(tree, GRID.runs())), tmp_path)),
    )
    assert cli_main(["report", "--results", str(tree / "missing"), *options]) == 1
    with pytest.raises(SystemExit):
        cli_main(["report", "--results", str(tree), *options[2:], "--grid", '{"genomes": []}'])


def _csv_of(df: pd.DataFrame, tmp_path: Path) -> Path:
    path = tmp_path / "expected.csv"
    df.to_csv(path, index=False)
    return path
