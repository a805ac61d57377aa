"""Benchmark n-gram counting (n = 1..10) and PMI scoring on the whole GRCh37 chr20 (63 Mbp), vs kmc.

Usage: python benchmarks/bench_pmi.py [--fasta /usr/share/doc/vt/examples/ref/20.fa.gz] [--threads 2]
       [--max-n 10] [--no-kmc]

Two end-to-end paths from the BGZF FASTA:
  pipeline  cmgems.genome.write_contigs (decompress, parse, clean, write parquet) + pmi.count_contig_files
  in-memory zlib decompress + minimal clean (upper-case, split at non-ACGT) + pmi.count_buffer
then kmc (k = 1..max n, non-canonical, every count kept) on the decompressed FASTA, and scoring.
Prints figures as it goes; the last line is one JSON object. Measures, never asserts.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numba
import numpy as np
from numba import njit

from cmgems import genome, pmi

DEFAULT_FASTA = "/usr/share/doc/vt/examples/ref/20.fa.gz"


def timed(label: str, fn, *args, **kwargs):
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    dt = time.perf_counter() - t0
    print(f"  {label:<44s} {dt:8.3f} s", flush=True)
    return out, dt


def decompress(path: str) -> bytes:
    with gzip.open(path, "rb") as fh:
        return fh.read()


@njit(cache=True)
def _clean(raw):
    """Drop line breaks, upper-case, and find the maximal ACGT runs: (seq uint8, starts, ends int64)."""
    seq = np.empty(raw.shape[0], dtype=np.uint8)
    m = 0
    runs = 0
    inside = False
    for c in raw:
        if c == 10 or c == 13:
            continue
        if 97 <= c <= 122:
            c -= 32
        seq[m] = c
        m += 1
        acgt = c == 65 or c == 67 or c == 71 or c == 84
        runs += acgt and not inside
        inside = acgt
    starts = np.empty(runs, dtype=np.int64)
    ends = np.empty(runs, dtype=np.int64)
    r = 0
    inside = False
    for i in range(m):
        c = seq[i]
        acgt = c == 65 or c == 67 or c == 71 or c == 84
        if acgt and not inside:
            starts[r] = i
        elif inside and not acgt:
            ends[r] = i
            r += 1
        inside = acgt
    if inside:
        ends[r] = m
    return seq[:m], starts, ends


def clean_to_segments(raw: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sequence of a single-record FASTA, upper-cased, split at non-ACGT: (data, starts, ends) into data."""
    body = np.frombuffer(raw, dtype=np.uint8)[raw.find(b"\n") + 1 if raw.startswith(b">") else 0 :]
    if raw.count(b">") > 1:
        raise SystemExit("the in-memory path handles single-record FASTA only")
    return _clean(body)


def count_only(data, starts, ends, max_n, threads, repeats=3) -> float:
    """Best-of-`repeats` wall time of pmi.count_buffer (after a warm-up compile)."""
    pmi.count_buffer(data[:1000], np.array([0]), np.array([1000]), max_n, threads)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        pmi.count_buffer(data, starts, ends, max_n, threads)
        best = min(best, time.perf_counter() - t0)
    return best


