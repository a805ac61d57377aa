"""The demo DAG, and pretraining on two nodes, through profiles/slurm against a real SLURM cluster
of two compute nodes on this machine (slurm/start.sh with CMGEMS_SLURM_NODES=2: each slurmd in a
network and UTS namespace of its own, with its own host name and address). One cluster serves the
whole file: only one can run on a machine.

Skips where no cluster can be started (not root, or no SLURM binaries and no apt-get), except in CI
(CI=true), where that fails: a profile never run against SLURM must not pass silently.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from test_pretrain import relative_l2, weights

from cmgems import layout

REPO = Path(__file__).resolve().parents[1]
PARTITION = "local"
NODES = ("cmgems-n1", "cmgems-n2")  # slurm/start.sh's names, and those of their network namespaces
# The demo asks for no GPU: a job given a (placeholder) GPU that its torch cannot see fails at once,
# which test_a_gpu_request_reaches_the_node_with_gpus_and_fails_fast checks. The demo's cluster jobs:
# pretraining 3 models; per model 1 GUE pack (demo_tata and demo_splice are both in the group "other")
# and 2 few-shot packs (one per dataset, 2 shots x 2 seeds each); baseline packs 1 + 2; genome_contigs,
# corpus_chunk x 2 contigs, corpus_finalize, pmi_count x 2, pmi_merge, pmi_score; report. One run per
# job, as before the packs, would be 3 x (2 + 8) + 2 + 8 = 40 evaluation jobs.
EXPECTED_JOBS = {"pretrain": 3, "finetune_gue_": 3, "finetune_fewshot_": 6, "baseline_": 3, "data": 8, "report": 1}


def _stage(rule: str) -> str:
    return next((s for s in EXPECTED_JOBS if rule.startswith(s)), "data")


pytestmark = [pytest.mark.slow, pytest.mark.workflow]


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("true", "1", "yes")


@pytest.fixture(scope="module")
def slurm_conf(tmp_path_factory, request) -> Path:
    state = tmp_path_factory.mktemp("slurm")
    # 4 CPUs declared per node (the machine's 2 cores shared): two jobs of 2 nodes x 2 CPUs at once
    env = {**os.environ, "CMGEMS_SLURM_PARTITION": PARTITION, "CMGEMS_SLURM_GPUS": "2",
           "CMGEMS_SLURM_NODES": str(len(NODES)), "CMGEMS_SLURM_CPUS": "4"}
    request.addfinalizer(
        lambda: subprocess.run([str(REPO / "slurm" / "stop.sh"), str(state)], env=env,
                               capture_output=True, timeout=120)
    )
    try:
        started = subprocess.run([str(REPO / "slurm" / "start.sh"), str(state)], env=env,
                                 capture_output=True, text=True, timeout=900)
        reason = started.stderr.strip()[-2000:]
        ok = started.returncode == 0
    except (OSError, subprocess.TimeoutExpired) as err:
        ok, reason = False, repr(err)
    if not ok:
        message = f"could not start a SLURM cluster with slurm/start.sh: {reason}"
        if _in_ci():
            pytest.fail(message + " (CI=true: SLURM is required here)")
        pytest.skip(message)
    return state / "slurm.conf"


@pytest.fixture(scope="module")
def slurm_demo(slurm_conf, tmp_path_factory):
    """The demo through --profile profiles/slurm; (workdir, snakemake log, `scontrol show job -o`)."""
    workdir = tmp_path_factory.mktemp("slurm_demo")
    (workdir / "resources").symlink_to(REPO / "resources")
    env = _slurm_env(slurm_conf)
    result = subprocess.run(_slurm_snakemake(workdir, []), cwd=workdir, env=env, capture_output=True, text=True,
                            timeout=1500)
    log = result.stdout + result.stderr
    (workdir / "snakemake.log").write_text(log)
    assert result.returncode == 0, log[-6000:]
    jobs = subprocess.run(["scontrol", "show", "job", "-o"], env=env, capture_output=True,
                          text=True, timeout=60)
    assert jobs.returncode == 0, jobs.stderr
    return workdir, log, jobs.stdout


def _slurm_env(slurm_conf: Path) -> dict[str, str]:
    # the profile reads account and partition from sbatch's own variables
    return {**os.environ, "SLURM_CONF": str(slurm_conf), "SBATCH_ACCOUNT": "cmgems_ci", "SBATCH_PARTITION": PARTITION}


def _slurm_snakemake(workdir: Path, configs: list[Path], *targets: str, retries: int = 0) -> list[str]:
    """Snakemake through profiles/slurm, on the demo config with `configs` layered on it."""
    return [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir), *targets,
            "--profile", str(REPO / "profiles" / "slurm"),
            "--configfile", str(REPO / "config" / "demo.yaml"), *map(str, configs),
            "--latency-wait", "5", "--retries", str(retries),
            "--slurm-init-seconds-before-status-checks", "1",
            "--seconds-between-status-checks", "1",
            "--slurm-keep-successful-logs"]


def _rule_jobs(log: str) -> dict[str, tuple[str, bool]]:
    """Snakemake job id -> (rule, local?) from the log's `rule NAME:` / `localrule NAME:` blocks."""
    jobs = {}
    for match in re.finditer(r"^(local)?rule (\w+):\n(?:[ \t]+.*\n)*?[ \t]+jobid: (\d+)", log,
                             flags=re.M):
        jobs[match.group(3)] = (match.group(2), bool(match.group(1)))
    return jobs


