"""The bad-input matrix: one table per stage, each row a case, how to make it, and the error expected.

Every case checks that the stage refuses with that message (a CmgemsError, or through the CLI the
exit status and the one-line message), that the message names the file or argument at fault, that
nothing is left behind (no output, no temporary) and that the user's files are untouched: the whole
test folder, user files included, is byte-for-byte what it was before the call.

The matrix holds 154 cases (test_the_matrix_says_how_many_cases_it_holds keeps the count true).
"""

from __future__ import annotations

import bz2
import gzip
import hashlib
import json
import math
import random
import re
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pyarrow as pa
import pyarrow.parquet as pq
import pysam
import pytest

from cmgems import baseline, cli, genome, gue
from cmgems.download import git_blob_sha1
from cmgems import corpus, kmers, models, pmi
from cmgems.errors import CmgemsError
from cmgems.finetune import Settings, finetune
from cmgems.labelled import write_labelled

GOOD_FASTA = ">chr1 a description\nACGTACGTAC\nGTACGT\n>chr2\nGGCCAATT\n"
_BASES = "".join(random.Random(0).choices("ACGT", k=120_000))
LONG_FASTA = ">chr1\n" + "".join(_BASES[i : i + 60] + "\n" for i in range(0, len(_BASES), 60))  # gzip: 35 kB, 3 BGZF blocks
LONG_GZ = gzip.compress(LONG_FASTA.encode())


@dataclass
class Case:
    """A bad input: `make(tmp)` writes it and returns what the stage is called with."""

    id: str
    make: Callable[[Path], dict]
    error: str  # regex searched in the message
    names: str | None = "path"  # the key of make()'s result whose value the message must contain


def table(*cases: Case):
    return pytest.mark.parametrize("case", cases, ids=[c.id for c in cases])


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every path under `root`, hidden ones included, with its bytes (None for a folder)."""
    return {p.relative_to(root).as_posix(): None if p.is_dir() else p.read_bytes() for p in sorted(root.rglob("*"))}


def put(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def user_files(root: Path) -> None:
    """Files of the user's own that no failing stage may touch."""
    put(root / "NOTES.md", "my notes")
    put(root / "mine" / "data.csv", "sequence,label\nACGT,1\n")


def assert_refused(tmp: Path, call: Callable[[], object], case: Case, args: dict) -> None:
    before = snapshot(tmp)
    with pytest.raises(CmgemsError) as err:
        call()
    message = str(err.value)
    assert re.search(case.error, message), message
    if case.names:
        assert str(args[case.names]) in message
    assert snapshot(tmp) == before


# ---------------------------------------------------------------------------------------- genome
def bgzf(path: Path, text: str) -> Path:
    plain = put(path.with_suffix(".plain"), text)
    pysam.tabix_compress(str(plain), str(path), force=True)
    plain.unlink()
    return path


