"""The protocol check: each published checkpoint evaluated here (`pretrained_models`) that names its
row of the published GUE table (`published_as`), fine-tuned by our GUE protocol, beside its published
MCC task by task. A task differs when the published MCC lies outside our own spread for it: the range
over seeds where there are several, else the run's 95% bootstrap interval over the test set. A
summary row per checkpoint gives the mean difference over the tasks both have, with its 95%
bootstrap interval over tasks, and how many tasks differ. Checks the protocol: a close match says
our fine-tuning reproduces the published one; a gap also reflects their protocol's differences
(LoRA for Nucleotide Transformer, other learning rates and batch sizes)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from cmgems import layout, stats
from cmgems.layout import Grid

COLUMNS = ["checkpoint", "published_as", "task", "n_seeds", "ours_x100", "ours_low", "ours_high", "spread",
           "published_x100", "difference", "ci_low", "ci_high", "differs", "n_tasks", "tasks_differing"]
MEAN = "mean"  # the task of a checkpoint's summary row


def task_spread(runs: pd.DataFrame) -> pd.DataFrame:
    """Per task of one checkpoint's GUE runs: n_seeds, ours_x100 (mean over seeds), ours_low, ours_high
    (seeds' min and max, or with one seed its test-set interval: `tables.with_test_intervals`' columns)
    and `spread`, which of the two it is."""
    mcc = runs.assign(x=runs["mcc"] * 100, low=runs.get("mcc_low", np.nan) * 100, high=runs.get("mcc_high", np.nan) * 100)
    per_task = mcc.groupby("task", sort=False).agg(n_seeds=("x", "count"), ours_x100=("x", "mean"), seeds_low=("x", "min"),
                                                   seeds_high=("x", "max"), test_low=("low", "first"),
                                                   test_high=("high", "first"))
    several = per_task["n_seeds"] > 1
    per_task["ours_low"] = per_task["seeds_low"].where(several, per_task["test_low"])
    per_task["ours_high"] = per_task["seeds_high"].where(several, per_task["test_high"])
    per_task["spread"] = np.where(several, "range over seeds", "95% test-set bootstrap")
    return per_task[["n_seeds", "ours_x100", "ours_low", "ours_high", "spread"]]


def protocol_table(runs: pd.DataFrame, grid: Grid, published_gue: pd.DataFrame) -> pd.DataFrame:
    """Rows per task, then a MEAN row, of each checkpoint of `grid.published_as` (COLUMNS); `runs` as
    `tables.with_test_intervals` gives them, `published_gue` as `collect.read_published(...)["gue"]`."""
    rows = []
    for name, published_as in grid.published_as:
        ours = runs[(runs["kind"] == layout.GUE) & (runs["genome"] == layout.EXTERNAL) & (runs["model"] == name)]
        published = published_gue[published_gue["model"] == published_as].set_index("task")["mcc_x100"]
        tasks = task_spread(ours).join(published.rename("published_x100"), how="inner")
        if tasks.empty:
            rows.append({"checkpoint": name, "published_as": published_as, "task": MEAN, "n_tasks": 0})
            continue
        tasks["difference"] = tasks["ours_x100"] - tasks["published_x100"]
        tasks["differs"] = ~tasks["published_x100"].between(tasks["ours_low"], tasks["ours_high"])
        rows += [{"checkpoint": name, "published_as": published_as, "task": task, **row}
                 for task, row in tasks.to_dict("index").items()]
        low, high = stats.mean_interval(tasks["difference"].to_numpy(float))
        rows.append({"checkpoint": name, "published_as": published_as, "task": MEAN,
                     "ours_x100": tasks["ours_x100"].mean(), "published_x100": tasks["published_x100"].mean(),
                     "difference": tasks["difference"].mean(), "ci_low": low, "ci_high": high,
                     "n_tasks": len(tasks), "tasks_differing": int(tasks["differs"].sum())})
    table = pd.DataFrame(rows, columns=COLUMNS)
    for column in ("n_seeds", "n_tasks", "tasks_differing"):
        table[column] = table[column].astype("Int64")
    return table
