"""Reference genome: clean FASTA contigs into N-free Parquet segments (`cmgems genome download` fetches
the FASTA through `cmgems.download`, md5-checked).

`write_contigs` streams a FASTA (plain, gzip or BGZF) one record at a time, so memory is bounded by
the longest selected contig (about 5 bytes per base). Each selected contig is upper-cased (soft
masking dropped); every IUPAC code other than A/C/G/T counts as N, and the contig is split at N runs
into maximal N-free segments, or, with splice_n=True, N is deleted and the rest spliced into one row
(GeneMask's corpus). Output: `{contig}.parquet` per contig and `summary.json`.

The reader checks that the file is whole: a BGZF file must end with its end-of-file block, sequence
lines may hold printable ASCII only (a NUL byte is an error, not the end of the contig), and where
a samtools `.fai` index lies beside the file, the contigs and their lengths must match it.
"""

from __future__ import annotations

import argparse
import gzip
import logging
import os
import re
import zlib
from pathlib import Path
from typing import BinaryIO, Iterator

import numpy as np
import pyarrow as pa

from cmgems.arrow_io import SEQUENCE_SCHEMA, binary_array, write_sequence_table
from cmgems.atomic import atomic_output, write_json
from cmgems.cli import argument, int_at_least
from cmgems.download import MD5, download, file_digest, given_path
from cmgems.errors import CmgemsError

log = logging.getLogger(__name__)

FASTA_BLOCK = 1 << 22

# Default selection: chr1-22, chrX, chrY (with or without the "chr" prefix, e.g. GRCh37's "20").
PRIMARY_CONTIG = re.compile(r"(chr)?([1-9]|1[0-9]|2[0-2]|X|Y)")
# A contig selected by name becomes a file name (and a Snakemake wildcard, which allows [A-Za-z0-9_.-]+).
CONTIG_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,199}")

IUPAC = "ACGTUNRYKMSWBDHV"
# bytes.translate table (a 256-entry lookup, run in C): A/C/G/T either case -> upper case, every
# other IUPAC code -> N, anything else -> NUL (invalid).
CLEAN = bytearray(256)
for _c in IUPAC:
    CLEAN[ord(_c)] = CLEAN[ord(_c.lower())] = ord(_c) if _c in "ACGT" else ord("N")
CLEAN = bytes(CLEAN)
ACGT_RUN = re.compile(rb"[ACGT]+")
SEQUENCE_BYTES = bytes(range(0x21, 0x7F))  # printable ASCII but space: what a sequence line may hold
UTF8_BOM = b"\xef\xbb\xbf"
BGZF_EOF = bytes.fromhex("1f8b08040000000000ff0600424302001b0003000000000000000000")  # SAM spec 4.1.2


# ---------------------------------------------------------------------------------------- contigs


def is_selected(name: str, wanted: set[str]) -> bool:
    """Whether contig `name` is in `wanted`, or, when `wanted` is empty, a primary chromosome."""
    return name in wanted if wanted else PRIMARY_CONTIG.fullmatch(name) is not None


def check_contig_name(name: str) -> str:
    """`name` if it can name a contig's output file; CmgemsError otherwise."""
    if not CONTIG_NAME.fullmatch(name):
        raise CmgemsError(
            f"contig name {name!r} cannot be a file name: use up to 200 letters, digits, '_', '.' or '-', "
            "not starting with '.' or '-'"
        )
    return name


def select_contigs(names: list[str], wanted: set[str], fasta: str | os.PathLike) -> list[str]:
    """The selected contig names in file order; CmgemsError if a wanted one (or every primary) is missing."""
    missing = sorted(wanted - set(names))
    if missing:
        raise CmgemsError(f"contig(s) {', '.join(missing)} not found in {fasta}")
    chosen = [n for n in names if is_selected(n, wanted)]
    if not chosen:
        raise CmgemsError(f"no primary contig (chr1-22, chrX, chrY) in {fasta}; name the contigs to use")
    return chosen


def clean_sequence(name: str, seq: bytes) -> bytes:
    """`seq` upper-cased with every non-ACGT IUPAC code as N; same length.

    Raises CmgemsError naming the contig and 1-based position of the first non-IUPAC character.
    """
    cleaned = seq.translate(CLEAN)
    pos = cleaned.find(0)
    if pos >= 0:
        raise CmgemsError(
            f"contig {name}: character {chr(seq[pos])!r} at position {pos + 1} is not an IUPAC nucleotide code"
        )
    return cleaned