def bgzf_cut_at_block(tmp: Path) -> dict:
    path = bgzf(tmp / "g.fa.gz", LONG_FASTA)
    data, ends, pos = path.read_bytes(), [], 0
    while pos < len(data):
        pos += int.from_bytes(data[pos + 16 : pos + 18], "little") + 1
        ends.append(pos)
    path.write_bytes(data[: ends[len(ends) // 2]])
    return {"path": path}


def with_fai(tmp: Path, fasta_text: str, fai_text: str) -> dict:
    path = put(tmp / "g.fa", fasta_text)
    put(tmp / "g.fa.fai", fai_text)
    return {"path": path}


def fasta(data: bytes | str, contigs=None, name="g.fa") -> Callable[[Path], dict]:
    return lambda tmp: {"path": put(tmp / name, data), "contigs": contigs}


def good_fasta_and_out(prepare_out: Callable[[Path], Path]) -> Callable[[Path], dict]:
    def make(tmp: Path) -> dict:
        path = put(tmp / "g.fa", GOOD_FASTA)
        return {"path": path, "out": prepare_out(tmp)}

    return make


def cmgems_output_plus_user_file(tmp: Path) -> Path:
    genome.write_contigs(put(tmp / "old.fa", GOOD_FASTA), None, tmp / "out")
    put(tmp / "out" / "my_results.txt", "keep me")
    return tmp / "out"


GENOME = table(
    Case("nul-byte", fasta(b">chr1\nACGT\nAC\x00GTACGT\n"), r"g.fa, line 3 \(contig chr1\): byte b'\\x00' in a sequence line"),
    Case("nul-byte-in-other-contig", fasta(b">chr1\nACGT\n>chrUn_x\nAC\x00GT\n"), r"line 4 \(contig chrUn_x\): byte b'\\x00'"),
    Case("control-byte", fasta(b">chr1\nACGT\x07ACGT\n"), r"line 2 \(contig chr1\): byte b'\\x07'"),
    Case("non-ascii-byte", fasta(">chr1\nACGTé\n"), r"line 2 \(contig chr1\): byte b'\\xc3'"),
    Case("space-in-sequence", fasta(">chr1\nACGT ACGT\n"), r"line 2 \(contig chr1\): byte b' '"),
    Case("tab-in-sequence", fasta(">chr1\nACGT\n\tACGT\n"), r"line 3 \(contig chr1\): byte b'\\t'"),
    Case("bgzf-cut-at-block-boundary", bgzf_cut_at_block, "the BGZF end-of-file block is missing"),
    Case("bgzf-cut-mid-block", lambda t: {"path": put(t / "g.fa.gz", bgzf(t / "g.fa.gz", LONG_FASTA).read_bytes()[:20_000])},
         "the BGZF end-of-file block is missing"),
    Case("gzip-cut", fasta(LONG_GZ[:20_000], name="g.fa.gz"), r"cannot read FASTA .* \(truncated or corrupt\?\)"),
    Case("gzip-corrupt", fasta(LONG_GZ[:20_000] + b"\x00" * 64 + LONG_GZ[20_064:], name="g.fa.gz"), r"cannot read FASTA .* \(truncated or corrupt\?\)"),
    Case("fai-length-differs", lambda t: with_fai(t, ">chr1\nACGTACGTACGT\n", "chr1\t99\t6\t12\t13\n"),
         r"contig chr1 has 12 bp but .*g.fa.fai lists 99 \(truncated or altered file\?\)"),
    Case("fai-contig-missing-from-file", lambda t: with_fai(t, ">chr1\nACGT\n", "chr1\t4\t6\t4\t5\nchr2\t8\t17\t8\t9\n"),
         r"ends without contig\(s\) chr2 listed in .*g.fa.fai \(truncated file\?\)"),
    Case("fai-lacks-a-contig", lambda t: with_fai(t, ">chr1\nACGT\n>chr2\nACGT\n", "chr1\t4\t6\t4\t5\n"), r"contig chr2 is not in its index"),
    Case("fai-malformed", lambda t: with_fai(t, GOOD_FASTA, "chr1 16 7 10 11\n"), r"g.fa.fai, line 1: not a FASTA index line"),
    Case("empty-file", fasta(""), "no FASTA records in"),
    Case("sequence-before-header", fasta("ACGT\n>chr1\nACGT\n"), r"g.fa, line 1: expected a '>' header line"),
    Case("binary-file", fasta(bytes(range(256)) * 4), r"line 1: expected a '>' header line \(not a FASTA file\?\)"),
    Case("bzip2-file", fasta(bz2.compress(GOOD_FASTA.encode()), name="g.fa.bz2"), r"line 1: expected a '>' header line"),
    Case("header-without-name", fasta(">\nACGT\n"), r"g.fa, line 1: a header needs a name"),
    Case("header-name-not-ascii", fasta(">chré1\nACGT\n"), r"g.fa, line 1: a header needs a name of printable ASCII"),
    Case("duplicate-contig", fasta(">chr1\nACGT\n>chr1\nGGCC\n"), r"g.fa, line 3: duplicate contig name chr1"),
    Case("fai-lists-a-contig-twice", lambda t: with_fai(t, GOOD_FASTA, "chr1\t16\t21\t10\t11\nchr1\t16\t21\t10\t11\n"),
         r"g.fa.fai, line 2: contig chr1 is listed twice"),
    Case("missing-contig", fasta(GOOD_FASTA, ["chr1", "chr9"]), r"contig\(s\) chr9 not found in"),
    Case("no-primary-contig", fasta(">chrUn_x\nACGT\n>scaffold_1\nACGT\n"), r"no primary contig \(chr1-22, chrX, chrY\) in"),
    Case("not-a-nucleotide", fasta(">chr1\nACGT\nACXT\n"), r"g.fa: contig chr1: character 'X' at position 7 is not an IUPAC"),
    Case("contig-name-with-slash", fasta(">chr1/sub\nACGT\n", ["chr1/sub"]), "contig name 'chr1/sub' cannot be a file name", None),
    Case("contig-name-traversal", fasta(">../../x\nACGT\n", ["../../x"]), r"contig name '../../x' cannot be a file name", None),
    Case("fasta-missing", lambda t: {"path": t / "absent.fa"}, "FASTA not found"),
    Case("fasta-is-a-folder", lambda t: {"path": (t / "g.fa").mkdir() or t / "g.fa"}, "FASTA not found"),
    Case("out-dir-holds-user-files", good_fasta_and_out(lambda t: put(t / "out" / "notes.txt", "mine").parent),
         r"out: refusing to replace the folder: it holds 1 file\(s\) cmgems did not write, e.g. 'notes.txt'", "out"),
    Case("out-dir-cmgems-output-plus-user-file", good_fasta_and_out(cmgems_output_plus_user_file),
         r"refusing to replace the folder: .*'my_results.txt'", "out"),
    Case("out-dir-is-a-file", good_fasta_and_out(lambda t: put(t / "out", "a file")), "exists and is not a folder", "out"),
    Case("out-dir-below-a-file", good_fasta_and_out(lambda t: put(t / "file", "a file") / "out"), r"file: is a file, so .* cannot be written", "out"),
)


@GENOME
def test_genome_contigs(tmp_path, case):
    user_files(tmp_path)
    args = {"contigs": None, "out": tmp_path / "a" / "out", **case.make(tmp_path)}
    assert_refused(tmp_path, lambda: genome.write_contigs(args["path"], args["contigs"], args["out"]), case, args)


# ------------------------------------------------------------------------- labelled files (finetune)
def labelled(text: str | bytes, name: str = "train.csv") -> Callable[[Path], dict]:
    return lambda tmp: {"path": put(tmp / name, text)}


LABELLED = table(
    Case("missing-label-column", labelled("sequence,class\nACGT,1\n"), r"train.csv, line 1: missing column\(s\) \['label'\]"),
    Case("no-header", labelled("ACGTACGT,1\nACGTAAAA,0\n"), r"line 1: missing column\(s\) \['sequence', 'label'\]"),
    Case("label-not-an-integer", labelled("sequence,label\nACGT,1\nACGT,x\n"), r"train.csv, line 3: label 'x' is not an integer"),
    Case("label-float", labelled("sequence,label\nACGT,1.0\n"), r"line 2: label '1.0' is not an integer"),
    Case("label-underscored", labelled("sequence,label\nACGT,1_0\n"), r"line 2: label '1_0' is not an integer"),
    Case("label-negative", labelled("sequence,label\nACGT,-1\n"), r"line 2: label -1 is negative"),
    Case("label-huge", labelled("sequence,label\nACGT,1" + "0" * 20 + "\n"), r"line 2: label 10+ is too large"),
    Case("not-dna", labelled("sequence,label\nACGT,1\nACXT,0\n"), r"line 3: character 'X' at position 3 is outside ACGTN"),
    Case("nul-in-sequence", labelled(b"sequence,label\nAC\x00GT,1\n"), r"line 2: character '\\x00' at position 3"),
    Case("empty-sequence", labelled("sequence,label\n,1\n"), r"line 2: empty sequence"),
    Case("kmers-do-not-overlap", labelled("sequence\tlabel\nACGTAC CGTACG\t1\nACGTAC GTACGT\t0\n", "train.tsv"),
         r"train.tsv, line 3: its 6-mers do not overlap by 5 bases"),
    Case("kmers-of-mixed-length", labelled("sequence\tlabel\nACGTAC CGTACGT\t1\n", "train.tsv"), r"line 2: its 6-mers do not overlap"),
    Case("too-few-fields", labelled("sequence,label\nACGT\n"), r"line 2: 1 field\(s\), expected 2"),
    Case("unbalanced-quote", labelled('sequence\tlabel\n"ACGTAC\t1\nACGTAC"\t0\n', "train.tsv"),
         r"train.tsv, line 2: unbalanced quote \(a quoted field runs past the end of the line\)"),
    Case("unclosed-quote-at-end", labelled('sequence\tlabel\nACGTAC\t1\n"ACGTAC\t0\n', "train.tsv"),
         r"line 3: cannot split the row into fields .* an unbalanced or misplaced quote\?"),
    Case("text-after-closing-quote", labelled('sequence\tlabel\n"ACGTAC"x\t1\n', "train.tsv"), r"line 2: .*misplaced quote"),
    Case("empty-split", labelled("sequence,label\n"), r"train.csv: no rows \(empty split\)"),
    Case("blank-lines-only", labelled('"sequence"\t"label"\n\n\n', "train.tsv"), r"no rows \(empty split\)"),
    Case("latin-1-text", labelled("sequence,label\nACGT,1\n# café\n".encode("latin-1")), r"train.csv: not UTF-8 text \(byte b'\\xe9'\)"),
    Case("utf-16-text", labelled("sequence,label\nACGT,1\n".encode("utf-16")), r"not UTF-8 text"),
    Case("file-missing", lambda t: {"path": t / "train.csv"}, r"train.csv: cannot read \(No such file or directory\)"),
    Case("file-is-a-folder", lambda t: {"path": (t / "train.csv").mkdir() or t / "train.csv"}, r"cannot read \(Is a directory\)"),
)


@LABELLED
def test_finetune_inputs(tmp_path, tiny_model, case):
    user_files(tmp_path)
    args = {"test": put(tmp_path / "test.csv", "sequence,label\nACGTACGT,0\nTTGGCCAA,1\n"), **case.make(tmp_path)}
    settings = Settings(model=str(tiny_model), train=str(args["path"]), test=str(args["test"]),
                        out=str(tmp_path / "run"), max_length=20)
    assert_refused(tmp_path, lambda: finetune(settings), case, args)


# ---------------------------------------------------------------------- label sets (finetune, baseline)
def label_sets(fault: str, **splits: list[int]) -> Callable[[Path], dict]:
    """Writes the splits; "path" is the one at fault."""

    def make(tmp: Path) -> dict:
        seqs = ["ACGTACGTAAGG", "TTGGCCAATTGA", "GGGCCCAAATTT", "ACACACGTGTGT"]
        for name, labels in splits.items():
            write_labelled(tmp / f"{name}.csv", seqs[: len(labels)], labels)
        return {name: tmp / f"{name}.csv" for name in ("train", "dev", "test")} | {"path": tmp / f"{fault}.csv"}

    return make


LABEL_SETS = [
    Case("single-class", label_sets(train=[1, 1, 1], test=[1, 1], fault="train"), r"every row has label 1; a classifier needs at least 2 classes"),
    Case("train-skips-a-class", label_sets(train=[0, 2, 0, 2], test=[0, 1], fault="train"),
         r"labels \[0, 2\] are not 0..2 \(no training row has label 1\)"),
    Case("train-not-from-0", label_sets(train=[1, 2, 1, 2], test=[1, 2], fault="train"), r"no training row has label 0"),
    Case("test-class-unseen", label_sets(train=[0, 1, 0, 1], test=[0, 2], fault="test"), r"label\(s\) \[2\] not in the training set .*train.csv"),
    Case("dev-class-unseen", label_sets(train=[0, 1, 0, 1], dev=[3, 0], test=[0, 1], fault="dev"), r"label\(s\) \[3\] not in the training set"),
]


def run_finetune(args: dict, tiny: Path, out: Path) -> None:
    dev = str(args["dev"]) if args["dev"].exists() else None
    finetune(Settings(model=str(tiny), train=str(args["train"]), dev=dev, test=str(args["test"]), out=str(out), max_length=20))


def run_baseline(args: dict, tiny: Path, out: Path) -> None:
    baseline.baseline(str(args["train"]), str(args["test"]), str(out), str(args["dev"]) if args["dev"].exists() else None)


@table(*LABEL_SETS)
@pytest.mark.parametrize("stage", [run_finetune, run_baseline], ids=["finetune", "baseline"])
def test_label_sets(tmp_path, tiny_model, stage, case):
    user_files(tmp_path)
    args = case.make(tmp_path)
    assert_refused(tmp_path, lambda: stage(args, tiny_model, tmp_path / "run"), case, args)


# -------------------------------------------------------------------------------------- gue fetch
TASKS = ["prom/prom_core_tata", "mouse/0"]
GUE_MEMBERS = {f"GUE/{t}/{s}.csv": f"sequence,label\nACGTACGT,{i % 2}\n" for t in TASKS for i, s in enumerate(("train", "dev", "test"))}


def archive(members: dict[str, str] = GUE_MEMBERS, md5: str | None = None, corrupt: bool = False, expect=TASKS):
    def make(tmp: Path) -> dict:
        path = tmp / "downloads" / "GUE.zip"
        path.parent.mkdir()
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as z:
            for name, text in members.items():
                z.writestr(name, text)
        if corrupt:  # flip a byte of the last member's data: its CRC no longer matches
            data = bytearray(path.read_bytes())
            data[data.rindex(b"ACGTACGT")] ^= 0x20
            path.write_bytes(bytes(data))
        actual = hashlib.md5(path.read_bytes()).hexdigest()
        return {"url": path.as_uri(), "md5": md5 or actual, "out": tmp / "resources" / "GUE", "expect": expect, "path": path}

    return make


def then(make: Callable[[Path], dict], prepare: Callable[[Path], object]) -> Callable[[Path], dict]:
    def both(tmp: Path) -> dict:
        args = make(tmp)
        prepare(args["out"])
        return args

    return both


GUE = table(
    Case("md5-mismatch", archive(md5="0" * 32), r"md5 mismatch for file://.*: expected 0{32}, got [0-9a-f]{32}$", "url"),
    Case("md5-mismatch-into-a-new-folder", lambda t: archive(md5="0" * 32)(t) | {"out": t / "new" / "GUE"}, r"md5 mismatch for file://", "url"),
    Case("task-missing-into-a-new-folder", lambda t: archive({k: v for k, v in GUE_MEMBERS.items() if "prom" not in k})(t) | {"out": t / "new" / "GUE"},
         r"GUE.zip: the archive lacks 3 expected file\(s\), e.g. \['prom/prom_core_tata/train.csv'", None),
    Case("md5-not-hex", archive(md5="not-an-md5"), r"not an md5 checksum \(32 hex digits\): 'not-an-md5'", None),
    Case("url-without-scheme", lambda t: archive()(t) | {"url": "example.org/GUE.zip"}, r"the URL must start with one of http://", "url"),
    Case("archive-missing", lambda t: archive()(t) | {"url": (t / "absent.zip").as_uri()}, r"download of .*absent.zip failed after 1 attempts", "url"),
    Case("not-a-zip", lambda t: archive()(t) | dict(zip(("url", "md5"), not_a_zip(t))), r"GUE.zip: not a zip archive", None),
    Case("member-escapes", archive({**GUE_MEMBERS, "GUE/../../evil.csv": "x"}), r"GUE.zip: unsafe member path 'GUE/../../evil.csv'", None),
    Case("member-absolute", archive({**GUE_MEMBERS, "/tmp/evil.csv": "x"}), r"GUE.zip: unsafe member path '/tmp/evil.csv'", None),
    Case("task-missing", archive({k: v for k, v in GUE_MEMBERS.items() if "mouse" not in k}),
         r"GUE.zip: the archive lacks 3 expected file\(s\), e.g. \['mouse/0/train.csv'", None),
    Case("member-corrupt", archive(corrupt=True), r"GUE.zip: cannot unpack member 'GUE/mouse/0/test.csv' \(Bad CRC-32", None),
    Case("out-is-a-file", then(archive(), lambda out: put(out, "a file")), r"GUE: exists and is not a folder", "out"),
    Case("users-file-at-an-archive-path", then(archive(), lambda out: put(out / "mouse" / "0" / "dev.csv", "my own dev split")),
         r"GUE: refusing to write into it: it holds 1 file\(s\) cmgems did not write, e.g. 'mouse/0/dev.csv'", "out"),
    Case("users-folder-where-the-archive-has-a-file", then(archive(), lambda out: put(out / "mouse" / "0" / "test.csv" / "x", "mine")),
         r"GUE/mouse/0/test.csv: is in the way of mouse/0/test.csv", "out"),
    Case("users-file-where-the-archive-has-a-folder", then(archive(), lambda out: put(out / "prom", "mine")),
         r"GUE/prom: is in the way of prom/prom_core_tata/dev.csv", "out"),
)


def not_a_zip(tmp: Path) -> tuple[str, str]:
    path = put(tmp / "downloads" / "GUE.zip", "<html>Not found</html>")
    return path.as_uri(), hashlib.md5(path.read_bytes()).hexdigest()


@GUE
def test_gue_fetch(tmp_path, case):
    args = case.make(tmp_path)
    if args["out"].parent.exists() and not args["out"].is_file():
        user_files(args["out"])
    assert_refused(tmp_path, lambda: gue.fetch(args["url"], args["md5"], args["out"], args["expect"]), case, args)


# ---------------------------------------------------------------------------- few-shot sets (CLI)
def pool(tmp: Path) -> Path:
    write_labelled(tmp / "pool.csv", ["ACGTAC", "GGCCAA", "TTAACC", "CAGTCA", "GATTAC"], [0, 0, 0, 1, 1])
    return tmp / "pool.csv"


FEWSHOT = table(
    Case("shots-above-a-class", lambda t: {"path": pool(t), "argv": ["sample", "--shots", "3", "--seed", "1"]},
         r"pool.csv: class 1 has 2 sequences, fewer than the 3 shots requested"),
    Case("shots-zero", lambda t: {"path": pool(t), "argv": ["sample", "--shots", "0", "--seed", "1"]}, r"--shots must be >= 1 \(got 0\)", None),
    Case("pooled-run-missing", lambda t: {"path": pool(t), "argv": ["pooled", "--shots", "1", "--run", "5"], "flag": "--file"},
         r"pool.csv: run 5 requested but it holds 2 run\(s\) of 1 shots per class"),
    Case("pool-bad-row", lambda t: {"path": put(t / "pool.csv", "sequence,label\nACGT,0\nAC GT,1\n"), "argv": ["sample", "--shots", "1", "--seed", "1"]},
         r"pool.csv, line 3: its 2-mers do not overlap"),
    Case("pool-missing", lambda t: {"path": t / "pool.csv", "argv": ["sample", "--shots", "1", "--seed", "1"]}, r"pool.csv: cannot read"),
    Case("out-is-a-folder", lambda t: {"path": pool(t), "argv": ["sample", "--shots", "1", "--seed", "1"], "out": (t / "set.csv").mkdir() or t / "set.csv"},
         r"set.csv: is a folder, expected a file path", "out"),
)


@FEWSHOT
def test_fewshot_sets(tmp_path, capsys, case):
    user_files(tmp_path)
    args = {"out": tmp_path / "set.csv", "flag": "--pool", **case.make(tmp_path)}
    argv = ["fewshot", args["argv"][0], args["flag"], str(args["path"]), *args["argv"][1:], "--out", str(args["out"])]
    before = snapshot(tmp_path)
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("cmgems fewshot: error: ") and re.search(case.error, err), err
    assert case.names is None or str(args[case.names]) in err
    assert snapshot(tmp_path) == before


# -------------------------------------------------------------------------------------- baseline
def good_task(tmp: Path, **extra) -> dict:
    seqs, labels = ["ACGTACGTAAGG", "TTGGCCAATTGA", "GGGCCCAAATTT", "ACACACGTGTGT"], [0, 1, 0, 1]
    write_labelled(tmp / "train.csv", seqs, labels)
    write_labelled(tmp / "test.csv", seqs, labels)
    return {"train": tmp / "train.csv", "test": tmp / "test.csv", "out": tmp / "run", "k": 6, **extra}


BASELINE = table(
    Case("k-unsupported", lambda t: good_task(t, k=9), r"k must be one of \(3, 4, 5, 6\), got 9", None),
    Case("train-missing", lambda t: good_task(t) | {"train": t / "absent.csv", "path": t / "absent.csv"}, r"absent.csv: cannot read"),
    Case("test-bad-row", lambda t: good_task(t) | {"test": put(t / "bad.csv", "sequence,label\nACGT,0\nACGT,one\n"), "path": t / "bad.csv"},
         r"bad.csv, line 3: label 'one' is not an integer"),
    Case("out-holds-user-files", lambda t: good_task(t, out=put(t / "run" / "mine.txt", "x").parent),
         r"run: refusing to replace the folder: .*'mine.txt'", "out"),
    Case("out-is-a-file", lambda t: good_task(t, out=put(t / "run", "a file")), r"run: exists and is not a folder", "out"),
)


@BASELINE
def test_baseline(tmp_path, case):
    user_files(tmp_path)
    args = case.make(tmp_path)
    assert_refused(tmp_path, lambda: baseline.baseline(str(args["train"]), str(args["test"]), str(args["out"]), k=args["k"]), case, args)


# -------------------------------------------------------------------------------- CLI arguments
CLI = [
    ("contigs-slash", ["genome", "contigs", "--fasta", "g.fa", "--out-dir", "o", "--contigs", "chr1/sub"], 2,
     r"argument --contigs: contig name 'chr1/sub' cannot be a file name"),
    ("contigs-traversal", ["genome", "contigs", "--fasta", "g.fa", "--out-dir", "o", "--contigs", "chr1", "../../x"], 2,
     r"contig name '../../x' cannot be a file name"),
    ("contigs-hidden", ["genome", "contigs", "--fasta", "g.fa", "--out-dir", "o", "--contigs", ".x"], 2, r"contig name '.x' cannot be"),
    ("retries-negative", ["genome", "download", "--url", "https://example.org/g", "--md5", "0" * 32, "--out", "g", "--retries", "-1"], 2,
     r"argument --retries: must be >= 0, got -1"),
    ("retries-not-a-number", ["genome", "download", "--url", "https://example.org/g", "--md5", "0" * 32, "--out", "g", "--retries", "x"], 2,
     r"argument --retries: 'x' is not an integer"),
    ("url-without-scheme", ["genome", "download", "--url", "example.org/g", "--md5", "0" * 32, "--out", "g"], 1,
     r"cmgems genome: error: cannot download 'example.org/g': the URL must start with"),
    ("shots-not-a-number", ["fewshot", "sample", "--pool", "p.csv", "--shots", "ten", "--seed", "1", "--out", "o.csv"], 2,
     r"argument --shots: invalid int value: 'ten'"),
    ("finetune-without-max-length", ["finetune", "--model", "m", "--train", "t", "--test", "t", "--out", "o"], 2,
     r"the following arguments are required: --max-length"),
    ("unknown-stage", ["genomes", "contigs"], 2, r"argument STAGE: invalid choice: 'genomes'"),
    ("baseline-meta-not-json", ["baseline", "--train", "t.csv", "--test", "t.csv", "--out", "o", "--meta", "{dataset: x}"], 1,
     r"cmgems baseline: error: --meta: not valid JSON"),
    ("out-below-a-file", ["genome", "contigs", "--fasta", "g.fa", "--out-dir", "NOTES.md/out"], 1, r"NOTES.md: is a file, so .* cannot be written"),
    ("out-name-too-long", ["genome", "contigs", "--fasta", "g.fa", "--out-dir", "x" * 300], 1,
     r"^cmgems genome: error: \[Errno 36\] File name too long"),
]


@pytest.mark.parametrize("argv, status, error", [c[1:] for c in CLI], ids=[c[0] for c in CLI])
def test_cli_arguments(tmp_path, monkeypatch, capsys, argv, status, error):
    monkeypatch.chdir(tmp_path)
    user_files(tmp_path)
    put(tmp_path / "g.fa", GOOD_FASTA)
    write_labelled(tmp_path / "t.csv", ["ACGTACGT", "TTGGCCAA"], [0, 1])
    before = snapshot(tmp_path)
    try:
        code = cli.main(argv)
    except SystemExit as exit_:  # argparse
        code = exit_.code
    err = capsys.readouterr().err
    assert code == status and re.search(error, err, re.M), err
    assert "Traceback" not in err and snapshot(tmp_path) == before


# ------------------------------------------------- pretraining inputs: PMI tables, corpus shards, models
def pmi_table(ngrams: list[str], ranks: list[int]) -> Callable[[Path], dict]:
    """A PMI table of `ngrams` (n from their length) and `ranks` (the columns token_ranks reads)."""
    def make(tmp: Path) -> dict:
        n = pa.array([len(g) for g in ngrams], pa.int8())
        pq.write_table(pa.table({"ngram": pa.array(ngrams, pa.string()), "n": n, "rank": pa.array(ranks, pa.int64())}),
                       tmp / "pmi.parquet")
        return {"path": tmp / "pmi.parquet"}
    return make


SIXMERS = kmers.vocabulary(6)[kmers.NUM_SPECIAL :]
PMI_TABLES = table(
    Case("no-row-left-by-min-count", pmi_table([], []), r"pmi.parquet: every 6-mer has the same rank \(0 6-mer\(s\) in the "
         r"table\), so PMI-guided masking would be random masking; lower pmi.min_count"),
    Case("only-other-n", pmi_table(["ACGTA", "TTTTT"], [1, 2]), r"every 6-mer has the same rank \(0 6-mer\(s\)"),
    Case("every-kmer-tied", pmi_table(SIXMERS, [1] * len(SIXMERS)), r"every 6-mer has the same rank \(4096 6-mer\(s\)"),
)


@PMI_TABLES
def test_pmi_ranks(tmp_path, case):
    """genemask, global_pmi and cm_gems (pretrain's token_ranks) refuse a table that ranks nothing."""
    user_files(tmp_path)
    args = case.make(tmp_path)
    assert_refused(tmp_path, lambda: pmi.token_ranks(args["path"], 6), case, args)


def validation_shard(data: Callable[[bytes], bytes]) -> Callable[[Path], dict]:
    """A corpus whose validation shard is `data(good shard bytes)`."""
    def make(tmp: Path) -> dict:
        shard = tmp / "corpus" / "validation" / "chr1.parquet"
        shard.parent.mkdir(parents=True)
        table = pa.table({"contig": ["chr1"] * 40, "start": list(range(40)), "end": list(range(1, 41)),
                          "sequence": pa.array([b"ACGTACGTAC"] * 40, pa.binary())})
        pq.write_table(table, shard, row_group_size=10)
        shard.write_bytes(data(shard.read_bytes()))
        return {"path": shard, "corpus": tmp / "corpus"}
    return make


SHARDS = table(
    Case("not-parquet", validation_shard(lambda good: b"garbage" * 100), r"chr1.parquet: cannot read this validation shard "
         r"\(.*\); the corpus is damaged: delete .*corpus and rerun the workflow"),
    Case("truncated", validation_shard(lambda good: good[: len(good) // 2]), r"chr1.parquet: cannot read this validation shard"),
    Case("empty-file", validation_shard(lambda good: b""), r"chr1.parquet: cannot read this validation shard"),
)


@SHARDS
def test_validation_shards(tmp_path, case):
    user_files(tmp_path)
    args = case.make(tmp_path)
    assert_refused(tmp_path, lambda: corpus.validation_sample(args["corpus"], 40, 0), case, args)


def model_folder(change: Callable[[Path], Path]) -> Callable[[Path], dict]:
    """A copy of the tiny 6-mer model folder (the fixture's, in "tiny") altered by `change`, which returns the file at fault."""
    def make(tmp: Path, tiny: Path) -> dict:
        folder = tmp / "model"
        shutil.copytree(tiny, folder)
        return {"model": folder, "path": change(folder)}
    return make


def vocab_size(folder: Path, size: int) -> Path:
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "vocab_size": size}))
    return folder / "config.json"


MODEL_FOLDERS = table(
    Case("kmer-json-k-not-the-vocabulary", model_folder(lambda f: put(f / "kmer.json", '{"k": 4}')),
         r"kmer.json says k=4, but .*config.json: vocab_size 4101 is the vocabulary of 6-mers; write \{\"k\": 6\} to"),
    Case("no-kmer-json-vocabulary-of-3mers", model_folder(lambda f: (f / "kmer.json").unlink() or vocab_size(f, 69)),
         r"model has no kmer.json, so k=6 \(DNABERT's\) is assumed, but .*config.json: vocab_size 69 is the vocabulary of "
         r"3-mers; write \{\"k\": 3\} to .*model/kmer.json"),
    Case("vocabulary-of-no-k", model_folder(lambda f: vocab_size(f, 4096)),
         r"config.json: vocab_size 4096 is no k-mer vocabulary \(5 \+ 4\^k tokens"),
)


@MODEL_FOLDERS
def test_model_folders(tmp_path, tiny_model, case):
    """An external model whose k does not match its vocabulary is refused before any training."""
    user_files(tmp_path)
    args = case.make(tmp_path, tiny_model)
    put(tmp_path / "t.csv", "sequence,label\nACGTACGT,0\nTTGGCCAA,1\n")
    settings = Settings(model=str(args["model"]), train=str(tmp_path / "t.csv"), test=str(tmp_path / "t.csv"),
                        out=str(tmp_path / "run"), max_length=20)
    assert_refused(tmp_path, lambda: finetune(settings), case, args)


class NotATensor:
    """Pickled into a .bin: torch.load(weights_only=True) refuses it."""


def test_a_pickled_bin_model_is_refused_without_suggesting_weights_only_false(tmp_path, tiny_model):
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForSequenceClassification

    user_files(tmp_path)
    folder = tmp_path / "model"
    shutil.copytree(tiny_model, folder)
    weights = {**load_file(folder / "model.safetensors"), "extra": NotATensor()}
    (folder / "model.safetensors").unlink()
    torch.save(weights, folder / "pytorch_model.bin")
    case = Case("pickled-bin", lambda t: {}, r"model: its weights file is a pickle of more than tensors \(it holds "
                r".*NotATensor\), which cmgems does not load; the model must be safetensors .*weights_only=True$")
    assert_refused(tmp_path, lambda: models.from_pretrained(AutoModelForSequenceClassification, folder), case, {"path": folder})
    with pytest.raises(CmgemsError) as err:
        models.from_pretrained(AutoModelForSequenceClassification, folder)
    assert "weights_only=False" not in str(err.value)
    from cmgems.finetune import Pretrained

    with pytest.raises(CmgemsError, match="pickle of more than tensors") as err:  # fine-tuning loads it so
        Pretrained(folder)
    assert "weights_only=False" not in str(err.value)


PRETRAIN_CLI = [
    ("betas-above-1", ["--betas", "0.9", "1.5"], r"--betas must be two numbers in \[0, 1\) \(AdamW's decay rates\), got \[0.9, 1.5\]"),
    ("betas-negative", ["--betas", "-0.1", "0.98"], r"--betas must be two numbers in \[0, 1\)"),
    ("beta-1", ["--betas", "0.9", "1"], r"--betas must be two numbers in \[0, 1\)"),
    ("seed-beyond-2^63", ["--seed", str(2**63)], r"--seed must be in \[0, 2\^63\), got 9223372036854775808"),
    ("seed-beyond-2^64", ["--seed", str(2**64 + 1)], r"--seed must be in \[0, 2\^63\)"),
    ("seed-negative", ["--seed", "-1"], r"--seed must be in \[0, 2\^63\), got -1"),
]


INIT_FROM = table(
    Case("init-from-4mers", model_folder(lambda f: vocab_size(f, 261)),
         r"init_from .*model: vocab_size 261 is not the run's 4101 \(5 \+ 4\^k tokens for its k\); it is the "
         r"vocabulary of 4-mers: set k: 4"),
    Case("init-from-no-kmers", model_folder(lambda f: vocab_size(f, 30522)),
         r"vocab_size 30522 is not the run's 4101 .*; it is no k-mer vocabulary"),
    Case("init-from-fewer-positions", model_folder(lambda f: edit_json(f / "config.json", max_position_embeddings=128)),
         r"init_from .*model: 128 positions, fewer than the run's max_positions 512"),
    Case("init-from-no-config", model_folder(lambda f: (f / "config.json").unlink() or f),
         r"init_from .*model: not a Hugging Face model directory \(no config.json\)"),
    Case("init-from-config-not-json", model_folder(lambda f: put(f / "config.json", "{vocab")),
         r"init_from .*config.json: cannot read vocab_size and max_position_embeddings"),
    Case("init-from-config-without-vocab", model_folder(lambda f: put(f / "config.json", '{"model_type": "bert"}')),
         r"init_from .*config.json: cannot read vocab_size .*KeyError\('vocab_size'\)"),
)


def edit_json(path: Path, **values) -> Path:
    path.write_text(json.dumps({**json.loads(path.read_text()), **values}))
    return path


@INIT_FROM
def test_init_from_checkpoints(tmp_path, monkeypatch, capsys, tiny_model, case):
    """A checkpoint to continue pretraining from whose vocabulary is not the run's k (every token id would be
    read as another k-mer) or with fewer positions is refused before the run folder is made."""
    monkeypatch.chdir(tmp_path)
    user_files(tmp_path)
    args = case.make(tmp_path, tiny_model)
    before = snapshot(tmp_path)
    assert cli.main(["pretrain", "--corpus", "corpus", "--out", "run", "--model", "tiny", "--k", "6",
                     "--init-from", str(args["model"])]) == 1
    err = capsys.readouterr().err
    assert err.startswith("cmgems pretrain: error: ") and re.search(case.error, err), err
    assert str(args["model"]) in err and "Traceback" not in err and snapshot(tmp_path) == before


@pytest.mark.parametrize("argv, error", [c[1:] for c in PRETRAIN_CLI], ids=[c[0] for c in PRETRAIN_CLI])
def test_pretrain_arguments(tmp_path, monkeypatch, capsys, argv, error):
    """Refused before the run folder is made (or the corpus read)."""
    monkeypatch.chdir(tmp_path)
    user_files(tmp_path)
    before = snapshot(tmp_path)
    assert cli.main(["pretrain", "--corpus", "corpus", "--out", "run", *argv]) == 1
    err = capsys.readouterr().err
    assert err.startswith("cmgems pretrain: error: ") and re.search(error, err), err
    assert "Traceback" not in err and snapshot(tmp_path) == before


# ------------------------------------------------------ evaluation sets of one class (finetune, baseline)
ONE_CLASS = "every row has label {}; an evaluation set needs at least 2 classes"
EVALUATION_SETS = table(
    Case("test-single-class", label_sets(train=[0, 1, 0, 1], test=[1, 1], fault="test"), ONE_CLASS.format(1)),
    Case("test-single-class-0", label_sets(train=[0, 1, 0, 1], test=[0, 0, 0], fault="test"), ONE_CLASS.format(0)),
    Case("test-one-row", label_sets(train=[0, 1, 0, 1], test=[1], fault="test"), ONE_CLASS.format(1)),
    Case("test-single-class-of-three", label_sets(train=[0, 1, 2, 0], test=[2, 2], fault="test"), ONE_CLASS.format(2)),
    Case("dev-single-class", label_sets(train=[0, 1, 0, 1], dev=[0, 0], test=[0, 1], fault="dev"), ONE_CLASS.format(0)),
    Case("dev-one-row", label_sets(train=[0, 1, 0, 1], dev=[1], test=[0, 1], fault="dev"), ONE_CLASS.format(1)),
)


def never(*args, **kwargs):
    raise AssertionError("trained although an evaluation set has one class")


@EVALUATION_SETS
@pytest.mark.parametrize("stage", [run_finetune, run_baseline], ids=["finetune", "baseline"])
def test_evaluation_sets_of_one_class_are_refused_before_training(tmp_path, tiny_model, monkeypatch, stage, case):
    """A test or dev set of one class scores MCC 0 whatever the model learnt: refused, naming the
    file, before any training."""
    monkeypatch.setattr("cmgems.finetune.train_model", never)
    monkeypatch.setattr("cmgems.baseline.fit", never)
    user_files(tmp_path)
    args = case.make(tmp_path)
    assert_refused(tmp_path, lambda: stage(args, tiny_model, tmp_path / "run"), case, args)


# ------------------------------------------------------------ downloads: genome and few-shot files
def served(tmp: Path) -> dict:
    """A FASTA served from a file:// URL, with its md5 and git blob SHA-1."""
    path = put(tmp / "served" / "g.fa", GOOD_FASTA)
    return {"url": path.as_uri(), "md5": hashlib.md5(path.read_bytes()).hexdigest(), "sha1": git_blob_sha1(path)}


DOWNLOAD = table(
    Case("out-is-a-folder", lambda t: served(t) | {"out": (t / "g.fa.gz").mkdir() or t / "g.fa.gz"}, r"g.fa.gz: is a folder, expected a file path", "out"),
    Case("out-is-a-folder-of-files", lambda t: served(t) | {"out": put(t / "g.fa.gz" / "mine.txt", "mine").parent},
         r"g.fa.gz: is a folder, expected a file path", "out"),
    Case("out-empty", lambda t: served(t) | {"out": ""}, r"the output path is empty \(it would mean the working directory\)", None),
    Case("out-below-a-file", lambda t: served(t) | {"out": t / "NOTES.md" / "g.fa.gz"}, r"NOTES.md: is a file, so .* cannot be written", "out"),
)


@DOWNLOAD
@pytest.mark.parametrize("stage", [("genome", "download", "--md5"), ("fewshot", "fetch", "--sha1")], ids=["genome", "fewshot"])
def test_downloads(tmp_path, monkeypatch, capsys, stage, case):
    """Refused before anything is fetched (the .part file included), through the CLI the rules run."""
    monkeypatch.chdir(tmp_path)
    user_files(tmp_path)
    args = case.make(tmp_path)
    before = snapshot(tmp_path)
    checksum = args[stage[2].lstrip("-")]
    assert cli.main([*stage[:2], "--url", args["url"], stage[2], checksum, "--out", str(args["out"])]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"cmgems {stage[0]}: error: ") and re.search(case.error, err), err
    assert case.names is None or str(args[case.names]) in err
    assert snapshot(tmp_path) == before


# ------------------------------------------------------------------- empty paths (CLI arguments)
EMPTY_PATHS = [
    ("contigs-fasta", ["genome", "contigs", "--fasta", "", "--out-dir", "o"], r"cmgems genome: error: the FASTA path is empty"),
    ("contigs-out-dir", ["genome", "contigs", "--fasta", "g.fa", "--out-dir", ""], r"cmgems genome: error: the output folder path is empty"),
    ("sample-pool", ["fewshot", "sample", "--pool", "", "--shots", "1", "--seed", "1", "--out", "o.csv"], r"the pool path is empty"),
    ("sample-out", ["fewshot", "sample", "--pool", "t.csv", "--shots", "1", "--seed", "1", "--out", ""], r"the output path is empty"),
    ("pooled-file", ["fewshot", "pooled", "--file", "", "--shots", "1", "--run", "0", "--out", "o.csv"], r"the pooled file path is empty"),
    ("pooled-out", ["fewshot", "pooled", "--file", "t.csv", "--shots", "1", "--run", "0", "--out", ""], r"the output path is empty"),
]


@pytest.mark.parametrize("argv, error", [c[1:] for c in EMPTY_PATHS], ids=[c[0] for c in EMPTY_PATHS])
def test_empty_paths(tmp_path, monkeypatch, capsys, argv, error):
    """An empty path is refused by name, not read as the working directory ('.')."""
    test_cli_arguments(tmp_path, monkeypatch, capsys, argv, 1, error)


# ---------------------------------------------------------------- FASTA: byte-order marks elsewhere
# A UTF-8 byte-order mark before the first header is skipped (tests/test_genome.py); anywhere else it
# is a byte that no FASTA line holds, and UTF-16 is not ASCII text.
GENOME_BOM = table(
    Case("bom-before-a-later-header", fasta(b">chr1\nACGT\n\xef\xbb\xbf>chr2\nACGT\n"), r"g.fa, line 3 \(contig chr1\): byte b'\\xef' in a sequence line"),
    Case("bom-twice", fasta(b"\xef\xbb\xbf\xef\xbb\xbf>chr1\nACGT\n"), r"g.fa, line 1: expected a '>' header line"),
    Case("utf-16", fasta(GOOD_FASTA.encode("utf-16")), r"g.fa, line 1: expected a '>' header line"),
)


@GENOME_BOM
def test_genome_byte_order_marks(tmp_path, case):
    test_genome_contigs(tmp_path, case)


# ------------------------------------------------------------------------------ the matrix's size
def matrix_cases() -> int:
    """How many cases this module's tests run: each test function, times its parametrizations."""
    total = 0
    for name, test in globals().items():
        if name.startswith("test_") and callable(test) and name != "test_the_matrix_says_how_many_cases_it_holds":
            sizes = [len(mark.args[1]) for mark in getattr(test, "pytestmark", []) if mark.name == "parametrize"]
            total += math.prod(sizes)
    return total


def test_the_matrix_says_how_many_cases_it_holds():
    stated = re.search(r"The matrix holds (\d+) cases", __doc__)
    assert stated and int(stated.group(1)) == matrix_cases(), f"update the docstring: {matrix_cases()} cases"
