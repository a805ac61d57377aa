"""The Snakemake workflow: schema validation, lint, formatting, conda envs, the paper DAG, the demo."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def snakemake(*args: str, cwd: Path = REPO, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run([*SNAKEMAKE, "-s", str(REPO / "Snakefile"), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)


def job_counts(output: str) -> dict[str, int]:
    """The 'Job stats' table of a dry run, as rule -> count."""
    table = output.split("Job stats:", 1)[1]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}


def paper_inputs(workdir: Path) -> None:
    """Empty stand-ins for the paper config's local inputs (GUE, few-shot sets): a dry run reads no data."""
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    files = [Path(config["gue"]["path"], t["path"], f"{s}.csv") for t in config["gue"]["tasks"].values()
             for s in ("train", "dev", "test")]
    for spec in config["fewshot"]["datasets"].values():
        files += [Path(spec["test"]), *map(Path, spec.get("pooled", {}).values())]
    for f in files:
        (workdir / f).parent.mkdir(parents=True, exist_ok=True)
        (workdir / f).touch()


def test_paper_dry_run_schedules_the_whole_grid(tmp_path):
    paper_inputs(tmp_path)
    result = snakemake("-n", "--quiet", "rules", "--configfile", str(REPO / "config/config.yaml"),
                       "-d", str(tmp_path), timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    counts = job_counts(result.stdout + result.stderr)
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    pre = config["pretrain"]
    models = len(pre["models"]) * len(pre["masking"]) * len(pre["steps"])
    assert len(config["gue"]["tasks"]) == 27
    fewshot_runs = sum(len(set(map(int, d["pooled"])) & set(config["fewshot"]["shots"]))
                       for d in config["fewshot"]["datasets"].values()) * len(config["fewshot"]["seeds"])
    assert fewshot_runs == (5 + 5 + 4 + 4 + 2) * 10
    assert counts["download_genome"] == 1
    assert counts["corpus_chunk"] == counts["pmi_count"] == 24  # chr1-22, X, Y
    assert counts["pretrain"] == models == 8
    assert counts["finetune_gue"] == 27 * models
    assert counts["baseline_gue"] == 27
    assert counts["finetune_fewshot"] == fewshot_runs * models
    assert counts["baseline_fewshot"] == counts["fewshot_sample"] == fewshot_runs
    assert counts["report"] == 1


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda c: c["corpus"].update(max_tokenz=5), "max_tokenz"),
        (lambda c: c["pretrain"].update(steps="many"), "steps"),
        (lambda c: c["pretrain"].update(masking=["random", "span"]), "span"),
        (lambda c: c["genomes"]["demo"].update(md5="abc"), "genomes"),
    ],
    ids=["unknown-key", "wrong-type", "unknown-strategy", "path-and-md5"],
)
def test_config_errors_fail_at_once_naming_the_key(tmp_path, edit, message):
    config = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
    edit(config)
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(config))
    result = snakemake("-n", "--configfile", str(bad), "-d", str(tmp_path))
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "ValidationError" in output and message in output


def test_lint_has_no_findings():
    result = snakemake("--lint", "--configfile", str(REPO / "config/demo.yaml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Congratulations, your workflow is in a good condition!" in result.stdout + result.stderr


def test_snakefmt_check():
    files = [REPO / "Snakefile", *sorted((REPO / "workflow" / "rules").glob("*.smk"))]
    result = subprocess.run([shutil.which("snakefmt") or "snakefmt", "--check", *map(str, files)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_conda_envs_are_pinned_and_referenced():
    envs = sorted((REPO / "envs").glob("*.yaml"))
    assert envs
    for env in envs:
        spec = yaml.safe_load(env.read_text())
        assert set(spec["channels"]) <= {"conda-forge", "bioconda", "nodefaults"}, env
        assert "conda-forge" in spec["channels"], env
        for dep in spec["dependencies"]:
            assert isinstance(dep, str) and re.fullmatch(r"[A-Za-z0-9_.-]+=[0-9][0-9.*]*", dep), (env, dep)
    for rules in (REPO / "workflow" / "rules").glob("*.smk"):
        for path in re.findall(r'conda:\s*\n\s*"([^"]+)"', rules.read_text()):
            assert (rules.parent / path).resolve().exists(), (rules, path)
    used = {
        (rules.parent / p).resolve()
        for rules in (REPO / "workflow" / "rules").glob("*.smk")
        for p in re.findall(r'conda:\s*\n\s*"([^"]+)"', rules.read_text())
    }
    assert used == {e.resolve() for e in envs}


CONDA_TO_PYPI = {"pytorch": "torch", "matplotlib-base": "matplotlib"}


def test_envs_and_pyproject_pin_the_versions_the_tests_run_with():
    """Every conda pin (major.minor) equals the installed version the suite runs with, and pyproject
    allows exactly that minor version (its lower bound is one the suite passed on)."""
    import tomllib
    from importlib.metadata import version

    from packaging.requirements import Requirement
    from packaging.version import Version

    requirements = {Requirement(r).name.lower(): Requirement(r).specifier
                    for r in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]}
    drift = []
    for env in sorted((REPO / "envs").glob("*.yaml")):
        for dep in yaml.safe_load(env.read_text())["dependencies"]:
            name, pinned = dep.split("=")[:2]
            if name == "python":
                installed = f"{sys.version_info.major}.{sys.version_info.minor}"
            else:
                name = CONDA_TO_PYPI.get(name, name)
                installed = version(name)
                spec = requirements.get(name.lower())
                lower = [Version(s.version) for s in spec or () if s.operator == ">="]
                if spec is None or not spec.contains(installed) or lower != [Version(pinned)]:
                    drift.append(f"pyproject.toml: {name}{spec or ' missing'}; the tests run {installed}; {env.name} pins {pinned}")
            if Version(installed).release[:2] != Version(pinned).release[:2]:
                drift.append(f"{env.name}: {name}={pinned}, the tests run {installed}")
    assert not drift, "\n".join(drift)


def test_external_checkpoint_and_gue_archive_are_scheduled(tmp_path):
    """A published checkpoint is evaluated beside ours; a GUE url adds the checksummed download."""
    config = yaml.safe_load((REPO / "config" / "demo.yaml").read_text())
    (tmp_path / "dnabert6").mkdir()
    config["pretrained_models"] = {"DNABERT6": {"path": str(tmp_path / "dnabert6")}}
    config["gue"].update(path=str(tmp_path / "GUE"), url="https://example.org/GUE.zip", md5="0" * 32)
    (tmp_path / "resources").symlink_to(REPO / "resources")
    cfg = tmp_path / "external.yaml"
    cfg.write_text(yaml.safe_dump(config))
    result = snakemake("-n", "--quiet", "rules", "--configfile", str(cfg), "-d", str(tmp_path))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    counts = job_counts(result.stdout + result.stderr)
    assert counts["download_gue"] == 1
    assert counts["finetune_gue"] == 2 * (3 + 1)  # demo tasks x (3 strategies + the checkpoint)
    result = snakemake("-n", "-p", "--configfile", str(cfg), "-d", str(tmp_path),
                       "results/external/gue/DNABERT6/published/0/demo_tata/seed42/metrics.json")
    assert f"--model {tmp_path / 'dnabert6'}" in result.stdout and "--trust-remote-code" not in result.stdout
