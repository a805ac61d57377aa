"""GUE benchmark data: fetch the published archive (checksummed) and unpack it as GUE/<group>/<task>/;
the task groups.

The files are merged into the GUE root: a user's own files there are kept, and a file of the archive
replaces only one an earlier fetch wrote (see `cmgems.atomic.merged_output`). Importing this module
is cheap (standard library only until a download): the workflow uses `task_group` at DAG build time.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from cmgems.atomic import make_parent, merged_output, remove_empty
from cmgems.errors import CmgemsError

log = logging.getLogger(__name__)
SPLITS = ("train", "dev", "test")
GROUP_PREFIXES = (("EMP_", "EMP"), ("prom_core_", "prom_core"), ("prom_300_", "prom_300"), ("splice", "splice"),
                  ("mouse_", "mouse"), ("tf_", "tf"))

# The benchmark: its 27 tasks in the order of the published tables, covid (the 28th, left out of
# DNABERT-2's 27-task mean) and the report's group order.
EMP_MARKS = ["H3", "H3K14ac", "H3K36me3", "H3K4me1", "H3K4me2", "H3K4me3", "H3K79me3", "H3K9ac", "H4", "H4ac"]
GUE_27 = (
    [f"EMP_{m}" for m in EMP_MARKS]
    + [f"prom_core_{v}" for v in ("all", "notata", "tata")]
    + [f"prom_300_{v}" for v in ("all", "notata", "tata")]
    + ["splice_reconstructed"]
    + [f"mouse_{i}" for i in range(5)]
    + [f"tf_{i}" for i in range(5)]
)
GUE_TASKS = GUE_27 + ["covid"]
GROUP_ORDER = ["EMP", "prom_core", "prom_300", "splice", "mouse", "tf", "covid", "other"]


def task_group(task: str) -> str:
    """GUE task group from the task name: EMP, prom_core, prom_300, splice, mouse, tf, covid or other."""
    for prefix, group in GROUP_PREFIXES:
        if task.startswith(prefix):
            return group
    return "covid" if task == "covid" else "other"


def safe_members(archive: zipfile.ZipFile, where: str) -> list[zipfile.ZipInfo]:
    """The archive's members, refusing absolute paths and '..' (no writing outside the target)."""
    members = archive.infolist()
    for m in members:
        parts = PurePosixPath(m.filename).parts
        if m.filename.startswith(("/", "\\")) or ".." in parts:
            raise CmgemsError(f"{where}: unsafe member path {m.filename!r}")
    return members


def unpack(archive_path: Path, out_dir: Path, expect: list[str]) -> None:
    """Unpack a GUE zip into `out_dir`, dropping a single top-level folder (GUE/); check first that
    every expected task folder holds train.csv, dev.csv and test.csv."""
    try:
        archive = zipfile.ZipFile(archive_path)
    except zipfile.BadZipFile as err:
        raise CmgemsError(f"{archive_path}: not a zip archive ({err})") from None
    with archive, merged_output(out_dir) as tmp:
        members = [m for m in safe_members(archive, str(archive_path)) if not m.is_dir()]
        tops = {PurePosixPath(m.filename).parts[0] for m in members}
        strip = 1 if len(tops) == 1 and all(len(PurePosixPath(m.filename).parts) > 1 for m in members) else 0
        for m in members:
            target = tmp.joinpath(*PurePosixPath(m.filename).parts[strip:])
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(m) as src, target.open("wb") as dst:
                    shutil.copyfileobj(src, dst)
            except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as err:
                raise CmgemsError(f"{archive_path}: cannot unpack member {m.filename!r} ({err})") from None
        missing = [f"{task}/{split}.csv" for task in expect for split in SPLITS if not (tmp / task / f"{split}.csv").is_file()]
        if missing:
            raise CmgemsError(f"{archive_path}: the archive lacks {len(missing)} expected file(s), e.g. {missing[:3]}")


def fetch(url: str, md5: str, out_dir: str | Path, expect: list[str]) -> None:
    """Download the GUE archive (md5-checked, resumable) next to `out_dir`, unpack it, delete it."""
    from cmgems.download import MD5, download  # tqdm: not at the workflow's import of task_group

    out_dir = Path(out_dir)
    if os.path.lexists(out_dir) and not out_dir.is_dir():  # merged_output says so too, but after the download
        raise CmgemsError(f"{out_dir}: exists and is not a folder (--out is the GUE root folder)")
    archive = out_dir.parent / f".{out_dir.name}.zip"
    created = make_parent(out_dir)
    try:
        download(url, MD5, md5, archive)
        unpack(archive, out_dir, expect)
    except BaseException:
        archive.unlink(missing_ok=True)
        remove_empty(created)  # kept while it holds a .part file to resume from
        raise
    archive.unlink()
    log.info("GUE unpacked into %s (%d tasks checked)", out_dir, len(expect))


GUE_LINK = "the Google Drive link under 'GUE can be download here' in the README of https://github.com/MAGICS-LAB/DNABERT_2"


def check(root: str | Path, files: list[str]) -> None:
    """CmgemsError saying what to download and where to put it when any of `files` (under the GUE
    root `root`) is absent; nothing when all are there."""
    missing = [f for f in files if not Path(f).is_file()]
    if missing:
        raise CmgemsError(
            f"{missing[0]}: not found{f' (nor {len(missing) - 1} more of the GUE files)' if len(missing) > 1 else ''}. "
            f"Download GUE.zip (DNABERT-2's benchmark: {GUE_LINK}) and unpack it so that "
            f"{root}/<group>/<task>/{{train,dev,test}}.csv exist, e.g. {Path(root, 'prom', 'prom_core_tata', 'train.csv')}; "
            "or set gue.url and gue.md5 in the config to have the workflow download and unpack it (rule download_gue)"
        )


def configure_parser(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("fetch", help="download and unpack the GUE archive")
    p.add_argument("--url", required=True)
    p.add_argument("--md5", required=True)
    p.add_argument("--out", required=True, help="GUE root to create: OUT/<group>/<task>/{train,dev,test}.csv")
    p.add_argument("--expect", nargs="*", default=[], help="task folders that must be present, e.g. prom/prom_core_tata")
    p.set_defaults(func=lambda a: fetch(a.url, a.md5, a.out, a.expect))
    p = sub.add_parser("check", help="fail, saying what to download and where, unless the given GUE files exist")
    p.add_argument("--root", required=True, help="the GUE root the files belong to")
    p.add_argument("--files", nargs="+", required=True, help="files that must exist, e.g. ROOT/prom/prom_core_tata/train.csv")
    p.set_defaults(func=lambda a: check(a.root, a.files))
