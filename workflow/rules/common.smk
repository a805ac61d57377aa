import hashlib
import json
import math
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
from cmgems import layout
from cmgems.atomic import atomic_output
from cmgems.gue import task_group
from cmgems.layout import Model
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
DOWNLOADED_GENOME = "resources/genomes/{genome}.fa.gz"  # rule download_genome's output


def genome_fasta(wildcards):
    return fasta_of(wildcards.genome)


def fasta_of(genome):
    """The FASTA of `genome`: its path, its download, or those of the genome it is a variant of."""
    entry = config["genomes"][genome]
    if "variant_of" in entry and "path" not in entry and "url" not in entry:
        return fasta_of(entry["variant_of"])
    return entry["path"] if "path" in entry else DOWNLOADED_GENOME.format(genome=genome)


def genome_contigs(genome):
    return genome_entry(genome).get("contigs", DEFAULT_CONTIGS)


def setting(genome, section, *keys):
    """genome_config(genome)[section][keys...]: a setting as `genome`'s overrides make it."""
    value = GENOME_CONFIGS.get(genome, config)[section]
    for key in keys:
        value = value[key]
    return value


GENOME_CONFIGS = {genome: genome_config(genome) for genome in config["genomes"]}


def pmi_contigs(genome):
    return setting(genome, "pmi", "contigs") or genome_contigs(genome)


# ---------------------------------------------------------------------------- resources
GRES_GPU = re.compile(r"gpu(?::[A-Za-z0-9_.-]+)?:([1-9][0-9]*)")  # gpu:K or gpu:TYPE:K
CPUS_PER_GPU_PROCESS = (
    4  # a training process and its data workers (cmgems.pretrain.data_workers)
)


def stage_resources(key, section, **fallback):
    """Resources for a stage: workflow defaults, then the stage's own from config (`key`.resources).
    GPUs are asked for one way: `gpu: N` (per job) or `gres: gpu:K` (per node), not both.
    """
    merged = dict(fallback)
    default, own = config.get("resources", {}).get("default", {}), section.get(
        "resources", {}
    )
    merged.update(default)
    merged.update(own)
    where = lambda name: (
        f"{key}.resources.{name}" if name in own else f"resources.default.{name}"
    )
    gres = merged.get("gres")
    if gres is not None and not GRES_GPU.fullmatch(gres):
        raise ConfigError(
            f"{where('gres')}: {gres!r} is not a GPU request gpu:K or gpu:TYPE:K (GPUs per node); "
            "cmgems asks for no other generic resource"
        )
    if gres is not None and merged.get("gpu"):
        raise ConfigError(
            f"{where('gpu')} ({merged['gpu']}) and {where('gres')} ({gres!r}) both ask for GPUs (a layered "
            "config keeps both keys): use gpu: N for a one-node job, or gres: gpu:K per node with gpu: 0"
        )
    if not merged.get("gpu"):
        merged.pop("gpu_model", None)  # the plugin would ask for --gpus=model:0
    return merged


def gpus_per_node(resources):
    """GPUs a job of `resources` asks for on each of its nodes (0: none)."""
    gres = GRES_GPU.fullmatch(resources.get("gres") or "")
    return int(gres.group(1)) if gres else resources.get("gpu", 0)


def asks_gpu(resources):
    return gpus_per_node(resources) > 0


def torch_env(resources):
    """The conda env of a torch rule: a pinned CUDA build of torch where the rule asks for GPUs (solving
    it where conda sees no driver fails instead of silently giving a CPU build), else the CPU build.
    """
    return (
        "../../envs/torch-cuda.yaml" if asks_gpu(resources) else "../../envs/torch.yaml"
    )


PRETRAIN_RESOURCES = stage_resources(
    "pretrain", PRE, gpu=0, nodes=1, cpus_per_task=2, mem_mb=8000, runtime=60
)
if PRETRAIN_RESOURCES["nodes"] > 1:
    # A multi-node job runs in the batch step of its SLURM job (the plugin's `mpi` jobs), one task per node:
    # SLURM's stop signals reach every step but the batch one, so launch.sh's srun and the trainers
    # get them while Snakemake and launch.sh wait for the checkpoint (in the plugin's own srun step,
    # srun would kill its tasks at once). tasks_per_gpu 0: no --ntasks-per-gpu from `tasks`.
    PRETRAIN_RESOURCES.update(
        mpi="srun", tasks=PRETRAIN_RESOURCES["nodes"], tasks_per_gpu=0
    )
