"""Tables and figures from finished runs: GUE and few-shot scores, pretraining curves, PMI, masks.

Reads only what other stages wrote (`metrics.json`, `summary.json`, `metrics.csv`, `pmi.parquet`,
the validation corpus) and recomputes nothing. MCC and the other classification metrics are stored
as fractions; every table and figure shows them x100 (columns `*_x100`), as the papers do.

`cmgems report --results results --out results/report [--published resources/published]` writes
`OUT/tables/{TABLES}.csv|md|tex` and `OUT/figures/{FIGURES}.png|pdf`.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import re
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import pandas as pd

from cmgems.atomic import atomic_output
from cmgems.errors import CmgemsError

log = logging.getLogger(__name__)

TABLES = ("gue", "gue_summary", "gue_by_task", "fewshot", "pretraining", "ours_vs_published")
FIGURES = ("fewshot_curves", "gue_mcc", "pretraining_curves", "pmi_top20", "pmi_distribution", "masks")

METHOD_KEYS = ["genome", "model", "masking", "steps"]
METRICS = ["mcc", "accuracy", "f1_macro", "precision_macro", "recall_macro", "auc"]
FEWSHOT_METRICS = ["mcc", "accuracy", "f1_macro"]
MASKING_ORDER = ["random", "dnabert", "genemask", "global_pmi", "cm_gems", "cm_step", "none"]

EMP_MARKS = ["H3", "H3K14ac", "H3K36me3", "H3K4me1", "H3K4me2", "H3K4me3", "H3K79me3", "H3K9ac", "H4", "H4ac"]
GUE_27 = (
    [f"EMP_{m}" for m in EMP_MARKS]
    + [f"prom_core_{v}" for v in ("all", "notata", "tata")]
    + [f"prom_300_{v}" for v in ("all", "notata", "tata")]
    + ["splice_reconstructed"]
    + [f"mouse_{i}" for i in range(5)]
    + [f"tf_{i}" for i in range(5)]
)
GUE_TASKS = GUE_27 + ["covid"]
GROUP_ORDER = ["EMP", "prom_core", "prom_300", "splice", "mouse", "tf", "covid", "other"]


# ------------------------------------------------------------------------------------------ runs
def task_group(task: str) -> str:
    """GUE task group from the task name: EMP, prom_core, prom_300, splice, mouse, tf, covid or other."""
    for prefix, group in (("EMP_", "EMP"), ("prom_core_", "prom_core"), ("prom_300_", "prom_300"),
                          ("splice", "splice"), ("mouse_", "mouse"), ("tf_", "tf")):
        if task.startswith(prefix):
            return group
    return "covid" if task == "covid" else "other"


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise CmgemsError(f"{path}: cannot read JSON: {err}") from err


def _path_kind_and_seed(path: Path) -> tuple[str | None, int | None]:
    """Kind ("gue"/"fewshot", from a directory of that name) and seed (from a `seed{N}` directory) that
    the results layout gives a metrics.json path; None where the path does not say."""
    kind = next((p for p in reversed(path.parts[:-1]) if p in ("gue", "fewshot")), None)
    seed = next((int(p[4:]) for p in reversed(path.parts[:-1]) if re.fullmatch(r"seed\d+", p)), None)
    return kind, seed


def _run_row(path: Path, doc: dict, kind: str) -> dict:
    """One flat row of `collect_runs` from a metrics.json document."""
    needed = ["model", "masking", "metrics"] + (["task"] if kind == "gue" else ["dataset", "shots"])
    missing = [k for k in needed if k not in doc]
    if "mcc" not in doc.get("metrics", {}):
        missing.append("metrics.mcc")
    if missing:
        raise CmgemsError(f"{path}: {kind} metrics.json lacks key(s) {', '.join(missing)}")
    row = {
        "kind": kind, "genome": str(doc.get("genome", "none")), "model": str(doc["model"]),
        "masking": str(doc["masking"]), "steps": int(doc.get("steps", 0)),
        "task": doc.get("task"), "dataset": doc.get("dataset"),
        "shots": int(doc["shots"]) if kind == "fewshot" else None, "seed": int(doc["seed"]),
    }
    row.update({m: float(doc["metrics"][m]) if doc["metrics"].get(m) is not None else np.nan for m in METRICS})
    row.update({k: doc.get(k, np.nan) for k in ("n_train", "n_test", "train_seconds")})
    row["path"] = str(path)
    return row


RUN_COLUMNS = ["kind", *METHOD_KEYS, "task", "dataset", "shots", "seed", *METRICS, "n_train", "n_test",
               "train_seconds", "path"]


def collect_runs(results_root: str | Path) -> pd.DataFrame:
    """One row per GUE / few-shot `metrics.json` under `results_root` (metrics as fractions).

    Columns: RUN_COLUMNS. Where a document lacks "kind" or "seed", the path's `gue`/`fewshot` and
    `seed{N}` directories give them (seed 0 if neither does); other kinds are skipped with a warning.
    """
    rows = []
    for path in sorted(Path(results_root).rglob("metrics.json")):
        doc = _read_json(path)
        path_kind, path_seed = _path_kind_and_seed(path)
        kind = doc.get("kind", path_kind)
        if kind in ("gue", "fewshot"):
            seed = doc.get("seed", path_seed if path_seed is not None else 0)
            rows.append(_run_row(path, {**doc, "seed": seed}, kind))
        else:
            log.warning("%s: kind %r, not a GUE or few-shot run; skipped", path, kind)
    runs = pd.DataFrame(rows, columns=RUN_COLUMNS)
    runs["steps"] = runs["steps"].astype("int64")
    runs["seed"] = runs["seed"].astype("int64")
    runs["shots"] = runs["shots"].astype("Int64")
    return runs


def method_label(genome: str, model: str, masking: str, steps: int, with_genome: bool = False) -> str:
    """Short legend name of a method, e.g. 'genemask bert_base 10K' ('kmer_logreg' for the baseline)."""
    if masking == "none":
        return model
    steps_text = f"{steps // 1000}K" if steps and steps % 1000 == 0 else str(steps)
    label = f"{masking} {model} {steps_text}"
    return f"{genome}: {label}" if with_genome else label


def _with_labels(df: pd.DataFrame) -> pd.DataFrame:
    """`df` plus a `method` column; the genome is named only when the runs span several genomes."""
    several = df.loc[df["masking"] != "none", "genome"].nunique() > 1
    df = df.copy()
    df["method"] = [method_label(*key, with_genome=several) for key in df[METHOD_KEYS].itertuples(index=False)]
    return df


def _method_sort(df: pd.DataFrame, extra: list[str] = ()) -> pd.DataFrame:
    """Sort by genome, model, masking (in MASKING_ORDER, unknown ones last), steps, then `extra`."""
    order = {m: i for i, m in enumerate(MASKING_ORDER)}
    key = df["masking"].map(lambda m: order.get(m, len(order)))
    return (df.assign(_mask_order=key)
            .sort_values(["genome", "model", "_mask_order", "masking", "steps", *extra], kind="stable")
            .drop(columns="_mask_order").reset_index(drop=True))


def _task_sort_key(task: str) -> tuple:
    return (GUE_TASKS.index(task), "") if task in GUE_TASKS else (len(GUE_TASKS), task)


def _x100(df: pd.DataFrame, metrics: Iterable[str]) -> pd.DataFrame:
    """Metric columns scaled to x100 and renamed `{metric}_x100`."""
    metrics = list(metrics)
    return df.assign(**{m: df[m] * 100 for m in metrics}).rename(columns={m: f"{m}_x100" for m in metrics})


# ---------------------------------------------------------------------------------------- tables
def gue_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Every GUE run: genome, model, masking, steps, task, group, seed, metrics x100, sizes.

    No timings: the table depends only on the results, so runs on different machines compare byte
    for byte (timings are in each metrics.json)."""
    gue = runs[runs["kind"] == "gue"].copy()
    gue["group"] = gue["task"].map(task_group)
    gue = _x100(gue, METRICS)
    cols = [*METHOD_KEYS, "task", "group", "seed", *[f"{m}_x100" for m in METRICS],
            "n_train", "n_test"]
    gue["_task"] = gue["task"].map(_task_sort_key)
    return _method_sort(gue, ["_task", "seed"])[cols]


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
    return _method_sort(pd.DataFrame(rows, columns=cols))


