import json
import os
import re
import shlex
import sys
from pathlib import Path

from snakemake.logging import logger

# Rules run `python -m cmgems.cli` from this checkout, with or without --use-conda.
PACKAGE_DIR = Path(workflow.basedir, "workflow").resolve()
shell.prefix(
    f"set -euo pipefail; export PYTHONPATH={shlex.quote(str(PACKAGE_DIR))}${{{{PYTHONPATH:+:$PYTHONPATH}}}}; "
)
# The planning of packs below imports the checkout's cmgems (modules of the standard library only).
sys.path.insert(0, str(PACKAGE_DIR))
from cmgems.gue import task_group
from cmgems.packs import deal

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


def trusts_remote_code(wildcards):
    """Whether the model's own code may run: only an external checkpoint that opts in."""
    return wildcards.genome == "external" and bool(
        EXTERNAL[wildcards.model].get("trust_remote_code")
    )


def eval_dir(kind, genome, model, masking, steps):
    return f"results/{genome}/{kind}/{model}/{masking}/{steps}"


def meta_json(**fields):
    return json.dumps(fields, sort_keys=True)


# ------------------------------------------------------------------------------- GUE
SPLITS = ("train", "dev", "test")


def gue_file(task, split):
    return str(Path(GUE["path"], GUE["tasks"][task]["path"], f"{split}.csv"))


def all_gue_files():
    return [gue_file(t, s) for t in GUE["tasks"] for s in SPLITS]


def any_of(names):
    """A wildcard constraint matching exactly the given strings."""
    return "|".join(re.escape(n) for n in sorted(names))


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


def fewshot_set(dataset, shots, seed):
    return f"results/fewshot_sets/{dataset}/{shots}/seed{seed}.csv"


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


# ------------------------------------------------------------------------ packed evaluation
# One cluster job per pack of runs (cmgems.packs; README, "Evaluation on a cluster"): GUE tasks by
# task group and few-shot runs by dataset, each split into packs of at most `pack_runs`, for every
# model and for the baseline. A run is (task, seed) or (dataset, shots, seed).
# Finished runs, outside the declared outputs, that restarted packs restore:
PACK_CACHE = ".cmgems/packs"
RUN_FILES = ("metrics.json", "predictions.parquet")
# A pack's spec travels on its command line, which holds at most 128 KiB:
MAX_SPEC_BYTES = 100_000


def grouped(runs, key):
    """{key(run): [runs]} in the order of first appearance."""
    groups = {}
    for run in runs:
        groups.setdefault(key(run), []).append(run)
    return groups


def packs_of(groups, most):
    """{name: runs}: each group dealt into packs of at most `most` runs (None: one pack), named
    GROUP or GROUP_1, GROUP_2, ..., characters other than letters, digits and _ made _.
    """
    named = {}
    for group, runs in groups.items():
        dealt = deal(runs, most)
        for i, runs_of_pack in enumerate(dealt, 1):
            name = re.sub(r"\W", "_", group) + (f"_{i}" if len(dealt) > 1 else "")
            if name in named:
                raise ValueError(
                    f"two packs are named {name}; rename the task or dataset {group}"
                )
            named[name] = runs_of_pack
    return named


def gue_packs(seeds):
    runs = [(task, seed) for task in GUE["tasks"] for seed in seeds]
    return packs_of(grouped(runs, lambda r: task_group(r[0])), GUE["pack_runs"])


GUE_PACKS = gue_packs(GUE["seeds"])
# The baseline: the first seed, in results/baseline/gue/TASK
BASELINE_GUE_PACKS = gue_packs(GUE["seeds"][:1])
FEWSHOT_PACKS = packs_of(grouped(fewshot_runs(), lambda r: r[0]), FEW["pack_runs"])
BASELINE_RESOURCES = stage_resources({}, cpus_per_task=1, mem_mb=4000, runtime=10)


def run_subdir(run):
    """A run's folder below its model's: TASK/seedS or DATASET/SHOTS/seedS."""
    *names, seed = run
    return str(Path(*map(str, names), f"seed{seed}"))


def pack_outputs(folder, runs):
    """metrics.json and predictions.parquet of each run below `folder` (which may hold wildcards)."""
    return [f"{folder}/{run_subdir(run)}/{name}" for run in runs for name in RUN_FILES]


def gue_pack_files(runs):
    """The train, dev and test files of a GUE pack's tasks."""
    return list(dict.fromkeys(gue_file(t, split) for t, _ in runs for split in SPLITS))


def fewshot_pack_files(runs):
    """The training sets and test sets of a few-shot pack's runs."""
    files = [fewshot_set(*run) for run in runs]
    files += [FEW["datasets"][dataset]["test"] for dataset, _, _ in runs]
    return list(dict.fromkeys(files))


def model_eval_dir(kind):
    """results/{genome}/KIND/{model}/{masking}/{steps}, the wildcards left in."""
    return eval_dir(kind, "{genome}", "{model}", "{masking}", "{steps}")


def pack_resources(resources, runs):
    """A pack's resources: those of a run (config), `runtime` times the pack's runs."""
    return {**resources, "runtime": resources["runtime"] * len(runs)}


