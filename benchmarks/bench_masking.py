"""Benchmark: ms per 64 x 512 batch for every masking strategy, HF's DataCollatorForLanguageModeling,
and a loop implementation of GeneMask written the way the released code works (tests/test_masking.py).

Run: python benchmarks/bench_masking.py [--batches 50] [--loop-batches 5]
Batches are [CLS] + 510 overlapping 6-mers of random DNA + [SEP]; ranks are a random permutation.
CPU, torch.set_num_threads(2). Prints figures as it goes; the last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from cmgems import kmers, masking

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from test_masking import loop_genemask  # noqa: E402  (the loop implementation lives with the tests)

K, BATCH, N_KMERS, SEED = 6, 64, 510, 0
GENEMASK_TARGET_MS, SPEEDUP_TARGET = 1.5, 10.0


def dna_batch(rng: np.random.Generator) -> torch.Tensor:
    """(BATCH, N_KMERS + 2) ids of random DNA chunks, as the pretraining corpus encodes them."""
    seqs = [rng.choice(np.frombuffer(b"ACGT", np.uint8), N_KMERS + K - 1).tobytes() for _ in range(BATCH)]
    return torch.from_numpy(kmers.encode_batch(seqs, K, max_positions=N_KMERS + 2))


def median_ms(fn, batches: list[torch.Tensor], repeats: int, warmup: int = 3) -> float:
    """Median wall time of fn(batch) in ms over `repeats` calls, after `warmup` calls."""
    for i in range(warmup):
        fn(batches[i % len(batches)])
    times = []
    for i in range(repeats):
        start = time.perf_counter()
        fn(batches[i % len(batches)])
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1e3)


def loop_genemask_batch(ids: torch.Tensor, ranks: np.ndarray, draws: masking.Draws):
    """GeneMask the released code's way: draw centres, Python loops per row and centre, corrupt."""
    centres = masking.draw_centres(masking.maskable_positions(ids), 0.0176, draws)
    chosen = loop_genemask(ids, centres, ranks, K)[0]
    return masking.bert_corrupt(ids, chosen, kmers.vocab_size(K), draws)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=50, help="timed batches per strategy")
    parser.add_argument("--loop-batches", type=int, default=5, help="timed batches for the loop GeneMask")
    args = parser.parse_args()
    torch.set_num_threads(2)
    rng = np.random.default_rng(SEED)
    vocab = kmers.vocab_size(K)
    ranks = np.full(vocab, 4**K + 1, dtype=np.int64)
    ranks[kmers.NUM_SPECIAL :] = rng.permutation(4**K) + 1
    batches = [dna_batch(rng) for _ in range(8)]
    draws = masking.Draws(SEED, torch.arange(BATCH))  # keyed by (seed, sequence position), as in training
    command = " ".join([Path(sys.executable).name, *sys.argv])
    print(f"command: {command}", flush=True)
    print(f"cpu_count {os.cpu_count()}, torch threads {torch.get_num_threads()}, load {os.getloadavg()}", flush=True)

    ms: dict[str, float] = {}
    for name in masking.names():
        masker = masking.build(name, k=K, vocab_size=vocab, token_ranks=ranks, max_steps=100)
        ms[name] = median_ms(lambda b: masker(b, step=50, draws=draws), batches, args.batches)
        print(f"{name:>12}: {ms[name]:8.3f} ms/batch   load {os.getloadavg()}", flush=True)

    from transformers import DataCollatorForLanguageModeling

    collator = DataCollatorForLanguageModeling(tokenizer=kmers.build_tokenizer(K), mlm_probability=0.15)
    ms["hf_mask_tokens"] = median_ms(lambda b: collator.torch_mask_tokens(b.clone()), batches, args.batches)
    print(f"HF torch_mask_tokens: {ms['hf_mask_tokens']:8.3f} ms/batch", flush=True)
    ms["hf_collator_call"] = median_ms(lambda b: collator([{"input_ids": row} for row in b]), batches, args.batches)
    print(f"HF collator(examples): {ms['hf_collator_call']:8.3f} ms/batch", flush=True)
    ms["genemask_loop"] = median_ms(lambda b: loop_genemask_batch(b, ranks, draws), batches, args.loop_batches, 1)
    print(f"genemask loop: {ms['genemask_loop']:8.3f} ms/batch   load {os.getloadavg()}", flush=True)

    target_ratio = ms["genemask"] / GENEMASK_TARGET_MS
    speedup = ms["genemask_loop"] / ms["genemask"]
    print(f"genemask / {GENEMASK_TARGET_MS} ms target = {target_ratio:.2f} (<= 1 meets it)", flush=True)
    print(f"loop / vectorized genemask = {speedup:.1f}x (target >= {SPEEDUP_TARGET:.0f}x)", flush=True)
    print(
        json.dumps(
            {
                "benchmark": "masking",
                "command": command,
                "batch": [BATCH, N_KMERS + 2],
                "device": "cpu",
                "torch_threads": torch.get_num_threads(),
                "cpu_count": os.cpu_count(),
                "loadavg": os.getloadavg(),
                "ms_per_batch": {k: round(v, 4) for k, v in ms.items()},
                "genemask_over_target": round(target_ratio, 3),
                "genemask_loop_speedup": round(speedup, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
