"""Pretraining checkpoints and the run folder's lock.

`Checkpoints` keeps the newest `keep` checkpoints as `step-NNNNNNNN/state.pt` directories and a
pointer file `latest` naming the newest. A checkpoint directory appears whole (written beside and
renamed), the pointer is swapped atomically after it, and old ones are deleted only after that, so
a kill at any instant leaves a loadable checkpoint. Loading tries the pointer's target, then the
others newest first; an unreadable one is reported by file name and skipped.

A checkpoint holds the run's identity (the settings that define the experiment); `check_same_run`
refuses to resume a run whose settings changed. `RunLock` (an advisory flock) refuses a second
trainer on the same run folder.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import shutil
import socket
from pathlib import Path

import torch

from cmgems.atomic import atomic_output, open_unfollowed
from cmgems.errors import CmgemsError

log = logging.getLogger(__name__)

POINTER = "latest"
STATE = "state.pt"
STEP_DIR = re.compile(r"step-(\d{8})")


class Checkpoints:
    """Rotating checkpoints in `directory` (see the module docstring)."""

    def __init__(self, directory: str | os.PathLike, keep: int = 2):
        if keep < 1:
            raise CmgemsError(f"keep_checkpoints must be >= 1, got {keep}")
        self.directory, self.keep = Path(directory), keep

    def _steps(self) -> list[Path]:
        """Checkpoint directories, newest first."""
        if not self.directory.is_dir():
            return []
        found = [p for p in self.directory.iterdir() if p.is_dir() and STEP_DIR.fullmatch(p.name)]
        return sorted(found, key=lambda p: p.name, reverse=True)

    def _pointed(self) -> Path | None:
        try:
            name = (self.directory / POINTER).read_text().strip()
        except OSError:
            return None
        return self.directory / name if STEP_DIR.fullmatch(name) else None

    def save(self, step: int, state: dict) -> Path:
        """Write `state` as the checkpoint of `step`, point `latest` at it, drop the oldest beyond `keep`."""
        target = self.directory / f"step-{step:08d}"
        try:
            with atomic_output(target, directory=True) as tmp:
                torch.save(state, tmp / STATE)
            with atomic_output(self.directory / POINTER) as tmp:
                tmp.write_text(target.name + "\n")
        except (OSError, RuntimeError) as err:  # a full disk: OSError, or torch.save's RuntimeError "unexpected pos"
            raise CmgemsError(f"{target / STATE}: cannot write the checkpoint ({type(err).__name__}: {err}); the disk may "
                              f"be full. Nothing was half-written: free space and rerun, the run resumes from its "
                              f"last complete checkpoint, if any") from err
        for old in self._steps()[self.keep :]:
            if old != target:
                shutil.rmtree(old, ignore_errors=True)
        return target

    def load(self) -> tuple[dict, Path] | None:
        """(state, its directory) of the newest readable checkpoint; None when there is none."""
        if (self.directory / STATE).exists():
            raise CmgemsError(f"{self.directory / STATE} was written by an older cmgems, without the run's "
                              f"settings, so it cannot be checked; delete {self.directory} to start the run over")
        pointed = self._pointed()
        candidates = ([pointed] if pointed is not None and pointed.is_dir() else []) + [
            p for p in self._steps() if p != pointed
        ]
        unreadable = []
        for candidate in candidates:
            path = candidate / STATE
            try:
                return torch.load(path, map_location="cpu", weights_only=True), candidate
            except Exception as err:  # truncated or corrupt files raise RuntimeError, EOFError, UnpicklingError...
                log.error("checkpoint %s is unreadable (%s: %s); trying the previous one", path, type(err).__name__, err)
                unreadable.append(str(path))
        if unreadable:
            raise CmgemsError(f"no readable checkpoint in {self.directory} ({', '.join(unreadable)}); "
                              f"delete {self.directory} to start the run over")
        return None


def check_same_run(saved: dict, current: dict, directory: Path) -> None:
    """Raise when a checkpoint's identity `saved` differs from the run's `current` settings."""
    current = json.loads(json.dumps(current))  # tuples -> lists, as stored
    changed = sorted(k for k in saved.keys() | current.keys() if saved.get(k) != current.get(k))
    if changed:
        diff = "; ".join(f"{k}: {saved.get(k)!r} -> {current.get(k)!r}" for k in changed)
        raise CmgemsError(f"the checkpoint in {directory} belongs to a run with other settings ({diff}). "
                          f"Restore those settings to resume it, or delete {directory} to start the run over.")


class RunLock:
    """An exclusive advisory lock on `run_dir/.lock`, held for the life of a trainer (released by the
    kernel when the process dies, however it dies); a link in its place is refused, not followed.
    Where the file system has no flock (some Lustre and NFS mounts), NO_LOCK_VARIABLE=1 runs without
    the lock, at the user's word."""

    NO_LOCK_VARIABLE = "CMGEMS_NO_RUN_LOCK"

    def __init__(self, run_dir: str | os.PathLike):
        self.path = Path(run_dir) / ".lock"
        self._file = None

    def __enter__(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if os.environ.get(self.NO_LOCK_VARIABLE) == "1":
            log.warning("%s=1: %s is not locked; make sure no other trainer writes it", self.NO_LOCK_VARIABLE,
                        self.path.parent)
            return self
        handle = open_unfollowed(self.path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise CmgemsError(f"{self.path.parent} is being written by another trainer ({holder}); "
                              "wait for it to finish or stop it first") from None
        except OSError as err:
            handle.close()
            raise CmgemsError(
                f"{self.path}: the file system does not support file locks ({err.strerror}; some Lustre and NFS "
                "mounts lack flock, Lustre gives it with the mount option -o flock). The lock keeps a second trainer "
                f"(say a rerun while the old job still runs) out of the run folder. To run without it, set "
                f"{self.NO_LOCK_VARIABLE}=1 and make sure only one job trains each run") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        handle.flush()
        self._file = handle
        return self

    def __exit__(self, *exc) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
