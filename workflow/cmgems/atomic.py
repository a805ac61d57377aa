"""Outputs that appear whole or not at all: write to a temporary sibling, rename on success.

A folder cmgems writes records its files in `.written-by-cmgems.json` (OWNED). cmgems replaces an
existing folder, or files in it, only when every file at stake is listed there: a folder holding
anyone else's files is refused with a CmgemsError naming one of them, and nothing is deleted.

No write follows a symbolic link: temporaries are created anew (O_EXCL) and renamed over the path,
which replaces a link rather than its target; a file written in place (a running log, a lock) is
opened with `open_unfollowed`, which refuses a link.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterable, Iterator

from cmgems.errors import CmgemsError

OWNED = ".written-by-cmgems.json"


def files_under(root: Path) -> set[str]:
    """Relative POSIX paths of every non-directory entry under `root` (symlinks not followed), OWNED excepted."""
    found = set()
    for folder, dirs, files in os.walk(root):
        base = Path(folder).relative_to(root)
        found.update((base / name).as_posix() for name in files)
        found.update((base / name).as_posix() for name in dirs if Path(folder, name).is_symlink())
    found.discard(OWNED)
    return found


def owned_files(root: Path) -> set[str]:
    """The files listed in `root`/OWNED (empty when there is none)."""
    record = root / OWNED
    if not record.is_file():
        return set()
    try:
        files = json.loads(record.read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CmgemsError(f"{record}: unreadable record of the files cmgems wrote ({err}); delete the folder or the file") from None
    return set(files)


def _write_owned(root: Path, files: Iterable[str]) -> None:
    note = "files cmgems wrote in this folder; it replaces them (or the folder) only while all are listed here"
    with atomic_output(root / OWNED) as tmp:
        tmp.write_text(json.dumps({"note": note, "files": sorted(files)}, indent=1) + "\n")


def _refuse_foreign(root: Path, at_stake: Iterable[str], what: str) -> None:
    """CmgemsError unless every existing path of `at_stake` under `root` is a file cmgems wrote there."""
    owned = owned_files(root)
    foreign = sorted(p for p in at_stake if p not in owned and os.path.lexists(root / p))
    if foreign:
        raise CmgemsError(
            f"{root}: refusing to {what}: it holds {len(foreign)} file(s) cmgems did not write, e.g. {foreign[0]!r} "
            f"(move them elsewhere or choose another output folder)"
        )


def check_replaceable(path: str | os.PathLike, directory: bool) -> None:
    """CmgemsError unless `path` is absent or may be replaced by an output of its kind (folder or file)."""
    final = Path(path)
    if not os.path.lexists(final):
        return
    if directory:
        if final.is_symlink() or not final.is_dir():
            raise CmgemsError(f"{final}: exists and is not a folder (a link or a file); cmgems will not replace it")
        _refuse_foreign(final, files_under(final), "replace the folder")
    elif final.is_dir() and not final.is_symlink():
        raise CmgemsError(f"{final}: is a folder, expected a file path")


def make_parent(path: Path) -> list[Path]:
    """Create the folders above `path` and return those created, outermost first; CmgemsError naming
    a file that stands where a folder goes."""
    blocked = next((p for p in path.parents if os.path.lexists(p) and not p.is_dir()), None)
    if blocked is not None:
        raise CmgemsError(f"{blocked}: is a file, so {path} cannot be written")
    created = [p for p in reversed(path.parents) if not os.path.lexists(p)]
    path.parent.mkdir(parents=True, exist_ok=True)
    return created


def remove_empty(folders: list[Path]) -> None:
    """Delete `folders` (as make_parent returns them) while they are empty, innermost first."""
    for folder in reversed(folders):
        with contextlib.suppress(OSError):
            folder.rmdir()


def _remove(path: Path, created: list[Path]) -> None:
    """Delete a temporary `path`, then the folders `created` for it while they are empty."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
    remove_empty(created)


def _temporary_sibling(final: Path, directory: bool) -> Path:
    umask = os.umask(0)
    os.umask(umask)
    if directory:
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
        tmp.chmod(0o777 & ~umask)
    else:
        fd, name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
        os.close(fd)
        tmp = Path(name)
        tmp.chmod(0o666 & ~umask)  # mkstemp's 0600 would hide outputs from the rest of a group
    return tmp


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, directory: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success rename it to `path`, on error delete it.

    With directory=True the temporary path is an empty directory; on success its files are recorded
    in OWNED and it replaces `path` as a whole, which is allowed only while every file in the
    existing `path` is one cmgems wrote (checked before and after the work).
    """
    final = Path(path)
    check_replaceable(final, directory)
    created = make_parent(final)
    tmp = _temporary_sibling(final, directory)
    try:
        yield tmp
        if not directory:
            os.replace(tmp, final)
            return
        _write_owned(tmp, files_under(tmp))
        check_replaceable(final, directory)
        if not os.path.lexists(final):
            os.replace(tmp, final)
            return
        old = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".old", dir=final.parent))
        os.replace(final, old / final.name)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        _remove(tmp, created)
        raise


def _real_folder(path: Path) -> bool:
    """A folder, not a link to one (a file moved into a linked folder would land outside the output)."""
    return path.is_dir() and not path.is_symlink()


@contextlib.contextmanager
def merged_output(root: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary folder beside `root`; on success move its files into `root`.

    Other files in `root` are kept. A file of the same path is replaced only if cmgems wrote it
    (OWNED); any other clash is refused before anything moves. OWNED is updated first, so that an
    interruption leaves files a rerun may replace.
    """
    root = Path(root)
    if os.path.lexists(root) and not root.is_dir():
        raise CmgemsError(f"{root}: exists and is not a folder")
    created = make_parent(root)
    tmp = _temporary_sibling(root, directory=True)
    try:
        yield tmp
        new = files_under(tmp)
        if not root.is_dir():
            root.mkdir()
            created.append(root)
        for name in sorted(new):
            blocked = next((p for p in Path(name).parents if os.path.lexists(root / p) and not _real_folder(root / p)), None)
            if blocked is not None or (root / name).is_dir():
                place = root / (blocked if blocked is not None else name)
                raise CmgemsError(f"{place}: is in the way of {name} (a file or link where a folder goes, or the reverse)")
        _refuse_foreign(root, new, "write into it")
        kept = {f for f in owned_files(root) if os.path.lexists(root / f)}
        _write_owned(root, kept | new)
        for name in sorted(new):
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp / name, root / name)
    except BaseException:
        _remove(tmp, created)
        raise
    _remove(tmp, [])


def open_unfollowed(path: str | os.PathLike, mode: str):
    """Open `path` for writing in place ("w", "a" or "a+"; text, newline="") without following a
    symbolic link there: a link (which may lead out of the project, to a file a write would truncate)
    is a CmgemsError naming it."""
    flags = {"w": os.O_WRONLY | os.O_CREAT | os.O_TRUNC, "a": os.O_WRONLY | os.O_CREAT | os.O_APPEND,
             "a+": os.O_RDWR | os.O_CREAT | os.O_APPEND}[mode]
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW, 0o666)
    except OSError as err:
        if err.errno != errno.ELOOP:
            raise
        raise CmgemsError(f"{path}: is a symbolic link; cmgems writes this file itself and does not write through "
                          "links (delete the link)") from None
    return os.fdopen(fd, mode, newline="")


def write_json(path: str | os.PathLike, obj) -> None:
    """Write `obj` as indented JSON, atomically."""
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")
