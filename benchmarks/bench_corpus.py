"""FASTA -> pretraining corpus Parquet, end to end (genome contigs + corpus chunk + finalize).

Default input: the whole GRCh37 chr20 (63 Mbp, BGZF; `apt-get install vt-examples`). Also times the
gzip decompression alone (a floor for the first stage) and the DNABERT-style baseline on a 1 Mbp
slice: space-joined overlapping k-mer strings per chunk, tokenized by a BertTokenizerFast built
from the DNABERT vocab.txt, against `kmers.kmer_ids` on the same chunks.

    python benchmarks/bench_corpus.py [--fasta PATH] [--baseline-mbp 1]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from cmgems import corpus, genome, kmers

DEFAULT_FASTA = "/usr/share/doc/vt/examples/ref/20.fa.gz"


def peak_rss_mib() -> float:
    """Peak resident memory of this process and of its waited-for children, MiB (Linux: KiB units)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children) / 1024


CPU_SECONDS: dict[str, float] = {}


def timed(label: str, fn, *args, **kwargs):
    """(fn(...), wall seconds); its CPU seconds (all threads) go to CPU_SECONDS[label]."""
    t0, c0 = time.perf_counter(), time.process_time()
    result = fn(*args, **kwargs)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    CPU_SECONDS[label] = cpu
    print(f"{label}: {seconds:.2f} s wall, {cpu:.2f} s CPU", flush=True)
    return result, seconds


def gzip_floor(fasta: Path) -> float:
    """Seconds to decompress the FASTA alone (Python's gzip, 1 MiB reads)."""
    t0 = time.perf_counter()
    with gzip.open(fasta, "rb") as fh:
        while fh.read(1 << 20):
            pass
    return time.perf_counter() - t0


def fasta_read_floor(fasta: Path) -> float:
    """Seconds to stream the FASTA's records alone (genome.read_fasta)."""
    t0 = time.perf_counter()
    for _ in genome.read_fasta(fasta):
        pass
    return time.perf_counter() - t0


