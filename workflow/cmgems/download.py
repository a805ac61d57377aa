"""Downloads of pinned files: fetched into `<out>.part`, resumed (HTTP Range) and retried with backoff,
renamed onto `out` only once its checksum (md5, SHA-256, or a git blob SHA-1) is the one given.

http(s)://, ftp:// and file:// URLs (file:// is copied whole, without retries). A file whose checksum
matches but which is a Git LFS pointer (what a raw URL of a file kept in LFS serves) is refused.
An output path that is empty or an existing folder is refused before anything is fetched.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from tqdm import tqdm

from cmgems.atomic import check_replaceable, make_parent, remove_empty
from cmgems.errors import CmgemsError

log = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 20
RETRYABLE_HTTP = {408, 429, 500, 502, 503, 504}
URL_SCHEMES = ("http", "https", "ftp", "file")
LFS_POINTER = b"version https://git-lfs.github.com/spec/v1"  # first line of a Git LFS pointer file


def file_digest(path: str | os.PathLike, algorithm: str) -> str:
    """Hex digest of a file ('md5', 'sha256', ...), read in blocks."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, algorithm).hexdigest()


def git_blob_sha1(path: str | os.PathLike) -> str:
    """Git's object id of a file, as `git hash-object` prints it and a repository's tree lists it:
    the SHA-1 of b"blob <size in bytes>\\0" followed by the file's bytes (hex)."""
    digest = hashlib.sha1(b"blob %d\0" % Path(path).stat().st_size)
    with open(path, "rb") as fh:
        while block := fh.read(CHUNK_BYTES):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Checksum:
    """A kind of checksum: its name, how a wrong value is described, its length in hex digits, and
    how a file's is computed."""

    name: str
    described: str
    digits: int
    of: Callable[[Path], str]

    def parse(self, text: str) -> str:
        """`text` as a lower-case checksum of this kind; CmgemsError unless it has `digits` hex digits."""
        value = text.strip().lower()
        if not re.fullmatch(f"[0-9a-f]{{{self.digits}}}", value):
            raise CmgemsError(f"not {self.described} ({self.digits} hex digits): {text!r}")
        return value


MD5 = Checksum("md5", "an md5 checksum", 32, lambda path: file_digest(path, "md5"))
GIT_BLOB_SHA1 = Checksum("git blob SHA-1", "a git blob SHA-1", 40, git_blob_sha1)
SHA256 = Checksum("sha256", "a SHA-256 checksum", 64, lambda path: file_digest(path, "sha256"))


def given_path(path: str | os.PathLike, what: str) -> Path:
    """`path` as a Path; CmgemsError when it is empty, which Path would read as the working directory."""
    if not os.fspath(path):
        raise CmgemsError(f"the {what} path is empty (it would mean the working directory): give a path")
    return Path(path)


def _fetch(url: str, part: Path, timeout: float) -> None:
    """Append the rest of `url` to `part` (Range request from its size; restart if not honoured).

    Raises OSError (incl. urllib errors and http.client.IncompleteRead) on a broken transfer.
    """
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and have:  # nothing left to fetch: the part file is already whole
            return
        raise
    with response:
        resumed = have and getattr(response, "status", None) == 206
        if resumed and not response.headers.get("Content-Range", "").startswith(f"bytes {have}-"):
            part.unlink()
            raise ConnectionError(f"server answered a resume from byte {have} with the wrong range")
        if not resumed:
            have = 0
        length = response.headers.get("Content-Length")
        expected = int(length) if length is not None else None
        got = 0
        with (
            open(part, "ab" if resumed else "wb") as fh,
            tqdm(
                total=None if expected is None else have + expected,
                initial=have,
                unit="B",
                unit_scale=True,
                desc=Path(part).name.removesuffix(".part"),
                file=sys.stderr,
                disable=None,
            ) as bar,
        ):
            while block := response.read(CHUNK_BYTES):
                fh.write(block)
                got += len(block)
                bar.update(len(block))
    if expected is not None and got < expected:
        raise ConnectionError(f"connection closed after {got} of {expected} bytes")


