"""The results layout: where every output lives, what identifies an evaluation run, and the report's
tables and figures. The one home of these names: the workflow, the report and the tests take them
from here. Standard library only: Snakemake imports it while it builds the DAG.

    ROOT/{genome}/contigs/{contig}.parquet, summary.json         cleaned contigs
    ROOT/{genome}/corpus/{train,validation}/{contig}.parquet       pretraining chunks; manifest.json
    ROOT/{genome}/tokenizer/                                       Hugging Face tokenizer
    ROOT/{genome}/pmi/ngram_counts.parquet, pmi.parquet            n-gram counts, PMI scores
    ROOT/{genome}/models/{model}/{masking}/{steps}/                model/, metrics.csv, summary.json
    ROOT/{genome}/gue/{model}/{masking}/{steps}/{task}/seed{seed}/                metrics.json,
    ROOT/{genome}/fewshot/{model}/{masking}/{steps}/{dataset}/{shots}/seed{seed}/ predictions.parquet
    ROOT/baseline/gue/{task}/, ROOT/baseline/fewshot/{dataset}/{shots}/seed{seed}/  (the k-mer baseline)
    ROOT/fewshot_sets/{dataset}/{shots}/seed{seed}.csv             few-shot training sets
    ROOT/report/tables/{table}.csv|md|tex, ROOT/report/figures/{figure}.png|pdf   (REPORT)
    ROOT/report/settings.json                                      the runs' declared settings
    .cmgems/packs/{a run's folder}/                                the pack cache (cmgems.packs)

ROOT is `results` in the workflow. Every function takes strings that may be Snakemake wildcards
("{genome}") and returns a path as a string. Published checkpoints are evaluated as the models
(EXTERNAL, NAME, PUBLISHED, 0).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from typing import NamedTuple

from cmgems.errors import CmgemsError

ROOT = "results"
PACK_CACHE = ".cmgems/packs"  # outside ROOT, so that nothing reading ROOT counts a run twice
RECORD, PREDICTIONS = "metrics.json", "predictions.parquet"  # the files of an evaluation run
RUN_FILES = (RECORD, PREDICTIONS)
# The contents of a pretraining run's folder (Model.folder()).
MODEL_FOLDER, CURVES, SUMMARY, CHECKPOINTS = "model", "metrics.csv", "summary.json", "checkpoint"
GUE, FEWSHOT = "gue", "fewshot"  # the kinds of evaluation runs
EXTERNAL, PUBLISHED = "external", "published"  # genome and masking of the published checkpoints
BASELINE, FEWSHOT_SETS, REPORT_FOLDER = "baseline", "fewshot_sets", "report"
# Folders under ROOT that are not genomes; no genome may take their names.
RESERVED = (EXTERNAL, BASELINE, REPORT_FOLDER, FEWSHOT_SETS)

Folder = str | os.PathLike


# ------------------------------------------------------------------------------------ per genome
# What lies below ROOT/{genome}/ (`of_genome`); {contig} is filled in from its keyword.
CONTIGS = "contigs"  # {contig}.parquet, summary.json
CORPUS_CHUNK = "corpus_chunks/{contig}.parquet"  # a contig's chunks before the corpus is split (temporary)
CORPUS = "corpus"
VALIDATION = "corpus/validation"  # the validation shards, {contig}.parquet
TOKENIZER = "tokenizer"
PMI_COUNTS = "pmi/counts/{contig}.parquet"  # a contig's n-gram counts before they are merged (temporary)
NGRAM_COUNTS = "pmi/ngram_counts.parquet"
PMI = "pmi/pmi.parquet"


def of_genome(genome: str, what: str, root: Folder = ROOT, **fields: str) -> str:
    """The path of `what` (CONTIGS, CORPUS, ..., PMI) of `genome`, e.g. of_genome("hg38", PMI_COUNTS,
    contig="chr1") == "results/hg38/pmi/counts/chr1.parquet"."""
    return f"{root}/{genome}/{what.format(**fields)}"


def fewshot_set(dataset: str, shots: int | str, seed: int | str, root: Folder = ROOT) -> str:
    return f"{root}/{FEWSHOT_SETS}/{dataset}/{shots}/seed{seed}.csv"


# ------------------------------------------------------------------------------- runs and models
class Model(NamedTuple):
    """A pretrained model: ours, or a published checkpoint as (EXTERNAL, NAME, PUBLISHED, 0)."""

    genome: str
    model: str
    masking: str
    steps: int | str

    def folder(self, root: Folder = ROOT) -> str:
        """The pretraining run's folder: model/, metrics.csv, summary.json."""
        return f"{root}/{self.genome}/models/{self.model}/{self.masking}/{self.steps}"

    def checkpoint(self, root: Folder = ROOT) -> str:
        return f"{self.folder(root)}/{MODEL_FOLDER}"

    def curves(self, root: Folder = ROOT) -> str:
        """metrics.csv: one row per logged step."""
        return f"{self.folder(root)}/{CURVES}"

    def summary(self, root: Folder = ROOT) -> str:
        return f"{self.folder(root)}/{SUMMARY}"

    def evaluations(self, kind: str, root: Folder = ROOT) -> str:
        """The folder of the model's runs of `kind` (GUE or FEWSHOT)."""
        return f"{root}/{self.genome}/{kind}/{self.model}/{self.masking}/{self.steps}"


