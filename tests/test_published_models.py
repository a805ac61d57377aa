"""Published checkpoints (`pretrained_models`): tiny local models of each family (BERT with cmgems'
k-mer vocabulary, BERT with a BPE tokenizer as DNABERT-2, ESM with a 6-mer tokenizer as the Nucleotide
Transformer), saved with save_pretrained and served by a local HTTP server in the hub's layout: fetched
at a pinned commit (cmgems.hub), checksums refused, resumed after a cut, remote code refused without the
opt-in, fine-tuned in a GUE and a few-shot pack each; and the workflow's plan of a `repo` entry."""

from __future__ import annotations

import functools
import hashlib
import http.server
import itertools
import json
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import yaml

from cmgems import cli, hub, layout
from cmgems.errors import CmgemsError
from cmgems.labelled import write_labelled
from cmgems.layout import FEWSHOT, GUE, Model, Run

REPO = Path(__file__).resolve().parents[1]
REVISION = "0123456789abcdef0123456789abcdef01234567"
FAMILIES = ("kmer_bert", "bpe_bert", "esm")
REMOTE_CODE = '''from transformers import BertForSequenceClassification


class OwnCodeForSequenceClassification(BertForSequenceClassification):
    """A model class of the folder's own, as DNABERT-2 ships one."""
'''


# ------------------------------------------------------------------------------------ tiny models
def tiny(cls, config_cls, seed=0, **fields):
    """A seeded tiny model of `cls` (2 layers, 32 hidden units, 64 positions)."""
    import torch

    config = config_cls(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                        max_position_embeddings=64, **fields)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return cls(config)


def kmer_bert(folder: Path) -> Path:
    """DNABERT-6's family: BERT over cmgems' 6-mer vocabulary, its kmer.json and tokenizer."""
    from transformers import BertConfig, BertForMaskedLM

    from cmgems import kmers, models

    return models.save_folder(folder, tiny(BertForMaskedLM, BertConfig, vocab_size=kmers.vocab_size(6)), k=6, max_positions=64)


def bpe_bert(folder: Path, own_code: bool = False) -> Path:
    """DNABERT-2's family: BERT with a BPE tokenizer trained on random DNA (DNABERT-2's special tokens and
    ids: [UNK] 0, [CLS] 1, [SEP] 2, [PAD] 3, [MASK] 4); with `own_code`, a model class of its own."""
    from tokenizers import Tokenizer, models, processors, trainers
    from transformers import BertConfig, BertForMaskedLM, PreTrainedTokenizerFast

    specials = ["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"]
    bpe = Tokenizer(models.BPE(unk_token="[UNK]"))
    corpus = ["".join(np.random.default_rng(i).choice(list("ACGT"), 200)) for i in range(50)]
    bpe.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=80, special_tokens=specials, show_progress=False))
    bpe.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 1), ("[SEP]", 2)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]",
                                        pad_token="[PAD]", mask_token="[MASK]", model_max_length=64)
    model = tiny(BertForMaskedLM, BertConfig, vocab_size=bpe.get_vocab_size(), pad_token_id=3)
    if own_code:
        model.config.auto_map = {"AutoModelForSequenceClassification": "own_model.OwnCodeForSequenceClassification"}
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    if own_code:
        (folder / "own_model.py").write_text(REMOTE_CODE)
    return folder


def esm(folder: Path) -> Path:
    """The Nucleotide Transformer's family: an ESM masked LM with an EsmTokenizer over 6-mers and bases
    (non-overlapping 6-mers, single bases where fewer than 6 remain)."""
    from transformers import EsmConfig, EsmForMaskedLM, EsmTokenizer

    folder.mkdir(parents=True)
    vocab = ["<unk>", "<pad>", "<mask>", "<cls>", "<eos>", "<bos>"]
    vocab += ["".join(p) for p in itertools.product("ACGT", repeat=6)] + list("ACGTN")
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    EsmTokenizer(str(folder / "vocab.txt"), model_max_length=64).save_pretrained(folder)
    model = tiny(EsmForMaskedLM, EsmConfig, vocab_size=len(vocab), pad_token_id=1, mask_token_id=2,
                 position_embedding_type="rotary", token_dropout=False)
    model.save_pretrained(folder)
    return folder


