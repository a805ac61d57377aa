"""BERT model shapes by name (DNABERT-base, the 2-layer LOGO model, a tiny one for demos and tests),
the model folder (`save_folder`: weights, config and tokenizer; `kmers.read_k` reads its k), the one loader of
checkpoints (`from_pretrained`: no pickle beyond tensors), and
what pretraining and fine-tuning share about training them: mixed precision and weight decay."""

from __future__ import annotations

import json
import pickle
import re
import shutil
from pathlib import Path

import torch
from transformers import BertConfig, BertForMaskedLM

from cmgems import kmers
from cmgems.atomic import atomic_output
from cmgems.errors import CmgemsError

# Architecture hyper-parameters; vocab_size comes from k, max_position_embeddings from config.
ARCHITECTURES: dict[str, dict] = {
    "dnabert6": dict(
        num_hidden_layers=12, hidden_size=768, num_attention_heads=12, intermediate_size=3072,
        hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1,
    ),
    "logo": dict(
        num_hidden_layers=2, hidden_size=256, num_attention_heads=8, intermediate_size=3072,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    ),
    "tiny": dict(
        num_hidden_layers=2, hidden_size=64, num_attention_heads=4, intermediate_size=128,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    ),
}


def bert_config(architecture: str | dict, vocab_size: int, max_positions: int = 512):
    """A `BertConfig` for a named architecture (or a dict of BertConfig fields), SDPA attention."""
    if isinstance(architecture, str):
        if architecture not in ARCHITECTURES:
            raise CmgemsError(f"unknown model architecture {architecture!r}; known: {sorted(ARCHITECTURES)}")
        architecture = ARCHITECTURES[architecture]
    cfg = BertConfig(vocab_size=vocab_size, max_position_embeddings=max_positions, **architecture)
    cfg._attn_implementation = "sdpa"
    return cfg


def masked_lm(config, init_from: str | Path | None = None):
    """A `BertForMaskedLM`: from scratch with `config`, or from a local HF checkpoint (safetensors only)
    whose vocabulary is `config`'s and whose positions are at least `config`'s (`check_init`)."""
    if init_from is not None:
        check_init(Path(init_from), config)
        return from_pretrained(BertForMaskedLM, init_from, use_safetensors=True, attn_implementation="sdpa")
    return BertForMaskedLM(config)


def check_init(path: Path, config) -> None:
    """CmgemsError unless `path` is a model folder whose config.json has `config`'s vocab_size (the same k:
    another k would read every token id as another k-mer) and at least its max_position_embeddings."""
    try:
        given = json.loads((path / "config.json").read_text())
        vocab, positions = given["vocab_size"], given["max_position_embeddings"]
    except FileNotFoundError:
        raise CmgemsError(f"init_from {path}: not a Hugging Face model directory (no config.json)") from None
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CmgemsError(f"init_from {path}/config.json: cannot read vocab_size and max_position_embeddings "
                          f"({err!r})") from None
    if vocab != config.vocab_size:
        fits = next((k for k in kmers.SUPPORTED_K if kmers.vocab_size(k) == vocab), None)
        hint = f"the vocabulary of {fits}-mers: set k: {fits}" if fits else "no k-mer vocabulary"
        raise CmgemsError(f"init_from {path}: vocab_size {vocab} is not the run's {config.vocab_size} "
                          f"({kmers.NUM_SPECIAL} + 4^k tokens for its k); it is {hint}")
    if positions < config.max_position_embeddings:
        raise CmgemsError(f"init_from {path}: {positions} positions, fewer than the run's max_positions "
                          f"{config.max_position_embeddings}")