GUE_RESOURCES = stage_resources(
    "gue", GUE, gpu=0, cpus_per_task=1, mem_mb=4000, runtime=60
)
FEWSHOT_RESOURCES = stage_resources(
    "fewshot", FEW, gpu=0, cpus_per_task=1, mem_mb=4000, runtime=30
)


# ----------------------------------------------------------------------------- pretraining
def pretrain_processes_per_node():
    """Training processes on each node of a pretraining job: one per GPU, or
    `pretrain.processes_per_node` (gloo) without GPUs."""
    return gpus_per_node(PRETRAIN_RESOURCES) or PRE["processes_per_node"]


def check_pretrain_resources():
    """Fail at DAG build time when a pretraining job cannot run as requested."""
    res, nodes = PRETRAIN_RESOURCES, PRETRAIN_RESOURCES["nodes"]
    if nodes > 1 and res.get("gpu"):
        raise ConfigError(
            f"pretrain.resources: gpu ({res['gpu']}) with nodes ({nodes}): SLURM gives gpu: N per job, all on "
            f"the first node here; ask per node instead: gres: 'gpu:K' and gpu: 0"
        )
    processes = pretrain_processes_per_node()
    per_step = PRE.get("recipe", {}).get("sequences_per_step", 250)
    if per_step < processes * nodes:
        raise ConfigError(
            f"pretrain.recipe.sequences_per_step ({per_step}) is fewer than the job's {processes * nodes} "
            "training processes (pretrain.resources): each needs at least one sequence per step"
        )
    if asks_gpu(res) and res["cpus_per_task"] < CPUS_PER_GPU_PROCESS * processes:
        raise ConfigError(
            f"pretrain.resources.cpus_per_task ({res['cpus_per_task']}) gives each of the {processes} GPU "
            f"processes per node fewer than {CPUS_PER_GPU_PROCESS} CPUs (the process and its data workers): "
            f"ask for cpus_per_task: {CPUS_PER_GPU_PROCESS * processes} or more"
        )


check_pretrain_resources()


def pretrain_inputs(wildcards):
    """The corpus, PMI ranks (the published ranking when `pmi.ranking` is set, else the PMI table) and
    tokenizer of a run; the starting checkpoint when `init_from` is set."""
    ranking = setting(wildcards.genome, "pmi").get("ranking")
    inputs = {
        "corpus": layout.of_genome(wildcards.genome, layout.CORPUS),
        **(
            {"ranking": ranking["path"]}
            if ranking
            else {"pmi": layout.of_genome(wildcards.genome, layout.PMI)}
        ),
        "tokenizer": layout.of_genome(wildcards.genome, layout.TOKENIZER),
    }
    if PRE.get("init_from"):
        inputs["init"] = PRE["init_from"]
    return inputs


def pretrain_recipe_args(genome):
    """The recipe of `genome`'s runs as `cmgems pretrain` options, each value shell-quoted."""
    args = []
    for key, value in setting(genome, "pretrain").get("recipe", {}).items():
        flag = f"--{key.replace('_', '-')}"
        if key == "compile":
            args += [flag] if value else []
        else:
            args += [flag, *map(str, value if isinstance(value, list) else [value])]
    return shlex.join(args)


# ----------------------------------------------------------------------- pretrained models
EXTERNAL = config["pretrained_models"]
MODELS_DIR = "resources/models"  # where rule fetch_model writes the entries that name a hub repository


def external_dir(name):
    """The folder of a published checkpoint: its local `path`, or where fetch_model writes its `repo`."""
    entry = EXTERNAL[name]
    return entry["path"] if "path" in entry else f"{MODELS_DIR}/{name}"


def model_of(wildcards):
    """The layout.Model of a job's wildcards."""
    return Model(wildcards.genome, wildcards.model, wildcards.masking, wildcards.steps)


def model_dir(wildcards):
    if wildcards.genome == layout.EXTERNAL:
        return external_dir(wildcards.model)
    return model_of(wildcards).checkpoint()


