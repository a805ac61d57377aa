"""Model FLOPs of BERT pretraining and the dense bf16 peaks of common GPUs, for model FLOPs
utilisation (MFU = model FLOPs per second / peak FLOPs per second of the devices used).

Model FLOPs count the work the model needs per token, not what an implementation spends (padding,
recomputation): 6 x (matmul parameters + attention scores and values over the sequence) for the
encoder, plus the vocabulary head on the masked tokens only (the pretraining objective applies it
to those; cmgems.pretrain.MaskedLMObjective).
"""

from __future__ import annotations

# Dense bf16 tensor-core peaks in TFLOP/s per device (vendor data sheets, without sparsity), matched
# against torch.cuda.get_device_name() in this order (the first key contained in the name wins).
PEAK_BF16_TFLOPS = {
    "GB200": 2500.0,
    "B200": 2250.0,
    "H200": 989.0,
    "GH200": 989.0,
    "H100 NVL": 835.0,
    "H100 PCIe": 756.0,
    "H100": 989.0,  # SXM
    "H800": 989.0,
    "H20": 148.0,
    "A100": 312.0,
    "A800": 312.0,
    "A40": 149.7,
    "A30": 165.0,
    "A10G": 70.0,
    "A10": 125.0,
    "L40S": 362.0,
    "L40": 181.0,
    "L4": 121.0,
    "RTX 6000 Ada": 364.0,
    "RTX A6000": 154.8,
    "RTX 4090": 165.2,
    "RTX 3090": 71.0,
    "V100": 125.0,  # no bf16: its fp16 tensor-core peak
    "T4": 65.0,  # likewise
}


def peak_tflops(device_name: str) -> float | None:
    """The bf16 dense peak of a GPU by name (TFLOP/s), None when it is not in the table."""
    return next((peak for key, peak in PEAK_BF16_TFLOPS.items() if key in device_name), None)


def training_flops(config, tokens: float, squared_lengths: float, masked: float) -> float:
    """Training FLOPs (forward + backward = 3 x forward) of a BertForMaskedLM `config` on sequences of
    `tokens` tokens in all, the sum of their squared lengths `squared_lengths` (attention costs each
    token its own sequence's length: L^2 per sequence, not the mean length's), `masked` of them masked."""
    d, layers, ffn = config.hidden_size, config.num_hidden_layers, config.intermediate_size
    per_token = layers * 2 * (4 * d * d + 2 * d * ffn)  # Q, K, V, output projections and the feed-forward, 2 FLOPs/MAC
    attention = layers * 2 * 2 * d  # QK^T and AV, per token per token of its sequence
    head = 2 * (d * d + d * config.vocab_size)  # transform + decoder, masked tokens only
    return 3 * (per_token * tokens + attention * squared_lengths + head * masked)


def mfu(flops_per_s: float, devices: int, peak: float | None) -> float | None:
    """Model FLOPs utilisation in [0, 1] (None without a peak TFLOP/s per device)."""
    if not peak:
        return None
    return flops_per_s / (devices * peak * 1e12)