BUILD = {"kmer_bert": kmer_bert, "bpe_bert": functools.partial(bpe_bert, own_code=True), "esm": esm}
TOKENIZER = {"kmer_bert": "kmer", "bpe_bert": "own", "esm": "own"}


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, Path]:
    """Each family's model folder, built once."""
    root = tmp_path_factory.mktemp("families")
    return {family: build(root / family) for family, build in BUILD.items()}


# ------------------------------------------------------------------------------------ the hub
class Hub(http.server.BaseHTTPRequestHandler):
    """Serves `root` (the hub's layout REPO/resolve/REVISION/FILE), honouring Range; the first GET of a
    path in `cut` stops half way. `requests` lists (path, Range header) of every GET."""

    root: Path
    cut: set[str] = set()
    requests: list[tuple[str, str | None]] = []

    def log_message(self, *args):
        pass

    def do_GET(self):
        path = self.root / self.path.lstrip("/")
        if not path.is_file():
            self.send_error(404)
            return
        header = self.headers.get("Range")
        type(self).requests.append((self.path, header))
        data = path.read_bytes()
        start = int(header.removeprefix("bytes=").rstrip("-")) if header else 0
        self.send_response(206 if header else 200)
        if header:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        body = data[start:]
        if self.path in type(self).cut:
            type(self).cut.discard(self.path)
            body = body[: len(body) // 2]
            self.close_connection = True
        self.wfile.write(body)


@pytest.fixture()
def hub_server(tmp_path):
    """(root folder, endpoint URL) of a local hub."""
    root = tmp_path / "hub"
    root.mkdir()
    handler = type("Served", (Hub,), {"root": root, "cut": set(), "requests": []})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}", handler
    httpd.shutdown()
    httpd.server_close()


def publish(folder: Path, root: Path, repo: str) -> dict[str, str]:
    """Copy a model folder to the hub at REVISION; its files' {name: sha256}."""
    served = root / repo / "resolve" / REVISION
    shutil.copytree(folder, served)
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(served.iterdir())}


# ------------------------------------------------------------------------------------ fetching
def test_fetch_writes_the_folder_whole_with_its_checksums(built, hub_server, tmp_path):
    root, endpoint, handler = hub_server
    files = publish(built["esm"], root, "org/nt-tiny")
    out = hub.fetch_model("org/nt-tiny", REVISION, files, tmp_path / "models" / "nt", endpoint)
    assert {p: (out / p).read_bytes() for p in files} == {p: (built["esm"] / p).read_bytes() for p in files}
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["nt"]  # no staging folder left
    assert sorted(path for path, _ in handler.requests) == sorted(f"/org/nt-tiny/resolve/{REVISION}/{p}" for p in files)


def test_a_wrong_or_missing_checksum_is_an_error_naming_the_file(built, hub_server, tmp_path):
    root, endpoint, _ = hub_server
    files = publish(built["esm"], root, "org/nt-tiny")
    out = tmp_path / "models" / "nt"
    wrong = dict(files, **{"model.safetensors": "0" * 64})
    with pytest.raises(CmgemsError, match=f"org/nt-tiny at {REVISION}, file model.safetensors: sha256 mismatch for "
                                          f".*expected {'0' * 64}, got {files['model.safetensors']}"):
        hub.fetch_model("org/nt-tiny", REVISION, wrong, out, endpoint, retries=0)
    assert not out.exists()
    staged = out.with_name("nt.part")
    assert not list(staged.glob("*.part")) and not (staged / "model.safetensors").exists()  # nothing half-written
    with pytest.raises(CmgemsError, match="file vocab.txt: its sha256 is missing or malformed"):
        hub.fetch_model("org/nt-tiny", REVISION, dict(files, **{"vocab.txt": ""}), out, endpoint)
    with pytest.raises(CmgemsError, match="revision 'main' is not a commit"):
        hub.fetch_model("org/nt-tiny", "main", files, out, endpoint)
    with pytest.raises(CmgemsError, match="files lacks config.json"):
        hub.fetch_model("org/nt-tiny", REVISION, {"vocab.txt": files["vocab.txt"]}, out, endpoint)
    with pytest.raises(CmgemsError, match="file absent.bin: download of .* failed: HTTP 404"):
        hub.fetch_model("org/nt-tiny", REVISION, {**files, "absent.bin": "0" * 64}, out, endpoint, retries=0)
    assert not out.exists()
    hub.fetch_model("org/nt-tiny", REVISION, files, out, endpoint)  # the right checksums: fetched
    assert (out / "model.safetensors").read_bytes() == (built["esm"] / "model.safetensors").read_bytes()


