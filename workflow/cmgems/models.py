"""BERT model shapes by name (DNABERT-base, the 2-layer LOGO model, a tiny one for demos and tests),
the model folder (`save_folder`: weights, config and tokenizer; `kmers.read_k` reads its k), the one loader of
checkpoints (`from_pretrained`: no pickle beyond tensors), and
what pretraining and fine-tuning share about training them: mixed precision and weight decay."""

from __future__ import annotations

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


def masked_lm(config=None, init_from: str | Path | None = None):
    """A `BertForMaskedLM`: from scratch with `config`, or from a local HF checkpoint (safetensors only)."""
    if init_from is not None:
        path = Path(init_from)
        if not (path / "config.json").exists():
            raise CmgemsError(f"init_from {path}: not a Hugging Face model directory (no config.json)")
        return from_pretrained(BertForMaskedLM, path, use_safetensors=True, attn_implementation="sdpa")
    return BertForMaskedLM(config)


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
