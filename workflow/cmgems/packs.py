"""Packs: many evaluation runs (fine-tuning or baseline) one after another in one process, one job.

Each run writes its own `out/` folder (metrics.json, predictions.parquet) atomically, as a run on its
own would. A run given a cache folder is first written there, with the digest of what defines it
(its settings and the content of its input files and folders) and the digest of each file it holds;
a pack started again (after a kill, a failure, or with more runs) restores every run whose cache
entry has that digest instead of recomputing it, once the entry's files are checked against their
digests: a damaged entry (a file missing, changed or unreadable, an unreadable digest) is named in
the log and recomputed, which replaces it. The cache lies outside the outputs Snakemake declares,
which it deletes before it runs a job again.

A pack is described by a JSON spec, `{"runs": [{...settings of one run..., "cache": DIR}, ...]}`
(`cmgems finetune --pack SPEC`, `cmgems baseline --pack SPEC`). A bad run fails alone: the pack runs
the others and then fails, naming every failed run. Standard library only: the workflow imports
`deal` when it builds the DAG.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import hashlib
import json
import logging
import os
import shutil
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence, TypeVar

from cmgems.atomic import atomic_output, files_under
from cmgems.download import file_digest
from cmgems.errors import CmgemsError
from cmgems.layout import RECORD  # a run's record; the other files of its folder are copied with it

log = logging.getLogger(__name__)
T = TypeVar("T")

DIGEST = "digest.json"  # in a cache entry: the digest of what defines the run


def deal(items: Sequence[T], most: int | None) -> list[list[T]]:
    """`items` in ceil(n / most) packs of near-equal size, dealt in turn (pack i holds items i,
    i + P, i + 2P, ...), so that each pack gets its share of the long and the short runs; one pack
    when `most` is None."""
    count = 1 if most is None else -(-len(items) // most)
    return [list(items[i::count]) for i in range(count)] if items else []


# ---------------------------------------------------------------------------------------- spec
def read_spec(text: str) -> list[tuple[dict, str | None]]:
    """(settings, cache folder or None) of every run of a pack spec (JSON text); CmgemsError naming
    what is wrong."""
    try:
        spec = json.loads(text)
    except json.JSONDecodeError as err:
        raise CmgemsError(f"--pack: not valid JSON ({err})") from None
    runs = spec.get("runs") if isinstance(spec, dict) else None
    if not isinstance(runs, list) or not runs or not all(isinstance(r, dict) for r in runs):
        raise CmgemsError('--pack: expected {"runs": [{...}, ...]} with at least one run, each a JSON object')
    entries = []
    for i, run in enumerate(runs):
        cache = run.pop("cache", None)
        if cache is not None and not isinstance(cache, str):
            raise CmgemsError(f"--pack: runs[{i}].cache: expected a folder name, got {cache!r}")
        entries.append((run, cache))
    return entries


def settings_from(cls: type[T], entry: dict, where: str) -> T:
    """A settings dataclass from a JSON object: unknown or missing keys and values of the wrong type
    are a CmgemsError naming `where` and the key; integers become floats where a float is expected
    (as they would through the command line)."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(entry.keys() - fields.keys())
    missing = [n for n, f in fields.items() if n not in entry and f.default is f.default_factory is dataclasses.MISSING]
    if unknown or missing:
        raise CmgemsError(f"{where}: unknown key(s) {unknown}, missing key(s) {missing}")
    values = {}
    for name, value in entry.items():
        allowed = typing.get_args(hints[name]) or (hints[name],)
        if float in allowed and type(value) is int:
            value = float(value)
        if not any(value is None if t is type(None) else type(value) is t for t in allowed):
            raise CmgemsError(f"{where}.{name}: expected {hints[name]}, got {value!r}")
        values[name] = value
    return cls(**values)


def add_pack_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pack", metavar="SPEC", help='run a pack instead: JSON {"runs": [{...settings of one run '
                        '(the options above, as keys)..., "cache": DIR}, ...]} (see cmgems.packs)')


def check_pack_or_run(parser: argparse.ArgumentParser, args: argparse.Namespace, required: Sequence[str]) -> None:
    """Exit through `parser.error` unless `args` are either --pack alone or one run's options with
    every option of `required` (dest names) given."""
    run_options = [a for a in parser._actions if a.dest not in ("help", "pack", "func") and a.option_strings]
    given = [a.option_strings[0] for a in run_options if getattr(args, a.dest) != a.default]
    if args.pack is not None and given:
        parser.error(f"--pack takes no other option (got {', '.join(given)})")
    missing = [a.option_strings[0] for a in run_options if a.dest in required and getattr(args, a.dest) is None]
    if args.pack is None and missing:
        parser.error(f"the following arguments are required: {', '.join(missing)}")


# --------------------------------------------------------------------------------------- cache
@dataclass
class Run:
    """One run of a pack: its output folder, its cache entry (None: no cache), what defines it
    (JSON-able settings) and the files or folders whose content does too."""

    out: str
    cache: str | None
    definition: dict
    inputs: list[str]

    def digest(self, content: Callable[[str], str]) -> str:
        document = {"definition": self.definition, "inputs": {p: content(p) for p in self.inputs}}
        return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()