def test_every_cluster_rule_ran_as_a_slurm_job(slurm_demo):
    workdir, log, _ = slurm_demo
    jobs = _rule_jobs(log)
    submitted = dict(re.findall(r"Job (\d+) has been submitted with SLURM jobid (\d+)", log))
    remote = {jobid: rule for jobid, (rule, local) in jobs.items() if not local}
    local_rules = {rule for rule, local in jobs.values() if local}
    assert {"pretrain", "finetune_gue_other", "finetune_fewshot_demo_prom", "baseline_gue_other", "report"} <= set(remote.values())
    assert local_rules <= {"tokenizer", "fewshot_sample", "report_settings", "all"}, local_rules
    missing = {jobid: rule for jobid, rule in remote.items() if jobid not in submitted}
    assert not missing, f"not submitted to SLURM: {missing}"
    assert not set(submitted) - set(remote), "a local rule went to SLURM"
    # ... and each left its SLURM log behind, named by its SLURM job id
    logs = {p.stem for p in (workdir / ".snakemake" / "slurm_logs").rglob("*.log")}
    assert set(submitted.values()) <= logs


def test_the_demo_is_24_sbatch_submissions(slurm_demo):
    """Packed fine-tuning and baselines: 24 submissions in all, as the plan's summary line says."""
    _, log, _ = slurm_demo
    jobs = _rule_jobs(log)
    submitted = re.findall(r"Job (\d+) has been submitted with SLURM jobid \d+", log)
    per_stage = {stage: 0 for stage in EXPECTED_JOBS}
    for job in submitted:
        per_stage[_stage(jobs[job][0])] += 1
    assert per_stage == EXPECTED_JOBS and len(submitted) == len(set(submitted)) == 24
    assert "the whole grid is 0 GPU jobs (none) and 24 CPU jobs" in log


def _scontrol_jobs(text: str) -> dict[str, dict[str, str]]:
    """`scontrol show job -o` as job id -> fields."""
    jobs = {}
    for line in text.splitlines():
        fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
        jobs[fields["JobId"]] = fields
    return jobs


def test_every_demo_job_completed_in_the_partition_and_account_without_gpus(slurm_demo):
    _, log, scontrol = slurm_demo
    submitted = re.findall(r"has been submitted with SLURM jobid (\d+)", log)
    jobs = _scontrol_jobs(scontrol)
    assert set(submitted) <= set(jobs), "a job of this run is missing from `scontrol show job`"
    for job in submitted:
        fields = jobs[job]
        assert fields["JobState"] == "COMPLETED", (job, fields["Comment"], fields["JobState"])
        assert fields["Partition"] == PARTITION and fields["Account"] == "cmgems_ci", fields
        assert "gpu" not in fields.get("TresPerJob", "") + fields.get("AllocTRES", ""), fields


@pytest.mark.parametrize("table", ["gue", "fewshot"])
def test_tables_equal_the_local_run(slurm_demo, local_demo, table):
    workdir, _, _ = slurm_demo
    ours = (workdir / layout.table(table)).read_bytes()
    local = (local_demo / layout.table(table)).read_bytes()
    assert ours == local, f"{table} differs between the SLURM and the local run"