def test_a_cut_download_resumes_where_it_stopped(built, hub_server, tmp_path):
    """The weights' transfer is cut half way and not retried: the call fails, leaving no model folder but
    the checked files and the weights' .part; the next call fetches only the rest of the weights."""
    root, endpoint, handler = hub_server
    files = publish(built["kmer_bert"], root, "org/dnabert-tiny")
    weights = f"/org/dnabert-tiny/resolve/{REVISION}/model.safetensors"
    handler.cut.add(weights)
    out = tmp_path / "models" / "dnabert"
    with pytest.raises(CmgemsError, match="file model.safetensors: download of .* failed after 1 attempts"):
        hub.fetch_model("org/dnabert-tiny", REVISION, files, out, endpoint, retries=0)
    assert not out.exists()
    size = (built["kmer_bert"] / "model.safetensors").stat().st_size
    assert (out.with_name("dnabert.part") / "model.safetensors.part").stat().st_size == size // 2
    first = [path for path, _ in handler.requests]
    handler.requests.clear()
    hub.fetch_model("org/dnabert-tiny", REVISION, files, out, endpoint, retries=0)
    assert handler.requests[0] == (weights, f"bytes={size // 2}-")
    assert not {path for path, _ in handler.requests[1:]} & set(first)  # the checked files are not fetched again
    assert (out / "model.safetensors").read_bytes() == (built["kmer_bert"] / "model.safetensors").read_bytes()
    assert not out.with_name("dnabert.part").exists()


# ------------------------------------------------------------------------------------ fine-tuning
def labelled(folder: Path, seed: int, rows: int = 24) -> dict[str, str]:
    """Train, dev and test CSVs of random 40-60 bp sequences, label 1 when GC-rich."""
    rng = np.random.default_rng(seed)
    paths = {}
    for split in ("train", "dev", "test"):
        seqs = ["".join(rng.choice(list("ACGT"), int(rng.integers(40, 60)))) for _ in range(rows)]
        labels = [int(s.count("G") + s.count("C") > len(s) / 2) for s in seqs]
        labels[:2] = [0, 1]
        paths[split] = str(folder / f"{split}.csv")
        write_labelled(paths[split], seqs, labels)
    return paths


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, str]:
    return labelled(tmp_path_factory.mktemp("data"), 0)


@pytest.fixture()
def modules_cache(tmp_path, monkeypatch):
    """transformers' copy of a folder's own code goes to a temporary folder."""
    from transformers import dynamic_module_utils

    monkeypatch.setattr(dynamic_module_utils, "HF_MODULES_CACHE", str(tmp_path / "modules"))