def trusts_remote_code(wildcards):
    """Whether the model's own code may run: only an external checkpoint that opts in."""
    return wildcards.genome == layout.EXTERNAL and bool(
        EXTERNAL[wildcards.model].get("trust_remote_code")
    )


FETCHED_MODELS = {name: e for name, e in EXTERNAL.items() if "repo" in e}


def model_resources(wildcards):
    """A published checkpoint's own resources (`pretrained_models.NAME.resources`), over its stage's."""
    return EXTERNAL[wildcards.model].get("resources", {})


def model_settings(wildcards, settings):
    """A run's settings (cmgems.finetune.Settings) for the model of `wildcards`: a published
    checkpoint's entry names its tokenizer, and may set max_length (for every run, or by GUE task, task
    group or few-shot dataset), scale the protocol's max_length otherwise, and set the batch size.
    """
    if wildcards.genome != layout.EXTERNAL:
        return settings
    entry = EXTERNAL[wildcards.model]
    scaled = max(
        3, math.ceil(settings["max_length"] * entry.get("max_length_scale", 1))
    )
    given = entry.get("max_length", {})
    if isinstance(given, dict):
        task = settings["meta"].get("task") or settings["meta"]["dataset"]
        given = given.get(task, given.get(task_group(task), scaled))
    settings = dict(
        settings, tokenizer=entry.get("tokenizer", "kmer"), max_length=given
    )
    if "batch_size" in entry:
        settings.update(
            batch_size=entry["batch_size"], eval_batch_size=entry["batch_size"]
        )
    return settings


def check_pretrained_models():
    """Fail at DAG build time on an entry that is neither a local folder nor a pinned repository, or
    whose resources would change whether its packs ask for GPUs (their conda env and GPU check follow
    the stage's resources)."""
    for name, entry in EXTERNAL.items():
        where = f"pretrained_models.{name}"
        if ("path" in entry) == ("repo" in entry):
            raise ConfigError(
                f"{where}: give path (a local model folder) or repo (a hub repository, with revision and "
                "files), exactly one"
            )
        if "repo" in entry and "config.json" not in entry["files"]:
            raise ConfigError(
                f"{where}.files: lacks config.json, which every model folder needs (list each file "
                "the model needs with its sha256)"
            )
        own = entry.get("resources", {})
        if own.get("nodes", 1) > 1:
            raise ConfigError(
                f"{where}.resources.nodes: fine-tuning runs one process on one node"
            )
        for stage, resources in (
            ("gue", GUE_RESOURCES),
            ("fewshot", FEWSHOT_RESOURCES),
        ):
            if asks_gpu({**resources, **own}) != asks_gpu(resources):
                raise ConfigError(
                    f"{where}.resources: asks for GPUs where {stage}.resources does not, or the reverse; "
                    f"a pack's environment follows {stage}.resources, so ask for GPUs there too"
                )


check_pretrained_models()


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


# What the configuration runs: the outputs below and the report's runs.
GRID = layout.Grid(
    genomes=tuple(config["genomes"]),
    pretrained=tuple(
        Model(g, m, s, n)
        for g in config["genomes"]
        for m in PRE["models"]
        for s in PRE["masking"]
        for n in PRE["steps"]
    ),
    external=tuple(
        Model(layout.EXTERNAL, name, layout.PUBLISHED, 0) for name in EXTERNAL
    ),
    gue_tasks=tuple(GUE["tasks"]),
    gue_seeds=tuple(GUE["seeds"]),
    fewshot=tuple(fewshot_runs()),
    baseline=config["baseline"]["enabled"],
    variants=tuple(
        (genome, entry["variant_of"])
        for genome, entry in config["genomes"].items()
        if "variant_of" in entry
    ),
    published_as=tuple(
        (name, entry["published_as"])
        for name, entry in EXTERNAL.items()
        if "published_as" in entry
    ),
)