def test_pretraining_refuses_an_allocation_without_visible_gpus(slurm_conf, tmp_path):
    """A job step holding a (placeholder) GPU whose torch sees none: pretraining's first check fails,
    naming the SLURM variable, instead of training on CPU without a word."""
    env = {**os.environ, "SLURM_CONF": str(slurm_conf), "PYTHONPATH": str(REPO / "workflow")}
    check = "from cmgems import distributed; distributed.check_gpus_visible(0)"
    result = subprocess.run(["srun", "-p", PARTITION, "--gpus=1", "-t", "2", sys.executable, "-c", check],
                            env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode != 0, result.stdout + result.stderr
    assert "GPUs were requested (SLURM_" in result.stderr and "none is visible" in result.stderr


# ------------------------------------------------------------------------ pretraining on two nodes
# A short run of the tiny model: a checkpoint every 10 steps, so that a stop lands mid-run.
RUN = layout.Model("demo", "tiny", "genemask", 80)
TINY = {"pretrain": {"models": [RUN.model], "masking": [RUN.masking], "steps": [RUN.steps],
                     "recipe": {"save_every": 10, "eval_every": 40, "log_every": 10}}}
# 2 nodes x 2 gloo processes: launch.sh's srun starts a torchrun on each node
TWO_NODES = {"pretrain": {"processes_per_node": 2, "resources": {"gpu": 0, "nodes": 2, "cpus_per_task": 2}}}


@pytest.fixture(scope="module")
def one_process_run(tmp_path_factory) -> Path:
    """The tiny run in one local process (snakemake --cores 2, no SLURM), with the corpus, PMI table and
    tokenizer it was trained on; its working directory."""
    workdir = tmp_path_factory.mktemp("pretrain_local")
    (workdir / "resources").symlink_to(REPO / "resources")
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir), "--cores", "2",
           RUN.summary(), "--configfile", str(REPO / "config" / "demo.yaml"), str(_config(workdir, "tiny", TINY))]
    result = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, (result.stdout + result.stderr)[-6000:]
    return workdir


def _config(workdir: Path, name: str, config: dict) -> Path:
    path = workdir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _workdir_from(one_process_run: Path, base: Path, model: bool = False) -> Path:
    """A working directory with the local run's inputs (and its model if `model`): only pretraining is
    left to run (or, with the model, what follows it)."""
    workdir = base.resolve()
    shutil.copytree(one_process_run / layout.ROOT, workdir / layout.ROOT,
                    ignore=None if model else shutil.ignore_patterns("models"))
    (workdir / "resources").symlink_to(REPO / "resources")
    return workdir


def _start_two_node_run(workdir: Path, slurm_conf: Path, retries: int = 0) -> subprocess.Popen:
    configs = [_config(workdir, "tiny", TINY), _config(workdir, "two_nodes", TWO_NODES)]
    with open(workdir / "snakemake.log", "w") as log:
        return subprocess.Popen(_slurm_snakemake(workdir, configs, RUN.summary(), retries=retries), cwd=workdir,
                                env=_slurm_env(slurm_conf), stdout=log, stderr=subprocess.STDOUT)


def test_a_gpu_request_reaches_the_node_with_gpus_and_fails_fast(slurm_conf, one_process_run, tmp_path):
    """A few-shot pack with `gpu: 1` through the profile: sbatch asks for the GPU, SLURM runs the job on
    the node with (placeholder) GPUs, and the pack fails at once, naming the cause, instead of
    fine-tuning on CPU until its time limit."""
    workdir = _workdir_from(one_process_run, tmp_path, model=True)
    configs = [_config(workdir, "tiny", TINY), _config(workdir, "gpu", {"fewshot": {"resources": {"gpu": 1}}})]
    target = layout.Run(layout.FEWSHOT, RUN, "demo_prom", seed=0, shots=10).folder() + "/" + layout.RECORD
    result = subprocess.run(_slurm_snakemake(workdir, configs, target), cwd=workdir, env=_slurm_env(slurm_conf),
                            capture_output=True, text=True, timeout=600)
    log = result.stdout + result.stderr
    assert result.returncode != 0, log[-6000:]
    [job] = re.findall(r"has been submitted with SLURM jobid (\d+)", log)
    shown = subprocess.run(["scontrol", "show", "job", "-o", job], env=_slurm_env(slurm_conf), capture_output=True,
                           text=True, check=True, timeout=60).stdout
    fields = _scontrol_jobs(shown)[job]
    assert (fields["TresPerJob"], fields["NodeList"], fields["JobState"]) == ("gres:gpu:1", NODES[0], "FAILED"), fields
    assert "GPUs were requested (1 requested (config resources.gpu)) but none is visible" in log, log[-6000:]


