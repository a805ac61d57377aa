"""The claims table: the four claims of the CM-GEMS abstract (arXiv 2408.07180) put to the runs the
grid declares, one row per comparison, with its evidence and a verdict.

1. CM-GEMS learns better representations than the baseline maskings (few-shot and GUE): cm_gems
   against each masking of CLAIM1_AGAINST, per genome, model and step budget.
2. CM-GEMS after 1K and 10K steps matches or beats DNABERT, Nucleotide Transformer and DNABERT-2
   (120K steps): cm_gems of every model but LOGO_MODEL (claim 3's) at each budget, on GUE against
   every published pretrained model of the published GUE table (the rows with a `checkpoint`: the
   released checkpoints, not DNABERT-2 pretrained further on GUE's training sets; `mean_*` rows left out),
   and on GUE and in few-shot against each published checkpoint the grid evaluates (`pretrained_models`).
3. Curriculum LOGO reaches nearly 90% of the best 120K-step model: LOGO_MODEL with cm_gems, its mean
   GUE MCC as a percentage of the mean of the best published model (the highest mean over the tasks
   both have), over those tasks; "nearly 90%" is read as at least CLAIM3_PERCENT.
4. The PMI-based curriculum is what makes the difference: cm_gems against the non-PMI maskings
   (NON_PMI: per pair, the mean of those declared) shows that PMI matters, and against its own
   phases alone (PHASES: per pair, their mean) that the curriculum does; the claim holds where both do.

Pairs: a few-shot pair is one (dataset, shots, seed), a GUE pair one task (MCC averaged over each
method's seeds first), a published pair one task. A difference is ours minus theirs in MCC x100,
positive when the claim holds. Each row gives the mean difference, its percentile bootstrap interval
over pairs, the two-sided Wilcoxon signed-rank test, and its p adjusted by Holm's method within the
claim (claims 1, 2 and 4 each a family; claim 3 has an interval and no test). Verdicts: VERDICTS.
A comparison that cannot be made (runs not declared, none finished, no published numbers) is a row
that says why. The constants of the statistics are in `cmgems.stats`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from cmgems import layout, stats
from cmgems.layout import Grid, Model
from cmgems.report.collect import METHOD_KEYS

CM_GEMS = "cm_gems"
CLAIM1_AGAINST = ("random", "dnabert", "genemask", "global_pmi", "cm_step")
NON_PMI, PHASES = ("random", "dnabert"), ("genemask", "global_pmi")
LOGO_MODEL = "logo"
PAPER_STEPS = (1000, 10000)  # the budgets claim 2 names
CLAIM3_PERCENT = 85.0  # "nearly 90%" of the best published model, at the least
CLAIMS = {
    1: "1: CM-GEMS beats the baseline maskings",
    2: "2: CM-GEMS (1K/10K steps) matches or beats published 120K-step models",
    3: "3: curriculum LOGO reaches nearly 90% of the best published model",
    4: "4: the PMI-based curriculum makes the difference",
}
SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE, NOT_TESTED = "supported", "not supported", "inconclusive", "not tested"
VERDICTS = {
    SUPPORTED: f"Holm-adjusted p < {stats.ALPHA} and the whole interval above 0 (claim 3: above {CLAIM3_PERCENT:g}%)",
    NOT_SUPPORTED: f"Holm-adjusted p < {stats.ALPHA} and the whole interval below 0 (claim 3: below {CLAIM3_PERCENT:g}%)",
    INCONCLUSIVE: f"otherwise, and always with fewer than {stats.MIN_PAIRS} pairs",
    NOT_TESTED: "the comparison cannot be made; the note says why",
}
PAIRS = {layout.FEWSHOT: "dataset x shots x seed", layout.GUE: "task (mean over seeds)"}
NO_PAIRS = "no pairs yet: no finished runs (or published numbers) of both"
DIFFERENCE, PERCENT = "mean paired difference (MCC x100)", "ours as % of best published mean MCC"
COLUMNS = ["claim", "contrast", "benchmark", *METHOD_KEYS[:2], "steps", "ours", "against", "pairs", "n_pairs",
           "wins", "ours_x100", "against_x100", "statistic", "estimate", "ci_low", "ci_high", "test", "p", "p_holm",
           "family", "verdict", "note"]


# ------------------------------------------------------------------------------------ the scores
class Scores:
    """MCC x100 of the collected runs, per method (genome, model, masking, steps): few-shot per
    (dataset, shots, seed), GUE per task (mean over seeds); published per model, by task: the released
    checkpoints' rows of `published_gue` (`collect.read_published`'s; those with a `checkpoint`, so not
    DNABERT-2 pretrained further on GUE), none without it."""

    def __init__(self, runs: pd.DataFrame, published_gue: pd.DataFrame | None = None):
        few, gue = (runs[runs["kind"] == kind] for kind in (layout.FEWSHOT, layout.GUE))
        self.by_kind = {
            layout.FEWSHOT: {key: g.set_index(["dataset", "shots", "seed"])["mcc"] * 100
                             for key, g in few.groupby(METHOD_KEYS, sort=False)},
            layout.GUE: {key[:4]: s.droplevel(list(range(4))) * 100
                         for key, s in gue.groupby([*METHOD_KEYS, "task"], sort=False)["mcc"].mean()
                         .groupby(level=list(range(4)), sort=False)},
        }
        self.published = {}
        if published_gue is not None:
            tasks = published_gue[~published_gue["task"].astype(str).str.startswith("mean_")]
            tasks = tasks[tasks["checkpoint"].notna() & (tasks["checkpoint"].astype(str).str.strip() != "")]
            self.published = {model: g.set_index("task")["mcc_x100"] for model, g in tasks.groupby("model", sort=False)}

    def of(self, kind: str, method: Model) -> pd.Series:
        return self.by_kind[kind].get(tuple(method), pd.Series(dtype=float))


def compare(ours: pd.Series, against: list[pd.Series]) -> dict:
    """Paired comparison of `ours` with the mean of `against`, over the pairs (index values) all have."""
    joined = pd.concat([ours, *against], axis=1, join="inner").dropna()
    if joined.empty:
        return {"n_pairs": 0, "note": NO_PAIRS}
    a, b = joined.iloc[:, 0].to_numpy(float), joined.iloc[:, 1:].mean(axis=1).to_numpy(float)
    low, high = stats.mean_interval(a - b)
    return {"n_pairs": len(a), "wins": int(np.sum(a > b)), "ours_x100": a.mean(), "against_x100": b.mean(),
            "statistic": DIFFERENCE, "estimate": (a - b).mean(), "ci_low": low, "ci_high": high,
            "test": stats.WILCOXON, "p": stats.wilcoxon_p(a - b)}


def percent_of_best(ours: pd.Series, published: dict[str, pd.Series]) -> tuple[str, dict]:
    """(best model, claim 3's evidence): `ours` as a percentage of the published model with the
    highest mean over the tasks it shares with `ours`, over those tasks, its interval resampling tasks."""
    shared = {model: pd.concat([ours, values], axis=1, join="inner").dropna() for model, values in published.items()}
    shared = {model: pair for model, pair in shared.items() if len(pair)}
    if not shared:
        return "", {"n_pairs": 0, "note": NO_PAIRS}
    best = max(shared, key=lambda model: shared[model].iloc[:, 1].mean())
    a, b = (shared[best].iloc[:, i].to_numpy(float) for i in (0, 1))
    low, high = stats.ratio_interval(a, b)
    return best, {"n_pairs": len(a), "wins": int(np.sum(a > b)), "ours_x100": a.mean(), "against_x100": b.mean(),
                  "statistic": PERCENT, "estimate": 100 * a.mean() / b.mean(), "ci_low": 100 * low,
                  "ci_high": 100 * high}


# ---------------------------------------------------------------------------------------- rows
def _label(masking: str, model: str, steps: int) -> str:
    return f"{masking} {model} {steps}"


def _pairwise_rows(grid: Grid, scores: Scores, claim: int, contrasts: dict[str, tuple[str, ...]]) -> list[dict]:
    """Rows of claim 1 or 4: cm_gems of each declared (genome, model, steps) against the mean of each
    contrast's maskings that are declared, per benchmark. (The k-mer baseline is no masking: the GUE
    and few-shot tables set it beside every model.)"""
    rows = []
    declared = {tuple(m) for m in grid.pretrained}
    arms = dict.fromkeys((m.genome, m.model, m.steps) for m in grid.pretrained)
    benchmarks = {layout.FEWSHOT: bool(grid.fewshot), layout.GUE: bool(grid.gue_tasks)}
    for genome, model, steps in arms:
        ours = Model(genome, model, CM_GEMS, steps)
        for kind, runs_declared in benchmarks.items():
            base = {"claim": CLAIMS[claim], "benchmark": kind, "genome": genome, "model": model, "steps": steps,
                    "ours": _label(CM_GEMS, model, steps), "pairs": PAIRS[kind]}
            if tuple(ours) not in declared or not runs_declared:
                missing = "cm_gems for this model and budget (pretrain.masking)" if runs_declared else f"no {kind} runs"
                rows.append({**base, "contrast": "all", "note": f"not declared: {missing}"})
                continue
            for contrast, maskings in contrasts.items():
                others = [Model(genome, model, m, steps) for m in maskings if (genome, model, m, steps) in declared]
                row = {**base, "contrast": contrast, "against": " + ".join(_label(o.masking, o.model, o.steps)
                                                                         for o in others)}
                absent = [m for m in maskings if m not in {o.masking for o in others}]
                note = f"not declared: {', '.join(absent)} (pretrain.masking)" if absent else None
                rows.append({**row, "note": note, **compare(scores.of(kind, ours), [scores.of(kind, o) for o in others])}
                            if others else {**row, "note": note})
    return rows


def claim1_rows(grid: Grid, scores: Scores) -> list[dict]:
    return _pairwise_rows(grid, scores, 1, {f"cm_gems vs {m}": (m,) for m in CLAIM1_AGAINST})


def claim4_rows(grid: Grid, scores: Scores) -> list[dict]:
    contrasts = {"PMI matters: cm_gems vs non-PMI maskings (mean)": NON_PMI,
                 "curriculum matters: cm_gems vs its phases alone (mean)": PHASES}
    return _pairwise_rows(grid, scores, 4, contrasts)


def _published_rows(grid: Grid, scores: Scores, claim: int) -> list[dict]:
    """Claim 2's rows (cm_gems of every model but LOGO_MODEL against each published model) or claim
    3's (LOGO_MODEL's cm_gems as % of the best), per genome and budget; PAPER_STEPS not declared say so."""
    ours = [m for m in grid.pretrained if m.masking == CM_GEMS and (m.model == LOGO_MODEL) == (claim == 3)]
    base = {"claim": CLAIMS[claim], "benchmark": layout.GUE, "pairs": "task"}
    what = f"cm_gems with model {LOGO_MODEL}" if claim == 3 else f"cm_gems with a model other than {LOGO_MODEL}"
    if not grid.gue_tasks:
        return [{**base, "contrast": "all", "note": "not declared: no gue runs"}]
    rows = [{**base, "steps": steps, "contrast": "all", "note": f"not declared: {what} at {steps} steps"}
            for steps in PAPER_STEPS if steps not in {m.steps for m in ours}]
    for model in ours:
        row = {**base, "genome": model.genome, "model": model.model, "steps": model.steps,
               "ours": _label(CM_GEMS, model.model, model.steps)}
        values = scores.of(layout.GUE, model)
        if not scores.published:
            rows.append({**row, "contrast": "all", "note": "no published GUE numbers (report.published gue_mcc.csv)"})
        elif claim == 3:
            best, evidence = percent_of_best(values, scores.published)
            rows.append({**row, "contrast": "% of best published", "against": f"{best} (published)", **evidence})
        else:
            rows += [{**row, "contrast": f"cm_gems vs {name}", "against": f"{name} (published)",
                      **compare(values, [published])} for name, published in scores.published.items()]
    return rows + (_checkpoint_rows(grid, scores, ours) if claim == 2 else [])


def _checkpoint_rows(grid: Grid, scores: Scores, ours: list[Model]) -> list[dict]:
    """Claim 2 against the published checkpoints evaluated here (`pretrained_models`: the grid's
    external models), on GUE and in few-shot, where no published numbers exist."""
    kinds = [kind for kind, declared in ((layout.GUE, grid.gue_tasks), (layout.FEWSHOT, grid.fewshot)) if declared]
    rows = []
    for model in ours:
        for kind in kinds:
            values = scores.of(kind, model)
            for checkpoint in grid.external:
                rows.append({"claim": CLAIMS[2], "benchmark": kind, "pairs": PAIRS[kind], "genome": model.genome,
                             "model": model.model, "steps": model.steps, "ours": _label(CM_GEMS, model.model, model.steps),
                             "contrast": f"cm_gems vs {checkpoint.model} (our run)",
                             "against": f"{checkpoint.model} (pretrained_models, evaluated here)",
                             **compare(values, [scores.of(kind, checkpoint)])})
    return rows


# ------------------------------------------------------------------------------------ verdicts
def verdict(row: pd.Series) -> str:
    """The row's verdict (VERDICTS); a claim 3 row compares its interval with CLAIM3_PERCENT."""
    if pd.isna(row["statistic"]):
        return NOT_TESTED
    if row["n_pairs"] < stats.MIN_PAIRS:
        return INCONCLUSIVE
    if row["statistic"] == PERCENT:
        return SUPPORTED if row["ci_low"] > CLAIM3_PERCENT else NOT_SUPPORTED if row["ci_high"] < CLAIM3_PERCENT \
            else INCONCLUSIVE
    significant = row["p_holm"] < stats.ALPHA
    if significant and row["ci_low"] > 0:
        return SUPPORTED
    if significant and row["ci_high"] < 0:
        return NOT_SUPPORTED
    return INCONCLUSIVE


