"""Tests for cmgems.stats and the claims table (cmgems.report.claims) on synthetic runs with known effects."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats
from sklearn.metrics import matthews_corrcoef

from cmgems import gue, layout, stats
from cmgems.layout import Grid, Model
from cmgems.report import claims, render, variants
from cmgems.report.collect import read_published

FEWSHOT = tuple((dataset, shots, seed) for dataset in ("Prom-core", "Splice-40") for shots in (10, 50)
                for seed in range(5))  # 20 pairs
# cm_gems's true MCC x100 minus each masking's: a clear win, a clear loss, no difference.
EFFECTS = {"random": 10.0, "genemask": -10.0, "dnabert": 0.0}


def _grid(models: list[Model], baseline: bool = False) -> Grid:
    return Grid(genomes=("hg38",), pretrained=tuple(models), external=(), gue_tasks=tuple(gue.GUE_27), gue_seeds=(42,),
                fewshot=FEWSHOT, baseline=baseline)


def _runs(scores: dict[Model, float], rng: np.random.Generator, noise: float = 2.0) -> pd.DataFrame:
    """Collected runs (as collect.collect_runs) of each model: every GUE task and few-shot run of
    `_grid`, MCC = a per-pair base (shared by the models) + the model's shift + noise, x100 given."""
    base = {pair: rng.uniform(20, 70) for pair in [*gue.GUE_27, *FEWSHOT]}
    rows = []
    for model, shift in scores.items():
        identity = model._asdict()
        for task in gue.GUE_27:
            mcc = base[task] + shift + rng.normal(0, noise)
            rows.append({"kind": layout.GUE, **identity, "task": task, "seed": 42, "mcc": mcc / 100})
        for dataset, shots, seed in FEWSHOT:
            mcc = base[(dataset, shots, seed)] + shift + rng.normal(0, noise)
            rows.append({"kind": layout.FEWSHOT, **identity, "dataset": dataset, "shots": shots, "seed": seed,
                         "mcc": mcc / 100})
    return pd.DataFrame(rows)


def _published(tmp_path, values: dict[str, dict[str, float]], further_pretrained=()):
    """The published GUE numbers of `values` ({model: {task: MCC x100}}), read from a gue_mcc.csv written in
    `tmp_path`; each model a released checkpoint but those `further_pretrained` (no checkpoint: not
    references of the claims)."""
    rows = [{"task": task, "model": model, "mcc_x100": value, "source": "synthetic",
             "checkpoint": None if model in further_pretrained else f"org/{model}"}
            for model, by_task in values.items() for task, value in by_task.items()]
    pd.DataFrame(rows).to_csv(tmp_path / "gue_mcc.csv", index=False)
    return read_published(tmp_path)["gue"]


def _verdicts(table: pd.DataFrame, claim: int) -> dict[tuple[str, str], str]:
    rows = table[table["claim"] == claims.CLAIMS[claim]]
    return {(row.contrast, row.benchmark): row.verdict for row in rows.itertuples()}


def test_claim1_and_4_verdicts_of_a_clear_win_a_clear_loss_and_no_difference(tmp_path):
    models = [Model("hg38", "dnabert6", m, 10000) for m in ("cm_gems", *EFFECTS)]
    scores = {models[0]: 0.0, **{m: -EFFECTS[m.masking] for m in models[1:]}}
    table = claims.claims_table(_runs(scores, np.random.default_rng(0)), _grid(models), read_published(None)["gue"])
    for kind in (layout.FEWSHOT, layout.GUE):
        verdicts = _verdicts(table, 1)
        assert verdicts[("cm_gems vs random", kind)] == claims.SUPPORTED
        assert verdicts[("cm_gems vs genemask", kind)] == claims.NOT_SUPPORTED
        assert verdicts[("cm_gems vs dnabert", kind)] == claims.INCONCLUSIVE
        # Not declared: a row that says so.
        assert verdicts[("cm_gems vs cm_step", kind)] == claims.NOT_TESTED
        assert not any("baseline" in contrast for contrast, _ in verdicts)  # a baseline masking is a masking
        # Claim 4: against the mean of random and dnabert (+5), of genemask and the undeclared global_pmi (-10).
        claim4 = _verdicts(table, 4)
        assert claim4[("PMI matters: cm_gems vs non-PMI maskings (mean)", kind)] == claims.SUPPORTED
        assert claim4[("curriculum matters: cm_gems vs its phases alone (mean)", kind)] == claims.NOT_SUPPORTED
    row = table[(table["contrast"] == "cm_gems vs random") & (table["benchmark"] == layout.FEWSHOT)].iloc[0]
    assert row["n_pairs"] == len(FEWSHOT) and row["test"] == stats.WILCOXON
    assert row["ci_low"] < 10 < row["ci_high"] and row["estimate"] == pytest.approx(10, abs=2)
    tested = table[(table["claim"] == claims.CLAIMS[1]) & table["p"].notna()]
    assert (tested["family"] == f"Holm over the {len(tested)} tests of claim 1").all()
    np.testing.assert_allclose(tested["p_holm"], stats.holm(tested["p"].to_numpy()))
    assert "not declared: global_pmi" in table.loc[table["contrast"].str.startswith("curriculum"), "note"].iloc[0]
    assert table.loc[table["verdict"] == claims.NOT_TESTED, "note"].str.len().gt(0).all()