def gue_by_task(runs: pd.DataFrame) -> pd.DataFrame:
    """MCC x100 (mean over seeds) with one row per task and one column per method."""
    means = _with_labels(gue_task_means(runs))
    if means.empty:
        return pd.DataFrame(columns=["task", "group"])
    methods = list(dict.fromkeys(_method_sort(means)["method"]))
    wide = means.pivot_table(index=["task", "group"], columns="method", values="mcc_x100", sort=False).reset_index()
    wide = wide.sort_values("task", key=lambda s: s.map(_task_sort_key)).reset_index(drop=True)
    wide.columns.name = None
    return wide[["task", "group", *methods]]


def fewshot_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Per dataset, shots and method: n runs and the mean and sd (ddof=1; blank for n=1) of MCC,
    accuracy and macro F1, all x100."""
    few = _x100(runs[runs["kind"] == "fewshot"], FEWSHOT_METRICS)
    keys = ["dataset", "shots", *METHOD_KEYS]
    grouped = few.groupby(keys, sort=False)
    table = grouped.size().rename("n").reset_index()
    for m in FEWSHOT_METRICS:
        stats = grouped[f"{m}_x100"].agg(["mean", "std"]).reset_index(drop=True)
        table[f"{m}_x100_mean"] = stats["mean"].to_numpy()
        table[f"{m}_x100_sd"] = stats["std"].to_numpy()
    table["shots"] = table["shots"].astype("Int64")
    order = {m: i for i, m in enumerate(MASKING_ORDER)}
    table = table.assign(_o=table["masking"].map(lambda m: order.get(m, len(order))))
    table = table.sort_values(["dataset", "shots", "genome", "model", "_o", "masking", "steps"], kind="stable")
    return table.drop(columns="_o").reset_index(drop=True)


def _pretraining_dirs(results_root: Path) -> list[Path]:
    """Run directories `{genome}/models/{model}/{masking}/{steps}` with a summary.json or metrics.csv."""
    found = {p.parent for pattern in ("*/models/*/*/*/summary.json", "*/models/*/*/*/metrics.csv")
             for p in results_root.glob(pattern)}
    return sorted(found)


def _run_identity(run_dir: Path) -> dict:
    genome, _, model, masking, steps = run_dir.parts[-5:]
    return {"genome": genome, "model": model, "masking": masking, "steps": int(steps) if steps.isdigit() else steps}


PRETRAINING_COLUMNS = [*METHOD_KEYS, "final_loss", "final_val_ppl", "final_ref_val_ppl", "switch_step", "tokens_per_s",
                       "train_seconds", "parameters"]


def pretraining_table(results_root: str | Path) -> pd.DataFrame:
    """One row per finished pretraining run (a summary.json): final training loss, final validation
    perplexity under the run's own masking and under the reference masking (blank for runs written
    before it was logged), curriculum switch step (blank if none), training tokens per second, seconds,
    parameters."""
    rows = []
    for run_dir in _pretraining_dirs(Path(results_root)):
        path = run_dir / "summary.json"
        if not path.exists():
            log.warning("%s: no summary.json (run unfinished?); left out of the pretraining table", run_dir)
            continue
        doc = _read_json(path)
        row = {**_run_identity(run_dir), **{k: doc[k] for k in METHOD_KEYS if doc.get(k) is not None}}
        row.update({k: doc.get(k) for k in PRETRAINING_COLUMNS[4:]})
        rows.append(row)
    table = pd.DataFrame(rows, columns=PRETRAINING_COLUMNS)
    for col in ("final_loss", "final_val_ppl", "final_ref_val_ppl", "tokens_per_s", "train_seconds"):
        table[col] = pd.to_numeric(table[col], errors="coerce").astype(float)
    for col in ("switch_step", "parameters", "steps"):
        table[col] = pd.to_numeric(table[col], errors="coerce").astype("Int64")
    return _method_sort(table)


# ------------------------------------------------------------------------------------- published
PUBLISHED_FILES = {"gue": "gue_mcc.csv", "fewshot": "fewshot.csv"}


def read_published(published_dir: str | Path | None) -> dict[str, pd.DataFrame]:
    """The published reference numbers: {"gue": task, model, mcc_x100, source;
    "fewshot": dataset, shots, model, metric, value_x100, source} (empty frames when absent)."""
    empty = {"gue": pd.DataFrame(columns=["task", "model", "mcc_x100", "source"]),
             "fewshot": pd.DataFrame(columns=["dataset", "shots", "model", "metric", "value_x100", "source"])}
    out = {}
    for kind, name in PUBLISHED_FILES.items():
        path = Path(published_dir) / name if published_dir else None
        if path is None or not path.exists():
            log.warning("published numbers %s not found; the comparison leaves them out", path or name)
            out[kind] = empty[kind]
            continue
        table = pd.read_csv(path, comment="#")
        missing = [c for c in empty[kind].columns if c not in table.columns]
        if missing:
            raise CmgemsError(f"{path}: missing column(s) {', '.join(missing)}")
        if table["source"].isna().any():
            line = int(table["source"].isna().to_numpy().argmax()) + 2
            raise CmgemsError(f"{path}: line {line}: every published number needs a source")
        out[kind] = table
    return out


def _best(df: pd.DataFrame, keys: list[str], value: str) -> pd.DataFrame:
    """Per `keys`: the labelled method with the highest `value` (`ours_method`, `ours_x100`)."""
    df = _with_labels(df).dropna(subset=[value])
    best = df.loc[df.groupby(keys, sort=False)[value].idxmax()]
    return best[[*keys, "method", value]].rename(columns={"method": "ours_method", value: "ours_x100"})


def published_table(runs: pd.DataFrame, published_dir: str | Path | None) -> pd.DataFrame:
    """Our best method next to the published numbers.

    Rows: every GUE task (ours or published), `mean_27` and `mean_28` (the best 27- / 28-task mean
    among methods with all those tasks, else blank), and every few-shot (dataset, shots, metric) with
    published numbers. Columns: benchmark, entry, shots, metric, ours_method, ours_x100, one column
    per published model ("MODEL (published)", x100), sources."""
    published = read_published(published_dir)
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


# ------------------------------------------------------------------------------------ table output
def _cell(value, digits: int) -> str:
    if value is None or value is pd.NA or (isinstance(value, (float, np.floating)) and math.isnan(value)):
        return ""
    if isinstance(value, (float, np.floating)):
        return f"{value:.{digits}f}"
    return str(value)


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def latex_escape(text: str) -> str:
    return re.sub(r"[\\&%$#_{}~^]", lambda m: _LATEX_SPECIAL[m.group()], text)


def to_markdown(df: pd.DataFrame, digits: int = 2) -> str:
    """A GitHub-flavoured Markdown table; numbers right-aligned, floats with `digits` decimals."""
    numeric = [pd.api.types.is_numeric_dtype(df[c]) for c in df.columns]
    lines = ["| " + " | ".join(str(c) for c in df.columns) + " |",
             "|" + "|".join("---:" if n else ":---" for n in numeric) + "|"]
    lines += ["| " + " | ".join(_cell(v, digits).replace("|", r"\|") for v in row) + " |"
              for row in df.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def to_latex(df: pd.DataFrame, digits: int = 2) -> str:
    """A booktabs tabular (\\toprule, \\midrule, \\bottomrule) ready to paste into a paper."""
    align = "".join("r" if pd.api.types.is_numeric_dtype(df[c]) else "l" for c in df.columns)
    lines = [rf"\begin{{tabular}}{{{align}}}", r"\toprule",
             " & ".join(latex_escape(str(c)) for c in df.columns) + r" \\", r"\midrule"]
    lines += [" & ".join(latex_escape(_cell(v, digits)) for v in row) + r" \\" for row in df.itertuples(index=False)]
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def write_table(df: pd.DataFrame, stem: str | Path, digits: int = 2) -> list[Path]:
    """Write `stem`.csv (full precision, blanks for missing), .md and .tex (booktabs), each atomically."""
    stem = Path(stem)
    paths = [stem.with_name(stem.name + ext) for ext in (".csv", ".md", ".tex")]
    texts = [df.to_csv(index=False, na_rep=""), to_markdown(df, digits), to_latex(df, digits)]
    for path, text in zip(paths, texts):
        with atomic_output(path) as tmp:
            tmp.write_text(text)
    return paths


def write_tables(results_root: str | Path, tables_dir: str | Path, published_dir: str | Path | None,
                 runs: pd.DataFrame | None = None) -> list[Path]:
    """All report tables (TABLES) under `tables_dir`."""
    runs = collect_runs(results_root) if runs is None else runs
    tables = {
        "gue": gue_table(runs), "gue_summary": gue_summary(runs), "gue_by_task": gue_by_task(runs),
        "fewshot": fewshot_table(runs), "pretraining": pretraining_table(results_root),
        "ours_vs_published": published_table(runs, published_dir),
    }
    digits = {"pretraining": 3}
    return [p for name, df in tables.items() for p in write_table(df, Path(tables_dir) / name, digits.get(name, 2))]


# --------------------------------------------------------------------------------------- figures
def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, stem: str | Path) -> list[Path]:
    """Save `fig` as `stem`.png (dpi 150) and `stem`.pdf, atomically, and close it."""
    plt = _pyplot()
    stem = Path(stem)
    paths = []
    try:
        for fmt in ("png", "pdf"):
            path = stem.with_name(f"{stem.name}.{fmt}")
            with atomic_output(path) as tmp:
                fig.savefig(tmp, format=fmt, dpi=150, bbox_inches="tight")
            paths.append(path)
    finally:
        plt.close(fig)
    return paths


def no_data_figure(stem: str | Path, title: str, message: str) -> list[Path]:
    """A figure whose axes say there is no data (so that the expected outputs exist); logs a warning."""
    plt = _pyplot()
    log.warning("figure %s: %s", Path(stem).name, message)
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.text(0.5, 0.5, f"no data\n{message}", ha="center", va="center", fontsize=11, wrap=True,
            transform=ax.transAxes, color="firebrick")
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    return save_figure(fig, stem)


def _colours(labels: list[str]) -> dict[str, tuple]:
    plt = _pyplot()
    cmap = plt.get_cmap("tab10" if len(labels) <= 10 else "tab20")
    return {label: cmap(i % cmap.N) for i, label in enumerate(labels)}


def plot_fewshot_curves(fewshot: pd.DataFrame, stem: str | Path, metric: str = "mcc") -> list[Path]:
    """`metric` x100 (mean +- sd over seeds) against shots per class (log scale), one panel per
    dataset, one line per method; `fewshot` is `fewshot_table(runs)`."""
    title = f"Few-shot {metric} x100"
    if fewshot.empty:
        return no_data_figure(stem, title, "no few-shot runs found")
    plt = _pyplot()
    df = _with_labels(fewshot)
    datasets = sorted(df["dataset"].unique())
    methods = list(dict.fromkeys(df["method"]))
    colour = _colours(methods)
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
    return save_figure(fig, stem)


def plot_gue_mcc(runs: pd.DataFrame, stem: str | Path) -> list[Path]:
    """Grouped bars of GUE MCC x100 (mean over seeds) per task and method (top) and per task group
    with the mean over the tasks present (bottom)."""
    by_task = gue_by_task(runs)
    if by_task.empty:
        return no_data_figure(stem, "GUE MCC x100", "no GUE runs found")
    plt = _pyplot()
    methods = [c for c in by_task.columns if c not in ("task", "group")]
    colour = _colours(methods)
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
    return save_figure(fig, stem)


def read_pretraining_curves(results_root: str | Path) -> list[dict]:
    """Per pretraining run: identity, `metrics` (the metrics.csv DataFrame) and `switch_step`
    (summary.json's; for an unfinished run, the step where the phase changes if it changes exactly once)."""
    runs = []
    for run_dir in _pretraining_dirs(Path(results_root)):
        csv_path = run_dir / "metrics.csv"
        if not csv_path.exists():
            continue
        try:
            metrics = pd.read_csv(csv_path)
        except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
            raise CmgemsError(f"{csv_path}: cannot read metrics CSV: {err}") from err
        missing = [c for c in ("step", "loss", "val_ppl") if c not in metrics.columns]
        if missing:
            raise CmgemsError(f"{csv_path}: missing column(s) {', '.join(missing)}")
        summary = _read_json(run_dir / "summary.json") if (run_dir / "summary.json").exists() else {}
        switch = summary.get("switch_step") if summary else _single_phase_change(metrics)
        runs.append({**_run_identity(run_dir), "metrics": metrics, "switch_step": switch})
    return runs


def _single_phase_change(metrics: pd.DataFrame) -> int | None:
    """The first step of the second phase when the `phase` column changes exactly once (a curriculum
    switch; CM-STEP's per-step mixing changes it many times), else None."""
    if "phase" not in metrics or metrics.empty:
        return None
    changes = np.flatnonzero(metrics["phase"].to_numpy()[1:] != metrics["phase"].to_numpy()[:-1]) + 1
    return int(metrics["step"].iloc[changes[0]]) if len(changes) == 1 else None


def _validation(metrics: pd.DataFrame, column: str) -> pd.DataFrame:
    """(step, value) of the evaluation rows holding `column` (none when the column is absent)."""
    if column not in metrics:
        return pd.DataFrame({"step": [], column: []})
    values = metrics.assign(**{column: pd.to_numeric(metrics[column], errors="coerce")})
    return values.dropna(subset=[column])[["step", column]]


def pretraining_curves_figure(runs: list[dict]):
    """The pretraining figure of `read_pretraining_curves` runs, three panels against the optimizer
    step: validation perplexity under the reference masking (random 15%, the same masks in every run:
    comparable across strategies), under each run's own masking (what a curriculum's switch reads),
    and the training loss. A dotted vertical line of a run's colour marks its curriculum switch.
    Runs without reference columns (written before they were logged) are named on the first panel."""
    plt = _pyplot()
    several = len({r["genome"] for r in runs}) > 1
    labels = [method_label(r["genome"], r["model"], r["masking"], r["steps"], several) for r in runs]
    colour = _colours(labels)
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


def plot_pretraining_curves(results_root: str | Path, stem: str | Path) -> list[Path]:
    """`pretraining_curves_figure` of every run under `results_root`, saved as `stem`.png/.pdf."""
    runs = read_pretraining_curves(results_root)
    if not runs:
        return no_data_figure(stem, "Pretraining curves", "no pretraining metrics.csv found")
    return save_figure(pretraining_curves_figure(runs), stem)


def read_pmi_tables(results_root: str | Path) -> dict[str, pd.DataFrame]:
    """{genome: pmi.parquet DataFrame} for every `{genome}/pmi/pmi.parquet` under `results_root`."""
    tables = {}
    for path in sorted(Path(results_root).glob("*/pmi/pmi.parquet")):
        try:
            tables[path.parts[-3]] = pd.read_parquet(path, columns=["ngram", "n", "norm_pmi", "rank"])
        except (OSError, KeyError, ValueError) as err:
            raise CmgemsError(f"{path}: cannot read columns ngram, n, norm_pmi, rank: {err}") from err
    return tables


def plot_pmi_top20(pmi: dict[str, pd.DataFrame], stem: str | Path, n: int = 6, top: int = 20) -> list[Path]:
    """Horizontal bars of the `top` n-grams of length `n` by their ranking score (norm_pmi), one panel per genome."""
    tables = {g: t[t["n"] == n].nlargest(top, "norm_pmi") for g, t in pmi.items()}
    tables = {g: t for g, t in tables.items() if not t.empty}
    if not tables:
        return no_data_figure(stem, f"Top {top} {n}-mers by PMI score", f"no PMI table with {n}-grams found")
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(tables), figsize=(4.5 * len(tables), 0.25 * top + 1.5), squeeze=False)
    for ax, (genome, t) in zip(axes.flat, tables.items()):
        t = t.iloc[::-1]
        ax.barh(t["ngram"].astype(str), t["norm_pmi"], color="tab:blue")
        ax.set_title(f"{genome}: top {len(t)} {n}-mers by PMI score")
        ax.set_xlabel("ranking score norm_pmi (nats)")
        ax.tick_params(axis="y", labelsize=8)
        ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, stem)