def _with_holm(table: pd.DataFrame) -> pd.DataFrame:
    """p_holm and family: Holm's adjustment within each claim, over its rows with a p."""
    table["p_holm"] = np.nan
    for claim, rows in table.groupby("claim", sort=False).groups.items():
        tested = table.loc[rows, "p"].notna()
        if tested.any():
            table.loc[rows, "p_holm"] = stats.holm(table.loc[rows, "p"].to_numpy(float))
            table.loc[rows[tested.to_numpy()], "family"] = f"Holm over the {int(tested.sum())} tests of claim {claim[0]}"
    return table


def _notes(table: pd.DataFrame) -> pd.Series:
    few = table["verdict"].eq(INCONCLUSIVE) & (table["n_pairs"] < stats.MIN_PAIRS) & table["note"].isna()
    return table["note"].mask(few, table["n_pairs"].map(
        lambda n: f"{n:.0f} pairs: fewer than the {stats.MIN_PAIRS} a two-sided Wilcoxon test needs to reach "
                  f"p < {stats.ALPHA}"))


def claims_table(runs: pd.DataFrame, grid: Grid, published_gue: pd.DataFrame) -> pd.DataFrame:
    """The claims table (COLUMNS), claim by claim, from the collected runs (`collect.collect_runs`)
    of `grid` and the published GUE numbers (`collect.read_published(...)["gue"]`)."""
    scores = Scores(runs, published_gue)
    rows = [*claim1_rows(grid, scores), *_published_rows(grid, scores, 2), *_published_rows(grid, scores, 3),
            *claim4_rows(grid, scores)]
    table = pd.DataFrame(rows, columns=COLUMNS).astype({"family": object, "note": object})
    table = _with_holm(table)
    table["verdict"] = table.apply(verdict, axis=1) if len(table) else pd.Series(dtype=str)
    table["note"] = _notes(table)
    for column in ("steps", "n_pairs", "wins"):
        table[column] = table[column].astype("Int64")
    return table
