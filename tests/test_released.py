"""config/released.yaml: the released GeneMask / CM-GEMS code's behaviour, layered on the paper config
(`--configfile config/config.yaml config/released.yaml`) as the genome hg38_released, a variant of hg38
run beside it. It plans on a fresh clone, and its commands differ from hg38's exactly where they should; what it switches on does what the released code does: the published
Data-A ranking (fetched, SHA-1 checked), padding attended and the mean of micro-batch means in
pretraining, fp16 GUE fine-tuning."""

from __future__ import annotations

import copy
import json
import os
import re
import shlex
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
import torch
import yaml

from cmgems import corpus, distributed, kmers, layout, masking, models, pmi, pretrain
from cmgems.download import git_blob_sha1
from cmgems.errors import CmgemsError
from cmgems.finetune import Settings as FinetuneSettings
from cmgems.finetune import finetune
from cmgems.layout import GUE, Model, Run
from conftest import SHARED_DATA
from test_finetune import planted
from test_pretrain import write_corpus
from test_workflow import REPO, job_counts, snakemake

CONFIGS = [str(REPO / "config" / "config.yaml"), str(REPO / "config" / "released.yaml")]
RUNS = [Model("hg38", "dnabert6", "cm_gems", 10000), Model("hg38", "logo", "genemask", 10000)]
GUE_RUN = Run(GUE, RUNS[0], "tf_0", 42)
PRESET = yaml.safe_load((REPO / "config" / "released.yaml").read_text())["genomes"]["hg38_released"]
OVERRIDES = PRESET["overrides"]
RANKING = OVERRIDES["pmi"]["ranking"]