def from_pretrained(model_class, path: str | Path, **kwargs):
    """`model_class.from_pretrained(path, **kwargs)`; a weights file that only a full unpickler would
    load (a .bin holding more than tensors, which could run code) is a CmgemsError: transformers loads
    a .bin with torch.load(weights_only=True), and cmgems never loads one any other way."""
    try:
        return model_class.from_pretrained(path, **kwargs)
    except pickle.UnpicklingError as err:
        found = re.search(r"GLOBAL (\S+)", str(err))
        holds = f" (it holds {found.group(1)})" if found else ""
        raise CmgemsError(f"{path}: its weights file is a pickle of more than tensors{holds}, which cmgems does not load; "
                          "the model must be safetensors (model.safetensors) or a .bin that torch.load loads with "
                          "weights_only=True") from None


def own_code(path: Path) -> dict[str, str]:
    """{file: its `auto_map`} of the folder's config.json and tokenizer_config.json that name Python code
    of the folder's own (a class transformers runs only with trust_remote_code)."""
    found = {}
    for name in ("config.json", "tokenizer_config.json"):
        try:
            auto_map = json.loads((path / name).read_text()).get("auto_map")
        except (OSError, ValueError, AttributeError):
            continue
        if auto_map:
            found[name] = auto_map
    return found


def check_own_code(path: Path, trust_remote_code: bool) -> None:
    """CmgemsError when the folder names code of its own and `trust_remote_code` is off: transformers
    would then quietly build its built-in class (DNABERT-2's config says "bert") and leave the weights it
    does not know at random."""
    found = own_code(path)
    if found and not trust_remote_code:
        name, auto_map = next(iter(found.items()))
        raise CmgemsError(f"{path / name}: names the model's own Python code (auto_map {auto_map}), which runs only "
                          "with trust_remote_code: true on its pretrained_models entry (--trust-remote-code); read "
                          "that code first")


def attention(trust_remote_code: bool) -> dict:
    """from_pretrained keywords for the attention: SDPA for transformers' own classes; a model's own
    code keeps its own (it may not take the keyword)."""
    return {} if trust_remote_code else {"attn_implementation": "sdpa"}


def check_encoder_loaded(path: Path, model, missing: set[str]) -> None:
    """CmgemsError when the checkpoint lacks weights of the encoder (`model.base_model_prefix`), the
    pooler aside: only the classifier's head may start at random."""
    prefix = f"{model.base_model_prefix}."
    lacking = sorted(key for key in missing if key.startswith(prefix) and ".pooler." not in key)
    if lacking:
        raise CmgemsError(f"{path}: its weights lack {len(lacking)} tensor(s) of the {type(model).__name__} encoder, "
                          f"e.g. {lacking[0]}: the checkpoint is not of this model class (with trust_remote_code "
                          "off, a folder's own code is not used)")


def save_folder(directory: str | Path, model, k: int, max_positions: int = 512,
                tokenizer: str | Path | None = None) -> Path:
    """Write a model folder atomically: `model.save_pretrained` (safetensors + config), then the files
    of the `tokenizer` folder (`cmgems tokenizer`'s), or the k-mer tokenizer written afresh
    (`kmers.write_tokenizer`, with kmer.json). AutoModel*/AutoTokenizer.from_pretrained load it."""
    with atomic_output(directory, directory=True) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        if tokenizer is None:
            kmers.write_tokenizer(tmp, k, max_positions)
        else:
            for item in Path(tokenizer).iterdir():
                shutil.copy2(item, tmp / item.name)
    return Path(directory)


def autocast(device: torch.device):
    """bf16 autocast on CUDA; fp32 (a no-op context) elsewhere."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


def parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """AdamW parameter groups as Hugging Face's Trainer makes them: weight decay on every parameter
    but biases and LayerNorm parameters."""
    no_decay = {id(p) for m in model.modules() if isinstance(m, torch.nn.LayerNorm) for p in m.parameters()}
    no_decay |= {id(p) for n, p in model.named_parameters() if n.endswith("bias")}
    params = [p for p in model.parameters() if p.requires_grad]
    return [
        {"params": [p for p in params if id(p) not in no_decay], "weight_decay": weight_decay},
        {"params": [p for p in params if id(p) in no_decay], "weight_decay": 0.0},
    ]
