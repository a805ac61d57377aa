"""What the report reads, each from the folder the results layout gives a declared run: GUE and
few-shot records, pretraining summaries and curves, PMI tables, the validation corpus, and the
published numbers. Nothing else under the results root is read, so runs of an earlier configuration
never reach the report. What is read is checked: a record must be of the run whose folder holds it
and its metrics numbers (a run with a NaN or infinite metric is left out, with a warning naming it,
so that every count is of the runs the means use); a published value must be a number. MCC and the
other metrics are fractions here."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from cmgems import layout, stats
from cmgems.errors import CmgemsError
from cmgems.layout import Model, Run

log = logging.getLogger(__name__)

METHOD_KEYS = ["genome", "model", "masking", "steps"]
METRICS = ["mcc", "accuracy", "f1_macro", "precision_macro", "recall_macro", "auc"]
RUN_COLUMNS = ["kind", *METHOD_KEYS, "task", "dataset", "shots", "seed", *METRICS, "n_train", "n_test",
               "train_seconds", "path"]


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise CmgemsError(f"{path}: cannot read JSON: {err}") from err


def declared_identity(run: Run) -> dict:
    """What a record in the folder of `run` must say it is (the baseline's: layout.BASELINE_MODEL)."""
    names = {"task": run.task} if run.kind == layout.GUE else {"dataset": run.task, "shots": run.shots}
    model = (run.model or layout.BASELINE_MODEL)._asdict()
    return {"kind": run.kind, **model, "steps": int(model["steps"]), **names, "seed": run.seed}


def _describe(identity: dict) -> str:
    return " ".join(f"{key}={value}" for key, value in identity.items())


def _check_identity(path: Path, doc: dict, run: Run) -> dict:
    """The declared identity of `run`, once the record `doc` in its folder says the same (kind, genome,
    steps or seed, which records of older versions may lack, are taken as declared when absent);
    CmgemsError naming the file and both identities otherwise: a record moved or copied into another
    run's folder would be reported under its own identity, one run twice and another missing."""
    expected = declared_identity(run)
    own = {key: doc.get(key, value) for key, value in expected.items()}
    differ = {key: value for key, value in own.items() if str(value) != str(expected[key])}
    if differ:
        raise CmgemsError(f"{path}: the record says {_describe(differ)}, but its folder is that of the run "
                          f"{_describe(expected)} (moved or copied from another run's folder?); delete it and run "
                          "snakemake again to recompute the run")
    needed = ["model", "masking"] + (["task"] if run.kind == layout.GUE else ["dataset", "shots"])
    missing = [k for k in needed if k not in doc] + ([] if "metrics" in doc else ["metrics"])
    if missing:
        raise CmgemsError(f"{path}: {run.kind} metrics.json lacks key(s) {', '.join(missing)}")
    return expected


def _metric_values(path: Path, metrics: object) -> dict[str, float]:
    """{metric: value} of a record's `metrics`; an undefined AUC (None or absent) is NaN. CmgemsError
    naming the file and the metric that is missing or not a number."""
    if not isinstance(metrics, dict):
        raise CmgemsError(f"{path}: metrics is {metrics!r}, not an object of metrics")
    values = {}
    for name in METRICS:
        value = metrics.get(name)
        if value is None and name == "auc":
            value = np.nan
        elif value is None:
            raise CmgemsError(f"{path}: metrics.json lacks key(s) metrics.{name}")
        elif isinstance(value, bool) or not isinstance(value, (int, float)):
            raise CmgemsError(f"{path}: metrics.{name} is {value!r}, not a number")
        values[name] = float(value)
    return values


def _not_finite(metrics: dict) -> list[str]:
    """The metrics of a record (as checked by `_metric_values`) given as NaN or infinite."""
    given = {name: metrics.get(name) for name in METRICS}
    return [f"{name}={value}" for name, value in given.items() if value is not None and not math.isfinite(value)]


def _run_row(path: Path, doc: dict, run: Run) -> dict:
    """One flat row of `collect_runs` from a metrics.json document in the folder of `run`."""
    identity = _check_identity(path, doc, run)
    row = {key: identity.get(key) for key in ["kind", *METHOD_KEYS, "task", "dataset", "shots", "seed"]}
    row.update(_metric_values(path, doc["metrics"]))
    row.update({k: doc.get(k, np.nan) for k in ("n_train", "n_test", "train_seconds")})
    row["path"] = str(path)
    return row


def _existing(paths: Iterable[Path], what: str) -> list[Path]:
    """The paths that exist, in sorted order; one warning counts those that do not (runs not done yet)."""
    paths = sorted(paths)
    found = [p for p in paths if p.exists()]
    if len(found) < len(paths):
        missing = [p for p in paths if not p.exists()]
        log.warning("%d declared %s not written yet (e.g. %s); left out", len(missing), what, missing[0])
    return found


def settings_differences(doc: dict, declared: dict) -> list[str]:
    """'key: recorded X, declared Y' for each setting of `declared` that the record `doc` (its
    `settings`) gives otherwise or lacks."""
    recorded = doc.get("settings") if isinstance(doc.get("settings"), dict) else {}
    missing = object()
    return [f"{key}: recorded {recorded.get(key, 'nothing')!r}, declared {value!r}"
            for key, value in sorted(declared.items()) if recorded.get(key, missing) != value]


def _check_settings(stale: list[str]) -> None:
    """CmgemsError listing the records trained with other settings than the config declares."""
    if stale:
        shown = "\n  ".join(stale[:5]) + (f"\n  ... and {len(stale) - 5} more" if len(stale) > 5 else "")
        raise CmgemsError(f"{len(stale)} run record(s) were made with other settings than the config declares for "
                          f"them, so the report would show them under settings they were not trained with:\n  {shown}\n"
                          "Run snakemake again (without --rerun-triggers mtime) to recompute them, or delete them")


def collect_runs(root: str | Path, runs: Iterable[Run], settings: dict[str, dict] | None = None) -> pd.DataFrame:
    """One row per declared GUE / few-shot run whose metrics.json exists under `root` (metrics as
    fractions), in the order of their paths.

    Columns: RUN_COLUMNS. A record must be of its declared run (`_check_identity`) and its metrics
    numbers; a run with a metric that is NaN or infinite is left out, with one warning naming them.
    `settings` ({run folder under layout.ROOT: settings}, as the workflow writes layout.REPORT_SETTINGS):
    a record whose recorded settings differ from its run's is a CmgemsError naming each.
    """
    declared = {Path(run.folder(root)) / layout.RECORD: run for run in runs}
    rows, left_out, stale = [], [], []
    for path in _existing(declared, "runs' metrics.json"):
        doc = read_json(path)
        if not isinstance(doc, dict):
            raise CmgemsError(f"{path}: not a JSON object")
        row = _run_row(path, doc, declared[path])
        differ = settings_differences(doc, settings.get(declared[path].folder(), {})) if settings else []
        if differ:
            stale.append(f"{path}: {'; '.join(differ)}")
        bad = _not_finite(doc["metrics"])
        if bad:
            left_out.append(f"{path} ({', '.join(bad)})")
            continue
        rows.append(row)
    _check_settings(stale)
    if left_out:
        log.warning("%d run(s) left out of every table, their metrics not finite (counts and means are of the "
                    "runs shown): %s", len(left_out), "; ".join(left_out))
    table = pd.DataFrame(rows, columns=RUN_COLUMNS)
    table["steps"] = table["steps"].astype("int64")
    table["seed"] = table["seed"].astype("int64")
    table["shots"] = table["shots"].astype("Int64")
    return table


def read_confusion(record: str | Path) -> np.ndarray | None:
    """The test-set confusion matrix (C, C; rows: true class, columns: predicted) of the run whose
    metrics.json is `record`, from the predictions.parquet beside it; None when there is none or it
    is empty."""
    path = Path(record).with_name(layout.PREDICTIONS)
    if not path.exists():
        return None
    try:
        table = pq.read_table(path, columns=["label", "prediction"])
    except (OSError, KeyError, pa.ArrowInvalid) as err:
        raise CmgemsError(f"{path}: cannot read columns label, prediction: {err}") from None
    labels, predictions = (table[c].to_numpy() for c in ("label", "prediction"))
    if not len(labels):
        return None
    if min(labels.min(), predictions.min()) < 0:
        raise CmgemsError(f"{path}: a label or prediction is negative, not a class number")
    return stats.confusions(labels, predictions, int(max(labels.max(), predictions.max())) + 1)[0]


def _identity(model: Model) -> dict:
    return {"genome": model.genome, "model": model.model, "masking": model.masking, "steps": int(model.steps)}


def pretraining_summaries(root: str | Path, models: Iterable[Model]) -> list[dict]:
    """The summary.json of each declared pretraining run that has one, its identity filled in from
    the run where the summary lacks it; in the order of the runs' folders."""
    by_path = {Path(model.summary(root)): model for model in models}
    summaries = []
    for path in _existing(by_path, "pretraining summary.json"):
        doc = read_json(path)
        summaries.append({**doc, **{k: v for k, v in _identity(by_path[path]).items() if doc.get(k) is None}})
    return summaries


def pretraining_curves(root: str | Path, models: Iterable[Model]) -> list[dict]:
    """Per declared pretraining run with a metrics.csv: identity, `metrics` (the metrics.csv
    DataFrame) and `switch_step` (summary.json's; for an unfinished run, the step where the phase
    changes if it changes exactly once)."""
    by_path = {Path(model.curves(root)): model for model in models}
    runs = []
    for csv_path in _existing(by_path, "pretraining metrics.csv"):
        model = by_path[csv_path]
        try:
            metrics = pd.read_csv(csv_path)
        except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
            raise CmgemsError(f"{csv_path}: cannot read metrics CSV: {err}") from err
        missing = [c for c in ("step", "loss", "val_ppl") if c not in metrics.columns]
        if missing:
            raise CmgemsError(f"{csv_path}: missing column(s) {', '.join(missing)}")
        summary_path = Path(model.summary(root))
        switch = read_json(summary_path).get("switch_step") if summary_path.exists() else single_phase_change(metrics)
        runs.append({**_identity(model), "metrics": metrics, "switch_step": switch})
    return runs


def single_phase_change(metrics: pd.DataFrame) -> int | None:
    """The first step of the second phase when the `phase` column changes exactly once (a curriculum
    switch; CM-STEP's per-step mixing changes it many times), else None."""
    if "phase" not in metrics or metrics.empty:
        return None
    changes = np.flatnonzero(metrics["phase"].to_numpy()[1:] != metrics["phase"].to_numpy()[:-1]) + 1
    return int(metrics["step"].iloc[changes[0]]) if len(changes) == 1 else None


def pmi_tables(root: str | Path, genomes: Iterable[str]) -> dict[str, pd.DataFrame]:
    """{genome: pmi.parquet DataFrame (ngram, n, norm_pmi, rank)} of each genome that has one."""
    by_path = {Path(layout.of_genome(genome, layout.PMI, root)): genome for genome in genomes}
    tables = {}
    for path in _existing(by_path, "PMI tables"):
        try:
            tables[by_path[path]] = pd.read_parquet(path, columns=["ngram", "n", "norm_pmi", "rank"])
        except (OSError, KeyError, ValueError) as err:
            raise CmgemsError(f"{path}: cannot read columns ngram, n, norm_pmi, rank: {err}") from err
    return tables


def longest_validation_sequence(root: str | Path, genomes: Iterable[str]) -> tuple[str, bytes] | None:
    """(genome, sequence) of the longest chunk (the first of them) in the first non-empty validation
    shard of the first genome (by name) with a corpus, or None. The longest shows the most spans."""
    for genome in sorted(genomes):
        for shard in sorted(Path(layout.of_genome(genome, layout.VALIDATION, root)).glob("*.parquet")):
            seqs = pd.read_parquet(shard, columns=["sequence"])["sequence"]
            if len(seqs):
                return genome, bytes(seqs.iloc[int(seqs.str.len().to_numpy().argmax())])
    return None


# ------------------------------------------------------------------------------------- published
PUBLISHED_FILES = {"gue": "gue_mcc.csv", "fewshot": "fewshot.csv"}


def read_published(published_dir: str | Path | None) -> dict[str, pd.DataFrame]:
    """The published reference numbers: {"gue": task, model, mcc_x100, source, checkpoint (optional:
    blank when the file has no such column); "fewshot": dataset, shots, model, metric, value_x100,
    source} (empty frames when absent). A line whose first non-blank character is '#' is a comment;
    a '#' inside a row is data ("issue #127")."""
    empty = {"gue": pd.DataFrame(columns=["task", "model", "mcc_x100", "source"]),
             "fewshot": pd.DataFrame(columns=["dataset", "shots", "model", "metric", "value_x100", "source"])}
    out = {}
    for kind, name in PUBLISHED_FILES.items():
        path = Path(published_dir) / name if published_dir else None
        if path is None or not path.exists():
            log.warning("published numbers %s not found; the comparison leaves them out", path or name)
            out[kind] = _with_optional(kind, empty[kind])
            continue
        try:
            comments = [n for n, text in enumerate(_lines(path)) if _is_comment(text)]
            table = pd.read_csv(path, skiprows=comments)
        except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
            raise CmgemsError(f"{path}: cannot read it as CSV text (UTF-8): {err}") from None
        missing = [c for c in empty[kind].columns if c not in table.columns]
        if missing:
            raise CmgemsError(f"{path}: missing column(s) {', '.join(missing)}")
        if table["source"].isna().any():
            raise CmgemsError(f"{path}: line {_line(path, table['source'].isna())}: every published number needs a source")
        out[kind] = _with_optional(kind, _numeric(path, table, PUBLISHED_NUMBERS[kind]))
    return out


PUBLISHED_NUMBERS = {"gue": {"mcc_x100": float}, "fewshot": {"shots": int, "value_x100": float}}
# Optional columns, blank where a file lacks them: the public checkpoint a published row evaluated.
PUBLISHED_OPTIONAL = {"gue": ["checkpoint"], "fewshot": []}


def _with_optional(kind: str, table: pd.DataFrame) -> pd.DataFrame:
    """`table` with each optional column of `kind` that it lacks, blank."""
    return table.assign(**{column: pd.NA for column in PUBLISHED_OPTIONAL[kind] if column not in table})


def _lines(path: Path) -> list[str]:
    """The lines of `path` as `read_csv` numbers them (UTF-8, a byte order mark dropped)."""
    return path.read_text(encoding="utf-8-sig").split("\n")


def _is_comment(text: str) -> bool:
    """A whole-line comment: its first non-blank character is '#'."""
    return text.lstrip().startswith("#")


def _line(path: Path, bad: pd.Series) -> int:
    """The line of `path` that holds the first row where `bad` is true (the header, blank lines and
    comment lines counted)."""
    lines = [n for n, text in enumerate(_lines(path), start=1) if text.strip() and not _is_comment(text)]
    return lines[int(bad.to_numpy().argmax()) + 1]


def _numeric(path: Path, table: pd.DataFrame, columns: dict[str, type]) -> pd.DataFrame:
    """`table` with `columns` as numbers ({column: float or int}); CmgemsError naming the file, the
    line and the value of the first that is blank, not a number, not finite or (int) not whole."""
    for column, kind in columns.items():
        numbers = pd.to_numeric(table[column], errors="coerce").astype(float)
        bad = ~np.isfinite(numbers) | ((numbers % 1 != 0) if kind is int else False)
        if bad.any():
            value = table[column][bad].iloc[0]
            shown = repr(value) if isinstance(value, str) else str(value)
            what = "is blank" if pd.isna(value) else f"{shown} is not {'a whole' if kind is int else 'a finite'} number"
            raise CmgemsError(f"{path}: line {_line(path, bad)}: {column} {what}")
        table[column] = numbers.astype(kind) if kind is int else numbers
    return table
