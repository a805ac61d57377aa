"""Shared fixtures: the repository root and the real data beside the checkout (../shared/data)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("CMGEMS_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (real hg38/GRCh37 slices, GUE tasks, few-shot sets); skips when absent."""
    if not (SHARED_DATA / "README.md").exists():
        pytest.skip(f"real data not found at {SHARED_DATA} (set CMGEMS_SHARED_DATA or check out beside shared/)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def local_demo(tmp_path_factory) -> Path:
    """The demo DAG (config/demo.yaml) run once per session on 2 local cores; its working directory."""
    import subprocess
    import sys

    workdir = tmp_path_factory.mktemp("demo")
    (workdir / "resources").symlink_to(REPO / "resources")
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir),
           "--cores", "2", "--configfile", str(REPO / "config" / "demo.yaml")]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return workdir


@pytest.fixture()
def http_folder(tmp_path_factory):
    """(folder, url): a temporary folder served over HTTP on 127.0.0.1 for the test's duration."""
    import functools
    import http.server
    import threading

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    folder = tmp_path_factory.mktemp("served")
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(folder)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()