def run_kmc(fasta_plain: Path, max_n: int, threads: int, workdir: Path) -> tuple[float, dict]:
    """Total seconds of kmc + its dumped counts for k = max_n (kmer -> count)."""
    total = 0.0
    dump = {}
    for k in range(1, max_n + 1):
        db = workdir / f"kmc{k}"
        t0 = time.perf_counter()
        subprocess.run(["kmc", f"-k{k}", "-b", "-ci1", "-cs4294967295", "-fm", f"-t{threads}", "-m4", "-hp",
                        str(fasta_plain), str(db), str(workdir)], check=True, capture_output=True)
        dt = time.perf_counter() - t0
        total += dt
        print(f"  kmc k={k:<2d} {dt:8.3f} s", flush=True)
        if k == max_n:
            out = workdir / "dump.txt"
            subprocess.run(["kmc_tools", "transform", str(db), "dump", str(out)], check=True, capture_output=True)
            for line in out.read_text().splitlines():
                kmer, c = line.split()
                dump[kmer] = int(c)
    return total, dump


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fasta", default=DEFAULT_FASTA)
    ap.add_argument("--contig", default="20")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-n", type=int, default=10)
    ap.add_argument("--no-kmc", action="store_true")
    args = ap.parse_args()
    numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
    fig: dict = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "fasta": args.fasta,
                 "cpu_count": os.cpu_count(), "threads": args.threads, "max_n": args.max_n,
                 "loadavg_start": os.getloadavg()}
    print(f"bench_pmi: {fig}", flush=True)

    with tempfile.TemporaryDirectory(prefix="bench_pmi.") as tmp_name:
        tmp = Path(tmp_name)

        print("pipeline path (genome.write_contigs -> parquet -> pmi.count_contig_files):")
        _, t_contigs = timed("write_contigs (decompress, parse, clean, write)", genome.write_contigs,
                             args.fasta, [args.contig], tmp / "contigs")
        contig_file = tmp / "contigs" / f"{args.contig}.parquet"
        (data, starts, ends), t_read = timed("read parquet segments", pmi.read_segments, contig_file)
        pmi.count_buffer(data[:1000], np.array([0]), np.array([1000]), args.max_n, args.threads)  # compile
        counts, t_count_files = timed("count_contig_files (read + count)", pmi.count_contig_files,
                                      [contig_file], args.max_n, args.threads)
        cli = [str(Path(sys.executable).with_name("cmgems")), "pmi", "count", "--contigs", str(contig_file),
               "--max-n", str(args.max_n), "--threads", str(args.threads), "--out", str(tmp / "cli_counts.parquet")]
        _, t_cli = timed("`cmgems pmi count` (new process, writes counts)", subprocess.run, cli, check=True,
                         capture_output=True)
        bases = int(counts[1].sum())
        t_pipeline = t_contigs + t_count_files
        print(f"  bases counted {bases:,} in {len(starts)} segments; end to end {t_pipeline:.3f} s = "
              f"{bases / t_pipeline / 1e6:.1f} Mbp/s", flush=True)

        print("in-memory path (zlib decompress -> clean -> pmi.count_buffer):")
        clean_to_segments(b">x\nACGTNacgt\n")  # compile
        raw, t_decompress = timed("gzip decompress", decompress, args.fasta)
        (mdata, mstarts, mends), t_clean = timed("clean (upper-case, split at non-ACGT)", clean_to_segments, raw)
        mcounts, t_count = timed("count_buffer", pmi.count_buffer, mdata, mstarts, mends, args.max_n, args.threads)
        same = all((mcounts[n] == counts[n]).all() for n in counts)
        t_mem = t_decompress + t_clean + t_count
        print(f"  end to end {t_mem:.3f} s = {bases / t_mem / 1e6:.1f} Mbp/s (counts equal pipeline's: {same})")

        print("counting alone (best of 3):")
        t_count_1 = count_only(data, starts, ends, args.max_n, 1)
        t_count_2 = count_only(data, starts, ends, args.max_n, args.threads)
        print(f"  1 thread  {t_count_1:.3f} s = {bases / t_count_1 / 1e6:.1f} Mbp/s")
        print(f"  {args.threads} threads {t_count_2:.3f} s = {bases / t_count_2 / 1e6:.1f} Mbp/s", flush=True)

        print("scoring (min count 101):")
        t_score = {}
        top6 = {}
        for definition in pmi.DEFINITIONS:
            table, t_score[definition] = timed(f"score {definition}", pmi.score, counts, definition, 101)
            six = table.filter(np.asarray(table.column("n")) == 6)
            top6[definition] = six.column("ngram").to_pylist()[:10]
            print(f"    top 6-mers: {' '.join(top6[definition])}; last: {six.column('ngram')[-1]}")
        write_counts_s = timed("write counts parquet", pmi.write_counts, counts, tmp / "counts.parquet")[1]
        read_counts_s = timed("read counts parquet", pmi.read_counts, tmp / "counts.parquet")[1]

        kmc = {}
        if not args.no_kmc and shutil.which("kmc"):
            print("kmc (k = 1..max n, -b -ci1 -cs4294967295, plain FASTA):")
            plain = tmp / "plain.fa"
            plain.write_bytes(raw)
            t_kmc, dump = run_kmc(plain, args.max_n, args.threads, tmp)
            codes = pmi.ngram_codes(list(dump), args.max_n)
            theirs = np.zeros(4**args.max_n, dtype=np.int64)
            theirs[codes] = list(dump.values())
            kmc = {"kmc_total_s": round(t_kmc, 3), "kmc_over_ours_count": round(t_kmc / t_count_files, 2),
                   "kmc_over_ours_end_to_end": round(t_kmc / t_pipeline, 2),
                   f"kmc_k{args.max_n}_equal": bool((theirs == counts[args.max_n]).all())}
            print(f"  kmc total {t_kmc:.3f} s; ratio kmc / ours (count) {t_kmc / t_count_files:.1f}x; {kmc}")

    fig.update({
        "bases": bases, "segments": int(len(starts)),
        "pipeline_write_contigs_s": round(t_contigs, 3), "pipeline_read_parquet_s": round(t_read, 3),
        "pipeline_count_files_s": round(t_count_files, 3), "cli_count_s": round(t_cli, 3), "pipeline_end_to_end_s": round(t_pipeline, 3),
        "pipeline_mbp_per_s": round(bases / t_pipeline / 1e6, 1),
        "mem_decompress_s": round(t_decompress, 3), "mem_clean_s": round(t_clean, 3), "mem_count_s": round(t_count, 3),
        "mem_end_to_end_s": round(t_mem, 3), "mem_mbp_per_s": round(bases / t_mem / 1e6, 1), "mem_counts_equal": same,
        "count_1thread_mbp_per_s": round(bases / t_count_1 / 1e6, 1),
        "count_mbp_per_s": round(bases / t_count_2 / 1e6, 1),
        "score_levine_s": round(t_score["levine"], 3), "score_genemask_s": round(t_score["genemask"], 3),
        "write_counts_s": round(write_counts_s, 3), "read_counts_s": round(read_counts_s, 3),
        "top6_levine": top6["levine"], "top6_genemask": top6["genemask"],
        **kmc, "loadavg_end": os.getloadavg(),
    })
    print(json.dumps(fig))


if __name__ == "__main__":
    main()