@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_runs_a_gue_and_a_fewshot_pack(family, built, data, hub_server, tmp_path, modules_cache):
    """Fetched from the hub, each family's folder runs a GUE run (dev, best dev loss) and a few-shot run
    in one `cmgems finetune --pack`, tokenised by its own tokenizer (BPE, ESM) or cmgems' 6-mers."""
    root, endpoint, _ = hub_server
    folder = hub.fetch_model(f"org/{family}", REVISION, publish(built[family], root, f"org/{family}"),
                             tmp_path / "models" / family, endpoint)
    common = dict(model=str(folder), test=data["test"], max_length=24, tokenizer=TOKENIZER[family], batch_size=8,
                  trust_remote_code=family == "bpe_bert", threads=1)
    runs = [dict(common, train=data["train"], dev=data["dev"], out=str(tmp_path / "gue"), epochs=2, eval_steps=3),
            dict(common, train=data["train"], out=str(tmp_path / "fewshot"), epochs=2, hidden_dropout=0.1)]
    assert cli.main(["finetune", "--pack", json.dumps({"runs": runs})]) == 0
    for name, rule in (("gue", "dev loss"), ("fewshot", "final")):
        record = json.loads((tmp_path / name / "metrics.json").read_text())
        settings = record["settings"]
        assert settings["tokenizer"] == TOKENIZER[family] and settings["k"] == (6 if family == "kmer_bert" else None)
        assert record["selection"]["rule"] == rule and np.isfinite(record["metrics"]["mcc"])
        assert record["data"]["test"]["rows"] == 24
        truncated = record["data"]["train"]["truncated"]  # 40-60 bp: 35-55 6-mers; 7-10 ESM tokens
        assert truncated == {"kmer_bert": 24, "esm": 0}.get(family, truncated) and isinstance(truncated, int)
    if family == "bpe_bert":  # the folder's own class ran
        from cmgems.finetune import Pretrained

        assert Pretrained(folder, trust_remote_code=True).cls.__name__ == "OwnCodeForSequenceClassification"


def test_own_tokenizers_pad_with_their_pad_id_truncate_and_mask(built, data):
    """BPE (pad id 3) and ESM (pad id 1) rows: truncated to max_length tokens, right-padded with the
    tokenizer's pad id; the attention mask covers exactly each row's tokens."""
    import torch
    from transformers import AutoTokenizer

    from cmgems.finetune import Settings, load_split
    from cmgems.labelled import read_labelled

    sequences = read_labelled(data["test"])[0]
    for family, pad in (("bpe_bert", 3), ("esm", 1)):
        full = [len(row) for row in AutoTokenizer.from_pretrained(built[family])(sequences)["input_ids"]]
        limit = int(np.median(full))  # some rows cut, some padded
        split = load_split(data["test"], None, limit, s=Settings(str(built[family]), "", "", "", tokenizer="own",
                                                                    trust_remote_code=True))
        assert split.lengths.tolist() == [min(n, limit) for n in full] and split.truncated == sum(n > limit for n in full) > 0
        ids, mask = split.batch(torch.arange(len(split)))
        assert (mask.sum(dim=1) == split.lengths).all() and (ids[~mask] == pad).all() and (~mask).any()


def test_remote_code_runs_only_with_the_opt_in(built, data, tmp_path, modules_cache):
    from cmgems.finetune import Settings, finetune

    s = Settings(model=str(built["bpe_bert"]), train=data["train"], test=data["test"], out=str(tmp_path / "run"),
                 max_length=24, tokenizer="own", epochs=1)
    with pytest.raises(CmgemsError, match=r"config.json: names the model's own Python code \(auto_map .*own_model"
                                          r".*runs only with trust_remote_code: true"):
        finetune(s)
    assert not (tmp_path / "run").exists()


def test_a_checkpoint_of_another_class_is_refused(built, data, tmp_path):
    """An ESM folder whose config is made to say BERT: the encoder's weights are missing, not drawn at random."""
    from cmgems.finetune import Pretrained

    folder = tmp_path / "mislabelled"
    shutil.copytree(built["kmer_bert"], folder)
    shutil.copy(built["esm"] / "model.safetensors", folder / "model.safetensors")
    with pytest.raises(CmgemsError, match="its weights lack .* tensor\\(s\\) of the BertForSequenceClassification encoder"):
        Pretrained(folder)


# ------------------------------------------------------------------------------------ the workflow
def snakemake(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(cwd), *args],
                          cwd=cwd, capture_output=True, text=True, timeout=600)