def test_claims_2_and_3_against_published_models(tmp_path):
    ours = {Model("hg38", "dnabert6", "cm_gems", 1000): 0.0, Model("hg38", "logo", "cm_gems", 1000): -40.0,
            Model("hg38", "logo", "cm_gems", 10000): 0.0}
    rng = np.random.default_rng(1)
    runs = _runs(ours, rng, noise=0.5)
    truth = runs[(runs["kind"] == layout.GUE) & (runs["model"] == "dnabert6")].set_index("task")["mcc"] * 100
    published = {"Worse": (truth - 10 + rng.normal(0, 2, len(truth))).to_dict(),
                 "Better": (truth + 3 + rng.normal(0, 2, len(truth))).to_dict(),
                 "Same": (truth + rng.normal(0, 2, len(truth))).to_dict()}
    published["Worse"]["mean_27"] = 1.0  # a mean row is not a task
    published["Pretrained on GUE"] = (truth + 30).to_dict()  # no released checkpoint: not a reference
    table = claims.claims_table(runs, _grid(list(ours)), _published(tmp_path, published, ["Pretrained on GUE"]))
    assert not table["contrast"].str.contains("Pretrained on GUE").any()
    claim2 = table[(table["claim"] == claims.CLAIMS[2]) & (table["model"] == "dnabert6")].set_index("contrast")
    assert claim2.loc["cm_gems vs Worse", "verdict"] == claims.SUPPORTED
    assert claim2.loc["cm_gems vs Better", "verdict"] == claims.NOT_SUPPORTED
    assert claim2.loc["cm_gems vs Same", "verdict"] == claims.INCONCLUSIVE
    assert (claim2["n_pairs"] == 27).all() and claim2.loc["cm_gems vs Worse", "wins"] >= 25
    assert "not declared: cm_gems with a model other than logo at 10000 steps" in set(table["note"])
    claim3 = table[table["claim"] == claims.CLAIMS[3]].set_index("steps")
    assert claim3.loc[10000, "against"] == "Better (published)"
    # 10K: about (truth) / (truth + 3), above 85%; 1K: about 40 points lower, far below.
    assert claim3.loc[10000, "verdict"] == claims.SUPPORTED and 85 < claim3.loc[10000, "estimate"] < 100
    assert claim3.loc[1000, "verdict"] == claims.NOT_SUPPORTED
    assert claim3.loc[10000, "ci_low"] < claim3.loc[10000, "estimate"] < claim3.loc[10000, "ci_high"]


