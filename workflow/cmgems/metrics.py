"""Classification metrics (MCC first, as GUE and GeneMask report it) and the evaluation run outputs.

A finished run directory holds `metrics.json` and `predictions.parquet` (see `write_results`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from sklearn import metrics as skm

from cmgems import layout
from cmgems.errors import CmgemsError


def auc_score(y_true: np.ndarray, scores: np.ndarray) -> float | None:
    """ROC AUC from class scores (N, C): positive-class score if C == 2, else one-vs-rest macro.

    None when undefined (a class of `scores` absent from y_true, or a single class present).
    """
    scores = np.asarray(scores, dtype=np.float64)
    n_classes = scores.shape[1]
    if len(np.unique(y_true)) < 2 or (n_classes > 2 and len(np.unique(y_true)) < n_classes):
        return None
    if n_classes == 2:
        return float(skm.roc_auc_score(y_true, scores[:, 1]))
    probs = scores / scores.sum(axis=1, keepdims=True)
    return float(skm.roc_auc_score(y_true, probs, multi_class="ovr", average="macro", labels=np.arange(n_classes)))


def classification_metrics(y_true, y_pred, scores=None) -> dict:
    """mcc, accuracy, f1/precision/recall (macro) and, given scores (N, C), auc; plain floats."""
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    out = {
        "mcc": float(skm.matthews_corrcoef(y_true, y_pred)),
        "accuracy": float(skm.accuracy_score(y_true, y_pred)),
        "f1_macro": float(skm.f1_score(y_true, y_pred, average="macro", zero_division=0)),
        "precision_macro": float(skm.precision_score(y_true, y_pred, average="macro", zero_division=0)),
        "recall_macro": float(skm.recall_score(y_true, y_pred, average="macro", zero_division=0)),
    }
    if scores is not None:
        out["auc"] = auc_score(y_true, scores)
    return out


# ------------------------------------------------------------------------- run outputs (shared)
def parse_meta(text: str | None) -> dict:
    """The `--meta` JSON object (merged into metrics.json at top level); {} when not given."""
    if not text:
        return {}
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as err:
        raise CmgemsError(f"--meta: not valid JSON ({err})") from None
    if not isinstance(meta, dict):
        raise CmgemsError(f"--meta: expected a JSON object, got {type(meta).__name__}")
    return meta


def predictions_table(labels: np.ndarray, scores: np.ndarray) -> pa.Table:
    """index, label, prediction (argmax of scores), score_0..score_{C-1} (float32), one row per test sequence."""
    scores = np.asarray(scores, dtype=np.float32)
    columns = {
        "index": pa.array(np.arange(len(labels), dtype=np.int64)),
        "label": pa.array(np.asarray(labels, dtype=np.int64)),
        "prediction": pa.array(scores.argmax(axis=1).astype(np.int64)),
    }
    columns.update({f"score_{c}": pa.array(scores[:, c]) for c in range(scores.shape[1])})
    return pa.table(columns)


def write_results(folder: Path, meta: dict, labels: np.ndarray, scores: np.ndarray, record: dict) -> dict:
    """Score the test set and write metrics.json and predictions.parquet into `folder` (a temporary
    folder that `cmgems.packs` renames into place).

    metrics.json = {**meta, "metrics": test metrics, **record}; `scores` is (N, C), predictions
    are its argmax. Returns the metrics.json object.
    """
    scores = np.asarray(scores, dtype=np.float32)
    result = {**meta, "metrics": classification_metrics(labels, scores.argmax(axis=1), scores), **record}
    pq.write_table(predictions_table(labels, scores), folder / layout.PREDICTIONS)
    (folder / layout.RECORD).write_text(json.dumps(result, indent=2) + "\n")
    return result