def test_a_repo_entry_plans_its_fetch_and_evaluation_and_fetches(built, hub_server, tmp_path, pack_specs):
    """`snakemake -n` plans fetch_model and every GUE and few-shot pack of a `repo` entry, its runs with
    its tokenizer, its lengths (given by task, else scaled), batch size and resources; the fetch job then
    downloads the folder."""
    root, endpoint, _ = hub_server
    files = publish(built["esm"], root, "org/nt-tiny")
    config = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
    config["pretrained_models"] = {"NT": {"repo": "org/nt-tiny", "revision": REVISION, "files": files, "endpoint": endpoint,
                                          "tokenizer": "own", "max_length_scale": 0.25, "max_length": {"demo_tata": 20},
                                          "batch_size": 4,
                                          "resources": {"mem_mb": 12000}}}
    (tmp_path / "resources").symlink_to(REPO / "resources")
    cfg = tmp_path / "nt.yaml"
    cfg.write_text(yaml.safe_dump(config))
    result = snakemake("-n", "--configfile", str(cfg), cwd=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", output.split("Job stats:")[1], re.M))
    assert counts["fetch_model"] == "1" and counts["finetune_gue_other"] == "4"  # 3 of ours + NT
    assert counts["finetune_fewshot_demo_prom"] == counts["finetune_fewshot_demo_splice3"] == "4"
    nt = Model(layout.EXTERNAL, "NT", layout.PUBLISHED, 0)
    targets = [f"{Run(GUE, nt, 'demo_tata', 42).folder()}/metrics.json",
               f"{Run(FEWSHOT, nt, 'demo_prom', 0, 10).folder()}/metrics.json"]
    result = snakemake("-n", "-p", *targets, "--configfile", str(cfg), cwd=tmp_path)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    runs = pack_specs(result.stdout)
    gue, fewshot = runs[str(Path(targets[0]).parent)], runs[str(Path(targets[1]).parent)]
    assert gue["model"] == fewshot["model"] == "resources/models/NT"
    assert (gue["tokenizer"], gue["batch_size"], gue["max_length"]) == ("own", 4, 20)  # max_length names demo_tata
    assert (fewshot["tokenizer"], fewshot["batch_size"], fewshot["max_length"]) == ("own", 4, 18)  # demo_prom: 72 x 0.25
    assert "mem_mb=12000" in result.stdout
    (tmp_path / "resources").unlink()
    result = snakemake("--cores", "1", "resources/models/NT", "--configfile", str(cfg), cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert (tmp_path / "resources/models/NT/model.safetensors").read_bytes() == (built["esm"] / "model.safetensors").read_bytes()


@pytest.mark.parametrize("entry, message", [
    ({"path": "x", "repo": "org/m", "revision": REVISION, "files": {"config.json": "0" * 64}},
     "pretrained_models.m: give path (a local model folder) or repo"),
    ({"repo": "org/m", "revision": "main", "files": {"config.json": "0" * 64}}, "pretrained_models.m.revision: 'main' does not match"),
    ({"repo": "org/m", "files": {"config.json": "0" * 64}}, "'revision' is a dependency of 'repo'"),
    ({"repo": "org/m", "revision": REVISION, "files": {"model.bin": "0" * 64}}, "pretrained_models.m.files: lacks config.json"),
    ({"repo": "org/m", "revision": REVISION, "files": {"config.json": "abc"}}, "pretrained_models.m.files.config.json: 'abc' does not match"),
    ({"path": "x", "tokenizer": "bpe"}, "pretrained_models.m.tokenizer: 'bpe' is not one of ['kmer', 'own']"),
    ({"path": "x", "resources": {"gpu": 1}}, "pretrained_models.m.resources: asks for GPUs where gue.resources does not"),
])
def test_a_bad_entry_stops_the_plan_naming_the_key(tmp_path, entry, message):
    config = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
    config["pretrained_models"] = {"m": entry}
    (tmp_path / "resources").symlink_to(REPO / "resources")
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(config))
    result = snakemake("-n", "--configfile", str(tmp_path / "bad.yaml"), cwd=tmp_path)
    assert result.returncode != 0 and message in result.stdout + result.stderr, (result.stdout + result.stderr)[-3000:]


def test_schema_checksum_and_repository_patterns_are_the_modules():
    from cmgems import download

    schema = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())
    assert schema["definitions"]["sha256"]["pattern"] == f"^[0-9a-f]{{{download.SHA256.digits}}}$"
    assert schema["definitions"]["git_commit"]["pattern"] == f"^{hub.COMMIT.pattern}$"
    entry = schema["properties"]["pretrained_models"]["additionalProperties"]["properties"]
    assert entry["repo"]["pattern"] == f"^{hub.REPO.pattern}$"
    from cmgems.finetune import TOKENIZERS

    assert entry["tokenizer"]["enum"] == list(TOKENIZERS)


