"""workflow/scripts/launch.sh: a stop signal to the whole process group of a launch (as a terminal or
SLURM sends it) ends in a checkpoint and exit 128 + the signal, and the rerun resumes to the
uninterrupted run's weights; a multi-node launch's rendezvous port is its job's own."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_pretrain import (ENV, STEPS, checkpoint_step, pretrain_args, relative_l2, wait_for_first_checkpoint,
                           weights, write_corpus)

REPO = Path(__file__).resolve().parents[1]
LAUNCH = REPO / "workflow" / "scripts" / "launch.sh"
# launch.sh runs `python` from PATH: this interpreter's
LAUNCH_ENV = {**{k: v for k, v in ENV.items() if not k.startswith(("CMGEMS_", "SLURM_"))},
              "PATH": f"{Path(sys.executable).parent}{os.pathsep}{ENV['PATH']}"}


def launch(args: list[str], processes: int, log: Path, signum: int | None = None) -> subprocess.CompletedProcess:
    """`bash launch.sh ARGS` with `processes` CPU processes, in a session of its own; with `signum`,
    that signal to its whole process group once the run's first checkpoint exists. Output in `log`."""
    out = Path(args[args.index("--out") + 1])
    env = {**LAUNCH_ENV, "CMGEMS_PROCS_PER_NODE": str(processes)}
    with log.open("w") as err:
        proc = subprocess.Popen(["bash", str(LAUNCH), *args], stdout=subprocess.DEVNULL, stderr=err, env=env,
                                start_new_session=True)
        if signum is not None:
            wait_for_first_checkpoint(proc, out, log.read_text)
            os.killpg(proc.pid, signum)
        proc.wait(timeout=600)
    return subprocess.CompletedProcess(proc.args, proc.returncode, "", log.read_text())


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def reference(corpus, tmp_path_factory) -> Path:
    """One process, uninterrupted, through launch.sh."""
    out = tmp_path_factory.mktemp("reference") / "tiny"
    result = launch(pretrain_args(corpus, out), 1, out.parent / "log")
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def stopped_by_sigterm(args: list[str], processes: int, out: Path, log: Path) -> tuple[subprocess.CompletedProcess, int]:
    """A launch of `processes` ranks writing `out`, SIGTERMed as a process group once it has checkpointed:
    it exits 143 having saved a step before the end, and says so. Returns it and that step."""
    stopped = launch(args, processes, log, signal.SIGTERM)
    assert stopped.returncode == 128 + signal.SIGTERM, stopped.stderr[-3000:]
    step = checkpoint_step(out)
    assert 0 < step < STEPS, "stopped before the end"
    assert f"signal 15: checkpoint saved at step {step}, exiting for a restart" in stopped.stderr
    return stopped, step


def test_sigterm_to_the_process_group_of_one_process_checkpoints_and_resumes(corpus, reference, tmp_path):
    """The trainer and its data workers get the signal: the trainer saves the step and exits 143."""
    out = tmp_path / "one"
    args = pretrain_args(corpus, out)
    stopped, step = stopped_by_sigterm(args, 1, out, tmp_path / "stopped.log")
    assert "killed by signal" not in stopped.stderr  # no data worker died of it

    resumed = launch(args, 1, tmp_path / "resumed.log")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"at step {step}" in resumed.stderr
    ours, theirs = weights(out), weights(reference)
    assert all(torch.equal(ours[name], theirs[name]) for name in theirs)


def test_sigterm_to_the_process_group_of_a_two_rank_launch_checkpoints_and_resumes(corpus, reference, tmp_path):
    """torchrun gets the signal with launch.sh and passes it on to each rank's process group (ranks and
    data workers); both ranks checkpoint one step; launch.sh exits 143, where torchrun exits 1."""
    out = tmp_path / "two"
    args = pretrain_args(corpus, out)
    stopped, step = stopped_by_sigterm(args, 2, out, tmp_path / "stopped.log")
    state = torch.load(out / "checkpoint" / f"step-{step:08d}" / "state.pt", weights_only=True)
    assert state["world_size"] == 2 and len(state["rng"]) == 2  # both ranks' states, of that step
    assert "killed by signal" not in stopped.stderr and "SIGKILL" not in stopped.stderr

    resumed = launch(args, 2, tmp_path / "resumed.log")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"at step {step}" in resumed.stderr
    assert relative_l2(weights(out), weights(reference)) < 1e-4


def rendezvous_port(job_id: int) -> int:
    result = subprocess.run(["bash", "-c", f'source "{LAUNCH}" && rendezvous_port {job_id}'], env=LAUNCH_ENV,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return int(result.stdout)


def test_the_rendezvous_port_comes_from_the_job_and_is_free_here():
    port = rendezvous_port(4242)
    assert 24242 <= port < 24342  # 20000 + job id % 10000, or one of the next ones where taken
    assert rendezvous_port(4242) == port  # the same job: the same port
    assert rendezvous_port(7777) != port  # another job: another
    # taken by a first job's rendezvous store: a job whose id gives the same port takes another
    store = torch.distributed.TCPStore("localhost", port, is_master=True, wait_for_workers=False)
    assert port < rendezvous_port(14242) < port + 100
    del store
