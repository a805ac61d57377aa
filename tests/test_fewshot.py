"""cmgems.fewshot: published files fetched and checked by git blob SHA-1, seeded per-class draws,
GeneMask's pooled runs (real files), aggregation of runs."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml

from cmgems import cli
from cmgems.errors import CmgemsError
from cmgems.fewshot import aggregate, fetch, git_blob_sha1, pooled_indices, sample_indices
from cmgems.labelled import read_labelled, write_labelled

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def pool(tmp_path):
    rng = np.random.default_rng(0)
    seqs = ["".join(rng.choice(list("ACGT"), 20)) for _ in range(30)]
    labels = np.array([0] * 12 + [1] * 10 + [2] * 8)
    path = tmp_path / "pool.csv"
    write_labelled(path, seqs, labels)
    return path


def fewshot_cli(out: Path, *args: str):
    """Run `cmgems fewshot ARGS --out OUT`; (sequences, labels) of the file it wrote."""
    assert cli.main(["fewshot", *args, "--out", str(out)]) == 0
    return read_labelled(out)


# ------------------------------------------------------------------------------ published files
def test_git_blob_sha1_is_git_hash_object(tmp_path):
    for i, data in enumerate([b"", b"sequence\tlabel\n", bytes(range(256)) * 5000]):
        path = tmp_path / f"f{i}"
        path.write_bytes(data)
        git = subprocess.run(["git", "hash-object", str(path)], capture_output=True, text=True, check=True)
        assert git_blob_sha1(path) == git.stdout.strip()
    assert git_blob_sha1(tmp_path / "f0") == "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"  # git's empty blob


def test_fetch_checks_the_git_blob_sha1(http_folder, tmp_path, capsys):
    folder, url = http_folder
    data = b'"sequence"\t"label"\n"ACGTAC CGTACG"\t1\n' * 50
    (folder / "train.tsv").write_bytes(data)
    sha1 = git_blob_sha1(folder / "train.tsv")
    out = tmp_path / "sets" / "train.tsv"
    assert cli.main(["fewshot", "fetch", "--url", f"{url}/train.tsv", "--sha1", sha1, "--out", str(out)]) == 0
    assert out.read_bytes() == data
    wrong = tmp_path / "wrong.tsv"
    with pytest.raises(CmgemsError, match=f"{url}/train.tsv: git blob SHA-1 {sha1}, expected {'0' * 40}"):
        fetch(f"{url}/train.tsv", "0" * 40, wrong)
    with pytest.raises(CmgemsError, match="HTTP 404"):
        fetch(f"{url}/absent.tsv", sha1, wrong, retries=0)
    with pytest.raises(CmgemsError, match="40 hex digits"):
        fetch(f"{url}/train.tsv", "f2fffead", wrong)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sets"]  # no output, no .part left


def test_fetch_refuses_a_git_lfs_pointer(http_folder, tmp_path):
    """A raw URL of a file kept in Git LFS serves the pointer, whose blob SHA-1 is the one the tree lists."""
    folder, url = http_folder
    pointer = (b"version https://git-lfs.github.com/spec/v1\noid sha256:" + b"ab" * 32 + b"\nsize 7424015\n")
    (folder / "big.tsv").write_bytes(pointer)
    with pytest.raises(CmgemsError, match="is a Git LFS pointer"):
        fetch(f"{url}/big.tsv", git_blob_sha1(folder / "big.tsv"), tmp_path / "big.tsv")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.realdata
def test_paper_sources_pin_the_published_files(shared_data, http_folder, tmp_path):
    """Every file of the paper config's sources that ../shared/data holds has the pinned blob SHA-1,
    and one of them comes through fetch from a local server."""
    sources = yaml.safe_load((REPO / "config" / "config.yaml").read_text())["fewshot"]["sources"]
    local = {"genemask": shared_data / "fewshot" / "genemask", "silencer": shared_data / "fewshot"}
    checked = 0
    for name, source in sources.items():
        assert re.search(r"/[0-9a-f]{40}/", source["url"]), "pinned at a full commit hash, not a branch"
        for path, sha1 in source["files"].items():
            copy = local[name] / path
            if copy.exists():
                assert git_blob_sha1(copy) == sha1, path
                checked += 1
    assert checked >= 20
    folder, url = http_folder
    shutil.copy(shared_data / "fewshot" / "silencer" / "10" / "train.tsv", folder / "train.tsv")
    out = fetch(f"{url}/train.tsv", sources["silencer"]["files"]["silencer/10/train.tsv"], tmp_path / "train.tsv")
    assert out.read_bytes() == (shared_data / "fewshot" / "silencer" / "10" / "train.tsv").read_bytes()


# ------------------------------------------------------------------------------------ few-shot sets
def test_sample_per_class_and_seeded(pool, tmp_path):
    seqs, labels = fewshot_cli(tmp_path / "s.csv", "sample", "--pool", str(pool), "--shots", "5", "--seed", "3")
    pool_seqs, pool_labels = read_labelled(pool)
    assert np.bincount(labels).tolist() == [5, 5, 5]
    assert all(pool_labels[pool_seqs.index(s)] == y for s, y in zip(seqs, labels))
    assert (sample_indices(pool_labels, 5, 3) == sample_indices(pool_labels, 5, 3)).all()
    assert (sample_indices(pool_labels, 5, 3) != sample_indices(pool_labels, 5, 4)).any()


def test_sample_larger_than_pool_names_class(pool, tmp_path, capsys):
    out = tmp_path / "s.csv"
    assert (
        cli.main(["fewshot", "sample", "--pool", str(pool), "--shots", "9", "--seed", "1", "--out", str(out)])
        == 1
    )
    err = capsys.readouterr().err
    assert "class 2 has 8 sequences" in err and str(pool) in err and "9 shots" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pool.csv"]
    with pytest.raises(CmgemsError, match="--shots must be >= 1"):
        sample_indices(np.array([0, 1]), 0, 1)


def test_pooled_synthetic():
    labels = np.array([1, 0, 0, 1, 1, 0, 0, 1])
    assert pooled_indices(labels, 2, 0).tolist() == [0, 1, 2, 3]
    assert pooled_indices(labels, 2, 1).tolist() == [4, 5, 6, 7]
    with pytest.raises(CmgemsError, match="run 2 requested but it holds 2 run"):
        pooled_indices(labels, 2, 2)


@pytest.mark.realdata
@pytest.mark.parametrize(
    "relpath, shots, classes",
    [
        ("genemask/Splice-40/10/train_splice40_10.tsv", 10, 3),
        ("genemask/Splice-40/50/train_splice40_50.tsv", 50, 3),
        ("silencer/10/train.tsv", 10, 2),
        ("silencer/50/train.tsv", 50, 2),
    ],
)
def test_pooled_real_files(shared_data, relpath, shots, classes):
    path = shared_data / "fewshot" / relpath
    _, labels = read_labelled(path)
    assert len(labels) == 10 * shots * classes
    runs = [pooled_indices(labels, shots, r, path) for r in range(10)]
    for index in runs:
        assert np.bincount(labels[index], minlength=classes).tolist() == [shots] * classes
    assert np.array_equal(np.sort(np.concatenate(runs)), np.arange(len(labels)))  # disjoint, cover the file
    # The finding behind the per-class reading: contiguous blocks of shots x classes rows are unbalanced.
    blocks = labels.reshape(10, shots * classes)
    assert any(np.bincount(b, minlength=classes).tolist() != [shots] * classes for b in blocks)
    with pytest.raises(CmgemsError, match="holds 10 run"):
        pooled_indices(labels, shots, 10, path)


@pytest.mark.realdata
def test_pooled_cli_splice40(shared_data, tmp_path):
    path = shared_data / "fewshot/genemask/Splice-40/10/train_splice40_10.tsv"
    seqs, labels = fewshot_cli(tmp_path / "run3.csv", "pooled", "--file", str(path), "--shots", "10", "--run", "3")
    all_seqs, all_labels = read_labelled(path)
    expected = pooled_indices(all_labels, 10, 3)
    assert seqs == [all_seqs[i] for i in expected] and np.bincount(labels).tolist() == [10, 10, 10]
    assert set(map(len, seqs)) == {40}
    # A file holding one set (Prom-core 10-shot = 20 rows) gives that set to every run.
    single = str(shared_data / "fewshot/genemask/Prom-core/10/train.tsv")
    for run in (0, 7):
        fewshot_cli(tmp_path / f"run{run}.csv", "pooled", "--file", single, "--shots", "10", "--run", str(run))
    assert (tmp_path / "run0.csv").read_bytes() == (tmp_path / "run7.csv").read_bytes()
    assert read_labelled(tmp_path / "run0.csv")[0] == read_labelled(single)[0]


def test_aggregate(tmp_path):
    files = []
    for i, (dataset, mcc) in enumerate(
        [("Splice-40", 0.2), ("Splice-40", 0.4), ("Splice-40", 0.9), ("Prom-core", 0.5)]
    ):
        meta = {
            "kind": "fewshot",
            "dataset": dataset,
            "shots": 10,
            "model": "tiny",
            "masking": "genemask",
            "steps": 200,
            "seed": i,
        }
        if dataset == "Splice-40" and i == 2:
            meta["masking"] = "random"
        path = tmp_path / f"m{i}.json"
        path.write_text(
            json.dumps({**meta, "metrics": {"mcc": mcc, "accuracy": mcc + 0.1, "f1_macro": mcc + 0.2}})
        )
        files.append(path)
    table = aggregate(files)
    assert list(table.columns[:6]) == ["dataset", "shots", "model", "masking", "steps", "n"]
    row = table[(table.dataset == "Splice-40") & (table.masking == "genemask")].iloc[0]
    assert (
        row.n == 2
        and row.mcc_mean == pytest.approx(0.3)
        and row.mcc_sd == pytest.approx(np.std([0.2, 0.4], ddof=1))
    )
    assert row.f1_macro_mean == pytest.approx(0.5)
    single = table[table.dataset == "Prom-core"].iloc[0]
    assert single.n == 1 and np.isnan(single.mcc_sd)
    assert len(table) == 3
    assert aggregate([]).empty
