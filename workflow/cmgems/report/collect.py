"""What the report reads, each from the folder the results layout gives a declared run: GUE and
few-shot records, pretraining summaries and curves, PMI tables, the validation corpus, and the
published numbers. Nothing else under the results root is read, so runs of an earlier configuration
never reach the report. MCC and the other metrics are fractions here."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from cmgems import layout
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


def _run_row(path: Path, doc: dict, kind: str) -> dict:
    """One flat row of `collect_runs` from a metrics.json document."""
    needed = ["model", "masking", "metrics"] + (["task"] if kind == layout.GUE else ["dataset", "shots"])
    missing = [k for k in needed if k not in doc]
    if "mcc" not in doc.get("metrics", {}):
        missing.append("metrics.mcc")
    if missing:
        raise CmgemsError(f"{path}: {kind} metrics.json lacks key(s) {', '.join(missing)}")
    row = {
        "kind": kind, "genome": str(doc.get("genome", "none")), "model": str(doc["model"]),
        "masking": str(doc["masking"]), "steps": int(doc.get("steps", 0)),
        "task": doc.get("task"), "dataset": doc.get("dataset"),
        "shots": int(doc["shots"]) if kind == layout.FEWSHOT else None, "seed": int(doc["seed"]),
    }
    row.update({m: float(doc["metrics"][m]) if doc["metrics"].get(m) is not None else np.nan for m in METRICS})
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


def collect_runs(root: str | Path, runs: Iterable[Run]) -> pd.DataFrame:
    """One row per declared GUE / few-shot run whose metrics.json exists under `root` (metrics as
    fractions), in the order of their paths.

    Columns: RUN_COLUMNS. The record's own identity wins; where it lacks "kind" or "seed", the
    declared run's are taken. A record of another kind than its run's is a CmgemsError.
    """
    declared = {Path(run.folder(root)) / layout.RECORD: run for run in runs}
    rows = []
    for path in _existing(declared, "runs' metrics.json"):
        doc, run = read_json(path), declared[path]
        if doc.setdefault("kind", run.kind) != run.kind:
            raise CmgemsError(f"{path}: kind {doc['kind']!r} in the folder of a {run.kind} run")
        rows.append(_run_row(path, {**doc, "seed": doc.get("seed", run.seed)}, run.kind))
    table = pd.DataFrame(rows, columns=RUN_COLUMNS)
    table["steps"] = table["steps"].astype("int64")
    table["seed"] = table["seed"].astype("int64")
    table["shots"] = table["shots"].astype("Int64")
    return table


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
