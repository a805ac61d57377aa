"""The report's statistics, with their constants in one place: 95% intervals (percentile bootstrap,
Student t), the Wilcoxon signed-rank test, Holm's correction, and a vectorised MCC.

Every bootstrap draws from `generator()`, a numpy Generator seeded with SEED afresh for each
interval, so an interval depends only on its own data (not on what was computed before it) and the
report is the same byte for byte on every run.
"""

from __future__ import annotations

import numpy as np
from scipy import stats as scipy_stats

ALPHA = 0.05  # two-sided level of the tests and of the (1 - ALPHA) intervals
RESAMPLES = 10_000  # bootstrap resamples per interval
SEED = 20240814  # of every bootstrap (`generator`)
# The fewest pairs with which a two-sided exact Wilcoxon signed-rank test can reach p < ALPHA
# (with 5 pairs its smallest p is 2 / 2**5 = 0.0625).
MIN_PAIRS = 6
WILCOXON = "Wilcoxon signed-rank (two-sided)"


def generator() -> np.random.Generator:
    return np.random.default_rng(SEED)


def percentile_interval(samples: np.ndarray) -> tuple[float, float]:
    """The central (1 - ALPHA) interval of `samples` (its ALPHA/2 and 1 - ALPHA/2 quantiles)."""
    low, high = np.quantile(samples, [ALPHA / 2, 1 - ALPHA / 2])
    return float(low), float(high)


def resample_index(n: int, resamples: int = RESAMPLES, rng: np.random.Generator | None = None) -> np.ndarray:
    """(resamples, n) indices into n items, drawn with replacement: one bootstrap resample per row."""
    return (rng or generator()).integers(0, n, size=(resamples, n))


def mean_interval(values: np.ndarray, resamples: int = RESAMPLES) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of `values` (n,), e.g. paired differences; NaNs
    when n < 2."""
    values = np.asarray(values, dtype=float)
    if len(values) < 2:
        return np.nan, np.nan
    return percentile_interval(values[resample_index(len(values), resamples)].mean(axis=1))


def ratio_interval(numerator: np.ndarray, denominator: np.ndarray, resamples: int = RESAMPLES) -> tuple[float, float]:
    """Percentile bootstrap interval of mean(numerator) / mean(denominator), resampling the n pairs
    (numerator[i], denominator[i]) together; NaNs when n < 2."""
    numerator, denominator = np.asarray(numerator, dtype=float), np.asarray(denominator, dtype=float)
    if len(numerator) < 2:
        return np.nan, np.nan
    index = resample_index(len(numerator), resamples)
    return percentile_interval(numerator[index].mean(axis=1) / denominator[index].mean(axis=1))


def t_interval(mean: np.ndarray, sd: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Student-t (1 - ALPHA) intervals of means, elementwise: mean -+ t(n - 1) sd / sqrt(n); NaN where n < 2."""
    n = np.asarray(n, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        half = scipy_stats.t.ppf(1 - ALPHA / 2, np.where(n >= 2, n - 1, np.nan)) * np.asarray(sd) / np.sqrt(n)
    return np.asarray(mean) - half, np.asarray(mean) + half


def wilcoxon_p(differences: np.ndarray) -> float:
    """Two-sided p of the Wilcoxon signed-rank test of paired `differences` (zeros dropped); NaN
    when no difference is non-zero."""
    differences = np.asarray(differences, dtype=float)
    if not np.any(differences != 0):
        return np.nan
    return float(scipy_stats.wilcoxon(differences, zero_method="wilcox").pvalue)


def holm(p: np.ndarray) -> np.ndarray:
    """Holm's step-down adjustment of the p-values `p` of one family (NaNs are not tests: kept as NaN)."""
    p = np.asarray(p, dtype=float)
    adjusted = np.full_like(p, np.nan)
    tested = np.flatnonzero(~np.isnan(p))
    order = tested[np.argsort(p[tested], kind="stable")]
    steps = p[order] * (len(order) - np.arange(len(order)))
    adjusted[order] = np.minimum(1.0, np.maximum.accumulate(steps))
    return adjusted


# ------------------------------------------------------------------------------------------- MCC
def confusions(labels: np.ndarray, predictions: np.ndarray, n_classes: int, index: np.ndarray | None = None) -> np.ndarray:
    """Confusion matrices (B, C, C) (rows: true class, columns: predicted) of the rows of `index`
    (B, n) of indices into `labels` and `predictions` (n,), ints in [0, C); index None: the whole set (B = 1)."""
    labels, predictions = np.asarray(labels, dtype=np.int64), np.asarray(predictions, dtype=np.int64)
    index = np.arange(len(labels))[None, :] if index is None else np.asarray(index)
    cells = labels[index] * n_classes + predictions[index] + (np.arange(len(index)) * n_classes**2)[:, None]
    return np.bincount(cells.ravel(), minlength=len(index) * n_classes**2).reshape(len(index), n_classes, n_classes)


def mcc(confusion: np.ndarray) -> np.ndarray:
    """Matthews correlation coefficient (multi-class, Gorodkin's R_K, as sklearn) of confusion
    matrices (..., C, C); 0 where it is undefined (a constant truth or prediction), as sklearn."""
    confusion = np.asarray(confusion, dtype=float)
    true, predicted = confusion.sum(axis=-1), confusion.sum(axis=-2)
    total, correct = true.sum(axis=-1), np.trace(confusion, axis1=-2, axis2=-1)
    numerator = correct * total - (true * predicted).sum(axis=-1)
    denominator = np.sqrt((total**2 - (predicted**2).sum(axis=-1)) * (total**2 - (true**2).sum(axis=-1)))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, numerator / np.where(denominator > 0, denominator, 1), 0.0)


def mcc_interval(confusion: np.ndarray, resamples: int = RESAMPLES) -> tuple[float, float]:
    """Percentile bootstrap interval of the MCC of a test set with confusion matrix (C, C), over
    resamples of its n rows. Resampling n rows with replacement gives cell counts distributed
    Multinomial(n, cell frequencies), so the counts are drawn directly: the same bootstrap as
    resampling an (resamples, n) index matrix, in O(C^2) per resample instead of O(n)."""
    confusion = np.asarray(confusion)
    n = int(confusion.sum())
    if n < 2:
        return np.nan, np.nan
    draws = generator().multinomial(n, confusion.ravel() / n, size=resamples)
    return percentile_interval(mcc(draws.reshape(resamples, *confusion.shape)))