def test_too_few_pairs_are_inconclusive_and_nothing_published_is_said(tmp_path):
    models = [Model("hg38", "tiny", m, 300) for m in ("cm_gems", "random")]
    runs = _runs({models[0]: 0.0, models[1]: -30.0}, np.random.default_rng(2))
    runs = runs[runs["task"].isin(gue.GUE_27[:5]) | (runs["seed"] == 0)]  # 5 tasks, 4 few-shot pairs
    grid = _grid(models)
    table = claims.claims_table(runs, grid, read_published(tmp_path)["gue"])  # no gue_mcc.csv there
    row = table[(table["contrast"] == "cm_gems vs random") & (table["benchmark"] == layout.GUE)].iloc[0]
    few = table[(table["contrast"] == "cm_gems vs random") & (table["benchmark"] == layout.FEWSHOT)].iloc[0]
    assert (row["n_pairs"], few["n_pairs"]) == (5, 4) and row["estimate"] > 20
    assert row["verdict"] == few["verdict"] == claims.INCONCLUSIVE and "fewer than the 6" in row["note"]
    assert "no published GUE numbers" in " ".join(table.loc[table["claim"] == claims.CLAIMS[2], "note"])
    assert set(table["verdict"]) <= {claims.INCONCLUSIVE, claims.NOT_TESTED}
    assert "| p_holm |" in render.to_markdown(table)


def test_claims_are_deterministic():
    models = [Model("hg38", "dnabert6", m, 10000) for m in ("cm_gems", "random")]
    runs = _runs({models[0]: 0.0, models[1]: -1.0}, np.random.default_rng(3))
    first, second = (claims.claims_table(runs, _grid(models), read_published(None)["gue"]) for _ in range(2))
    pd.testing.assert_frame_equal(first, second)


# ------------------------------------------------------------------------------------- statistics
def test_mean_interval_covers_the_true_difference_at_about_the_stated_rate():
    rng = np.random.default_rng(4)
    draws = [rng.normal(1.5, 3.0, 20) for _ in range(200)]
    covered = [low < 1.5 < high for low, high in (stats.mean_interval(d, resamples=2000) for d in draws)]
    assert 0.9 <= np.mean(covered) <= 0.99


def test_claim_rows_cover_the_true_difference_at_about_the_stated_rate():
    rng = np.random.default_rng(5)
    covered = []
    for _ in range(200):
        pairs = pd.Index(range(27))
        base = pd.Series(rng.uniform(20, 70, 27), index=pairs)
        row = claims.compare(base + 2 + rng.normal(0, 4, 27), [base + rng.normal(0, 4, 27)])
        covered.append(row["ci_low"] < 2 < row["ci_high"])
    assert 0.9 <= np.mean(covered) <= 0.99


def test_mcc_interval_covers_the_population_mcc_at_about_the_stated_rate():
    joint = np.array([[0.35, 0.1], [0.15, 0.4]])  # P(true class, predicted class)
    rng = np.random.default_rng(6)
    covered = []
    for _ in range(200):
        counts = rng.multinomial(400, joint.ravel()).reshape(2, 2)
        low, high = stats.mcc_interval(counts)
        covered.append(low < stats.mcc(joint) < high)
    assert 0.9 <= np.mean(covered) <= 0.99


@pytest.mark.parametrize("classes", [2, 3])
def test_vectorised_mcc_matches_sklearn_on_resampled_indices(classes):
    rng = np.random.default_rng(classes)
    labels = rng.integers(0, classes, 300)
    predictions = np.where(rng.random(300) < 0.6, labels, rng.integers(0, classes, 300))
    index = rng.integers(0, 300, size=(40, 300))
    expected = [matthews_corrcoef(labels[i], predictions[i]) for i in index]
    np.testing.assert_allclose(stats.mcc(stats.confusions(labels, predictions, classes, index)), expected, atol=1e-12)
    assert stats.mcc(stats.confusions(labels, np.zeros_like(labels), classes))[0] == 0.0  # undefined, as sklearn


def test_holm_against_a_known_example():
    # Holm (1979) step-down: sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1, then running maxima.
    np.testing.assert_allclose(stats.holm(np.array([0.01, 0.04, 0.03, 0.005])), [0.03, 0.06, 0.06, 0.02])
    np.testing.assert_allclose(stats.holm(np.array([0.2, np.nan, 0.5])), [0.4, np.nan, 0.5])


def test_t_interval_and_wilcoxon():
    values = np.array([0.3, 0.5, 0.4, 0.45])
    low, high = stats.t_interval(values.mean(), values.std(ddof=1), len(values))
    expected = scipy_stats.t.interval(0.95, len(values) - 1, loc=values.mean(), scale=scipy_stats.sem(values))
    np.testing.assert_allclose([low, high], expected)
    assert np.isnan(stats.t_interval(np.array([1.0]), np.array([np.nan]), np.array([1]))[0][0])
    assert stats.wilcoxon_p(np.arange(1, 7)) == pytest.approx(2 / 2**6)  # all 6 positive: exact two-sided p
    assert np.isnan(stats.wilcoxon_p(np.zeros(8)))