def _cmdline(pid: int | str) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_text().split("\0")


def _training_ranks() -> list[tuple[str, int, Path]]:
    """(node, pid, working directory) of every pretraining rank running now: a `cmgems.cli` process whose
    parent is a torchrun, in a node's network namespace."""
    ranks = []
    for node in NODES:
        pids = subprocess.run(["ip", "netns", "pids", node], capture_output=True, text=True, check=True).stdout
        for pid in pids.split():
            try:
                parent = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1]
                if "cmgems.cli" in _cmdline(pid) and "torch.distributed.run" in _cmdline(parent):
                    ranks.append((node, int(pid), Path(os.readlink(f"/proc/{pid}/cwd"))))
            except (OSError, IndexError):
                continue  # ended meanwhile
    return ranks


def _wait_watching(runs: list[subprocess.Popen], workdirs: list[Path], on_poll: Callable[[], None] = lambda: None,
                   timeout: float = 900) -> tuple[dict[Path, dict[str, int]], bool]:
    """Wait for the snakemake runs of `workdirs`, polling their training ranks meanwhile: per workdir, the
    ranks seen on each node; and whether all workdirs had ranks running at one time."""
    seen: dict[Path, dict[str, set[int]]] = {w: {} for w in workdirs}
    together = False
    deadline = time.monotonic() + timeout
    while any(run.poll() is None for run in runs):
        if time.monotonic() > deadline:
            for run in runs:
                run.kill()
            pytest.fail(f"snakemake still running after {timeout} s: {[str(w) for w in workdirs]}")
        running = set()
        for node, pid, cwd in _training_ranks():
            if cwd in seen:
                seen[cwd].setdefault(node, set()).add(pid)
                running.add(cwd)
        together |= running == set(workdirs)
        on_poll()
        time.sleep(0.2)
    return {w: {node: len(pids) for node, pids in nodes.items()} for w, nodes in seen.items()}, together


def _finished(run: subprocess.Popen, workdir: Path) -> str:
    """The snakemake log of a run that must have succeeded."""
    log = (workdir / "snakemake.log").read_text()
    assert run.returncode == 0, log[-6000:]
    return log


def _pretrain_log(workdir: Path) -> str:
    return (workdir / "logs" / RUN.genome / "pretrain" / RUN.model / RUN.masking / f"{RUN.steps}.log").read_text()


def _same_weights(workdir: Path, one_process_run: Path) -> float:
    return relative_l2(weights(workdir / RUN.folder()), weights(one_process_run / RUN.folder()))


def test_pretraining_on_two_nodes_trains_the_one_process_model(slurm_conf, one_process_run, tmp_path):
    """nodes: 2 with 2 processes per node: two ranks ran on each host, and the weights are one process's."""
    workdir = _workdir_from(one_process_run, tmp_path)
    run = _start_two_node_run(workdir, slurm_conf)
    ranks, _ = _wait_watching([run], [workdir])
    log = _finished(run, workdir)
    assert ranks[workdir] == {node: 2 for node in NODES}, (ranks, _pretrain_log(workdir))
    assert len(re.findall(r"has been submitted with SLURM jobid", log)) == 1
    assert _same_weights(workdir, one_process_run) < 1e-4


