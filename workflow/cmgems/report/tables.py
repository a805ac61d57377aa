"""The report's tables as DataFrames, from the collected runs (`collect`). Metrics are shown x100
(columns `*_x100`), as the papers do. Methods (genome, model, masking, steps) are ordered by genome,
model, then masking in the order of the masking registry (the baseline after, others last).

MCC has a 95% interval (`mcc_x100_low`, `mcc_x100_high`): over seeds (Student t) where a few-shot
mean has several, else a percentile bootstrap over the run's test set (`with_test_intervals`)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from cmgems import layout, masking, stats
from cmgems.gue import GROUP_ORDER, GUE_27, GUE_TASKS, task_group
from cmgems.layout import Grid
from cmgems.report.claims import claims_table
from cmgems.report.collect import METHOD_KEYS, METRICS, read_confusion, read_published
from cmgems.report.protocol import protocol_table
from cmgems.report.variants import variants_table

FEWSHOT_METRICS = ["mcc", "accuracy", "f1_macro"]
NO_MASKING = layout.BASELINE_MODEL.masking
MASKING_ORDER = [*masking.names(), NO_MASKING]
FEWSHOT_KEYS = ["dataset", "shots", *METHOD_KEYS]  # a few-shot mean: its runs differ by seed
T_OVER_SEEDS, BOOTSTRAP_TEST_SET = "t over seeds", "bootstrap over the test set"


def method_label(genome: str, model: str, masking: str, steps: int, with_genome: bool = False) -> str:
    """Short legend name of a method, e.g. 'genemask bert_base 10K' ('kmer_logreg' for the baseline)."""
    if masking == NO_MASKING:
        return model
    steps_text = f"{steps // 1000}K" if steps and steps % 1000 == 0 else str(steps)
    label = f"{masking} {model} {steps_text}"
    return f"{genome}: {label}" if with_genome else label


def with_labels(df: pd.DataFrame) -> pd.DataFrame:
    """`df` plus a `method` column; the genome is named only when the runs span several genomes."""
    several = df.loc[df["masking"] != NO_MASKING, "genome"].nunique() > 1
    df = df.copy()
    df["method"] = [method_label(*key, with_genome=several) for key in df[METHOD_KEYS].itertuples(index=False)]
    return df


def method_sort(df: pd.DataFrame, extra: Iterable[str] = (), leading: Iterable[str] = ()) -> pd.DataFrame:
    """Sort (stably) by `leading`, then genome, model, masking (in MASKING_ORDER, unknown ones last),
    steps, then `extra`."""
    order = {m: i for i, m in enumerate(MASKING_ORDER)}
    key = df["masking"].map(lambda m: order.get(m, len(order)))
    return (df.assign(_mask_order=key)
            .sort_values([*leading, "genome", "model", "_mask_order", "masking", "steps", *extra], kind="stable")
            .drop(columns="_mask_order").reset_index(drop=True))


def _task_sort_key(task: str) -> tuple:
    return (GUE_TASKS.index(task), "") if task in GUE_TASKS else (len(GUE_TASKS), task)


def _x100(df: pd.DataFrame, metrics: Iterable[str]) -> pd.DataFrame:
    """Metric columns scaled to x100 and renamed `{metric}_x100`."""
    metrics = list(metrics)
    return df.assign(**{m: df[m] * 100 for m in metrics}).rename(columns={m: f"{m}_x100" for m in metrics})


def with_test_intervals(runs: pd.DataFrame) -> pd.DataFrame:
    """`runs` plus `mcc_low`, `mcc_high`: the 95% percentile bootstrap interval of the MCC over the
    test set (`stats.mcc_interval`, from the run's predictions.parquet, each read once) of every GUE
    run and every few-shot run alone in its mean (FEWSHOT_KEYS); NaN for the others and for runs
    without predictions."""
    few = runs["kind"] == layout.FEWSHOT
    alone = few & ~runs[FEWSHOT_KEYS].where(few).duplicated(keep=False)
    bounds = np.full((len(runs), 2), np.nan)
    for i in np.flatnonzero((runs["kind"] == layout.GUE) | alone):
        confusion = read_confusion(runs["path"].iloc[i])
        if confusion is not None:
            bounds[i] = stats.mcc_interval(confusion)
    return runs.assign(mcc_low=bounds[:, 0], mcc_high=bounds[:, 1])


def _test_interval_x100(runs: pd.DataFrame) -> pd.DataFrame:
    """`runs` plus mcc_x100_low, mcc_x100_high from `with_test_intervals`' columns (NaN without them)."""
    return runs.assign(**{f"mcc_x100_{end}": 100 * runs[f"mcc_{end}"] if f"mcc_{end}" in runs else np.nan
                          for end in ("low", "high")})


# ------------------------------------------------------------------------------------------- GUE
def gue_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Every GUE run: genome, model, masking, steps, task, group, seed, metrics x100, the 95%
    interval of MCC x100 over the test set (blank unless `runs` has `with_test_intervals`'), sizes.

    No timings: the table depends only on the results, so runs on different machines compare byte
    for byte (timings are in each metrics.json)."""
    gue = _test_interval_x100(runs[runs["kind"] == layout.GUE].copy())
    gue["group"] = gue["task"].map(task_group)
    gue = _x100(gue, METRICS)
    cols = [*METHOD_KEYS, "task", "group", "seed", *[f"{m}_x100" for m in METRICS], "mcc_x100_low", "mcc_x100_high",
            "n_train", "n_test"]
    gue["_task"] = gue["task"].map(_task_sort_key)
    return method_sort(gue, ["_task", "seed"])[cols]


def gue_task_means(runs: pd.DataFrame) -> pd.DataFrame:
    """Per method and task: MCC x100 averaged over seeds (`mcc_x100`) and the number of seeds."""
    gue = gue_table(runs)
    means = (gue.groupby([*METHOD_KEYS, "task", "group"], sort=False)["mcc_x100"]
             .agg(mcc_x100="mean", n_seeds="count").reset_index())
    return means


def gue_summary(runs: pd.DataFrame) -> pd.DataFrame:
    """Per method: MCC x100 mean per task group (tasks first averaged over seeds), the number of tasks,
    the mean over the tasks present, the 27-task mean (blank unless all 27 GUE tasks without covid are
    present) and the 28-task mean (blank unless covid is present too)."""
    means = gue_task_means(runs)
    groups = [g for g in GROUP_ORDER if g in set(means["group"])]
    rows = []
    for key, g in means.groupby(METHOD_KEYS, sort=False):
        row = dict(zip(METHOD_KEYS, key))
        by_group = g.groupby("group")["mcc_x100"].mean()
        row.update({f"mcc_x100_{grp}": by_group.get(grp, np.nan) for grp in groups})
        row["n_tasks"] = len(g)
        row["mcc_x100_mean"] = g["mcc_x100"].mean()
        for name, tasks in (("mean27", GUE_27), ("mean28", GUE_TASKS)):
            complete = set(tasks) <= set(g["task"])
            row[f"mcc_x100_{name}"] = g.loc[g["task"].isin(tasks), "mcc_x100"].mean() if complete else np.nan
        rows.append(row)
    cols = [*METHOD_KEYS, *[f"mcc_x100_{grp}" for grp in groups], "n_tasks", "mcc_x100_mean", "mcc_x100_mean27",
            "mcc_x100_mean28"]
    return method_sort(pd.DataFrame(rows, columns=cols))


def gue_by_task(runs: pd.DataFrame) -> pd.DataFrame:
    """MCC x100 (mean over seeds) with one row per task and one column per method."""
    means = with_labels(gue_task_means(runs))
    if means.empty:
        return pd.DataFrame(columns=["task", "group"])
    methods = list(dict.fromkeys(method_sort(means)["method"]))
    wide = means.pivot_table(index=["task", "group"], columns="method", values="mcc_x100", sort=False).reset_index()
    wide = wide.sort_values("task", key=lambda s: s.map(_task_sort_key)).reset_index(drop=True)
    wide.columns.name = None
    return wide[["task", "group", *methods]]


# -------------------------------------------------------------------------------------- few-shot
def fewshot_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Per dataset, shots and method: n runs, the mean and sd (ddof=1; blank for n=1) of MCC,
    accuracy and macro F1, all x100, and the 95% interval of the MCC mean (`interval` names it: a
    Student t interval over the seeds for n > 1; for n = 1 the run's bootstrap over its test set,
    blank unless `runs` has `with_test_intervals`' columns)."""
    few = _x100(_test_interval_x100(runs[runs["kind"] == layout.FEWSHOT]), FEWSHOT_METRICS)
    grouped = few.groupby(FEWSHOT_KEYS, sort=False)
    table = grouped.size().rename("n").reset_index()
    for m in FEWSHOT_METRICS:
        values = grouped[f"{m}_x100"].agg(["mean", "std"]).reset_index(drop=True)
        table[f"{m}_x100_mean"] = values["mean"].to_numpy()
        table[f"{m}_x100_sd"] = values["std"].to_numpy()
        if m == "mcc":
            single = grouped[["mcc_x100_low", "mcc_x100_high"]].first().to_numpy()
            low, high = stats.t_interval(values["mean"], values["std"], table["n"])
            several = table["n"].to_numpy() > 1
            table["mcc_x100_low"] = np.where(several, low, single[:, 0])
            table["mcc_x100_high"] = np.where(several, high, single[:, 1])
            table["interval"] = np.where(several, T_OVER_SEEDS, np.where(np.isnan(single[:, 0]), "", BOOTSTRAP_TEST_SET))
    table["shots"] = table["shots"].astype("Int64")
    return method_sort(table, leading=["dataset", "shots"])


# ----------------------------------------------------------------------------------- pretraining
PRETRAINING_COLUMNS = [*METHOD_KEYS, "final_loss", "final_val_ppl", "final_ref_val_ppl", "switch_step", "tokens_per_s",
                       "train_seconds", "parameters"]


def pretraining_table(summaries: list[dict]) -> pd.DataFrame:
    """One row per finished pretraining run (`collect.pretraining_summaries`): final training loss,
    final validation perplexity under the run's own masking and under the reference masking (blank
    for runs written before it was logged), curriculum switch step (blank if none), training tokens
    per second, seconds, parameters."""
    table = pd.DataFrame([{k: doc.get(k) for k in PRETRAINING_COLUMNS} for doc in summaries],
                         columns=PRETRAINING_COLUMNS)
    for col in ("final_loss", "final_val_ppl", "final_ref_val_ppl", "tokens_per_s", "train_seconds"):
        table[col] = pd.to_numeric(table[col], errors="coerce").astype(float)
    for col in ("switch_step", "parameters", "steps"):
        table[col] = pd.to_numeric(table[col], errors="coerce").astype("Int64")
    return method_sort(table)


# ------------------------------------------------------------------------------------- published
def _best(df: pd.DataFrame, keys: list[str], value: str) -> pd.DataFrame:
    """Per `keys`: the labelled method with the highest `value` (`ours_method`, `ours_x100`)."""
    df = with_labels(df).dropna(subset=[value])
    best = df.loc[df.groupby(keys, sort=False)[value].idxmax()]
    return best[[*keys, "method", value]].rename(columns={"method": "ours_method", value: "ours_x100"})


def published_table(runs: pd.DataFrame, published: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Our best method next to the published numbers.

    Rows: every GUE task (ours or published), `mean_27` and `mean_28` (the best 27- / 28-task mean
    among methods with all those tasks, else blank), and every few-shot (dataset, shots, metric) with
    published numbers. Columns: benchmark, entry, shots, metric, ours_method, ours_x100, one column
    per published model ("MODEL (published)", x100), sources. `published`: `collect.read_published`'s."""
    rows = []
    # GUE per task and the means.
    means = gue_task_means(runs)
    best_task = _best(means, ["task"], "mcc_x100").rename(columns={"task": "entry"})
    summary = gue_summary(runs)
    best_means = [_best(summary.assign(entry=f"mean_{n}"), ["entry"], f"mcc_x100_mean{n}") for n in (27, 28)]
    ours_gue = pd.concat([best_task, *best_means], ignore_index=True)
    pub_gue = published["gue"].rename(columns={"task": "entry", "mcc_x100": "value_x100"})
    entries = sorted(set(ours_gue["entry"]) | set(pub_gue["entry"]), key=_entry_sort_key)
    for entry in entries:
        rows.append(_comparison_row("gue", entry, None, "mcc", ours_gue[ours_gue["entry"] == entry],
                                    pub_gue[pub_gue["entry"] == entry]))
    # Few-shot, only where published numbers exist.
    pub_few = published["fewshot"]
    few = fewshot_table(runs)
    for (dataset, shots, metric), pub in pub_few.groupby(["dataset", "shots", "metric"], sort=True):
        column = f"{metric}_x100_mean"
        sel = few[(few["dataset"] == dataset) & (few["shots"] == int(shots))] if column in few else few.iloc[:0]
        ours = _best(sel.assign(entry=dataset), ["entry"], column) if not sel.empty else sel
        rows.append(_comparison_row("fewshot", dataset, int(shots), metric, ours, pub))
    table = pd.DataFrame(rows)
    base = ["benchmark", "entry", "shots", "metric", "ours_method", "ours_x100"]
    if table.empty:
        return pd.DataFrame(columns=[*base, "sources"])
    models = [c for c in table.columns if c not in base + ["sources"]]
    table["shots"] = table["shots"].astype("Int64")
    return table[[*base, *models, "sources"]]


def _entry_sort_key(entry: str) -> tuple:
    return (1, entry) if entry.startswith("mean_") else (0, *_task_sort_key(entry))


def _comparison_row(benchmark, entry, shots, metric, ours: pd.DataFrame, published: pd.DataFrame) -> dict:
    row = {"benchmark": benchmark, "entry": entry, "shots": shots, "metric": f"{metric}_x100",
           "ours_method": ours["ours_method"].iloc[0] if len(ours) else "",
           "ours_x100": float(ours["ours_x100"].iloc[0]) if len(ours) else np.nan}
    for _, pub in published.iterrows():
        row[f"{pub['model']} (published)"] = float(pub["value_x100"])
    row["sources"] = "; ".join(dict.fromkeys(published["source"].astype(str))) if len(published) else ""
    return row


def all_tables(runs: pd.DataFrame, summaries: list[dict], published_dir: str | Path | None,
               grid: Grid) -> dict[str, pd.DataFrame]:
    """Every table of the report (layout.TABLES), by name, of the runs of `grid`."""
    runs = with_test_intervals(runs)
    published = read_published(published_dir)
    return {
        "claims": claims_table(runs, grid, published["gue"]), "gue": gue_table(runs), "gue_summary": gue_summary(runs),
        "gue_by_task": gue_by_task(runs), "fewshot": fewshot_table(runs), "pretraining": pretraining_table(summaries),
        "ours_vs_published": published_table(runs, published), "variants": variants_table(runs, grid),
        "protocol": protocol_table(runs, grid, published["gue"]),
    }
