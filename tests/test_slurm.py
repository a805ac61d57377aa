"""The demo DAG through profiles/slurm against a real single-node SLURM cluster (slurm/start.sh).

Skips where no cluster can be started (not root, or no SLURM binaries and no apt-get), except in CI
(CI=true), where that fails: a profile never run against SLURM must not pass silently.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cmgems import layout

REPO = Path(__file__).resolve().parents[1]
PARTITION = "local"
# the fine-tuning packs are given a placeholder GPU each (pretraining is not: it refuses to start when
# GPUs were allocated but torch sees none, which test_pretraining_refuses_an_allocation_without_visible_gpus
# checks); a rule finetune_gue_GROUP or finetune_fewshot_DATASET per pack
GPU_RULES = ("finetune_gue_", "finetune_fewshot_")
# the demo's cluster jobs: pretraining 3 models; per model 1 GUE pack (demo_tata and demo_splice are
# both in the group "other") and 2 few-shot packs (one per dataset, 2 shots x 2 seeds each); baseline
# packs 1 + 2; genome_contigs, corpus_chunk x 2 contigs, corpus_finalize, pmi_count x 2, pmi_merge,
# pmi_score; report. One run per job, as before the packs, would be 3 x (2 + 8) + 2 + 8 = 40 evaluation jobs.
EXPECTED_JOBS = {"pretrain": 3, "finetune_gue_": 3, "finetune_fewshot_": 6, "baseline_": 3, "data": 8, "report": 1}


def _stage(rule: str) -> str:
    return next((s for s in EXPECTED_JOBS if rule.startswith(s)), "data")
pytestmark = [pytest.mark.slow, pytest.mark.workflow]


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("true", "1", "yes")


@pytest.fixture(scope="module")
def slurm_conf(tmp_path_factory, request) -> Path:
    state = tmp_path_factory.mktemp("slurm")
    env = {**os.environ, "CMGEMS_SLURM_PARTITION": PARTITION, "CMGEMS_SLURM_GPUS": "2"}
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
    gpus = workdir / "gpus.yaml"  # layered on the demo config: a GPU for every fine-tuning pack
    gpus.write_text(yaml.safe_dump({"gue": {"resources": {"gpu": 1}}, "fewshot": {"resources": {"gpu": 1}}}))
    env = {**os.environ, "SLURM_CONF": str(slurm_conf),
           # the profile reads account and partition from sbatch's own variables
           "SBATCH_ACCOUNT": "cmgems_ci", "SBATCH_PARTITION": PARTITION}
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir),
           "--profile", str(REPO / "profiles" / "slurm"),
           "--configfile", str(REPO / "config" / "demo.yaml"), str(gpus),
           "--latency-wait", "5", "--retries", "0",
           "--slurm-init-seconds-before-status-checks", "1",
           "--seconds-between-status-checks", "1",
           "--slurm-keep-successful-logs"]
    result = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=1500)
    log = result.stdout + result.stderr
    (workdir / "snakemake.log").write_text(log)
    assert result.returncode == 0, log[-6000:]
    jobs = subprocess.run(["scontrol", "show", "job", "-o"], env=env, capture_output=True,
                          text=True, timeout=60)
    assert jobs.returncode == 0, jobs.stderr
    return workdir, log, jobs.stdout


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
    assert local_rules <= {"tokenizer", "fewshot_sample", "all"}, local_rules
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
    assert "the whole grid is 9 GPU jobs (GUE packs 3, few-shot packs 6) and 15 CPU jobs" in log


def test_gpu_requests_reach_the_scheduler(slurm_demo):
    _, log, scontrol = slurm_demo
    jobs = _rule_jobs(log)
    slurm_to_rule = {slurm: jobs[job][0]
                     for job, slurm in re.findall(r"Job (\d+) has been submitted with SLURM jobid (\d+)", log)}
    seen = {}
    for line in scontrol.splitlines():
        fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
        rule = slurm_to_rule.get(fields.get("JobId", ""))
        if rule is not None:
            seen[fields["JobId"]] = (rule, fields)
    assert seen, "no job of this run left in `scontrol show job`"
    for jobid, (rule, fields) in seen.items():
        assert fields["JobState"] == "COMPLETED", (jobid, rule, fields["JobState"])
        assert fields["Partition"] == PARTITION and fields["Account"] == "cmgems_ci", (rule, fields)
        if rule.startswith(GPU_RULES):
            assert fields.get("TresPerJob") == "gres:gpu:1", (rule, fields.get("TresPerJob"))
        else:
            assert "gpu" not in fields.get("TresPerJob", "") + fields.get("AllocTRES", ""), (rule, fields)
    assert all(any(rule.startswith(prefix) for rule, _ in seen.values()) for prefix in GPU_RULES)


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