def plot_pmi_distribution(pmi: dict[str, pd.DataFrame], stem: str | Path) -> list[Path]:
    """Histograms of the ranking score (norm_pmi), one outline per n-gram length, one panel per genome."""
    tables = {g: t.dropna(subset=["norm_pmi"]) for g, t in pmi.items()}
    tables = {g: t for g, t in tables.items() if not t.empty}
    if not tables:
        return no_data_figure(stem, "PMI score distribution", "no PMI table found")
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(tables), figsize=(5.5 * len(tables), 4), squeeze=False)
    for ax, (genome, t) in zip(axes.flat, tables.items()):
        ns = sorted(t["n"].unique())
        colour = _colours([str(n) for n in ns])
        for n in ns:
            values = t.loc[t["n"] == n, "norm_pmi"].to_numpy(dtype=float)
            ax.hist(values, bins=50, density=True, histtype="step", lw=2.5 if n == 6 else 1, color=colour[str(n)],
                    label=f"n={n} ({len(values):,} n-grams)")
        ax.set(title=f"{genome}: PMI score by n-gram length", xlabel="ranking score norm_pmi (nats)",
               ylabel="density (per n)")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, stem)


MASK_CLASSES = ["kept", "[MASK]", "random token", "unchanged (predicted)", "special / pad"]


