"""Results are never stale: after a finished demo, a changed evaluation setting plans exactly the packs
it changes (and the report), and a deleted run record, model or table is made again. Dry runs on a
copy of the shared demo run (tests/conftest.py's local_demo)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cmgems import layout
from cmgems.layout import GUE, Model, Run

REPO = Path(__file__).resolve().parents[1]
MODELS = [Model("demo", "tiny", masking, 300) for masking in ("random", "genemask", "cm_gems")]
pytestmark = [pytest.mark.slow, pytest.mark.workflow]


@pytest.fixture(scope="module")
def finished(local_demo, tmp_path_factory) -> Path:
    """A copy of the finished demo's working directory (times and Snakemake's metadata kept)."""
    copy = tmp_path_factory.mktemp("stale") / "demo"
    shutil.copytree(local_demo, copy, symlinks=True)
    return copy


def planned(workdir: Path, *configs: dict) -> dict[str, int]:
    """Rule -> jobs of `snakemake -n` in `workdir` with the demo config and `configs` layered on it."""
    files = []
    for i, extra in enumerate(configs):
        files.append(workdir / f"layer{i}.yaml")
        files[-1].write_text(yaml.safe_dump(extra))
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir), "-n",
           "--configfile", str(REPO / "config" / "demo.yaml"), *map(str, files)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    if "Nothing to be done" in output:
        return {}
    table = output.split("Job stats:", 1)[1]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M) if m.group(1) != "total"}


def test_a_finished_demo_has_nothing_to_do(finished):
    assert planned(finished) == {}


# each evaluation setting, and the packs (x 3 models) that change with it
SETTINGS = {
    "gue.lr": ({"gue": {"lr": 2e-3}}, {"finetune_gue_other": 3}),
    "gue.select_by": ({"gue": {"select_by": "mcc"}}, {"finetune_gue_other": 3}),
    "gue task epochs": ({"gue": {"tasks": {"demo_tata": {"path": "demo_tata", "max_length": 72, "epochs": 4}}}},
                        {"finetune_gue_other": 3}),
    "fewshot.small.epochs": ({"fewshot": {"small": {"lr": 1e-3, "epochs": 11, "batch_size": 5}}},
                             {"finetune_fewshot_demo_prom": 3, "finetune_fewshot_demo_splice3": 3}),
    "fewshot.hidden_dropout": ({"fewshot": {"hidden_dropout": 0.2}},
                               {"finetune_fewshot_demo_prom": 3, "finetune_fewshot_demo_splice3": 3}),
    "gue.batch_size": ({"gue": {"batch_size": 16}}, {"finetune_gue_other": 3}),
    "gue.warmup_steps": ({"gue": {"warmup_steps": 5}}, {"finetune_gue_other": 3}),
    "gue.eval_steps": ({"gue": {"eval_steps": 30}}, {"finetune_gue_other": 3}),
    "fewshot.large.lr": ({"fewshot": {"large": {"lr": 1e-4, "epochs": 5, "batch_size": 15}}},
                         {"finetune_fewshot_demo_prom": 3, "finetune_fewshot_demo_splice3": 3}),
    "fewshot.warmup_ratio": ({"fewshot": {"warmup_ratio": 0.2}},
                             {"finetune_fewshot_demo_prom": 3, "finetune_fewshot_demo_splice3": 3}),
    "fewshot.weight_decay": ({"fewshot": {"weight_decay": 0.0}},
                             {"finetune_fewshot_demo_prom": 3, "finetune_fewshot_demo_splice3": 3}),
}


@pytest.mark.parametrize("name", SETTINGS)
def test_a_changed_evaluation_setting_plans_exactly_its_packs(finished, name):
    layer, packs = SETTINGS[name]
    assert planned(finished, layer) == {**packs, "report_settings": 1, "report": 1, "all": 1}


DELETED = {
    "record": (lambda: Run(GUE, MODELS[1], "demo_tata", 42).folder() + "/" + layout.RECORD, {"finetune_gue_other": 1}),
    "model": (lambda: MODELS[1].checkpoint(),
              {"pretrain": 1, "finetune_gue_other": 1, "finetune_fewshot_demo_prom": 1, "finetune_fewshot_demo_splice3": 1}),
    "table": (lambda: layout.table("gue"), {}),
    "declared settings": (lambda: layout.REPORT_SETTINGS, {"report_settings": 1}),
}


@pytest.mark.parametrize("name", DELETED)
def test_a_deleted_record_model_or_table_is_made_again(finished, tmp_path, name):
    path, jobs = DELETED[name]
    target = finished / path()
    moved = tmp_path / "moved"
    target.rename(moved)
    try:
        assert planned(finished) == {**jobs, "report": 1, "all": 1}
    finally:
        moved.rename(target)


def test_the_report_refuses_a_record_made_with_other_settings(finished, tmp_path):
    """A record whose settings are not the config's (a run recomputed by hand, results copied from
    another config, --rerun-triggers mtime) stops the report, naming the record and the setting."""
    workdir = tmp_path / "demo"
    shutil.copytree(finished, workdir, symlinks=True)
    record = workdir / Run(GUE, MODELS[1], "demo_tata", 42).folder() / layout.RECORD
    doc = json.loads(record.read_text())
    doc["settings"]["lr"] = 2e-3
    record.write_text(json.dumps(doc))
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir), "--cores", "1",
           "--configfile", str(REPO / "config" / "demo.yaml"), "--forcerun", "report", "--", layout.table("gue")]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert result.returncode != 0
    log = (workdir / "logs" / "report.log").read_text()
    assert f"{Path(record).relative_to(workdir)}: lr: recorded 0.002, declared 0.001" in log, log[-2000:]
    assert not (workdir / layout.table("gue")).exists()
