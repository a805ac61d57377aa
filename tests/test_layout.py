"""Tests for cmgems.layout: the folders of runs, the grid, the report's registry, and that the
workflow can import it without torch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cmgems import layout
from cmgems.errors import CmgemsError
from cmgems.layout import FEWSHOT, GUE, Grid, Model, Run

REPO = Path(__file__).resolve().parents[1]
MODEL = Model("hg38", "logo", "cm_gems", 10000)
GRID = Grid(
    genomes=("hg38",),
    pretrained=(MODEL, Model("hg38", "logo", "random", 10000)),
    external=(Model(layout.EXTERNAL, "DNABERT6", layout.PUBLISHED, 0),),
    gue_tasks=("tf_0", "covid"),
    gue_seeds=(42, 43, 44),
    fewshot=(("Cohn-enh", 10, 1), ("Cohn-enh", 10, 2), ("Cohn-enh", 1000, 1)),
    baseline=True,
)


def test_folders_of_models_and_runs():
    assert MODEL.folder() == "results/hg38/models/logo/cm_gems/10000"
    assert MODEL.checkpoint("out") == "out/hg38/models/logo/cm_gems/10000/model"
    assert Run(GUE, MODEL, "tf_0", 42).folder() == "results/hg38/gue/logo/cm_gems/10000/tf_0/seed42"
    fewshot = Run(FEWSHOT, MODEL, "Cohn-enh", 3, 1000)
    assert fewshot.folder() == "results/hg38/fewshot/logo/cm_gems/10000/Cohn-enh/1000/seed3"
    assert Run(GUE, None, "tf_0", 42).folder() == "results/baseline/gue/tf_0"  # one seed: no seed folder
    assert Run(FEWSHOT, None, "Cohn-enh", 3, 10).folder() == "results/baseline/fewshot/Cohn-enh/10/seed3"
    wildcards = Run(GUE, layout.WILDCARDS, "tf_0", 42)
    assert wildcards.folder() == "results/{genome}/gue/{model}/{masking}/{steps}/tf_0/seed42"
    assert layout.of_genome("{genome}", layout.PMI_COUNTS, contig="chr1") == "results/{genome}/pmi/counts/chr1.parquet"
    assert layout.cache("results/x") == ".cmgems/packs/results/x"


def test_grid_runs_every_model_on_every_run_and_the_baseline_on_the_first_gue_seed():
    runs = GRID.runs()
    per_model = len(GRID.gue_tasks) * len(GRID.gue_seeds) + len(GRID.fewshot)
    baseline = [r for r in runs if r.model is None]
    assert len(runs) == 3 * per_model + len(baseline) and len(set(runs)) == len(runs)
    assert [(r.task, r.seed) for r in baseline if r.kind == GUE] == [("tf_0", 42), ("covid", 42)]
    assert [(r.task, r.shots, r.seed) for r in baseline if r.kind == FEWSHOT] == list(GRID.fewshot)
    assert {r.model for r in runs} == {*GRID.models(), None}
    assert len({r.folder() for r in runs}) == len(runs)
    assert Grid(**{**GRID.__dict__, "baseline": False}).baseline_runs() == []


def test_grid_json_round_trip_and_errors():
    assert Grid.from_json(GRID.to_json()) == GRID
    for text in ("[]", '{"genomes": ["a"]}', "not json", GRID.to_json().replace('"fewshot":[[', '"fewshot":[[1,')):
        with pytest.raises(CmgemsError, match="not a grid"):
            Grid.from_json(text)


def test_reserved_names_are_the_schemas():
    schema = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())
    assert schema["properties"]["genomes"]["propertyNames"]["not"]["enum"] == list(layout.RESERVED)


def test_report_registry_names_files_that_exist():
    names = [item.name for item in (*layout.TABLES, *layout.FIGURES)]
    assert len(set(names)) == len(names)
    for item in (*layout.TABLES, *layout.FIGURES):
        assert (REPO / "workflow" / "report" / f"{item.caption}.rst").exists(), item
    assert layout.table("gue") == "results/report/tables/gue.csv"
    assert layout.figure("masks", "pdf", "out") == "out/figures/masks.pdf"


def test_layout_imports_neither_torch_nor_pandas():
    """Snakemake imports it while it builds the DAG."""
    code = "import sys, cmgems.layout; assert not {'torch', 'pandas', 'numpy'} & set(sys.modules), sys.modules.keys()"
    subprocess.run([sys.executable, "-c", code], check=True, env={"PYTHONPATH": str(REPO / "workflow")})
