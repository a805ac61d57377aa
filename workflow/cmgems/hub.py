"""Published model folders fetched from a model hub at a pinned revision (`cmgems models fetch`).

Each file of a Hugging Face hub repository is served at `{endpoint}/{repo}/resolve/{revision}/{file}`.
The files are downloaded one by one (`cmgems.download`: resumed, retried, each checked by its SHA-256)
into a staging folder `<out>.part/`, which keeps the files already checked and the `.part` of an
interrupted one, so that the next call resumes there; once every file is checked, the folder is moved
into place as a whole (`atomic_output`), and the staging folder removed. `out` therefore holds either
nothing or every file with its pinned checksum. Standard library only (the core environment).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import urllib.parse
from pathlib import Path

from cmgems.atomic import atomic_output
from cmgems.download import SHA256, download, file_digest
from cmgems.errors import CmgemsError

DEFAULT_ENDPOINT = "https://huggingface.co"
REPO = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*")  # owner/name
COMMIT = re.compile(r"[0-9a-f]{40}")  # a revision is a commit: a branch or tag may move
INNER = re.compile(r"(?!/)(?!(.*/)?\.\.(/|$))[^{}]+")  # a path inside the repository (the schema's inner_path)
REQUIRED_FILES = ("config.json",)


def file_url(endpoint: str, repo: str, revision: str, name: str) -> str:
    """The URL of file `name` of `repo` at `revision` in the hub's layout."""
    return f"{endpoint.rstrip('/')}/{repo}/resolve/{revision}/{urllib.parse.quote(name)}"


def check_request(repo: str, revision: str, files: dict[str, str]) -> dict[str, str]:
    """`files` ({path in the repository: SHA-256}) with lower-case checksums; CmgemsError naming the
    repository, revision or file that is not pinned as it must be."""
    if not REPO.fullmatch(repo):
        raise CmgemsError(f"repository {repo!r}: expected OWNER/NAME, e.g. zhihan1996/DNA_bert_6")
    if not COMMIT.fullmatch(revision):
        raise CmgemsError(f"{repo}: revision {revision!r} is not a commit (40 lower-case hex digits); a branch or "
                          "tag may move, so a result could not say which weights made it")
    missing = [name for name in REQUIRED_FILES if name not in files]
    if missing:
        raise CmgemsError(f"{repo}: files lacks {', '.join(missing)}, which every model folder needs")
    checked = {}
    for name, sha256 in files.items():
        if not INNER.fullmatch(name):
            raise CmgemsError(f"{repo}: file {name!r} is not a path inside the repository")
        try:
            checked[name] = SHA256.parse(sha256 or "")
        except CmgemsError as err:
            raise CmgemsError(f"{repo}: file {name}: its sha256 is missing or malformed ({err})") from None
    return checked


def _staged(staging: Path, name: str, sha256: str) -> bool:
    """Whether `staging`/`name` is already there with its checksum (from an earlier, interrupted call)."""
    path = staging / name
    return path.is_file() and not path.is_symlink() and file_digest(path, "sha256") == sha256


def fetch_model(repo: str, revision: str, files: dict[str, str], out: str | os.PathLike,
                endpoint: str = DEFAULT_ENDPOINT, retries: int = 5, backoff: float = 1.0) -> Path:
    """Download `files` ({path: SHA-256}) of `repo` at `revision` into the folder `out` (see the module
    docstring); CmgemsError naming the file whose download fails or whose checksum is not the one given."""
    files = check_request(repo, revision, files)
    out = Path(out)
    staging = out.with_name(out.name + ".part")
    for name, sha256 in files.items():
        if _staged(staging, name, sha256):
            continue
        try:
            download(file_url(endpoint, repo, revision, name), SHA256, sha256, staging / name, retries, backoff)
        except CmgemsError as err:
            raise CmgemsError(f"{repo} at {revision}, file {name}: {err}") from None
    with atomic_output(out, directory=True) as tmp:
        for name in files:
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging / name, tmp / name)
    shutil.rmtree(staging, ignore_errors=True)
    return out


def configure_parser(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True)
    p = sub.add_parser("fetch", help="download a model folder from a hub repository at a commit, each file checked "
                                     "by its SHA-256")
    p.add_argument("--repo", required=True, help="hub repository, OWNER/NAME")
    p.add_argument("--revision", required=True, help="the commit (40 hex digits)")
    p.add_argument("--files", required=True, help='JSON object {"path in the repository": "sha256", ...}')
    p.add_argument("--endpoint", default=DEFAULT_ENDPOINT, help="hub address; files at ENDPOINT/REPO/resolve/REVISION/PATH")
    p.add_argument("--out", required=True, help="the model folder to write")
    p.add_argument("--retries", type=int, default=5, help="retries of a broken transfer")
    p.set_defaults(func=lambda a: fetch_model(a.repo, a.revision, _files(a.files), a.out, a.endpoint, a.retries))


def _files(text: str) -> dict[str, str]:
    try:
        files = json.loads(text)
    except ValueError as err:
        raise CmgemsError(f"--files: not JSON ({err})") from None
    if not isinstance(files, dict) or not files:
        raise CmgemsError("--files: expected a non-empty JSON object {path: sha256}")
    return files
