"""The k-mer vocabulary (DNABERT's), vectorized k-mer ids, and its Hugging Face tokenizer (tokenizers
and transformers are imported by the functions that build it: the core environment, whose stages use
the vocabulary, has neither).

Ids: [PAD]=0, [UNK]=1, [CLS]=2, [SEP]=3, [MASK]=4, then every k-mer in lexicographic order over the
alphabet A, T, C, G (for k=6: 5 AAAAAA, 6 AAAAAT, 7 AAAAAC, 8 AAAAAG, 9 AAAATA).
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np

from cmgems.atomic import atomic_output
from cmgems.errors import CmgemsError

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
PAD_ID, UNK_ID, CLS_ID, SEP_ID, MASK_ID = range(5)
NUM_SPECIAL = len(SPECIAL_TOKENS)
ALPHABET = "ATCG"
SUPPORTED_K = (3, 4, 5, 6)
KMER_FILE = "kmer.json"  # in a tokenizer or model folder: {"k": k}

# ASCII byte -> base code 0..3 (A, T, C, G; either case), 4 for anything else.
BASE_CODE = np.full(256, 4, dtype=np.uint8)
for _code, _base in enumerate(ALPHABET):
    BASE_CODE[ord(_base)] = BASE_CODE[ord(_base.lower())] = _code


def check_k(k: int) -> int:
    if k not in SUPPORTED_K:
        raise CmgemsError(f"k must be one of {SUPPORTED_K}, got {k}")
    return k


def vocab_size(k: int) -> int:
    return NUM_SPECIAL + 4**k


def vocabulary(k: int) -> list[str]:
    """All tokens in id order: the specials, then the 4**k k-mers."""
    return list(SPECIAL_TOKENS) + ["".join(p) for p in itertools.product(ALPHABET, repeat=check_k(k))]


def kmer_id(kmer: str) -> int:
    """Id of one k-mer string (case-insensitive); [UNK] if it holds a character outside ACGT."""
    codes = BASE_CODE[np.frombuffer(kmer.encode("ascii"), dtype=np.uint8)]
    if (codes > 3).any():
        return UNK_ID
    return NUM_SPECIAL + int(sum(int(c) << (2 * (len(kmer) - 1 - i)) for i, c in enumerate(codes)))


def as_bytes_array(seq: bytes | str | np.ndarray) -> np.ndarray:
    """A sequence as a uint8 array of ASCII codes (no copy for bytes or uint8 arrays)."""
    if isinstance(seq, np.ndarray):
        return seq.astype(np.uint8, copy=False)
    if isinstance(seq, str):
        seq = seq.encode("ascii")
    return np.frombuffer(seq, dtype=np.uint8)


def kmer_ids(seq: bytes | str | np.ndarray, k: int) -> np.ndarray:
    """Ids of the overlapping k-mers of `seq` (stride 1), shape (len(seq) - k + 1,), int64.

    A window holding any character outside ACGT (either case) maps to [UNK].
    """
    codes = BASE_CODE[as_bytes_array(seq)]
    n = codes.shape[0] - k + 1
    if n <= 0:
        return np.empty(0, dtype=np.int64)
    ids = np.zeros(n, dtype=np.int64)
    bad = np.zeros(n, dtype=bool)
    for j in range(k):
        window = codes[j : j + n]
        ids = (ids << 2) | (window & 3)
        bad |= window > 3
    ids += NUM_SPECIAL
    ids[bad] = UNK_ID
    return ids


def encode_batch(seqs: list[bytes], k: int, max_positions: int) -> np.ndarray:
    """Token ids for a batch: [CLS] k-mers [SEP], right-padded with [PAD]; shape (B, L), int64.

    L is the longest encoded sequence of the batch; sequences longer than `max_positions` are
    truncated to max_positions - 2 k-mers.
    """
    rows = [kmer_ids(s, k)[: max_positions - 2] for s in seqs]
    width = max((len(r) for r in rows), default=0) + 2
    out = np.full((len(rows), width), PAD_ID, dtype=np.int64)
    for i, r in enumerate(rows):
        out[i, 0] = CLS_ID
        out[i, 1 : len(r) + 1] = r
        out[i, len(r) + 1] = SEP_ID
    return out


def _kmer_normalizer(k: int):
    """A tokenizers normalizer that rewrites raw DNA as its overlapping k-mers, space-separated.

    Steps: lower-case; any non-ACGT character becomes 'n'; insert a space before every base; then
    for offset j = 0..k-1 and each letter, insert that letter (upper-case) before every base whose
    j-th following base it is, which spells each window's k-mer in front of its first base; drop the
    original (lower-case) bases and the incomplete k-mers of the last k-1 positions. Windows holding
    'n' spell a k-mer outside the vocabulary, hence [UNK].
    """
    from tokenizers import Regex, normalizers

    base, other = "[acgtn]", "[^acgtn]*"
    steps = [
        normalizers.Lowercase(),
        normalizers.Replace(Regex("[^acgt]"), "n"),
        normalizers.Replace(Regex(f"(?={base})"), " "),
    ]
    for j in range(k):
        for letter in "acgtn":
            ahead = "" if j == 0 else f"{base}(?:{other}{base}){{{j - 1}}}{other}"
            steps.append(normalizers.Replace(Regex(f"(?={ahead}{letter})"), letter.upper()))
    steps.append(normalizers.Replace(Regex(base), ""))
    steps.append(normalizers.Replace(Regex(f"(?:^| )[ACGTN]{{1,{k - 1}}}(?= |$)"), ""))
    return normalizers.Sequence(steps)


def build_tokenizer(k: int, model_max_length: int = 512):
    """A `PreTrainedTokenizerFast` mapping raw DNA strings to [CLS] k-mer ids [SEP]."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(vocabulary(k))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.normalizer = _kmer_normalizer(k)
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", CLS_ID), ("[SEP]", SEP_ID)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=model_max_length,
    )