def test_the_variants_table_compares_each_strategy_with_its_base_genome():
    """The released preset as a variant genome: each strategy against the same strategy of the base
    genome, the difference's interval around the true shift."""
    shifts = {"random": 0.0, "cm_gems": -8.0}
    methods = {Model(g, "dnabert6", m, 10000): shift if g == "hg38_released" else 0.0
               for g in ("hg38", "hg38_released") for m, shift in shifts.items()}
    runs = _runs(methods, np.random.default_rng(5), noise=1.0)
    grid = Grid(genomes=("hg38", "hg38_released"), pretrained=tuple(methods), external=(), gue_tasks=tuple(gue.GUE_27),
                gue_seeds=(42,), fewshot=FEWSHOT, baseline=False, variants=(("hg38_released", "hg38"),))
    assert Grid.from_json(grid.to_json()) == grid
    table = variants.variants_table(runs, grid).set_index(["masking", "benchmark"])
    assert len(table) == 4 and set(table["base"]) == {"hg38"} and (table["n_pairs"] >= 20).all()
    for benchmark in (layout.GUE, layout.FEWSHOT):
        moved, same = table.loc[("cm_gems", benchmark)], table.loc[("random", benchmark)]
        assert moved["ci_low"] < -8 < moved["ci_high"] < 0 and moved["p_holm"] < 0.05
        assert same["ci_low"] < 0 < same["ci_high"]
    no_variants = Grid(**{**grid.__dict__, "variants": ()})
    assert variants.variants_table(runs, no_variants).empty


def test_the_protocol_table_sets_our_run_of_a_checkpoint_beside_its_published_numbers():
    """Our GUE MCC of a published checkpoint against its published row: tasks outside our seeds' range
    are flagged, the mean difference has its interval; claim 2 also compares cm_gems with our run of it."""
    from cmgems.report import protocol

    checkpoint = Model(layout.EXTERNAL, "DNABERT2", layout.PUBLISHED, 0)
    ours = Model("hg38", "dnabert6", "cm_gems", 1000)
    rng = np.random.default_rng(7)
    rows = [{"kind": layout.GUE, **checkpoint._asdict(), "task": task, "seed": seed, "mcc": 0.5 + 0.01 * seed}
            for task in gue.GUE_27 for seed in (1, 2, 3)]
    runs = pd.concat([pd.DataFrame(rows), _runs({ours: 0.0}, rng)], ignore_index=True)
    published = pd.DataFrame({"task": gue.GUE_27, "model": "DNABERT-2", "source": "synthetic",
                              "mcc_x100": [52.0] * 20 + [60.0] * 7})  # 20 within 51..53, 7 far above
    grid = Grid(genomes=("hg38",), pretrained=(ours,), external=(checkpoint,), gue_tasks=tuple(gue.GUE_27),
                gue_seeds=(1, 2, 3), fewshot=FEWSHOT, baseline=False, published_as=(("DNABERT2", "DNABERT-2"),))
    assert Grid.from_json(grid.to_json()) == grid
    table = protocol.protocol_table(runs, grid, published)
    tasks, mean = table[table["task"] != protocol.MEAN], table[table["task"] == protocol.MEAN].iloc[0]
    assert len(tasks) == 27 and (tasks["n_seeds"] == 3).all() and set(tasks["spread"]) == {"range over seeds"}
    assert tasks["differs"].sum() == 7 == mean["tasks_differing"] and mean["n_tasks"] == 27
    assert mean["difference"] == pytest.approx(52 - (20 * 52 + 7 * 60) / 27)
    assert mean["ci_low"] < mean["difference"] < mean["ci_high"] < 0
    claim2 = claims.claims_table(runs, grid, read_published(None)["gue"])
    against = claim2[claim2["contrast"] == "cm_gems vs DNABERT2 (our run)"].set_index("benchmark")
    assert set(against.index) == {layout.GUE, layout.FEWSHOT} and against.loc[layout.GUE, "n_pairs"] == 27