def segment_bounds(cleaned: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Starts and (exclusive) ends of the maximal N-free runs of a cleaned sequence; int64 arrays."""
    spans = np.array([m.span() for m in ACGT_RUN.finditer(cleaned)], dtype=np.int64).reshape(-1, 2)
    return spans[:, 0].copy(), spans[:, 1].copy()


def segment_table(name: str, seq: bytes, splice_n: bool) -> tuple[pa.Table, dict]:
    """The cleaned segments of one contig as a sequence table (SEQUENCE_SCHEMA) and its summary entry.

    The kept bases of all segments, in order, are the cleaned contig without its N; with splice_n
    they form one row (start 0, end = contig length).
    """
    cleaned = clean_sequence(name, seq)
    kept = cleaned.replace(b"N", b"")
    if splice_n:
        starts, ends = np.zeros(1, dtype=np.int64), np.array([len(seq)], dtype=np.int64)
        lengths = np.array([len(kept)])
    else:
        starts, ends = segment_bounds(cleaned)
        lengths = ends - starts
    del cleaned
    offsets = np.concatenate(([0], np.cumsum(lengths)))  # contigs < 2 Gbp
    table = pa.table(
        {
            "contig": pa.array([name] * len(starts), pa.string()),
            "start": starts,
            "end": ends,
            "sequence": binary_array(kept, offsets),
        },
        schema=SEQUENCE_SCHEMA,
    )
    summary = {
        "length": len(seq),
        "n_count": len(seq) - len(kept),
        "segments": len(starts),
        "bases_kept": len(kept),
    }
    return table, summary


def skip_bom(handle: BinaryIO) -> BinaryIO:
    """`handle` past a UTF-8 byte-order mark at its start (some Windows editors save one before the first
    header; labelled files accept it too), else rewound."""
    if handle.read(len(UTF8_BOM)) != UTF8_BOM:
        handle.seek(0)
    return handle


def open_fasta(path: Path) -> BinaryIO:
    """`path` opened for reading bytes: plain, or gzip/BGZF decompressed, past a byte-order mark;
    CmgemsError for a BGZF file without its end-of-file block (cut at a block boundary, which gzip
    alone reads as complete)."""
    with open(path, "rb") as fh:
        head = fh.read(18)
        if head[:2] != b"\x1f\x8b":
            return skip_bom(open(path, "rb"))
        if len(head) == 18 and head[3] & 4 and head[12:14] == b"BC":  # FEXTRA with a BC subfield: BGZF
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - len(BGZF_EOF)))
            if fh.read() != BGZF_EOF:
                raise CmgemsError(f"{path}: the BGZF end-of-file block is missing (truncated download or copy)")
    return skip_bom(gzip.open(path, "rb"))


def fai_lengths(fasta: Path) -> dict[str, int] | None:
    """Contig lengths from the samtools index `fasta`.fai beside the file; None when there is none."""
    fai = fasta.with_name(fasta.name + ".fai")
    if not fai.is_file():
        return None
    lengths = {}
    for line_no, line in enumerate(fai.read_text(errors="replace").splitlines(), start=1):
        fields = line.split("\t")
        if len(fields) < 2 or not fields[1].isdigit():
            raise CmgemsError(f"{fai}, line {line_no}: not a FASTA index line (name, length, offset, ...)")
        if fields[0] in lengths:
            raise CmgemsError(f"{fai}, line {line_no}: contig {fields[0]} is listed twice")
        lengths[fields[0]] = int(fields[1])
    return lengths


def _pieces(handle: BinaryIO) -> Iterator[tuple[int, bytes]]:
    """(first line number, text) of a FASTA stream in file order, newlines kept; each text is one
    header line or a run of sequence lines. Read in blocks: line by line is 3x slower."""
    line_no, carry = 1, []
    while True:
        block = handle.read(FASTA_BLOCK)
        cut = block.rfind(b"\n") + 1
        if block and not cut:
            carry.append(block)  # a line longer than a block (an unwrapped sequence)
            continue
        text = b"".join([*carry, block[:cut]])
        carry = [block[cut:]]
        pos = 0
        while pos < len(text):
            stop = text.find(b"\n" if text[pos] == 0x3E else b"\n>", pos) + 1 or len(text)  # 0x3E: '>'
            yield line_no, text[pos:stop]
            line_no += text.count(b"\n", pos, stop)
            pos = stop
        if not block:
            return


def _record(fasta: Path, name: str, header_line: int, pieces: list[bytes], index: dict[str, int] | None) -> bytes:
    """The sequence of one record from its lines; CmgemsError naming file, line and contig for a byte
    that is not printable ASCII, or for a length that differs from the .fai index."""
    text = b"".join(pieces)
    pieces.clear()  # the caller's list: at most two copies of the sequence at a time
    seq = text.translate(None, b"\r\n")  # line ends, Unix or Windows, in one pass
    bad = seq.translate(None, SEQUENCE_BYTES)
    if bad:
        line_no = header_line + 1 + text.count(b"\n", 0, text.find(bad[:1]))
        raise CmgemsError(f"{fasta}, line {line_no} (contig {name}): byte {bad[:1]!r} in a sequence line (corrupt or binary file?)")
    if index is not None:
        if name not in index:
            raise CmgemsError(f"{fasta}: contig {name} is not in its index {fasta}.fai (an index of another file?)")
        if index[name] != len(seq):
            raise CmgemsError(
                f"{fasta}: contig {name} has {len(seq):,} bp but {fasta}.fai lists {index[name]:,} (truncated or altered file?)"
            )
    return seq


def read_fasta(fasta: str | os.PathLike) -> Iterator[tuple[str, bytes]]:
    """Yield (name, sequence bytes) per record of a plain, gzip or BGZF FASTA.

    Read here rather than by htslib, which cuts a sequence at a NUL byte. CmgemsError naming the file
    (and line) for a corrupt or truncated file, a byte other than printable ASCII in a sequence, a
    duplicate name, a missing BGZF end-of-file block, or contigs unlike those of a `.fai` beside it.
    """
    path = given_path(fasta, "FASTA")
    if not path.is_file():
        raise CmgemsError(f"FASTA not found: {fasta}")
    index = fai_lengths(path)
    name, header_line, pieces, names = None, 0, [], set()
    try:
        with open_fasta(path) as handle:
            for line_no, piece in _pieces(handle):
                if piece.startswith(b">"):
                    if name is not None:
                        yield name, _record(path, name, header_line, pieces, index)
                    fields = piece[1:].split(None, 1)
                    if not fields or fields[0].translate(None, SEQUENCE_BYTES):
                        raise CmgemsError(f"{fasta}, line {line_no}: a header needs a name of printable ASCII characters")
                    name, header_line, pieces = fields[0].decode("ascii"), line_no, []
                    if name in names:
                        raise CmgemsError(f"{fasta}, line {line_no}: duplicate contig name {name}")
                    names.add(name)
                elif name is not None:
                    pieces.append(piece)
                elif piece.strip():
                    raise CmgemsError(f"{fasta}, line {line_no}: expected a '>' header line (not a FASTA file?)")
            if name is not None:
                yield name, _record(path, name, header_line, pieces, index)
    except (OSError, EOFError, zlib.error) as err:
        raise CmgemsError(f"cannot read FASTA {fasta} (truncated or corrupt?): {err}") from err
    missing = [n for n in index or () if n not in names]
    if missing:
        raise CmgemsError(f"{fasta}: ends without contig(s) {', '.join(missing[:3])} listed in {fasta}.fai (truncated file?)")


def write_contigs(
    fasta: str | os.PathLike,
    contigs: list[str] | None,
    out_dir: str | os.PathLike,
    splice_n: bool = False,
) -> dict:
    """Write `out_dir/{contig}.parquet` (cleaned segments) for the selected contigs and summary.json.

    Every record is read (see read_fasta) but only selected contigs are cleaned. With an
    explicit `contigs` list, all of them must exist. The whole directory appears atomically.
    Returns the summary dict.
    """
    wanted = {check_contig_name(name) for name in contigs or ()}
    out_dir = given_path(out_dir, "output folder")
    order: list[str] = []
    per_contig: dict[str, dict] = {}
    with atomic_output(out_dir, directory=True) as tmp:
        for name, seq in read_fasta(fasta):
            order.append(name)
            if is_selected(name, wanted):
                log.info("cleaning %s (%d bp)", name, len(seq))
                try:
                    table, per_contig[name] = segment_table(name, seq, splice_n)
                except CmgemsError as err:
                    raise CmgemsError(f"{fasta}: {err}") from None
                del seq
                meta = {"contig": name, "splice_n": str(splice_n).lower()}
                write_sequence_table(table, tmp / f"{name}.parquet", meta)
        if not order:
            raise CmgemsError(f"no FASTA records in {fasta}")
        selected = select_contigs(order, wanted, fasta)
        summary = {
            "input": str(fasta),
            "sha256": file_digest(fasta, "sha256"),
            "size": Path(fasta).stat().st_size,
            "splice_n": splice_n,
            "contigs": {name: per_contig[name] for name in selected},
        }
        write_json(tmp / "summary.json", summary)
    return summary


# ---------------------------------------------------------------------------------------- CLI


def configure_parser(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    dl = sub.add_parser("download", help="download a file, resuming, and check its md5")
    dl.add_argument("--url", required=True)
    dl.add_argument("--md5", required=True, help="expected md5 (hex)")
    dl.add_argument("--out", required=True, help="output file")
    dl.add_argument("--retries", type=int_at_least(0), default=5)
    dl.set_defaults(func=lambda a: download(a.url, MD5, a.md5, a.out, a.retries))
    ct = sub.add_parser("contigs", help="clean FASTA contigs into N-free Parquet segments")
    ct.add_argument("--fasta", required=True, help="FASTA (plain, gzip or BGZF)")
    ct.add_argument("--out-dir", required=True)
    ct.add_argument("--contigs", nargs="+", default=None, type=argument(check_contig_name), help="default: chr1-22, chrX, chrY")
    ct.add_argument("--splice-n", action="store_true", help="delete N and splice (one row per contig)")
    ct.set_defaults(func=lambda a: write_contigs(a.fasta, a.contigs, a.out_dir, a.splice_n))
