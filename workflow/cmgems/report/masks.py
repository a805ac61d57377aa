"""The masks figure: the positions each masking strategy corrupts in one validation sequence, drawn
with the configuration's k, sequence length and step budget."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch

from cmgems import kmers, layout, masking, pmi
from cmgems.report.collect import longest_validation_sequence
from cmgems.report.figures import no_data_figure, pyplot

MASK_CLASSES = ["kept", "[MASK]", "random token", "unchanged (predicted)", "special / pad"]
CLASS_COLOURS = ["#f0f0f0", "#d62728", "#ff7f0e", "#1f77b4", "#7f7f7f"]
TITLE = "Masks per strategy"


def mask_raster(ids: np.ndarray, inputs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per position of one sequence (L,): 0 kept, 1 -> [MASK], 2 -> another token, 3 masked but left
    unchanged, 4 special or pad token (indices into MASK_CLASSES)."""
    ids, inputs, labels = (np.asarray(a).reshape(-1) for a in (ids, inputs, labels))
    out = np.zeros(ids.shape, dtype=np.int64)
    masked = labels != masking.IGNORE_INDEX
    out[masked & (inputs == kmers.MASK_ID)] = 1
    out[masked & (inputs != kmers.MASK_ID) & (inputs != ids)] = 2
    out[masked & (inputs == ids)] = 3
    out[~masked & (ids < kmers.NUM_SPECIAL)] = 4
    return out


def masks_figure(ids, maskers: dict[str, Callable], k: int, step: int = 0, seed: int = 0):
    """One row per strategy: the positions each masker corrupts in one sequence `ids` (L,) or (1, L)
    of `k`-mer token ids.

    Each masker is called as `masker(ids (1, L) LongTensor, step=step, draws=masking.Draws(seed,
    [0]))` -> (inputs, labels)` with labels IGNORE_INDEX where not masked; a `phase(step)` method,
    where the masker has one, labels its row.
    """
    if not maskers or ids is None or np.asarray(ids).size == 0:
        return no_data_figure(TITLE, "no sequence or no masking strategy available")
    from matplotlib.colors import ListedColormap

    plt = pyplot()
    batch = torch.as_tensor(np.asarray(ids), dtype=torch.long).reshape(1, -1)
    rows, names = [], []
    for name, masker in maskers.items():
        draws = masking.Draws(seed, torch.zeros(1, dtype=torch.long))
        inputs, labels = masker(batch.clone(), step=step, draws=draws)
        raster = mask_raster(batch.numpy(), inputs.numpy(), labels.numpy())
        rows.append(raster)
        phase = masker.phase(step) if hasattr(masker, "phase") else ""
        masked = int(np.isin(raster, (1, 2, 3)).sum())
        real = int((raster != 4).sum())
        names.append(f"{name}{f' [{phase}]' if phase and phase != name else ''}  {masked}/{real}")
    fig, ax = plt.subplots(figsize=(12, 0.5 * len(rows) + 1.8))
    ax.imshow(np.stack(rows), aspect="auto", interpolation="nearest", cmap=ListedColormap(CLASS_COLOURS),
              vmin=-0.5, vmax=len(CLASS_COLOURS) - 0.5)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.set_xlabel(f"token position ({k}-mer index; 0 = [CLS])")
    ax.set_title(f"Masked positions per strategy, one sequence (step {step}, seed {seed}; label: masked/real tokens)")
    handles = [plt.Rectangle((0, 0), 1, 1, color=c, label=l) for c, l in zip(CLASS_COLOURS, MASK_CLASSES)]
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.35), ncol=5, fontsize=8, frameon=False)
    fig.tight_layout()
    return fig


def default_maskers(pmi_path: Path | None, k: int, max_steps: int) -> dict[str, Callable]:
    """Every strategy of `cmgems.masking` (those needing PMI ranks only when `pmi_path` exists)."""
    ranks = pmi.token_ranks(pmi_path, k) if pmi_path is not None and pmi_path.exists() else None
    return {name: masking.build(name, k=k, token_ranks=ranks, max_steps=max_steps)
            for name in masking.names() if ranks is not None or not masking.needs_ranks(name)}


def validation_masks_figure(root: str | Path, genomes: Iterable[str], k: int, max_positions: int, max_steps: int):
    """`masks_figure` of the longest validation chunk (`collect.longest_validation_sequence`), as
    `max_positions` tokens of `k`-mers, with every available strategy halfway through a pretraining
    run of `max_steps` steps."""
    found = longest_validation_sequence(root, genomes)
    if found is None:
        return no_data_figure(TITLE, "no validation corpus found")
    genome, sequence = found
    maskers = default_maskers(Path(layout.of_genome(genome, layout.PMI, root)), k, max_steps)
    return masks_figure(kmers.encode_batch([sequence], k, max_positions), maskers, k, step=max_steps // 2)
