"""GUE archive: checksummed download, safe unpacking, expected tasks present, nothing left on error;
a missing GUE file explained."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import pytest

from cmgems import cli
from cmgems.errors import CmgemsError
from cmgems.gue import check, fetch

TASKS = ["prom/prom_core_tata", "mouse/0"]


def make_zip(path: Path, members: dict[str, str]) -> str:
    with zipfile.ZipFile(path, "w") as z:
        for name, text in members.items():
            z.writestr(name, text)
    return hashlib.md5(path.read_bytes()).hexdigest()


def gue_members(prefix: str = "GUE/") -> dict[str, str]:
    return {f"{prefix}{t}/{s}.csv": f"sequence,label\nACGTACGT,{i % 2}\n" for t in TASKS for i, s in enumerate(("train", "dev", "test"))}


def test_fetch_unpacks_under_the_gue_root(tmp_path):
    md5 = make_zip(tmp_path / "GUE.zip", gue_members())
    out = tmp_path / "resources" / "GUE"
    assert cli.main(["gue", "fetch", "--url", (tmp_path / "GUE.zip").as_uri(), "--md5", md5,
                     "--out", str(out), "--expect", *TASKS]) == 0
    assert (out / "prom/prom_core_tata/dev.csv").read_text() == "sequence,label\nACGTACGT,1\n"
    assert sorted(p.name for p in out.parent.iterdir()) == ["GUE"]  # the archive is gone


def test_archive_without_top_folder(tmp_path):
    md5 = make_zip(tmp_path / "flat.zip", gue_members(prefix=""))
    fetch((tmp_path / "flat.zip").as_uri(), md5, tmp_path / "GUE", TASKS)
    assert (tmp_path / "GUE/mouse/0/train.csv").exists()


@pytest.mark.parametrize(
    "members, md5_override, message",
    [
        (gue_members(), "0" * 32, "md5"),
        ({**gue_members(), "GUE/../evil.csv": "x"}, None, "unsafe member"),
        ({k: v for k, v in gue_members().items() if "mouse" not in k}, None, "lacks 3 expected"),
    ],
    ids=["md5-mismatch", "path-traversal", "missing-task"],
)
def test_bad_archives_leave_nothing(tmp_path, members, md5_override, message):
    md5 = make_zip(tmp_path / "GUE.zip", members)
    out = tmp_path / "data" / "GUE"
    out.parent.mkdir()
    with pytest.raises(CmgemsError, match=message):
        fetch((tmp_path / "GUE.zip").as_uri(), md5_override or md5, out, TASKS)
    assert list(out.parent.iterdir()) == []
    assert not (tmp_path / "evil.csv").exists()


def test_fetch_keeps_the_users_files_and_refetches_its_own(tmp_path):
    """A user keeping their own files under the GUE root: fetching (twice) adds GUE beside them."""
    out = tmp_path / "resources" / "GUE"
    (out / "mine" / "my_task").mkdir(parents=True)
    (out / "mine" / "my_task" / "train.csv").write_text("sequence,label\nACGT,0\n")
    (out / "NOTES.md").write_text("my notes")
    md5 = make_zip(tmp_path / "GUE.zip", gue_members())
    for _ in range(2):
        fetch((tmp_path / "GUE.zip").as_uri(), md5, out, TASKS)
    assert (out / "NOTES.md").read_text() == "my notes"
    assert (out / "mine" / "my_task" / "train.csv").read_text() == "sequence,label\nACGT,0\n"
    assert (out / "mouse/0/test.csv").read_text() == "sequence,label\nACGTACGT,0\n"
    assert sorted(p.name for p in out.parent.iterdir()) == ["GUE"]


def test_fetch_refuses_to_overwrite_a_users_task_file(tmp_path):
    out = tmp_path / "GUE"
    (out / "mouse" / "0").mkdir(parents=True)
    (out / "mouse" / "0" / "train.csv").write_text("my own split")
    md5 = make_zip(tmp_path / "GUE.zip", gue_members())
    with pytest.raises(CmgemsError, match=r"cmgems did not write, e.g. 'mouse/0/train.csv'"):
        fetch((tmp_path / "GUE.zip").as_uri(), md5, out, TASKS)
    assert (out / "mouse" / "0" / "train.csv").read_text() == "my own split"
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == ["mouse", "mouse/0", "mouse/0/train.csv"]


def test_check_says_what_to_download_and_where(tmp_path, capsys):
    root = tmp_path / "GUE"
    files = [str(root / t / f"{s}.csv") for t in TASKS for s in ("train", "dev", "test")]
    assert cli.main(["gue", "check", "--root", str(root), "--files", files[0]]) == 1
    err = capsys.readouterr().err
    assert f"{files[0]}: not found" in err
    for needed in ("GUE.zip", "github.com/MAGICS-LAB/DNABERT_2", f"{root}/<group>/<task>/", "gue.url and gue.md5"):
        assert needed in err, needed
    (root / TASKS[0]).mkdir(parents=True)
    (root / TASKS[0] / "train.csv").write_text("sequence,label\nACGT,0\n")
    with pytest.raises(CmgemsError, match=r"dev.csv: not found \(nor 4 more of the GUE files\)"):
        check(root, files)
    check(root, files[:1])  # present: no error