def test_released_preset_plans_on_a_fresh_clone(tmp_path):
    result = snakemake("-n", "--quiet", "rules", "--configfile", *CONFIGS, "-d", str(tmp_path), timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    counts = job_counts(result.stdout + result.stderr)
    paper = yaml.safe_load(Path(CONFIGS[0]).read_text())
    fewshot_files = {f for d in paper["fewshot"]["datasets"].values() for f in [d["test"], *d["pooled"].values()]}
    assert PRESET["variant_of"] == "hg38" and counts["download_genome"] == 1  # one FASTA for both
    assert counts["corpus_chunk"] == 24 + 25  # hg38: chr1-22, X, Y; hg38_released: and M
    assert counts["pmi_count"] == 24 + 3  # hg38_released: chr1-3
    assert counts["fetch_fewshot"] == len(fewshot_files) + 1  # and the published ranking
    pre = paper["pretrain"]
    assert counts["pretrain"] == 2 * len(pre["models"]) * len(pre["masking"]) * len(pre["steps"]) and counts["report"] == 1


def planned_commands(tmp_path, genome: str, *configs: str) -> dict[str, str]:
    """{job: shell command} of a dry run towards `genome`'s PMI table, two pretraining runs and a GUE run;
    job = the rule and its log file; `genome` is written hg38 in both (so that the preset's jobs and
    commands compare with the paper's where only the genome's name differs)."""
    runs = [run._replace(genome=genome) for run in RUNS]
    targets = [layout.of_genome(genome, layout.PMI), *(run.summary() for run in runs),
               f"{GUE_RUN.of(runs[0]).folder()}/{layout.RECORD}"]
    result = snakemake("-n", "-p", *targets, "--configfile", *configs, "-d", str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    commands = {}
    for line in result.stdout.splitlines():
        if line.startswith("Shell command: "):
            command = line.removeprefix("Shell command: ")
            command = command.replace(genome, "hg38")
            commands[re.search(r"> (logs/\S+)", command).group(1)] = command
    return commands


def options(command: str, *names: str) -> dict[str, str]:
    words = shlex.split(command)
    return {name: words[words.index(name) + 1] for name in names if name in words}


def test_released_preset_changes_the_corpus_pmi_pretraining_and_gue_commands(tmp_path, pack_specs):
    paper = planned_commands(tmp_path / "paper", "hg38", CONFIGS[0])
    released = planned_commands(tmp_path / "released", "hg38_released", *CONFIGS)
    assert planned_commands(tmp_path / "both", "hg38", *CONFIGS) == paper  # hg38 runs as without the preset
    fetch = f"logs/fetch/{RANKING['path']}.log"
    assert set(released) - set(paper) == {"logs/hg38/corpus_chunk/chrM.log", fetch}
    assert set(paper) - set(released) == {f"logs/hg38/pmi_count/chr{i}.log" for i in [*range(4, 23), "X", "Y"]}
    changed = {job for job in paper.keys() & released.keys() if paper[job] != released[job]}
    chunks = {f"logs/hg38/corpus_chunk/chr{i}.log" for i in [*range(1, 23), "X", "Y"]}
    gue_pack = "logs/hg38/gue/dnabert6/cm_gems/10000/pack_tf.log"
    assert changed == chunks | {"logs/hg38/genome_contigs.log", "logs/hg38/corpus_finalize.log",
                                "logs/hg38/pmi_merge.log", "logs/hg38/pmi_score.log", gue_pack,
                                *(f"logs/hg38/pretrain/{run.model}/{run.masking}/{run.steps}.log" for run in RUNS)}
    assert options(released[fetch], "--url", "--sha1", "--out") == {
        "--url": RANKING["url"], "--sha1": RANKING["sha1"], "--out": RANKING["path"]}
    assert RANKING["url"] == ("https://raw.githubusercontent.com/roysoumya/GeneMask/"
                              "c7614461323015ffcbbdb39fc4778e9255ddfcab/Data-A_norm-pmi-score-ranking.csv")
    assert pack_specs(released[gue_pack])[GUE_RUN.folder()]["fp16"] is True
    assert pack_specs(paper[gue_pack])[GUE_RUN.folder()]["fp16"] is False

    contigs = shlex.split(released["logs/hg38/genome_contigs.log"])
    assert "--splice-n" in contigs and "chrM" in contigs
    flags = ("--max-tokens", "--min-tokens", "--random-max-tokens", "--full-length-prob")
    assert options(released["logs/hg38/corpus_chunk/chrM.log"], *flags) == dict(zip(flags, ["506", "1", "505", "0.5"]))
    assert options(paper["logs/hg38/corpus_chunk/chr1.log"], *flags) == dict(zip(flags, ["510", "5", "0", "0.5"]))
    merged = shlex.split(released["logs/hg38/pmi_merge.log"])
    counts = [layout.of_genome("hg38", layout.PMI_COUNTS, contig=f"chr{i}") for i in (1, 2, 3)]
    assert [w for w in merged if w.startswith(str(Path(counts[0]).parent))] == counts
    assert options(released["logs/hg38/pmi_score.log"], "--definition")["--definition"] == "genemask"
    assert options(paper["logs/hg38/pmi_score.log"], "--definition")["--definition"] == "npmi"

    recipe = ("--eval-every", "--eval-batch-means", "--eval-sequences", "--sequences-per-step", "--lr",
              "--reproduce-reference-bugs", "--ranking")
    for run, masking_options in (("dnabert6/cm_gems/10000", {"threshold": 1.0, "reproduce_reference_bugs": True,
                                                              "global_probability": 0.0176}),
                                 ("logo/genemask/10000", {"reproduce_reference_bugs": True,
                                                          "special_positions_best": True})):
        ours, theirs = paper[f"logs/hg38/pretrain/{run}.log"], released[f"logs/hg38/pretrain/{run}.log"]
        assert json.loads(options(theirs, "--masking-options")["--masking-options"]) == masking_options
        assert options(theirs, *recipe) == {"--eval-every": "500", "--eval-batch-means": "6", "--eval-sequences": "2000",
                                            "--sequences-per-step": "250", "--lr": "0.0008",
                                            "--reproduce-reference-bugs": "True", "--ranking": RANKING["path"]}
        assert "--pmi" not in shlex.split(theirs)
        assert options(ours, *recipe) == {"--eval-every": "0", "--eval-sequences": "2000", "--sequences-per-step": "250",
                                          "--lr": "0.0008"}
        assert options(ours, "--pmi")["--pmi"] == layout.of_genome("hg38", layout.PMI)


@pytest.mark.parametrize("name", masking.names())
def test_released_masking_options_build(name):
    """Every strategy builds with the merged options; each PMI-guided one as released."""
    preset = OVERRIDES["pretrain"]["masking_options"]
    paper = yaml.safe_load((REPO / "config" / "config.yaml").read_text())["pretrain"]["masking_options"]
    ranks = np.arange(kmers.vocab_size(6)) if masking.needs_ranks(name) else None
    strategy = masking.build(name, k=6, token_ranks=ranks, options={**paper.get(name, {}), **preset.get(name, {})})
    assert strategy.options.get("reproduce_reference_bugs") is (True if masking.needs_ranks(name) else None)


# ------------------------------------------------------------------------------ the published ranking
# Data-A_norm-pmi-score-ranking.csv's columns (GeneMask, Code-C cells 14-19); the rank read is the last
DATA_A_COLUMNS = ["ngram", "naive.pmi", "true.pmi", "dp.true.pmi", "norm_dp_true_pmi", "ngram_size", "naive.pmi.rank",
                  "dp.true.pmi.rank", "norm_dp_true_pmi_rank", "adv_pmi_rank_drop", "norm_adv_pmi_rank_drop",
                  "norm_pmi_rank_rel"]


def write_ranking(path: Path, seed: int) -> np.ndarray:
    """A ranking in Data-A's format: the 4096 6-mers in a seeded order, ranked 1.. in that order (the
    other columns 0). Returns the token ranks it gives, int64 (vocab_size(6),) (specials: 4097)."""
    vocab = kmers.vocabulary(6)[kmers.NUM_SPECIAL:]
    order = np.random.default_rng(seed).permutation(len(vocab))
    columns = {name: [0] * len(vocab) for name in DATA_A_COLUMNS}
    columns.update(ngram=[vocab[i] for i in order], ngram_size=[6] * len(vocab),
                   norm_pmi_rank_rel=list(range(1, len(vocab) + 1)))
    pacsv.write_csv(pa.table(columns), path)
    ranks = np.full(kmers.vocab_size(6), len(vocab) + 1, dtype=np.int64)
    ranks[kmers.NUM_SPECIAL + order] = np.arange(1, len(vocab) + 1)
    return ranks


def fetch_ranking(tmp_path: Path, ranking: dict) -> tuple[int, str]:
    """Run the DAG (the demo config with `pmi.ranking`) towards the ranking file: (exit code, its fetch log)."""
    config = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
    config["pmi"]["ranking"] = ranking
    cfg = tmp_path / "ranking.yaml"
    cfg.write_text(yaml.safe_dump(config))
    result = snakemake("--cores", "1", ranking["path"], "--configfile", str(cfg), "-d", str(tmp_path))
    log = tmp_path / "logs" / "fetch" / f"{ranking['path']}.log"
    return result.returncode, log.read_text() if log.exists() else result.stderr[-3000:]


def test_the_published_ranking_is_fetched_by_the_dag_checked_and_read(tmp_path, http_folder):
    folder, url = http_folder
    expected = write_ranking(folder / "Data-A.csv", seed=1)
    sha1 = git_blob_sha1(folder / "Data-A.csv")
    code, log = fetch_ranking(tmp_path, {"path": "fetched/Data-A.csv", "url": f"{url}/Data-A.csv", "sha1": sha1})
    assert code == 0, log
    assert (tmp_path / "fetched" / "Data-A.csv").read_bytes() == (folder / "Data-A.csv").read_bytes()
    assert np.array_equal(pmi.published_token_ranks(tmp_path / "fetched" / "Data-A.csv", 6), expected)
    code, log = fetch_ranking(tmp_path, {"path": "fetched/wrong.csv", "url": f"{url}/Data-A.csv", "sha1": "0" * 40})
    assert code != 0 and f"git blob SHA-1 mismatch for {url}/Data-A.csv: expected {'0' * 40}, got {sha1}" in log
    assert not (tmp_path / "fetched" / "wrong.csv").exists()


def data_a() -> Path:
    """A local copy of GeneMask's Data-A (CMGEMS_DATA_A, or under ../shared/data/pmi/); skips when there is none."""
    path = Path(os.environ.get("CMGEMS_DATA_A", SHARED_DATA / "pmi" / "Data-A_norm-pmi-score-ranking.csv"))
    if not path.exists():
        pytest.skip(f"no copy of GeneMask's Data-A_norm-pmi-score-ranking.csv at {path} (set CMGEMS_DATA_A)")
    return path


def test_the_published_data_a_ranking():
    """The file released.yaml pins (its blob SHA-1): CCTCCC ranks first, then GGGAGG, GTGTGT, CCCAGC;
    TCGCGA last, of 4096 6-mers ranked 1..4096 (METHOD.md)."""
    path = data_a()
    assert git_blob_sha1(path) == RANKING["sha1"]
    ranks = pmi.published_token_ranks(path, 6)[kmers.NUM_SPECIAL:]
    vocab = np.array(kmers.vocabulary(6)[kmers.NUM_SPECIAL:])
    assert sorted(ranks.tolist()) == list(range(1, 4097))
    assert vocab[np.argsort(ranks)][[0, 1, 2, 3, -1]].tolist() == ["CCTCCC", "GGGAGG", "GTGTGT", "CCCAGC", "TCGCGA"]


def test_a_file_that_is_not_a_published_ranking_is_refused(tmp_path):
    (tmp_path / "table.csv").write_text("ngram,rank\nAAAAAA,1\n")
    with pytest.raises(CmgemsError, match="not a published PMI ranking with the columns ngram, ngram_size"):
        pmi.published_token_ranks(tmp_path / "table.csv", 6)
    write_ranking(tmp_path / "Data-A.csv", seed=0)
    with pytest.raises(CmgemsError, match="needs 5-mers"):
        pmi.published_token_ranks(tmp_path / "Data-A.csv", 5)


# ----------------------------------------------------------------- pretraining as the released code
def write_mixed_corpus(root: Path) -> Path:
    """A corpus of 60 bp and 20 bp chunks: micro-batches are padded and hold unequal masked tokens."""
    write_corpus(root, n_train=160, n_val=16, contigs={"chrA": 160})
    rng = np.random.default_rng(1)
    seqs = [np.frombuffer(b"ACGT", np.uint8)[rng.integers(0, 4, 20)].tobytes() for _ in range(160)]
    starts = np.arange(160, dtype=np.int64) * 20
    pq.write_table(pa.table({"contig": ["chrB"] * 160, "start": starts, "end": starts + 20,
                             "sequence": pa.array(seqs, pa.binary())}), root / "train" / "chrB.parquet")
    corpus.write_training_index(root)
    return root


@pytest.fixture(scope="module")
def mixed_corpus(tmp_path_factory) -> Path:
    return write_mixed_corpus(tmp_path_factory.mktemp("mixed"))


@pytest.mark.parametrize("bugs", [False, True])
def test_the_reference_bugs_minimise_the_mean_of_micro_batch_means_attending_to_padding(mixed_corpus, tmp_path, bugs):
    """One step's gradient, against Hugging Face's masked-LM loss computed per micro-batch (the mean over
    its masked tokens): as released (the flag), the mean of those means without an attention mask;
    by default the mean over all masked tokens of the step, padding masked."""
    s = pretrain.Settings(corpus=str(mixed_corpus), out=str(tmp_path / "run"), model="tiny", masking="dnabert",
                          max_steps=5, sequences_per_step=16, batch_size=4, max_positions=64, eval_sequences=8,
                          workers=0, seed=3, reproduce_reference_bugs=bugs)
    r = pretrain.build(s, distributed.Dist())
    batch = pretrain.Batches(r).next()
    reference = copy.deepcopy(r.model)
    pretrain.accumulate_gradients(r, batch)

    means, counts = [], []
    for mb in batch["micro"]:
        ids = mb["input_ids"]
        labels = torch.full_like(ids, masking.IGNORE_INDEX)
        labels.view(-1)[mb["masked_positions"]] = mb["masked_ids"]
        attention = None if bugs else ids.ne(kmers.PAD_ID)
        means.append(reference(input_ids=ids, attention_mask=attention, labels=labels).loss)
        counts.append(len(mb["masked_ids"]))
    assert any(mb["padded"] for mb in batch["micro"]) and len(set(counts)) > 1
    mean_of_means = torch.stack(means).mean()
    token_mean = sum(m * n for m, n in zip(means, counts)) / sum(counts)
    assert abs(float((mean_of_means - token_mean).detach())) > 1e-4  # the two objectives differ on this step
    (mean_of_means if bugs else token_mean).backward()
    expected = dict(reference.named_parameters())
    num = sum(float(((p.grad - expected[n].grad) ** 2).sum()) for n, p in r.model.named_parameters())
    den = sum(float((p.grad ** 2).sum()) for p in expected.values())
    assert (num / den) ** 0.5 < 1e-5


@pytest.mark.parametrize("attend", [False, True])
def test_attending_to_padding_lets_the_padding_change_a_sequence_s_logits(attend):
    """A sequence scored alone and as the shorter row of a padded batch: the same loss when padding is
    masked; another when it is attended (the released code)."""
    torch.manual_seed(0)
    model = models.masked_lm(models.bert_config("tiny", kmers.vocab_size(6), 64))
    objective = pretrain.MaskedLMObjective(model, attend_padding=attend).eval()
    row = torch.randint(kmers.NUM_SPECIAL, kmers.vocab_size(6), (20,))
    longer = torch.randint(kmers.NUM_SPECIAL, kmers.vocab_size(6), (40,))
    batch = torch.full((2, 40), kmers.PAD_ID)
    batch[0, :20], batch[1] = row, longer
    positions, targets = torch.tensor([3, 7, 15]), row[[3, 7, 15]]
    with torch.no_grad():
        alone = objective(row.unsqueeze(0), positions, targets, padded=False)[0]
        padded = objective(batch, positions, targets, padded=True)[0]  # row 0: the same flat indices
    assert (abs(float(alone - padded)) > 1e-3) if attend else float(alone) == pytest.approx(float(padded), abs=1e-5)


# ------------------------------------------------------------------------------------ fp16 GUE fine-tuning
def test_fp16_fine_tuning_runs_on_the_cpu_and_is_recorded(tiny_model, tmp_path):
    """--fp16 (the preset's gue.fp16): float16 autocast with loss scaling, here on the CPU; metrics.json
    records the precision, and the scores differ from fp32's by float16 rounding only."""
    train, dev = planted(tmp_path / "train.csv", 64, 0), planted(tmp_path / "dev.csv", 32, 1)
    results = {}
    for fp16 in (False, True):
        s = FinetuneSettings(model=str(tiny_model), train=str(train), dev=str(dev), test=str(dev),
                             out=str(tmp_path / f"fp16-{fp16}"), max_length=40, lr=1e-3, batch_size=16,
                             max_steps=6, eval_steps=3, seed=1, fp16=fp16)
        results[fp16] = finetune(s)
    assert [results[f]["settings"]["precision"] for f in (False, True)] == ["fp32", "fp16"]
    assert results[True]["settings"]["fp16"] is True
    losses = [[e["loss"] for e in results[f]["selection"]["evaluations"]] for f in (False, True)]
    assert np.isfinite(losses).all() and losses[0] != losses[1]
    assert np.allclose(losses[0], losses[1], atol=0.02)