def mask_raster(ids: np.ndarray, inputs: np.ndarray, labels: np.ndarray, mask_id: int = 4,
                num_special: int = 5) -> np.ndarray:
    """Per position of one sequence (L,): 0 kept, 1 -> [MASK], 2 -> another token, 3 masked but left
    unchanged, 4 special or pad token (indices into MASK_CLASSES)."""
    ids, inputs, labels = (np.asarray(a).reshape(-1) for a in (ids, inputs, labels))
    out = np.zeros(ids.shape, dtype=np.int64)
    masked = labels != -100
    out[masked & (inputs == mask_id)] = 1
    out[masked & (inputs != mask_id) & (inputs != ids)] = 2
    out[masked & (inputs == ids)] = 3
    out[~masked & (ids < num_special)] = 4
    return out


def plot_masks(ids, maskers: dict[str, Callable], stem: str | Path, step: int = 0, seed: int = 0) -> list[Path]:
    """One row per strategy: the positions each masker corrupts in one sequence `ids` (L,) or (1, L).

    Each masker is called as `masker(ids (1, L) LongTensor, step=step, draws=masking.Draws(seed,
    [0]))` -> (inputs, labels)` with labels -100 where not masked; a `phase(step)` method, where the
    masker has one, labels its row.
    """
    if not maskers or ids is None or np.asarray(ids).size == 0:
        return no_data_figure(stem, "Masks per strategy", "no sequence or no masking strategy available")
    import torch
    from matplotlib.colors import ListedColormap

    from cmgems.masking import Draws

    plt = _pyplot()
    batch = torch.as_tensor(np.asarray(ids), dtype=torch.long).reshape(1, -1)
    rows, names = [], []
    for name, masker in maskers.items():
        inputs, labels = masker(batch.clone(), step=step, draws=Draws(seed, torch.zeros(1, dtype=torch.long)))
        raster = mask_raster(batch.numpy(), inputs.numpy(), labels.numpy())
        rows.append(raster)
        phase = masker.phase(step) if hasattr(masker, "phase") else ""
        masked = int(np.isin(raster, (1, 2, 3)).sum())
        real = int((raster != 4).sum())
        names.append(f"{name}{f' [{phase}]' if phase and phase != name else ''}  {masked}/{real}")
    colours = ["#f0f0f0", "#d62728", "#ff7f0e", "#1f77b4", "#7f7f7f"]
    fig, ax = plt.subplots(figsize=(12, 0.5 * len(rows) + 1.8))
    ax.imshow(np.stack(rows), aspect="auto", interpolation="nearest", cmap=ListedColormap(colours),
              vmin=-0.5, vmax=len(colours) - 0.5)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.set_xlabel("token position (6-mer index; 0 = [CLS])")
    ax.set_title(f"Masked positions per strategy, one sequence (step {step}, seed {seed}; label: masked/real tokens)")
    handles = [plt.Rectangle((0, 0), 1, 1, color=c, label=l) for c, l in zip(colours, MASK_CLASSES)]
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.35), ncol=5, fontsize=8, frameon=False)
    fig.tight_layout()
    return save_figure(fig, stem)