def test_a_scancelled_two_node_job_resumes_to_the_same_model(slurm_conf, one_process_run, tmp_path):
    """`scancel --signal=TERM` once the first checkpoint exists: the trainers save, each node's torchrun
    task and the job's command exit 143, Snakemake's retry resumes from that checkpoint, and the weights
    are those of an uninterrupted run."""
    workdir = _workdir_from(one_process_run, tmp_path)
    run = _start_two_node_run(workdir, slurm_conf, retries=1)
    latest = workdir / RUN.folder() / layout.CHECKPOINTS / "latest"
    cancelled = []

    def cancel_at_first_checkpoint():
        if not cancelled and latest.exists():
            job = re.findall(r"has been submitted with SLURM jobid (\d+)", (workdir / "snakemake.log").read_text())[-1]
            subprocess.run(["scancel", "--signal=TERM", job], env=_slurm_env(slurm_conf), check=True, timeout=60)
            cancelled.append(job)

    _wait_watching([run], [workdir], on_poll=cancel_at_first_checkpoint)
    log = _finished(run, workdir)
    jobs = re.findall(r"has been submitted with SLURM jobid (\d+)", log)
    assert cancelled and len(jobs) == 2 and jobs[0] == cancelled[0], (cancelled, log[-6000:])
    # the first attempt's logs (Snakemake shows a failed job's logs): srun's tasks and the command exited 143
    # after the save; the retry's log says where it resumed
    exits = re.findall(r"srun: error: (\S+): task \d+: Exited with exit code (\d+)", log)
    assert sorted(exits) == [(node, "143") for node in NODES], (exits, log[-6000:])
    assert "returned non-zero exit status 143" in log, log[-6000:]
    saved = re.findall(r"signal 15: checkpoint saved at step (\d+)", log)
    resumed = re.findall(r"resumed from \S+ at step (\d+)", _pretrain_log(workdir))
    assert len(saved) == 1 and resumed == saved, (saved, resumed, log[-6000:], _pretrain_log(workdir))
    assert _same_weights(workdir, one_process_run) < 1e-4


def test_two_node_jobs_on_one_first_node_at_once_both_finish(slurm_conf, one_process_run, tmp_path):
    """Two 2-node pretraining jobs running at the same time meet at the same first node, each at a
    rendezvous port of its own, and both train the one-process model."""
    workdirs = [_workdir_from(one_process_run, tmp_path / name) for name in ("a", "b")]
    runs = [_start_two_node_run(workdir, slurm_conf) for workdir in workdirs]
    ranks, together = _wait_watching(runs, workdirs)
    for run, workdir in zip(runs, workdirs):
        _finished(run, workdir)
        assert ranks[workdir] == {node: 2 for node in NODES}, ranks
        assert _same_weights(workdir, one_process_run) < 1e-4
    assert together, "the two jobs never trained at the same time"
    endpoints = [re.findall(r"rendezvous at (\S+):(\d+)", _pretrain_log(w)) for w in workdirs]
    assert all(len(e) == 1 for e in endpoints), endpoints
    (host_a, port_a), (host_b, port_b) = endpoints[0][0], endpoints[1][0]
    assert host_a == host_b == NODES[0] and port_a != port_b, endpoints


def test_a_scancelled_one_process_job_exits_143_and_resumes_to_the_same_model(slurm_conf, one_process_run, tmp_path):
    """`scancel --signal=TERM` of a running one-process pretraining job signals every process of its job
    step: the plugin's Snakemake (which then waits for its running job), the rule's shell and the
    trainer. The trainer saves and exits 143, which Snakemake in the job reports as the command's exit
    status (a shell that died of the signal first would leave the trainer to be killed with the step);
    the retry resumes from that checkpoint, and the weights are those of an uninterrupted run."""
    workdir = _workdir_from(one_process_run, tmp_path)
    latest = workdir / RUN.folder() / layout.CHECKPOINTS / "latest"
    with open(workdir / "snakemake.log", "w") as log:
        run = subprocess.Popen(_slurm_snakemake(workdir, [_config(workdir, "tiny", TINY)], RUN.summary(), retries=1),
                               cwd=workdir, env=_slurm_env(slurm_conf), stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 600
    while not latest.exists():
        assert run.poll() is None, (workdir / "snakemake.log").read_text()[-6000:]
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.05)
    job = re.findall(r"has been submitted with SLURM jobid (\d+)", (workdir / "snakemake.log").read_text())[-1]
    subprocess.run(["scancel", "--signal=TERM", job], env=_slurm_env(slurm_conf), check=True, timeout=60)
    run.wait(timeout=900)
    log = _finished(run, workdir)
    jobs = re.findall(r"has been submitted with SLURM jobid (\d+)", log)
    assert len(jobs) == 2 and jobs[0] == job, log[-6000:]  # the stopped job, and its retry
    # the failed attempt's logs, as Snakemake shows them: the job's command exited 143 after the save
    assert "returned non-zero exit status 143" in log, log[-6000:]
    saved = re.findall(r"signal 15: checkpoint saved at step (\d+)", log)
    resumed = re.findall(r"resumed from \S+ at step (\d+)", _pretrain_log(workdir))
    assert len(saved) == 1 and resumed == saved, (saved, resumed, log[-6000:])
    assert 0 < int(saved[0]) < RUN.steps
    assert _same_weights(workdir, one_process_run) < 1e-4
