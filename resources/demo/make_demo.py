"""Regenerate the demo inputs in this folder (deterministic; see PROVENANCE.md).

Needs Debian's `vt-examples` (GRCh37 chr20) and the minimap2 .deb's human mitochondrion:
    apt-get install -y vt-examples && apt-get download minimap2 && dpkg -x minimap2_*.deb /tmp/mm2
    python resources/demo/make_demo.py --chr20 /usr/share/doc/vt/examples/ref/20.fa.gz \
        --chrm /tmp/mm2/usr/share/doc/minimap2/test/MT-human.fa.gz
"""

from __future__ import annotations

import argparse
import csv
import gzip
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
GENOME_SLICE = (0, 460_000)  # chr20:1-460,000, the first 60,000 bp are N
TASK_REGION = (30_000_000, 31_000_000)  # background for the labelled tasks, far from the genome slice


def read_fasta_record(path: Path) -> str:
    with gzip.open(path, "rt") as f:
        return "".join(line.strip() for line in f if not line.startswith(">"))


def write_fasta(path: Path, records: dict[str, str]) -> None:
    with gzip.open(path, "wt", compresslevel=9) as f:
        for name, seq in records.items():
            f.write(f">{name}\n")
            f.writelines(seq[i : i + 60] + "\n" for i in range(0, len(seq), 60))


def backgrounds(region: str, n: int, length: int, rng: np.random.Generator, avoid: list[str]) -> list[str]:
    """`n` windows of `length` bp from real sequence, upper-case, without N or any motif in `avoid`."""
    out = []
    while len(out) < n:
        start = int(rng.integers(0, len(region) - length))
        window = region[start : start + length].upper()
        if "N" not in window and not any(m in window for m in avoid):
            out.append(window)
    return out


def plant(seq: str, motif: str, rng: np.random.Generator, lo: int, hi: int) -> str:
    at = int(rng.integers(lo, hi - len(motif)))
    return seq[:at] + motif + seq[at + len(motif) :]


def make_task(region: str, name: str, length: int, motifs: list[str | None], sizes: dict[str, int], seed: int) -> None:
    """A labelled task: class c holds motif c (None = no motif) planted in a real background window."""
    rng = np.random.default_rng(seed)
    avoid = [m for m in motifs if m]
    folder = HERE / "gue" / name
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in sizes.items():
        rows = []
        for label, motif in enumerate(motifs):
            for seq in backgrounds(region, n // len(motifs), length, rng, avoid):
                rows.append((plant(seq, motif, rng, length // 4, 3 * length // 4) if motif else seq, label))
        order = rng.permutation(len(rows))
        with (folder / f"{split}.csv").open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["sequence", "label"])
            writer.writerows(rows[i] for i in order)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chr20", type=Path, required=True)
    parser.add_argument("--chrm", type=Path, required=True)
    args = parser.parse_args()
    chr20 = read_fasta_record(args.chr20)
    (HERE / "genome").mkdir(exist_ok=True)
    write_fasta(
        HERE / "genome" / "demo.fa.gz",
        {"chr20": chr20[GENOME_SLICE[0] : GENOME_SLICE[1]], "chrM": read_fasta_record(args.chrm)},
    )
    region = chr20[TASK_REGION[0] : TASK_REGION[1]]
    sizes = {"train": 1200, "dev": 200, "test": 400}
    make_task(region, "demo_tata", 70, [None, "TATAAAAGG"], sizes, seed=1)
    make_task(region, "demo_splice", 60, [None, "CAGGTAAGT", "TTTTCAGGT"], sizes, seed=2)


if __name__ == "__main__":
    main()