def _fetch_retrying(url: str, part: Path, retries: int, backoff: float, timeout: float) -> None:
    """_fetch, retried up to `retries` times after backoff * 2**attempt seconds; CmgemsError when all fail."""
    if url.startswith("file:"):
        retries = 0  # a local file does not get better by waiting
    for attempt in range(retries + 1):
        try:
            _fetch(url, part, timeout)
            return
        except urllib.error.HTTPError as err:
            if err.code not in RETRYABLE_HTTP or attempt == retries:
                raise CmgemsError(f"download of {url} failed: HTTP {err.code} {err.reason}") from err
            reason = f"HTTP {err.code}"
        except (OSError, ValueError) as err:  # URLError, IncompleteRead, timeouts, resets
            if attempt == retries:
                raise CmgemsError(f"download of {url} failed after {retries + 1} attempts: {err}") from err
            reason = str(err)
        wait = backoff * 2**attempt
        log.warning("download of %s interrupted (%s); retrying in %.1f s", url, reason, wait)
        time.sleep(wait)


def _check(url: str, part: Path, checksum: Checksum, expected: str, stale: int) -> None:
    """CmgemsError, and `part` deleted, unless the downloaded `part` has the `expected` checksum and is
    not a Git LFS pointer; `stale` (bytes of a .part left by an earlier call) is named on a mismatch."""
    actual = checksum.of(part)
    if actual != expected:
        part.unlink(missing_ok=True)
        note = ""
        if stale and not url.startswith("file:"):
            note = (f"; the download resumed {part}, left by an earlier run ({stale:,} bytes), which may be what is"
                    " wrong: it is deleted now, so running again downloads the whole file")
        raise CmgemsError(f"{checksum.name} mismatch for {url}: expected {expected}, got {actual}{note}")
    with open(part, "rb") as fh:
        pointer = fh.read(len(LFS_POINTER)) == LFS_POINTER
    if pointer:
        part.unlink()
        raise CmgemsError(f"{url}: is a Git LFS pointer, not the data; its content is served by "
                          "media.githubusercontent.com/media/OWNER/REPO/COMMIT/PATH and checked by the pointer's sha256")


def download(
    url: str,
    checksum: Checksum,
    expected: str,
    out: str | os.PathLike,
    retries: int = 5,
    backoff: float = 1.0,
    timeout: float = 60.0,
) -> Path:
    """Download `url` to `out`, resuming from `<out>.part`, and rename it into place once its `checksum`
    is `expected` (hex, any case).

    Broken transfers are retried up to `retries` times, sleeping backoff * 2**attempt seconds; the
    .part file is kept when they all fail, so the next call resumes. A checksum mismatch deletes it (and
    says whether the download had resumed from a .part file left by an earlier call).
    """
    out = given_path(out, "output")
    check_replaceable(out, directory=False)  # before the download, not after it
    expected = checksum.parse(expected)
    if urllib.parse.urlsplit(url).scheme.lower() not in URL_SCHEMES:
        raise CmgemsError(f"cannot download {url!r}: the URL must start with one of {', '.join(s + '://' for s in URL_SCHEMES)}")
    if retries < 0:
        raise CmgemsError(f"retries must be >= 0, got {retries}")
    created = make_parent(out)
    part = out.with_name(out.name + ".part")
    stale = part.stat().st_size if part.is_file() else 0  # a resume from an earlier run
    try:
        _fetch_retrying(url, part, retries, backoff, timeout)
        _check(url, part, checksum, expected, stale)
    except BaseException:
        if not part.exists():  # nothing to resume from: leave no folder behind either
            remove_empty(created)
        raise
    os.replace(part, out)
    log.info("%s -> %s (%s %s)", url, out, checksum.name, expected)
    return out
