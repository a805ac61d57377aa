import json
import os
import re
import shlex
from pathlib import Path

# Rules run `python -m cmgems.cli` from this checkout, with or without --use-conda.
PACKAGE_DIR = Path(workflow.basedir, "workflow").resolve()
shell.prefix(
    f"set -euo pipefail; export PYTHONPATH={shlex.quote(str(PACKAGE_DIR))}${{{{PYTHONPATH:+:$PYTHONPATH}}}}; "
)

K = config["k"]
PRE = config["pretrain"]
GUE = config["gue"]
FEW = config["fewshot"]


wildcard_constraints:
    genome="[A-Za-z0-9][A-Za-z0-9_.-]*",
    contig="[A-Za-z0-9_.-]+",
    model="[A-Za-z0-9_]+",
    masking="[a-z_]+",
    steps=r"\d+",
    task="[A-Za-z0-9][A-Za-z0-9_.-]*",
    dataset="[A-Za-z0-9][A-Za-z0-9_.-]*",
    shots=r"\d+",
    seed=r"\d+",


# ------------------------------------------------------------------------------ genomes
def genome_fasta(wildcards):
    entry = config["genomes"][wildcards.genome]
    return (
        entry["path"]
        if "path" in entry
        else f"resources/genomes/{wildcards.genome}.fa.gz"
    )


def genome_contigs(genome):
    return config["genomes"][genome].get("contigs", DEFAULT_CONTIGS)


def pmi_contigs(genome):
    return config["pmi"]["contigs"] or genome_contigs(genome)


# ---------------------------------------------------------------------------- resources
def stage_resources(section, **fallback):
    """Resources for a stage: workflow defaults, then the stage's own from config."""
    merged = dict(fallback)
    merged.update(config.get("resources", {}).get("default", {}))
    merged.update(section.get("resources", {}))
    if not merged.get("gpu"):
        merged.pop("gpu_model", None)  # the plugin would ask for --gpus=model:0
    return merged


PRETRAIN_RESOURCES = stage_resources(
    PRE, gpu=0, nodes=1, cpus_per_task=2, mem_mb=8000, runtime=60
)
GUE_RESOURCES = stage_resources(GUE, gpu=0, cpus_per_task=1, mem_mb=4000, runtime=60)
FEWSHOT_RESOURCES = stage_resources(
    FEW, gpu=0, cpus_per_task=1, mem_mb=4000, runtime=30
)


# ----------------------------------------------------------------------------- pretraining
def pretrain_processes():
    """Training processes of a pretraining job: its GPUs (`gpu`, or per-node `gres` "gpu:K" x nodes),
    or one process without GPUs."""
    if PRETRAIN_RESOURCES.get("gpu"):
        return PRETRAIN_RESOURCES["gpu"]
    gres = PRETRAIN_RESOURCES.get("gres", "")
    if gres.startswith("gpu"):
        return int(gres.rsplit(":", 1)[-1]) * PRETRAIN_RESOURCES.get("nodes", 1)
    return 1


def check_pretrain_layout():
    """Fail at DAG build time when a step's sequences cannot be split evenly over the processes."""
    recipe = PRE.get("recipe", {})
    per_step = recipe.get("sequences_per_step", 250)
    micro = recipe.get("batch_size", 10)
    processes = pretrain_processes()
    if per_step % (micro * processes):
        raise ConfigError(
            f"pretrain.recipe.sequences_per_step ({per_step}) must be a multiple of "
            f"pretrain.recipe.batch_size ({micro}) x the job's {processes} GPU process(es) "
            f"(pretrain.resources): choose a batch_size or GPU count that divides it"
        )


check_pretrain_layout()


def pretrain_inputs(wildcards):
    """The corpus, PMI table and tokenizer of a run; the starting checkpoint when `init_from` is set."""
    inputs = {
        "corpus": f"results/{wildcards.genome}/corpus",
        "pmi": f"results/{wildcards.genome}/pmi/pmi.parquet",
        "tokenizer": f"results/{wildcards.genome}/tokenizer",
    }
    if PRE.get("init_from"):
        inputs["init"] = PRE["init_from"]
    return inputs


def pretrain_recipe_args():
    """The recipe as `cmgems pretrain` options, each value shell-quoted."""
    args = []
    for key, value in PRE.get("recipe", {}).items():
        flag = f"--{key.replace('_', '-')}"
        if key == "compile":
            args += [flag] if value else []
        else:
            args += [flag, *map(str, value if isinstance(value, list) else [value])]
    return shlex.join(args)


# ----------------------------------------------------------------------- pretrained models
def pretrained_runs():
    """(genome, model, masking, steps) of every pretraining run in config."""
    return [
        (g, m, s, n)
        for g in config["genomes"]
        for m in PRE["models"]
        for s in PRE["masking"]
        for n in PRE["steps"]
    ]


EXTERNAL = config["pretrained_models"]


def evaluated_models():
    """(genome, model, masking, steps) of every model evaluated: ours, then the external checkpoints
    (as genome "external", masking "published", steps 0)."""
    return pretrained_runs() + [("external", name, "published", 0) for name in EXTERNAL]


