"""The published reference numbers (resources/published): every row of DNABERT-2's GUE table, each
model's means recomputed from its task rows, the values the issue and METHOD.md quote, and how
`read_published` reads comments."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from cmgems import gue
from cmgems.errors import CmgemsError
from cmgems.report import collect

PUBLISHED = Path(__file__).resolve().parents[1] / "resources" / "published"
MEANS = {"mean_27": gue.GUE_27, "mean_28": gue.GUE_TASKS}
# The ten rows of DNABERT-2's GUE results table (arXiv 2306.15006), by their names here.
TABLE_MODELS = {"DNABERT (3-mer)", "DNABERT (4-mer)", "DNABERT (5-mer)", "DNABERT (6-mer)", "NT-500M-human",
                "NT-500M-1000g", "NT-2500M-1000g", "NT-2500M-multi", "DNABERT-2",
                "DNABERT-2 (further pretrained on GUE)"}
NOT_RELEASED = {"DNABERT-2 (further pretrained on GUE)"}  # no public checkpoint named for this row


@pytest.fixture(scope="module")
def published() -> dict[str, pd.DataFrame]:
    return collect.read_published(PUBLISHED)


@pytest.fixture(scope="module")
def values(published) -> pd.Series:
    """mcc_x100 by (model, task)."""
    return published["gue"].set_index(["model", "task"])["mcc_x100"]


def test_every_model_of_the_table_has_each_task_once(published):
    table = published["gue"]
    assert TABLE_MODELS <= set(table["model"])
    assert not table.duplicated(["model", "task"]).any()
    for model, rows in table.groupby("model"):
        assert sorted(rows["task"]) == sorted([*gue.GUE_TASKS, *MEANS]), model


@pytest.mark.parametrize("mean", sorted(MEANS))
def test_each_mean_recomputes_from_its_task_rows(values, mean):
    for model in values.index.unique("model"):
        tasks = values[model]
        assert tasks[mean] == pytest.approx(tasks[MEANS[mean]].mean(), abs=0.01), (model, mean)


def test_values_are_mcc_x100_and_every_row_names_its_source(published):
    for kind, table in published.items():
        assert table["source"].map(lambda s: isinstance(s, str) and s.strip() != "").all(), kind
    assert published["gue"]["mcc_x100"].between(-100, 100).all()
    assert published["fewshot"]["value_x100"].between(-100, 100).all()


def test_values_quoted_by_the_issue_and_method_md(values):
    nt = values["NT-2500M-multi"]
    assert (nt["EMP_H3"], nt["prom_300_all"], nt["splice_reconstructed"], nt["covid"]) == (78.77, 91.01, 89.35, 73.04)
    assert values["DNABERT-2", "mean_28"] == pytest.approx(66.80, abs=0.01)
    assert values["DNABERT-2", "mean_27"] == pytest.approx(66.65, abs=0.01)
    assert values["DNABERT-2", "prom_core_tata"] == 74.17 and values["DNABERT-2", "mouse_2"] == 79.32


def test_each_released_model_names_one_checkpoint(published):
    """The published pretrained checkpoints (the claims' 120K-step references) are told apart by
    their checkpoint; the GUE-further-pretrained DNABERT-2 row has none."""
    checkpoints = published["gue"].groupby("model")["checkpoint"].agg(lambda c: set(c.dropna()))
    for model in TABLE_MODELS - NOT_RELEASED:
        assert len(checkpoints[model]) == 1, model
    for model in NOT_RELEASED:
        assert checkpoints[model] == set(), model


def test_readme_maps_every_model(published):
    readme = (PUBLISHED / "README.md").read_text()
    for model in set(published["gue"]["model"]) | set(published["fewshot"]["model"]):
        assert f"`{model}`" in readme, model


def test_only_whole_lines_starting_with_hash_are_comments(tmp_path):
    (tmp_path / "gue_mcc.csv").write_text("# a comment\ntask,model,mcc_x100,source\n  # indented comment\n"
                                          'tf_0,X,50,paper issue #127\ntf_1,X,51,"table #2, row 3"\n')
    table = collect.read_published(tmp_path)["gue"]
    assert table["source"].tolist() == ["paper issue #127", "table #2, row 3"]
    assert table["mcc_x100"].tolist() == [50.0, 51.0]
    assert table["checkpoint"].isna().all()  # optional: blank when the file has none


def test_error_lines_count_comments_and_blank_lines(tmp_path):
    path = tmp_path / "gue_mcc.csv"
    path.write_text("task,model,mcc_x100,source\n# note #1\n\ntf_0,X,50,s #1\ntf_1,X,oops,s #2\n")
    with pytest.raises(CmgemsError, match=re.escape(f"{path}: line 5: mcc_x100 'oops' is not a finite number")):
        collect.read_published(tmp_path)
