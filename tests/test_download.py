"""cmgems.download: resumable, retried downloads renamed into place only with the pinned checksum
(md5 or git blob SHA-1); Git LFS pointers refused."""

from __future__ import annotations

import hashlib
import http.server
import subprocess
import threading

import pytest

from cmgems import cli
from cmgems.download import GIT_BLOB_SHA1, MD5, download, git_blob_sha1
from cmgems.errors import CmgemsError

PAYLOAD = bytes(range(256)) * 4000  # 1 MB
PAYLOAD_MD5 = hashlib.md5(PAYLOAD).hexdigest()


# ---------------------------------------------------------------------------------------- server


class Handler(http.server.BaseHTTPRequestHandler):
    """Serves PAYLOAD at /file (honours Range) and /flaky (the first GET stops half way, then Range)."""

    ranges: list[str | None] = []
    flaky_failures = 0

    def log_message(self, *args):  # quiet
        pass

    def do_GET(self):
        if self.path not in ("/file", "/flaky"):
            self.send_error(404)
            return
        header = self.headers.get("Range")
        type(self).ranges.append(header)
        start = int(header.removeprefix("bytes=").rstrip("-")) if header else 0
        body = PAYLOAD[start:]
        self.send_response(206 if header else 200)
        if header:
            self.send_header("Content-Range", f"bytes {start}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.path == "/flaky" and type(self).flaky_failures == 0:
            type(self).flaky_failures += 1
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)


@pytest.fixture()
def server():
    Handler.ranges, Handler.flaky_failures = [], 0
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


# ---------------------------------------------------------------------------------------- download


def test_download_http(server, tmp_path):
    out = download(f"{server}/file", MD5, PAYLOAD_MD5, tmp_path / "g.fa.gz", backoff=0)
    assert out.read_bytes() == PAYLOAD
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.fa.gz"]


def test_download_resumes_a_dropped_connection(server, tmp_path):
    out = download(f"{server}/flaky", MD5, PAYLOAD_MD5, tmp_path / "g.fa.gz", backoff=0)
    assert out.read_bytes() == PAYLOAD
    assert Handler.ranges == [None, f"bytes={len(PAYLOAD) // 2}-"]
    assert not (tmp_path / "g.fa.gz.part").exists()


def test_download_resumes_an_existing_part_file(server, tmp_path):
    (tmp_path / "g.fa.gz.part").write_bytes(PAYLOAD[:1000])
    download(f"{server}/file", MD5, PAYLOAD_MD5.upper(), tmp_path / "g.fa.gz", backoff=0)
    assert (tmp_path / "g.fa.gz").read_bytes() == PAYLOAD
    assert Handler.ranges == ["bytes=1000-"]


def test_download_md5_mismatch_leaves_nothing(server, tmp_path):
    url, wrong = f"{server}/file", "0" * 32
    with pytest.raises(CmgemsError) as err:
        download(url, MD5, wrong, tmp_path / "g.fa.gz", backoff=0)
    assert url in str(err.value) and wrong in str(err.value) and PAYLOAD_MD5 in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_download_md5_mismatch_after_resuming_a_stale_part_says_so(server, tmp_path):
    (tmp_path / "g.fa.gz.part").write_bytes(b"not the start of the file" * 40)  # 1,000 bytes
    with pytest.raises(CmgemsError) as err:
        download(f"{server}/file", MD5, PAYLOAD_MD5, tmp_path / "g.fa.gz", backoff=0)
    assert Handler.ranges == ["bytes=1000-"]
    assert "md5 mismatch" in str(err.value)
    assert f"the download resumed {tmp_path / 'g.fa.gz.part'}, left by an earlier run (1,000 bytes)" in str(err.value)
    assert "it is deleted now, so running again downloads the whole file" in str(err.value)
    assert list(tmp_path.iterdir()) == []
    download(f"{server}/file", MD5, PAYLOAD_MD5, tmp_path / "g.fa.gz", backoff=0)  # ... and it does
    assert (tmp_path / "g.fa.gz").read_bytes() == PAYLOAD


def test_download_http_error_is_not_retried(server, tmp_path):
    with pytest.raises(CmgemsError, match="404"):
        download(f"{server}/missing", MD5, PAYLOAD_MD5, tmp_path / "g", backoff=0)
    assert list(tmp_path.iterdir()) == []