def fetched_files():
    """{local path: {url, sha1}} of every file a few-shot source supplies (into/PATH from url/PATH),
    and of the published PMI ranking (`pmi.ranking` with a url)."""
    files = {}
    for source in FEW["sources"].values():
        for name, sha1 in source["files"].items():
            local = os.path.normpath(Path(source["into"], name))
            if local in files:
                raise ConfigError(f"fewshot.sources: two sources write {local}")
            files[local] = {"url": f"{source['url'].rstrip('/')}/{name}", "sha1": sha1}
    rankings = {}  # every genome's published ranking, each file once
    for genome in config["genomes"]:
        ranking = setting(genome, "pmi").get("ranking") or {}
        if "url" in ranking:
            rankings[os.path.normpath(ranking["path"])] = ranking
    for local, ranking in rankings.items():
        if local in files:
            raise ConfigError(
                f"pmi.ranking.path: {local} is also a fewshot.sources file"
            )
        files[local] = {"url": ranking["url"], "sha1": ranking["sha1"]}
    return files


FETCHED = fetched_files()


def fewshot_regime(shots):
    return FEW["large"] if int(shots) >= FEW["large_from"] else FEW["small"]


def fewshot_source(wildcards):
    spec = FEW["datasets"][wildcards.dataset]
    if "pooled" in spec:
        return {int(s): f for s, f in spec["pooled"].items()}[int(wildcards.shots)]
    return spec["pool"]


# ---------------------------------------------------------------------- linked outputs
# Snakemake writes logs, benchmarks and outputs through a symbolic link, and deletes an output below a
# linked folder: a link where the plan writes could send either outside the project. So, before any
# job runs, a link below the folders the rules write is refused (the folders themselves may be links,
# e.g. results/ on a scratch disk), and so is a downloaded file that is a link. Only existing paths
# can be links: one scandir per existing folder, cheap beside the DAG even for the paper grid.
OUTPUT_FOLDERS = (layout.ROOT, "logs", "benchmarks/out", layout.PACK_CACHE)


class PlanError(Exception):
    """The working directory cannot take the plan's outputs safely: found when the DAG is built."""


def links_under(folder):
    """The symbolic links below `folder`, none followed."""
    todo = [folder] if os.path.isdir(folder) else []
    while todo:
        with os.scandir(todo.pop()) as entries:
            for entry in entries:
                if entry.is_symlink():
                    yield entry.path
                elif entry.is_dir():
                    todo.append(entry.path)


def downloads():
    """The files the download rules write, outside OUTPUT_FOLDERS."""
    files = [
        DOWNLOADED_GENOME.format(genome=g)
        for g, entry in config["genomes"].items()
        if "url" in entry
    ]
    files += [external_dir(name) for name, entry in EXTERNAL.items() if "repo" in entry]
    return files + list(FETCHED) + (all_gue_files() if "url" in GUE else [])


def check_no_linked_outputs():
    """PlanError naming the first symbolic link where the plan writes, and where it points."""
    links = (link for folder in OUTPUT_FOLDERS for link in links_under(folder))
    link = next(links, None) or next(filter(os.path.islink, downloads()), None)
    if link is not None:
        raise PlanError(
            f"{link}: is a symbolic link (to {os.readlink(link)}), where the workflow writes or deletes "
            f"outputs, which could then land outside the project; replace it with a real file or folder "
            f"(only the folders {', '.join(OUTPUT_FOLDERS)} themselves may be links)"
        )


if workflow.is_main_process:  # once, not in every cluster job
    check_no_linked_outputs()


# ----------------------------------------------------------------------- final targets
def report_inputs():
    """What the report reads: the grid's pretraining summaries and curves, evaluation runs, PMI
    tables and validation corpora."""
    files = [f for model in GRID.pretrained for f in (model.summary(), model.curves())]
    files += [f"{run.folder()}/{layout.RECORD}" for run in GRID.runs()]
    files += [layout.of_genome(g, layout.PMI) for g in GRID.genomes]
    return files + [layout.of_genome(g, layout.CORPUS) for g in GRID.genomes]


# The grid travels to the report on its command line, which holds at most 128 KiB:
MAX_GRID_BYTES = 100_000


def report_grid():
    """The grid as `cmgems report --grid` JSON."""
    grid = GRID.to_json()
    if len(grid) > MAX_GRID_BYTES:
        raise ConfigError(
            f"the grid of runs is {len(grid)} bytes as JSON, more than the report's command line holds"
        )
    return grid


def report_outputs():
    return [layout.table(t.name) for t in layout.TABLES] + [
        layout.figure(f.name) for f in layout.FIGURES
    ]


