"""The report's figures (layout.FIGURES but the masks, `masks`), each built by a function that
returns a matplotlib Figure and saved as PNG (dpi 150) and PDF. A figure without data says so on
its axes, so that every declared output exists."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd

from cmgems import layout
from cmgems.atomic import atomic_output
from cmgems.gue import GROUP_ORDER
from cmgems.report.tables import gue_by_task, method_label, with_labels

log = logging.getLogger(__name__)


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, name: str, folder: str | Path) -> list[Path]:
    """Save `fig` as figure `name` of report `folder` in every format (layout.FIGURE_FORMATS),
    atomically, and close it."""
    plt = pyplot()
    paths = []
    try:
        for fmt in layout.FIGURE_FORMATS:
            path = Path(layout.figure(name, fmt, folder))
            with atomic_output(path) as tmp:
                fig.savefig(tmp, format=fmt, dpi=150, bbox_inches="tight")
            paths.append(path)
    finally:
        plt.close(fig)
    return paths


def no_data_figure(title: str, message: str):
    """A figure whose axes say there is no data; logs a warning."""
    plt = pyplot()
    log.warning("figure %r: %s", title, message)
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.text(0.5, 0.5, f"no data\n{message}", ha="center", va="center", fontsize=11, wrap=True,
            transform=ax.transAxes, color="firebrick")
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    return fig


def colours(labels: list[str]) -> dict[str, tuple]:
    plt = pyplot()
    cmap = plt.get_cmap("tab10" if len(labels) <= 10 else "tab20")
    return {label: cmap(i % cmap.N) for i, label in enumerate(labels)}


def fewshot_curves_figure(fewshot: pd.DataFrame, metric: str = "mcc"):
    """`metric` x100 (mean +- sd over seeds) against shots per class (log scale), one panel per
    dataset, one line per method; `fewshot` is `fewshot_table(runs)`."""
    title = f"Few-shot {metric} x100"
    if fewshot.empty:
        return no_data_figure(title, "no few-shot runs found")
    plt = pyplot()
    df = with_labels(fewshot)
    datasets = sorted(df["dataset"].unique())
    methods = list(dict.fromkeys(df["method"]))
    colour = colours(methods)
    ncols = min(3, len(datasets))
    nrows = math.ceil(len(datasets) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.5 * ncols, 3.5 * nrows), squeeze=False)
    for ax, dataset in zip(axes.flat, datasets):
        for method, g in df[df["dataset"] == dataset].groupby("method", sort=False):
            g = g.sort_values("shots")
            ax.errorbar(g["shots"].astype(float), g[f"{metric}_x100_mean"], yerr=g[f"{metric}_x100_sd"].fillna(0),
                        marker="o", ms=4, capsize=3, label=method, color=colour[method])
        ax.set_xscale("log")
        shots = sorted(df.loc[df["dataset"] == dataset, "shots"].astype(int).unique())
        ax.set_xticks(shots, [str(s) for s in shots])
        ax.minorticks_off()
        ax.set_title(dataset)
        ax.set_xlabel("shots per class")
        ax.set_ylabel(f"{metric} x100")
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(datasets):]:
        ax.axis("off")
    handles = [plt.Line2D([], [], color=colour[m], marker="o", label=m) for m in methods]
    fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0), ncol=min(4, len(methods)), frameon=False)
    fig.suptitle(f"{title} (error bars: sd over seeds)")
    fig.tight_layout()
    return fig


def gue_mcc_figure(runs: pd.DataFrame):
    """Grouped bars of GUE MCC x100 (mean over seeds) per task and method (top) and per task group
    with the mean over the tasks present (bottom)."""
    by_task = gue_by_task(runs)
    if by_task.empty:
        return no_data_figure("GUE MCC x100", "no GUE runs found")
    plt = pyplot()
    methods = [c for c in by_task.columns if c not in ("task", "group")]
    colour = colours(methods)
    group_means = by_task.groupby("group", sort=False)[methods].mean()
    group_means = group_means.loc[[g for g in GROUP_ORDER if g in group_means.index]]
    group_means.loc["mean (tasks present)"] = by_task[methods].mean()
    width = 0.8 / len(methods)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(min(40, max(8, 0.5 * len(by_task) * max(1, len(methods) / 3))), 8),
                                      gridspec_kw={"height_ratios": [3, 2]})
    for ax, table, labels, rotation in ((top, by_task[methods], by_task["task"], 60),
                                        (bottom, group_means, group_means.index, 20)):
        x = np.arange(len(table))
        for i, method in enumerate(methods):
            ax.bar(x + (i - (len(methods) - 1) / 2) * width, table[method].to_numpy(dtype=float), width,
                   label=method, color=colour[method])
        ax.set_xticks(x, labels, rotation=rotation, ha="right", fontsize=8)
        ax.set_ylabel("MCC x100")
        ax.axhline(0, color="black", lw=0.5)
        ax.grid(axis="y", alpha=0.3)
    top.set_title("GUE: MCC x100 per task (mean over seeds)")
    bottom.set_title("GUE: mean MCC x100 per task group")
    top.legend(fontsize=8, ncol=min(4, len(methods)), loc="upper center", bbox_to_anchor=(0.5, 1.35), frameon=False)
    fig.tight_layout()
    return fig


def _validation(metrics: pd.DataFrame, column: str) -> pd.DataFrame:
    """(step, value) of the evaluation rows holding `column` (none when the column is absent)."""
    if column not in metrics:
        return pd.DataFrame({"step": [], column: []})
    values = metrics.assign(**{column: pd.to_numeric(metrics[column], errors="coerce")})
    return values.dropna(subset=[column])[["step", column]]


def pretraining_curves_figure(runs: list[dict]):
    """The pretraining figure of `collect.pretraining_curves` runs, three panels against the optimizer
    step: validation perplexity under the reference masking (random 15%, the same masks in every run:
    comparable across strategies), under each run's own masking (what a curriculum's switch reads),
    and the training loss. A dotted vertical line of a run's colour marks its curriculum switch.
    Runs without reference columns (written before they were logged) are named on the first panel."""
    if not runs:
        return no_data_figure("Pretraining curves", "no pretraining metrics.csv found")
    plt = pyplot()
    several = len({r["genome"] for r in runs}) > 1
    labels = [method_label(r["genome"], r["model"], r["masking"], r["steps"], several) for r in runs]
    colour = colours(labels)
    fig, (ax_ref, ax_own, ax_loss) = plt.subplots(1, 3, figsize=(17, 4.5))
    without_reference, plotted = [], {ax_ref: False, ax_own: False}
    for run, label in zip(runs, labels):
        m, c = run["metrics"], colour[label]
        for ax, column in ((ax_ref, "ref_val_ppl"), (ax_own, "val_ppl")):
            values = _validation(m, column)
            ax.plot(values["step"], values[column], marker="o", ms=3, color=c, label=label)
            plotted[ax] |= not values.empty
            if column == "ref_val_ppl" and values.empty:
                without_reference.append(label)
        ax_loss.plot(m["step"], pd.to_numeric(m["loss"], errors="coerce"), lw=1, color=c, label=label)
        if run["switch_step"] is not None:
            for ax in (ax_ref, ax_own, ax_loss):
                ax.axvline(run["switch_step"], color=c, ls=":", lw=1.5)
            for ax in (ax_ref, ax_own):
                ax.annotate(f"switch {run['switch_step']}", (run["switch_step"], 1), xycoords=("data", "axes fraction"),
                            rotation=90, va="top", ha="right", fontsize=7, color=c)
    if without_reference:
        log.warning("pretraining curves: no reference perplexity in the metrics.csv of %s (written before it was "
                    "logged)", ", ".join(without_reference))
        ax_ref.text(0.5, 0.02, "no reference perplexity (metrics.csv written before it was logged):\n"
                    + "\n".join(without_reference), transform=ax_ref.transAxes, ha="center", va="bottom", fontsize=8,
                    color="firebrick", wrap=True)
    ax_ref.set(xlabel="step", ylabel="perplexity (log scale)", title="Reference masking: random 15%, same masks (comparable)")
    ax_own.set(xlabel="step", ylabel="perplexity (log scale)", title="Each run's own masking (the switch signal)")
    ax_loss.set(xlabel="step", ylabel="training MLM loss (nats)", title="Training loss (own masking)")
    for ax, has_data in plotted.items():
        if has_data:
            ax.set_yscale("log")
    for ax in (ax_ref, ax_own, ax_loss):
        ax.grid(alpha=0.3)
    ax_own.legend(fontsize=8)
    fig.tight_layout()
    return fig


def pmi_top20_figure(pmi: dict[str, pd.DataFrame], n: int = 6, top: int = 20):
    """Horizontal bars of the `top` n-grams of length `n` by their ranking score (norm_pmi), one panel per genome."""
    tables = {g: t[t["n"] == n].nlargest(top, "norm_pmi") for g, t in pmi.items()}
    tables = {g: t for g, t in tables.items() if not t.empty}
    if not tables:
        return no_data_figure(f"Top {top} {n}-mers by PMI score", f"no PMI table with {n}-grams found")
    plt = pyplot()
    fig, axes = plt.subplots(1, len(tables), figsize=(4.5 * len(tables), 0.25 * top + 1.5), squeeze=False)
    for ax, (genome, t) in zip(axes.flat, tables.items()):
        t = t.iloc[::-1]
        ax.barh(t["ngram"].astype(str), t["norm_pmi"], color="tab:blue")
        ax.set_title(f"{genome}: top {len(t)} {n}-mers by PMI score")
        ax.set_xlabel("ranking score norm_pmi (nats)")
        ax.tick_params(axis="y", labelsize=8)
        ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return fig


def pmi_distribution_figure(pmi: dict[str, pd.DataFrame]):
    """Histograms of the ranking score (norm_pmi), one outline per n-gram length, one panel per genome."""
    tables = {g: t.dropna(subset=["norm_pmi"]) for g, t in pmi.items()}
    tables = {g: t for g, t in tables.items() if not t.empty}
    if not tables:
        return no_data_figure("PMI score distribution", "no PMI table found")
    plt = pyplot()
    fig, axes = plt.subplots(1, len(tables), figsize=(5.5 * len(tables), 4), squeeze=False)
    for ax, (genome, t) in zip(axes.flat, tables.items()):
        ns = sorted(t["n"].unique())
        colour = colours([str(n) for n in ns])
        for n in ns:
            values = t.loc[t["n"] == n, "norm_pmi"].to_numpy(dtype=float)
            ax.hist(values, bins=50, density=True, histtype="step", lw=2.5 if n == 6 else 1, color=colour[str(n)],
                    label=f"n={n} ({len(values):,} n-grams)")
        ax.set(title=f"{genome}: PMI score by n-gram length", xlabel="ranking score norm_pmi (nats)",
               ylabel="density (per n)")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