WILDCARDS = Model("{genome}", "{model}", "{masking}", "{steps}")
BASELINE_MODEL = Model("none", "kmer_logreg", "none", 0)  # the identity the baseline's records give


@dataclass(frozen=True)
class Run:
    """One evaluation run: a model (None: the k-mer baseline) fine-tuned on a GUE task, or on a
    few-shot dataset's training set of `shots` per class, with `seed`."""

    kind: str  # GUE or FEWSHOT
    model: Model | None
    task: str  # the GUE task or the few-shot dataset
    seed: int
    shots: int | None = None  # few-shot runs only

    def folder(self, root: Folder = ROOT) -> str:
        """The run's folder (RUN_FILES). The baseline's GUE runs, one seed only, have no seed folder."""
        base = f"{root}/{BASELINE}/{self.kind}" if self.model is None else self.model.evaluations(self.kind, root)
        if self.kind == GUE:
            return f"{base}/{self.task}" if self.model is None else f"{base}/{self.task}/seed{self.seed}"
        return f"{base}/{self.task}/{self.shots}/seed{self.seed}"

    def of(self, model: Model | None) -> Run:
        """The same run of another model."""
        return replace(self, model=model)


@dataclass(frozen=True)
class Grid:
    """What a configuration runs: the genomes, our pretraining runs, the published checkpoints, the
    GUE tasks and seeds, the few-shot (dataset, shots, seed) runs, and whether the baseline runs.
    The workflow declares its outputs from it; the report reads exactly those (`to_json`)."""

    genomes: tuple[str, ...]
    pretrained: tuple[Model, ...]
    external: tuple[Model, ...]
    gue_tasks: tuple[str, ...]
    gue_seeds: tuple[int, ...]
    fewshot: tuple[tuple[str, int, int], ...]
    baseline: bool
    variants: tuple[tuple[str, str], ...] = ()  # (genome, the genome it is a variant of): the released preset's
    published_as: tuple[tuple[str, str], ...] = ()  # (external model, its model in the published GUE table)


    def models(self) -> list[Model]:
        """Every evaluated model: ours, then the published checkpoints."""
        return [*self.pretrained, *self.external]

    def gue_runs(self) -> list[Run]:
        """Each GUE task with each seed, of no model yet (`Run.of` gives them one)."""
        return [Run(GUE, None, task, seed) for task in self.gue_tasks for seed in self.gue_seeds]

    def fewshot_runs(self) -> list[Run]:
        """Each few-shot run, of no model yet."""
        return [Run(FEWSHOT, None, dataset, seed, shots) for dataset, shots, seed in self.fewshot]

    def baseline_runs(self) -> list[Run]:
        """The baseline's runs: every GUE task with the first seed (it is deterministic), every few-shot run."""
        if not self.baseline:
            return []
        return [Run(GUE, None, task, self.gue_seeds[0]) for task in self.gue_tasks] + self.fewshot_runs()

    def runs(self) -> list[Run]:
        """Every evaluation run: each model's GUE and few-shot runs, then the baseline's."""
        per_model = self.gue_runs() + self.fewshot_runs()
        return [run.of(model) for model in self.models() for run in per_model] + self.baseline_runs()

    def to_json(self) -> str:
        return json.dumps({name: getattr(self, name) for name in self.__dataclass_fields__}, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Grid:
        """The grid of `to_json`'s text; CmgemsError when it is not one."""
        try:
            doc = json.loads(text)
            return cls(
                genomes=tuple(map(str, doc["genomes"])),
                pretrained=tuple(Model(*entry) for entry in doc["pretrained"]),
                external=tuple(Model(*entry) for entry in doc["external"]),
                gue_tasks=tuple(map(str, doc["gue_tasks"])),
                gue_seeds=tuple(map(int, doc["gue_seeds"])),
                fewshot=tuple((str(d), int(shots), int(seed)) for d, shots, seed in doc["fewshot"]),
                baseline=bool(doc["baseline"]),
                variants=tuple((str(genome), str(base)) for genome, base in doc.get("variants", [])),
                published_as=tuple((str(name), str(row)) for name, row in doc.get("published_as", [])),
            )
        except (ValueError, KeyError, TypeError) as err:
            raise CmgemsError(f"not a grid of runs (cmgems.layout.Grid): {err!r}") from None


def cache(folder: str) -> str:
    """The pack cache's entry of a run's folder."""
    return f"{PACK_CACHE}/{folder}"


# ------------------------------------------------------------------------------------------ report
class ReportItem(NamedTuple):
    """A table or figure of the report: its file name, its category in Snakemake's HTML report and
    its caption (workflow/report/{caption}.rst)."""

    name: str
    category: str
    caption: str


TABLES = (  # the claims first; its category sorts first in Snakemake's HTML report too (by name)
    ReportItem("claims", "Claims", "table_claims"),
    *(ReportItem(name, "GUE", "table_gue") for name in ("gue", "gue_summary", "gue_by_task")),
    ReportItem("fewshot", "Few-shot", "table_fewshot"),
    ReportItem("pretraining", "Pretraining", "table_pretraining"),
    ReportItem("ours_vs_published", "Published", "table_published"),
    ReportItem("protocol", "Published", "table_protocol"),
    ReportItem("variants", "Variants", "table_variants"),
)
FIGURE_CATEGORIES = {  # each figure's caption is workflow/report/{its name}.rst
    "fewshot_curves": "Few-shot",
    "gue_mcc": "GUE",
    "pretraining_curves": "Pretraining",
    "pmi_top20": "PMI",
    "pmi_distribution": "PMI",
    "masks": "Masking",
}
FIGURES = tuple(ReportItem(name, category, name) for name, category in FIGURE_CATEGORIES.items())
TABLE_FORMATS = ("csv", "md", "tex")
FIGURE_FORMATS = ("png", "pdf")


REPORT = f"{ROOT}/{REPORT_FOLDER}"
REPORT_SETTINGS = f"{REPORT}/settings.json"  # {run folder: the settings the config declares for the run}


def table(name: str, fmt: str = "csv", folder: Folder = REPORT) -> str:
    """A table of the report in `folder`."""
    return f"{folder}/tables/{name}.{fmt}"


def figure(name: str, fmt: str = "png", folder: Folder = REPORT) -> str:
    """A figure of the report in `folder`."""
    return f"{folder}/figures/{name}.{fmt}"
