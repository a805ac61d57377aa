"""Digest of a finished demo run's outputs, timings aside, to check that a refactor changes no output.

    python tools/demo_digest.py WORKDIR > after.json
    python tools/demo_digest.py WORKDIR --compare before.json     # lists the files that differ; exit 1 if any

Covered: every file under results/ and the pack cache .cmgems/, each reduced to its content:
JSON without timing keys (`*_per_s`, `*_seconds`, `mfu`), CSV, Markdown and LaTeX tables without timing columns, Parquet as
schema + rows, checkpoints (`state.pt`) as their tensors and values without timing keys, other files
as bytes. Left out: logs, Snakemake's benchmark files and timestamps, TensorBoard event files (wall
times) and the run lock.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import re
import sys
from pathlib import Path

TIMING = re.compile(r"(_per_s|seconds|^mfu)$")
SKIPPED = re.compile(r"(^|/)(logs|benchmarks|\.snakemake|tensorboard)/|\.snakemake_timestamp$|/\.lock$")


def _plain(value):
    """`value` with timing keys dropped from every mapping and tensors/arrays as digests."""
    import numpy as np
    import torch

    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0])) if not TIMING.search(str(k))}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, torch.Tensor):
        flat = value.detach().cpu().contiguous().reshape(-1)
        raw = flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b""
        return f"tensor {value.dtype} {tuple(value.shape)} {hashlib.sha256(raw).hexdigest()}"
    if isinstance(value, np.ndarray):
        return f"array {value.dtype} {value.shape} {hashlib.sha256(np.ascontiguousarray(value).tobytes()).hexdigest()}"
    if isinstance(value, bytes):
        return "bytes " + hashlib.sha256(value).hexdigest()
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return repr(value)


def _table_text(text: str, sep: str) -> bytes:
    """A Markdown (`|`) or LaTeX (`&`) table without its timing columns (named in its first row with `sep`)."""
    lines = text.splitlines()
    header = next((i for i, line in enumerate(lines) if sep in line), None)
    if header is None:
        return text.encode()
    names = [c.strip().replace("\\_", "_") for c in lines[header].split(sep)]
    drop = {i for i, c in enumerate(names) if TIMING.search(c.removesuffix("\\\\").strip())}
    return "\n".join(sep.join(c for i, c in enumerate(line.split(sep)) if i not in drop) if sep in line else line
                     for line in lines).encode()


def content(path: Path) -> bytes:
    """The bytes that stand for `path` in the digest."""
    name = path.name
    if name.endswith(".json"):
        return json.dumps(_plain(json.loads(path.read_text())), sort_keys=True).encode()
    if name.endswith(".csv") and path.stat().st_size:
        rows = list(csv.reader(io.StringIO(path.read_text())))
        keep = [i for i, column in enumerate(rows[0]) if not TIMING.search(column)]
        return json.dumps([[row[i] for i in keep if i < len(row)] for row in rows]).encode()
    if name.endswith(".parquet"):
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        return (str(table.schema) + json.dumps(_plain(table.to_pydict()), default=repr)).encode()
    if name.endswith(".pt"):
        import torch

        return json.dumps(_plain(torch.load(path, map_location="cpu", weights_only=True)), default=repr).encode()
    if name.endswith((".md", ".tex")):
        return _table_text(path.read_text(), "|" if name.endswith(".md") else "&")
    if name.endswith(".pdf"):
        return re.sub(rb"/CreationDate \(D:[0-9+\-Z']*\)", b"", path.read_bytes())
    return path.read_bytes()


def digest(workdir: Path) -> dict[str, str]:
    """{relative path: sha256 of its content} for the demo's outputs under `workdir`."""
    out = {}
    for root in ("results", ".cmgems"):
        for path in sorted((workdir / root).rglob("*")):
            relative = path.relative_to(workdir).as_posix()
            if path.is_file() and not SKIPPED.search(relative):
                out[relative] = hashlib.sha256(content(path)).hexdigest()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workdir", type=Path)
    parser.add_argument("--compare", type=Path, help="a digest written earlier; list what differs")
    args = parser.parse_args()
    now = digest(args.workdir)
    if not args.compare:
        json.dump(now, sys.stdout, indent=1, sort_keys=True)
        print()
        return 0
    before = json.loads(args.compare.read_text())
    changed = sorted(p for p in before.keys() & now.keys() if before[p] != now[p])
    for label, paths in (("changed", changed), ("only before", sorted(before.keys() - now.keys())),
                         ("only after", sorted(now.keys() - before.keys()))):
        for p in paths:
            print(f"{label}: {p}")
    same = not changed and before.keys() == now.keys()
    print(f"{len(now)} files; {'identical' if same else 'DIFFERENT'} (timings aside)")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