def content_digest(path: str) -> str:
    """SHA-256 of a file's bytes; of a folder, over its files' relative paths and digests (the
    record of what cmgems wrote excepted)."""
    root = Path(path)
    try:
        if not root.is_dir():
            return file_digest(root, "sha256")
        files = {name: content_digest(str(root / name)) for name in sorted(files_under(root))}
        return hashlib.sha256(json.dumps(files).encode()).hexdigest()
    except OSError as err:
        raise CmgemsError(f"{path}: cannot read ({err.strerror})") from None


def _copy_run(entry: Path, files: Sequence[str], out: str) -> None:
    """Copy the `files` of a cache entry into `out` atomically."""
    with atomic_output(out, directory=True) as tmp:
        for name in files:
            shutil.copyfile(entry / name, tmp / name)


def _file_digests(folder: Path) -> dict[str, str]:
    """{name: SHA-256} of every file in a run's folder (what a cache entry records of its files)."""
    return {name: content_digest(str(folder / name)) for name in sorted(files_under(folder) - {DIGEST})}


def _read_entry(entry: Path) -> dict | None:
    """The digest record of a cache entry (None when there is no entry); CmgemsError when it is
    unreadable or lacks the digests of the entry's files (an entry written before entries held them)."""
    if not os.path.lexists(entry):
        return None
    try:
        stored = json.loads((entry / DIGEST).read_text())
    except (OSError, ValueError) as err:
        raise CmgemsError(f"{entry / DIGEST}: unreadable ({err})") from None
    if not isinstance(stored, dict) or not isinstance(stored.get("files"), dict) or RECORD not in stored["files"]:
        raise CmgemsError(f"{entry / DIGEST}: records no digest of the entry's files (an entry of an older cmgems?)")
    return stored


def _verified_record(entry: Path, files: dict[str, str]) -> dict:
    """The run's record in a cache entry once its files are exactly those of `files` ({name: SHA-256}),
    each with that digest; CmgemsError naming the first that is not."""
    present = files_under(entry) - {DIGEST}
    for name in sorted(present | files.keys()):
        if name not in present:
            raise CmgemsError(f"{entry / name}: missing")
        if name not in files:
            raise CmgemsError(f"{entry / name}: not a file the entry was written with")
        if content_digest(str(entry / name)) != files[name]:
            raise CmgemsError(f"{entry / name}: its content differs from what was cached (damaged or edited)")
    try:
        record = json.loads((entry / RECORD).read_text())
    except (OSError, ValueError) as err:
        raise CmgemsError(f"{entry / RECORD}: unreadable ({err})") from None
    if not isinstance(record, dict):
        raise CmgemsError(f"{entry / RECORD}: not a JSON object")
    return record


def restore(run: Run, digest: str) -> dict | None:
    """The run's record, copied with its files from its cache entry into `out`, when the entry holds
    a finished run of this digest whose files are intact; None otherwise (a damaged entry is named in
    the log; the recomputed run replaces it)."""
    entry = Path(run.cache)
    try:
        stored = _read_entry(entry)
        if stored is None:
            return None
        if stored.get("digest") != digest:
            log.info("%s: the cache entry is of other settings or inputs; recomputing", entry)
            return None
        record = _verified_record(entry, stored["files"])
    except CmgemsError as err:
        log.warning("%s: damaged cache entry, discarded: %s; recomputing", entry, err)
        return None
    _copy_run(entry, sorted(stored["files"]), run.out)
    return record


def save(run: Run, digest: str | None, write: Callable[[Path], dict]) -> dict:
    """Write a computed run (`write(folder)` writes its files and returns its record) into `out`,
    through its cache entry when it has one (the entry first, so that a kill in between leaves a
    finished entry, whose digest file records its files' digests)."""
    if run.cache is None:
        with atomic_output(run.out, directory=True) as tmp:
            return write(tmp)
    with atomic_output(run.cache, directory=True) as tmp:
        record = write(tmp)
        files = _file_digests(tmp)
        (tmp / DIGEST).write_text(json.dumps({"digest": digest, "inputs": run.inputs, "files": files}) + "\n")
    _copy_run(Path(run.cache), sorted(files), run.out)
    return record


def run_pack(runs: Sequence[Run], compute: Callable[[int], Callable[[Path], dict]]) -> list[dict]:
    """Every run in turn: restored from its cache entry when that holds it, else `compute(i)`, which
    returns the writer of run i's files. A CmgemsError fails that run alone; once all were tried, the
    pack raises one naming every failed run (the run's own error in a pack of one). Returns the records."""
    content = functools.cache(content_digest)  # each input file or folder read once per pack
    records, failed = [], []
    for i, run in enumerate(runs):
        label = f"run {i + 1}/{len(runs)} ({run.out})"
        try:
            digest = run.digest(content) if run.cache else None
            record = restore(run, digest) if digest else None
            if record is not None:
                log.info("%s: restored from %s", label, run.cache)
            else:
                log.info("%s: computing", label)
                record = save(run, digest, compute(i))
                log.info("%s: test mcc %.4f", label, record["metrics"]["mcc"])
        except CmgemsError as err:
            if len(runs) == 1:
                raise
            log.error("%s failed: %s", label, err)
            failed.append(f"{run.out}: {err}")
            continue
        records.append(record)
    if failed:
        raise CmgemsError(f"{len(failed)} of {len(runs)} runs failed; the others are written. " + "; ".join(failed))
    return records