def test_download_file_url_and_cli(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(PAYLOAD)
    out = tmp_path / "out" / "copy.bin"
    assert (
        cli.main(["genome", "download", "--url", src.as_uri(), "--md5", PAYLOAD_MD5, "--out", str(out)]) == 0
    )
    assert out.read_bytes() == PAYLOAD
    assert (
        cli.main(["genome", "download", "--url", src.as_uri(), "--md5", "1" * 32, "--out", str(out) + "2"])
        == 1
    )
    assert sorted(p.name for p in out.parent.iterdir()) == ["copy.bin"]




def test_download_arguments_are_checked_first(tmp_path, capsys):
    with pytest.raises(CmgemsError, match="the URL must start with one of http://, https://, ftp://, file://"):
        download("example.org/g.fa.gz", MD5, PAYLOAD_MD5, tmp_path / "g.fa.gz")
    with pytest.raises(CmgemsError, match="retries must be >= 0"):
        download("https://example.org/g.fa.gz", MD5, PAYLOAD_MD5, tmp_path / "g.fa.gz", retries=-1)
    with pytest.raises(SystemExit) as exit_:
        cli.main(["genome", "download", "--url", "https://example.org/g", "--md5", PAYLOAD_MD5, "--out", "g", "--retries", "-1"])
    assert exit_.value.code == 2 and "--retries: must be >= 0, got -1" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_download_output_is_checked_before_the_download(tmp_path):
    """An output path that is a folder, or empty, is refused before anything is fetched: the error is
    about the path, although the URL would fail too."""
    absent = (tmp_path / "absent.bin").as_uri()
    (tmp_path / "folder").mkdir()
    with pytest.raises(CmgemsError, match="folder: is a folder, expected a file path"):
        download(absent, MD5, PAYLOAD_MD5, tmp_path / "folder")
    with pytest.raises(CmgemsError, match=r"the output path is empty \(it would mean the working directory\)"):
        download(absent, MD5, PAYLOAD_MD5, "")
    assert [p.name for p in tmp_path.iterdir()] == ["folder"] and not any((tmp_path / "folder").iterdir())


# ---------------------------------------------------------------------------------------- git blobs


def test_git_blob_sha1_is_git_hash_object(tmp_path):
    for i, data in enumerate([b"", b"sequence\tlabel\n", bytes(range(256)) * 5000]):
        path = tmp_path / f"f{i}"
        path.write_bytes(data)
        git = subprocess.run(["git", "hash-object", str(path)], capture_output=True, text=True, check=True)
        assert git_blob_sha1(path) == git.stdout.strip()
    assert git_blob_sha1(tmp_path / "f0") == "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"  # git's empty blob


def test_download_checks_the_git_blob_sha1(http_folder, tmp_path):
    folder, url = http_folder
    data = b'"sequence"\t"label"\n"ACGTAC CGTACG"\t1\n' * 50
    (folder / "train.tsv").write_bytes(data)
    sha1 = git_blob_sha1(folder / "train.tsv")
    out = download(f"{url}/train.tsv", GIT_BLOB_SHA1, sha1.upper(), tmp_path / "sets" / "train.tsv")
    assert out.read_bytes() == data
    wrong = tmp_path / "wrong.tsv"
    with pytest.raises(CmgemsError, match=f"git blob SHA-1 mismatch for {url}/train.tsv: expected {'0' * 40}, got {sha1}$"):
        download(f"{url}/train.tsv", GIT_BLOB_SHA1, "0" * 40, wrong)
    with pytest.raises(CmgemsError, match="HTTP 404"):
        download(f"{url}/absent.tsv", GIT_BLOB_SHA1, sha1, wrong, retries=0)
    with pytest.raises(CmgemsError, match="40 hex digits"):
        download(f"{url}/train.tsv", GIT_BLOB_SHA1, "f2fffead", wrong)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sets"]  # no output, no .part left


def test_download_refuses_a_git_lfs_pointer(http_folder, tmp_path):
    """A raw URL of a file kept in Git LFS serves the pointer, whose blob SHA-1 is the one the tree lists."""
    folder, url = http_folder
    pointer = (b"version https://git-lfs.github.com/spec/v1\noid sha256:" + b"ab" * 32 + b"\nsize 7424015\n")
    (folder / "big.tsv").write_bytes(pointer)
    with pytest.raises(CmgemsError, match="is a Git LFS pointer"):
        download(f"{url}/big.tsv", GIT_BLOB_SHA1, git_blob_sha1(folder / "big.tsv"), tmp_path / "big.tsv")
    assert list(tmp_path.iterdir()) == []