def run_dir(genome, model, masking, steps):
    return f"results/{genome}/models/{model}/{masking}/{steps}"


def model_dir(wildcards):
    if wildcards.genome == "external":
        return EXTERNAL[wildcards.model]["path"]
    return f"{run_dir(wildcards.genome, wildcards.model, wildcards.masking, wildcards.steps)}/model"


def remote_code_flag(wildcards):
    trusted = wildcards.genome == "external" and EXTERNAL[wildcards.model].get(
        "trust_remote_code"
    )
    return "--trust-remote-code" if trusted else ""


def output_dir(wildcards, output):
    """The folder of a rule's `metrics` output (the --out of an evaluation)."""
    return os.path.dirname(output.metrics)


def eval_dir(kind, genome, model, masking, steps):
    return f"results/{genome}/{kind}/{model}/{masking}/{steps}"


def meta_json(**fields):
    return json.dumps(fields, sort_keys=True)


# ------------------------------------------------------------------------------- GUE
def gue_file(task, split):
    return str(Path(GUE["path"], GUE["tasks"][task]["path"], f"{split}.csv"))


def all_gue_files():
    return [gue_file(t, s) for t in GUE["tasks"] for s in ("train", "dev", "test")]


def any_of(names):
    """A wildcard constraint matching exactly the given strings."""
    return "|".join(re.escape(n) for n in sorted(names))


def gue_inputs(wildcards):
    return {
        split: gue_file(wildcards.task, split) for split in ("train", "dev", "test")
    }


def gue_settings(task):
    spec = GUE["tasks"][task]
    return {
        "max_length": spec["max_length"],
        "epochs": spec["epochs"],
        "warmup_steps": spec.get("warmup_steps", GUE["warmup_steps"]),
        "max_steps": spec.get("max_steps", -1),
        "eval_steps": spec.get("eval_steps", GUE["eval_steps"]),
    }


# --------------------------------------------------------------------------- few-shot
def fewshot_shots(dataset):
    """The shot sizes a dataset is evaluated at: the global list, limited to what it can supply."""
    spec = FEW["datasets"][dataset]
    supplied = spec.get("shots") or (
        [int(s) for s in spec["pooled"]] if "pooled" in spec else FEW["shots"]
    )
    return [s for s in FEW["shots"] if s in supplied]


def fewshot_runs():
    """(dataset, shots, seed) of every few-shot run."""
    return [
        (d, s, seed)
        for d in FEW["datasets"]
        for s in fewshot_shots(d)
        for seed in FEW["seeds"]
    ]


def fetched_files():
    """{local path: {url, sha1}} of every file a few-shot source supplies (into/PATH from url/PATH)."""
    files = {}
    for source in FEW["sources"].values():
        for name, sha1 in source["files"].items():
            local = os.path.normpath(Path(source["into"], name))
            if local in files:
                raise ConfigError(f"fewshot.sources: two sources write {local}")
            files[local] = {"url": f"{source['url'].rstrip('/')}/{name}", "sha1": sha1}
    return files


FETCHED = fetched_files()


def fewshot_regime(shots):
    return FEW["large"] if int(shots) >= FEW["large_from"] else FEW["small"]


def fewshot_source(wildcards):
    spec = FEW["datasets"][wildcards.dataset]
    if "pooled" in spec:
        return {int(s): f for s, f in spec["pooled"].items()}[int(wildcards.shots)]
    return spec["pool"]


# ----------------------------------------------------------------------- final targets
def evaluation_outputs():
    files = [f"{run_dir(*run)}/summary.json" for run in pretrained_runs()]
    for g, m, s, n in evaluated_models():
        for task in GUE["tasks"]:
            for seed in GUE["seeds"]:
                files.append(
                    f"{eval_dir('gue', g, m, s, n)}/{task}/seed{seed}/metrics.json"
                )
        for d, shots, seed in fewshot_runs():
            files.append(
                f"{eval_dir('fewshot', g, m, s, n)}/{d}/{shots}/seed{seed}/metrics.json"
            )
    if config["baseline"]["enabled"]:
        files += [f"results/baseline/gue/{task}/metrics.json" for task in GUE["tasks"]]
        files += [
            f"results/baseline/fewshot/{d}/{shots}/seed{seed}/metrics.json"
            for d, shots, seed in fewshot_runs()
        ]
    files += [f"results/{g}/pmi/pmi.parquet" for g in config["genomes"]]
    return files


REPORT_TABLES = [
    "gue",
    "gue_summary",
    "gue_by_task",
    "fewshot",
    "pretraining",
    "ours_vs_published",
]
REPORT_FIGURES = [
    "fewshot_curves",
    "gue_mcc",
    "pretraining_curves",
    "pmi_top20",
    "pmi_distribution",
    "masks",
]


def report_outputs():
    return [f"results/report/tables/{t}.csv" for t in REPORT_TABLES] + [
        f"results/report/figures/{f}.png" for f in REPORT_FIGURES
    ]


def fewshot_meta(wildcards, **extra):
    return meta_json(
        kind="fewshot",
        dataset=wildcards.dataset,
        shots=int(wildcards.shots),
        seed=int(wildcards.seed),
        **extra,
    )