def longest_validation_ids(results_root: str | Path, k: int = 6,
                           max_positions: int = 512) -> tuple[str, np.ndarray] | None:
    """(genome, ids (1, L)) of the longest chunk (the first of them) in the first non-empty validation
    shard of the first genome with a corpus, or None. The longest shows the most spans."""
    from cmgems import kmers

    for shard in sorted(Path(results_root).glob("*/corpus/validation/*.parquet")):
        seqs = pd.read_parquet(shard, columns=["sequence"])["sequence"]
        if len(seqs):
            longest = bytes(seqs.iloc[int(seqs.str.len().to_numpy().argmax())])
            return shard.parts[-4], kmers.encode_batch([longest], k, max_positions)
    return None


def default_maskers(pmi_path: Path | None, k: int = 6, max_steps: int = 10_000) -> dict[str, Callable]:
    """Every strategy of `cmgems.masking` (those needing PMI ranks only when `pmi_path` exists)."""
    from cmgems import masking, pmi

    ranks = pmi.token_ranks(pmi_path, k) if pmi_path is not None and pmi_path.exists() else None
    return {name: masking.build(name, k=k, token_ranks=ranks, max_steps=max_steps)
            for name in masking.names() if ranks is not None or not masking.needs_ranks(name)}


def write_masks_figure(results_root: str | Path, stem: str | Path) -> list[Path]:
    """`plot_masks` on the longest validation chunk with every available masking strategy."""
    found = longest_validation_ids(results_root)
    if found is None:
        return no_data_figure(stem, "Masks per strategy", "no validation corpus found")
    genome, ids = found
    maskers = default_maskers(Path(results_root) / genome / "pmi" / "pmi.parquet")
    return plot_masks(ids, maskers, stem, step=5_000)