def dnabert_baseline(chunks: list[bytes], k: int, workdir: Path) -> tuple[float, float, bool]:
    """Seconds for (k-mer string join + BertTokenizerFast, cmgems kmers.kmer_ids) over `chunks`,
    and whether both give the same ids."""
    from transformers import BertTokenizerFast

    (workdir / "vocab").mkdir()
    (workdir / "vocab" / "vocab.txt").write_text("\n".join(kmers.vocabulary(k)) + "\n")
    tokenizer = BertTokenizerFast.from_pretrained(str(workdir / "vocab"), do_lower_case=False)
    t0 = time.perf_counter()
    texts = []
    for chunk in chunks:
        s = chunk.decode("ascii")
        texts.append(" ".join(s[i : i + k] for i in range(len(s) - k + 1)))
    ids = tokenizer(texts)["input_ids"]
    baseline = time.perf_counter() - t0
    t0 = time.perf_counter()
    ours = [kmers.kmer_ids(chunk, k) for chunk in chunks]
    fast = time.perf_counter() - t0
    agree = all(i[1:-1] == o.tolist() for i, o in zip(ids, ours))
    return baseline, fast, agree


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fasta", default=DEFAULT_FASTA)
    parser.add_argument("--baseline-mbp", type=float, default=1.0)
    args = parser.parse_args()
    fasta = Path(args.fasta)
    command = " ".join([Path(sys.executable).name, *sys.argv])
    print(f"command: {command}\ncpus: {os.cpu_count()}  load average before: {os.getloadavg()}", flush=True)

    with tempfile.TemporaryDirectory() as tmpdir:
        work = Path(tmpdir)
        summary, t_contigs = timed("genome contigs", genome.write_contigs, fasta, None, work / "contigs")
        names = list(summary["contigs"])
        total_bp = sum(c["length"] for c in summary["contigs"].values())
        t_chunk = 0.0
        for name in names:
            _, seconds = timed(
                f"corpus chunk {name}",
                corpus.chunk_contig,
                work / "contigs" / f"{name}.parquet",
                work / "chunks" / f"{name}.parquet",
            )
            t_chunk += seconds
        chunk_files = [work / "chunks" / f"{n}.parquet" for n in names]
        manifest, t_final = timed(
            "corpus finalize",
            corpus.finalize,
            chunk_files,
            work / "corpus",
            contigs_summary=work / "contigs" / "summary.json",
        )
        rss_pipeline = peak_rss_mib()
        shards = [work / "corpus" / s / f"{n}.parquet" for s in corpus.SPLITS for n in names]
        t0 = time.perf_counter()
        sequences = corpus.TrainingSequences(work / "corpus")
        order = corpus.training_rows(np.arange(len(sequences)), len(sequences), seed=0)
        n_read = sum(len(s) > 0 for i in range(0, len(order), 250) for s in sequences.get(order[i : i + 250]))
        t_read = time.perf_counter() - t0
        print(f"TrainingSequences: one shuffled epoch of {n_read} sequences in {t_read:.2f} s", flush=True)

        baseline_chunks, slice_bp = [], 0
        for seq in pq.ParquetFile(shards[0]).read(columns=["sequence"]).column(0).to_pylist():
            if slice_bp >= args.baseline_mbp * 1e6:
                break
            baseline_chunks.append(seq)
            slice_bp += len(seq)
        t_baseline, t_ours, agree = dnabert_baseline(baseline_chunks, manifest["k"], work)

    t_gzip = gzip_floor(fasta)
    t_fasta = fasta_read_floor(fasta)
    t_total = t_contigs + t_chunk + t_final
    mbp = total_bp / 1e6
    figures = {
        "benchmark": "corpus",
        "fasta": str(fasta),
        "command": command,
        "cpu_count": os.cpu_count(),
        "loadavg_after": list(os.getloadavg()),
        "mbp": round(mbp, 3),
        "seconds": {
            "contigs": round(t_contigs, 3),
            "chunk": round(t_chunk, 3),
            "finalize": round(t_final, 3),
            "total": round(t_total, 3),
            "gzip_decompress_only": round(t_gzip, 3),
            "fasta_read_only": round(t_fasta, 3),
            "read_one_shuffled_epoch": round(t_read, 3),
        },
        "cpu_seconds": {k: round(v, 3) for k, v in CPU_SECONDS.items()},
        "mbp_per_s": round(mbp / t_total, 2),
        "mbp_per_cpu_s": round(mbp / sum(CPU_SECONDS.values()), 2),
        "gzip_floor_mbp_per_s": round(mbp / t_gzip, 2),
        "read_sequences_per_s": round(n_read / t_read),
        "sequences": {s: manifest["splits"][s]["sequences"] for s in corpus.SPLITS},
        "duplicates_removed": manifest["duplicates_removed"],
        "peak_rss_mib": round(peak_rss_mib(), 1),
        "peak_rss_mib_pipeline_only": round(rss_pipeline, 1),
        "baseline_slice_mbp": round(slice_bp / 1e6, 3),
        "dnabert_baseline_mbp_per_s": round(slice_bp / 1e6 / t_baseline, 3),
        "baseline_ids_equal_kmer_ids": agree,
        "kmer_ids_mbp_per_s": round(slice_bp / 1e6 / t_ours, 3),
        "kmer_ids_speedup_over_baseline": round(t_baseline / t_ours, 1),
        "end_to_end_over_baseline": round(t_baseline / slice_bp * total_bp / t_total, 1),
    }
    print(
        f"end to end: {mbp:.1f} Mbp in {t_total:.2f} s = {figures['mbp_per_s']} Mbp/s; "
        f"peak RSS {figures['peak_rss_mib']} MiB",
        flush=True,
    )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