@pytest.mark.slow
def test_the_demo_reports_a_local_model_of_each_family_beside_ours(local_demo, built, tmp_path):
    """The finished demo with a local model of each family added: only their packs and the report run;
    every GUE and few-shot table has them, claim 2 compares cm_gems with each, and the protocol table
    has the one that names a published row (the demo's tasks are not GUE's: no task in common)."""
    import pandas as pd

    workdir = tmp_path / "demo"
    shutil.copytree(local_demo, workdir, symlinks=True)
    entries = {family: {"path": str(built[family]), "tokenizer": TOKENIZER[family], "max_length": 24,
                        "trust_remote_code": family == "bpe_bert"} for family in FAMILIES}
    entries["bpe_bert"]["published_as"] = "DNABERT-2"
    layer = tmp_path / "families.yaml"
    layer.write_text(yaml.safe_dump({"pretrained_models": entries}))
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir), "--cores", "2",
           "--configfile", str(REPO / "config" / "demo.yaml"), str(layer)]
    env = {**__import__("os").environ, "HF_MODULES_CACHE": str(tmp_path / "modules")}
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=1200, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "rule pretrain:" not in result.stdout + result.stderr  # ours were done: only the checkpoints ran
    for table, runs in (("gue", 2), ("fewshot", 2 * 2)):  # GUE: a row per run; few-shot: per dataset and shots
        rows = pd.read_csv(workdir / layout.table(table))
        external = rows[rows["genome"] == layout.EXTERNAL]
        assert external.groupby("model").size().to_dict() == {family: runs for family in FAMILIES}, table
    claims = pd.read_csv(workdir / layout.table("claims"))
    assert {f"cm_gems vs {family} (our run)" for family in FAMILIES} <= set(claims["contrast"])
    protocol = pd.read_csv(workdir / layout.table("protocol"))
    assert protocol[["checkpoint", "published_as", "task", "n_tasks"]].values.tolist() == [["bpe_bert", "DNABERT-2", "mean", 0]]


def test_the_paper_configs_commented_entries_plan_their_fetch_and_evaluation(tmp_path):
    """config/config.yaml's commented DNABERT-6, DNABERT-2 and NT entries, uncommented with their
    placeholders filled in, are valid entries: the plan fetches each and packs it as ours are packed."""
    from test_workflow import job_counts, snakemake

    text = (REPO / "config" / "config.yaml").read_text()
    block = text.split("# pretrained_models:\n", 1)[1].split("\npretrained_models: {}", 1)[0]
    entries = yaml.safe_load(re.sub(r"^# ?", "", block, flags=re.M)
                             .replace("REVISION_40_HEX_DIGITS", REVISION).replace("SHA256_OF_FILE", "ab" * 32))
    assert set(entries) == {"DNABERT6", "DNABERT2", "NT_500M_HUMAN"}
    assert {e["published_as"] for e in entries.values()} == {"DNABERT (6-mer)", "DNABERT-2", "NT-500M-human"}
    layer = tmp_path / "published.yaml"
    layer.write_text(yaml.safe_dump({"pretrained_models": entries}))
    result = snakemake("-n", "--quiet", "rules", "--configfile", str(REPO / "config" / "config.yaml"), str(layer),
                       "-d", str(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
    counts = job_counts(result.stdout + result.stderr)
    assert counts["fetch_model"] == 3
    assert counts["finetune_gue_EMP"] == counts["finetune_fewshot_silencer"] == 24 + 3
