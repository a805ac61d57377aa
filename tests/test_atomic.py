"""cmgems.atomic: outputs appear whole or not at all, and cmgems replaces only what it wrote."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cmgems.atomic import OWNED, atomic_output, merged_output, open_unfollowed, owned_files
from cmgems.errors import CmgemsError


def tree(root: Path) -> dict[str, bytes | None]:
    """Every path under `root` (hidden ones included) with its bytes (None for a folder)."""
    return {p.relative_to(root).as_posix(): None if p.is_dir() else p.read_bytes() for p in sorted(root.rglob("*"))}


def write_folder(path: Path, files: dict[str, str]) -> None:
    with atomic_output(path, directory=True) as tmp:
        for name, text in files.items():
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp / name).write_text(text)


def test_folder_records_its_files_and_replaces_its_own(tmp_path):
    out = tmp_path / "out"
    write_folder(out, {"a.txt": "1", "sub/b.txt": "2"})
    assert owned_files(out) == {"a.txt", "sub/b.txt"}
    assert json.loads((out / OWNED).read_text())["files"] == ["a.txt", "sub/b.txt"]
    write_folder(out, {"c.txt": "3"})
    assert tree(out) == {OWNED: (out / OWNED).read_bytes(), "c.txt": b"3"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary or old copy left


def test_empty_folder_is_replaced(tmp_path):
    (tmp_path / "out" / "empty_sub").mkdir(parents=True)
    write_folder(tmp_path / "out", {"a.txt": "1"})
    assert (tmp_path / "out" / "a.txt").read_text() == "1" and not (tmp_path / "out" / "empty_sub").exists()


@pytest.mark.parametrize("written_before", [False, True], ids=["user-folder", "cmgems-folder-plus-user-file"])
def test_folder_with_foreign_files_is_refused_and_kept(tmp_path, written_before):
    out = tmp_path / "out"
    if written_before:
        write_folder(out, {"a.txt": "1"})
    (out / "notes").mkdir(parents=True)
    (out / "notes" / "mine.txt").write_text("my notes")
    before = tree(tmp_path)
    with pytest.raises(CmgemsError, match=r"out: refusing to replace the folder: it holds 1 file\(s\) cmgems did not write, e.g. 'notes/mine.txt'"):
        write_folder(out, {"a.txt": "2"})
    assert tree(tmp_path) == before


def test_foreign_file_appearing_during_the_work_is_refused_at_the_end(tmp_path):
    out = tmp_path / "out"
    write_folder(out, {"a.txt": "1"})
    with pytest.raises(CmgemsError, match="'late.txt'"):
        with atomic_output(out, directory=True) as tmp:
            (tmp / "a.txt").write_text("2")
            (out / "late.txt").write_text("a user's file")
    assert (out / "a.txt").read_text() == "1" and (out / "late.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


@pytest.mark.parametrize("directory", [False, True])
def test_error_in_the_work_leaves_nothing_not_even_the_folders_made_for_it(tmp_path, directory):
    (tmp_path / "a").mkdir()
    with pytest.raises(RuntimeError):
        with atomic_output(tmp_path / "a" / "b" / "c" / "out", directory=directory) as tmp:
            (tmp / "a.txt" if directory else tmp).write_text("1")
            raise RuntimeError("stage failed")
    assert [p.name for p in tmp_path.rglob("*")] == ["a"]


@pytest.mark.parametrize(
    "existing, directory, message",
    [
        ("file", True, "exists and is not a folder"),
        ("link", True, "exists and is not a folder"),
        ("folder", False, "is a folder, expected a file path"),
    ],
)
def test_output_of_the_other_kind_is_refused(tmp_path, existing, directory, message):
    out = tmp_path / "out"
    (tmp_path / "target").mkdir()
    {"file": lambda: out.write_text("x"), "link": lambda: out.symlink_to(tmp_path / "target"), "folder": out.mkdir}[existing]()
    before = tree(tmp_path)
    with pytest.raises(CmgemsError, match=message):
        with atomic_output(out, directory=directory):
            pass
    assert tree(tmp_path) == before


def test_a_listed_file_gives_no_licence_for_unlisted_ones(tmp_path):
    out = tmp_path / "out"
    write_folder(out, {"a.txt": "1"})
    (out / OWNED).write_text(json.dumps({"files": ["a.txt", "other.txt"]}))
    (out / "b.txt").write_text("mine")
    with pytest.raises(CmgemsError, match="'b.txt'"):
        write_folder(out, {"a.txt": "2"})
    (out / OWNED).write_text("not json")
    with pytest.raises(CmgemsError, match=f"{OWNED}: unreadable record"):
        write_folder(out, {"a.txt": "2"})


# ---------------------------------------------------------------------------------- merged_output
def merge(root: Path, files: dict[str, str]) -> None:
    with merged_output(root) as tmp:
        for name, text in files.items():
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp / name).write_text(text)


def test_merge_keeps_other_files_and_replaces_its_own(tmp_path):
    root = tmp_path / "GUE"
    (root / "mytask").mkdir(parents=True)
    (root / "mytask" / "train.csv").write_text("mine")
    (root / "README").write_text("my notes")
    merge(root, {"prom/t/train.csv": "v1", "prom/t/test.csv": "v1"})
    merge(root, {"prom/t/train.csv": "v2", "tf/0/train.csv": "v2"})
    assert (root / "mytask" / "train.csv").read_text() == "mine" and (root / "README").read_text() == "my notes"
    assert (root / "prom/t/train.csv").read_text() == "v2" and (root / "prom/t/test.csv").read_text() == "v1"
    assert owned_files(root) == {"prom/t/train.csv", "prom/t/test.csv", "tf/0/train.csv"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["GUE"]


@pytest.mark.parametrize(
    "existing, message",
    [
        ({"prom/t/train.csv": "a user's file"}, "cmgems did not write, e.g. 'prom/t/train.csv'"),
        ({"prom/t/train.csv/x": "a folder in the way"}, "is in the way of prom/t/train.csv"),
        ({"prom": "a file in the way"}, "prom: is in the way of prom/t/train.csv"),
    ],
    ids=["same-file", "folder-in-the-way", "file-in-the-way"],
)
def test_merge_clash_is_refused_before_anything_moves(tmp_path, existing, message):
    root = tmp_path / "GUE"
    for name, text in existing.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    before = tree(tmp_path)
    with pytest.raises(CmgemsError, match=message):
        merge(root, {"a/b.csv": "new", "prom/t/train.csv": "new"})
    assert tree(tmp_path) == before


def test_merge_into_a_linked_folder_is_refused(tmp_path):
    """A link where a folder of the output goes would move files out of the output folder."""
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "GUE"
    root.mkdir()
    (root / "prom").symlink_to(outside)
    with pytest.raises(CmgemsError, match="GUE/prom: is in the way of prom/t/train.csv"):
        merge(root, {"prom/t/train.csv": "new"})
    assert list(outside.iterdir()) == []


# ---------------------------------------------------------------------------------- open_unfollowed
@pytest.mark.parametrize("mode", ["w", "a", "a+"])
def test_a_file_written_in_place_is_never_written_through_a_link(tmp_path, mode):
    outside = tmp_path / "outside.txt"
    outside.write_text("someone else's")
    (tmp_path / "log.csv").symlink_to(outside)
    with pytest.raises(CmgemsError, match=r"log.csv: is a symbolic link; cmgems writes this file itself"):
        open_unfollowed(tmp_path / "log.csv", mode)
    assert outside.read_text() == "someone else's"
    with open_unfollowed(tmp_path / "own.csv", mode) as f:
        f.write("a,b\n")
    assert (tmp_path / "own.csv").read_text() == "a,b\n"
