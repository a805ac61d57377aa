"""The Snakemake workflow: schema validation, lint, formatting, conda envs, the paper DAG, the demo."""

from __future__ import annotations

import ast
import hashlib
import json
import re
import shlex
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml

from cmgems import layout
from cmgems.download import git_blob_sha1
from cmgems.layout import FEWSHOT, GUE, Model, Run
from cmgems.labelled import read_labelled

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def snakemake(*args: str, cwd: Path = REPO, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run([*SNAKEMAKE, "-s", str(REPO / "Snakefile"), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


def job_counts(output: str) -> dict[str, int]:
    """The 'Job stats' table of a dry run, as rule -> count."""
    table = output.split("Job stats:", 1)[1]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}


LOCAL_RULES = {"download_genome", "tokenizer", "gue_missing", "download_gue", "fetch_fewshot", "fewshot_sample",
               "fetch_model", "report_settings", "all"}


def pack_jobs(counts: dict[str, int], prefix: str) -> dict[str, int]:
    return {rule: n for rule, n in counts.items() if rule.startswith(prefix)}


def test_paper_dry_run_schedules_the_whole_grid(tmp_path):
    """On a fresh clone (no GUE, no few-shot files) the paper config plans everything: the few-shot
    files are fetched, and each absent GUE file is a job that will say what to download. Fine-tuning
    and baselines run in packs: at most 120 GPU jobs, as the plan's summary line says."""
    result = snakemake("-n", "--quiet", "rules", "--configfile", str(REPO / "config/config.yaml"),
                       "-d", str(tmp_path), timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    counts = job_counts(output)
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    pre = config["pretrain"]
    models = len(pre["models"]) * len(pre["masking"]) * len(pre["steps"])
    assert len(config["gue"]["tasks"]) == 27
    fewshot_runs = sum(len(set(map(int, d["pooled"])) & set(config["fewshot"]["shots"]))
                       for d in config["fewshot"]["datasets"].values()) * len(config["fewshot"]["seeds"])
    assert fewshot_runs == (5 + 5 + 5 + 5 + 2) * 10 == 220
    needed = {f for d in config["fewshot"]["datasets"].values() for f in [d["test"], *d["pooled"].values()]}
    assert counts["fetch_fewshot"] == len(needed) == 4 * 6 + 3
    assert counts["gue_missing"] == 27 * 3
    assert counts["download_genome"] == 1
    assert counts["corpus_chunk"] == counts["pmi_count"] == 24  # chr1-22, X, Y
    assert counts["pretrain"] == models == 2 * 6 * 2  # dnabert6, logo x six maskings x 1K, 10K
    groups = ["EMP", "prom_core", "prom_300", "splice", "mouse", "tf"]  # one pack each (gue.pack_runs 10)
    datasets = ["Prom_core", "Prom_300", "Cohn_enh", "Splice_40", "silencer"]  # one pack each (fewshot.pack_runs 50)
    assert pack_jobs(counts, "finetune_gue_") == {f"finetune_gue_{g}": models for g in groups}
    assert pack_jobs(counts, "finetune_fewshot_") == {f"finetune_fewshot_{d}": models for d in datasets}
    assert pack_jobs(counts, "baseline_gue_") == {f"baseline_gue_{g}": 1 for g in groups}
    assert pack_jobs(counts, "baseline_fewshot_") == {f"baseline_fewshot_{d}": 1 for d in datasets}
    assert counts["fewshot_sample"] == fewshot_runs
    assert counts["report"] == 1
    summary = re.search(r"the whole grid is (\d+) GPU jobs \(pretraining (\d+), GUE packs (\d+), few-shot packs (\d+)\) "
                        r"and (\d+) CPU jobs", output)
    gpu, pretraining, gue, fewshot, cpu = map(int, summary.groups())
    assert (gpu, pretraining, gue, fewshot) == (288, 24, 144, 120) == (pretraining + gue + fewshot, models, 6 * models, 5 * models)
    assert gpu + cpu == sum(n for rule, n in counts.items() if rule not in LOCAL_RULES | {"total"})


@pytest.mark.parametrize("resources, processes", [
    ({"gpu": 8, "cpus_per_task": 32}, "CMGEMS_NODES=1 CMGEMS_PROCS_PER_NODE=8 CMGEMS_CPUS_PER_TASK=32"),
    ({"gpu": 0, "nodes": 2, "gres": "gpu:4", "cpus_per_task": 16}, "CMGEMS_NODES=2 CMGEMS_PROCS_PER_NODE=4 CMGEMS_CPUS_PER_TASK=16"),
])
def test_the_paper_step_plans_on_any_gpu_count(tmp_path, resources, processes):
    """250 sequences per step over 8 GPUs, or 2 nodes x 4 (31 or 32 each): planned, not refused; the
    GPU jobs' env is the CUDA build."""
    layered = tmp_path / "gpus.yaml"
    layered.write_text(yaml.safe_dump({"pretrain": {"resources": resources}}))
    target = Model("hg38", "dnabert6", "genemask", 10000).folder() + "/summary.json"
    result = snakemake("-n", "-p", "--configfile", str(REPO / "config/config.yaml"), str(layered), "-d", str(tmp_path), target)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert processes in output and "CMGEMS_SHUTDOWN_TIMEOUT=240" in output
    assert "its GPU jobs' conda env (--use-conda) is envs/torch-cuda.yaml" in output


def test_packs_split_at_pack_runs_and_request_the_runtime_of_their_runs(tmp_path):
    config = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
    config["gue"]["pack_runs"] = 1
    config["fewshot"]["pack_runs"] = 3  # 4 runs per dataset: packs of 2 and 2
    cfg = tmp_path / "packs.yaml"
    cfg.write_text(yaml.safe_dump(config))
    (tmp_path / "resources").symlink_to(REPO / "resources")
    result = snakemake("-n", "--configfile", str(cfg), "-d", str(tmp_path))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    output = result.stdout + result.stderr
    counts = job_counts(output)
    assert pack_jobs(counts, "finetune_gue_") == {"finetune_gue_other_1": 3, "finetune_gue_other_2": 3}
    assert pack_jobs(counts, "finetune_fewshot_") == {f"finetune_fewshot_{d}_{i}": 3 for d in ("demo_prom", "demo_splice3") for i in (1, 2)}
    assert pack_jobs(counts, "baseline_fewshot_") == {f"baseline_fewshot_{d}_{i}": 1 for d in ("demo_prom", "demo_splice3") for i in (1, 2)}
    runtimes = dict(re.findall(r"^rule (\w+):\n(?:\s+.*\n)*?\s+resources: .*?runtime=(\d+)", output, re.M))
    assert runtimes["finetune_fewshot_demo_prom_1"] == "40" and runtimes["finetune_gue_other_2"] == "20"  # 20 per run
    assert "the whole grid is 0 GPU jobs (none) and 36 CPU jobs (pretraining 3, GUE packs 6, few-shot packs 12, " \
           "baseline packs 6, data preparation 8, report 1)" in output


def edit(path: list, value=None, delete: bool = False):
    """A config edit: set (or delete) the key at `path`."""
    def apply(config):
        node = config
        for key in path[:-1]:
            node = node[key]
        if delete:
            del node[path[-1]]
        else:
            node[path[-1]] = value
    return apply


def duplicate(after: str, line: str):
    """A config edit in the text: `line` inserted after the line `after` (a key given twice)."""
    return lambda config: yaml.safe_dump(config).replace(f"{after}\n", f"{after}\n{line}\n", 1)


CONFIG_ERRORS = {  # id: (edit of config/demo.yaml, expected message)
    "unknown-top-level-key": (edit(["modles"], ["tiny"]), "unknown key 'modles'; the top level takes: baseline,"),
    "unknown-key": (edit(["corpus", "max_tokenz"], 5), "unknown key 'corpus.max_tokenz'; corpus takes:"),
    "wrong-type": (edit(["pretrain", "steps"], "many"), "pretrain.steps: 'many' is not of type 'array'"),
    "unknown-strategy": (edit(["pretrain", "masking"], ["random", "span"]), "pretrain.masking[1]: 'span' is not one of"),
    "duplicate-top-level-key": (duplicate("k: 6", "k: 5"), "bad.yaml, line 73: key 'k' is given twice in the same mapping (first on line 72)"),
    "duplicate-key": (duplicate("corpus:", "  max_tokens: 100"), "key 'max_tokens' is given twice in the same mapping"),
    # genomes: url + md5 or path
    "path-and-md5": (edit(["genomes", "demo", "md5"], "0" * 32), "genomes.demo: md5 without url"),
    "path-and-url": (edit(["genomes", "demo", "url"], "https://example.org/g.fa.gz"), "genomes.demo: both url and path are given"),
    "url-without-md5": (edit(["genomes", "demo"], {"url": "https://example.org/g.fa.gz"}), "genomes.demo: url without md5"),
    "no-fasta": (edit(["genomes", "demo", "path"], delete=True), "genomes.demo: give path (a local FASTA), url with md5, or variant_of (another genome)"),
    "variant-of-unknown": (edit(["genomes", "v"], {"variant_of": "hg19"}),
                           "genomes.v.variant_of: 'hg19' is not another genome of genomes (demo, v)"),
    "variant-of-itself": (edit(["genomes", "v"], {"variant_of": "v"}), "genomes.v.variant_of: 'v' is not another genome"),
    "variant-of-variant": (lambda c: c["genomes"].update({"v": {"variant_of": "demo"}, "w": {"variant_of": "v"}}),
                           "genomes.w.variant_of: 'v' is itself a variant; name the genome it varies"),
    "override-bad-value": (edit(["genomes", "demo", "overrides"], {"pmi": {"definition": "pmi"}}),
                           "genomes.demo.overrides: pmi.definition: 'pmi' is not one of ['npmi', 'levine', 'genemask']"),
    "override-unknown-section": (edit(["genomes", "demo", "overrides"], {"fewshot": {"seeds": [1]}}),
                                 "unknown key 'genomes.demo.overrides.fewshot'"),
    "override-grid-key": (edit(["genomes", "demo", "overrides"], {"pretrain": {"steps": [10]}}),
                          "unknown key 'genomes.demo.overrides.pretrain.steps'"),
    "override-semantics": (edit(["genomes", "demo", "overrides"], {"corpus": {"max_tokens": 600}}),
                           r"genomes.demo.overrides: corpus.max_tokens (600) + [CLS] and [SEP] exceeds max_positions"),
    "contig-name": (edit(["genomes", "demo", "contigs"], ["chr20", ".."]), "genomes.demo.contigs[1]: '..' does not match"),
    # masking options, per strategy
    "masking-option-name": (edit(["pretrain", "masking_options", "cm_gems", "treshold"], 1.0),
                            "unknown key 'pretrain.masking_options.cm_gems.treshold'; pretrain.masking_options.cm_gems takes:"),
    "masking-option-strategy": (edit(["pretrain", "masking_options", "span"], {}), "unknown key 'pretrain.masking_options.span'"),
    "masking-option-type": (edit(["pretrain", "masking_options", "genemask"], {"reproduce_reference_bugs": "yes"}),
                            "pretrain.masking_options.genemask.reproduce_reference_bugs: 'yes' is not of type 'boolean'"),
    "masking-option-probability": (edit(["pretrain", "masking_options", "random"], {"mlm_probability": 1.5}),
                                   "pretrain.masking_options.random.mlm_probability: 1.5 is greater than the maximum of 1"),
    "masking-option-negative": (edit(["pretrain", "masking_options", "cm_gems", "threshold"], -1.0),
                                "pretrain.masking_options.cm_gems.threshold: -1.0 is less than the minimum of 0"),
    "masking-option-nan": (edit(["pretrain", "masking_options", "cm_gems", "threshold"], float("nan")),
                           "pretrain.masking_options.cm_gems.threshold: nan is not a finite number"),
    # lengths and positions
    "max-tokens-over-positions": (edit(["corpus", "max_tokens"], 127), "corpus.max_tokens (127) + [CLS] and [SEP] exceeds max_positions (128)"),
    "min-tokens-over-max": (edit(["corpus", "min_tokens"], 127), "corpus.min_tokens (127) exceeds corpus.max_tokens (126)"),
    "random-max-tokens-over-max": (edit(["corpus", "random_max_tokens"], 127),
                                   "corpus.random_max_tokens (127) is not between corpus.min_tokens (5) and corpus.max_tokens (126)"),
    "random-max-tokens-under-min": (edit(["corpus", "random_max_tokens"], 4),
                                    "corpus.random_max_tokens (4) is not between corpus.min_tokens (5) and corpus.max_tokens (126)"),
    "gue-max-length": (edit(["gue", "tasks", "demo_tata", "max_length"], 129), "gue.tasks.demo_tata.max_length (129) exceeds max_positions (128)"),
    "fewshot-max-length": (edit(["fewshot", "datasets", "demo_splice3", "max_length"], 200),
                           "fewshot.datasets.demo_splice3.max_length (200) exceeds max_positions (128)"),
    # seeds, learning rates, milestones, the pretraining layout
    "corpus-seed": (edit(["corpus", "seed"], -1), "corpus.seed: -1 is less than the minimum of 0"),
    "pretrain-seed": (edit(["pretrain", "seed"], -1), "pretrain.seed: -1 is less than the minimum of 0"),
    "gue-seed": (edit(["gue", "seeds"], [42, -1]), "gue.seeds[1]: -1 is less than the minimum of 0"),
    "fewshot-lr": (edit(["fewshot", "large", "lr"], 0), "fewshot.large.lr: 0 is less than or equal to the minimum of 0"),
    "pretrain-lr": (edit(["pretrain", "recipe", "lr"], -1e-4), "pretrain.recipe.lr: -0.0001 is less than or equal to the minimum of 0"),
    "milestone": (edit(["pretrain", "recipe", "milestones"], [100, 300]), "pretrain.recipe.milestones: 300 is not below the longest run"),
    "fewer-sequences-than-processes": (edit(["pretrain", "processes_per_node"], 33),
                                       "pretrain.recipe.sequences_per_step (32) is fewer than the job's 33 training processes"),
    "gpu-and-gres": (lambda c: c["pretrain"]["resources"].update(gpu=1, gres="gpu:4", cpus_per_task=16),
                     "pretrain.resources.gpu (1) and pretrain.resources.gres ('gpu:4') both ask for GPUs"),
    "gres-not-gpu": (edit(["gue", "resources", "gres"], "shard:2"), "gue.resources.gres: 'shard:2' is not a GPU request gpu:K"),
    "gpu-with-nodes": (lambda c: c["pretrain"]["resources"].update(gpu=2, nodes=2, cpus_per_task=8),
                       "pretrain.resources: gpu (2) with nodes (2)"),
    "cpus-per-gpu": (lambda c: c["pretrain"]["resources"].update(gpu=8, cpus_per_task=8),
                     "pretrain.resources.cpus_per_task (8) gives each of the 8 GPU processes per node fewer than 4 CPUs"),
    "init-from-missing": (edit(["pretrain", "init_from"], "no/such/checkpoint"), "no/such/checkpoint"),
    # PMI contigs
    "pmi-contig-name": (edit(["pmi", "contigs"], ["chr20", "../x"]), "pmi.contigs[1]: '../x' does not match"),
    "pmi-contig-absent": (edit(["pmi", "contigs"], ["chr20", "chr1"]), "pmi.contigs: 'chr1' is not among the contigs of genome 'demo'"),
    # GUE and few-shot
    "gue-task-absolute": (edit(["gue", "tasks", "demo_tata", "path"], "/etc/x"), "gue.tasks.demo_tata.path: '/etc/x' does not match"),
    "gue-task-parent": (edit(["gue", "tasks", "demo_tata", "path"], "a/../../x"), "gue.tasks.demo_tata.path: 'a/../../x' does not match"),
    "gue-path-braces": (edit(["gue", "path"], "GUE/{x}"), "gue.path: 'GUE/{x}' does not match"),
    "gue-md5": (lambda c: c["gue"].update(url="https://example.org/GUE.zip", md5="xyz"), "gue.md5: 'xyz' does not match"),
    "gue-url-scheme": (lambda c: c["gue"].update(url="sftp://example.org/GUE.zip", md5="0" * 32),
                       "gue.url: 'sftp://example.org/GUE.zip' does not match"),
    "pool-and-pooled": (edit(["fewshot", "datasets", "demo_prom", "pooled"], {10: "x.csv"}),
                        "fewshot.datasets.demo_prom: both pool and pooled are given"),
    "no-pool": (edit(["fewshot", "datasets", "demo_prom", "pool"], delete=True), "fewshot.datasets.demo_prom: give pool"),
    # paths confined to their folder, and never empty
    "fewshot-source-file-parent": (edit(["fewshot", "sources"], {"s": {"url": "https://example.org/d", "into": "fetched",
                                                                        "files": {"../../../x.tsv": "0" * 40}}}),
                                   "fewshot.sources.s.files: '../../../x.tsv' does not match"),
    "fewshot-source-file-absolute": (edit(["fewshot", "sources"], {"s": {"url": "https://example.org/d", "into": "fetched",
                                                                          "files": {"/tmp/x.tsv": "0" * 40}}}),
                                     "fewshot.sources.s.files: '/tmp/x.tsv' does not match"),
    "fewshot-source-file-braces": (edit(["fewshot", "sources"], {"s": {"url": "https://example.org/d", "into": "fetched",
                                                                        "files": {"a/{x}.tsv": "0" * 40}}}),
                                   "fewshot.sources.s.files: 'a/{x}.tsv' does not match"),
    "fewshot-source-into-empty": (edit(["fewshot", "sources"], {"s": {"url": "https://example.org/d", "into": "",
                                                                       "files": {"x.tsv": "0" * 40}}}),
                                  "fewshot.sources.s.into: '' should be non-empty"),
    "external-model-path-empty": (edit(["pretrained_models"], {"ext": {"path": ""}}), "pretrained_models.ext.path: '' should be non-empty"),
    "init-from-empty": (edit(["pretrain", "init_from"], ""), "pretrain.init_from: '' should be non-empty"),
    "published-empty": (edit(["report", "published"], ""), "report.published: '' should be non-empty"),
    "fewshot-test-empty": (edit(["fewshot", "datasets", "demo_prom", "test"], ""), "fewshot.datasets.demo_prom.test: '' should be non-empty"),
    "fewshot-test-braces": (edit(["fewshot", "datasets", "demo_prom", "test"], "a{b}.csv"), "fewshot.datasets.demo_prom.test: 'a{b}.csv' does not match"),
    "published-braces": (edit(["report", "published"], "pub/{x}"), "report.published: 'pub/{x}' does not match"),
    # grids that would silently drop runs, lists meant to be non-empty, values unique or bounded
    "pooled-shots-not-in-grid": (edit(["fewshot", "datasets", "demo_prom"], {"pooled": {20: "x.tsv"}, "test": "t.tsv", "max_length": 72}),
                                 "fewshot.datasets.demo_prom.pooled: [20] not among fewshot.shots ([10, 50]), so no run would use them"),
    "dataset-shots-not-in-grid": (edit(["fewshot", "datasets", "demo_prom", "shots"], [10, 20]),
                                  "fewshot.datasets.demo_prom.shots: [20] not among fewshot.shots ([10, 50])"),
    "dataset-shots-without-file": (edit(["fewshot", "datasets", "demo_prom"], {"pooled": {10: "x.tsv"}, "shots": [10, 50], "test": "t.tsv",
                                                                              "max_length": 72}),
                                   "fewshot.datasets.demo_prom.shots: [50] has no file in fewshot.datasets.demo_prom.pooled"),
    "dataset-shots-empty": (edit(["fewshot", "datasets", "demo_prom", "shots"], []), "fewshot.datasets.demo_prom.shots: [] should be non-empty"),
    "pooled-empty": (edit(["fewshot", "datasets", "demo_prom"], {"pooled": {}, "test": "t.tsv", "max_length": 72}),
                     "fewshot.datasets.demo_prom.pooled: {} should be non-empty"),
    "pooled-shots-not-a-number": (edit(["fewshot", "datasets", "demo_prom"], {"pooled": {"ten": "x.tsv"}, "test": "t.tsv", "max_length": 72}),
                                  "fewshot.datasets.demo_prom.pooled: key 'ten' is not a number of shots"),
    "pooled-shots-fraction": (edit(["fewshot", "datasets", "demo_prom"], {"pooled": {10.5: "x.tsv"}, "test": "t.tsv", "max_length": 72}),
                              "fewshot.datasets.demo_prom.pooled: key 10.5 is not a number of shots"),
    "pooled-shots-twice": (edit(["fewshot", "datasets", "demo_prom"], {"pooled": {10: "x.tsv", "10": "y.tsv"}, "test": "t.tsv", "max_length": 72}),
                           "fewshot.datasets.demo_prom.pooled: a number of shots is given twice ([10, 10])"),
    "pmi-contigs-empty": (edit(["pmi", "contigs"], []), "pmi.contigs: [] should be non-empty"),
    "pmi-contigs-twice": (edit(["pmi", "contigs"], ["chr20", "chr20"]), "pmi.contigs: ['chr20', 'chr20'] has non-unique elements"),
    "gue-seeds-twice": (edit(["gue", "seeds"], [42, 42]), "gue.seeds: [42, 42] has non-unique elements"),
    "fewshot-seeds-twice": (edit(["fewshot", "seeds"], [0, 0]), "fewshot.seeds: [0, 0] has non-unique elements"),
    "gue-seeds-empty": (edit(["gue", "seeds"], []), "gue.seeds: [] should be non-empty"),
    "gue-seed-too-large": (edit(["gue", "seeds"], [2**63]), "gue.seeds[0]: 9223372036854775808 is greater than the maximum of 9223372036854775807"),
    "pretrain-seed-too-large": (edit(["pretrain", "seed"], 2**64), "pretrain.seed: 18446744073709551616 is greater than the maximum"),
    "corpus-seed-too-large": (edit(["corpus", "seed"], 2**63), "corpus.seed: 9223372036854775808 is greater than the maximum"),
    "fewshot-seed-too-large": (edit(["fewshot", "seeds"], [0, 2**63]), "fewshot.seeds[1]: 9223372036854775808 is greater than the maximum"),
    "betas-above-1": (edit(["pretrain", "recipe", "betas"], [0.9, 1.5]), "pretrain.recipe.betas[1]: 1.5 is greater than or equal to the maximum of 1"),
    "betas-1": (edit(["pretrain", "recipe", "betas"], [1.0, 0.98]), "pretrain.recipe.betas[0]: 1.0 is greater than or equal to the maximum of 1"),
    "betas-negative": (edit(["pretrain", "recipe", "betas"], [-0.1, 0.98]), "pretrain.recipe.betas[0]: -0.1 is less than the minimum of 0"),
    "milestones-twice": (edit(["pretrain", "recipe", "milestones"], [100, 100]), "pretrain.recipe.milestones: [100, 100] has non-unique elements"),
}


@pytest.mark.parametrize("name", CONFIG_ERRORS)
def test_config_errors_fail_at_once_naming_the_key(tmp_path, name):
    """Each mistake stops `snakemake -n` while the DAG is built, with one message naming the key (no
    schema dump), and writes nothing (a missing input, found by the DAG, leaves Snakemake's own
    empty .snakemake folders)."""
    edit_config, message = CONFIG_ERRORS[name]
    config = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
    text = edit_config(config)
    bad = tmp_path / "bad.yaml"
    bad.write_text(text or yaml.safe_dump(config))
    (tmp_path / "resources").symlink_to(REPO / "resources")
    result = snakemake("-n", "--configfile", str(bad), "-d", str(tmp_path))
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert message in output, output[-3000:]
    assert "Failed validating" not in output and "$schema" not in output
    assert sorted(p.name for p in tmp_path.iterdir()) in (["bad.yaml", "resources"], [".snakemake", "bad.yaml", "resources"])
    assert not [p for p in tmp_path.glob(".snakemake/**/*") if not p.is_dir()]  # at most Snakemake's empty folders


LINKED_OUTPUTS = {  # id: (the link, relative to the working directory; whether it points at a folder)
    "results-subfolder": ("results/demo", True),
    "run-folder": ("results/demo/models/tiny/random/300", True),
    "benchmark-file": ("benchmarks/out/demo/genome_contigs.tsv", False),
    "log-file": ("logs/demo/genome_contigs.log", False),
    "pack-cache-entry": (".cmgems/packs/results", True),
    "fetched-file": ("fetched/x.tsv", False),
}


@pytest.mark.parametrize("name", LINKED_OUTPUTS)
def test_a_linked_output_is_refused_before_anything_is_written(tmp_path, name):
    """A symbolic link where the plan writes or deletes (below results/, logs/, benchmarks/out/,
    .cmgems/packs/, or a downloaded file) stops `snakemake -n` naming the link and its target; the
    target outside is untouched. `resources` (an input) and the output folders themselves may be links."""
    link, folder = LINKED_OUTPUTS[name]
    config = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
    config["fewshot"]["sources"] = {"s": {"url": "https://example.org/d", "into": "fetched", "files": {"x.tsv": "0" * 40}}}
    work, outside = tmp_path / "work", tmp_path / "outside"
    work.mkdir()
    (work / "resources").symlink_to(REPO / "resources")
    (work / "cfg.yaml").write_text(yaml.safe_dump(config))
    (outside / "target").mkdir(parents=True)
    (outside / "target" / "mine.txt").write_text("mine")
    target = outside / "target" if folder else outside / "target" / "mine.txt"
    (work / link).parent.mkdir(parents=True, exist_ok=True)
    (work / link).symlink_to(target)
    result = snakemake("-n", "--configfile", str(work / "cfg.yaml"), "-d", str(work))
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert f"{link}: is a symbolic link (to {target}), where the workflow writes or deletes outputs" in output, output[-3000:]
    assert sorted(p.name for p in outside.rglob("*")) == ["mine.txt", "target"]
    assert (outside / "target" / "mine.txt").read_text() == "mine"
    (work / link).unlink()
    shutil.rmtree(work / "logs", ignore_errors=True)  # the output folders themselves may be links
    (tmp_path / "elsewhere").mkdir()
    (work / "logs").symlink_to(tmp_path / "elsewhere")
    result = snakemake("-n", "--configfile", str(work / "cfg.yaml"), "-d", str(work))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def test_schema_masking_options_models_and_contigs_follow_the_code():
    """The schema's per-strategy masking options are those of `cmgems.masking` (each class's DEFAULTS,
    with resolve_options's rules), so a strategy or option added without its schema entry fails here;
    the strategy and model enums and the contig-name pattern are the code's too."""
    import jsonschema

    from cmgems import masking, models
    from cmgems.errors import CmgemsError
    from cmgems.genome import CONTIG_NAME

    def option(key, default):
        if isinstance(default, bool):
            return {"type": "boolean"}
        return {"type": "number", "minimum": 0, **({"maximum": 1} if key.endswith("probability") else {})}

    schema = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())
    pre = schema["properties"]["pretrain"]["properties"]
    options = pre["masking_options"]
    assert options["additionalProperties"] is False
    assert options["properties"] == {
        name: {"type": "object", "additionalProperties": False,
               "properties": {key: option(key, default) for key, default in cls.DEFAULTS.items()}}
        for name, cls in masking.STRATEGIES.items()
    }
    assert pre["masking"]["items"]["enum"] == masking.names()
    assert pre["models"]["items"]["enum"] == list(models.ARCHITECTURES)
    assert schema["definitions"]["contig"]["pattern"] == f"^{CONTIG_NAME.pattern}$"
    # the schema accepts exactly the values resolve_options accepts
    validator = jsonschema.Draft202012Validator(options)
    for name, cls in masking.STRATEGIES.items():
        for key in cls.DEFAULTS:
            for value in (True, False, -1, -0.5, 0, 0.25, 1, 1.5, 3, "1", None):
                try:
                    masking.check_options(name, {key: value})
                    accepted = True
                except CmgemsError:
                    accepted = False
                assert validator.is_valid({name: {key: value}}) == accepted, (name, key, value)


def test_schema_values_that_modules_hold_are_the_modules():
    """The schema's PMI definitions, fine-tuning selection criteria, URL schemes and checksum formats
    are those of cmgems.pmi, cmgems.finetune and cmgems.download (masking and models: above)."""
    from cmgems import download, finetune, pmi

    schema = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())
    assert schema["properties"]["pmi"]["properties"]["definition"]["enum"] == list(pmi.DEFINITIONS)
    assert schema["properties"]["gue"]["properties"]["select_by"]["enum"] == list(finetune.SELECT_BY)
    definitions = schema["definitions"]
    assert definitions["url"]["pattern"] == f"^({'|'.join(download.URL_SCHEMES)})://"
    for name, checksum in {"md5": download.MD5, "git_blob_sha1": download.GIT_BLOB_SHA1, "sha256": download.SHA256}.items():
        assert definitions[name]["pattern"] == f"^[0-9a-f]{{{checksum.digits}}}$"

    def patterns(node):
        if isinstance(node, dict):
            yield from [node["pattern"]] if isinstance(node.get("pattern"), str) else []
            for value in node.values():
                yield from patterns(value)
        elif isinstance(node, list):
            for value in node:
                yield from patterns(value)

    shared = {definitions[name]["pattern"] for name in ("url", "md5", "git_blob_sha1", "sha256")}
    copies = [p for p in patterns(schema) if p not in shared and ("://" in p or "[0-9a-f]{" in p)]
    assert not copies, f"URL or checksum patterns not taken from the definitions: {copies}"


def test_lint_has_no_findings():
    result = snakemake("--lint", "--configfile", str(REPO / "config/demo.yaml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Congratulations, your workflow is in a good condition!" in result.stdout + result.stderr


def test_snakefmt_check():
    files = [REPO / "Snakefile", *sorted((REPO / "workflow" / "rules").glob("*.smk"))]
    result = subprocess.run([shutil.which("snakefmt") or "snakefmt", "--check", *map(str, files)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


TORCH_ENVS = ("torch.yaml", "torch-cuda.yaml")  # torch_env(resources) in common.smk picks one


def rule_envs(block: str) -> set[Path]:
    """The conda env files a rule's text may use: its `conda:` path, or both torch envs for torch_env(...)."""
    rules = REPO / "workflow" / "rules"
    literal = re.search(r'conda:\s*\n\s*"([^"]+)"', block)
    if literal:
        return {(rules / literal.group(1)).resolve()}
    if re.search(r"conda:\s*\n\s*torch_env\(", block):
        return {(REPO / "envs" / name).resolve() for name in TORCH_ENVS}
    return set()


def test_conda_envs_are_pinned_and_referenced():
    envs = sorted((REPO / "envs").glob("*.yaml"))
    assert envs
    for env in envs:
        spec = yaml.safe_load(env.read_text())
        assert set(spec["channels"]) <= {"conda-forge", "bioconda", "nodefaults"}, env
        assert "conda-forge" in spec["channels"], env
        for dep in spec["dependencies"]:
            assert isinstance(dep, str) and re.fullmatch(r"[A-Za-z0-9_.-]+=[0-9][0-9.*]*", dep), (env, dep)
    used = set()
    for rules in (REPO / "workflow" / "rules").glob("*.smk"):
        for block in re.split(r"^\s*rule\b", rules.read_text(), flags=re.M)[1:]:
            for path in rule_envs(block):
                assert path.exists(), (rules, path)
                used.add(path)
    assert used == {e.resolve() for e in envs}


def test_torch_envs_differ_only_in_the_torch_build():
    """envs/torch-cuda.yaml (rules asking for GPUs) pins as envs/torch.yaml, with pytorch-gpu for pytorch-cpu:
    a CUDA build that conda cannot solve without a driver (or CONDA_OVERRIDE_CUDA), never a CPU one."""
    cpu, cuda = (yaml.safe_load((REPO / "envs" / name).read_text()) for name in TORCH_ENVS)
    swap = {"pytorch-cpu=2.13": "pytorch-gpu=2.13"}
    assert set(cuda["dependencies"]) <= {swap.get(d, d) for d in cpu["dependencies"]}
    assert "pytorch-cpu=2.13" in cpu["dependencies"] and "pytorch-gpu=2.13" in cuda["dependencies"]
    assert cpu["channels"] == cuda["channels"]


CONDA_TO_PYPI = {"pytorch": "torch", "pytorch-cpu": "torch", "pytorch-gpu": "torch", "matplotlib-base": "matplotlib"}


def test_envs_and_pyproject_pin_the_versions_the_tests_run_with():
    """Every conda pin (major.minor) equals the installed version the suite runs with, and pyproject
    allows exactly that minor version (its lower bound is one the suite passed on)."""
    import tomllib
    from importlib.metadata import version

    from packaging.requirements import Requirement
    from packaging.version import Version

    requirements = {Requirement(r).name.lower(): Requirement(r).specifier
                    for r in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]}
    drift = []
    for env in sorted((REPO / "envs").glob("*.yaml")):
        for dep in yaml.safe_load(env.read_text())["dependencies"]:
            name, pinned = dep.split("=")[:2]
            if name == "python":
                installed = f"{sys.version_info.major}.{sys.version_info.minor}"
            else:
                name = CONDA_TO_PYPI.get(name, name)
                installed = version(name)
                spec = requirements.get(name.lower())
                lower = [Version(s.version) for s in spec or () if s.operator == ">="]
                if spec is None or not spec.contains(installed) or lower != [Version(pinned)]:
                    drift.append(f"pyproject.toml: {name}{spec or ' missing'}; the tests run {installed}; {env.name} pins {pinned}")
            if Version(installed).release[:2] != Version(pinned).release[:2]:
                drift.append(f"{env.name}: {name}={pinned}, the tests run {installed}")
    assert not drift, "\n".join(drift)


# Stage dependencies that no module imports by name: what they are needed for.
INDIRECT = {"safetensors": "transformers' model files (use_safetensors=True)", "tensorboard": "torch.utils.tensorboard"}
IMPORT_TO_PYPI = {"sklearn": "scikit-learn", "yaml": "pyyaml"}


STAGE_COMMAND = re.compile(r"(?:python -m cmgems\.cli(?: --gpus \{params\.gpus\})?|bash \{params\.launch:q\}) (\w+)")  # pretraining: launch.sh


def module_file(name: str) -> Path:
    """The source of module `cmgems.<name>` (dotted below cmgems), a package's `__init__.py`."""
    path = REPO / "workflow" / "cmgems" / Path(*name.split("."))
    return path.with_suffix(".py") if path.with_suffix(".py").is_file() else path / "__init__.py"


def module_imports(name: str) -> tuple[set[str], set[str]]:
    """(imports run when module `cmgems.<name>` is imported, imports inside its functions), top-level names."""
    tree = ast.parse(module_file(name).read_text())
    at_import, inside = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        found = {n if n.startswith("cmgems.") else n.split(".")[0] for n in names}
        (at_import if node in tree.body else inside).update(found)
    return at_import, inside


def stage_imports(module: str, lazy: bool) -> set[str]:
    """The third-party packages (PyPI names) `cmgems.<module>` imports, following cmgems modules; with
    lazy, imports inside functions too."""
    seen, todo, packages = set(), [module], set()
    while todo:
        name = todo.pop()
        if name in seen or not module_file(name).is_file():
            continue
        seen.add(name)
        at_import, inside = module_imports(name)
        for imported in at_import | (inside if lazy else set()):
            if imported.startswith("cmgems."):
                todo.append(imported.removeprefix("cmgems."))
            elif imported not in sys.stdlib_module_names and imported != "cmgems":
                packages.add(IMPORT_TO_PYPI.get(imported, imported))
    return packages


def test_each_env_holds_what_its_stages_import():
    """A rule's conda env provides every package its stage imports on start (cmgems modules followed),
    and each env dependency is one its stages import (inside functions too) or one of INDIRECT."""
    from cmgems.cli import STAGES

    stages: dict[Path, set[str]] = {}
    for rules in (REPO / "workflow" / "rules").glob("*.smk"):
        for block in re.split(r"^\s*rule\b", rules.read_text(), flags=re.M)[1:]:
            stage = STAGE_COMMAND.search(block)
            for env in rule_envs(block) if stage else ():
                stages.setdefault(env, set()).add(STAGES[stage.group(1)][0].split(".")[1])
    assert {env.name for env in stages} == {"core.yaml", "torch.yaml", "torch-cuda.yaml"}
    for env, modules in stages.items():
        provided = {CONDA_TO_PYPI.get(d.split("=")[0], d.split("=")[0]) for d in yaml.safe_load(env.read_text())["dependencies"]}
        needed = set().union(*(stage_imports(m, lazy=False) for m in modules))
        assert needed <= provided, (env.name, sorted(modules), sorted(needed - provided))
        used = set().union(*(stage_imports(m, lazy=True) for m in modules)) | set(INDIRECT) | {"python"}
        assert provided <= used, (env.name, sorted(modules), f"not imported by its stages: {sorted(provided - used)}")


def test_paper_commands_follow_the_protocols(tmp_path, pack_specs):
    """GUE: DNABERT-2's per-task eval cadence, lowest dev loss, the checkpoint's dropout; few-shot:
    GeneMask's 0.1 dropout on a 1000-shot set fetched at the pinned commit."""
    model = Model("hg38", "logo", "cm_gems", 10000)
    wanted = [Run(GUE, model, "prom_300_all", 42), Run(GUE, model, "tf_0", 42), Run(FEWSHOT, model, "Cohn-enh", 3, 1000)]
    targets = [f"{run.folder()}/{layout.RECORD}" for run in wanted]
    result = snakemake("-n", "-p", *targets, "--configfile", str(REPO / "config/config.yaml"), "-d", str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    runs = pack_specs(result.stdout)
    gue = {run.task: runs[run.folder()] for run in wanted[:2]}
    assert (gue["prom_300_all"]["eval_steps"], gue["tf_0"]["eval_steps"]) == (400, 200)
    assert all(g["select_by"] == "loss" and "hidden_dropout" not in g and g["dev"] for g in gue.values())
    assert gue["tf_0"]["meta"] == {"genome": "hg38", "kind": "gue", "masking": "cm_gems", "model": "logo",
                                   "seed": 42, "steps": 10000, "task": "tf_0"}
    fewshot = runs[wanted[2].folder()]
    assert (fewshot["hidden_dropout"], fewshot["epochs"], fewshot["lr"]) == (0.1, 5, 5e-05)
    assert fewshot["train"] == layout.fewshot_set("Cohn-enh", 1000, 3) and fewshot["max_length"] == 502
    assert fewshot["cache"] == layout.cache(wanted[2].folder())
    assert sum(out.startswith(model.evaluations(FEWSHOT)) for out in runs) == 50  # Cohn-enh: 5 shots x 10 seeds
    assert sum(out.startswith(model.evaluations(GUE)) for out in runs) == 3 + 5  # the prom_300 and tf packs
    lines = result.stdout.splitlines()
    fetch = next(line for line in lines if "cmgems.cli fewshot fetch" in line and "Cohn-enh/1000" in line)
    assert ("https://raw.githubusercontent.com/roysoumya/GeneMask/c7614461323015ffcbbdb39fc4778e9255ddfcab/"
            "Data-B_fewshot-task-datasets/Cohn-enh/1000/train.tsv") in fetch
    assert "--sha1 03b19d0837686b82d9cf0d827e2b29c8d93c0b02 --out resources/fewshot/Cohn-enh/1000/train.tsv" in fetch
    assert any("fewshot pooled --file resources/fewshot/Cohn-enh/1000/train.tsv --run 3" in line for line in lines)


def served_dataset(folder: Path, commit: str) -> dict[str, str]:
    """GeneMask-like files (a quoted TSV of 2 pooled 10-shot runs, a test set) under folder/repo/COMMIT/data."""
    rng = np.random.default_rng(0)
    root = folder / "repo" / commit / "data" / "toy"
    (root / "10").mkdir(parents=True)
    rows = [(''.join(rng.choice(list("ACGT"), 30)), i % 2) for i in range(40)]
    (root / "10" / "train.tsv").write_text('"sequence"\t"label"\n' + "".join(f'"{s}"\t{y}\n' for s, y in rows))
    (root / "test.tsv").write_text("sequence\tlabel\n" + "".join(f"{s}\t{y}\n" for s, y in rows[:10]))
    return {f"toy/{p.relative_to(root)}": git_blob_sha1(p) for p in (root / "10" / "train.tsv", root / "test.tsv")}


def test_fewshot_files_are_fetched_through_the_dag(tmp_path, http_folder):
    """fetch_fewshot downloads the configured files (blob SHA-1 checked) before sampling; a dataset
    pointed at a local copy is read where it is."""
    folder, url = http_folder
    commit = "c7614461323015ffcbbdb39fc4778e9255ddfcab"
    files = served_dataset(folder, commit)
    local = tmp_path / "mine.tsv"
    shutil.copy(folder / "repo" / commit / "data" / "toy" / "10" / "train.tsv", local)
    config = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
    config["fewshot"]["datasets"] = {
        "toy": {"max_length": 32, "test": "fetched/toy/test.tsv", "pooled": {10: "fetched/toy/10/train.tsv"}},
        "mine": {"max_length": 32, "test": "fetched/toy/test.tsv", "pooled": {10: str(local)}},
    }
    config["fewshot"]["sources"] = {"toy": {"url": f"{url}/repo/{commit}/data", "into": "fetched", "files": files}}
    cfg = tmp_path / "served.yaml"
    cfg.write_text(yaml.safe_dump(config))
    targets = [layout.fewshot_set(d, 10, 1) for d in ("toy", "mine")]
    result = snakemake("--cores", "1", *targets, "--configfile", str(cfg), "-d", str(tmp_path))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    counts = job_counts(result.stdout + result.stderr)
    assert counts["fetch_fewshot"] == 1 and counts["fewshot_sample"] == 2  # mine.tsv is not fetched
    served = folder / "repo" / commit / "data" / "toy" / "10" / "train.tsv"
    assert (tmp_path / "fetched" / "toy" / "10" / "train.tsv").read_bytes() == served.read_bytes()
    toy, mine = (read_labelled(tmp_path / t) for t in targets)
    assert toy[0] == mine[0] and sorted(toy[1].tolist()) == [0] * 10 + [1] * 10  # run 1: rows 20-39
    assert toy[0] == [s for s in read_labelled(served)[0][20:]]


def test_a_variant_genome_runs_the_grid_beside_its_base_with_its_overrides(tmp_path, pack_specs):
    """A variant reads its base's FASTA and contigs, runs the whole grid under its own name with its
    overrides merged in, and leaves its base's commands as they were."""
    config = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
    config["genomes"]["demo_released"] = {"variant_of": "demo", "overrides": {
        "pmi": {"definition": "genemask"}, "pretrain": {"recipe": {"eval_every": 50}}, "gue": {"fp16": True}}}
    (tmp_path / "resources").symlink_to(REPO / "resources")
    cfg = tmp_path / "variant.yaml"
    cfg.write_text(yaml.safe_dump(config))
    result = snakemake("-n", "-p", "--configfile", str(cfg), "-d", str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    counts = job_counts(result.stdout)
    assert counts["genome_contigs"] == 2 and counts["corpus_chunk"] == 2 * 2 and counts["pretrain"] == 2 * 3
    commands = {log.group(1): line for line in result.stdout.splitlines()
                if line.startswith("Shell command: ") and (log := re.search(r"> (logs/\S+)", line))}
    assert "/demo.fa.gz" in commands["logs/demo_released/genome_contigs.log"]  # the base's FASTA
    assert "--definition genemask" in commands["logs/demo_released/pmi_score.log"]
    assert "--definition npmi" in commands["logs/demo/pmi_score.log"]
    assert "--eval-every 50" in commands["logs/demo_released/pretrain/tiny/cm_gems/300.log"]
    assert "--eval-every" in commands["logs/demo/pretrain/tiny/cm_gems/300.log"]
    assert "--eval-every 50" not in commands["logs/demo/pretrain/tiny/cm_gems/300.log"]
    released, own = (pack_specs(commands[f"logs/{g}/gue/tiny/cm_gems/300/pack_other.log"]) for g in ("demo_released", "demo"))
    assert {run["fp16"] for run in released.values()} == {True} and {run["fp16"] for run in own.values()} == {False}


def test_external_checkpoint_and_gue_archive_are_scheduled(tmp_path, pack_specs):
    """A published checkpoint is evaluated beside ours; a GUE url adds the checksummed download."""
    config = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
    (tmp_path / "dnabert6").mkdir()
    config["pretrained_models"] = {"DNABERT6": {"path": str(tmp_path / "dnabert6")}}
    config["gue"].update(path=str(tmp_path / "GUE"), url="https://example.org/GUE.zip", md5="0" * 32)
    (tmp_path / "resources").symlink_to(REPO / "resources")
    cfg = tmp_path / "external.yaml"
    cfg.write_text(yaml.safe_dump(config))
    result = snakemake("-n", "--quiet", "rules", "--configfile", str(cfg), "-d", str(tmp_path))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    counts = job_counts(result.stdout + result.stderr)
    assert counts["download_gue"] == 1
    assert counts["finetune_gue_other"] == 3 + 1  # the demo tasks' pack for 3 strategies + the checkpoint
    folder = Run(GUE, Model(layout.EXTERNAL, "DNABERT6", layout.PUBLISHED, 0), "demo_tata", 42).folder()
    result = snakemake("-n", "-p", "--configfile", str(cfg), "-d", str(tmp_path), f"{folder}/{layout.RECORD}")
    run = pack_specs(result.stdout)[folder]
    assert run["model"] == str(tmp_path / "dnabert6") and run["trust_remote_code"] is False


# Shell metacharacters and spaces in every config string that reaches a command: run by a shell
# that did not quote them, this would create PWNED files or split arguments.
NASTY = "a b;$(touch PWNED);touch PWNED;c"


def nasty_config(tmp_path: Path) -> tuple[dict, Path]:
    """The demo with its input files copied under tmp_path/NASTY and every path, URL and task path
    holding NASTY; the GUE task demo_splice is absent (a gue_missing job)."""
    root = tmp_path / NASTY
    demo = REPO / "resources" / "demo"
    gue = root / "gue" / f"tata {NASTY}"
    gue.mkdir(parents=True)
    for split in ("train", "dev", "test"):
        shutil.copy(demo / "gue" / "demo_tata" / f"{split}.csv", gue / f"{split}.csv")
    shutil.copy(demo / "genome" / "demo.fa.gz", root / "demo.fa.gz")
    shutil.copy(demo / "gue" / "demo_tata" / "train.csv", root / f"pool {NASTY}.csv")
    shutil.copy(demo / "gue" / "demo_tata" / "test.csv", root / f"test {NASTY}.csv")
    shutil.copytree(REPO / "resources" / "published", root / "published")
    (root / "init").mkdir()
    (root / "external").mkdir()
    config = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
    config["genomes"]["demo"]["path"] = f"{NASTY}/demo.fa.gz"
    config["genomes"]["web"] = {"url": f"https://example.org/hg.fa.gz#{NASTY}", "md5": "0" * 32, "contigs": ["chr1"]}
    config["gue"]["path"] = f"{NASTY}/gue"
    config["gue"]["tasks"]["demo_tata"]["path"] = f"tata {NASTY}"
    config["gue"]["tasks"]["demo_splice"]["path"] = f"splice {NASTY}"
    config["fewshot"]["datasets"] = {
        "demo_prom": {"pool": f"{NASTY}/pool {NASTY}.csv", "test": f"{NASTY}/test {NASTY}.csv", "max_length": 72},
        "demo_fetched": {"pooled": {10: f"{NASTY}/pool {NASTY}.csv"}, "test": f"{NASTY}/fetched/test {NASTY}.tsv",
                         "max_length": 72},
    }
    config["fewshot"]["sources"] = {"s": {"url": f"https://example.org/{NASTY}", "into": f"{NASTY}/fetched",
                                          "files": {f"test {NASTY}.tsv": "0" * 40}}}
    config["pretrain"]["init_from"] = f"{NASTY}/init"
    config["pretrained_models"] = {"ext": {"path": f"{NASTY}/external"}}
    config["report"]["published"] = f"{NASTY}/published"
    return config, root


def command_pairs(output: str) -> set[tuple[str, str]]:
    """(argument, next argument) of every cmgems command printed by `snakemake -p`, as a shell splits it;
    an argument mentioning PWNED that is not a whole NASTY string means a string was split."""
    pairs = set()
    for line in output.splitlines():
        if "cmgems.cli" in line or "launch.sh" in line:
            args = shlex.split(line.split("Shell command:", 1)[-1])
            assert all(NASTY in a for a in args if "PWNED" in a), line
            pairs |= set(zip(args, args[1:]))
            for flag, value in zip(args, args[1:]):  # a pack's runs: their settings as option pairs
                if flag == "--pack":
                    pairs |= {(f"--{key}", v) for run in json.loads(value)["runs"] for key, v in run.items()
                              if isinstance(v, str)}
    return pairs


def test_config_strings_reach_commands_quoted(tmp_path):
    """Every config string that reaches a command arrives as one argument, whatever it holds: the
    dry run plans each command so, and a real run of the cheap jobs (GUE download from a file://
    URL, contigs, chunks, a few-shot draw, both baselines) succeeds and runs nothing from them."""
    config, root = nasty_config(tmp_path)
    cfg = tmp_path / "nasty.yaml"
    cfg.write_text(yaml.safe_dump(config))
    result = snakemake("-n", "-p", "--configfile", str(cfg), "-d", str(tmp_path))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    pairs = command_pairs(result.stdout)
    gue = f"{NASTY}/gue"
    expected = {
        ("--url", f"https://example.org/hg.fa.gz#{NASTY}"),
        ("--fasta", f"{NASTY}/demo.fa.gz"),
        ("--init-from", f"{NASTY}/init"),
        ("--root", gue), ("--files", f"{gue}/splice {NASTY}/train.csv"),
        ("--train", f"{gue}/tata {NASTY}/train.csv"), ("--dev", f"{gue}/tata {NASTY}/dev.csv"),
        ("--model", f"{NASTY}/external"),
        ("--pool", f"{NASTY}/pool {NASTY}.csv"), ("--file", f"{NASTY}/pool {NASTY}.csv"),
        ("--test", f"{NASTY}/test {NASTY}.csv"), ("--test", f"{NASTY}/fetched/test {NASTY}.tsv"),
        ("--url", f"https://example.org/{NASTY}/test {NASTY}.tsv"), ("--out", f"{NASTY}/fetched/test {NASTY}.tsv"),
        ("--published", f"{NASTY}/published"),
    }
    assert expected <= pairs, expected - pairs

    archive = root / "GUE.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for task, folder in (("tata", "demo_tata"), ("splice", "demo_splice")):
            for split in ("train", "dev", "test"):
                zf.write(REPO / "resources" / "demo" / "gue" / folder / f"{split}.csv", f"GUE/{task} {NASTY}/{split}.csv")
    config["gue"].update(path=f"{NASTY}/downloaded", url=f"{archive.as_uri()}#{NASTY}",
                         md5=hashlib.md5(archive.read_bytes()).hexdigest())
    cfg.write_text(yaml.safe_dump(config))
    targets = [layout.of_genome("demo", layout.CORPUS_CHUNK, contig="chrM"),
               f"{Run(GUE, None, 'demo_splice', 42).folder()}/{layout.RECORD}",
               f"{Run(FEWSHOT, None, 'demo_prom', 0, 10).folder()}/{layout.RECORD}"]
    result = snakemake("--cores", "2", "-p", *targets, "--configfile", str(cfg), "-d", str(tmp_path))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert ("--expect", f"splice {NASTY}") in command_pairs(result.stdout + result.stderr)
    assert all((tmp_path / t).exists() for t in targets[1:])
    assert not list(tmp_path.rglob("PWNED")) and not (REPO / "PWNED").exists()


@pytest.mark.slow
def test_a_killed_pack_trains_only_its_missing_runs_when_rerun(tiny_model, tmp_path):
    """SIGKILL the workflow once the first run of a few-shot pack is written: Snakemake holds the
    pack's outputs incomplete; the rerun restores the finished run(s) from the pack cache, trains the
    others and writes what an uninterrupted pack writes."""
    import os
    import signal
    import time

    from cmgems.packs import DIGEST

    config = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
    config["pretrained_models"] = {"toy": {"path": str(tiny_model)}}
    config["fewshot"]["small"]["epochs"] = 60  # the 10-shot runs, first in the pack: a second or more each
    cfg = tmp_path / "toy.yaml"
    cfg.write_text(yaml.safe_dump(config))
    toy = Model(layout.EXTERNAL, "toy", layout.PUBLISHED, 0)
    runs = [Run(FEWSHOT, toy, "demo_prom", seed, shots).folder() for shots in (10, 50) for seed in (0, 1)]
    args = ["--cores", "1", *(f"{run}/{layout.RECORD}" for run in runs), "--configfile", str(cfg)]
    for name in ("uninterrupted", "killed"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "resources").symlink_to(REPO / "resources")
    result = snakemake(*args, "-d", str(tmp_path / "uninterrupted"))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    work = tmp_path / "killed"
    workflow = subprocess.Popen([*SNAKEMAKE, "-s", str(REPO / "Snakefile"), *args, "-d", str(work)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 600
    while (not any((work / run / layout.RECORD).exists() for run in runs) and workflow.poll() is None
           and time.monotonic() < deadline):
        time.sleep(0.02)
    os.killpg(workflow.pid, signal.SIGKILL)  # snakemake and the pack it started
    workflow.wait()
    finished = sorted(run for run in runs if (work / layout.cache(run) / DIGEST).exists())
    assert 1 <= len(finished) < len(runs), finished

    dry = snakemake(*args, "-n", "-d", str(work))  # Snakemake does not take the written outputs for finished
    assert dry.returncode != 0 and "IncompleteFilesException" in dry.stdout + dry.stderr
    assert snakemake("--unlock", *args, "-d", str(work)).returncode == 0
    result = snakemake(*args, "--rerun-incomplete", "-d", str(work))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    log = (work / "logs/external/fewshot/toy/published/0/pack_demo_prom.log").read_text()
    restored = sorted(run for run in runs if f"{run}): restored from" in log)
    trained = sorted(run for run in runs if f"{run}): computing" in log)
    assert restored == finished and trained == sorted(set(runs) - set(finished))
    assert log.count("training: ") == len(trained)
    for run in runs:
        ours, theirs = (tmp_path / name / run for name in ("killed", "uninterrupted"))
        assert (ours / "predictions.parquet").read_bytes() == (theirs / "predictions.parquet").read_bytes()
        records = [json.loads((p / layout.RECORD).read_text()) for p in (ours, theirs)]
        for record in records:
            for key in ("train_seconds", "train_sequences_per_s", "inference_sequences_per_s"):
                record.pop(key)
        assert records[0] == records[1]


def test_each_rule_file_wraps_one_stage():
    """workflow/rules/<stage>.smk runs `cmgems <stage>` and nothing else (the tokenizer is part of the
    corpus); common.smk and config.smk run no command."""
    from cmgems.cli import STAGES

    for rules in (REPO / "workflow" / "rules").glob("*.smk"):
        stages = set(STAGE_COMMAND.findall(rules.read_text()))
        expected = {"corpus": {"corpus", "tokenizer"}}.get(rules.stem, {rules.stem} & set(STAGES))
        assert stages == expected, rules.name


def test_paper_config_runs_the_27_gue_tasks_of_the_published_tables():
    from cmgems.gue import GUE_27

    assert list(yaml.safe_load((REPO / "config" / "config.yaml").read_text())["gue"]["tasks"]) == GUE_27