def all_run_outputs():
    """Every file of every run the grid declares (models, pretraining records, evaluation runs), as
    targets of the `all` rule: a deleted one is made again by the next `snakemake`, and the report after it.
    (Behind an up-to-date report alone, Snakemake would not look at them.)"""
    files = [model.checkpoint() for model in GRID.pretrained]
    files += [
        f"{run.folder()}/{name}" for run in GRID.runs() for name in layout.RUN_FILES
    ]
    return files + report_inputs() + [layout.REPORT_SETTINGS]


# ------------------------------------------------------------------------ packed evaluation
# One cluster job per pack of runs (cmgems.packs; README, "Evaluation on a cluster"): GUE tasks by
# task group and few-shot runs by dataset, each split into packs of at most `pack_runs`, for every
# model and for the baseline. A run is a layout.Run of the grid, given the model of a rule's
# wildcards. Finished runs, outside the declared outputs, that restarted packs restore: layout.cache.
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


def gue_packs(runs):
    return packs_of(grouped(runs, lambda r: task_group(r.task)), GUE["pack_runs"])


GUE_PACKS = gue_packs(GRID.gue_runs())
BASELINE_GUE_PACKS = gue_packs(
    [r for r in GRID.baseline_runs() if r.kind == layout.GUE]
)
FEWSHOT_PACKS = packs_of(
    grouped(GRID.fewshot_runs(), lambda r: r.task), FEW["pack_runs"]
)
BASELINE_RESOURCES = stage_resources(
    "baseline", {}, cpus_per_task=1, mem_mb=4000, runtime=10
)


def pack_outputs(model, runs):
    """The files of each run of `model` (layout.WILDCARDS in a rule; None: the baseline)."""
    return [
        f"{run.of(model).folder()}/{name}" for run in runs for name in layout.RUN_FILES
    ]


def gue_pack_files(runs):
    """The train, dev and test files of a GUE pack's tasks."""
    return list(
        dict.fromkeys(gue_file(r.task, split) for r in runs for split in SPLITS)
    )


def fewshot_training_set(run):
    return layout.fewshot_set(run.task, run.shots, run.seed)


def fewshot_pack_files(runs):
    """The training sets and test sets of a few-shot pack's runs."""
    files = [fewshot_training_set(run) for run in runs]
    files += [FEW["datasets"][run.task]["test"] for run in runs]
    return list(dict.fromkeys(files))


def pack_resources(resources, runs):
    """A pack's resources, each a function of the job's wildcards: those of a run (config; for a
    published checkpoint, its entry's `resources` over them), `runtime` times the pack's runs.
    """
    keys = set(resources).union(*(e.get("resources", {}) for e in EXTERNAL.values()))

    def value(w, key):
        external = getattr(w, "genome", None) == layout.EXTERNAL
        own = model_resources(w) if external else {}
        merged = {**resources, **own}
        merged["runtime"] *= len(runs)
        return merged.get(key) if merged.get("gpu") or key != "gpu_model" else None

    return {key: lambda w, key=key: value(w, key) for key in keys}


def pack_spec(name, key, runs):
    """The `--pack` JSON of a pack: each run's settings and its cache folder. Keys sorted (so meta
    is ordered as the one-run rules' --meta was)."""
    entries = [{**run, "cache": layout.cache(run["out"])} for run in runs]
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


def gue_run(w, model, run):
    """Settings of a GUE run (cmgems.finetune.Settings) of the model of wildcards `w`."""
    settings = dict(
        model=model,
        **{split: gue_file(run.task, split) for split in SPLITS},
        out=run.of(model_of(w)).folder(),
        **gue_settings(run.task),
        select_by=setting(w.genome, "gue", "select_by"),
        lr=setting(w.genome, "gue", "lr"),
        batch_size=setting(w.genome, "gue", "batch_size"),
        seed=run.seed,
        threads=GUE["threads"],
        fp16=setting(w.genome, "gue", "fp16"),
        trust_remote_code=trusts_remote_code(w),
        meta=model_meta(w, layout.GUE, task=run.task, seed=run.seed),
    )
    return model_settings(w, settings)


