"""Shared fixtures: the repository root, the real data beside the checkout (../shared/data), the
local demo run, a tiny random model folder, and helpers to read pack specs."""

from __future__ import annotations

import json
import os
import shlex
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
def tiny_model(tmp_path_factory) -> Path:
    """A model folder of a random BertForMaskedLM of the registry's "tiny" shape (cmgems.models), k = 6,
    512 positions, weights from seed 0, with its k-mer tokenizer."""
    import torch

    from cmgems import kmers, models

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = models.masked_lm(models.bert_config("tiny", kmers.vocab_size(6)))
    return models.save_folder(tmp_path_factory.mktemp("model") / "tiny", model, k=6)


@pytest.fixture(scope="session")
def local_demo(tmp_path_factory, worker_id) -> Path:
    """The demo DAG (config/demo.yaml) run once per test session on 2 local cores; its working directory.
    Under pytest-xdist the workers share it: the first to ask runs it under a file lock, the others wait
    and then read it (or fail at once with its error)."""
    import subprocess
    import sys

    from filelock import FileLock

    shared = tmp_path_factory.getbasetemp()
    if worker_id != "master":
        shared = shared.parent  # the session's folder above the workers' own
    workdir, done, failed = shared / "demo", shared / "demo.done", shared / "demo.failed"
    with FileLock(shared / "demo.lock"):
        if failed.exists():
            pytest.fail(f"the demo failed in another worker:\n{failed.read_text()}")
        if not done.exists():
            workdir.mkdir()
            (workdir / "resources").symlink_to(REPO / "resources")
            cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir),
                   "--cores", "2", "--configfile", str(REPO / "config" / "demo.yaml")]
            result = subprocess.run(cmd, capture_output=True, text=True, timeout=1200)
            if result.returncode != 0:
                failed.write_text(result.stdout[-4000:] + result.stderr[-4000:])
                pytest.fail(failed.read_text())
            done.touch()
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


def _pack_specs(output: str) -> dict[str, dict]:
    """Each run's settings in the `--pack` specs of a `snakemake -n -p` output, by output folder."""
    runs = {}
    for line in output.splitlines():
        if " --pack " in line:
            words = shlex.split(line[line.index("python -m cmgems.cli"):].split(" > ")[0])
            runs.update({run["out"]: run for run in json.loads(words[words.index("--pack") + 1])["runs"]})
    return runs


def _one_run_options(run: dict) -> list[str]:
    """`cmgems finetune` options of a pack's run (its cache aside), as a one-run rule passed them."""
    args = []
    for key, value in run.items():
        flag = f"--{key.replace('_', '-')}"
        if key == "meta":
            args += [flag, json.dumps(value)]
        elif value is True:
            args.append(flag)
        elif key != "cache" and value is not None and value is not False:
            args += [flag, str(value)]
    return args


@pytest.fixture(scope="session")
def pack_specs():
    return _pack_specs


@pytest.fixture(scope="session")
def one_run_options():
    return _one_run_options


LONGEST_FILES = ("test_demo.py", "test_slurm.py")  # each runs the whole demo DAG (locally, on SLURM)


def pytest_collection_modifyitems(items):
    """The longest test files first, so that pytest-xdist starts them at once on separate workers while
    a third works through the other files."""
    items.sort(key=lambda item: item.path.name not in LONGEST_FILES)