def write_figures(results_root: str | Path, figures_dir: str | Path, runs: pd.DataFrame | None = None) -> list[Path]:
    """All report figures (FIGURES) under `figures_dir`, PNG and PDF."""
    runs = collect_runs(results_root) if runs is None else runs
    out = Path(figures_dir)
    pmi = read_pmi_tables(results_root)
    paths = []
    paths += plot_fewshot_curves(fewshot_table(runs), out / "fewshot_curves")
    paths += plot_gue_mcc(runs, out / "gue_mcc")
    paths += plot_pretraining_curves(results_root, out / "pretraining_curves")
    paths += plot_pmi_top20(pmi, out / "pmi_top20")
    paths += plot_pmi_distribution(pmi, out / "pmi_distribution")
    paths += write_masks_figure(results_root, out / "masks")
    return paths


# ------------------------------------------------------------------------------------------- CLI
def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--results", default="results", help="results root to read (default: results)")
    parser.add_argument("--out", default="results/report", help="report directory (tables/, figures/)")
    parser.add_argument("--published", default="resources/published",
                        help="directory of published reference numbers (gue_mcc.csv, fewshot.csv)")
    only = parser.add_mutually_exclusive_group()
    only.add_argument("--tables-only", action="store_true", help="write the tables, not the figures")
    only.add_argument("--figures-only", action="store_true", help="write the figures, not the tables")
    parser.set_defaults(func=run_cli)


def run_cli(args: argparse.Namespace) -> None:
    results = Path(args.results)
    if not results.is_dir():
        raise CmgemsError(f"--results {results}: not a directory")
    runs = collect_runs(results)
    counts = runs["kind"].value_counts()
    log.info("%d GUE and %d few-shot runs under %s", counts.get("gue", 0), counts.get("fewshot", 0), results)
    out = Path(args.out)
    written = []
    if not args.figures_only:
        written += write_tables(results, out / "tables", args.published, runs)
    if not args.tables_only:
        written += write_figures(results, out / "figures", runs)
    log.info("wrote %d files under %s", len(written), out)