def fewshot_run(w, model, run):
    """Settings of a few-shot run (cmgems.finetune.Settings): GeneMask's protocol."""
    regime = fewshot_regime(run.shots)
    dataset = FEW["datasets"][run.task]
    settings = dict(
        model=model,
        train=fewshot_training_set(run),
        test=dataset["test"],
        out=run.of(model_of(w)).folder(),
        max_length=dataset["max_length"],
        epochs=regime["epochs"],
        lr=regime["lr"],
        batch_size=regime["batch_size"],
        warmup_ratio=FEW["warmup_ratio"],
        weight_decay=FEW["weight_decay"],
        hidden_dropout=FEW["hidden_dropout"],
        seed=run.seed,
        threads=FEW["threads"],
        trust_remote_code=trusts_remote_code(w),
        meta=model_meta(
            w, layout.FEWSHOT, dataset=run.task, shots=run.shots, seed=run.seed
        ),
    )
    return model_settings(w, settings)


def baseline_gue_run(run):
    """Settings of the baseline on a GUE task (cmgems.baseline.Settings)."""
    return dict(
        **{split: gue_file(run.task, split) for split in SPLITS},
        out=run.folder(),
        k=K,
        seed=run.seed,
        meta=dict(kind=layout.GUE, task=run.task, seed=run.seed),
    )


def baseline_fewshot_run(run):
    """Settings of the baseline on a few-shot run (cmgems.baseline.Settings)."""
    return dict(
        train=fewshot_training_set(run),
        test=FEW["datasets"][run.task]["test"],
        out=run.folder(),
        k=K,
        seed=run.seed,
        meta=dict(
            kind=layout.FEWSHOT, dataset=run.task, shots=run.shots, seed=run.seed
        ),
    )


# Keys of a run's settings that do not define what it computes: where it writes and reads its model
# (the run's identity says which), its CPU threads, its identity itself, its cache folder.
NOT_DEFINING = ("out", "model", "threads", "meta", "cache")


def run_settings(run):
    """The settings that define `run` of the grid, as its `metrics.json` records them under `settings`."""
    if run.model is None:
        build = baseline_gue_run if run.kind == layout.GUE else baseline_fewshot_run
        settings = build(run)
    else:
        build = gue_run if run.kind == layout.GUE else fewshot_run
        settings = build(run.model, model_dir(run.model), run)
    return {key: value for key, value in settings.items() if key not in NOT_DEFINING}


def declared_settings():
    """{run folder: run_settings} of every run of the grid, as JSON text (keys sorted)."""
    settings = {run.folder(): run_settings(run) for run in GRID.runs()}
    return json.dumps(settings, sort_keys=True)


def settings_digest(text):
    """The SHA-256 of declared_settings' text."""
    return hashlib.sha256(text.encode()).hexdigest()


def write_declared_settings(path, log):
    """The declared settings into `path` (atomically); their digest and run count into `log`."""
    text = declared_settings()
    with atomic_output(path) as tmp:
        Path(tmp).write_text(text)
    Path(log).write_text(
        f"settings of {len(GRID.runs())} runs, sha256 {settings_digest(text)}\n"
    )


def cluster_jobs():
    """Cluster jobs of the whole grid: {stage: (jobs, asks for GPUs)} (local rules excluded)."""
    models = len(GRID.models())
    baselines = len(BASELINE_GUE_PACKS) + len(FEWSHOT_PACKS)
    # per genome: genome_contigs, corpus_finalize, pmi_merge, pmi_score; corpus_chunk and
    # pmi_count per contig
    data = sum(
        4 + len(genome_contigs(g)) + len(pmi_contigs(g)) for g in config["genomes"]
    )
    return {
        "pretraining": (len(GRID.pretrained), asks_gpu(PRETRAIN_RESOURCES)),
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
    env = (
        "; its GPU jobs' conda env (--use-conda) is envs/torch-cuda.yaml (a CUDA build of torch)"
        if totals[True]
        else ""
    )
    return (
        f"cmgems: the whole grid is {totals[True]} GPU jobs ({', '.join(parts[True]) or 'none'}) "
        f"and {totals[False]} CPU jobs ({', '.join(parts[False])}) on a cluster{env}; "
        "Snakemake's job stats count those still to run"
    )


if workflow.is_main_process:  # once, not in every cluster job
    logger.info(jobs_summary())
