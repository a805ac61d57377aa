"""cmgems.fewshot: the paper's pinned published files, the `fetch` CLI, seeded per-class draws,
GeneMask's pooled runs (real files)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from cmgems import cli
from cmgems.download import git_blob_sha1
from cmgems.errors import CmgemsError
from cmgems.fewshot import pooled_indices, sample_indices
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
    out, sha1 = tmp_path / "train.tsv", sources["silencer"]["files"]["silencer/10/train.tsv"]
    assert cli.main(["fewshot", "fetch", "--url", f"{url}/train.tsv", "--sha1", sha1, "--out", str(out)]) == 0
    assert out.read_bytes() == (shared_data / "fewshot" / "silencer" / "10" / "train.tsv").read_bytes()


def test_fetch_cli_writes_only_the_pinned_file(http_folder, tmp_path, capsys):
    folder, url = http_folder
    data = b'"sequence"\t"label"\n"ACGTAC CGTACG"\t1\n' * 50
    (folder / "train.tsv").write_bytes(data)
    sha1 = git_blob_sha1(folder / "train.tsv")
    out = tmp_path / "sets" / "train.tsv"
    assert cli.main(["fewshot", "fetch", "--url", f"{url}/train.tsv", "--sha1", sha1, "--out", str(out)]) == 0
    assert out.read_bytes() == data
    assert cli.main(["fewshot", "fetch", "--url", f"{url}/train.tsv", "--sha1", "0" * 40, "--out", str(out) + "2"]) == 1
    assert "git blob SHA-1 mismatch" in capsys.readouterr().err
    assert sorted(p.name for p in out.parent.iterdir()) == ["train.tsv"]


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
