"""The variants table: each genome the grid declares as a variant of another (`Grid.variants`; the
released preset, run beside the default) against that genome, method by method: the same model,
masking and step budget pretrained and evaluated both ways, paired as the claims table pairs runs
(few-shot by dataset, shots and seed; GUE by task, MCC averaged over seeds), with the mean
difference (variant minus base, MCC x100), its bootstrap interval and a Wilcoxon test, Holm-adjusted
over the table's tests. It says how much the released behaviour moves each strategy's results."""

from __future__ import annotations

import numpy as np
import pandas as pd

from cmgems import layout, stats
from cmgems.layout import Grid, Model
from cmgems.report.claims import PAIRS, Scores, compare

COLUMNS = ["genome", "base", "model", "masking", "steps", "benchmark", "pairs", "n_pairs", "wins", "ours_x100",
           "against_x100", "estimate", "ci_low", "ci_high", "test", "p", "p_holm", "note"]


def variants_table(runs: pd.DataFrame, grid: Grid) -> pd.DataFrame:
    """One row per (variant genome, model, masking, steps, benchmark) declared for both the variant and
    its base genome (COLUMNS; `ours_x100` is the variant's mean MCC x100, `against_x100` the base's)."""
    scores = Scores(runs)
    declared = {tuple(m) for m in grid.pretrained}
    benchmarks = [kind for kind, present in ((layout.FEWSHOT, grid.fewshot), (layout.GUE, grid.gue_tasks)) if present]
    rows = []
    for genome, base in grid.variants:
        for method in (m for m in grid.pretrained if m.genome == genome):
            against = Model(base, method.model, method.masking, method.steps)
            if tuple(against) not in declared:
                continue
            for kind in benchmarks:
                row = {"genome": genome, "base": base, "model": method.model, "masking": method.masking,
                       "steps": method.steps, "benchmark": kind, "pairs": PAIRS[kind]}
                evidence = compare(scores.of(kind, method), [scores.of(kind, against)])
                rows.append({**row, **{k: v for k, v in evidence.items() if k != "statistic"}})
    table = pd.DataFrame(rows, columns=COLUMNS)
    tested = table["p"].notna().to_numpy()
    table["p_holm"] = np.nan
    if tested.any():
        table.loc[tested, "p_holm"] = stats.holm(table.loc[tested, "p"].to_numpy(float))
    for column in ("steps", "n_pairs", "wins"):
        table[column] = table[column].astype("Int64")
    return table