def write_tokenizer(folder: Path, k: int, model_max_length: int = 512) -> None:
    """Write the tokenizer files into an existing folder (a tokenizer's or a model's): tokenizer.json,
    its config, DNABERT's vocab.txt, and `KMER_FILE` ({"k": k}), which `read_k` reads."""
    build_tokenizer(check_k(k), model_max_length).save_pretrained(folder)
    (folder / "vocab.txt").write_text("\n".join(vocabulary(k)) + "\n")
    (folder / KMER_FILE).write_text(json.dumps({"k": k}) + "\n")


def save_tokenizer(directory: str | Path, k: int, model_max_length: int = 512) -> None:
    """Write the tokenizer folder (`write_tokenizer`) atomically."""
    with atomic_output(directory, directory=True) as tmp:
        write_tokenizer(tmp, k, model_max_length)


def read_k(folder: str | Path) -> int:
    """k of a tokenizer or model folder, from its `KMER_FILE` (6 when absent: DNABERT's 6-mer models),
    checked against a model's vocabulary (`check_vocabulary`): a wrong k would tokenise every sequence
    into ids the model does not know, or knows as other k-mers."""
    path = Path(folder) / KMER_FILE
    if not path.exists():
        return check_vocabulary(folder, 6, f"{folder} has no {KMER_FILE}, so k=6 (DNABERT's) is assumed")
    try:
        k = check_k(int(json.loads(path.read_text())["k"]))
    except (ValueError, KeyError, TypeError) as err:
        raise CmgemsError(f"{path}: expected {{\"k\": 3..6}} ({err})") from None
    return check_vocabulary(folder, k, f"{path} says k={k}")


def check_vocabulary(folder: str | Path, k: int, why: str) -> int:
    """`k`, when the model `folder`'s config.json (if any) holds the vocabulary of k-mers; else a
    CmgemsError: `why` k, the vocab_size found, and the kmer.json that would match it."""
    config = Path(folder) / "config.json"
    try:
        size = json.loads(config.read_text()).get("vocab_size")
    except (OSError, ValueError, AttributeError):
        return k  # a tokenizer folder, or a config from_pretrained reports when it loads the model
    if size in (None, vocab_size(k)):
        return k
    fits = next((j for j in SUPPORTED_K if vocab_size(j) == size), None)
    if fits is None:
        raise CmgemsError(f"{why}, but {config}: vocab_size {size} is no k-mer vocabulary ({NUM_SPECIAL} + 4^k "
                          f"tokens, k in {SUPPORTED_K}); cmgems evaluates k-mer models only")
    raise CmgemsError(f"{why}, but {config}: vocab_size {size} is the vocabulary of {fits}-mers; write "
                      f"{{\"k\": {fits}}} to {Path(folder) / KMER_FILE}")


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--k", type=int, default=6, help="k-mer length (3-6)")
    parser.add_argument("--max-positions", type=int, default=512, help="model_max_length")
    parser.add_argument("--out", required=True, help="output directory")
    parser.set_defaults(func=lambda a: save_tokenizer(a.out, a.k, a.max_positions))