def pack_spec(name, key, runs):
    """The `--pack` JSON of a pack: each run's settings and its cache folder. Keys sorted (so meta
    is ordered as the one-run rules' --meta was)."""
    entries = [{**run, "cache": f"{PACK_CACHE}/{run['out']}"} for run in runs]
    spec = json.dumps({"runs": entries}, sort_keys=True)
    if len(spec) > MAX_SPEC_BYTES:
        raise ValueError(
            f"pack {name}: its spec is {len(spec)} bytes, more than a command line holds; lower {key}"
        )
    return spec


def model_meta(w, kind, **fields):
    return dict(
        kind=kind,
        genome=w.genome,
        model=w.model,
        masking=w.masking,
        steps=int(w.steps),
        **fields,
    )


def gue_run(w, model, task, seed):
    """Settings of a GUE run (cmgems.finetune.Settings) of the model of wildcards `w`."""
    return dict(
        model=model,
        **{split: gue_file(task, split) for split in SPLITS},
        out=f"{eval_dir('gue', w.genome, w.model, w.masking, w.steps)}/{task}/seed{seed}",
        **gue_settings(task),
        select_by=GUE["select_by"],
        lr=GUE["lr"],
        batch_size=GUE["batch_size"],
        seed=seed,
        threads=GUE["threads"],
        trust_remote_code=trusts_remote_code(w),
        meta=model_meta(w, "gue", task=task, seed=seed),
    )


def fewshot_run(w, model, dataset, shots, seed):
    """Settings of a few-shot run (cmgems.finetune.Settings): GeneMask's protocol."""
    regime = fewshot_regime(shots)
    folder = eval_dir("fewshot", w.genome, w.model, w.masking, w.steps)
    return dict(
        model=model,
        train=fewshot_set(dataset, shots, seed),
        test=FEW["datasets"][dataset]["test"],
        out=f"{folder}/{dataset}/{shots}/seed{seed}",
        max_length=FEW["datasets"][dataset]["max_length"],
        epochs=regime["epochs"],
        lr=regime["lr"],
        batch_size=regime["batch_size"],
        warmup_ratio=FEW["warmup_ratio"],
        weight_decay=FEW["weight_decay"],
        hidden_dropout=FEW["hidden_dropout"],
        seed=seed,
        threads=FEW["threads"],
        trust_remote_code=trusts_remote_code(w),
        meta=model_meta(w, "fewshot", dataset=dataset, shots=shots, seed=seed),
    )


def baseline_gue_run(task, seed):
    """Settings of the baseline on a GUE task (cmgems.baseline.Settings)."""
    return dict(
        **{split: gue_file(task, split) for split in SPLITS},
        out=f"results/baseline/gue/{task}",
        k=K,
        seed=seed,
        meta=dict(kind="gue", task=task, seed=seed),
    )


def baseline_fewshot_run(dataset, shots, seed):
    """Settings of the baseline on a few-shot run (cmgems.baseline.Settings)."""
    return dict(
        train=fewshot_set(dataset, shots, seed),
        test=FEW["datasets"][dataset]["test"],
        out=f"results/baseline/fewshot/{dataset}/{shots}/seed{seed}",
        k=K,
        seed=seed,
        meta=dict(kind="fewshot", dataset=dataset, shots=shots, seed=seed),
    )


def asks_gpu(resources):
    gres = str(resources.get("gres", ""))
    return bool(resources.get("gpu")) or gres.startswith("gpu")


def cluster_jobs():
    """Cluster jobs of the whole grid: {stage: (jobs, asks for GPUs)} (local rules excluded)."""
    models = len(evaluated_models())
    baselines = len(BASELINE_GUE_PACKS) + len(FEWSHOT_PACKS)
    # per genome: genome_contigs, corpus_finalize, pmi_merge, pmi_score; corpus_chunk and
    # pmi_count per contig
    data = sum(
        4 + len(genome_contigs(g)) + len(pmi_contigs(g)) for g in config["genomes"]
    )
    return {
        "pretraining": (len(pretrained_runs()), asks_gpu(PRETRAIN_RESOURCES)),
        "GUE packs": (models * len(GUE_PACKS), asks_gpu(GUE_RESOURCES)),
        "few-shot packs": (models * len(FEWSHOT_PACKS), asks_gpu(FEWSHOT_RESOURCES)),
        "baseline packs": (baselines if config["baseline"]["enabled"] else 0, False),
        "data preparation": (data, False),
        "report": (1, False),
    }


def jobs_summary():
    """One line: the grid's cluster jobs with and without GPUs, per stage."""
    jobs = cluster_jobs()
    parts = {
        gpu: [f"{stage} {n}" for stage, (n, g) in jobs.items() if g == gpu and n]
        for gpu in (True, False)
    }
    totals = {
        gpu: sum(n for n, g in jobs.values() if g == gpu) for gpu in (True, False)
    }
    return (
        f"cmgems: the whole grid is {totals[True]} GPU jobs ({', '.join(parts[True]) or 'none'}) "
        f"and {totals[False]} CPU jobs ({', '.join(parts[False])}) on a cluster; "
        "Snakemake's job stats count those still to run"
    )


if workflow.is_main_process:  # once, not in every cluster job
    logger.info(jobs_summary())
