"""The k-mer vocabulary and its Hugging Face tokenizer: DNABERT's ids, raw DNA in, corpus ids out."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import AutoTokenizer

from cmgems import kmers
from cmgems.errors import CmgemsError


def test_dnabert_vocabulary_order():
    vocab = kmers.vocabulary(6)
    assert vocab[:10] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "AAAAAA", "AAAAAT", "AAAAAC", "AAAAAG", "AAAATA"]
    assert len(vocab) == kmers.vocab_size(6) == 4101 and vocab[-1] == "GGGGGG"
    assert all(kmers.kmer_id(tok) == i for i, tok in enumerate(vocab) if i >= kmers.NUM_SPECIAL)
    assert kmers.kmer_id("acgtac") == kmers.kmer_id("ACGTAC") and kmers.kmer_id("ACNTAC") == kmers.UNK_ID
    with pytest.raises(CmgemsError, match="k must be one of"):
        kmers.vocabulary(7)


@pytest.mark.parametrize("k", kmers.SUPPORTED_K)
def test_kmer_ids_equal_the_naive_definition(k):
    rng = np.random.default_rng(k)
    seq = "".join(rng.choice(list("ACGTacgtN"), 300))
    naive = [kmers.kmer_id(seq[i : i + k]) for i in range(len(seq) - k + 1)]
    assert kmers.kmer_ids(seq, k).tolist() == naive


@pytest.fixture(scope="module", params=kmers.SUPPORTED_K)
def saved(request, tmp_path_factory):
    directory = tmp_path_factory.mktemp(f"tok{request.param}")
    kmers.save_tokenizer(directory / "tok", request.param, model_max_length=512)
    return request.param, AutoTokenizer.from_pretrained(directory / "tok")


@settings(max_examples=40, deadline=None)
@given(seq=st.text(alphabet="ACGTacgtNR", min_size=0, max_size=80))
def test_autotokenizer_maps_raw_dna_to_corpus_ids(saved, seq):
    k, tok = saved
    expected = kmers.encode_batch([seq.encode()], k, 512)[0].tolist()
    assert tok(seq)["input_ids"] == expected


def test_tokenizer_round_trip_and_specials(saved):
    k, tok = saved
    seq = "".join(itertools.islice(itertools.cycle("ACGGTTAC"), 40))
    ids = tok(seq)["input_ids"]
    assert tok.convert_ids_to_tokens(ids)[1:-1] == [seq[i : i + k] for i in range(len(seq) - k + 1)]
    assert (tok.pad_token_id, tok.unk_token_id, tok.cls_token_id, tok.sep_token_id, tok.mask_token_id) == (0, 1, 2, 3, 4)
    batch = tok([seq, seq[:10]], padding=True)
    assert batch["input_ids"][1][-1] == kmers.PAD_ID and batch["attention_mask"][1][-1] == 0
    assert tok.model_max_length == 512
    assert (tok.name_or_path and tok.vocab_size == kmers.vocab_size(k))
