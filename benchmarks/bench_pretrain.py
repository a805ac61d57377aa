"""Pretraining throughput: tokens/s and ms per optimiser step for `tiny`, `logo` (and `dnabert6`).

On CPU: fp32, torch.set_num_threads(2). On a GPU: bf16 autocast, plus model FLOPs utilisation (MFU)
against the GPU's bf16 dense peak (pass --peak-tflops; H100 SXM 989). Batches are full 512-position
sequences masked with genemask (random PMI ranks), the training step is cmgems.pretrain's:
MaskedLMObjective forward/backward, clip, AdamW.

    python benchmarks/bench_pretrain.py [--models tiny logo] [--batch 8] [--steps 10]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import torch

from cmgems import kmers, masking, models
from cmgems.pretrain import MaskedLMObjective


def training_flops_per_token(cfg, seq_len: int, masked_fraction: float) -> float:
    """6 x matmul parameters per token, attention scores and values, the vocabulary head on masked tokens."""
    d, layers, ffn = cfg.hidden_size, cfg.num_hidden_layers, cfg.intermediate_size
    per_layer = 4 * d * d + 2 * d * ffn
    attention = 2 * seq_len * d  # QK^T and AV, per token per layer
    head = (d * d + d * cfg.vocab_size) * masked_fraction
    return 6 * (layers * (per_layer + attention) + head)


def bench(name: str, batch: int, steps: int, device: torch.device) -> dict:
    vocab = kmers.vocab_size(6)
    model = models.masked_lm(models.bert_config(name, vocab, 512)).to(device)
    objective = MaskedLMObjective(model).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    gen = torch.Generator(device=device).manual_seed(0)
    ranks = torch.randperm(vocab, generator=torch.Generator().manual_seed(1)) + 1
    masker = masking.build("genemask", k=6, token_ranks=ranks.to(device))
    ids = torch.randint(kmers.NUM_SPECIAL, vocab, (batch, 512), generator=torch.Generator().manual_seed(2))
    ids[:, 0], ids[:, -1] = kmers.CLS_ID, kmers.SEP_ID
    ids = ids.to(device)
    attention = ids.ne(kmers.PAD_ID)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")

    def step() -> float:
        inputs, labels = masker(ids, step=0, generator=gen)
        with autocast:
            loss, n, _ = objective(inputs, attention, labels)
        (loss / n).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return n / ids.numel()

    step()  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    fractions, t0 = [], time.perf_counter()
    for _ in range(steps):
        fractions.append(step())
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - t0) / steps
    tokens_per_s = ids.numel() / seconds
    flops = training_flops_per_token(model.config, 512, sum(fractions) / len(fractions)) * tokens_per_s
    result = {"model": name, "batch": batch, "seq": 512, "ms_per_step": seconds * 1000,
              "tokens_per_s": tokens_per_s, "model_tflops": flops / 1e12,
              "parameters": sum(p.numel() for p in model.parameters())}
    print(f"{name:9s} batch {batch} x 512: {seconds * 1000:9.1f} ms/step {tokens_per_s:12,.0f} tokens/s "
          f"{flops / 1e12:8.3f} TFLOP/s", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["tiny", "logo"])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="GPU bf16 dense peak, for MFU")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu":
        torch.set_num_threads(2)
    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"cpus {os.cpu_count()}, load {os.getloadavg()}", flush=True)
    results = [bench(m, args.batch, args.steps, device) for m in args.models]
    if device.type == "cuda":
        for r in results:
            r["mfu"] = r["model_tflops"] / args.peak_tflops
    print(json.dumps({"benchmark": "pretrain", "device": str(device), "machine": platform.processor() or platform.machine(),
                      "cpu_count": os.cpu_count(), "loadavg": os.getloadavg(), "command": " ".join(sys.argv),
                      "results": results}))


if __name__ == "__main__":
    main()
