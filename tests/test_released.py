"""config/released.yaml: the released GeneMask / CM-GEMS code's behaviour, layered on the paper config
(`--configfile config/config.yaml config/released.yaml`). It plans on a fresh clone, and it changes
exactly the commands it should."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
import yaml

from cmgems import kmers, layout, masking
from cmgems.layout import Model
from test_workflow import REPO, job_counts, snakemake

CONFIGS = [str(REPO / "config" / "config.yaml"), str(REPO / "config" / "released.yaml")]
RUNS = [Model("hg38", "dnabert6", "cm_gems", 10000), Model("hg38", "logo", "genemask", 10000)]


def test_released_preset_plans_on_a_fresh_clone(tmp_path):
    result = snakemake("-n", "--quiet", "rules", "--configfile", *CONFIGS, "-d", str(tmp_path), timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    counts = job_counts(result.stdout + result.stderr)
    assert counts["corpus_chunk"] == 25  # chr1-22, X, Y and M
    assert counts["pmi_count"] == 3  # chr1-3
    assert counts["pretrain"] == 8 and counts["report"] == 1


def planned_commands(tmp_path, *configs: str) -> dict[str, str]:
    """{job: shell command} of a dry run towards two pretraining runs; job = the rule and its log file."""
    result = snakemake("-n", "-p", *(run.summary() for run in RUNS), "--configfile", *configs,
                       "-d", str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    commands = {}
    for line in result.stdout.splitlines():
        if line.startswith("Shell command: "):
            command = line.removeprefix("Shell command: ")
            commands[re.search(r"> (logs/\S+)", command).group(1)] = command
    return commands


def options(command: str, *names: str) -> dict[str, str]:
    words = shlex.split(command)
    return {name: words[words.index(name) + 1] for name in names if name in words}


def test_released_preset_changes_the_corpus_pmi_and_pretraining_commands(tmp_path):
    paper = planned_commands(tmp_path / "paper", CONFIGS[0])
    released = planned_commands(tmp_path / "released", *CONFIGS)
    assert set(released) - set(paper) == {"logs/hg38/corpus_chunk/chrM.log"}
    assert set(paper) - set(released) == {f"logs/hg38/pmi_count/chr{i}.log" for i in [*range(4, 23), "X", "Y"]}
    changed = {job for job in paper.keys() & released.keys() if paper[job] != released[job]}
    chunks = {f"logs/hg38/corpus_chunk/chr{i}.log" for i in [*range(1, 23), "X", "Y"]}
    assert changed == chunks | {"logs/hg38/genome_contigs.log", "logs/hg38/corpus_finalize.log",
                                "logs/hg38/pmi_merge.log", "logs/hg38/pmi_score.log",
                                *(f"logs/hg38/pretrain/{run.model}/{run.masking}/{run.steps}.log" for run in RUNS)}

    contigs = shlex.split(released["logs/hg38/genome_contigs.log"])
    assert "--splice-n" in contigs and "chrM" in contigs
    flags = ("--max-tokens", "--min-tokens", "--random-max-tokens", "--full-length-prob")
    assert options(released["logs/hg38/corpus_chunk/chrM.log"], *flags) == dict(zip(flags, ["506", "1", "505", "0.5"]))
    assert options(paper["logs/hg38/corpus_chunk/chr1.log"], *flags) == dict(zip(flags, ["510", "5", "0", "0.5"]))
    merged = shlex.split(released["logs/hg38/pmi_merge.log"])
    counts = [layout.of_genome("hg38", layout.PMI_COUNTS, contig=f"chr{i}") for i in (1, 2, 3)]
    assert [w for w in merged if w.startswith(str(Path(counts[0]).parent))] == counts
    assert options(released["logs/hg38/pmi_score.log"], "--definition")["--definition"] == "genemask"
    assert options(paper["logs/hg38/pmi_score.log"], "--definition")["--definition"] == "levine"

    recipe = ("--eval-every", "--eval-batch-means", "--eval-sequences", "--sequences-per-step", "--lr")
    for run, masking_options in (("dnabert6/cm_gems/10000", {"threshold": 1.0, "reproduce_reference_bugs": True}),
                                 ("logo/genemask/10000", {"reproduce_reference_bugs": True,
                                                          "special_positions_best": True})):
        ours, theirs = paper[f"logs/hg38/pretrain/{run}.log"], released[f"logs/hg38/pretrain/{run}.log"]
        assert json.loads(options(theirs, "--masking-options")["--masking-options"]) == masking_options
        assert options(theirs, *recipe) == {"--eval-every": "500", "--eval-batch-means": "6", "--eval-sequences": "2000",
                                            "--sequences-per-step": "250", "--lr": "0.0008"}
        assert options(ours, *recipe)["--eval-every"] == "0" and "--eval-batch-means" not in shlex.split(ours)


@pytest.mark.parametrize("name", masking.names())
def test_released_masking_options_build(name):
    """Every strategy builds with the merged options; each PMI-guided one as released."""
    preset = yaml.safe_load((REPO / "config" / "released.yaml").read_text())["pretrain"]["masking_options"]
    paper = yaml.safe_load((REPO / "config" / "config.yaml").read_text())["pretrain"]["masking_options"]
    ranks = np.arange(kmers.vocab_size(6)) if masking.needs_ranks(name) else None
    strategy = masking.build(name, k=6, token_ranks=ranks, options={**paper.get(name, {}), **preset.get(name, {})})
    assert strategy.options.get("reproduce_reference_bugs") is (True if masking.needs_ranks(name) else None)
